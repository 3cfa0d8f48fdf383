"""Progress bars (rich), shown only when asked for and only on a terminal-like stream."""

from collections.abc import Iterable


def track(items, description: str, enabled: bool = True, total: int | None = None) -> Iterable:
    """Iterate over ``items``, drawing a progress bar when ``enabled``.

    Examples
    --------
    >>> list(track([1, 2], "counting", enabled=False))
    [1, 2]
    """
    if not enabled:
        yield from items
        return
    from rich.progress import track as rich_track  # noqa: PLC0415 (rich.progress: loaded only when a bar is drawn)

    yield from rich_track(items, description=description, total=total, transient=False)
