"""Quality of generated text against human references, from the libraries that define the metrics.

Every metric gives a corpus score (what papers report) and one score per item (what a threshold is
calibrated on), on the same scale: chrF and BLEU 0-100 (sacrebleu), ROUGE-L F 0-100 (rouge-score),
CIDEr-D as pycocoevalcap computes it (0-10), exact match and token F1 0-100 (SQuAD's normalisation).
A reference is a string, or a list of strings where an item has several (captions).

Examples
--------
>>> chrf = get_metric("chrf")
>>> round(chrf.corpus(["freie Software"], ["freie Software"]), 1)
100.0
>>> get_metric("exact_match").per_item(["The cat."], [["a cat", "the cat"]]).tolist()
[100.0]
"""

import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..exceptions import ConfigError, DataError, require


def _refs(references, n: int) -> list[list[str]]:
    """Each item's references as a non-empty list of strings."""
    if len(references) != n:
        raise DataError(f"got {len(references)} references for {n} generated texts")
    out = []
    for i, ref in enumerate(references):
        refs = [ref] if isinstance(ref, str) else list(ref) if ref is not None else []
        if not refs or not all(isinstance(r, str) for r in refs):
            raise DataError(f"item {i} has no reference (or a non-text one): {ref!r}")
        out.append(refs)
    return out


def _hyps(texts) -> list[str]:
    return ["" if t is None else str(t) for t in texts]


def _by_reference_slot(refs: list[list[str]]) -> list[list[str]]:
    """sacrebleu wants one list per reference slot; items with fewer references repeat their first."""
    width = max(len(r) for r in refs)
    return [[r[j] if j < len(r) else r[0] for r in refs] for j in range(width)]


@dataclass(frozen=True)
class Metric:
    """A named quality metric: ``corpus(texts, references)`` and ``per_item(texts, references)``;
    ``scale`` is its best score. Where the corpus score is a function of per-item statistics summed
    over the items (chrF and BLEU as sacrebleu counts them, and every mean of item scores),
    ``statistics`` gives those rows and ``from_statistics`` the score of their sum, so resamples
    and mixes of systems are scored without recounting."""

    name: str
    corpus_fn: Callable
    item_fn: Callable
    scale: float = 100.0
    statistics: Callable | None = None  # (texts, references) -> array, one row per item
    from_statistics: Callable | None = None  # the rows' column sums -> the corpus score

    def corpus(self, texts, references) -> float:
        hyps = _hyps(texts)
        return float(self.corpus_fn(hyps, _refs(references, len(hyps))))

    def per_item(self, texts, references) -> np.ndarray:
        hyps = _hyps(texts)
        return np.asarray(self.item_fn(hyps, _refs(references, len(hyps))), dtype=float)

    def bootstrap(self, texts, references, n: int = 1000, seed: int = 0, against=None) -> tuple[float, float]:
        """95% interval of the corpus score over items resampled with replacement; with
        ``against`` (another system's texts for the same items), of the difference between the two
        systems' scores, both scored on each resample (paired: is one better than the other?).

        Examples
        --------
        >>> chrf = get_metric("chrf")
        >>> refs = ["ein kleines Haus", "der Hund schläft", "es regnet heute"]
        >>> low, high = chrf.bootstrap(refs, refs, n=50, against=["ein Haus", "der Hund", "es regnet"])
        >>> bool(0 < low <= high)
        True
        """
        hyps, refs = _hyps(texts), _refs(references, len(texts))
        others = None if against is None else _hyps(against)
        if others is not None and len(others) != len(hyps):
            raise DataError(f"against has {len(others)} texts for {len(hyps)} items")
        systems = [h for h in (hyps, others) if h is not None]
        rng = np.random.default_rng(seed)
        if self.statistics is not None:
            stats = [np.asarray(self.statistics(h, refs), dtype=float) for h in systems]

            def score(idx, system):
                return self.from_statistics(stats[system][idx].sum(axis=0))
        else:

            def score(idx, system):
                return self.corpus_fn([systems[system][i] for i in idx], [refs[i] for i in idx])

        scores = []
        for _ in range(n):
            idx = rng.integers(0, len(hyps), len(hyps))
            scores.append(score(idx, 0) - (score(idx, 1) if others is not None else 0.0))
        low, high = np.percentile(scores, [2.5, 97.5])
        return float(low), float(high)

    def mixer(self, systems: list, references) -> Callable:
        """The corpus score of any mix of several systems' texts (``systems[s][i]``: system s's
        text for item i): ``f(choice)`` scores the texts ``systems[choice[i]][i]``, each system's
        statistics counted once where the metric sums them.

        Examples
        --------
        >>> chrf = get_metric("chrf")
        >>> mix = chrf.mixer([["ein Spiel", "frei"], ["das Spiel", "freie Software"]], ["ein Spiel", "freie Software"])
        >>> mix([0, 1]) == chrf.corpus(["ein Spiel", "freie Software"], ["ein Spiel", "freie Software"])
        True
        """
        refs = _refs(references, len(systems[0]))
        if self.statistics is None:
            return lambda choice: float(self.corpus_fn([_hyps([systems[c][i]])[0] for i, c in enumerate(choice)], refs))
        stats = np.stack([np.asarray(self.statistics(_hyps(texts), refs), dtype=float) for texts in systems])
        rows = np.arange(len(refs))
        return lambda choice: float(self.from_statistics(stats[np.asarray(choice, dtype=int), rows].sum(axis=0)))


