"""Debian package synopses with their human translations (the Debian Description Translation Project).

A generation task with human references and no download beyond the distribution's own lists:
each item is a package's one-line English synopsis, its reference the translation volunteers
wrote ("Real-time strategy game of ancient warfare" -> "Echtzeit-Strategiespiel über antike
Kriegsführung"). English comes from the package index (``apt-cache dumpavail``), translations from
the ``Translation-<lang>`` lists apt fetches when asked for that language::

    apt-get -o Acquire::Languages=de update

Pairs are matched by ``Description-md5`` (the translation of exactly that English text); a synopsis
shared by several packages is kept once. The pairs are kept in the cache folder the first time they
are read (``datashunt setup`` does it), since the next ``apt-get update`` without that language
deletes apt's list.
"""

import glob
import os
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from ...backends.cache import default_cache_dir
from ...core.segments import split
from ...exceptions import DataError
from .debian import long_text, paragraphs, parse_index

LISTS = "/var/lib/apt/lists"


def parse_translations(text: str, lang: str) -> pd.DataFrame:
    """``md5`` and translated ``synopsis`` of each paragraph of a ``Translation-<lang>`` list.

    Examples
    --------
    >>> parse_translations("Package: 0ad\\nDescription-md5: d9\\nDescription-de: Strategiespiel\\n long text\\n\\n",
    ...                    "de").values.tolist()
    [['0ad', 'd9', 'Strategiespiel']]
    """
    rows = []
    for fields in paragraphs(text):
        synopsis = fields.get(f"Description-{lang}")
        if fields.get("Package") and fields.get("Description-md5") and synopsis:
            rows.append((fields["Package"], fields["Description-md5"], synopsis))
    return pd.DataFrame(rows, columns=["package", "md5", "synopsis"])


def parse_descriptions(text: str, lang: str) -> pd.DataFrame:
    r"""``package``, ``md5``, ``synopsis`` and ``long`` description (:func:`~.debian.long_text`) of
    each paragraph of a ``Translation-<lang>`` list (``en`` holds Debian's English originals).

    Examples
    --------
    >>> text = "Package: 0ad\nDescription-md5: d9\nDescription-en: Strategy game\n A game.\n .\n It is free.\n\n"
    >>> parse_descriptions(text, "en").values.tolist()
    [['0ad', 'd9', 'Strategy game', 'A game.\n\nIt is free.']]
    """
    rows = []
    for fields in paragraphs(text, continued=True):
        description = fields.get(f"Description-{lang}")
        if fields.get("Package") and fields.get("Description-md5") and description:
            rows.append(
                (fields["Package"], fields["Description-md5"], description.split("\n")[0], long_text(description))
            )
    return pd.DataFrame(rows, columns=["package", "md5", "synopsis", "long"])


def split_sentences(text: str) -> list[str]:
    r"""The sentences of a description (:func:`datashunt.core.segments.split`): every line is a
    boundary (paragraphs, list items, verbatim lines), and within a line a sentence ends at ``.``,
    ``!`` or ``?`` followed by a space and an upper-case letter, a digit or an opening quote or
    bracket (so "e.g. a" and "v1.2" stay whole).

    Examples
    --------
    >>> split_sentences("A game. It is free, e.g. for all.\n\n  * fast")
    ['A game.', 'It is free, e.g. for all.', '* fast']
    """
    return [part for part, _ in split(text)]


def documents_path(lang: str, cache_dir=None) -> Path:
    """Where the English / ``lang`` long descriptions are kept once read."""
    return pairs_path(lang, cache_dir).with_name(f"documents-{lang}.parquet")


def load_documents(lang: str = "de", lists: str = LISTS, cache_dir=None) -> pd.DataFrame:
    """Debian's English long descriptions and the ``lang`` translations volunteers wrote of exactly
    those texts (paired by ``Description-md5``): columns ``text``, ``reference``, ``package`` and
    ``n_sentences`` (of the English text, :func:`split_sentences`), sorted by package name, each
    English text once. Read from apt's ``Translation-en`` and ``Translation-<lang>`` lists once
    (``apt-get -o Acquire::Languages=en,<lang> update``), then from the copy kept in the cache folder.
    """
    return pd.read_parquet(install_documents(lang, lists, cache_dir))


def install_documents(lang: str = "de", lists: str = LISTS, cache_dir=None) -> Path:
    """Read the long descriptions from apt's lists once and keep them in the cache folder."""
    target = documents_path(lang, cache_dir)
    if not target.is_file():
        english, translated = (_descriptions(code, lists, lang) for code in ("en", lang))
        pairs = english.merge(translated[["md5", "long"]], on="md5", suffixes=("", "_translated"))
        pairs = pairs[(pairs["long"] != "") & (pairs["long_translated"] != "")]
        pairs = pairs.sort_values("package").drop_duplicates("long")
        if pairs.empty:
            raise DataError(f"no English long description matches a Translation-{lang} one; update both lists")
        frame = pd.DataFrame(
            {
                "text": pairs["long"],
                "reference": pairs["long_translated"],
                "package": pairs["package"],
                "n_sentences": [len(split_sentences(t)) for t in pairs["long"]],
            }
        )
        _keep(frame.reset_index(drop=True), target)
    return target


