"""ShuntClassifier: the small model answers what it is sure of, the large model the rest."""

from dataclasses import replace
from numbers import Integral, Real

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..backends.prompt import label_words, words_for
from ..collab.distill import learn, two_stage_targets
from ..collab.pruning import MODES, Pruning, class_report
from ..core import drift
from ..core.answers import Answers, require_answers
from ..core.calibration import THRESHOLD_POLICIES, choose, fewest_within_noise, known, noise_clause, sweep
from ..core.confidence import MEASURES, get_measure, max_proba
from ..core.deciding import keeps
from ..core.guarantee import choose_guaranteed
from ..core.inputs import check_targets, require_valid, training_sets
from ..core.params import check_params
from ..core.policies import ALIASES, MATCH_LAST, MAX_LAST_RATE, canonical
from ..core.routes import LARGE, SMALL
from ..core.stratified import (
    CallPlan,
    asked_of,
    calls_for,
    choose_stratified,
    estimated_sweep,
    sampled_below,
    sampled_sweep,
)
from ..exceptions import ConfigError, DataError
from ..modalities import NAMES, as_inputs
from .deferral import AUTO, LEARNED, Deferral, settle
from .engine import Engine, unchanged_on_error
from .stages import ClassifierStage, Deferred, Given, LabelStage, Surer