def _sacre(kind: str, **kwargs):
    sacrebleu = require("sacrebleu", "generate")  # its sentence statistics: sacrebleu>=2.4,<3
    cls = {"chrf": sacrebleu.metrics.CHRF, "bleu": sacrebleu.metrics.BLEU}[kind]
    corpus_scorer = cls(**kwargs)
    item_scorer = cls(**kwargs, **({"effective_order": True} if kind == "bleu" else {}))

    def corpus(hyps, refs):
        return corpus_scorer.corpus_score(hyps, _by_reference_slot(refs)).score

    def per_item(hyps, refs):
        return [item_scorer.sentence_score(h, r).score for h, r in zip(hyps, refs)]

    def statistics(hyps, refs):  # as sacrebleu's own significance tests do
        return corpus_scorer._extract_corpus_statistics(hyps, _by_reference_slot(refs))

    def from_statistics(summed):
        return corpus_scorer._compute_score_from_stats([float(v) for v in summed]).score

    return corpus, per_item, statistics, from_statistics


def _rouge_l():
    rouge = require("rouge_score.rouge_scorer", "generate")
    scorer = rouge.RougeScorer(["rougeL"], use_stemmer=False)

    def per_item(hyps, refs):
        return [100 * max(scorer.score(r, h)["rougeL"].fmeasure for r in rs) for h, rs in zip(hyps, refs)]

    return (lambda hyps, refs: float(np.mean(per_item(hyps, refs)))), per_item, *_mean_statistics(per_item)


def _mean_statistics(item_fn) -> tuple:
    """For a metric that is the mean of its item scores: each item's (score, 1), and sum / count."""

    def statistics(hyps, refs):
        return np.column_stack([np.asarray(item_fn(hyps, refs), dtype=float), np.ones(len(hyps))])

    return statistics, lambda summed: float(summed[0] / summed[1])


def _cider():
    cider = require("pycocoevalcap.cider.cider", "generate")

    def scores(hyps, refs):
        tok = [_tokens(h) for h in hyps]
        gts = {i: [" ".join(_tokens(r)) for r in rs] for i, rs in enumerate(refs)}
        res = {i: [" ".join(t) if t else "<empty>"] for i, t in enumerate(tok)}
        corpus, each = cider.Cider().compute_score(gts, res)
        return corpus, each

    return (lambda hyps, refs: scores(hyps, refs)[0]), (lambda hyps, refs: scores(hyps, refs)[1])


def _tokens(text: str) -> list[str]:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def _exact(hyps, refs):
    return [100.0 * any(_tokens(h) == _tokens(r) for r in rs) for h, rs in zip(hyps, refs)]


def _token_f1(hyps, refs):
    def f1(h, r):
        common = sum((Counter(h) & Counter(r)).values())
        if not h or not r:
            return 100.0 * (h == r)
        if common == 0:
            return 0.0
        precision, recall = common / len(h), common / len(r)
        return 100 * 2 * precision * recall / (precision + recall)

    return [max(f1(_tokens(h), _tokens(r)) for r in rs) for h, rs in zip(hyps, refs)]


def _mean(fn):
    return lambda hyps, refs: float(np.mean(fn(hyps, refs)))


def _summed(name, corpus_fn, item_fn, statistics, from_statistics) -> Metric:
    return Metric(name, corpus_fn, item_fn, statistics=statistics, from_statistics=from_statistics)


def get_metric(name) -> Metric:
    """A metric by name: ``chrf``, ``bleu`` (up to 4-grams), ``bleu1`` ... ``bleu4``, ``rouge_l``,
    ``cider``, ``exact_match``, ``token_f1``; a :class:`Metric` passes through."""
    if isinstance(name, Metric):
        return name
    if name == "chrf":
        return _summed(name, *_sacre("chrf"))
    match = re.fullmatch(r"bleu([1-4]?)", str(name))
    if match:
        return _summed(name, *_sacre("bleu", max_ngram_order=int(match.group(1) or 4)))
    if name == "rouge_l":
        return _summed(name, *_rouge_l())
    if name == "cider":
        return Metric(name, *_cider(), scale=10.0)
    if name == "exact_match":
        return _summed(name, _mean(_exact), _exact, *_mean_statistics(_exact))
    if name == "token_f1":
        return _summed(name, _mean(_token_f1), _token_f1, *_mean_statistics(_token_f1))
    raise ConfigError(f"unknown metric {name!r}; choose one of {list(METRICS)}")


METRICS = ("chrf", "bleu", "bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "exact_match", "token_f1")
