"""Collaboration for generation: an earlier stage's draft offered to the next stage as a hint.

The large model sees what the small one wrote and how sure it was, and may keep, correct or
rewrite it: the generation counterpart of soft Prompt Pruning.
"""

import math


def draft_hint(draft: str | None, confidence: float) -> str | None:
    """The hint line for a draft and its sequence confidence (None when there is no draft).

    Examples
    --------
    >>> draft_hint("freie Software", 0.8123)
    'A smaller model drafted this answer (its confidence: 0.81); it may be wrong: freie Software'
    >>> draft_hint(None, 0.5) is None
    True
    """
    if not draft:
        return None
    sure = "unknown" if confidence is None or math.isnan(confidence) else f"{confidence:.2f}"
    return f"A smaller model drafted this answer (its confidence: {sure}); it may be wrong: {draft}"
