import numpy as np
import pytest
from fakes import FakeLargeModel


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder; nothing touches the user's."""
    monkeypatch.setenv("DATASHUNT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def sentiment():
    """A small synthetic sentiment set: clear items and ambiguous ones the small model is unsure of."""
    rng = np.random.default_rng(0)
    pos, neg, mid = (
        ["great", "superb", "lovely", "brilliant"],
        ["awful", "dull", "boring", "terrible"],
        ["okay", "fine", "so-so"],
    )
    texts, labels = [], []
    for i in range(600):
        label = "positive" if i % 2 else "negative"
        words = pos if label == "positive" else neg
        if i % 5 == 0:  # ambiguous: only neutral words, the label is known to the large model
            text = f"{rng.choice(mid)} {rng.choice(mid)} movie {i}"
        else:
            text = f"{rng.choice(words)} {rng.choice(words)} movie {i}"
        texts.append(text)
        labels.append(label)
    return texts, labels


@pytest.fixture
def oracle(sentiment):
    texts, labels = sentiment
    return FakeLargeModel(dict(zip(texts, labels)), accuracy=0.97)
