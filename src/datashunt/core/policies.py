"""The goals a calibration serves, named once for every face (shunt, cascade, generator).

Examples
--------
>>> canonical("match_large"), canonical("target_quality")
('match_last', 'target_accuracy')
"""

from ..exceptions import ConfigError

MATCH_LAST = "match_last"  #: accuracy (quality) at least the last stage's alone, minus a tolerance
MAX_LAST_RATE = "max_last_rate"  #: the best accuracy with at most a share of the items reaching the last stage
MAX_COST = "max_cost"  #: the best accuracy within a cost per item
TARGET = "target_accuracy"  #: the fewest items sent on (then the cheapest) reaching an accuracy (a quality)

POLICIES = (MATCH_LAST, MAX_LAST_RATE, MAX_COST, TARGET)
#: Older names, still accepted: a shunt's two stages are the small and the large model, and a
#: generator's accuracy is a quality.
ALIASES = {"match_large": MATCH_LAST, "max_large_rate": MAX_LAST_RATE, "target_quality": TARGET}
NAMES = POLICIES + tuple(ALIASES)  #: every name a ``policy`` parameter takes


def canonical(policy: str, allowed=POLICIES) -> str:
    """The policy's own name (an alias resolved), refused if it is not among ``allowed``."""
    name = ALIASES.get(policy, policy)
    if name not in allowed:
        aliases = [a for a, p in ALIASES.items() if p in allowed]
        raise ConfigError(
            f"unknown or unsupported policy {policy!r} here; choose one of {list(allowed)}"
            + (f" (or the older names {aliases})" if aliases else "")
        )
    return name
