"""Learned deferral: how likely the answer in hand is right, judged from everything seen so far.

A stage's own confidence (its largest class probability, the paper's C) throws away most of what
the cascade knows by the time it decides. At the boundary after stage ``s``, :func:`features`
reads the answers of stages ``0 .. s``: each one's probability vector, its predicted class, how
sure it is (largest probability, margin), whether it failed, and whether the stages agree. A
gradient-boosted classifier trained on validation answers predicts from them whether stage ``s``
is right (FrugalGPT's scorer, AutoMix's meta-verifier); its probability replaces the stage's
confidence as the routing score, and the thresholds are calibrated on it as on any confidence.
Its scores on the validation items are out of fold (cross-fitted), so calibration and its
guarantees see them as they will be on new data: Learn then Test needs only a score and
exchangeable data. For generation, :class:`QualityDeferral` is the same idea as a regression: a
learned quality estimator over sequence features (:func:`sequence_features`: token
probabilities, lengths, how much of the input a text copies, how close two stages' texts are).

Examples
--------
>>> rng = np.random.default_rng(0)
>>> truth = rng.integers(0, 2, 400)
>>> sure = rng.uniform(size=400)
>>> right = rng.uniform(size=400) < sure                          # the surer, the righter
>>> pred = np.where(right, truth, 1 - truth)
>>> first = np.column_stack([1 - pred, pred]) * (0.5 + sure[:, None] / 2) + np.column_stack([pred, 1 - pred]) * (
...     0.5 - sure[:, None] / 2)
>>> deferral = Deferral(random_state=0)
>>> scores = deferral.fit_scores([first], right)
>>> scores.shape, bool(np.corrcoef(scores[:, 0], right)[0, 1] > 0.3)
((400, 1), True)
"""

from difflib import SequenceMatcher

import numpy as np
from scipy.stats import norm, spearmanr
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

from ..core.sequence import geometric_mean, mean_proba, min_proba
from ..exceptions import DataError

LEARNED = "learned"  #: the ``confidence`` of a face whose routing score is learned
AUTO = "auto"  #: the learned score where it ranks the stages' answers better on validation, else their own


def settle(choice: str, base: str, raw, learned, target, n_bootstrap: int = 200) -> tuple[np.ndarray, dict]:
    """Which routing score to use, as judged on validation: the stages' own confidence (``raw``,
    by the measure named ``base``) or the learned one's out-of-fold scores (``learned``), each
    (n, B), one column per stage boundary. ``target`` (n, B) is what the learned one predicts:
    whether the stage is right (ranked by ROC AUC) or its quality against the last stage's (by
    Spearman's correlation), averaged over the boundaries. ``choice`` ``"learned"`` always takes
    the learned score; ``"auto"`` takes it only if it ranks better by more than one standard error
    of the difference (over ``n_bootstrap`` resamples of the validation items: the one-standard-
    error rule, so the simpler score stays where the two are within validation noise). Returns
    the scores chosen and a record of both figures (the learned score's baseline in every report).
    ``learned`` may be the :class:`~datashunt.exceptions.DataError` that training it raised (too
    few validation answers to learn from): ``"auto"`` then keeps the raw score and records why;
    ``"learned"`` raises it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> right = rng.uniform(size=(300, 1)) < 0.7
    >>> raw = rng.uniform(size=(300, 1))                           # says nothing
    >>> learned = np.where(right, 0.8, 0.3) + rng.normal(0, 0.2, (300, 1))
    >>> scores, record = settle("auto", "max_proba", raw, learned, right)
    >>> record["used"], {k: round(v, 2) for k, v in record["validation"].items()}
    ('learned', {'max_proba': 0.49, 'learned': 0.97})
    """
    raw = np.asarray(raw, dtype=float).reshape(len(raw), -1)
    if isinstance(learned, DataError):
        if choice == LEARNED:
            raise learned
        return raw, {"used": base, "ranking": None, "validation": None, "reason": str(learned)}
    learned, target = (np.asarray(a).reshape(len(raw), -1) for a in (learned, target))
    ranked = target.dtype == bool
    both = np.stack([np.nan_to_num(raw, nan=-1.0), np.nan_to_num(learned, nan=-1.0)])
    figures = _ranks(both, target, np.arange(len(target)), ranked)
    record = {"used": base, "ranking": "roc_auc" if ranked else "spearman", "validation": None}
    if figures is None:  # every stage always right (or no differences): nothing to rank
        record["used"] = LEARNED if choice == LEARNED else base
        return (learned if choice == LEARNED else raw), record
    rng = np.random.default_rng(0)
    draws = [_ranks(both, target, rng.integers(0, len(target), len(target)), ranked) for _ in range(n_bootstrap)]
    gaps = [d[1] - d[0] for d in draws if d is not None]
    se = float(np.std(gaps)) if len(gaps) > 1 else np.inf
    better = figures[1] - figures[0] > se
    used = LEARNED if choice == LEARNED or better else base
    record |= {"used": used, "validation": {base: figures[0], LEARNED: figures[1]}, "difference_se": se}
    return (learned if used == LEARNED else raw), record


