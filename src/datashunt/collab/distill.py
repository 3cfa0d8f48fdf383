"""2-Stage Confidence Distillation (2CD): the large model teaches a learnable copy of the small one.

The specific small model s1 stays frozen. A learnable copy s2 learns, over unlabeled traffic,
(eq. 6) the large model's distribution C_l on items where s1 is unsure (C_s1 < δ) and the large
model is sure (max C_l > δ), and (eq. 7) s1's own distribution on items where s1 is sure
(C_s1 ≥ δ), so it gains what s1 lacks without forgetting what s1 knows.
"""

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from ..core.deciding import keeps
from ..core.routes import LEARNABLE
from ..eval.metrics import get_metric
from ..exceptions import ConfigError
from ..modalities.base import object_column
from ..progress import track


@dataclass
class Targets:
    """Soft targets for one distillation pass: which items learn from s1, which from the large model."""

    from_small: np.ndarray
    from_large: np.ndarray
    proba: np.ndarray

    @property
    def used(self) -> np.ndarray:
        return self.from_small | self.from_large


def two_stage_targets(proba_s1, conf_s1, proba_large, threshold: float) -> Targets:
    """Select the items and distributions of eq. 6 and 7.

    ``proba_large`` holds NaN rows where the large model was not asked or failed.

    Examples
    --------
    >>> t = two_stage_targets(np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45]]), np.array([0.9, 0.6, 0.55]),
    ...                       np.array([[np.nan, np.nan], [0.1, 0.9], [0.3, 0.7]]), threshold=0.8)
    >>> t.from_small.tolist(), t.from_large.tolist()
    ([True, False, False], [False, True, False])
    """
    proba_s1 = np.asarray(proba_s1, dtype=float)
    proba_large = np.asarray(proba_large, dtype=float)
    from_small = keeps(conf_s1, threshold)
    large_ok = ~np.isnan(proba_large).any(axis=1)
    conf_large = np.where(large_ok, np.nan_to_num(proba_large, nan=0.0).max(axis=1), -np.inf)
    from_large = ~from_small & large_ok & (conf_large > threshold)
    proba = np.where(from_large[:, None], np.nan_to_num(proba_large, nan=0.0), proba_s1)
    return Targets(from_small, from_large, proba)


def learn(learnable, specific, inputs, targets: Targets, classes, *, epochs=None, X_train=None, y_train=None):
    """Train the learnable model on the targets and return it.

    Models with a ``distill(X, target_proba, epochs)`` method (datashunt's torch models) continue
    from their current weights (a copy's: ``learnable`` itself is left as it was) with KL
    divergence, alternating between the two stages each epoch. Other scikit-learn classifiers
    cannot continue training; they are refit from scratch on the labelled training data
    (``X_train, y_train``) plus every target item repeated once per class with the target
    probability as sample weight: for log-loss models this minimises the same cross-entropy to the
    soft targets as KL divergence does.
    """
    if not targets.used.any():
        return learnable if learnable is not None else copy.deepcopy(specific)
    if hasattr(specific, "distill"):
        model = copy.deepcopy(learnable if learnable is not None else specific)  # never trained in place
        stages = [s for s in (targets.from_large, targets.from_small) if s.any()]
        for _ in range(epochs or 1):
            for stage in stages:
                model.distill(inputs[stage], targets.proba[stage], epochs=1)
        return model
    X, proba = inputs[targets.used], targets.proba[targets.used]
    k = len(classes)
    X_rep = np.repeat(X, k, axis=0)  # rows, whether texts or feature vectors
    y_rep = np.tile(np.asarray(classes), len(X))
    weight = proba.ravel()
    keep = weight > 1e-6
    X_rep, y_rep, weight = X_rep[keep], y_rep[keep], weight[keep]
    if X_train is not None:
        X_rep = np.concatenate([np.asarray(X_train, dtype=X_rep.dtype), X_rep])
        y_rep = np.concatenate([np.asarray(y_train, dtype=y_rep.dtype), y_rep])
        weight = np.concatenate([np.ones(len(X_train)), weight])
    model = clone(specific)
    key = f"{model.steps[-1][0]}__sample_weight" if isinstance(model, Pipeline) else "sample_weight"
    try:
        return model.fit(X_rep, y_rep, **{key: weight})
    except TypeError:
        raise ConfigError(
            f"{type(model).__name__} takes no sample weights and has no distill(); it cannot be a learnable small model"
        ) from None