class ShuntClassifier(ClassifierMixin, Engine):
    """Data Shunt: route each item by the small model's confidence against a calibrated threshold δ.

    Parameters
    ----------
    small : classifier
        Any estimator with ``fit``, ``predict_proba`` and ``classes_``; it is cloned, never changed.
    large : LargeModel
        A large-model backend (:mod:`datashunt.backends`): a local GGUF model, an OpenAI-compatible
        endpoint, a replay table.
    threshold : "auto" or float
        ``"auto"`` calibrates δ on validation data with ``policy``; a number fixes it (no large
        calls during ``fit``).
    policy : {"match_last", "max_last_rate", "target_accuracy"}
        Goal of the calibration (:mod:`datashunt.core.policies`, the same names as every face's;
        the older ``match_large`` and ``max_large_rate`` are aliases), see
        :func:`datashunt.core.calibration.choose`.
    max_large_rate, target_accuracy : float, optional
        The goal's figure for the two policies that need one: the largest share of items sent to
        the large model (``max_last_rate``), the accuracy to reach (``target_accuracy``).
    match_z : float
        ``match_last`` without ``confidence_level`` only: by how many standard errors of the
        paired validation gap the shunt must lead the large model, so that a lead within
        validation noise does not count (a guard, not a guarantee).
    budget_z : float, default=0.0
        ``max_last_rate`` only: δ sends the fewest items whose validation accuracy is within this
        many standard errors (of the paired difference) of the most accurate δ within the budget
        (the one-standard-error rule at 1.0:
        :func:`~datashunt.core.calibration.fewest_within_noise`), so that calls whose gain
        validation noise could explain are not spent; 0 takes the most accurate δ itself.
    tolerance : float, default=0.01
        ``match_last`` only: how far below the large model's accuracy the shunt may be (ε).
    confidence_level : float or None, default=0.9
        δ comes with a guarantee: with at least this probability over the validation draw, the
        goal holds on new data from the same source (Learn then Test, see
        :mod:`datashunt.core.guarantee`): accuracy at least the large model's minus
        ``tolerance``, a large-call share within ``max_large_rate``, or accuracy at least
        ``target_accuracy``. A one-point promise needs about 460 validation items; with fewer,
        nothing is certified and everything goes to the large model (with a warning). None
        takes the point estimate instead (guarded by ``match_z``, no stated level).
    confidence : {"max_proba", "margin", "entropy", "learned", "auto"} or callable
        How sure the small model is: a measure of its probabilities
        (:mod:`datashunt.core.confidence`; ``max_proba`` is the paper's C), or ``"learned"``, a
        gradient-boosted model trained (cross-fitted) on the validation labels that scores how
        likely the small model's answer is right from its whole probability vector and the class
        it says (:mod:`datashunt.estimators.deferral`; no large call is needed to train it).
        ``"auto"`` (the default): the learned score only if its out-of-fold scores rank the small
        model's errors better than ``max_proba`` on validation by more than one standard error
        (ROC AUC; ``scoring_`` records both), ``max_proba`` otherwise, and with a fixed threshold.
    prompt_pruning : {None, "soft", "hard"}
        How the small model shapes the large model's prompt (Prompt Pruning). Both use the classes
        the small model excels in on validation data (precision and recall ``>= pruning_level``):
        ``soft`` gives the large model the small model's probabilities for them as prior knowledge;
        ``hard`` removes those whose small-model probability is under ``pruning_cutoff`` from the
        candidate labels (at least two always stay, so with two classes nothing is removed).
        After :meth:`distill` both still come from the specific small model, the one judged.
    pruning_level, pruning_cutoff : float
        See ``prompt_pruning``.
    label_names : dict, optional
        Words the large model answers with, per class (``{0: "negative", 1: "positive"}``);
        by default the class labels themselves.
    modality : {"auto", "text", "rows", "image"}
        What an item is (:mod:`datashunt.modalities`); ``"auto"`` recognises it from the training
        data. Give ``"image"`` for image file paths, which would otherwise read as texts.
    validation_fraction : float
        Share of the training data held out to calibrate δ when ``fit`` gets no ``X_val`` (and
        no ``cv``).
    cv : int, optional
        Cross-fitting: the small model's confidences for calibration come out of ``cv`` folds over
        every labelled item (each item scored by a copy trained without it) instead of a held-out
        share, and the small model is then trained on everything. More evidence per label for δ,
        at the price of ``cv`` extra trainings of the small model.
    certification : {"stratified", "paired"}, default="stratified"
        How a guaranteed threshold is certified. ``"stratified"`` uses every validation label for
        the small side and asks the large model, within ``max_calibration_calls``, only where the
        bound needs it (:mod:`datashunt.core.stratified`): for ``match_last`` about the small
        model's wrong answers (most confident first) and a random sample of its right ones; for
        ``target_accuracy`` about a random sample of the items (its errors on the items sent); for
        ``max_last_rate`` none is needed for the guarantee (the share sent depends on the
        confidence alone), and a sample of the items below the certified budget chooses among
        the thresholds. Labels are cheap, so a larger validation set costs no more calls.
        ``"paired"`` asks the large model about every validation item
        (:mod:`datashunt.core.guarantee`); ``confidence_level=None`` always does.
    max_calibration_calls : int, optional
        At most this many items are asked to the large model during calibration: under
        ``"stratified"`` certification, where they tighten the bound most; otherwise a sample of
        the validation items stratified by label. None asks as many as the method can use.
        ``calibration_["large_calls"]`` says how many were asked and what they cost.
    random_state : int, optional
        Seed of the validation split.
    progress : bool
        Draw progress bars for large-model calls.

    Attributes
    ----------
    small_ : the fitted clone of ``small``
    large_ : the clone of ``large`` that answers (it holds the loaded model or client)
    classes_ : array of class labels
    modality_ : str, the modality the items are read as
    threshold_ : float, the δ in use
    sweep_ : DataFrame of every δ tried (:func:`datashunt.core.calibration.sweep`: threshold_1,
        accuracy, cost per item, last_rate, n_last, ...), or None when δ was given
    calibration_ : dict summarising the validation figures behind ``threshold_``
    class_report_ : DataFrame of the small model's per-class precision and recall on validation
    pruning_ : the fitted :class:`~datashunt.collab.pruning.Pruning`, or None
    scoring_ : dict, with a learned or ``"auto"`` confidence: the score used and both scores'
        ranking figures on validation

    Examples
    --------
    A large model replayed from recorded answers (here: always right) and a TF-IDF small model:

    >>> import pandas as pd
    >>> from datashunt.backends.replay import ReplayModel
    >>> from datashunt.small import make_small
    >>> texts = [f"{w} film number {i}" for i, w in enumerate(["great", "awful", "fine", "dull"] * 50)]
    >>> y = ["pos", "neg", "pos", "neg"] * 50
    >>> large = ReplayModel(pd.DataFrame({"id": texts, "prediction": y}))
    >>> shunt = ShuntClassifier(make_small("tfidf"), large, random_state=0).fit(texts, y)
    >>> table = shunt.route(["great film", "dull film number 7"])
    >>> list(table.columns)  # doctest: +NORMALIZE_WHITESPACE
    ['route', 'stage', 'reached', 'label', 'confidence', 'confidence_small', 'confidence_large', 'cost',
     'prompt_tokens', 'completion_tokens', 'cached', 'flag']
    """

    _parameter_constraints = {
        "small": [HasMethods(["fit", "predict_proba"])],
        "large": [HasMethods(["predict_proba", "identity"])],
        "threshold": [StrOptions({"auto"}), Interval(Real, None, None, closed="both")],  # ±inf: all to one side
        "policy": [StrOptions(set(THRESHOLD_POLICIES) | {a for a, p in ALIASES.items() if p in THRESHOLD_POLICIES})],
        "max_large_rate": [Interval(Real, 0, 1, closed="both"), None],
        "target_accuracy": [Interval(Real, 0, 1, closed="both"), None],
        "match_z": [Interval(Real, 0, None, closed="left")],
        "budget_z": [Interval(Real, 0, None, closed="left")],
        "tolerance": [Interval(Real, 0, 1, closed="left")],
        "confidence_level": [Interval(Real, 0, 1, closed="neither"), None],
        "confidence": [StrOptions(set(MEASURES) | {LEARNED, AUTO}), callable],
        "prompt_pruning": [StrOptions({m for m in MODES if m}), None],
        "pruning_level": [Interval(Real, 0, 1, closed="both")],
        "pruning_cutoff": [Interval(Real, 0, 1, closed="both")],
        "label_names": [dict, None],
        "modality": [StrOptions(set(NAMES))],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "cv": [Interval(Integral, 2, None, closed="left"), None],
        "certification": [StrOptions({"stratified", "paired"})],
        "max_calibration_calls": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "progress": ["boolean"],
    }

    def __init__(
        self,
        small,
        large,
        *,
        threshold="auto",
        policy=MATCH_LAST,
        max_large_rate=None,
        target_accuracy=None,
        match_z=2.0,
        budget_z=0.0,
        tolerance=0.01,
        confidence_level=0.9,
        confidence="auto",
        prompt_pruning=None,
        pruning_level=0.9,
        pruning_cutoff=0.1,
        label_names=None,
        modality="auto",
        validation_fraction=0.2,
        cv=None,
        certification="stratified",
        max_calibration_calls=None,
        random_state=None,
        progress=False,
    ):
        self.small = small
        self.large = large
        self.threshold = threshold
        self.policy = policy
        self.max_large_rate = max_large_rate
        self.target_accuracy = target_accuracy
        self.match_z = match_z
        self.budget_z = budget_z
        self.tolerance = tolerance
        self.confidence_level = confidence_level
        self.confidence = confidence
        self.prompt_pruning = prompt_pruning
        self.pruning_level = pruning_level
        self.pruning_cutoff = pruning_cutoff
        self.label_names = label_names
        self.modality = modality
        self.validation_fraction = validation_fraction
        self.cv = cv
        self.certification = certification
        self.max_calibration_calls = max_calibration_calls
        self.random_state = random_state
        self.progress = progress

    # -- learning ------------------------------------------------------------------------------
    def fit(self, X, y, X_val=None, y_val=None):
        """Fit the small model, then calibrate δ on ``X_val, y_val`` or on a held-out split of ``X, y``."""
        for stale in ("learnable_", "distillation_", "deferral_", "scoring_"):  # a refit starts over
            self.__dict__.pop(stale, None)
        self.check_params()
        if self.confidence == LEARNED and self.threshold != "auto":
            raise ConfigError("confidence='learned' is trained on validation answers: use threshold='auto'")
        if self.cv is not None and X_val is not None:
            raise ConfigError("give either X_val (calibrate on it) or cv (cross-fit on the training data), not both")
        fraction = None if self.cv is not None else self.validation_fraction
        X, y, X_val, y_val, self.modality_ = training_sets(
            X, y, X_val, y_val, fraction, self.random_state, "a shunt", self.modality
        )
        self.large_ = clone(self.large)
        self.large_.check_modality(self.modality_)
        self.small_ = clone(self.small).fit(X, y)
        self.classes_ = np.asarray(self.small_.classes_)
        if hasattr(self.small_, "n_features_in_"):
            self.n_features_in_ = self.small_.n_features_in_
        unseen = sorted(set(np.unique(y_val).tolist()) - set(self.classes_.tolist()), key=str)
        if unseen:
            raise DataError(
                f"validation labels {unseen} never occur in the training data (classes: {self.classes_.tolist()})"
            )
        get_measure(self._measure())  # fail early on an unknown measure
        self.labels_ = self._labels()
        self.large_.fit(X, words_for(y, self.classes_, self.labels_))  # a few-shot backend draws its shots
        small_proba = self._out_of_fold(X, y) if self.cv is not None else None
        if not self._stratified():
            X_val, y_val, small_proba = self._calibration_sample(X_val, y_val, small_proba)
        self._fit_pruning(X_val, y_val, small_proba)
        if self.threshold == "auto":
            self._calibrate(X_val, y_val, small_proba)
        else:
            self.threshold_ = float(self.threshold)
            self.sweep_, self.calibration_ = None, {"policy": "fixed", "threshold": self.threshold_}
        return self

    def check_params(self) -> None:
        """Refuse bad parameters of the shunt, its small model and its large model before any work.

        Raises :class:`~datashunt.exceptions.ConfigError` naming the parameter and what it allows.
        """
        check_params(self, "shunt")
        check_params(self.small, "small model")
        check_params(self.large, "large model")

    def _labels(self) -> list[str]:
        return label_words(self.classes_.tolist(), self.label_names)

    def _out_of_fold(self, X, y) -> np.ndarray:
        """Each item's small-model probabilities from a copy trained on the other ``cv`` - 1 folds."""
        rarest = int(np.unique(y, return_counts=True)[1].min())
        if rarest < self.cv:
            raise DataError(
                f"cv={self.cv} needs at least {self.cv} labelled items of every class; the rarest has {rarest}"
            )
        folds = StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
        return cross_val_predict(clone(self.small), X, y, cv=folds, method="predict_proba")

    def _calibration_sample(self, X_val, y_val, small_proba):
        """At most ``max_calibration_calls`` validation items, stratified by label where it can be."""
        cap = self.max_calibration_calls
        if cap is None or len(y_val) <= cap:
            return X_val, y_val, small_proba
        index = np.arange(len(y_val))
        stratify = y_val if np.unique(y_val, return_counts=True)[1].min() >= 2 else None
        try:
            index, _ = train_test_split(index, train_size=cap, stratify=stratify, random_state=self.random_state)
        except ValueError:  # more classes than the cap can stratify
            index, _ = train_test_split(index, train_size=cap, random_state=self.random_state)
        index = np.sort(index)
        return X_val[index], y_val[index], None if small_proba is None else small_proba[index]

    def _fit_pruning(self, X_val, y_val, small_proba=None):
        small_proba = self.small_.predict_proba(X_val) if small_proba is None else small_proba
        small_pred = self.classes_[small_proba.argmax(axis=1)]
        self.class_report_ = class_report(y_val, small_pred, self.classes_, self.pruning_level)
        self._fit_pruning_from_report()

    def _fit_pruning_from_report(self):
        excelled = tuple(int(j) for j in np.flatnonzero(self.class_report_["excels"].to_numpy()))
        self.pruning_ = Pruning(self.prompt_pruning, excelled, self.pruning_cutoff) if self.prompt_pruning else None

    def _stratified(self) -> bool:
        """Whether δ is certified from labels and a stratified sample of large answers."""
        return self.threshold == "auto" and self.certification == "stratified" and self.confidence_level is not None

    def _calibrate(self, X_val, y_val, small_proba=None):
        if self._stratified():
            return self._calibrate_stratified(X_val, y_val, small_proba)
        routed = self._run(X_val, thresholds=[np.inf], stages=self._stages(small_proba=small_proba))  # all sent
        small, large = routed.answers
        require_answers([f is None for f in large.flag], large.flag, "the large model")
        small_ok = self.classes_[small.proba.argmax(axis=1)] == y_val
        large_ok = self.classes_[routed.proba().argmax(axis=1)] == y_val
        if self._learns():
            small.confidence = self._learn_deferral(small.proba, small_ok, small.confidence)
        self.sweep_ = sweep(
            small.confidence, np.column_stack([small_ok, large_ok]), np.column_stack([small.price, large.price])
        )
        if self.confidence_level is None:
            choice = choose(
                self.sweep_,
                self.policy,
                max_last_rate=self.max_large_rate,
                target_accuracy=self.target_accuracy,
                match_z=self.match_z,
                tolerance=self.tolerance,
            )
            if canonical(self.policy) == MAX_LAST_RATE and self.budget_z:
                thresholds = self.sweep_["threshold_1"].to_numpy()
                gain = large_ok.astype(float) - small_ok
                row = fewest_within_noise(thresholds, choice.row, small.confidence, gain, self.budget_z)
                goal = choice.goal + noise_clause(self.budget_z)
                choice = replace(choice, threshold=float(thresholds[row]), row=row, goal=goal)
        else:
            choice = choose_guaranteed(
                small.confidence,
                small_ok,
                large_ok,
                self.policy,
                confidence_level=self.confidence_level,
                tolerance=self.tolerance,
                max_large_rate=self.max_large_rate,
                target_accuracy=self.target_accuracy,
                budget_z=self.budget_z,
            )
        self.threshold_ = choice.threshold
        kept = keeps(small.confidence, self.threshold_)
        self.calibration_ = {
            "policy": canonical(self.policy),
            "goal": choice.goal,
            "goal_met": choice.met,
            "threshold": self.threshold_,
            "n_validation": int(len(y_val)),
            "accuracy": float(np.where(kept, small_ok, large_ok).mean()),
            "large_rate": float(1 - kept.mean()),
            "small_accuracy": float(small_ok.mean()),
            "large_accuracy": float(large_ok.mean()),
            "large_failures": int(sum(f is not None for f in large.flag)),
            "large_calls": {
                "asked": int(len(y_val)),
                "paid": int((~large.cached).sum()),
                "cost": float(large.cost.sum()),
            },
            "cross_fitted": self.cv is not None,
            "certification": "paired" if self.confidence_level else None,
            "scoring": getattr(self, "scoring_", None),
            "drift_reference": drift.reference(self._deployed(small.proba, small.confidence), self.threshold_),
        }

    def _calibrate_stratified(self, X_val, y_val, small_proba=None):
        """Certify δ on every validation label, asking the large model only where the bound needs it."""
        small_proba = self.small_.predict_proba(X_val) if small_proba is None else small_proba
        small_ok = self.classes_[small_proba.argmax(axis=1)] == y_val
        confidence = np.asarray(get_measure(self._measure())(small_proba), dtype=float)
        if self._learns():
            confidence = self._learn_deferral(small_proba, small_ok, confidence)
        calls = calls_for(
            self.policy,
            confidence,
            small_ok,
            self.max_calibration_calls,
            alpha=1 - self.confidence_level,
            max_large_rate=self.max_large_rate,
            random_state=self.random_state,
        )
        ask = asked_of(calls)
        routed = self._run(X_val[ask], thresholds=[np.inf], stages=self._stages(small_proba=small_proba[ask]))
        large = routed.answers[1]
        failed = np.array([f is not None for f in large.flag], dtype=bool)
        require_answers(~failed, large.flag, "the large model")
        large_ok = self.classes_[routed.proba().argmax(axis=1)] == y_val[ask]
        large_cost = large.price
        if isinstance(calls, CallPlan):
            # a failed call counts as a right large answer: a loss where the small model is wrong, never a win
            large_ok |= failed
            self.sweep_ = estimated_sweep(confidence, small_ok, calls, large_ok, large_cost)
        else:  # a failed call counts as a wrong large answer: an error where the item is sent
            large_ok &= ~failed
            below = sampled_below(
                self.policy, confidence, alpha=1 - self.confidence_level, max_large_rate=self.max_large_rate
            )
            self.sweep_ = sampled_sweep(confidence, small_ok, ask, large_ok, large_cost, below=below)
        choice = choose_stratified(
            self.policy,
            confidence,
            small_ok,
            calls,
            large_ok,
            confidence_level=self.confidence_level,
            tolerance=self.tolerance,
            max_large_rate=self.max_large_rate,
            target_accuracy=self.target_accuracy,
            budget_z=self.budget_z,
        )
        self.threshold_ = choice.threshold
        kept = keeps(confidence, self.threshold_)
        row = self.sweep_.loc[self.sweep_["n_last"] == int((~kept).sum())].iloc[0]
        self.calibration_ = {
            "policy": canonical(self.policy),
            "goal": choice.goal,
            "goal_met": choice.met,
            "threshold": self.threshold_,
            "n_validation": int(len(y_val)),
            "accuracy": known(row["accuracy"]),
            "large_rate": float(1 - kept.mean()),
            "small_accuracy": float(small_ok.mean()),
            "large_accuracy": known(self.sweep_["accuracy"].iloc[-1]),
            "large_failures": int(failed.sum()),
            "large_calls": {
                "asked": int(len(ask)),
                "paid": int((~large.cached).sum()),
                "cost": float(large.cost.sum()),
                "budget": self.max_calibration_calls,
            }
            | (
                {"small_wrong": int((~small_ok[ask]).sum()), "small_right_sampled": int(calls.sampled_right.sum())}
                if isinstance(calls, CallPlan)
                else {}
            ),
            "cross_fitted": self.cv is not None,
            "certification": "stratified",
            "scoring": getattr(self, "scoring_", None),
            "drift_reference": drift.reference(self._deployed(small_proba, confidence), self.threshold_),
        }

    # -- inference -----------------------------------------------------------------------------
    @property
    def thresholds_(self) -> list:
        """δ as the engine reads it: one threshold, between the small and the large stage."""
        return [self.threshold_]

    @property
    def stages_(self) -> list:
        """The two stages as every face lists them: ``[("small", small_), ("large", large_)]``."""
        return [(SMALL, self.small_), (LARGE, self.large_)]

    def _stages(self, specific_only=False, small_proba=None, context=None) -> list:
        """The small stage (the surer of the specific model and its 2CD copy, the specific one
        alone, or given out-of-fold probabilities), then the large one, its prompt pruned by the
        specific model's probabilities (and told ``context``, a line per item, if given)."""
        measure = get_measure(self._measure())
        if small_proba is not None:  # out-of-fold answers, from cross-fitting
            got = Answers.empty(len(small_proba), len(self.classes_))
            got.proba, got.specific = small_proba, small_proba
            got.confidence = np.asarray(measure(small_proba), dtype=float)
            small = Given(got)
        else:
            small = ClassifierStage(self.small_, self.classes_, measure)
            if getattr(self, "learnable_", None) is not None and not specific_only:
                small = Surer(small, ClassifierStage(self.learnable_, self.classes_, measure))
            if getattr(self, "deferral_", None) is not None:  # learned deferral: scored on its whole answer
                small = Deferred(small, self.deferral_, 0)
        large = LabelStage(
            self.large_,
            self.labels_,
            max_proba,
            modality=self.modality_,
            progress=self.progress,
            prompt=self._pruned,
            context=context,
        )
        return [small, large]

    def _deployed(self, small_proba, confidence) -> np.ndarray:
        """The small model's routing scores on validation as routing will compute them (what drift
        is checked against): a learned deferral's refit scorer, not its out-of-fold scores."""
        deferral = getattr(self, "deferral_", None)
        return confidence if deferral is None else deferral.score(0, [small_proba])

    def _learns(self) -> bool:
        return self.confidence in (LEARNED, AUTO)

    def _measure(self):
        """The small model's own confidence measure (``max_proba`` where the routing score is learned)."""
        return max_proba if self._learns() else self.confidence

    def _learn_deferral(self, small_proba, small_ok, raw) -> np.ndarray:
        """Train the learned deferral on the small model's validation answers (labels only, no
        large call); its out-of-fold scores are the small model's confidence for calibration, or
        with ``confidence="auto"`` the ``raw`` one where that ranks its errors better (``scoring_``)."""
        self.deferral_ = Deferral(random_state=self.random_state)
        try:
            learned = self.deferral_.fit_scores([small_proba], small_ok)
        except DataError as exc:  # too little to learn from: "auto" keeps the small model's own confidence
            learned = exc
        scores, self.scoring_ = settle(self.confidence, "max_proba", raw, learned, small_ok[:, None])
        if self.scoring_["used"] != LEARNED:
            del self.deferral_
        return scores[:, 0]

    def _pruned(self, rows, earlier) -> dict:
        """Prompt Pruning: the large model's prompt shaped by the specific small model's probabilities."""
        return self.pruning_.prompt_args(earlier[0].specific[rows], self.labels_) if self.pruning_ else {}

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities: the small model's where it answered, the large model's elsewhere."""
        routed, _ = self._answered(X)
        return routed.proba()

    def predict(self, X) -> np.ndarray:
        """The most probable class of each item, see :meth:`predict_proba`."""
        check_is_fitted(self, "threshold_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def distill(self, X_pool, *, X_train=None, y_train=None, X_val=None, y_val=None, epochs=None, context=None):
        """One round of 2-Stage Confidence Distillation over unlabeled inputs (see :mod:`datashunt.collab.distill`).

        The large model is asked only about items the specific small model is unsure of, through
        the cache, so traffic it has already answered costs nothing (``context``: the line per
        item :meth:`route` showed it, so the prompts are the same). With ``X_val, y_val`` δ is
        recalibrated for the two small models together. ``X_train, y_train`` are needed only by
        small models that cannot continue training (plain scikit-learn ones). Sets ``learnable_``
        and ``distillation_`` (what was learned from whom, and what it cost).
        """
        check_is_fitted(self, "threshold_")
        batch = as_inputs(X_pool, self.modality_)
        ok = batch.valid
        inputs = batch.items[ok]
        context = self._checked_context(context, len(batch))
        if context is not None:
            context = [context[i] for i in np.flatnonzero(ok)]
        if X_val is not None:  # checked before anything is learned
            val = as_inputs(X_val, self.modality_)
            require_valid(val.problems, "validation inputs")
            y_val = check_targets(y_val, len(val), type(self).__name__)
        stages = self._stages(specific_only=True, context=context)
        routed = self._run(inputs, stages=stages)  # the large model answers what s1 is unsure of
        small, large = routed.answers
        proba_large = np.where((routed.stage == 1)[:, None], routed.proba(), np.nan)
        targets = two_stage_targets(small.proba, small.confidence, proba_large, self.threshold_)
        with unchanged_on_error(self):
            self.learnable_ = learn(
                getattr(self, "learnable_", None),
                self.small_,
                inputs,
                targets,
                self.classes_,
                epochs=epochs,
                X_train=X_train,
                y_train=y_train,
            )
            if X_val is not None:
                self._calibrate(val.items, y_val)
        self.distillation_ = {
            "n_pool": int(len(inputs)),
            "n_skipped_invalid": int((~ok).sum()),
            "n_from_small": int(targets.from_small.sum()),
            "n_from_large": int(targets.from_large.sum()),
            "n_large_asked": int((routed.reached == 1).sum()),
            "large_cost": float(large.cost.sum()),
            "threshold": self.threshold_,
        }
        return self
