"""TF-IDF features and logistic regression: the fast default small model."""

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline


def tfidf_logreg(C: float = 4.0, ngram_range=(1, 2), min_df: int = 1, max_features: int | None = 200_000,
                 random_state=None) -> Pipeline:
    """Word uni- and bigram TF-IDF (sublinear) feeding a logistic regression.

    Examples
    --------
    >>> model = tfidf_logreg().fit(["good", "bad", "very good", "very bad"], [1, 0, 1, 0])
    >>> model.predict(["good"]).tolist()
    [1]
    """
    return Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=tuple(ngram_range), min_df=min_df, max_features=max_features,
                                  sublinear_tf=True, strip_accents="unicode")),
        ("clf", LogisticRegression(C=C, max_iter=2000, random_state=random_state)),
    ])
