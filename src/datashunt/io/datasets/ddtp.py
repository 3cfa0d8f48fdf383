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
from ...exceptions import DataError
from .debian import paragraphs, parse_index

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
    pairs = _pairs_from_apt(lang, lists)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        pairs.to_parquet(tmp, index=False)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