def _ranks(both, target, rows, ranked):
    """How well each of the two scores (``both``: raw, learned) ranks ``target`` on ``rows``,
    averaged over the boundaries that vary there; None if none does."""
    each = []
    for s in range(target.shape[1]):
        y = target[rows, s]
        if len(np.unique(y)) < 2:
            continue
        pair = []
        for score in both[:, rows, s]:
            if ranked:
                pair.append(roc_auc_score(y, score))
            else:  # a constant score ranks nothing: no correlation
                pair.append(spearmanr(score, y)[0] if np.ptp(score) > 0 else 0.0)
        each.append(pair)
    return np.mean(each, axis=0).tolist() if each else None


def features(probas: list) -> np.ndarray:
    """What the stages up to a boundary said about each item, as one row of numbers per item.

    ``probas``: each stage's (n, k) class probabilities, in order (a NaN row where it failed or
    was not asked). Per stage: the probabilities, a one-hot of the predicted class, the largest
    probability, the margin to the second, a failed flag; then, for each earlier stage, whether it
    predicted the same class as the last one.
    """
    columns, predicted = [], []
    for proba in probas:
        proba = np.asarray(proba, dtype=float)
        failed = np.isnan(proba).any(axis=1)
        known = np.nan_to_num(proba, nan=0.0)
        top = np.sort(known, axis=1)
        guess = np.where(failed, -1, known.argmax(axis=1))
        one_hot = (guess[:, None] == np.arange(known.shape[1])[None, :]).astype(float)
        margin = top[:, -1] - (top[:, -2] if known.shape[1] > 1 else 0.0)
        columns += [known, one_hot, top[:, -1:], margin[:, None], failed[:, None].astype(float)]
        predicted.append(guess)
    for guess in predicted[:-1]:
        columns.append(((guess == predicted[-1]) & (guess >= 0))[:, None].astype(float))
    return np.hstack(columns)


class Deferral:
    """One scorer per stage boundary: for each stage but the last, the probability that its answer
    is right given what every stage up to it said (:func:`features`).

    Parameters
    ----------
    model : classifier, optional
        Any scikit-learn classifier with ``predict_proba``; a histogram gradient-boosting
        classifier by default.
    cv : int
        Folds of the cross-fitting that gives the validation items their out-of-fold scores.
    random_state : int, optional
        Seed of the folds and of the default model.
    """

    def __init__(self, model=None, cv: int = 5, random_state=None):
        self.model, self.cv, self.random_state = model, cv, random_state

    def _model(self):
        return _model(self.model, self.random_state)

    def fit_scores(self, probas: list, correct) -> np.ndarray:
        """Train one scorer per boundary on validation answers and return their out-of-fold scores.

        ``probas``: the stages' (n, k) probabilities on the validation items, in order; ``correct``:
        (n, B) whether each of the first B stages is right, one column per boundary to learn (every
        stage but the last of a cascade). Returns (n, B) scores: each item's, from a scorer trained
        without its fold. The scorers kept for new items (``models_``) are trained on all of them.
        """
        correct = np.asarray(correct, dtype=bool).reshape(len(probas[0]), -1)
        self.models_, scores = [], []
        for s in range(correct.shape[1]):
            X, y = features(probas[: s + 1]), correct[:, s]
            if y.all() or not y.any():  # always right (or wrong) on validation: nothing to learn
                self.models_.append(float(y.mean()))
                scores.append(np.full(len(y), float(y.mean())))
                continue
            folds = min(self.cv, int(np.bincount(y.astype(int)).min()))
            if folds < 2:
                raise DataError(f"learned deferral at stage {s} needs at least 2 right and 2 wrong validation answers")
            split = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
            scores.append(cross_val_predict(self._model(), X, y, cv=split, method="predict_proba")[:, 1])
            self.models_.append(self._model().fit(X, y))
        return np.column_stack(scores)

    def judge(self, s: int, answers: list, items=None) -> np.ndarray:
        """:meth:`score` from the stages' answers (:class:`~datashunt.core.answers.Answers`)."""
        return self.score(s, [a.proba for a in answers])

    def score(self, s: int, probas: list) -> np.ndarray:
        """The routing score at the boundary after stage ``s`` (``probas``: stages ``0 .. s``, each
        (n, k) over the same items); NaN where stage ``s`` has no answer."""
        model = self.models_[s]
        last = np.asarray(probas[-1], dtype=float)
        out = np.full(len(last), np.nan)
        ok = ~np.isnan(last).any(axis=1)
        if ok.any():
            out[ok] = model if isinstance(model, float) else model.predict_proba(features(probas)[ok])[:, 1]
        return out


