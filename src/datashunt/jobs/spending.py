"""What a batch run pays, counted call by call, and a spending limit that holds to one call.

A :class:`Meter` watches the priced models inside a fitted shunt, cascade or generator while a run
routes its items. Each answer paid for is appended to a ledger file beside the output the moment it
arrives, so a run killed mid-chunk still knows what it paid, though the next run takes those answers
from the call cache for free. With a budget, calls go out only in groups whose price fits: the money
spent plus, per call, the priciest answer of that model so far (at least its fixed price per call;
before any answer, one call at a time). Far from the limit a group is every call of the batch, so
concurrency is kept; near it, calls go one by one. A call that does not fit is not made: its item is
flagged :data:`NOT_ASKED`, and the run stops before that item.

Models that make their calls through :meth:`LargeModel._score_many <datashunt.backends.base.LargeModel._score_many>`
or :meth:`Generator._generate_many <datashunt.backends.generate.base.Generator._generate_many>` are
metered per call; a large model with its own ``predict_proba`` (a replay of recorded answers) per
item, through that method.
"""

import contextlib
import json
import math
import os
from decimal import Decimal
from pathlib import Path

import numpy as np

from ..backends.base import LargeModel, LargeResult
from ..backends.generate.base import Generator
from ..backends.pricing import Price
from ..exceptions import DataError, LargeModelError
from .paths import write_atomically

NOT_ASKED = "not asked: the run's spending limit (max_cost) is reached"


def priced_models(model) -> list:
    """The models inside ``model`` (a fitted shunt, cascade or generator) that charge for answers."""
    found = []
    inside = [getattr(model, "large_", None), getattr(model, "learnable_", None)]
    inside += [stage for _, stage in getattr(model, "stages_", [])]
    for backend in inside:
        if (
            isinstance(backend, LargeModel | Generator)
            and all(backend is not b for b in found)
            and Price.coerce(getattr(backend, "price", None)) != Price()
        ):
            found.append(backend)
    return found