def documents_task(
    lang: str = "de",
    n_validation: int = 150,
    n_test: int = 150,
    random_state: int = 0,
    min_sentences: int = 3,
    max_sentences: int = 8,
    cache_dir=None,
    n_more_test: int = 0,
):
    """Train, validation and test splits of :func:`load_documents` with ``min_sentences`` to
    ``max_sentences`` English sentences, drawn at random with ``random_state``: the first
    ``n_test`` of a shuffled order are test data, the next ``n_validation`` validation data, the
    rest training data. ``n_more_test`` more test documents come from the end of that order (out
    of the training data), so a test set grows without moving the validation split."""
    docs = load_documents(lang, cache_dir=cache_dir)
    docs = docs[docs["n_sentences"].between(min_sentences, max_sentences)]
    if n_validation + n_test + n_more_test >= len(docs):
        raise DataError(
            f"{len(docs)} documents cannot give {n_validation} validation and {n_test + n_more_test} test items"
        )
    order = docs.sample(frac=1.0, random_state=random_state).index
    end = len(order) - n_more_test
    test = order[:n_test].append(order[end:])
    val, train = order[n_test : n_test + n_validation], order[n_test + n_validation : end]
    return tuple(docs.loc[idx].reset_index(drop=True) for idx in (train, val, test))


def _descriptions(lang: str, lists: str, target: str) -> pd.DataFrame:
    """The descriptions of apt's ``Translation-<lang>`` lists (``target``: the language paired with English)."""
    paths = sorted(glob.glob(f"{lists}/*_i18n_Translation-{lang}*"))
    if not paths:
        raise DataError(
            f"no Translation-{lang} list under {lists}; run (as root): apt-get -o Acquire::Languages=en,{target} update"
        )
    return pd.concat([parse_descriptions(_read_list(p), lang) for p in paths]).drop_duplicates("md5")


def _keep(frame: pd.DataFrame, target: Path) -> None:
    """Write ``frame`` to ``target`` as parquet, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_list(path: str) -> str:
    try:  # apt's own helper reads every compression apt writes (lz4, gz, xz, plain)
        done = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DataError(f"cannot read {path} ({exc}); this data set needs Debian's apt") from None
    return done.stdout.decode("utf-8", "replace")


def pairs_path(lang: str, cache_dir=None) -> Path:
    """Where the ``lang`` pairs are kept once read."""
    if not (isinstance(lang, str) and lang.replace("_", "").isalnum()):
        raise DataError(f"a language code such as 'de' or 'pt_BR', got {lang!r}")
    return Path(cache_dir or default_cache_dir()) / "data" / "ddtp" / f"pairs-{lang}.parquet"


def install_ddtp(lang: str = "de", lists: str = LISTS, cache_dir=None) -> Path:
    """Read the pairs from apt's lists once and keep them in the cache folder (written atomically)."""
    target = pairs_path(lang, cache_dir)
    if target.is_file():
        return target
    _keep(_pairs_from_apt(lang, lists), target)
    return target


def load_ddtp(lang: str = "de", lists: str = LISTS, cache_dir=None) -> pd.DataFrame:
    """English synopses and their ``lang`` translations: columns ``text``, ``reference``, ``package``,
    sorted by package name: the kept copy, else apt's lists (then kept).

    Raises :class:`~datashunt.exceptions.DataError` naming the apt command when neither exists.
    """
    return pd.read_parquet(install_ddtp(lang, lists, cache_dir))


def _pairs_from_apt(lang: str, lists: str) -> pd.DataFrame:
    paths = sorted(glob.glob(f"{lists}/*_i18n_Translation-{lang}*"))
    if not paths:
        raise DataError(
            f"no Translation-{lang} list under {lists}; run (as root): apt-get -o Acquire::Languages={lang} update"
        )
    translated = pd.concat([parse_translations(_read_list(p), lang) for p in paths]).drop_duplicates("md5")
    try:
        done = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DataError(f"apt-cache dumpavail failed ({exc}); this data set needs Debian's apt") from None
    english = parse_index(done.stdout, extra=("Description-md5",)).rename(columns={"Description-md5": "md5"})
    pairs = english.drop(columns="section").merge(translated.drop(columns="package"), on="md5")
    pairs = pairs.sort_values("package").drop_duplicates("text").rename(columns={"synopsis": "reference"})
    if pairs.empty:
        raise DataError(
            f"no English synopsis in the package index matches a Translation-{lang} entry; "
            "run apt-get update so both lists are from the same release"
        )
    return pairs.reset_index(drop=True)[["text", "reference", "package"]]


def translation_task(
    lang: str = "de", n_validation: int = 200, n_test: int = 300, random_state: int = 0, cache_dir=None
):
    """Train, validation and test splits of :func:`load_ddtp` (frames with ``text`` and ``reference``),
    drawn at random with ``random_state``; the training pairs are everything else."""
    pairs = load_ddtp(lang, cache_dir=cache_dir)
    if n_validation + n_test >= len(pairs):
        raise DataError(
            f"{len(pairs)} pairs cannot give {n_validation} validation and {n_test} test items "
            "and leave some to train on"
        )
    order = pairs.sample(frac=1.0, random_state=random_state).index
    test, val = order[:n_test], order[n_test : n_test + n_validation]
    train = order[n_test + n_validation :]
    return tuple(pairs.loc[idx].reset_index(drop=True) for idx in (train, val, test))


LANGUAGES = {
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt_BR": "Brazilian Portuguese",
    "ru": "Russian",
    "nl": "Dutch",
    "ja": "Japanese",
    "zh_CN": "Simplified Chinese",
}


def translation_instruction(lang: str = "de") -> str:
    """The instruction a prompted model gets for this task.

    Examples
    --------
    >>> translation_instruction("de")
    'Translate this Debian package synopsis from English into German. Answer with the German translation only.'
    """
    language = LANGUAGES.get(lang, lang)
    return (
        f"Translate this Debian package synopsis from English into {language}. Answer with the {language} "
        "translation only."
    )