class Combiner:
    """A combined final answer (stacking): the class, judged from every stage's answer, for the
    items that reached the last stage (all stages have answered them, so it costs no call).

    Parameters as for :class:`Deferral`; ``fit_proba`` gives the validation items out-of-fold
    probabilities, so whether the combination beats the last stage alone is judged fairly.
    """

    def __init__(self, model=None, cv: int = 5, random_state=None):
        self.model, self.cv, self.random_state = model, cv, random_state

    def fit_proba(self, probas: list, y) -> np.ndarray:
        """Train on every stage's (n, k) validation probabilities and the true class indices ``y``;
        returns the out-of-fold (n, k) probabilities and keeps a model trained on all (``model_``)."""
        y = np.asarray(y, dtype=int)
        k = np.asarray(probas[-1]).shape[1]
        X = features(probas)
        folds = min(self.cv, int(np.bincount(y, minlength=k)[np.unique(y)].min()))
        if folds < 2:
            raise DataError("a combined answer needs at least 2 validation items of each class")
        model = _model(self.model, self.random_state)
        split = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        out = np.zeros((len(y), k))
        out[:, np.unique(y)] = cross_val_predict(model, X, y, cv=split, method="predict_proba")
        self.model_ = clone(model).fit(X, y)
        return out

    def proba(self, probas: list) -> np.ndarray:
        """The combined (n, k) probabilities for items every stage answered (``probas`` in stage order)."""
        k = np.asarray(probas[-1]).shape[1]
        out = np.zeros((len(probas[-1]), k))
        out[:, self.model_.classes_] = self.model_.predict_proba(features(probas))
        return out


def sequence_features(generations: list, items) -> np.ndarray:
    """What the generating stages up to a boundary wrote for each item, as one row of numbers per item.

    ``generations``: each stage's answers to the same items, in order
    (:class:`~datashunt.backends.generate.base.Generation`); ``items``: the inputs (texts, chat
    conversations whose last user message is read, or anything else, read as no text). The input's
    length in characters and words; per stage the mean, geometric mean and lowest token
    probability, the number of tokens, the share of tokens below 1/2, the spread of their
    log-probabilities, the text's length relative to the input's, how much of the input it copies
    and a failed flag; then how close each earlier stage's text is to the last one's (a character
    match ratio). NaN where a value is unknown (the gradient-boosted scorer takes NaN as it comes).
    """
    sources = [_source_text(x) for x in items]
    size = np.array([len(x) for x in sources], dtype=float)
    columns = [np.log1p(size), np.array([len(x.split()) for x in sources], dtype=float)]
    for got in generations:
        logprobs = [None if lp is None or not len(lp) else np.asarray(lp, dtype=float) for lp in got.token_logprob]
        texts = [t if isinstance(t, str) else None for t in got.text]
        columns += [mean_proba(logprobs), geometric_mean(logprobs), min_proba(logprobs)]
        columns.append(np.array([np.nan if lp is None else len(lp) for lp in logprobs], dtype=float))
        columns.append(np.array([np.nan if lp is None else float((lp < np.log(0.5)).mean()) for lp in logprobs]))
        columns.append(np.array([np.nan if lp is None else float(lp.std()) for lp in logprobs]))
        columns.append(np.array([np.nan if t is None else len(t) / max(n, 1.0) for t, n in zip(texts, size)]))
        columns.append(np.array([_similarity(x, t) for x, t in zip(sources, texts)]))
        columns.append(np.array([t is None for t in texts], dtype=float))
    last = generations[-1].text
    for got in generations[:-1]:
        columns.append(np.array([_similarity(a, b) for a, b in zip(got.text, last)]))
    return np.column_stack(columns)


