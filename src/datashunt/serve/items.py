"""``POST /v1/classify`` and ``POST /v1/documents``: items in, the model's route table out, one
record per item: labels from a classifying model (a shunt, a cascade, :class:`~datashunt.Subtasks`),
texts from :class:`~datashunt.Segments` (documents, each part routed on its own).

The model's work runs on the service's model thread, in micro-batches across requests when the
settings ask for it (:class:`~datashunt.serve.batching.MicroBatcher`); bad items are flagged per
row by the engine, never raised.
"""

import asyncio
import math

import numpy as np
import pandas as pd

from ..core.routes import FALLBACK, INVALID
from .batching import MicroBatcher
from .wire import CHAT, CLASSIFY, DOCUMENTS, Failure

#: The endpoint that answers each kind of model, and what it does.
ENDPOINTS = {
    "classify": (CLASSIFY, "classifies"),
    "generate": (CHAT, "generates text"),
    "documents": (DOCUMENTS, "answers documents part by part"),
}


def _plain(value):
    """A JSON-safe cell: NaN, infinities and NA become null, numpy scalars plain numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def traffic(table: pd.DataFrame, subtasks=None) -> tuple[np.ndarray, int, int]:
    """Per item whether it went past its first stage, then the calls answered from the cache and
    the upstream failures, from a route table: an engine's (one route per item), given the
    ``subtasks`` names :class:`~datashunt.Subtasks`' (a route per subtask, counted per call), or
    :class:`~datashunt.Segments`' (its ``failed_calls``, a joint call's among them)."""
    if subtasks:
        routes = table[[f"route_{name}" for name in subtasks]].to_numpy().ravel().tolist()
        failed = routes.count(FALLBACK)
    elif "failed_calls" in table:
        failed = int(table["failed_calls"].sum())
    else:
        sent = ((table["reached"] > 0) & (table["route"] != INVALID)).to_numpy()
        return sent, int((table["cached"] & sent).sum()), int((table["route"] == FALLBACK).sum())
    return (table["large_calls"] > 0).to_numpy(), int(table["cached_calls"].sum()), failed


class ItemRouter:
    """Answers ``endpoint`` (``/v1/classify`` or ``/v1/documents``) with a fitted model's
    ``route``, counting routes, cost, cache hits and upstream failures in ``metrics``."""

    def __init__(self, model, settings, metrics, executor, name: str, endpoint: str = CLASSIFY):
        self.model, self.settings, self.metrics, self.executor, self.name = model, settings, metrics, executor, name
        self.endpoint = endpoint
        self.batcher = MicroBatcher(
            self._work, max_items=settings.max_batch_items, executor=executor, on_batch=metrics.batch_items.observe
        )

    def _work(self, items: list) -> pd.DataFrame:
        batch = np.empty(len(items), dtype=object)
        batch[:] = items
        return self.model.route(batch)

    async def start(self) -> None:
        if self.settings.micro_batching:
            await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def answer(self, body) -> dict:
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise Failure(422, "the body must be a JSON object whose 'items' is a list of texts")
        if not items:
            raise Failure(422, "'items' is empty: send at least one text")
        if len(items) > self.settings.max_items:
            raise Failure(
                413,
                f"{len(items)} items is more than this service takes in one request "
                f"({self.settings.max_items}, max_items)",
                "request_too_large",
            )
        parts = getattr(self.model, "n_parts", None)  # Segments: each part may be a large-model call
        if parts is not None and (n := parts(items)) > self.settings.max_parts:
            raise Failure(
                413,
                f"these documents are cut into {n} parts, more than this service takes in one request "
                f"({self.settings.max_parts}, max_parts)",
                "request_too_large",
            )
        try:
            if self.settings.micro_batching:
                table = await self.batcher.submit(items)
            else:
                self.metrics.batch_items.observe(len(items))
                table = await asyncio.get_running_loop().run_in_executor(self.executor, self._work, items)
        except Exception as exc:  # a failure of the model itself (bad rows are flagged, not raised)
            raise Failure(500, f"the model failed on this batch: {type(exc).__name__}: {exc}", "server_error") from None
        subtasks = [name for name, _ in getattr(self.model, "subtasks_", ())]
        sent, cache_hits, upstream_errors = traffic(table, subtasks)
        self.metrics.routed(self.endpoint, table["route"].tolist(), sent)
        self.metrics.cost.inc(float(table["cost"].sum()))
        self.metrics.cache_hits.inc(cache_hits)
        self.metrics.upstream_errors.inc(upstream_errors)
        return {
            "object": "list",
            "model": self.name,
            "results": [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")],
            "usage": {"items": len(items), "cost": float(table["cost"].sum()), "large_share": float(sent.mean())},
        }


def wrong_endpoint(task: str) -> Failure:
    """The 404 for a request to an endpoint a model of this ``task`` (a key of :data:`ENDPOINTS`) does not answer."""
    endpoint, does = ENDPOINTS[task]
    return Failure(404, f"this model {does}: use {endpoint}", "not_found")
