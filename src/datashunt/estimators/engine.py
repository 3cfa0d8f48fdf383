"""The one N-stage engine under every face: an item stops at the first stage sure enough of it.

:class:`Engine` is the base of :class:`~datashunt.ShuntClassifier` (two stages, the small model
then the large one), :class:`~datashunt.Cascade` (any number of classifier or large-model stages)
and :class:`~datashunt.ShuntGenerator` (generators). A face says only what its stages are
(:meth:`Engine._stages`: :mod:`datashunt.estimators.stages`, with their hooks) and its thresholds
(``thresholds_``, S - 1 of them); the engine runs them (:func:`datashunt.core.deciding.run_stages`),
writes the one route table every face returns, and checks the traffic for drift. The service, the
proxy, batch runs and Ray call these same methods.

The route table has one row per item and the same columns for every face: ``route`` (the name of
the stage that answered, ``learnable`` where a stage's 2CD copy did, ``fallback`` where the last
stage asked failed and an earlier answer stands, ``invalid`` where there is no answer, ``open``
where a partial run left the item to a later stage), ``stage``
and ``reached`` (positions: the answering stage and the last one asked; -1 for none), the answer
(``label``, or ``text`` for generation), its ``confidence``, each stage's confidence
(``confidence_<stage name>``), the ``cost`` paid over every stage reached (zero for cached
answers), the ``prompt_tokens`` and ``completion_tokens`` used, whether the standing answer came
from the cache (``cached``), and a ``flag`` (why an item is invalid, or what a stage said, as
``"<stage name>: <message>"``).
"""

from contextlib import contextmanager

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, MetaEstimatorMixin
from sklearn.utils.metaestimators import _BaseComposition
from sklearn.utils.validation import check_is_fitted

from ..backends.generate.base import Generation
from ..core import drift
from ..core.answers import Answers, from_columns, to_columns
from ..core.deciding import Routed, run_stages
from ..core.inputs import require_valid
from ..core.params import check_params
from ..core.routes import FALLBACK, INVALID, LEARNABLE, OPEN
from ..exceptions import ConfigError, DataError, LargeModelError
from ..modalities import as_inputs
from .stages import Given

#: The columns of a route table, in order; ``answer`` stands for ``label`` or ``text``.
ROUTE_COLUMNS = (
    "route",
    "stage",
    "reached",
    "answer",
    "confidence",
    "cost",
    "prompt_tokens",
    "completion_tokens",
    "cached",
    "flag",
)
PARTIAL = "_datashunt_"  #: prefix of the columns a partial run (:meth:`Engine.first_stages`) writes


@contextmanager
def unchanged_on_error(*models):
    """Put each model's fitted state back as it was if the block raises (a distillation that fails
    while learning or recalibrating leaves the models it started from)."""
    kept = [dict(model.__dict__) for model in models]
    try:
        yield
    except BaseException:
        for model, state in zip(models, kept):
            model.__dict__.clear()
            model.__dict__.update(state)
        raise


