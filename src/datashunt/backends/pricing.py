"""What a large-model call costs."""

from dataclasses import dataclass

from ..exceptions import ConfigError


@dataclass(frozen=True)
class Price:
    """Price of one call: a fixed part plus input and output tokens, in one currency of your choice.

    Examples
    --------
    >>> Price(per_million_input=0.15).cost(prompt_tokens=2000)
    0.0003
    """

    per_call: float = 0.0
    per_million_input: float = 0.0
    per_million_output: float = 0.0

    def __post_init__(self):
        for name in ("per_call", "per_million_input", "per_million_output"):
            value = getattr(self, name)
            if type(value) not in (int, float) or not 0 <= value < float("inf"):
                raise ConfigError(f"price {name} must be a non-negative number, got {value!r}")

    def cost(self, prompt_tokens: int = 0, completion_tokens: int = 0) -> float:
        return (
            self.per_call
            + prompt_tokens * self.per_million_input / 1e6
            + completion_tokens * self.per_million_output / 1e6
        )

    @classmethod
    def coerce(cls, value) -> "Price":
        """Accept a Price, a mapping of its fields, or None (free)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {"per_call", "per_million_input", "per_million_output"}
            if unknown:
                raise ConfigError(f"unknown price keys {sorted(unknown)}")
            return cls(**value)
        raise ConfigError(f"price must be a Price or a mapping, got {type(value).__name__}")
