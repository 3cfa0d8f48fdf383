"""ShuntGenerator: Data Shunt for text generation and captioning (the paper's eq. 8 and Table 3)."""

import copy
import time
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..core import drift
from ..core.answers import require_answers
from ..core.calibration import choose, sweep
from ..core.deciding import outcome, stop_stage
from ..core.inputs import require_valid
from ..core.policies import NAMES as POLICY_NAMES
from ..core.policies import canonical
from ..core.sequence import SEQUENCE_MEASURES
from ..eval.metrics import METRICS, Metric, get_metric
from ..exceptions import ConfigError, DataError
from ..modalities import NAMES, as_inputs
from .deferral import AUTO, LEARNED, QualityDeferral, settle
from .engine import StageList, unchanged_on_error
from .stages import Deferred, GeneratorStage, Surer


class ShuntGenerator(StageList):
    """Generators from cheapest to strongest; each item's text comes from the first stage sure
    enough of what it wrote.

    A stage's confidence in a text is a function of the probabilities of the tokens it chose
    (``confidence``: the paper's mean token probability by default); the thresholds are
    calibrated on validation references against a quality ``metric``, with the policies of
    :class:`~datashunt.Cascade`. A stage that fails on an item (no text, an error) passes it on;
    if the last one fails, the latest earlier text stands (route ``fallback``, flagged).

    Parameters
    ----------
    stages : list of (name, generator)
        From cheapest to strongest, at least two. A generator is a backend of
        :mod:`datashunt.backends.generate` (llama.cpp, an OpenAI-compatible API, transformers) or
        a trainable small model such as :class:`~datashunt.small.captioner.CaptionerGenerator`;
        each is cloned and fitted on the training pairs (a prompted model keeps them as examples
        when its ``shots`` > 0).
    thresholds : "auto" or list of S - 1 numbers
    policy : {"match_last", "max_cost", "max_last_rate", "target_accuracy"}
        The names of every face (:mod:`datashunt.core.policies`; ``target_quality`` is an alias).
        ``match_last``: the fewest items sent on (then the cheapest) whose validation quality is
        at least the last stage's alone minus ``tolerance`` (in the metric's units);
        ``max_cost`` / ``max_last_rate``: the best quality within that budget per item or share
        reaching the last stage; ``target_accuracy``: the cheapest reaching ``target_quality``.
    metric : str or Metric
        ``chrf`` (default), ``bleu``, ``bleu1``..``bleu4``, ``rouge_l``, ``cider``,
        ``exact_match`` or ``token_f1`` (:mod:`datashunt.eval.metrics`); corpus-level during
        calibration, as reported.
    confidence : str or callable
        ``mean_proba`` (eq. 8), ``geometric_mean``, ``min_proba`` or ``length_normalised``
        (:mod:`datashunt.core.sequence`), or ``"learned"``: a quality estimator trained on the
        validation texts (cross-fitted) that predicts from every text and token probability so
        far how much worse a stage's text is than the last stage's
        (:class:`~datashunt.estimators.deferral.QualityDeferral`; ``deferral_`` holds it).
        ``"auto"`` (the default): the learned score only if its out-of-fold scores rank the
        validation texts better than ``mean_proba`` by more than one standard error (Spearman's
        correlation with the quality difference; ``scoring_`` records both), ``mean_proba``
        otherwise, and with fixed thresholds or fewer than 20 validation texts.
    hint : bool
        Offer each stage the previous stage's text and confidence (its mean token probability) as
        a draft in its prompt (:func:`datashunt.collab.drafts.draft_hint`).
    n_grid : int
        Candidate thresholds per stage (quantiles of its validation confidences).
    modality, validation_fraction, random_state, progress
        As for :class:`~datashunt.Cascade`.

    Attributes
    ----------
    stages_, thresholds_, sweep_, calibration_, modality_
    scoring_ : dict, with a learned or ``"auto"`` confidence: the score used and both scores'
        ranking figures on validation

    Examples
    --------
    Two local models, the smaller shown its closest training examples (needs ``datashunt setup
    --model qwen2.5-coder-0.5b``)::

        from datashunt import ShuntGenerator
        from datashunt.backends.generate.llama_cpp import LlamaCppGenerator
        ask = "Translate this Debian package synopsis into German. Answer with the translation only."
        shunt = ShuntGenerator([
            ("small", LlamaCppGenerator("qwen2.5-coder-0.5b", instruction=ask, shots=2, stop=["\\n"])),
            ("large", LlamaCppGenerator("qwen2.5-coder-1.5b", instruction=ask, stop=["\\n"])),
        ], metric="chrf").fit(texts, references)
        shunt.route(["free software accounting program"])
    """

    task = "generate"
    _noun = "shunt generator"
    _stage_noun = "generator"

    _parameter_constraints = {
        "stages": [list],
        "thresholds": [StrOptions({"auto"}), list],
        "policy": [StrOptions(set(POLICY_NAMES))],
        "metric": [StrOptions(set(METRICS)), Metric],
        "confidence": [StrOptions(set(SEQUENCE_MEASURES) | {LEARNED, AUTO}), callable],
        "tolerance": [Interval(Real, 0, None, closed="left")],
        "max_cost": [Interval(Real, 0, None, closed="left"), None],
        "max_last_rate": [Interval(Real, 0, 1, closed="both"), None],
        "target_quality": [Interval(Real, 0, None, closed="left"), None],
        "hint": ["boolean"],
        "n_grid": [Interval(Integral, 2, 10_000, closed="both")],
        "modality": [StrOptions(set(NAMES))],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
        "progress": ["boolean"],
    }

    def __init__(
        self,
        stages,
        *,
        thresholds="auto",
        policy="match_last",
        metric="chrf",
        confidence="auto",
        tolerance=0.0,
        max_cost=None,
        max_last_rate=None,
        target_quality=None,
        hint=False,
        n_grid=100,
        modality="auto",
        validation_fraction=0.2,
        random_state=None,
        progress=False,
    ):
        self.stages = stages
        self.thresholds = thresholds
        self.policy = policy
        self.metric = metric
        self.confidence = confidence
        self.tolerance = tolerance
        self.max_cost = max_cost
        self.max_last_rate = max_last_rate
        self.target_quality = target_quality
        self.hint = hint
        self.n_grid = n_grid
        self.modality = modality
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.progress = progress

    # -- learning ------------------------------------------------------------------------------
    def fit(self, X, references, X_val=None, references_val=None):
        """Fit each stage on the training pairs, then calibrate the thresholds on ``X_val,
        references_val`` (or a held-out share of the pairs), where every stage answers every
        validation item. A reference is a string, or a list of strings (several captions)."""
        self._check_stages()
        for stale in ("deferral_", "scoring_"):  # a refit learns them again
            self.__dict__.pop(stale, None)
        if self.confidence == LEARNED and self.thresholds != "auto":
            raise ConfigError("confidence='learned' is trained on validation texts: use thresholds='auto'")
        X, references, self.modality_ = self._pairs(X, references, "training")
        if X_val is None:
            if len(X) < 4:
                raise DataError(
                    f"{len(X)} training pairs are too few to hold some out for calibration; "
                    "give X_val and references_val"
                )
            X, X_val, references, references_val = train_test_split(
                X, references, test_size=self.validation_fraction, random_state=self.random_state
            )
        else:
            X_val, references_val, _ = self._pairs(X_val, references_val, "validation", self.modality_)
        self.stages_ = []
        for name, model in self.stages:
            model = clone(model)
            model.check_modality(self.modality_)
            self.stages_.append((name, model.fit(X, references)))
        if self.thresholds == "auto":
            self._calibrate(X_val, references_val)
        else:
            if len(self.thresholds) != len(self.stages) - 1:
                raise ConfigError(
                    f"{len(self.stages)} stages need {len(self.stages) - 1} thresholds, got {len(self.thresholds)}"
                )
            self.thresholds_ = [float(t) for t in self.thresholds]
            self.sweep_, self.calibration_ = None, {"policy": "fixed"}
        return self

    def _check_stage(self, name: str, model) -> None:
        if not HasMethods(["fit", "generate", "check_modality"]).is_satisfied_by(model):
            raise ConfigError(
                f"stage {name!r} is not a generator (it needs fit, generate and check_modality "
                f"methods), got {type(model).__name__}"
            )

    @staticmethod
    def _pairs(X, references, what: str, modality="auto"):
        batch = as_inputs(X, modality)
        require_valid(batch.problems, f"{what} inputs")
        if references is None or len(references) != len(batch.items):
            raise DataError(
                f"{what}: expected one reference per item ({len(batch.items)}), got "
                f"{'none' if references is None else len(references)}"
            )
        references = list(references)
        missing = [i for i, r in enumerate(references) if not _has_text(r)]
        if missing:
            raise DataError(
                f"{what}: {len(missing)} items have no reference, or one that is not text (rows "
                f"{missing[:5]}); drop them or give each a reference"
            )
        return batch.items, references, batch.modality.name

    def _calibrate(self, X_val, references_val):
        metric, n = get_metric(self.metric), len(X_val)
        for stale in ("deferral_", "scoring_"):  # the stages answer with their own confidence first
            self.__dict__.pop(stale, None)
        every = self.answers_of_every_stage(X_val)
        for (name, _), got in zip(self.stages_, every):
            require_answers(got.ok, got.flag, f"stage {name!r}")
        texts = [got.text for got in every]
        confidence = np.column_stack([got.confidence for got in every])
        item_quality = np.column_stack([metric.per_item(t, references_val) for t in texts])
        price = np.column_stack([got.price for got in every])
        learned = None
        if self._learns():
            start = time.perf_counter()
            self.deferral_ = QualityDeferral(random_state=self.random_state)
            try:
                scores = self.deferral_.fit_scores(every, X_val, item_quality)
            except DataError as exc:  # too few texts to learn from: "auto" keeps the token confidence
                scores = exc
            gain = item_quality[:, :-1] - item_quality[:, -1:]
            confidence[:, :-1], self.scoring_ = settle(self.confidence, "mean_proba", confidence[:, :-1], scores, gain)
            learned = {"scales": getattr(self.deferral_, "scales_", None), "seconds": time.perf_counter() - start}
            if self.scoring_["used"] != LEARNED:
                del self.deferral_

        mix = metric.mixer(texts, references_val) if all(t is not None for got in texts for t in got) else None

        def corpus(stage):  # every stage wrote every text: the metric's counts are mixed, not recounted
            return mix(stage) if mix is not None else metric.corpus(_standing(texts, stage), references_val)

        self.sweep_ = sweep(confidence, item_quality, price, n_grid=self.n_grid, quality=corpus)
        choice = choose(
            self.sweep_,
            self.policy,
            tolerance=self.tolerance,
            max_cost=self.max_cost,
            max_last_rate=self.max_last_rate,
            target_accuracy=self.target_quality,
        )
        self.thresholds_ = self.sweep_.filter(like="threshold_").iloc[choice.row].tolist()
        stage = stop_stage(confidence, self.thresholds_)
        result = outcome(stage, item_quality, price)
        self.calibration_ = {
            "policy": canonical(self.policy),
            "goal": choice.goal.replace("accuracy", f"{metric.name}"),
            "goal_met": choice.met,
            "metric": metric.name,
            "n_validation": n,
            "quality": corpus(stage),
            "stage_quality": [metric.corpus(t, references_val) for t in texts],
            "cost_per_item": result["cost"] / n,
            "stage_price": np.nanmean(price, axis=0).tolist(),  # each stage's mean price of an answer
            "reach": result["reach"],
            "failures": [int((~got.ok).sum()) for got in every],
            "deferral": learned,
            "scoring": getattr(self, "scoring_", None),
            "drift_reference": drift.reference(self._deployed(every, X_val, confidence), self.thresholds_[0]),
        }

    def _learns(self) -> bool:
        return self.confidence in (LEARNED, AUTO)

    def sequence_measure(self) -> str:
        """The sequence confidence each stage's answer gets (a learned score starts from the mean token probability)."""
        return "mean_proba" if self._learns() else self.confidence

    def _deployed(self, every, X_val, confidence) -> np.ndarray:
        """The first stage's routing scores on validation as routing will compute them (what drift is
        checked against): a learned quality estimator's refit model, not its out-of-fold scores."""
        deferral = getattr(self, "deferral_", None)
        return confidence[:, 0] if deferral is None else deferral.judge(0, every[:1], X_val)

    # -- inference -----------------------------------------------------------------------------
    def _stages(self, chat: bool = False, context=None, specific_only=False) -> list:
        """The stages (``context`` for the last one); the first is the surer of it and its 2CD copy
        after :meth:`distill` (the first alone with ``specific_only``)."""
        options = {"modality": self.modality_, "progress": self.progress, "chat": chat}
        measure = self.sequence_measure()
        last = len(self.stages_) - 1
        stages = [
            GeneratorStage(model, measure, hint=self.hint, context=context if s == last else None, **options)
            for s, (_, model) in enumerate(self.stages_)
        ]
        learnable = getattr(self, "learnable_", None)
        if (
            learnable is not None and not specific_only
        ):  # 2CD: the surer of the first stage and its distilled copy answers
            stages[0] = Surer(stages[0], GeneratorStage(learnable, measure, **options))
        deferral = getattr(self, "deferral_", None)
        if deferral is not None:  # learned quality: every stage but the last scored on all written so far
            stages[:-1] = [Deferred(stage, deferral, s) for s, stage in enumerate(stages[:-1])]
        return stages

    def route_chats(self, conversations: list, upto: int | None = None) -> pd.DataFrame:
        """:meth:`route` for whole chat conversations (each a list of ``{"role", "content"}``
        messages, answered as given: no instruction, template or examples are added). With
        ``upto``, only the first ``upto`` stages are asked and the items none of them keeps are
        left ``open`` for the caller to send on (what the OpenAI-compatible proxy does).
        """
        check_is_fitted(self, "thresholds_")
        items = np.empty(len(conversations), dtype=object)
        items[:] = [list(c) for c in conversations]
        return self._table(self._run(items, stages=self._stages(chat=True), upto=upto))

    def generate(self, X) -> list[str]:
        """The text of each item from the stage it stopped at; raises if an item got none (use
        :meth:`route` for a per-row flag)."""
        _, table = self._answered(X)
        return table["text"].tolist()

    def distill(
        self, X_pool, *, min_confidence: float = 0.5, epochs=None, X_val=None, references_val=None, routed=None
    ):
        """2-Stage Confidence Distillation for sequences: a copy of the first stage learns from the
        texts the last stage wrote with confidence at least ``min_confidence`` (what the small model
        was unsure of) and from the first stage's own confident texts (so it keeps what it knew).

        The first stage must be trainable (a ``distill(X, references, epochs)`` method, such as
        :class:`~datashunt.small.captioner.CaptionerGenerator` or a translation memory). Afterwards
        the surer of the first stage and its copy answers (route ``learnable``); with ``X_val,
        references_val`` the thresholds are calibrated again for the pair. No reference of
        ``X_pool`` is used. ``routed``: the pool's route table where the caller asked about it
        already (``text``, ``stage`` and ``confidence`` per item, ``stage`` -1 where the text must
        teach nothing; :meth:`Segments.distill <datashunt.Segments.distill>` gives its parts as it
        asked about them), routed here otherwise (where the last stage failed, the earlier text
        that stands teaches nothing: it was an unsure one). A distillation that fails leaves the
        model as it was.
        """
        check_is_fitted(self, "thresholds_")
        self.check_trainable()
        if (X_val is None) != (references_val is None):
            raise DataError("distill needs both the validation items and their references, or neither")
        if X_val is not None:  # checked before anything is learned
            X_val, references_val, _ = self._pairs(X_val, references_val, "validation", self.modality_)
        table = self.route(X_pool) if routed is None else routed
        if len(table) != len(X_pool):
            raise DataError(f"routed has {len(table)} rows for {len(X_pool)} pool items")
        stage = table["stage"].to_numpy()
        if routed is None:  # a fallback's standing text is an earlier stage's unsure one
            stage = np.where(table["reached"].to_numpy() == stage, stage, -1)
        last = len(self.stages_) - 1
        sure = table["confidence"].to_numpy(float) >= min_confidence
        teach = ((stage == 0) | ((stage == last) & sure)) & table["text"].notna().to_numpy()
        if not teach.any():
            raise DataError("no confident text in the pool to learn from; give a larger pool or a lower min_confidence")
        items = as_inputs(X_pool, self.modality_).items
        rows = np.flatnonzero(teach)
        learnable = copy.deepcopy(getattr(self, "learnable_", None) or self.stages_[0][1])
        with unchanged_on_error(self):
            self.learnable_ = learnable.distill(items[rows], table["text"].to_numpy()[rows].tolist(), epochs=epochs)
            if X_val is not None:
                self._calibrate(X_val, references_val)
        self.distillation_ = {
            "n_pool": len(table),
            "n_from_small": int((teach & (stage == 0)).sum()),
            "n_from_large": int((teach & (stage == last)).sum()),
        }
        return self

    def check_trainable(self) -> None:
        """Refuse 2-Stage Confidence Distillation where the first stage cannot learn."""
        first = self.stages_[0][1]
        if not hasattr(first, "distill"):
            raise ConfigError(f"the first stage ({type(first).__name__}) is not trainable: it has no distill method")

    def score(self, X, references) -> float:
        """Corpus quality of :meth:`generate` against ``references`` by ``metric``."""
        return get_metric(self.metric).corpus(self.route(X)["text"].tolist(), references)


def _has_text(reference) -> bool:
    """A reference is a non-blank string, or a list of strings with at least one non-blank."""
    if isinstance(reference, str):
        return bool(reference.strip())
    if isinstance(reference, list | tuple | np.ndarray):
        return all(isinstance(r, str) for r in reference) and any(r.strip() for r in reference)
    return False


def _standing(texts: list[list], stage: np.ndarray) -> list:
    """The text each item keeps when it stops at ``stage``: that stage's, or if it failed there,
    the latest earlier one's (None when no stage wrote one)."""
    out = []
    for i, s in enumerate(stage):
        got = next((texts[t][i] for t in range(s, -1, -1) if texts[t][i] is not None), None)
        out.append(got)
    return out
