"""Subtasks (Data Shunt+): an item made of several questions, each routed on its own.

Some tasks break into subtasks of unequal difficulty: the facets of a package (its section, its
interface, what it is used for), the fields of a form, the steps of a job. :class:`Subtasks` holds
one face per subtask (a :class:`~datashunt.ShuntClassifier` or :class:`~datashunt.Cascade`, each
with its own small model, δ, policy and guarantee) and routes every subtask of every item on its
own, so the large model is asked only the questions its small model is unsure of, not everything
about an item or nothing. What the small side settled goes into the large model's prompt as
context for the open questions (``context=True``: "Known about this item: section: games").

The route table has one row per item: per subtask its answer (a column named after it), route,
confidence, cost and flag (``route_<name>`` ...), then the item's: ``route`` (``large`` where any
subtask asked the large model, ``small`` where none did, ``invalid`` where the item could not be
read), ``cost``, ``large_calls`` (the subtasks that reached their last stage), ``cached_calls``
(those of them answered from the cache), ``prompt_tokens``, ``completion_tokens`` and the joined
``flag``. A label-scoring backend answers one subtask per call; each call carries the context.
The service answers ``/v1/classify`` with this table (:mod:`datashunt.serve.items`).

Examples
--------
Two subtasks from recorded answers, the first settled by the small side, the second asked:

>>> import pandas as pd
>>> from sklearn.dummy import DummyClassifier
>>> from datashunt import ShuntClassifier
>>> from datashunt.backends.replay import ReplayModel
>>> ids = [f"p{i}" for i in range(4)]
>>> asked = ReplayModel(pd.DataFrame({"id": ids, "prediction": ["x11", "cli", "x11", "cli"]}), name="llm")
>>> sure = DummyClassifier(strategy="prior")
>>> model = Subtasks([
...     ("section", ShuntClassifier(sure, asked, threshold=0.0)),
...     ("interface", ShuntClassifier(sure, asked, threshold=1.1)),
... ])
>>> labels = pd.DataFrame({"section": ["games"] * 3 + ["net"], "interface": ["x11", "cli", "x11", "cli"]})
>>> model = model.fit(ids, labels, X_val=ids, Y_val=labels)
>>> table = model.route(ids[:2])
>>> table[["section", "route_section", "interface", "route_interface", "large_calls"]].values.tolist()
[['games', 'small', 'x11', 'large', 1], ['games', 'small', 'cli', 'large', 1]]
"""

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils.validation import check_is_fitted

from ..core.routes import INVALID, LARGE, SMALL
from ..exceptions import ConfigError, DataError, LargeModelError
from .engine import PARTIAL, Engine, unchanged_on_error

CONTEXT_LEAD = "Known about this item: "  #: how the settled answers are introduced in a prompt
#: the route table's columns per item, and the prefixes of its columns per subtask: no subtask is named so
ITEM_COLUMNS = ("route", "cost", "large_calls", "cached_calls", "prompt_tokens", "completion_tokens", "flag")
SUBTASK_PREFIXES = ("route_", "confidence_", "cost_", "flag_")


def check_names(names: list) -> None:
    """Refuse subtask names that repeat or that the route table's own columns would overwrite.

    Examples
    --------
    >>> check_names(["section", "cost"])
    Traceback (most recent call last):
    ...
    datashunt.exceptions.ConfigError: subtask name 'cost' is a column of the route table; rename it
    """
    if len(set(names)) != len(names):
        raise ConfigError(f"subtask names must be distinct, got {names}")
    for name in names:
        if name in ITEM_COLUMNS:
            raise ConfigError(f"subtask name {name!r} is a column of the route table; rename it")
        for prefix in SUBTASK_PREFIXES:
            if name.startswith(prefix) and name[len(prefix) :] in names:
                raise ConfigError(
                    f"subtask name {name!r} is a column of the route table ({prefix}<subtask>); rename it"
                )


