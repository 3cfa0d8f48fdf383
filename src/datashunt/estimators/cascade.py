"""Cascade: N stages from cheapest to strongest; an item stops at the first stage sure enough of it."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..backends.base import LargeModel
from ..backends.prompt import label_words, words_for
from ..collab.distill import Targets, learn
from ..core import drift
from ..core.answers import require_answers
from ..core.calibration import (
    choose,
    known,
    per_class_refine,
    per_class_thresholds,
    sweep,
)
from ..core.confidence import MEASURES, get_measure
from ..core.deciding import outcome, stop_stage
from ..core.guarantee import guaranteed_cascade
from ..core.inputs import check_targets, require_valid, training_sets
from ..core.policies import MATCH_LAST, TARGET, canonical
from ..core.policies import NAMES as POLICY_NAMES
from ..core.stratified import choose_stratified, estimated_path, plan_calls
from ..exceptions import CalibrationWarning, ConfigError, DataError
from ..modalities import NAMES, as_inputs
from .deferral import AUTO, LEARNED, Combiner, Deferral, settle
from .engine import StageList, unchanged_on_error
from .stages import ClassifierStage, Combined, Deferred, LabelStage, Surer


class Cascade(ClassifierMixin, StageList):
    """An ordered list of stages; an item stops at the first whose confidence reaches its δ.

    Classifier stages (any scikit-learn classifier with ``predict_proba``) are cloned and trained
    on the training data; wrap an already-trained one in :class:`sklearn.frozen.FrozenEstimator`
    to use it as is. Large-model stages (:mod:`datashunt.backends`: llama.cpp, an OpenAI-compatible
    API, a replay of recorded answers) are asked by label name. The last stage answers whatever
    reaches it. A stage that fails on an item passes it on; if the last one fails, the latest
    earlier answer stands (route ``fallback``, flagged).

    Parameters
    ----------
    stages : list of (name, model)
        From cheapest to strongest; at least two.
    thresholds : "auto" or list
        ``"auto"`` calibrates the S - 1 thresholds on validation data with ``policy``; or give
        them: numbers, or arrays with one δ per class.
    policy : {"match_last", "max_cost", "max_last_rate", "target_accuracy"}
        See :mod:`datashunt.core.policies` (the older names are aliases) and
        :func:`datashunt.core.calibration.choose`; ``tolerance``, ``max_cost`` (money per
        item), ``max_last_rate`` and ``target_accuracy`` are its figures.
    confidence_level : float, optional
        With a value (say 0.9), the thresholds come with a guarantee: with at least this
        probability over the validation draw, accuracy on new data from the same source is at
        least the last stage's minus ``tolerance`` (``match_last``), or at least
        ``target_accuracy``; one δ is shared by every stage but the last (see
        :func:`datashunt.core.guarantee.guaranteed_cascade`). None keeps the point estimate.
    certification : {"stratified", "paired"}, default="stratified"
        How a guaranteed ``match_last`` threshold is certified. ``"stratified"`` asks every stage
        but the last about every validation item, and the last stage only where the bound needs it:
        about the items some earlier stage gets wrong and a random sample of the rest, at most
        ``max_calibration_calls`` (:mod:`datashunt.core.stratified`). ``"paired"`` asks every stage
        about every validation item (:func:`datashunt.core.guarantee.guaranteed_cascade`).
    max_calibration_calls : int, optional
        The most validation items the last stage is asked about under ``"stratified"``
        certification. None asks as many as the method can use.
    per_class : bool
        One δ per class the stage predicts: for two stages by :func:`~datashunt.core.calibration.per_class_thresholds`,
        for more by :func:`~datashunt.core.calibration.per_class_refine` from the best single thresholds.
    confidence : {"max_proba", "margin", "entropy", "learned", "auto"} or callable
        The routing score of every stage but the last: a measure of its own probabilities
        (:mod:`datashunt.core.confidence`; ``max_proba`` is the paper's), or ``"learned"``: a
        gradient-boosted deferral model trained on the validation answers (cross-fitted) that
        scores how likely each stage's answer is right from everything every stage up to it said
        (:mod:`datashunt.estimators.deferral`; ``deferral_`` holds it). ``"auto"`` (the default):
        the learned score only if its out-of-fold scores rank the stages' errors better than
        ``max_proba`` on validation by more than one standard error (ROC AUC; ``scoring_`` records
        both), ``max_proba`` otherwise, and with fixed thresholds.
    combine : bool
        Where an item reached the last stage, answer with a combination of every stage's answer
        (stacking: a gradient-boosted classifier over all of them, trained on the validation
        answers, :class:`~datashunt.estimators.deferral.Combiner`) instead of the last stage's
        alone, if its out-of-fold accuracy on validation is higher (``combination_`` says whether;
        ``combiner_`` holds it). It asks no more calls. Needs every stage's answer on every
        validation item (not ``certification="stratified"`` with a guarantee).
    label_names, modality, validation_fraction, random_state, progress
        As for :class:`~datashunt.ShuntClassifier`.

    Attributes
    ----------
    stages_ : list of (name, fitted model)
    classes_ : array of class labels
    modality_ : str, the modality the items are read as
    thresholds_ : list of S - 1 thresholds (floats, or arrays over ``classes_``)
    sweep_ : DataFrame of every threshold combination tried, or None
    calibration_ : dict summarising the validation figures behind ``thresholds_``
    scoring_ : dict, with a learned or ``"auto"`` confidence: the score used and both scores'
        ranking figures on validation
    learnable_, distillation_ : after :meth:`distill`, the first stage's distilled copy and what
        it learned from whom

    Examples
    --------
    Three recorded services, cheapest first (here they are always right and always sure):

    >>> import pandas as pd
    >>> from datashunt.backends.replay import ReplayModel
    >>> ids = [f"r{i}" for i in range(40)]
    >>> truth = ["pos", "neg"] * 20
    >>> table = pd.DataFrame({"id": ids, "prediction": truth, "conf": 0.9})
    >>> stages = [(name, ReplayModel(table, confidence_column="conf", name=name, price={"per_call": price}))
    ...           for name, price in [("lexicon", 0.0), ("api_a", 1.0), ("api_b", 3.0)]]
    >>> cascade = Cascade(stages, random_state=0).fit(ids, truth)
    >>> cascade.route(ids[:2])["route"].tolist()
    ['lexicon', 'lexicon']
    """

    _noun = "cascade"

    _parameter_constraints = {
        "stages": [list],
        "thresholds": [StrOptions({"auto"}), list],
        "policy": [StrOptions(set(POLICY_NAMES))],
        "tolerance": [Interval(Real, 0, 1, closed="both")],
        "max_cost": [Interval(Real, 0, None, closed="left"), None],
        "max_last_rate": [Interval(Real, 0, 1, closed="both"), None],
        "target_accuracy": [Interval(Real, 0, 1, closed="both"), None],
        "per_class": ["boolean"],
        "confidence_level": [Interval(Real, 0, 1, closed="neither"), None],
        "certification": [StrOptions({"stratified", "paired"})],
        "max_calibration_calls": [Interval(Integral, 1, None, closed="left"), None],
        "confidence": [StrOptions(set(MEASURES) | {LEARNED, AUTO}), callable],
        "combine": ["boolean"],
        "label_names": [dict, None],
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
        tolerance=0.0,
        max_cost=None,
        max_last_rate=None,
        target_accuracy=None,
        confidence_level=None,
        certification="stratified",
        max_calibration_calls=None,
        per_class=False,
        confidence="auto",
        combine=False,
        label_names=None,
        modality="auto",
        validation_fraction=0.2,
        random_state=None,
        progress=False,
    ):
        self.stages = stages
        self.thresholds = thresholds
        self.policy = policy
        self.tolerance = tolerance
        self.max_cost = max_cost
        self.max_last_rate = max_last_rate
        self.target_accuracy = target_accuracy
        self.confidence_level = confidence_level
        self.certification = certification
        self.max_calibration_calls = max_calibration_calls
        self.per_class = per_class
        self.confidence = confidence
        self.combine = combine
        self.label_names = label_names
        self.modality = modality
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.progress = progress

    # -- learning ------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None):
        """Train the classifier stages, then calibrate the thresholds on ``X_val, y_val`` (or a
        held-out share of ``X, y``), where every stage answers every validation item."""
        self._check_stages()
        self._forget("learnable_", "distillation_")
        if (self.confidence == LEARNED or self.combine) and self.thresholds != "auto":
            raise ConfigError(
                "confidence='learned' and combine=True are trained on validation answers: use thresholds='auto'"
            )
        if self.combine and self._stratified():
            raise ConfigError(
                "combine=True needs every stage's answer on every validation item: use certification='paired' "
                "(or no confidence_level)"
            )
        X, y, X_val, y_val, self.modality_ = training_sets(
            X, y, X_val, y_val, self.validation_fraction, self.random_state, "a cascade", self.modality
        )
        for _, model in self.stages:
            if isinstance(model, LargeModel):
                model.check_modality(self.modality_)
        self.classes_ = np.unique(y)
        self.stages_ = [
            (name, clone(model) if isinstance(model, LargeModel) else clone(model).fit(X, y))
            for name, model in self.stages
        ]
        for name, model in self.stages_:
            extra = (
                []
                if isinstance(model, LargeModel)
                else sorted(set(np.asarray(model.classes_).tolist()) - set(self.classes_.tolist()), key=str)
            )
            if extra:
                raise DataError(f"stage {name!r} knows classes {extra} that the training labels do not have")
        self.labels_ = label_words(self.classes_.tolist(), self.label_names)
        for _, model in self.stages_:
            if isinstance(model, LargeModel):
                model.fit(X, words_for(y, self.classes_, self.labels_))  # a few-shot backend draws its shots
        if hasattr(self.stages_[0][1], "n_features_in_"):
            self.n_features_in_ = self.stages_[0][1].n_features_in_
        if self.thresholds == "auto":
            self._calibrate(X_val, y_val)
        else:
            self.thresholds_ = self._given_thresholds()
            self.sweep_, self.calibration_ = None, {"policy": "fixed"}
        return self

    def _forget(self, *more) -> None:
        """Drop what calibration learns (and ``more``): a refit, or a recalibration, learns it again."""
        for stale in ("deferral_", "combiner_", "combination_", "scoring_", *more):
            self.__dict__.pop(stale, None)

    def _given_thresholds(self) -> list:
        if len(self.thresholds) != len(self.stages) - 1:
            raise ConfigError(
                f"{len(self.stages)} stages need {len(self.stages) - 1} thresholds, got {len(self.thresholds)}"
            )
        out = []
        for t in self.thresholds:
            t = np.asarray(t, dtype=float)
            if t.ndim > 1 or (t.ndim == 1 and len(t) != len(self.classes_)) or np.isnan(t).any():
                raise ConfigError(f"a threshold is a number or one number per class ({len(self.classes_)}), got {t}")
            out.append(float(t) if t.ndim == 0 else t)
        return out

    def _stratified(self) -> bool:
        """Whether the shared δ is certified from labels and a stratified sample of last-stage answers."""
        return (
            self.confidence_level is not None
            and self.certification == "stratified"
            and canonical(self.policy) == MATCH_LAST
            and not self.per_class
        )

    def _calibrate(self, X_val, y_val):
        stages, rows = self._stages(), np.arange(len(X_val))
        if self._stratified():
            answers = [stage.ask(X_val, rows, []) for stage in stages[:-1]]
            return self._calibrate_stratified(X_val, y_val, answers, stages[-1])
        answers = self.answers_of_every_stage(X_val)
        for (name, _), got in zip(self.stages_, answers):
            require_answers(got.ok, got.flag, f"stage {name!r}")
        confidence = np.column_stack([a.confidence for a in answers])
        predicted = np.column_stack([np.nan_to_num(a.proba, nan=-1).argmax(axis=1) for a in answers])
        correct = np.column_stack([a.ok & (self.classes_[p] == y_val) for a, p in zip(answers, predicted.T)])
        if self._learns():
            confidence[:, :-1] = self._learn_deferral([a.proba for a in answers], correct[:, :-1], confidence[:, :-1])
        combined = self._learn_combiner([a.proba for a in answers], correct, y_val) if self.combine else None
        if combined is not None:  # the combined answer stands for the last stage's where it wins
            correct[:, -1] = combined
        price = np.column_stack([a.price for a in answers])
        if self.confidence_level is not None:
            self.thresholds_, met, goal = self._guaranteed(confidence, correct)
            self.sweep_ = sweep(confidence, correct, price, n_grid=40)
        elif self.per_class and len(self.stages_) == 2:
            self.thresholds_, met = self._per_class(confidence, predicted, correct)
            self.sweep_, goal = None, self.policy
        else:
            self.sweep_ = sweep(confidence, correct, price, n_grid=40)
            choice = choose(
                self.sweep_,
                self.policy,
                tolerance=self.tolerance,
                max_cost=self.max_cost,
                max_last_rate=self.max_last_rate,
                target_accuracy=self.target_accuracy,
            )
            self.thresholds_ = self.sweep_.filter(like="threshold_").iloc[choice.row].tolist()
            met, goal = choice.met, choice.goal
            if self.per_class:  # more than two stages: refine the single thresholds class by class
                self.thresholds_, met = per_class_refine(
                    confidence,
                    predicted,
                    correct,
                    price,
                    self.thresholds_,
                    len(self.classes_),
                    self._accuracy_floor(correct),
                )
        result = outcome(stop_stage(confidence, self.thresholds_, predicted), correct, price)
        self.calibration_ = {
            "policy": canonical(self.policy),
            "goal": goal,
            "goal_met": met,
            "n_validation": int(len(y_val)),
            "accuracy": result["accuracy"],
            "cost_per_item": result["cost"] / len(y_val),
            "reach": result["reach"],
            "stage_accuracy": correct.mean(axis=0).tolist(),
            "failures": [int((~a.ok).sum()) for a in answers],
            "combination": getattr(self, "combination_", None),
            "scoring": getattr(self, "scoring_", None),
            "drift_reference": drift.reference(
                self._deployed(answers, confidence), self.thresholds_[0], predicted[:, 0]
            ),
        }

    def _calibrate_stratified(self, X_val, y_val, answers, last):
        """Certify the shared δ on every validation label, asking the last stage only where the bound needs it."""
        for (name, _), got in zip(self.stages_, answers):
            require_answers(got.ok, got.flag, f"stage {name!r}")
        correct = np.column_stack(
            [a.ok & (self.classes_[np.nan_to_num(a.proba, nan=-1).argmax(axis=1)] == y_val) for a in answers]
        )
        if self._learns():
            own = np.column_stack([a.confidence for a in answers])
            learned = self._learn_deferral([a.proba for a in answers], correct, own)
            for a, scores in zip(answers, learned.T):
                a.confidence = np.where(a.ok, scores, np.nan)
        confidence = np.column_stack([np.nan_to_num(a.confidence, nan=-np.inf) for a in answers])  # failed: pass on
        plan = plan_calls(confidence, correct, self.max_calibration_calls, random_state=self.random_state)
        name = self.stages_[-1][0]
        got = last.ask(X_val[plan.ask], plan.ask, answers)
        require_answers(got.ok, got.flag, f"stage {name!r}")
        # a failed call counts as a right last answer: a loss where the earlier answer is wrong, never a win
        last_ok = ~got.ok | (self.classes_[np.nan_to_num(got.proba, nan=-1).argmax(axis=1)] == y_val[plan.ask])
        price = np.column_stack([a.price for a in answers] + [np.zeros(len(y_val))])
        price[plan.ask, -1] = got.price
        self.sweep_ = estimated_path(confidence, correct, plan, last_ok, price)
        choice = choose_stratified(
            MATCH_LAST,
            confidence,
            correct,
            plan,
            last_ok,
            confidence_level=self.confidence_level,
            tolerance=self.tolerance,
        )
        self.thresholds_ = [choice.threshold] * (len(self.stages_) - 1)
        row = self.sweep_.loc[self.sweep_["threshold_1"] == choice.threshold].iloc[0]
        stop = stop_stage(np.column_stack([confidence, np.ones(len(y_val))]), self.thresholds_)
        self.calibration_ = {
            "policy": canonical(self.policy),
            "goal": choice.goal,
            "goal_met": choice.met,
            "n_validation": int(len(y_val)),
            "accuracy": known(row["accuracy"]),
            "cost_per_item": known(row["cost"]),
            "reach": [float((stop >= s).mean()) for s in range(len(self.stages_))],
            "stage_accuracy": correct.mean(axis=0).tolist() + [known(self.sweep_["accuracy"].iloc[0])],
            "failures": [int((~a.ok).sum()) for a in answers] + [int((~got.ok).sum())],
            "large_calls": {
                "asked": int(len(plan.ask)),
                "budget": self.max_calibration_calls,
                "at_risk": int((~correct.all(axis=1))[plan.ask].sum()),
                "safe_sampled": int(plan.sampled_right.sum()),
            },
            "certification": "stratified",
            "scoring": getattr(self, "scoring_", None),
            "drift_reference": drift.reference(self._deployed(answers, confidence), self.thresholds_[0], None),
        }

    def _learn_combiner(self, probas: list, correct, y_val) -> np.ndarray | None:
        """Stack every stage's validation answers into one; keep the combiner (``combiner_``) only
        if its out-of-fold accuracy beats the last stage's alone. Returns its out-of-fold
        correctness, or None when the last stage alone is kept."""
        combiner = Combiner(random_state=self.random_state)
        index = np.searchsorted(self.classes_, y_val)
        combined = combiner.fit_proba(probas, index).argmax(axis=1) == index
        alone = float(correct[:, -1].mean())
        self.combination_ = {
            "used": bool(combined.mean() > alone),
            "accuracy": float(combined.mean()),
            "last_alone": alone,
        }
        if not self.combination_["used"]:
            return None
        self.combiner_ = combiner
        return combined

    def _deployed(self, answers, confidence) -> np.ndarray:
        """The first stage's routing scores on validation as routing will compute them (what drift is
        checked against): a learned deferral's refit scorer, not its out-of-fold scores."""
        deferral = getattr(self, "deferral_", None)
        return confidence[:, 0] if deferral is None else deferral.judge(0, answers[:1])

    def _learns(self) -> bool:
        return self.confidence in (LEARNED, AUTO)

    def _learn_deferral(self, probas: list, correct, raw) -> np.ndarray:
        """Train the learned deferral on the validation answers of the stages before the last
        (``correct``: one column each, ``raw``: their own confidences); returns the scores they
        calibrate on: its out-of-fold ones, or with ``confidence="auto"`` the raw ones where
        those rank the stages' errors better (``scoring_`` records both)."""
        self.deferral_ = Deferral(random_state=self.random_state)
        try:
            learned = self.deferral_.fit_scores(probas, correct)
        except DataError as exc:  # too little to learn from: "auto" keeps the stages' own confidence
            learned = exc
        scores, self.scoring_ = settle(self.confidence, "max_proba", raw, learned, np.asarray(correct, bool))
        if self.scoring_["used"] != LEARNED:
            del self.deferral_
        return scores

    def _guaranteed(self, confidence, correct):
        if self.per_class:
            raise ConfigError(
                "per-class thresholds do not come with a guarantee yet; use per_class=False with confidence_level"
            )
        found = guaranteed_cascade(
            confidence,
            correct,
            policy=self.policy,
            epsilon=self.tolerance,
            target=self.target_accuracy,
            alpha=1 - self.confidence_level,
        )
        goal = (
            f"accuracy >= last stage's accuracy{f' - {self.tolerance:g}' if self.tolerance else ''}"
            if canonical(self.policy) == MATCH_LAST
            else f"accuracy >= {self.target_accuracy:.4f}"
        )
        goal += f" with probability >= {self.confidence_level:g} (Learn then Test)"
        if not found.n_certified:
            warnings.warn(
                f"no threshold could be certified for '{goal}'; every item goes to the last stage",
                CalibrationWarning,
                stacklevel=3,
            )
        return [found.threshold] * (len(self.stages_) - 1), found.n_certified > 0, goal

    def _accuracy_floor(self, correct) -> float:
        if canonical(self.policy) == MATCH_LAST:
            return correct[:, -1].mean() - self.tolerance
        if canonical(self.policy) == TARGET and self.target_accuracy is not None:
            return self.target_accuracy
        raise ConfigError("per-class thresholds take the policies 'match_last' and 'target_accuracy'")

    def _per_class(self, confidence, predicted, correct):
        delta, met = per_class_thresholds(
            confidence[:, 0],
            predicted[:, 0],
            correct[:, 0],
            correct[:, 1],
            len(self.classes_),
            min_accuracy=self._accuracy_floor(correct),
        )
        return [delta], met

    # -- 2-Stage Confidence Distillation -------------------------------------------------------
    def distill(self, X_pool, *, X_train=None, y_train=None, X_val=None, y_val=None, epochs=None, context=None):
        """One round of 2-Stage Confidence Distillation for the first stage (see
        :mod:`datashunt.collab.distill`) over unlabeled inputs.

        The pool is routed as :meth:`route` routes it (each backend's cache answers what was
        asked before; ``context`` as route was given it), with the first stage alone in its place.
        A learnable copy of that stage then learns from the later stages' confident answers (a
        middle stage's that reached its δ; the last stage's whose top probability exceeds the
        first δ, as eq. 6 asks of the large model) and from the first stage's own kept answers
        (eq. 7), so it gains without forgetting. Afterwards the surer of the first stage and its
        copy answers (route ``learnable``). With ``X_val, y_val`` and ``thresholds="auto"`` the
        thresholds are calibrated again for the pair. ``X_train, y_train`` are needed only by a
        first stage that cannot continue training (plain scikit-learn). Sets ``learnable_`` and
        ``distillation_``.
        """
        check_is_fitted(self, "thresholds_")
        self.check_trainable()
        first = self.stages_[0][1]
        batch = as_inputs(X_pool, self.modality_)
        ok = batch.valid
        context = self._checked_context(context, len(batch))
        if context is not None:
            context = [context[i] for i in np.flatnonzero(ok)]
        recalibrated = X_val is not None and self.thresholds == "auto"
        if recalibrated:  # checked before anything is learned
            val = as_inputs(X_val, self.modality_)
            require_valid(val.problems, "validation inputs")
            y_val = check_targets(y_val, len(val), type(self).__name__)
        inputs = batch.items[ok]
        routed = self._run(inputs, stages=self._stages(context=context, specific_only=True))
        last = len(self.stages_) - 1
        proba = np.nan_to_num(routed.proba(), nan=0.0)
        first_delta = np.asarray(self.thresholds_[0], dtype=float)  # eq. 6: the last stage's top probability above δ
        if first_delta.ndim:
            first_delta = first_delta[proba.argmax(axis=1)]
        sure = (routed.stage < last) | (proba.max(axis=1) > first_delta)
        own = routed.stage == routed.reached  # the answer of the stage asked last stands (no fallback)
        targets = Targets(own & (routed.stage == 0), own & (routed.stage > 0) & sure, proba)
        with unchanged_on_error(self):
            self.learnable_ = learn(
                getattr(self, "learnable_", None),
                first.estimator if isinstance(first, FrozenEstimator) else first,
                inputs,
                targets,
                self.classes_,
                epochs=epochs,
                X_train=X_train,
                y_train=y_train,
            )
            if recalibrated:
                self._forget()
                self._calibrate(val.items, y_val)
        self.distillation_ = {
            "n_pool": int(len(inputs)),
            "n_skipped_invalid": int((~ok).sum()),
            "n_from_small": int(targets.from_small.sum()),
            "n_from_large": int(targets.from_large.sum()),
            "n_large_asked": int((routed.reached == last).sum()),
            "large_cost": float(sum(got.cost.sum() for got in routed.answers[1:])),
            "thresholds": [np.asarray(t).tolist() for t in self.thresholds_],
            "recalibrated": recalibrated,
        }
        return self

    def check_trainable(self) -> None:
        """Refuse 2-Stage Confidence Distillation where the first stage is a large model."""
        name, first = self.stages_[0]
        if isinstance(first, LargeModel):
            raise ConfigError(
                f"the first stage ({name!r}) is a large model; 2-Stage Confidence Distillation trains a copy of "
                "a classifier first stage"
            )

    # -- inference -----------------------------------------------------------------------------
    def _stages(self, context=None, specific_only=False) -> list:
        """The stages, hooks bound (``context`` for the last one); the first is the surer of it and
        its 2CD copy after :meth:`distill` (the first alone with ``specific_only``)."""
        measure = get_measure("max_proba" if self._learns() else self.confidence)
        options = {"modality": self.modality_, "progress": self.progress}
        last = len(self.stages_) - 1
        stages = [
            LabelStage(model, self.labels_, measure, context=context if s == last else None, **options)
            if isinstance(model, LargeModel)
            else ClassifierStage(model, self.classes_, measure)
            for s, (_, model) in enumerate(self.stages_)
        ]
        learnable = getattr(self, "learnable_", None)
        if learnable is not None and not specific_only:
            stages[0] = Surer(stages[0], ClassifierStage(learnable, self.classes_, measure))
        deferral = getattr(self, "deferral_", None)
        if deferral is not None:  # learned deferral: every stage but the last is scored on all it has seen
            stages[:-1] = [Deferred(stage, deferral, s) for s, stage in enumerate(stages[:-1])]
        if getattr(self, "combiner_", None) is not None:  # the last stage's answer combined with the others'
            stages[-1] = Combined(stages[-1], self.combiner_)
        return stages

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities from the stage each item stopped at."""
        routed, _ = self._answered(X)
        return routed.proba()

    def predict(self, X) -> np.ndarray:
        """The most probable class of each item, see :meth:`predict_proba`."""
        check_is_fitted(self, "thresholds_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
