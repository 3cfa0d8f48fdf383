"""Segments (Data Shunt+): a document made of parts, each part routed on its own.

Translating, correcting or captioning a long text is a task whose subtasks are its parts: most
sentences of a package description are easy for a small model, a few are not. :class:`Segments`
cuts each document into sentences (or lines, :mod:`datashunt.core.segments`), lets a
:class:`~datashunt.ShuntGenerator` route every part on its own, and asks the large model only
about the parts the small side left open: together, in one call per document (numbered lines, with
the examples its ``shots`` retrieve), where it answers every numbered line; one by one where a
document has a single open part, or where the joint answer cannot be read back (flagged). With
``context`` the large model also sees what the small side wrote just before and after each open
part. With ``max_cost`` the large model is asked within a budget per document, least sure parts
first. The parts' answers are joined with the document's own line breaks. A translation memory as
the shunt's first stage (:class:`~datashunt.small.memory.MemoryGenerator`) settles, for free, the
parts the training documents have solved before.

Calibration is per part: the training and validation documents whose reference has as many parts
as the text (the usual case for translations) give aligned part pairs; the shunt keeps its policy,
guarantee and learned score on them (``alignment_`` counts what was usable).

The route table has one row per document: ``text``, ``route`` (``large`` where the large model
was asked about any part, ``small`` where not, ``invalid`` for a document that is not text),
``parts``, ``large_parts`` (answered by the last stage), ``held_back`` (open parts the budget left
to the small side), ``large_calls``, ``cached_calls`` (of those, answered from the call cache),
``failed_calls`` (of those, failed: an error, a time-out, no answer), ``large_prompt_tokens`` and
``large_completion_tokens`` (the last stage's), ``prompt_tokens`` and ``completion_tokens`` (every
stage's), ``cost``, ``routes`` (each part's route: ``invalid`` for a part no stage could take) and
``flag``. The service answers ``/v1/documents`` with this table
(:mod:`datashunt.serve.items`).

Examples
--------
The local models, the smaller shown its two closest training sentences (needs ``datashunt setup
--model qwen2.5-coder-0.5b``)::

    from datashunt import Segments, ShuntGenerator
    from datashunt.backends.generate.llama_cpp import LlamaCppGenerator
    ask = "Translate this sentence from English into German. Answer with the translation only."
    shunt = ShuntGenerator([
        ("small", LlamaCppGenerator("qwen2.5-coder-0.5b", instruction=ask, shots=2, stop=["\\n"])),
        ("large", LlamaCppGenerator("qwen2.5-coder-1.5b", instruction=ask, shots=1, stop=["\\n"])),
    ])
    model = Segments(shunt).fit(descriptions, translations, X_val, translations_val)
    model.route(["A free game. It runs on any machine with a modern graphics card."])
"""

import re
import warnings
from dataclasses import dataclass
from numbers import Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from ..backends.base import NOT_ASKED
from ..backends.pricing import Price
from ..core import drift
from ..core.routes import FALLBACK, INVALID, LARGE, LEARNABLE, SMALL
from ..core.segments import UNITS, join, split
from ..core.sequence import get_sequence_measure
from ..eval.metrics import get_metric
from ..exceptions import ConfigError, DataError, DriftWarning, LargeModelError
from ..modalities.text import lone_surrogate
from .engine import PARTIAL, Engine
from .subtasks import CONTEXT_LEAD

#: How the large model is asked about several parts at once (after the last stage's own instruction).
TOGETHER = (
    "Do this for each numbered line below, in order: answer with the same numbers, one line each, and nothing else."
)
MOST_TOGETHER = 16  #: the most parts one joint call asks about (a longer document's open parts take more calls)
TOKENS = ("prompt_tokens", "completion_tokens")
_NUMBERED = re.compile(r"^\s*(\d+)\s*[.):]\s*(.*?)\s*$")