class Engine(MetaEstimatorMixin, BaseEstimator):
    """Base of the estimators: the stages in order, their thresholds, one route table.

    A face sets ``task`` ("classify" or "generate") and implements :meth:`_stages` and
    ``thresholds_``; the rest is shared.
    """

    task = "classify"

    # -- what a face provides ------------------------------------------------------------------
    def _stages(self, context=None, specific_only=False) -> list:
        """The fitted stages as :class:`~datashunt.estimators.stages.Stage` objects, hooks bound
        (``context``: a line per item for the last stage's prompt); the first stage with its 2CD
        copy where :meth:`distill` made one, unless ``specific_only``."""
        raise NotImplementedError

    def stage_names(self) -> list[str]:
        """The stages' names, in order."""
        return [name for name, _ in self.stages_]

    def _blank(self, n: int):
        return Generation.empty(n) if self.task == "generate" else Answers.empty(n, len(self.classes_))

    # -- running -------------------------------------------------------------------------------
    def _run(self, items, problems=None, *, thresholds=None, stages=None, upto=None, given=None) -> Routed:
        """Route ``items``: ask the stages in order (``stages``: the face's by default; ``upto``:
        stop after that many, leaving the rest open), each keeping what reaches its δ.
        ``given`` holds answers of the first stages computed earlier (:meth:`first_stages`)."""
        stages = self._stages() if stages is None else stages
        for s, got in enumerate(given or []):
            stages[s] = Given(got)
        thresholds = list(self.thresholds_ if thresholds is None else thresholds)
        n = len(items)
        valid = np.ones(n, bool) if problems is None else np.array([p is None for p in problems], bool)

        def ask(s, rows, answers):
            return stages[s].ask(items[rows] if len(rows) < n else items, rows, answers[:s])

        return run_stages(valid, ask, thresholds, lambda: self._blank(n), upto=upto)

    def _table(self, routed: Routed, problems=None) -> pd.DataFrame:
        """The route table of a run (see the module's docstring)."""
        names = self.stage_names()
        n = len(routed.stage)
        stage, reached = routed.stage, routed.reached
        answers = routed.answers + [self._blank(n) for _ in names[len(routed.answers) :]]  # a partial run's rest
        named = np.array(names + [INVALID], dtype=object)  # stage -1 indexes INVALID
        route = np.where(stage == reached, named[stage], FALLBACK).astype(object)
        confidence, cached = np.full(n, np.nan), np.zeros(n, bool)
        for s, got in enumerate(answers):
            here = stage == s
            confidence[here], cached[here] = got.confidence[here], got.cached[here]
            route[here & (reached == s) & got.learnable] = LEARNABLE
        route[stage < 0] = INVALID
        route[routed.open] = OPEN
        flag = list(problems) if problems is not None else [None] * n
        for name, got in zip(names, answers):
            for i in np.flatnonzero([f is not None for f in got.flag]):
                flag[i] = "; ".join(filter(None, [flag[i], f"{name}: {got.flag[i]}"]))
        for i in np.flatnonzero((stage < 0) & (reached >= 0)):
            flag[i] = flag[i] or "no stage could answer"
        columns = {"route": route, "stage": stage, "reached": reached}
        if self.task == "generate":
            columns["text"] = pd.Series(self._answer(routed), dtype=object)
        else:
            columns["label"] = self._answer(routed)
        columns["confidence"] = confidence
        for name, got in zip(names, answers):
            columns[f"confidence_{name}"] = got.confidence
        columns["cost"] = sum(got.cost for got in answers)
        columns["prompt_tokens"] = sum(np.asarray(got.prompt_tokens, int) for got in answers)
        columns["completion_tokens"] = sum(
            np.asarray(getattr(got, "completion_tokens", np.zeros(n, int)), int) for got in answers
        )
        columns["cached"] = cached
        columns["flag"] = flag
        table = pd.DataFrame(columns)
        first = routed.answers[0]
        table.attrs["drift"] = drift.check(
            self.calibration_.get("drift_reference"), first.confidence, self.thresholds_[0], first.predicted()
        )
        return table

    def _answer(self, routed: Routed) -> np.ndarray:
        """Each item's standing answer: the label (or text) of the stage it stopped at, None for none."""
        n = len(routed.stage)
        out = np.full(n, None, dtype=object)
        if self.task == "generate":
            for s, got in enumerate(routed.answers):
                for i in np.flatnonzero(routed.stage == s):
                    out[i] = got.text[i]
        else:
            proba = routed.proba()
            ok = ~np.isnan(proba).any(axis=1)
            out[ok] = self.classes_[proba[ok].argmax(axis=1)]
        return out

    # -- the faces' shared methods -------------------------------------------------------------
    def route(self, X, first_stage: pd.DataFrame | None = None, context=None) -> pd.DataFrame:
        """One record per item (the route table, see :mod:`datashunt.estimators.engine`): the
        stage that answered, its answer and confidence, every stage's confidence, what the item
        cost, the tokens it took, whether the answer was cached, and a flag. Bad items are flagged
        per row, never raised. ``table.attrs["drift"]`` compares the first stage's confidences
        and share sent on with the calibration data (:func:`datashunt.core.drift.check`; a
        :class:`~datashunt.exceptions.DriftWarning` when they differ beyond chance), or is None.

        ``first_stage`` (from :meth:`first_stages` on the same items, perhaps on another worker)
        stands in for asking the stages it holds again: only the later stages are asked, and
        only about the items still open.

        ``context`` (one string or None per item) is shown to the last stage in each item's
        prompt: what the caller already knows about it, such as the answers other subtasks
        settled (:class:`~datashunt.Subtasks`, which has the earlier stages answer first).
        """
        check_is_fitted(self, "calibration_")
        batch = as_inputs(X, self.modality_)
        given = None if first_stage is None else self._read_partial(first_stage, len(batch))
        context = self._checked_context(context, len(batch))
        stages = None if context is None else self._stages(context=context)
        return self._table(self._run(batch.items, batch.problems, stages=stages, given=given), batch.problems)

    @staticmethod
    def _checked_context(context, n: int) -> list | None:
        """``context`` as a list of one string (or None) per item of ``n``; None stays None."""
        if context is None:
            return None
        context = list(context)
        if len(context) != n or not all(c is None or isinstance(c, str) for c in context):
            raise DataError(f"context needs one string (or None) per item ({n}), got {len(context)}")
        return context

    def first_stages(self, X, upto: int | None = None) -> pd.DataFrame:
        """The answers of the first ``upto`` stages alone (all but the last by default): what the
        cheap side can do on a worker without the expensive stage. One row per item, in columns a
        table can carry; hand it to :meth:`route` on the same items to finish the job there.
        ``_datashunt_open`` says which items those stages left open, ``_datashunt_stage`` and
        ``_datashunt_answer`` the stage that settled each of the others and its answer (label or text).

        Examples
        --------
        Every stage but the last runs here; ``route`` then asks only the last, only about the
        items still open (see :class:`~datashunt.Cascade` for the cascade built here):

        >>> from datashunt.backends.replay import ReplayModel
        >>> ids, truth = [f"r{i}" for i in range(20)], ["pos", "neg"] * 10
        >>> table = pd.DataFrame({"id": ids, "prediction": truth, "conf": 0.9})
        >>> from datashunt import Cascade
        >>> cascade = Cascade([(n, ReplayModel(table, confidence_column="conf", name=n)) for n in ("a", "b")],
        ...                   thresholds=[0.5]).fit(ids, truth)
        >>> cascade.route(ids[:2], first_stage=cascade.first_stages(ids[:2]))["route"].tolist()
        ['a', 'a']
        """
        check_is_fitted(self, "calibration_")
        upto = len(self.stage_names()) - 1 if upto is None else upto
        if not 1 <= upto < len(self.stage_names()):
            raise ConfigError(f"upto must be between 1 and {len(self.stage_names()) - 1}, got {upto}")
        batch = as_inputs(X, self.modality_)
        routed = self._run(batch.items, batch.problems, upto=upto)
        columns = {}
        for s, got in enumerate(routed.answers[:upto]):
            columns |= to_columns(got, f"{PARTIAL}{s}_")
        columns[f"{PARTIAL}open"] = routed.open
        columns[f"{PARTIAL}stage"] = routed.stage
        columns[f"{PARTIAL}answer"] = np.where(routed.open, None, self._answer(routed))
        return pd.DataFrame(columns)

    def _read_partial(self, table: pd.DataFrame, n: int) -> list:
        if len(table) != n:
            raise DataError(f"first_stage has {len(table)} rows for {n} items")
        kind = type(self._blank(0))
        given, s = [], 0
        while f"{PARTIAL}{s}_flag" in table:
            given.append(from_columns(kind, table, f"{PARTIAL}{s}_"))
            s += 1
        if not 1 <= s < len(self.stage_names()):
            raise DataError("first_stage is not a table written by first_stages() for this model")
        return given

    def answers_of_every_stage(self, X) -> list:
        """Every stage's answers to every item (what calibration and comparisons need), earlier
        answers passed on to the hooks as when routing."""
        stages, every = self._stages(), []
        rows = np.arange(len(X))
        for stage in stages:
            every.append(stage.ask(X, rows, every))
        return every

    def ask_stage(self, s: int, X):
        """Stage ``s`` alone on every item of ``X`` (already checked items), as when nothing before it
        had answered and without a 2CD copy: what a comparison of each stage alone needs (a learned
        routing score, which judges from the earlier answers too, is NaN here)."""
        return self._stages(specific_only=True)[s].ask(X, np.arange(len(X)), [])

    def _answered(self, X) -> tuple[np.ndarray, pd.DataFrame]:
        """The table of valid items; raises where an item got no answer at all (never a silent guess)."""
        check_is_fitted(self, "calibration_")
        batch = as_inputs(X, self.modality_)
        require_valid(batch.problems, "inputs", hint="Clean them, or use route() to get a per-row flag.")
        routed = self._run(batch.items, batch.problems)
        table = self._table(routed, batch.problems)
        missing = np.flatnonzero(table["stage"].to_numpy() < 0)
        if len(missing):
            i = missing[0]
            raise LargeModelError(
                f"{len(missing)} items got no answer from any stage (row {i}: "
                f"{table['flag'].iloc[i]}); use route() for a per-row flag"
            )
        return routed, table


class StageList(_BaseComposition, Engine):
    """Base of the faces given a list of ``(name, model)`` stages (:class:`~datashunt.Cascade`,
    :class:`~datashunt.ShuntGenerator`): their parameters, reachable as ``<name>__<param>``, and
    their checks."""

    _noun = "model"  #: what the face is called in errors
    _stage_noun = "model"  #: what a stage is called in errors

    def get_params(self, deep=True):
        return self._get_params("stages", deep=deep)

    def set_params(self, **params):
        self._set_params("stages", **params)
        return self

    def _check_stages(self) -> None:
        """Refuse bad parameters and stage lists before any work (a :class:`~datashunt.exceptions.ConfigError`)."""
        check_params(self, self._noun)
        if len(self.stages) < 2 or not all(isinstance(s, tuple) and len(s) == 2 for s in self.stages):
            raise ConfigError(f"stages must be a list of at least two (name, {self._stage_noun}) pairs")
        names = [name for name, _ in self.stages]
        if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"stage names must be distinct non-empty strings, got {names}")
        self._validate_names(names)
        for name, model in self.stages:
            self._check_stage(name, model)

    def _check_stage(self, name: str, model) -> None:
        check_params(model, f"stage {name!r}")
