"""Stages: how the engine asks one model about a batch, whatever the model is.

Every stage answers ``ask(items, rows, earlier)``: the items that reached it, their rows in the
batch, and the answers of the stages before it (for the hooks that pass knowledge on). It returns
:class:`~datashunt.core.answers.Answers` (class probabilities) or a
:class:`~datashunt.backends.generate.base.Generation` (text), with confidence, cost, cache hits,
tokens and a flag per item. The collaboration of the paper enters as stage hooks, not as forks of
the engine: Prompt Pruning and drafts are what a stage reads from ``earlier``; 2-Stage Confidence
Distillation is :class:`Surer`, a stage whose learnable copy answers where it is the surer.

Examples
--------
>>> from sklearn.dummy import DummyClassifier
>>> from datashunt.core.confidence import max_proba
>>> model = DummyClassifier(strategy="prior").fit([[0]] * 4, ["a", "a", "a", "b"])
>>> got = ClassifierStage(model, np.array(["a", "b"]), max_proba).ask(np.zeros((2, 1)), np.arange(2), [])
>>> got.proba.tolist(), got.confidence.tolist()
([[0.75, 0.25], [0.75, 0.25]], [0.75, 0.75])
"""

import abc

import numpy as np

from ..backends.generate.base import Generation
from ..collab.drafts import draft_hint
from ..core.answers import Answers, take
from ..core.sequence import get_sequence_measure


class Stage(abc.ABC):
    """One stage of the engine: answers the items that reach it."""

    @abc.abstractmethod
    def ask(self, items, rows, earlier: list):
        """The answers for ``items`` (at ``rows`` of the batch), given the ``earlier`` stages' answers."""


def _measured(got: Answers, measure) -> Answers:
    ok = got.ok
    if ok.any():
        got.confidence[ok] = np.asarray(measure(got.proba[ok]), dtype=float)
    return got


class ClassifierStage(Stage):
    """A scikit-learn classifier, asked directly; its classes are mapped onto the engine's."""

    def __init__(self, model, classes, measure):
        self.model, self.classes, self.measure = model, classes, measure

    def ask(self, items, rows, earlier) -> Answers:
        raw = self.model.predict_proba(items)
        got = Answers.empty(len(items), len(self.classes))
        own = list(np.asarray(self.model.classes_).tolist())
        got.proba = np.zeros((len(items), len(self.classes)))
        for j, c in enumerate(self.classes.tolist()):
            if c in own:
                got.proba[:, j] = raw[:, own.index(c)]
        got.specific = got.proba.copy()
        return _measured(got, self.measure)


def with_context(hints, context, rows):
    r"""Each item's prompt hint with its ``context`` line (per item of the batch, or None) after it:
    what the caller knows about the item, such as the answers other subtasks settled.

    Examples
    --------
    >>> with_context(["prior: pos 0.9", None], ["section: games", "section: net"], [0, 1])
    ['prior: pos 0.9\nsection: games', 'section: net']
    """
    if context is None:
        return hints
    hints = [None] * len(rows) if hints is None else hints
    return ["\n".join(filter(None, [h, context[i]])) or None for h, i in zip(hints, rows)]


class LabelStage(Stage):
    """A large-model backend, asked by label names; ``prompt(rows, earlier)`` gives the prompt's
    extra arguments (Prompt Pruning's prior or candidates), None for none; ``context`` (one line
    or None per item of the batch) is added to each item's prompt."""

    def __init__(self, model, labels, measure, *, modality="auto", progress=False, prompt=None, context=None):
        self.model, self.labels, self.measure = model, labels, measure
        self.modality, self.progress, self.prompt, self.context = modality, progress, prompt, context

    def ask(self, items, rows, earlier) -> Answers:
        extra = dict(self.prompt(rows, earlier) or {}) if self.prompt is not None else {}
        hints = with_context(extra.get("hints"), self.context, rows)
        if hints is not None:
            extra["hints"] = hints
        result = self.model.predict_proba(items, self.labels, progress=self.progress, modality=self.modality, **extra)
        got = Answers(
            result.proba,
            np.full(len(items), np.nan),
            result.cost,
            self.model.price_of(result.prompt_tokens),
            result.cached,
            result.prompt_tokens,
            list(result.error),
        )
        return _measured(got, self.measure)


