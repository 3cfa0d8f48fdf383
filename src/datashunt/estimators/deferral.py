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
exchangeable data.

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

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ..exceptions import DataError

LEARNED = "learned"  #: the ``confidence`` of a face whose routing score is learned


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


def _model(model, random_state):
    """A fresh copy of ``model``, or the default scorer: histogram gradient boosting."""
    if model is not None:
        return clone(model)
    return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=random_state)
