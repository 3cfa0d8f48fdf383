"""Task knowledge for a prompted model: the training pairs most like each item, shown as examples.

A general model does not know a team's conventions (how their package synopses are translated,
how their captions are worded); the closest solved examples from the team's own data teach them
in the prompt, with no training. Similarity is TF-IDF over character n-grams (robust to
inflection and to names), so it needs nothing beyond scikit-learn.
"""

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.neighbors import NearestNeighbors

from ..exceptions import ConfigError, DataError


def saved_pairs(texts, answers) -> bool:
    """Whether a saved memory's two arrays can be restored: strings, one dimension, equal lengths
    (a saved file is data, so it is checked before it is used)."""
    return (
        isinstance(texts, np.ndarray)
        and isinstance(answers, np.ndarray)
        and texts.dtype.kind == answers.dtype.kind == "U"
        and texts.ndim == answers.ndim == 1
        and len(texts) == len(answers)
    )


class ExampleMemory:
    """The training pairs, searchable by similarity to a new item.

    Examples
    --------
    >>> memory = ExampleMemory().fit(["free game", "image tool", "free software"], ["a", "b", "c"])
    >>> memory.nearest(["free games"], 2)[0]
    [('free game', 'a'), ('free software', 'c')]
    """

    def fit(self, texts, answers) -> "ExampleMemory":
        texts, answers = [str(t) for t in texts], [str(a) for a in answers]
        if not texts or len(texts) != len(answers):
            raise DataError(
                f"example memory needs as many answers as texts, at least one; got {len(texts)} "
                f"texts and {len(answers)} answers"
            )
        self.texts_, self.answers_ = np.array(texts), np.array(answers)
        self.vectorizer_ = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
        self.index_ = NearestNeighbors(metric="cosine").fit(self.vectorizer_.fit_transform(texts))
        return self

    def closest(self, texts) -> tuple[list[str], np.ndarray]:
        """The answer of the training text most similar to each text, and that cosine similarity
        (1.0 for an exact copy, which counts here: it is what a translation memory reuses).

        >>> memory = ExampleMemory().fit(["free game", "image tool"], ["ein Spiel", "ein Bild"])
        >>> answers, similarity = memory.closest(["free game", "image tools"])
        >>> answers, similarity.round(2).tolist()
        (['ein Spiel', 'ein Bild'], [1.0, 0.93])
        """
        distance, idx = self.index_.kneighbors(self.vectorizer_.transform([str(t) for t in texts]), n_neighbors=1)
        return [str(self.answers_[row[0]]) for row in idx], np.clip(1.0 - distance[:, 0], 0.0, 1.0)

    def nearest(self, texts, k: int) -> list[list[tuple[str, str]]]:
        """The ``k`` most similar (text, answer) pairs for each text, most similar first (an exact
        copy of the text itself is left out, so an item never sees its own answer)."""
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        k_ask = min(k + 1, len(self.texts_))
        _, idx = self.index_.kneighbors(self.vectorizer_.transform([str(t) for t in texts]), n_neighbors=k_ask)
        out = []
        for text, row in zip(texts, idx):
            pairs = [(self.texts_[j], self.answers_[j]) for j in row if self.texts_[j] != str(text)]
            out.append([(str(a), str(b)) for a, b in pairs[:k]])
        return out


def examples_hint(pairs) -> str | None:
    """Solved examples as a prompt hint for a model that answers with a label (None: no examples).

    Examples
    --------
    >>> print(examples_hint([("vim: text editor", "editors"), ("gimp: image editor", "graphics")]))
    Solved examples like this one:
    vim: text editor -> editors
    gimp: image editor -> graphics
    """
    if not pairs:
        return None
    return "Solved examples like this one:\n" + "\n".join(f"{text} -> {answer}" for text, answer in pairs)
