"""What a batch run pays, counted call by call, and a spending limit that holds to one call.

A :class:`Meter` watches the priced models inside a fitted shunt, cascade or generator while a run
routes its items. Each answer paid for is appended to a ledger file beside the output the moment it
arrives, so a run killed mid-chunk still knows what it paid, though the next run takes those answers
from the call cache for free. With a budget, calls go out only in groups whose price fits: the money
spent plus, per call, the priciest answer of that model so far (at least its fixed price per call;
before any answer, one call at a time). Far from the limit a group is every call of the batch, so
concurrency is kept; near it, calls go one by one. A call that does not fit is not made: its item is
flagged :data:`NOT_ASKED`, and the run stops before that item.

The backends consult the meter themselves, through :func:`~datashunt.backends.base.metering`: a large
model or generator per distinct prompt it sends, a replay of recorded answers per item.
"""

import contextlib
import json
import math
import os
from decimal import Decimal
from pathlib import Path

from ..backends.base import NOT_ASKED, LargeModel, metering
from ..backends.generate.base import Generator
from ..backends.pricing import Price
from ..exceptions import DataError
from .paths import write_atomically

__all__ = ["NOT_ASKED", "Meter", "priced_models"]


def priced_models(model) -> list:
    """The models inside ``model`` (a fitted shunt, cascade, generator, Subtasks or Segments) that
    charge for answers."""
    found = []
    inside = [getattr(model, "large_", None), getattr(model, "learnable_", None)]
    inside += [stage for _, stage in getattr(model, "stages_", [])]
    for face in [face for _, face in getattr(model, "subtasks_", [])] + [getattr(model, "shunt_", None)]:
        inside += priced_models(face) if face is not None else []
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
        """How many of ``wanted`` calls to ``model`` (at least ``floor`` each) may go out now; when none may, the run
        is :attr:`refused`."""
        if self.budget is None:
            return wanted
        n = 0 if self.refused else self._fitting(model, floor, wanted)
        if wanted and not n:
            self.refused = True
        return n

    def _fitting(self, model: str, floor: float, wanted: int) -> int:
        unit = max(self.priciest.get(model, Decimal(0)), Decimal(repr(float(floor))))
        room = Decimal(repr(float(self.budget))) - self._spent
        if unit <= 0:  # the price of an answer is known only once one is paid: one at a time until then
            return min(wanted, 1) if room > 0 else 0
        return min(wanted, max(int(room // unit), 0))

    @contextlib.contextmanager
    def watch(self, model):
        """Meter (and, with a budget, limit) the priced models inside ``model`` while the block runs, for the calls
        made in this thread (:func:`~datashunt.backends.base.metering`)."""
        backends = priced_models(model)
        self.watched = len(backends)
        with metering(self, backends):
            yield self


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
