"""Micro-batching: the items of concurrent requests answered by one call of the model."""

import asyncio


class MicroBatcher:
    """Pools concurrent submissions into one call of ``work`` (a blocking function from a list of
    items to a table with one row per item), run on ``executor``.

    A batch is whatever has queued up while the previous one ran (at most ``max_items``, whole
    requests only): no waiting is added under light load, and under heavy load the model sees
    large batches. ``on_batch(n)`` is told each batch's size. When ``work`` raises for a batch of
    several requests, each is tried again on its own, so only a request that fails alone fails.

    Examples
    --------
    >>> import pandas as pd
    >>> async def demo():
    ...     batcher = MicroBatcher(lambda items: pd.DataFrame({"n": [len(x) for x in items]}))
    ...     await batcher.start()
    ...     rows = await asyncio.gather(batcher.submit(["a", "bb"]), batcher.submit(["ccc"]))
    ...     await batcher.stop()
    ...     return [r["n"].tolist() for r in rows]
    >>> asyncio.run(demo())
    [[1, 2], [3]]
    """

    def __init__(self, work, *, max_items: int = 256, executor=None, on_batch=None):
        self.work, self.max_items, self.executor, self.on_batch = work, max_items, executor, on_batch
        self._queue: asyncio.Queue | None = None
        self._task = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def submit(self, items: list):
        """The rows of ``items``, once the batch they joined is done."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((items, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        held = None
        while True:
            first = held or await self._queue.get()
            held, batch, n = None, [first], len(first[0])
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if n + len(nxt[0]) > self.max_items:
                    held = nxt  # starts the next batch
                    break
                batch.append(nxt)
                n += len(nxt[0])
            batch = [(items, future) for items, future in batch if not future.done()]  # timed out meanwhile
            if not batch:
                continue
            if self.on_batch:
                self.on_batch(n)
            try:
                table = await loop.run_in_executor(self.executor, self.work, [x for items, _ in batch for x in items])
            except Exception as exc:  # any failure of the model: find the request(s) it came from
                if len(batch) == 1:
                    raise_into(batch[0][1], exc)
                else:
                    await self._one_by_one(batch)
                continue
            start = 0
            for items, future in batch:
                if not future.done():
                    future.set_result(table.iloc[start : start + len(items)].reset_index(drop=True))
                start += len(items)

    async def _one_by_one(self, batch) -> None:
        loop = asyncio.get_running_loop()
        for items, future in batch:
            if future.done():
                continue
            if self.on_batch:
                self.on_batch(len(items))
            try:
                table = await loop.run_in_executor(self.executor, self.work, items)
            except Exception as exc:  # this request's own failure, told to it alone
                raise_into(future, exc)
            else:
                if not future.done():
                    future.set_result(table)


def raise_into(future, exc: BaseException) -> None:
    """Fail ``future`` with ``exc`` unless it is already settled (its request timed out)."""
    if not future.done():
        future.set_exception(exc)
