"""The VADER ground-truth sentences (Hutto & Gilbert 2014, MIT licence), from the vaderSentiment sdist.

Each sentence carries the mean of human ratings on -4..4. Binary labels come from its sign;
near-neutral sentences (|score| < ``min_abs_score``) are dropped.
"""

import io
import tarfile
import tempfile
from pathlib import Path

import pandas as pd

from ...backends.cache import default_cache_dir
from ...exceptions import ConfigError, DataError
from ..fetch import check_sha256, pip_download

SDIST = "vadersentiment==3.3.2"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
CORPORA = {
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}


def data_dir(cache_dir=None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "data" / "vader"


def install_vader(cache_dir=None) -> Path:
    """Fetch the sdist once (pip), check its sha256 and unpack the ground-truth files."""
    target = data_dir(cache_dir)
    if all((target / name).is_file() for name in CORPORA.values()):
        return target
    with tempfile.TemporaryDirectory() as tmp:
        blob = pip_download([SDIST], tmp, sdist=True, error=DataError)[0].read_bytes()
    check_sha256(blob, SDIST_SHA256, SDIST, error=DataError)
    with tarfile.open(fileobj=io.BytesIO(blob)) as outer:
        inner_name = next(m for m in outer.getnames() if m.endswith("hutto_ICWSM_2014.tar.gz"))
        inner_blob = outer.extractfile(inner_name).read()
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(inner_blob)) as inner:
        for member in inner.getmembers():
            name = Path(member.name).name
            if name in CORPORA.values():
                (target / name).write_bytes(inner.extractfile(member).read())
    return target


def load_vader(corpus: str = "movies", min_abs_score: float = 0.5, cache_dir=None) -> pd.DataFrame:
    """Sentences with columns ``text``, ``score`` and ``label`` ("positive" / "negative").

    ``movies`` holds 10,605 Rotten Tomatoes snippets (10,072 kept at the default cut);
    ``amazon``, ``tweets`` and ``nyt`` are VADER's other ground-truth sets.
    """
    if corpus not in CORPORA:
        raise ConfigError(f"unknown VADER corpus {corpus!r}; choose one of {sorted(CORPORA)}")
    path = install_vader(cache_dir) / CORPORA[corpus]
    rows = []
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    for line in text.splitlines():
        parts = line.strip().split("\t")
        if len(parts) >= 3:
            rows.append((float(parts[1]), "\t".join(parts[2:]).strip()))
    frame = pd.DataFrame(rows, columns=["score", "text"])
    frame = frame[(frame["score"].abs() >= min_abs_score) & (frame["text"].str.len() > 0)]
    frame["label"] = ["positive" if s > 0 else "negative" for s in frame["score"]]
    return frame.reset_index(drop=True)[["text", "score", "label"]]
