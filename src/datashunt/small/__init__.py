"""Small models: scikit-learn classifiers over texts and images, built by name.

Any classifier with ``fit``, ``predict_proba`` and ``classes_`` can be a shunt's small model;
these are the ones datashunt ships, importable by name for configuration files.
"""

import importlib

from ..exceptions import ConfigError

REGISTRY = {
    "tfidf": ("datashunt.small.tfidf", "tfidf_logreg"),
    "textcnn": ("datashunt.small.textcnn", "TextCNNClassifier"),
    "lstm": ("datashunt.small.lstm", "LSTMClassifier"),
    "minilm": ("datashunt.small.minilm", "MiniLMClassifier"),
    "resnet32": ("datashunt.small.resnet", "ResNet32Classifier"),
    "cnn": ("datashunt.small.cnn", "SmallCNNClassifier"),
}


def make_small(name: str, **params):
    """Build a small model by name: ``tfidf``, ``textcnn``, ``lstm``, ``minilm`` (texts),
    ``resnet32`` or ``cnn`` (images).

    Examples
    --------
    >>> make_small("tfidf", C=2.0).get_params()["clf__C"]
    2.0
    """
    try:
        module, attr = REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown small model {name!r}; choose one of {sorted(REGISTRY)}") from None
    factory = getattr(importlib.import_module(module), attr)
    try:
        return factory(**params)
    except TypeError as exc:
        raise ConfigError(f"bad parameters for small model {name!r}: {exc}") from None
