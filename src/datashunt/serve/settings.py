"""What the service accepts and how much it takes on: one dataclass, from the command line, the
config's ``[serve]`` table and the environment."""

import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field, fields

from ..exceptions import ConfigError

KEYS_ENV = "DATASHUNT_API_KEY_SHA256"
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass
class ServeSettings:
    """Limits of the service.

    ``api_key_sha256``: SHA-256 hex digests of the accepted bearer tokens (the tokens themselves
    are never stored); empty means no authentication. ``max_body_bytes`` and ``max_items`` bound a
    request, and ``max_parts`` the parts its documents are cut into (``/v1/documents``), 413
    beyond; ``request_timeout`` bounds the time spent on one (504 beyond); ``max_concurrency``
    requests are worked on at once and ``max_pending`` more wait, further ones are turned away
    with 503 and ``Retry-After``; a request holds no place until its whole body has come, which
    must take at most ``body_timeout`` seconds (408 beyond). ``micro_batching`` pools the items of
    concurrent classify requests into one call of the model (at most ``max_batch_items``).
    uvicorn's own limits (:func:`~datashunt.serve.app.server_options`): ``max_connections`` open
    at once (503 beyond), ``max_header_bytes`` of request line and headers, ``keep_alive_timeout``
    seconds before an idle connection is closed.

    Examples
    --------
    >>> settings = ServeSettings(api_key_sha256=[hash_key("s3cret")])
    >>> settings.accepts("s3cret"), settings.accepts("guess")
    (True, False)
    """

    api_key_sha256: list = field(default_factory=list)
    max_body_bytes: int = 1 << 20
    max_items: int = 256
    max_parts: int = 4096
    request_timeout: float = 60.0
    max_concurrency: int = 32
    max_pending: int = 64
    micro_batching: bool = True
    max_batch_items: int = 256
    retry_after: int = 1
    body_timeout: float = 10.0
    max_connections: int = 512
    max_header_bytes: int = 16384
    keep_alive_timeout: int = 5

    def __post_init__(self):
        digests = [str(d).strip().lower() for d in self.api_key_sha256]
        bad = [d for d in digests if not _HEX.fullmatch(d)]
        if bad:
            raise ConfigError(f"api_key_sha256 must hold SHA-256 hex digests (64 hex digits); {len(bad)} do not")
        self.api_key_sha256 = digests
        for name in (
            "max_body_bytes",
            "max_items",
            "max_parts",
            "max_concurrency",
            "max_batch_items",
            "retry_after",
            "max_connections",
            "max_header_bytes",
            "keep_alive_timeout",
        ):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1, got {getattr(self, name)!r}")
        if not isinstance(self.max_pending, int) or self.max_pending < 0:
            raise ConfigError(f"max_pending must be a whole number of at least 0, got {self.max_pending!r}")
        for name in ("request_timeout", "body_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")

    @classmethod
    def from_sources(cls, table: dict | None = None, **overrides) -> "ServeSettings":
        """Settings from the config's ``[serve]`` table, then the environment's key digests
        (``DATASHUNT_API_KEY_SHA256``, comma-separated, added to the config's), then ``overrides``
        (the command line; None means not given)."""
        values = dict(table or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in [serve]; allowed: {sorted(f.name for f in fields(cls))}")
        env = [d for d in os.environ.get(KEYS_ENV, "").split(",") if d.strip()]
        values["api_key_sha256"] = list(values.get("api_key_sha256", [])) + env
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def accepts(self, token: str | None) -> bool:
        """Whether ``token`` is one of the keys (compared in constant time, by digest)."""
        if token is None:
            return False
        digest = hash_key(token)
        return any(hmac.compare_digest(digest, known) for known in self.api_key_sha256)


def hash_key(token: str) -> str:
    """The SHA-256 hex digest of an API key, as the settings keep it (``printf %s KEY | sha256sum``).

    Examples
    --------
    >>> hash_key("s3cret")[:16]
    '1ec1c26b50d5d3c5'
    """
    return hashlib.sha256(token.encode()).hexdigest()