class GeneratorStage(Stage):
    """A generator (a backend or a trainable small one); with ``hint`` its prompt carries the
    previous stage's text and confidence as a draft; ``context`` (one line or None per item of the
    batch) is added after it. With ``chat`` the items are whole chat conversations, answered as
    given (a draft, if any, comes last as a system message)."""

    def __init__(self, model, confidence, *, modality="auto", progress=False, hint=False, chat=False, context=None):
        self.model, self.measure = model, get_sequence_measure(confidence)
        self.modality, self.progress, self.hint, self.chat = modality, progress, hint, chat
        self.context = context

    def ask(self, items, rows, earlier) -> Generation:
        hints = None
        if self.hint and earlier:
            previous = earlier[-1]
            # the draft's sequence confidence, even where the routing score is a learned one
            sure = self.measure([previous.token_logprob[i] for i in rows])
            hints = [draft_hint(previous.text[i], c) for i, c in zip(rows, sure)]
        hints = with_context(hints, self.context, rows)
        if self.chat:
            turns = [
                list(c) + ([{"role": "system", "content": h}] if h else [])
                for c, h in zip(items, hints or [None] * len(items))
            ]
            got = self.model.chat(turns, progress=self.progress)
        else:
            got = self.model.generate(items, hints=hints, progress=self.progress, modality=self.modality)
        got.confidence = np.asarray(self.measure(got.token_logprob), dtype=float)
        return got


class Surer(Stage):
    """2-Stage Confidence Distillation at answer time: the stage and its learnable copy both answer,
    and the surer answers (``learnable`` marks where the copy did); ``specific`` keeps the stage's
    own probabilities, the ones Prompt Pruning reads."""

    def __init__(self, stage: Stage, copy: Stage):
        self.stage, self.copy = stage, copy

    def ask(self, items, rows, earlier):
        got = self.stage.ask(items, rows, earlier)
        other = self.copy.ask(items, rows, earlier)
        better = np.flatnonzero(np.nan_to_num(other.confidence, nan=-1.0) > np.nan_to_num(got.confidence, nan=-1.0))
        specific = getattr(got, "specific", None)
        specific = None if specific is None else specific.copy()
        got.put(better, take(other, better))
        if specific is not None:
            got.specific = specific
        got.learnable[better] = True
        return got


class Deferred(Stage):
    """A stage whose routing score is a learned deferral's (:mod:`datashunt.estimators.deferral`):
    how likely its answer is right (or how good its text is), judged from every answer up to it
    (``s``: its position). Asked without the earlier stages' answers (a stage alone), it has no
    score: its confidence is NaN, never a number on another scale."""

    def __init__(self, stage: Stage, deferral, s: int):
        self.stage, self.deferral, self.s = stage, deferral, s

    def ask(self, items, rows, earlier):
        got = self.stage.ask(items, rows, earlier)
        if len(earlier) < self.s:
            got.confidence = np.full(len(items), np.nan)
        else:
            got.confidence = self.deferral.judge(self.s, [take(e, rows) for e in earlier] + [got], items)
        return got


class Combined(Stage):
    """The last stage, whose answer is replaced by a combination of every stage's (stacking,
    :class:`~datashunt.estimators.deferral.Combiner`) where it and the earlier ones answered."""

    def __init__(self, stage: Stage, combiner):
        self.stage, self.combiner = stage, combiner

    def ask(self, items, rows, earlier):
        got = self.stage.ask(items, rows, earlier)
        ok = got.ok
        if ok.any():
            probas = [e.proba[rows][ok] for e in earlier] + [got.proba[ok]]
            got.proba[ok] = self.combiner.proba(probas)
            got.confidence[ok] = got.proba[ok].max(axis=1)
        return got


class Given(Stage):
    """Answers computed earlier (cross-fitted probabilities, or a first stage run on another
    worker), handed back at the rows asked."""

    def __init__(self, answers):
        self.answers = answers

    def ask(self, items, rows, earlier):
        return take(self.answers, rows)