def distill_rounds(
    shunt,
    pool,
    rounds: int,
    X_test,
    y_test,
    *,
    X_train=None,
    y_train=None,
    X_val=None,
    y_val=None,
    epochs=None,
    progress: bool = False,
):
    """Rounds of 2CD over a pool of unlabeled traffic, measured on held-out data after each.

    The pool is cut into ``rounds`` equal parts; round r routes part r through the shunt (as live
    traffic would be, paying for its large calls), then distills on all traffic seen so far
    (the large answers come from the cache) and, given validation data, recalibrates δ.
    Returns one row per round (round 0 is before distillation): δ, held-out accuracy and
    large-call rate, the examples learned from each teacher and the large-model cost of the round.
    A :class:`~datashunt.Cascade` gets a δ column per stage but the last (``threshold_<stage>``).
    A :class:`~datashunt.Subtasks` model (labels: a table with one column per subtask) gets a δ
    column per subtask (``threshold_<name>``; ``threshold_<name>_<stage>`` for a cascade), exact
    match as its accuracy, the share of items asking the large model anything, and the share of
    subtask answers the learnable copies gave.
    A generator (:class:`~datashunt.ShuntGenerator`, or :class:`~datashunt.Segments` part by part;
    ``y_*`` the references) gets a δ column per stage but the last (``threshold_<stage>``), its
    metric's corpus ``quality`` in place of accuracy and the share of answers (parts) the
    learnable copy gave; it learns from the pool alone (``X_train`` is not used: the copy keeps
    what the first stage knew from that stage's own confident answers).
    """
    check = getattr(shunt, "check_trainable", None)
    if check is not None:  # before round 0 pays for a call
        check()
    pool = object_column(list(pool))  # texts or whole images, one per row
    parts = np.array_split(np.arange(len(pool)), rounds)
    measure = _measure(shunt, X_test, y_test)
    generating = _generates(shunt)
    rows = [{"round": 0, **measure(), "traffic_cost": 0.0}]
    for r in track(range(1, rounds + 1), "distillation rounds", enabled=progress):
        traffic = shunt.route(pool[parts[r - 1]])
        seen = pool[np.concatenate(parts[:r])]
        if generating:
            shunt.distill(seen, epochs=epochs, X_val=X_val, references_val=y_val)
        else:
            shunt.distill(seen, X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val, epochs=epochs)
        learned = shunt.distillation_
        info = {k: learned[k] for k in ("n_pool", "n_from_small", "n_from_large", "large_cost") if k in learned}
        rows.append({"round": r, **measure(), "traffic_cost": float(traffic["cost"].sum()), **info})
    return pd.DataFrame(rows)


def _generates(shunt) -> bool:
    """Whether ``shunt`` writes texts (a generator, or Segments over one)."""
    return getattr(getattr(shunt, "shunt_", shunt), "task", None) == "generate"


def _measure(shunt, X_test, y_test):
    """What :func:`distill_rounds` reports on the test data after each round, for this kind of model."""
    faces = dict(getattr(shunt, "subtasks_", ()))
    of_parts = getattr(shunt, "shunt_", None)  # Segments: the shunt of its parts
    if faces:
        truth = pd.DataFrame(y_test)[list(faces)].to_numpy(dtype=object)

        def subtasks():
            routes = shunt.route(X_test)
            learnable = routes[[f"route_{name}" for name in faces]].to_numpy() == LEARNABLE
            deltas = [_deltas(face, f"threshold_{name}") for name, face in faces.items()]
            return {k: v for d in deltas for k, v in d.items()} | {
                "accuracy": float((routes[list(faces)].to_numpy(dtype=object) == truth).all(axis=1).mean()),
                "large_rate": float((routes["large_calls"] > 0).mean()),
                "learnable_rate": float(learnable.mean()),
            }

        return subtasks
    if _generates(shunt):
        engine, references = of_parts or shunt, list(y_test)
        metric = get_metric(engine.metric)

        def generated():
            routes = shunt.route(X_test)
            if of_parts is not None:  # per document, and each part's route
                each = [route for routed in routes["routes"] for route in routed]
                large, learnable = (routes["large_calls"] > 0).mean(), np.mean([r == LEARNABLE for r in each])
            else:
                large, learnable = _reached_last(shunt, routes), (routes["route"] == LEARNABLE).mean()
            return _deltas(engine, "threshold") | {
                "quality": metric.corpus(routes["text"].tolist(), references),
                "large_rate": float(large),
                "learnable_rate": float(learnable),
            }

        return generated
    y_test = np.asarray(y_test, dtype=object)

    def classified():
        routes = shunt.route(X_test)
        return _deltas(shunt, "threshold") | {
            "accuracy": float(np.mean(routes["label"].to_numpy() == y_test)),
            "large_rate": _reached_last(shunt, routes),
            "learnable_rate": float((routes["route"] == LEARNABLE).mean()),
        }

    return classified


def _reached_last(model, routes) -> float:
    """The share of items that asked the last stage (whether its answer stood or failed)."""
    return float((routes["reached"] == len(model.stage_names()) - 1).mean())


def _deltas(model, prefix: str) -> dict:
    """δ as the rounds table shows it: ``prefix`` for a shunt's one; for a cascade or a generator,
    ``<prefix>_<stage>`` for every stage but the last (per-class thresholds: their mean)."""
    if hasattr(model, "threshold_"):
        return {prefix: float(model.threshold_)}
    return {f"{prefix}_{name}": float(np.mean(t)) for name, t in zip(model.stage_names(), model.thresholds_)}