class Segments(MetaEstimatorMixin, BaseEstimator):
    """Documents cut into parts, each part routed by a :class:`~datashunt.ShuntGenerator`; the
    large model answers a document's open parts together, told what the small side wrote around them.

    Parameters
    ----------
    shunt : ShuntGenerator
        Routes the parts (cloned and fitted on the aligned part pairs; its last stage is the
        large model).
    unit : {"sentences", "lines"}
        Where a document is cut (:func:`datashunt.core.segments.split`).
    together : bool
        Ask the large model about all of a document's open parts in one call (where its backend
        takes whole chats); one call per part otherwise.
    context : bool
        Show the large model the small side's answers just before and after each open part. Off
        by default: on Debian descriptions it made each call dearer and lowered chrF (by 1.9 at
        half the large model's tokens; benchmarks/README.md, "Data Shunt+").
    max_cost : float or None
        The most the large model's calls may cost per document, on average over the documents
        with text of one :meth:`route` call, priced as if uncached (in the units of the last
        stage's ``price``, which it needs). Calibration says which parts are open from
        validation data; this holds the spending on data where more are open. The open parts are
        asked least sure first, in rounds that each spend about half of what is left at the price
        of a part so far (at first, its mean price on validation), until not one more part fits;
        the rest keep the small side's answer (``held_back``). None: every open part is asked.

    Attributes
    ----------
    shunt_ : the fitted ShuntGenerator
    alignment_ : dict, per split, the documents whose parts could be paired and how many there were
    """

    def __init__(self, shunt, *, unit: str = "sentences", together: bool = True, context: bool = False, max_cost=None):
        self.shunt = shunt
        self.unit = unit
        self.together = together
        self.context = context
        self.max_cost = max_cost

    # -- learning ------------------------------------------------------------------------------
    def fit(self, X, references, X_val=None, references_val=None):
        """Fit the shunt on the part pairs of the training documents and calibrate it on those
        of ``X_val, references_val`` (or of a held-out share of the documents)."""
        self._check()
        X, references = self._documents(X, references, "training")
        if X_val is None:
            X, X_val, references, references_val = train_test_split(
                X, references, test_size=self.shunt.validation_fraction, random_state=self.shunt.random_state
            )
        else:
            X_val, references_val = self._documents(X_val, references_val, "validation")
        train, val = self._aligned(X, references, "training"), self._aligned(X_val, references_val, "validation")
        self.alignment_ = {"training": train[2], "validation": val[2]}
        self.shunt_ = clone(self.shunt).fit(train[0], train[1], val[0], val[1])
        return self

    modality_ = "text"  #: documents are texts

    def _check(self) -> None:
        if not isinstance(self.shunt, Engine) or self.shunt.task != "generate":
            raise ConfigError(f"Segments needs a ShuntGenerator, got {type(self.shunt).__name__}")
        if self.unit not in UNITS:
            raise ConfigError(f"unit must be one of {UNITS}, got {self.unit!r}")
        for name in ("together", "context"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        budget = self.max_cost
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, Real) or not budget >= 0):
            raise ConfigError(f"max_cost must be a non-negative number or None, got {budget!r}")
        if budget is not None and Price.coerce(getattr(self.shunt.stages[-1][1], "price", None)) == Price():
            raise ConfigError("max_cost counts what the large model's calls cost: give its stage a price")

    @staticmethod
    def _documents(X, references, what: str) -> tuple[list, list]:
        X = _texts(X, f"{what} documents")
        if references is None or len(references) != len(X):
            got = "none" if references is None else len(references)
            raise DataError(f"{what}: expected one reference per document ({len(X)}), got {got}")
        return X, _texts(references, f"{what} references")

    def _aligned(self, X, references, what: str) -> tuple[list, list, dict]:
        """The part pairs of the documents whose reference has as many parts as the text."""
        texts, refs, used = [], [], 0
        for text, reference in zip(X, references):
            parts, answers = split(text, self.unit), split(reference, self.unit)
            if parts and len(parts) == len(answers):
                texts += [p for p, _ in parts]
                refs += [a for a, _ in answers]
                used += 1
        if not texts:
            raise DataError(
                f"{what}: no document's reference has as many {self.unit} as its text, so no part can be "
                "paired with its answer; give references cut the same way"
            )
        return texts, refs, {"documents": len(X), "aligned": used, "parts": len(texts)}

    def check_trainable(self) -> None:
        """Refuse 2-Stage Confidence Distillation where the shunt's first stage cannot learn."""
        check_is_fitted(self, "shunt_")
        self.shunt_.check_trainable()

    def n_parts(self, X) -> int:
        """How many parts the text documents of ``X`` are cut into (what a service bounds per request)."""
        return sum(len(split(d, self.unit)) for d in X if isinstance(d, str))

    # -- routing -------------------------------------------------------------------------------
    def route(self, X) -> pd.DataFrame:
        """One row per document (see the module's docstring): the small side answers every part,
        the large model the open ones; a document that is not text is flagged, never raised.
        ``table.attrs["drift"]`` compares the first stage's confidences on every part with
        calibration (:func:`datashunt.core.drift.check`)."""
        run, problems, checked = self._run(X)
        table = run.table(problems, self.shunt_.stage_names()[-1])
        table.attrs["drift"] = checked
        return table

    def _run(self, X) -> tuple["_Parts", list, dict | None]:
        """The parts of the documents answered as :meth:`route` does; why each document could not
        be cut (None where it could); the drift check."""
        check_is_fitted(self, "shunt_")
        self._check()
        docs, problems = _checked(X)
        run, checked = _Parts.cut(docs, problems, self.unit), None
        if run.parts:
            first = self.shunt_.first_stages(run.parts)
            run.settle(first, self.shunt_)
            confidence = first[f"{PARTIAL}0_confidence"].to_numpy(float)  # every part's, against calibration
            checked = drift.check(
                self.shunt_.calibration_.get("drift_reference"), confidence, self.shunt_.thresholds_[0]
            )
            context = self._context(run) if self.context else None
            left = np.flatnonzero(first[f"{PARTIAL}open"].to_numpy(bool))
            if self.max_cost is None:
                self._ask(run, first, context, left)
            else:
                self._within_budget(run, first, context, left)
        return run, problems, checked

    @staticmethod
    def _context(run: "_Parts") -> list:
        """Per part, the small side's answers just before and after it in its document (None where none)."""
        out = []
        for i in range(len(run.parts)):
            near = [j for j in (i - 1, i + 1) if 0 <= j < len(run.parts) and run.owner[j] == run.owner[i]]
            around = [run.texts[j] for j in near if run.texts[j] is not None]
            out.append(CONTEXT_LEAD + "the text around it reads: " + " … ".join(around) if around else None)
        return out

    def _ask(self, run: "_Parts", first: pd.DataFrame, context, rows) -> None:
        """Ask the last stage about these open parts: together per document, then one by one."""
        if self.together:
            rows = self._together(run, context, rows)
        if len(rows):
            self._one_by_one(run, first, context, rows)

    def _within_budget(self, run: "_Parts", first: pd.DataFrame, context, left) -> None:
        """Ask about the open parts least sure first (by the routing score of the stage that handed
        them on), in rounds within ``max_cost`` per document; the parts left keep the small side's answer."""
        names = self.shunt_.stage_names()
        score = first[f"{PARTIAL}{len(names) - 2}_confidence"].to_numpy(float)[left]
        order = left[np.argsort(np.nan_to_num(score, nan=-np.inf), kind="stable")]  # no score: asked first
        allowance = self.max_cost * len(np.unique(run.owner))
        per_part, asked = _price(self.shunt_.calibration_.get("stage_price")), 0
        while len(order):
            spent = float(run.price.sum())
            per_part = spent / asked if asked else per_part
            room = allowance - spent
            fits = int(room // per_part) if per_part > 0 else int(room > 0 and not asked)  # unknown: one
            if fits < 1:
                break
            take = min(len(order), max(1, fits // 2))
            self._ask(run, first, context, np.sort(order[:take]))
            asked, order = asked + take, order[take:]
        run.hold(order, first, names)

    def _together(self, run: "_Parts", context, left) -> np.ndarray:
        """Ask the last stage once per document with two or more open parts (at most
        :data:`MOST_TOGETHER` a call); the parts left to ask one by one."""
        name, model = self.shunt_.stages_[-1]
        if not hasattr(model, "chat"):
            return left
        by_size: dict[int, list] = {}  # the parts of each joint call, by how many they are
        for d in np.unique(run.owner[left]):
            rows = left[run.owner[left] == d]
            for chunk in np.array_split(rows, -(-len(rows) // MOST_TOGETHER)) if len(rows) > 1 else ():
                by_size.setdefault(len(chunk), []).append(chunk)
        answered, measure = set(), get_sequence_measure(self.shunt_.sequence_measure())
        for k, chunks in by_size.items():
            joint = model.variant(stop=None, max_new_tokens=model.max_new_tokens * k)
            chats = [
                self._chat(model, [run.parts[i] for i in rows], context and _joined(context, rows)) for rows in chunks
            ]
            got = joint.chat(chats, progress=self.shunt_.progress)
            for j, rows in enumerate(chunks):
                d = run.owner[rows[0]]
                if got.flag[j] == NOT_ASKED:  # the spending limit refused it: not a call, not a failure
                    run.flags[d].append(f"{name}: {NOT_ASKED}")
                    continue
                run.calls[d] += 1
                run.failed[d] += got.text[j] is None
                run.cached[d] += bool(got.cached[j])
                run.cost[rows[0]] += got.cost[j]
                run.price[rows[0]] += got.price[j]
                run.large["prompt_tokens"][rows[0]] += got.prompt_tokens[j]
                run.large["completion_tokens"][rows[0]] += got.completion_tokens[j]
                read = _read_numbered(got.text[j], k)
                if read is None:
                    why = got.flag[j] or "its joint answer did not number every part"
                    run.flags[d].append(f"{name}: {why}; asked part by part")
                    continue
                run.texts[rows], run.routes[rows] = read, name
                run.confidence[rows] = measure([got.token_logprob[j]])[0]  # the joint answer's, for each part
                answered.update(rows.tolist())
        return np.array([i for i in left if i not in answered], dtype=int)

    @staticmethod
    def _chat(model, parts: list, context: str | None) -> list[dict]:
        """The messages of one joint call: the examples the model's ``shots`` retrieve for the parts
        (one each, as one numbered earlier turn), then the numbered parts."""
        ask = f"{model.instruction} {TOGETHER}".strip()

        def user(lines, context=None):
            return {"role": "user", "content": "\n\n".join(filter(None, [ask, context, _numbered(lines)]))}

        turns = []
        memory = getattr(model, "memory_", None)
        if model.shots and memory is not None:
            shown = [pairs[0] for pairs in memory.nearest(parts, 1) if pairs]
            turns = [user([t for t, _ in shown]), {"role": "assistant", "content": _numbered([a for _, a in shown])}]
        return turns + [user(parts, context)]

    def _one_by_one(self, run: "_Parts", first: pd.DataFrame, context, rows) -> None:
        """The shunt's own route for the open parts left: one last-stage call each."""
        with warnings.catch_warnings():  # these are the unsure parts only: drift is judged on all of them (route)
            warnings.simplefilter("ignore", DriftWarning)
            table = self.shunt_.route(
                [run.parts[i] for i in rows],
                first_stage=first.iloc[rows].reset_index(drop=True),
                context=None if context is None else [context[i] for i in rows],
            )
        run.texts[rows], run.routes[rows] = table["text"].to_numpy(), table["route"].to_numpy()
        run.confidence[rows] = table["confidence"].to_numpy(float)
        got = {k: table[k].to_numpy(int) - run.small[k][rows] for k in run.large}  # the last stage's tokens alone
        for k in run.large:
            run.large[k][rows] += got[k]
        run.cost[rows] = table["cost"].to_numpy(float)
        last = len(self.shunt_.stages_) - 1
        asked = table["reached"].to_numpy() == last
        run.price[rows[asked]] += self.shunt_.stages_[-1][1].price_of(*(got[k][asked] for k in TOKENS))
        for i, reached, route, cached, flag in zip(
            rows, table["reached"], table["route"], table["cached"], table["flag"]
        ):
            run.calls[run.owner[i]] += int(reached == last)
            run.failed[run.owner[i]] += int(route == FALLBACK)
            run.cached[run.owner[i]] += int(reached == last and bool(cached))
            if isinstance(flag, str) and flag:
                run.flags[run.owner[i]].append(flag)

    def distill(self, X_pool, *, min_confidence: float = 0.5, epochs=None, X_val=None, references_val=None):
        """2-Stage Confidence Distillation part by part (:meth:`ShuntGenerator.distill
        <datashunt.ShuntGenerator.distill>`): the pool's documents are cut and answered as
        :meth:`route` answers them (so traffic already answered comes from the call cache), and a
        copy of the first stage learns from the parts the large model answered with confidence at
        least ``min_confidence`` (a joint answer's confidence counts for each of its parts) and
        from the parts the first stage settled itself; parts the budget held back teach nothing.
        The first stage must be trainable (a translation memory is: it remembers). With ``X_val,
        references_val`` (whole documents) the shunt is calibrated again on their aligned parts.
        Sets ``distillation_`` (the shunt's counts of parts, and the documents in the pool).

        Examples
        --------
        A memory first, growing with the large model's confident translations of new traffic::

            model = Segments(ShuntGenerator([("memory", MemoryGenerator()), ("small", ...), ("large", ...)]))
            model.fit(docs, translations, val_docs, val_translations)
            model.distill(traffic, X_val=val_docs, references_val=val_translations)
        """
        self.check_trainable()
        if (X_val is None) != (references_val is None):
            raise DataError("distill needs both the validation documents and their references, or neither")
        val = (None, None)
        if X_val is not None:
            val = self._aligned(*self._documents(X_val, references_val, "validation"), "validation")
        run, problems, _ = self._run(X_pool)
        if not run.parts:
            raise DataError("no document of the pool has text to cut into parts")
        index = {name: s for s, name in enumerate(self.shunt_.stage_names())} | {LEARNABLE: 0}
        stage = np.array([index.get(route, -1) for route in run.routes])  # a fallback: -1
        stage[run.held] = -1  # kept only because the budget ran out: not a confident answer
        routed = pd.DataFrame(
            {"text": pd.Series(run.texts, dtype=object), "stage": stage, "confidence": run.confidence}
        )
        self.shunt_.distill(
            run.parts,
            min_confidence=min_confidence,
            epochs=epochs,
            X_val=val[0],
            references_val=val[1],
            routed=routed,
        )
        self.distillation_ = self.shunt_.distillation_ | {"n_documents": sum(p is None for p in problems)}
        return self

    def generate(self, X) -> list[str]:
        """Each document's text; raises if one got none (use :meth:`route` for a per-row flag)."""
        table = self.route(X)
        missing = table["text"].isna().to_numpy()
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise LargeModelError(f"{int(missing.sum())} documents lack a text (row {i}: {table['flag'].iloc[i]})")
        return table["text"].tolist()

    def score(self, X, references) -> float:
        """Corpus quality of the joined texts against whole-document references (the shunt's metric)."""
        return get_metric(self.shunt_.metric).corpus(self.route(X)["text"].tolist(), list(references))


@dataclass
class _Parts:
    """The parts of a batch of documents and what each has got so far."""

    owner: np.ndarray  #: each part's document
    pieces: list  #: each part's (text, separator after it)
    n_docs: int

    def __post_init__(self):
        n = len(self.pieces)
        self.parts = [p for p, _ in self.pieces]
        self.texts = np.full(n, None, dtype=object)
        self.routes = np.full(n, "", dtype=object)
        self.confidence = np.full(n, np.nan)  # the last stage's, where it answered (a joint answer's for each part)
        self.cost = np.zeros(n)  # paid, every stage's
        self.price = np.zeros(n)  # the last stage's, as if uncached
        self.large = {k: np.zeros(n, int) for k in TOKENS}  # the last stage's tokens
        self.small = {k: np.zeros(n, int) for k in TOKENS}  # the earlier stages'
        self.calls = np.zeros(self.n_docs, int)  # last-stage calls per document
        self.cached = np.zeros(self.n_docs, int)  # of those, answered from the call cache
        self.failed = np.zeros(self.n_docs, int)  # of those, failed (an error, a time-out, no answer)
        self.held = np.zeros(n, bool)  # open parts the budget left to the small side
        self.flags = [[] for _ in range(self.n_docs)]

    @classmethod
    def cut(cls, docs: list, problems: list, unit: str) -> "_Parts":
        owner, pieces = [], []
        for d, doc in enumerate(docs):
            for piece in split(doc, unit) if problems[d] is None else []:
                owner.append(d)
                pieces.append(piece)
        return cls(np.asarray(owner, dtype=int), pieces, len(docs))

    def settle(self, first: pd.DataFrame, shunt) -> None:
        """Take what the first stages settled (``first``: :meth:`Engine.first_stages` of the parts)."""
        names, stage = shunt.stage_names(), first[f"{PARTIAL}stage"].to_numpy(int)
        settled = ~first[f"{PARTIAL}open"].to_numpy(bool)
        self.routes[settled & (stage < 0)] = INVALID  # no stage could take it: no text, flagged by its document
        settled &= stage >= 0
        self.texts[settled] = first[f"{PARTIAL}answer"].to_numpy()[settled]
        self.routes[settled] = [names[s] for s in stage[settled]]
        self.routes[settled & (stage == 0) & first[f"{PARTIAL}0_learnable"].to_numpy(bool)] = LEARNABLE
        for s in range(len(names) - 1):
            self.cost += first[f"{PARTIAL}{s}_cost"].to_numpy(float)
            for k in TOKENS:
                self.small[k] += first[f"{PARTIAL}{s}_{k}"].to_numpy(int)

    def hold(self, rows, first: pd.DataFrame, names: list) -> None:
        """The open parts no budget was left for keep the latest text an earlier stage wrote."""
        self.held[rows] = True
        for s in range(len(names) - 2, -1, -1):
            text = first[f"{PARTIAL}{s}_text"].to_numpy()
            empty = [i for i in rows if self.texts[i] is None and text[i] is not None]
            self.texts[empty], self.routes[empty] = text[empty], names[s]
        copied = first[f"{PARTIAL}0_learnable"].to_numpy(bool)
        self.routes[[i for i in rows if self.routes[i] == names[0] and copied[i]]] = LEARNABLE

    def _per_doc(self, values, kind=int) -> np.ndarray:
        out = np.zeros(self.n_docs, dtype=kind)
        np.add.at(out, self.owner, values)
        return out

    def table(self, problems: list, last: str) -> pd.DataFrame:
        text, routes = np.full(self.n_docs, None, dtype=object), []
        route = np.where(self.calls > 0, LARGE, SMALL).astype(object)  # object: room for INVALID
        for d in range(self.n_docs):
            rows = np.flatnonzero(self.owner == d)
            routes.append(self.routes[rows].tolist())
            if problems[d] is not None or not len(rows):
                route[d] = INVALID
                self.flags[d].insert(0, f"{problems[d]}; not sent" if problems[d] else "no text to cut into parts")
            elif any(self.texts[i] is None for i in rows):
                self.flags[d].append("a part got no answer")
            else:
                text[d] = join(list(self.texts[rows]), [self.pieces[i][1] for i in rows])
        return pd.DataFrame(
            {
                "text": pd.Series(text, dtype=object),
                "route": route,
                "parts": self._per_doc(np.ones(len(self.owner), int)),
                "large_parts": self._per_doc((self.routes == last).astype(int)),
                "held_back": self._per_doc(self.held.astype(int)),
                "large_calls": self.calls,
                "cached_calls": self.cached,
                "failed_calls": self.failed,
                "large_prompt_tokens": self._per_doc(self.large["prompt_tokens"]),
                "large_completion_tokens": self._per_doc(self.large["completion_tokens"]),
                **{k: self._per_doc(self.large[k] + self.small[k]) for k in TOKENS},
                "cost": self._per_doc(self.cost, float),
                "routes": routes,
                "flag": ["; ".join(f) or None for f in self.flags],
            }
        )


def _price(value) -> float:
    """The last stage's mean price of an answer on validation (``calibration_["stage_price"]``), 0 when unknown."""
    last = value[-1] if isinstance(value, list) and value else None
    return float(last) if isinstance(last, Real) and not isinstance(last, bool) and last >= 0 else 0.0


def _texts(values, what: str) -> list:
    values = list(values) if isinstance(values, list | tuple | np.ndarray | pd.Series) else None
    if values is None:
        raise DataError(f"{what} must be a list of strings")
    bad = [i for i, v in enumerate(values) if not (isinstance(v, str) and v.strip())]
    if bad:
        raise DataError(f"{what}: {len(bad)} are not non-blank strings (rows {bad[:5]})")
    return values


def _checked(X) -> tuple[list, list]:
    """The documents and, per document, why it cannot be routed (None when it can)."""
    if not isinstance(X, list | tuple | np.ndarray | pd.Series):
        raise DataError(f"documents must be a list of strings, got {type(X).__name__}")
    docs = list(X)
    return [d if isinstance(d, str) else "" for d in docs], [_problem(d) for d in docs]


def _problem(doc) -> str | None:
    """Why a document cannot be cut and sent (None when it can)."""
    if not isinstance(doc, str):
        return f"not text ({type(doc).__name__})"
    bad = lone_surrogate(doc)
    return f"not valid Unicode: {bad}" if bad else None


def _joined(context: list, rows) -> str | None:
    lines = list(dict.fromkeys(c for c in (context[i] for i in rows) if c))
    return "\n".join(lines) or None


def _numbered(lines: list) -> str:
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))


def _read_numbered(text, k: int) -> list | None:
    """The answers to lines 1..k of a numbered reply, or None if any is missing, doubled or empty."""
    if not isinstance(text, str):
        return None
    found = {}
    for line in text.splitlines():
        match = _NUMBERED.match(line)
        if match and match.group(2):
            number = int(match.group(1))
            if number in found or not 1 <= number <= k:
                return None
            found[number] = match.group(2)
    return [found[i] for i in range(1, k + 1)] if len(found) == k else None
