"""Replay of answers recorded earlier (from a table), for evaluation and calibration at zero cost."""

from pathlib import PurePath

import numpy as np
import pandas as pd

from ..core.params import check_params
from ..exceptions import ConfigError, DataError
from ..io.datasets.files import read_table
from .base import NOT_ASKED, LargeModel, LargeResult
from .pricing import Price


def recorded_proba(predictions, scores, labels) -> np.ndarray:
    """Turn recorded (prediction, score) pairs into probability rows over ``labels``.

    A service's score is kept on its own scale but mapped monotonically onto [1/k, 1] for the
    predicted label (the rest share what is left), so the recorded prediction stays the argmax
    and ranking by confidence is unchanged. Without scores the rows are one-hot.

    Examples
    --------
    >>> recorded_proba(["pos", "neg"], [1.0, 0.5], ["neg", "pos"]).round(2).tolist()
    [[0.0, 1.0], [0.75, 0.25]]
    """
    labels = list(labels)
    k = len(labels)
    index = {label: j for j, label in enumerate(labels)}
    scores = np.ones(len(predictions)) if scores is None else np.clip(np.asarray(scores, float), 0.0, 1.0)
    proba = np.full((len(predictions), k), np.nan)
    for i, (pred, score) in enumerate(zip(predictions, scores)):
        j = index.get(pred)
        if j is None or np.isnan(score):
            continue
        top = 1.0 / k + 1e-9 + score * (1.0 - 1.0 / k - 1e-9) if k > 1 else 1.0
        proba[i] = (1.0 - top) / max(k - 1, 1)
        proba[i, j] = top
    return proba


class ReplayModel(LargeModel):
    """A large model whose answers were recorded in a table, looked up by each input's key.

    Parameters
    ----------
    table : DataFrame or path (CSV, JSONL, Parquet)
        One row per input.
    key_column : str
        Column holding the input (or its id) as passed to :meth:`predict_proba`.
    prediction_column, confidence_column : str
        The recorded label and, optionally, the service's score for it (see :func:`recorded_proba`).
    price : Price or mapping
        What each recorded call cost, so reports show the money a live run would have spent.

    Examples
    --------
    >>> table = pd.DataFrame({"id": ["a", "b"], "pred": ["pos", "neg"], "conf": [0.9, 0.8]})
    >>> result = ReplayModel(table, prediction_column="pred", confidence_column="conf").predict_proba(
    ...     ["b", "zzz"], ["neg", "pos"])
    >>> result.proba[0].round(2).tolist(), result.error[1]
    ([0.9, 0.1], "no recorded answer for input 'zzz'")
    """

    modalities = ("text", "rows", "image")
    location_params = ("table",)
    _parameter_constraints = {
        "table": [pd.DataFrame, str, PurePath],
        "key_column": [str],
        "prediction_column": [str],
        "confidence_column": [str, None],
        "price": [Price, dict, None],
        "name": [str],
    }

    def __init__(
        self,
        table,
        *,
        key_column="id",
        prediction_column="prediction",
        confidence_column=None,
        price=None,
        name="replay",
    ):
        self.table = table
        self.key_column = key_column
        self.prediction_column = prediction_column
        self.confidence_column = confidence_column
        self.price = price
        self.name = name

    def describe(self) -> str:
        source = "an in-memory table" if isinstance(self.table, pd.DataFrame) else str(self.table)
        return f"recorded answers from {source} (no calls)"

    def identity(self) -> str:
        return f"replay:{self.name}:{self.prediction_column}"

    def _records(self) -> pd.DataFrame:
        if getattr(self, "_frame", None) is None:
            frame = self.table if isinstance(self.table, pd.DataFrame) else read_table(self.table)
            needed = [self.key_column, self.prediction_column] + (
                [self.confidence_column] if self.confidence_column else []
            )
            missing = [c for c in needed if c not in frame.columns]
            if missing:
                raise DataError(f"replay table lacks column(s) {missing}; it has {list(frame.columns)}")
            if frame[self.key_column].duplicated().any():
                raise DataError(f"replay table has duplicate keys in column {self.key_column!r}")
            self._frame = frame.set_index(frame[self.key_column].astype(str))
        return self._frame

    def predict_proba(
        self, inputs, labels, hints=None, candidates=None, progress: bool = False, modality="auto"
    ) -> LargeResult:
        """Recorded answers for ``inputs``, looked up by each item's key in its modality (a text
        itself; an image's content hash, :meth:`datashunt.modalities.image.Image.key`). Hints cannot
        change a recorded answer and are ignored; ``candidates`` renormalise the recorded
        probabilities over the labels kept (a recorded answer outside them is flagged). Each answer is paid for at
        ``price``'s cost of a call, within the limit of the meter watching this model
        (:func:`~datashunt.backends.base.metering`)."""
        check_params(self)
        labels = [str(label) for label in labels]
        if len(set(labels)) != len(labels) or not labels:
            raise ConfigError(f"labels must be distinct and non-empty, got {labels!r}")
        if len(inputs) == 0:
            return LargeResult(
                np.zeros((0, len(labels))), np.zeros(0), np.zeros(0, int), np.zeros(0, bool), [], np.zeros(0)
            )
        frame = self._records()
        batch = self._inputs(inputs, modality)
        problems = batch.problems or [None] * len(batch)
        keys = [batch.modality.key(item) if problem is None else None for item, problem in zip(batch.items, problems)]
        found = np.array([key in frame.index for key in keys], dtype=bool)
        rows = frame.reindex(keys)
        preds = rows[self.prediction_column].map(lambda v: None if pd.isna(v) else str(v)).tolist()
        scores = rows[self.confidence_column].to_numpy(float) if self.confidence_column else None
        proba = recorded_proba(preds, scores, labels)
        error = []
        for key, ok, pred, problem in zip(keys, found, preds, problems):
            if problem is not None:
                error.append(f"{problem}; not looked up")
            elif not ok:
                error.append(f"no recorded answer for input {key!r}")
            elif pred not in labels:
                error.append(f"recorded answer {pred!r} for input {key!r} is not one of the labels {labels}")
            else:
                error.append(None)
        for i, keep in enumerate(candidates or []):
            if keep is None or error[i] is not None:
                continue
            mask = np.zeros(len(labels), bool)
            mask[list(keep)] = True
            if not mask[proba[i].argmax()]:
                error[i] = f"recorded answer {preds[i]!r} for input {keys[i]!r} is not among the candidates kept"
            else:
                proba[i] = np.where(mask, proba[i], 0.0) / proba[i, mask].sum()
        proba[[e is not None for e in error]] = np.nan
        per_call = Price.coerce(self.price).cost(0, 0)
        ok = np.array([e is None for e in error])
        result = LargeResult(
            proba=proba,
            cost=np.where(ok, per_call, 0.0),
            prompt_tokens=np.zeros(len(keys), int),
            cached=np.zeros(len(keys), bool),
            error=error,
            call_seconds=np.zeros(len(keys)),
        )
        meter = self._meter()
        if meter is not None:
            self._metered_rows(meter, result, per_call)
        return result

    def _metered_rows(self, meter, result: LargeResult, per_call: float) -> None:
        """Pay ``meter`` for the rows of ``result`` in the groups it allows; the rows it refuses are flagged."""
        done = 0
        for start, done in self._groups(meter, len(result.cost), per_call):
            for cost in result.cost[start:done]:
                meter.pay(self.identity(), cost)
        result.proba[done:] = np.nan
        result.cost[done:] = 0.0
        result.call_seconds[done:] = np.nan
        result.error[done:] = [NOT_ASKED] * (len(result.error) - done)