class Subtasks(MetaEstimatorMixin, BaseEstimator):
    """Named subtasks of one item, each routed by its own face; the large model answers only the
    open ones, told what the small side settled.

    Parameters
    ----------
    subtasks : list of (name, estimator)
        One classification face per subtask (:class:`~datashunt.ShuntClassifier` or
        :class:`~datashunt.Cascade`), cloned and fitted on that subtask's labels with its own
        calibration (policy, guarantee) on the same validation items.
    context : bool
        Show each subtask's last stage (its large model), in each item's prompt, the answers the
        small side settled for the item's other subtasks.

    Attributes
    ----------
    subtasks_ : list of (name, fitted estimator)
    """

    def __init__(self, subtasks, *, context: bool = True):
        self.subtasks = subtasks
        self.context = context

    def fit(self, X, Y, X_val=None, Y_val=None):
        """Fit every subtask's face on ``Y[name]`` (a table with one column per subtask), calibrating
        each on ``Y_val[name]`` (or each face's own held-out share when ``X_val`` is None). Every
        subtask's labels are checked before any face is fitted; a fit that fails keeps the model as
        it was."""
        names = self._names()
        if (X_val is None) != (Y_val is None):
            raise DataError("fit needs both the validation items and their labels, or neither")
        Y = self._labels(Y, names, "training", len(X))
        Y_val = None if X_val is None else self._labels(Y_val, names, "validation", len(X_val))
        fitted = []
        for name, face in self.subtasks:
            face = clone(face)
            if X_val is None:
                face.fit(X, Y[name].to_numpy())
            else:
                face.fit(X, Y[name].to_numpy(), X_val=X_val, y_val=Y_val[name].to_numpy())
            fitted.append((name, face))
        self.subtasks_ = fitted
        return self

    @property
    def modality_(self) -> str:
        """What the items are (text, image ...), as the first subtask's face read them."""
        check_is_fitted(self, "subtasks_")
        return self.subtasks_[0][1].modality_

    def _names(self) -> list[str]:
        if not isinstance(self.subtasks, list | tuple) or not self.subtasks:
            raise ConfigError("subtasks must be a non-empty list of (name, estimator) pairs")
        names = []
        for pair in self.subtasks:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) and pair[0]):
                raise ConfigError(f"each subtask is a (name, estimator) pair, got {pair!r}")
            name, face = pair
            if not isinstance(face, Engine) or face.task != "classify":
                raise ConfigError(f"subtask {name!r} needs a ShuntClassifier or a Cascade, got {type(face).__name__}")
            names.append(name)
        check_names(names)
        return names

    @staticmethod
    def _labels(Y, names, what: str, n: int) -> pd.DataFrame:
        if not isinstance(Y, pd.DataFrame | dict):
            raise DataError(f"{what} labels must be a table (or dict) with one column per subtask {names}")
        try:
            Y = pd.DataFrame(Y)
        except ValueError as exc:  # a dict of columns of different lengths
            raise DataError(f"{what} labels: {exc}") from None
        missing = [name for name in names if name not in Y.columns]
        if missing:
            raise DataError(f"{what} labels have no column for subtask(s) {missing} (columns: {list(Y.columns)})")
        if len(Y) != n:
            raise DataError(f"{what}: {n} items but {len(Y)} rows of labels")
        for name in names:
            lacking = int(Y[name].isna().sum())
            if lacking:
                raise DataError(f"{what} labels of subtask {name!r}: {lacking} missing; drop those rows first")
        return Y.reset_index(drop=True)

    # -- routing -------------------------------------------------------------------------------
    def route(self, X) -> pd.DataFrame:
        """One row per item: every subtask's answer and route, then the item's totals (see the
        module's docstring). Each subtask's small side answers first; the large model is asked only
        the open subtasks, with the settled ones as context."""
        check_is_fitted(self, "subtasks_")
        first = {name: face.first_stages(X) for name, face in self.subtasks_}
        settled = {name: table[f"{PARTIAL}answer"].notna().to_numpy() for name, table in first.items()}
        n = len(next(iter(first.values())))
        columns, totals, flags = {}, {"cost": np.zeros(n), "prompt_tokens": np.zeros(n, int)}, [[] for _ in range(n)]
        totals |= {key: np.zeros(n, int) for key in ("completion_tokens", "large_calls", "cached_calls")}
        for name, face in self.subtasks_:
            context = self._context(name, first, settled) if self.context else None
            table = face.route(X, first_stage=first[name], context=context)
            columns[name] = table["label"].to_numpy()
            columns[f"route_{name}"] = table["route"].to_numpy()
            columns[f"confidence_{name}"] = table["confidence"].to_numpy()
            columns[f"cost_{name}"] = table["cost"].to_numpy()
            columns[f"flag_{name}"] = table["flag"].to_numpy()
            totals["cost"] += table["cost"].to_numpy()
            totals["prompt_tokens"] += table["prompt_tokens"].to_numpy()
            totals["completion_tokens"] += table["completion_tokens"].to_numpy()
            asked = (table["reached"].to_numpy() == len(face.stages_) - 1) & (~settled[name])
            totals["large_calls"] += asked
            totals["cached_calls"] += asked & table["cached"].to_numpy(dtype=bool)
            for i, flag in enumerate(table["flag"]):
                if isinstance(flag, str) and flag:  # None, or NaN where pandas stored it so
                    flags[i].append(f"{name}: {flag}")
        invalid = np.all([columns[f"route_{name}"] == INVALID for name, _ in self.subtasks_], axis=0)
        route = np.where(invalid, INVALID, np.where(totals["large_calls"] > 0, LARGE, SMALL))
        out = pd.DataFrame(columns | {"route": route} | totals)
        out["flag"] = ["; ".join(f) or None for f in flags]
        return out

    def distill(self, X_pool, *, X_train=None, y_train=None, X_val=None, y_val=None, epochs=None):
        """One round of 2-Stage Confidence Distillation for every subtask (each face's
        :meth:`~datashunt.ShuntClassifier.distill` or :meth:`~datashunt.Cascade.distill`): the
        large model's confident answers on the subtasks their small model is unsure of teach that
        subtask's learnable copy. Its prompts carry the context :meth:`route` shows, so traffic
        already answered comes from the cache. ``y_train`` and ``y_val`` are tables with one
        column per subtask, as in :meth:`fit`. Sets ``distillation_``: per subtask its face's,
        and the totals."""
        check_is_fitted(self, "subtasks_")
        names = [name for name, _ in self.subtasks_]
        self.check_trainable()
        for X, y, what in ((X_train, y_train, "training"), (X_val, y_val, "validation")):
            if (X is None) != (y is None):
                raise DataError(f"distill needs both the {what} items and their labels, or neither")
        if y_train is not None:
            y_train = self._labels(y_train, names, "training", len(X_train))
        if y_val is not None:
            y_val = self._labels(y_val, names, "validation", len(X_val))
        first = {name: face.first_stages(X_pool) for name, face in self.subtasks_}
        settled = {name: table[f"{PARTIAL}answer"].notna().to_numpy() for name, table in first.items()}
        with unchanged_on_error(*(face for _, face in self.subtasks_)):  # every subtask learns, or none
            for name, face in self.subtasks_:
                face.distill(
                    X_pool,
                    X_train=X_train,
                    y_train=None if y_train is None else y_train[name].to_numpy(),
                    X_val=X_val,
                    y_val=None if y_val is None else y_val[name].to_numpy(),
                    epochs=epochs,
                    context=self._context(name, first, settled) if self.context else None,
                )
        faces = {name: face.distillation_ for name, face in self.subtasks_}
        totals = ("n_from_small", "n_from_large", "n_large_asked", "large_cost")
        self.distillation_ = {"subtasks": faces, "n_pool": next(iter(faces.values()))["n_pool"]} | {
            key: sum(face[key] for face in faces.values()) for key in totals
        }
        return self

    def check_trainable(self) -> None:
        """Refuse 2-Stage Confidence Distillation where a subtask's first stage cannot learn."""
        for name, face in self.subtasks_:
            check = getattr(face, "check_trainable", None)  # a cascade's first stage may be a large model
            if check is None:
                continue
            try:
                check()
            except ConfigError as exc:
                raise ConfigError(f"subtask {name!r}: {exc}") from None

    def _context(self, name: str, first: dict, settled: dict) -> list:
        """Per item, the answers the small side settled for the other subtasks (None where none)."""
        n = len(first[name])
        parts = [[] for _ in range(n)]
        for other, table in first.items():
            if other == name:
                continue
            face = dict(self.subtasks_)[other]
            words = dict(zip(face.classes_.tolist(), face.labels_))  # as that face's large model says them
            for i in np.flatnonzero(settled[other]):
                answer = table[f"{PARTIAL}answer"].iloc[i]
                parts[i].append(f"{other}: {words.get(answer, answer)}")
        return [CONTEXT_LEAD + "; ".join(p) if p else None for p in parts]

    def predict(self, X) -> pd.DataFrame:
        """Every subtask's answer, one column each; raises if an item got no answer for one (use
        :meth:`route` for a per-row flag)."""
        table = self.route(X)
        names = [name for name, _ in self.subtasks_]
        missing = table[names].isna().any(axis=1).to_numpy()
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise LargeModelError(f"{int(missing.sum())} items lack an answer (row {i}: {table['flag'].iloc[i]})")
        return table[names]

    def score(self, X, Y) -> float:
        """Exact match: the share of items whose every subtask is answered right."""
        names = [name for name, _ in self.subtasks_]
        Y = self._labels(Y, names, "scoring", len(X))
        got = self.route(X)
        return float((got[names].to_numpy() == Y[names].to_numpy()).all(axis=1).mean())