class Meter:
    """The ledger of one run (``path``, opened for run ``run``) and its budget (None: no limit).

    A ledger written for another run is replaced by one that starts at ``committed``, the cost the
    run's state vouches for. :attr:`spent` is the total paid; :attr:`refused` says a call was not
    made for the budget.
    """

    def __init__(self, path, run: str, budget: float | None = None, committed: float = 0.0):
        self.path, self.budget, self.refused = Path(path), budget, False
        self._spent, self.priciest = Decimal(0), {}
        entries = _entries(self.path)
        if not entries or entries[0].get("run") != run:
            entries = [{"run": run}, {"model": "", "cost": float(committed)}]
            try:
                write_atomically(self.path, "".join(json.dumps(e) + "\n" for e in entries))
            except OSError as exc:
                raise DataError(f"{self.path}: cannot write the run's ledger of paid calls: {exc.strerror}") from None
        for entry in entries[1:]:
            self._count(entry["model"], entry["cost"])
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise DataError(f"{self.path}: cannot open the run's ledger of paid calls: {exc.strerror}") from None
        self.watched = 0

    @property
    def spent(self) -> float:
        """The total paid: summed in decimal, so fifty answers at 0.01 cost 0.5, not a hair more."""
        return float(self._spent)

    def close(self) -> None:
        os.close(self._fd)

    def pay(self, model: str, cost: float) -> None:
        """Record one paid answer now (a single appended line, handed to the system at once)."""
        if cost <= 0:
            return
        line = json.dumps({"model": model, "cost": float(cost)}) + "\n"
        try:
            os.write(self._fd, line.encode())
        except OSError as exc:
            raise DataError(
                f"{self.path}: cannot record a paid call ({exc.strerror}); the rows finished before "
                "are kept: make room and run the same command again to go on"
            ) from None
        self._count(model, cost)

    def _count(self, model: str, cost: float) -> None:
        cost = Decimal(repr(float(cost)))
        self._spent += cost
        if model:
            self.priciest[model] = max(self.priciest.get(model, Decimal(0)), cost)

    def allowed(self, model: str, floor: float, wanted: int) -> int:
        """How many of ``wanted`` calls to ``model`` (at least ``floor`` each) may go out now."""
        if self.budget is None:
            return wanted
        if self.refused:
            return 0
        unit = max(self.priciest.get(model, Decimal(0)), Decimal(repr(float(floor))))
        room = Decimal(repr(float(self.budget))) - self._spent
        if unit <= 0:  # the price of an answer is known only once one is paid: one at a time until then
            return min(wanted, 1) if room > 0 else 0
        return min(wanted, max(int(room // unit), 0))

    @contextlib.contextmanager
    def watch(self, model):
        """Meter (and, with a budget, limit) the priced models inside ``model`` while the block runs."""
        patched = []
        try:
            for backend in priced_models(model):
                name = _hook(backend)
                wrap = self._items if name == "predict_proba" else self._calls
                setattr(backend, name, wrap(backend, getattr(backend, name)))
                patched.append((backend, name))
            self.watched = len(patched)
            yield self
        finally:
            for backend, name in patched:
                vars(backend).pop(name, None)

    def _calls(self, backend, original):
        model, price = backend.identity(), Price.coerce(backend.price)
        floor = price.cost(0, 0)

        def guarded(todo, progress):
            todo, start = list(todo), 0
            while start < len(todo):
                n = self.allowed(model, floor, len(todo) - start)
                if n <= 0:
                    self.refused = True
                    for call in todo[start:]:
                        yield call, LargeModelError(NOT_ASKED)
                    return
                for call, got in original(todo[start : start + n], progress):
                    if not isinstance(got, LargeModelError):
                        self.pay(model, price.cost(got.prompt_tokens, got.completion_tokens))
                    yield call, got
                start += n

        return guarded

    def _items(self, backend, original):
        model, floor = backend.identity(), Price.coerce(backend.price).cost(0, 0)

        def guarded(inputs, labels, hints=None, candidates=None, progress=False, modality="auto"):
            parts, start, n = [], 0, len(inputs)
            while start < n:
                take = self.allowed(model, floor, n - start)
                if take <= 0:
                    self.refused = True
                    parts.append(_not_asked(n - start, len(labels)))
                    break
                rows = slice(start, start + take)
                got = original(
                    inputs[rows],
                    labels,
                    hints=None if hints is None else list(hints)[rows],
                    candidates=None if candidates is None else list(candidates)[rows],
                    progress=progress,
                    modality=modality,
                )
                for cost in np.asarray(got.cost, dtype=float):
                    self.pay(model, cost)
                parts.append(got)
                start += take
            return _joined(parts, len(labels))

        return guarded


def _hook(backend) -> str:
    """The method of ``backend`` through which its calls are metered."""
    if isinstance(backend, Generator):
        return "_generate_many"
    return "_score_many" if type(backend).predict_proba is LargeModel.predict_proba else "predict_proba"


def _not_asked(n: int, k: int) -> LargeResult:
    return LargeResult(
        np.full((n, k), np.nan), np.zeros(n), np.zeros(n, int), np.zeros(n, bool), [NOT_ASKED] * n, np.full(n, np.nan)
    )


def _joined(parts: list, k: int) -> LargeResult:
    if not parts:
        return _not_asked(0, k)
    seconds = [p.call_seconds if p.call_seconds is not None else np.full(len(p.cost), np.nan) for p in parts]
    return LargeResult(
        np.concatenate([p.proba for p in parts]).reshape(-1, k),
        np.concatenate([p.cost for p in parts]),
        np.concatenate([p.prompt_tokens for p in parts]),
        np.concatenate([p.cached for p in parts]),
        [e for p in parts for e in p.error],
        np.concatenate(seconds),
    )


def _entries(path: Path) -> list:
    """The ledger's lines: a header naming the run, then one paid answer each (a torn last line is dropped)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # none yet, or a link planted in its place (replaced, never followed)
        return []
    with open(fd, "rb") as handle:
        lines = handle.read().decode("utf-8", "replace").splitlines()
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not entries:
            if not (isinstance(entry, dict) and isinstance(entry.get("run"), str)):
                return []
        elif not (
            isinstance(entry, dict)
            and isinstance(entry.get("model"), str)
            and type(entry.get("cost")) in (int, float)
            and 0 <= entry["cost"] < math.inf
        ):
            continue
        entries.append(entry)
    return entries