class QualityDeferral:
    """A learned quality estimator per stage boundary, for generation: how likely the text in hand
    is at least as good as what the last stage would write, judged from every text and token
    probability up to it (:func:`sequence_features`).

    Trained on the validation items' per-item quality (the calibration metric, such as sentence
    chrF): at the boundary after stage ``s`` a regressor predicts stage ``s``'s quality minus the
    last stage's, cross-fitted so the validation items' scores are out of fold; the score is
    ``Φ(prediction / σ)``, with σ the spread of its out-of-fold errors (``scales_``): a
    probability-like number in [0, 1] that orders items as the predicted difference does.
    Parameters as for :class:`Deferral` (a gradient-boosted regressor by default).

    Examples
    --------
    >>> from datashunt.backends.generate.base import Generation
    >>> rng = np.random.default_rng(0)
    >>> n = 200
    >>> sure = rng.uniform(0.2, 1, n)
    >>> got = Generation.empty(n)
    >>> got.text = ["ein Text"] * n
    >>> got.token_logprob = [np.log(np.full(4, p)) for p in sure]
    >>> quality = np.column_stack([100 * sure + rng.normal(0, 5, n), np.full(n, 80.0)])
    >>> scores = QualityDeferral(random_state=0).fit_scores([got, got], ["a text"] * n, quality)
    >>> scores.shape, bool(np.corrcoef(scores[:, 0], sure)[0, 1] > 0.8)
    ((200, 1), True)
    """

    def __init__(self, model=None, cv: int = 5, random_state=None):
        self.model, self.cv, self.random_state = model, cv, random_state

    def fit_scores(self, generations: list, items, quality) -> np.ndarray:
        """Train one estimator per boundary on the stages' validation ``generations`` (every stage,
        in order) and the (n, S) per-item ``quality`` of each stage's text; returns the (n, S - 1)
        out-of-fold scores. The estimators kept for new items (``models_``) are trained on all."""
        quality = np.asarray(quality, dtype=float)
        n = len(quality)
        folds = min(self.cv, n // 10)
        if folds < 2:
            raise DataError(f"a learned quality estimator needs at least 20 validation items, got {n}")
        split = KFold(folds, shuffle=True, random_state=self.random_state)
        self.models_, self.scales_, scores = [], [], []
        for s in range(quality.shape[1] - 1):
            X, y = sequence_features(generations[: s + 1], items), quality[:, s] - quality[:, -1]
            model = _model(self.model, self.random_state, regress=True)
            predicted = cross_val_predict(model, X, y, cv=split)
            self.scales_.append(max(float(np.std(y - predicted)), 1e-9))
            scores.append(norm.cdf(predicted / self.scales_[-1]))
            self.models_.append(clone(model).fit(X, y))
        return np.column_stack(scores)

    def judge(self, s: int, answers: list, items=None) -> np.ndarray:
        """The routing score at the boundary after stage ``s`` (``answers``: the generations of
        stages ``0 .. s`` on ``items``); NaN where stage ``s`` wrote no text."""
        out = np.full(len(items), np.nan)
        ok = np.array([isinstance(t, str) for t in answers[-1].text], dtype=bool)
        if ok.any():
            out[ok] = norm.cdf(self.models_[s].predict(sequence_features(answers, items)[ok]) / self.scales_[s])
        return out


def _source_text(item) -> str:
    """The text an item asks about: itself, the last user message of a chat, or none."""
    if isinstance(item, str):
        return item
    if isinstance(item, list | tuple):
        said = [m.get("content") for m in item if isinstance(m, dict) and m.get("role") == "user"]
        return said[-1] if said and isinstance(said[-1], str) else ""
    return ""


def _similarity(a, b) -> float:
    """How alike two texts are (difflib's match ratio, 0 to 1); NaN if either is missing."""
    if not isinstance(a, str) or not isinstance(b, str):
        return np.nan
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def _model(model, random_state, regress: bool = False):
    """A fresh copy of ``model``, or the default scorer: histogram gradient boosting."""
    if model is not None:
        return clone(model)
    kind = HistGradientBoostingRegressor if regress else HistGradientBoostingClassifier
    return kind(max_iter=200, learning_rate=0.05, random_state=random_state)
