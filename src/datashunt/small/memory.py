"""A translation memory as a generation stage: the team's own solved texts, reused.

Package descriptions, product texts and support answers repeat themselves: "This package contains
the development files." is translated once and then met again in every library. A memory answers a
text with the answer of the most similar training text (TF-IDF over character n-grams,
:class:`~datashunt.collab.memory.ExampleMemory`) and is exactly as sure as the two are alike: its
confidence is their cosine similarity, 1.0 for a text it has seen. It costs no tokens, so as the
first stage of a :class:`~datashunt.ShuntGenerator` it settles what was solved before and leaves
the rest to the models; calibration decides how alike is alike enough.

Examples
--------
>>> texts, answers = ["This is a game.", "This is a tool."], ["Das ist ein Spiel.", "Das ist ein Werkzeug."]
>>> memory = MemoryGenerator().fit(texts, answers)
>>> got = memory.generate(["This is a game.", "A new thing."])
>>> got.text
['Das ist ein Spiel.', 'Das ist ein Spiel.']
>>> got.confidence.round(2).tolist()
[1.0, 0.33]
"""

import math
import time

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ..backends.generate.base import Generation
from ..collab.memory import ExampleMemory, saved_pairs
from ..core.inputs import require_valid
from ..exceptions import ConfigError, DataError
from ..modalities import as_inputs


class MemoryGenerator(BaseEstimator):
    """Answers with the answer of the most similar training text; confidence = their similarity.

    It fulfils the generation contract of :class:`~datashunt.backends.generate.base.Generator`
    (``fit(X, references)``, ``generate``); the answer's one "token" has the similarity as its
    probability, so the sequence confidences (``mean_proba``) read the similarity itself.
    """

    modalities = ("text",)

    def fit(self, X, references):
        """Keep the training pairs (the first reference of an item that has several)."""
        self.memory_ = ExampleMemory().fit(*_pairs(X, references))
        return self

    def distill(self, X, references, epochs=None):
        """Remember new pairs, such as the large model's confident answers (2-Stage Confidence
        Distillation, where a memory learns by remembering); a text already remembered keeps its
        answer. The memory changes in place: ``copy.deepcopy`` it first to keep the original.
        ``epochs`` is accepted for the contract and not needed.

        >>> memory = MemoryGenerator().fit(["This is a game."], ["Das ist ein Spiel."])
        >>> memory.distill(["A free tool.", "This is a game."], ["Ein freies Werkzeug.", "Ein Spiel."]).generate(
        ...     ["A free tool.", "This is a game."]).text
        ['Ein freies Werkzeug.', 'Das ist ein Spiel.']
        """
        check_is_fitted(self, "memory_")
        texts, answers = _pairs(X, references)
        known = set(self.memory_.texts_.tolist())
        new = {}
        for text, answer in zip(texts, answers):
            if text not in known:
                new.setdefault(text, answer)  # one answer per new text: the first
        self.memory_ = ExampleMemory().fit(
            [*self.memory_.texts_.tolist(), *new], [*self.memory_.answers_.tolist(), *new.values()]
        )
        return self

    def generate(self, inputs, hints=None, progress: bool = False, modality="auto") -> Generation:
        """The closest training answer for each text; texts that are not text are flagged per row.
        ``hints`` and ``progress`` are accepted for the contract and not needed."""
        check_is_fitted(self, "memory_")
        n = len(inputs)
        out = Generation.empty(n)
        if n == 0:
            return out
        batch = as_inputs(inputs, "text" if modality == "auto" else modality)
        self.check_modality(batch.modality.name)
        if hints is not None and len(hints) != n:
            raise ConfigError(f"got {len(hints)} hints for {n} inputs")
        problems = batch.problems or [None] * n
        rows = [i for i, p in enumerate(problems) if p is None]
        for i, problem in enumerate(problems):
            if problem is not None:
                out.flag[i] = f"{problem}; not looked up"
        if not rows:
            return out
        start = time.perf_counter()
        answers, similarity = self.memory_.closest([batch.items[i] for i in rows])
        seconds = (time.perf_counter() - start) / len(rows)
        for i, answer, sim in zip(rows, answers, similarity):
            out.text[i] = answer
            out.token_logprob[i] = np.array([math.log(max(float(sim), 1e-12))])
            out.confidence[i] = float(sim)
            out.seconds[i] = seconds
        return out

    def check_modality(self, name: str) -> None:
        """Refuse items of modality ``name``: the memory compares texts."""
        if name not in self.modalities:
            raise ConfigError(f"{type(self).__name__} answers about texts, not {name} items")

    def price_of(self, prompt_tokens, completion_tokens) -> np.ndarray:
        """A lookup: every answer is free."""
        return np.zeros(len(completion_tokens))

    # -- state: the training pairs only ----------------------------------------------------------
    def __getstate__(self):
        memory = self.__dict__.get("memory_")
        return {} if memory is None else {"texts": memory.texts_, "answers": memory.answers_}

    def __setstate__(self, state):
        """Restore from the training pairs only (two string arrays of equal length); anything else
        is refused (``ValueError``): a saved file is data."""
        if not isinstance(state, dict) or set(state) - {"texts", "answers"}:
            raise ValueError(f"{type(self).__name__} state must hold only the memory's texts and answers")
        if not state:
            return
        texts, answers = state.get("texts"), state.get("answers")
        if not (saved_pairs(texts, answers) and len(texts)):
            raise ValueError(f"{type(self).__name__} memory must be two non-empty string arrays of equal length")
        self.memory_ = ExampleMemory().fit(texts, answers)


def _pairs(X, references) -> tuple[list, list]:
    """The texts and, per text, its answer (the first reference of one that has several), checked."""
    batch = as_inputs(X, "text")
    require_valid(batch.problems, "memory texts")
    if references is None or len(references) != len(batch.items):
        got = "none" if references is None else len(references)
        raise DataError(f"the memory needs one reference per text ({len(batch.items)}), got {got}")
    answers = [
        r if isinstance(r, str) else next(iter(r), None) if isinstance(r, list | tuple) else r for r in references
    ]
    bad = [i for i, a in enumerate(answers) if not (isinstance(a, str) and a.strip())]
    if bad:
        raise DataError(f"the memory's references must be texts: rows {bad[:5]} are not")
    return list(batch.items), answers
