"""The routes an item can take through a shunt, named once.

Examples
--------
>>> LARGE in ASKED_LARGE and SMALL not in ASKED_LARGE
True
"""

SMALL = "small"  #: the specific small model was sure enough
LEARNABLE = "learnable"  #: the 2CD copy of the small model was surer and sure enough
LARGE = "large"  #: the large model answered
FALLBACK = "fallback"  #: the large model failed; the small model's answer stands, flagged
INVALID = "invalid"  #: the item could not be read; no answer, flagged
OPEN = "open"  #: a partial run left the item to a later stage (another machine, an upstream service)

ROUTES = (SMALL, LEARNABLE, LARGE, FALLBACK, INVALID, OPEN)
ASKED_LARGE = (LARGE, FALLBACK)  #: the routes on which the large model was asked (and paid)
