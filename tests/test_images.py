"""Images end to end: small torch image models, the few-shot large model, routing, saving, the CLI."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from typer.testing import CliRunner  # noqa: E402

from datashunt import ShuntClassifier  # noqa: E402
from datashunt.backends import fewshot  # noqa: E402
from datashunt.backends.base import Call  # noqa: E402
from datashunt.backends.fewshot import FewShotImageModel  # noqa: E402
from datashunt.backends.vision import ImageLabelModel, prior_log_weights  # noqa: E402
from datashunt.cli import app  # noqa: E402
from datashunt.collab.pruning import soft_hint  # noqa: E402
from datashunt.eval.compare import compare, count_groups  # noqa: E402
from datashunt.exceptions import ConfigError, DataError, ModelFileError  # noqa: E402
from datashunt.io.datasets.files import load_labeled  # noqa: E402
from datashunt.io.persist import load, save  # noqa: E402
from datashunt.small import make_small  # noqa: E402
from datashunt.small.torch_image import conform  # noqa: E402

CLASSES = ["bag", "boot", "coat", "shirt"]


def squares(n_per_class, side=16, seed=0, counts=None):
    """Grey images whose class is a bright shape that flips and small shifts keep: a top band, a
    bottom band, a centre bar, or nothing but noise."""
    rng = np.random.default_rng(seed)
    counts = counts or [n_per_class] * len(CLASSES)
    images, labels = [], []
    third = side // 3
    shapes = [
        (slice(1, third + 1), slice(None)),
        (slice(side - third - 1, side - 1), slice(None)),
        (slice(None), slice(side // 2 - 2, side // 2 + 2)),
        None,
    ]
    for c, count in enumerate(counts):
        for _ in range(count):
            image = rng.integers(0, 70, size=(side, side), dtype=np.uint8)
            if shapes[c] is not None:
                image[shapes[c]] = 230
            images.append(image)
            labels.append(CLASSES[c])
    return np.stack(images), np.array(labels, dtype=object)


@pytest.fixture(scope="module")
def data():
    return squares(30, seed=0), squares(20, seed=1)


@pytest.mark.parametrize("name", ["cnn", "resnet32"])
def test_small_image_models_learn_and_keep_their_predictions_through_pickle(data, name):
    (X, y), (X_test, y_test) = data
    params = {"cnn": dict(epochs=12, width=8), "resnet32": dict(epochs=12, blocks=1, lr=0.05)}[name]
    model = make_small(name, random_state=0, **params).fit(X, y)
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(X_test), 4) and np.allclose(proba.sum(axis=1), 1)
    assert (model.predict(X_test) == y_test).mean() > 0.9
    assert model.input_shape_ == (16, 16, 1) and len(model.pixel_mean_) == 1
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(again.predict_proba(X_test), proba, atol=1e-6)
    same = make_small(name, random_state=0, **params).fit(X, y)  # seeded: the same weights
    np.testing.assert_allclose(same.predict_proba(X_test), proba, atol=1e-5)


def test_images_of_other_sizes_and_colours_are_conformed_to_the_training_shape(data):
    (X, y), _ = data
    model = make_small("cnn", epochs=2, width=4, random_state=0).fit(X, y)
    colour = np.repeat(X[:3, :, :, None], 3, axis=3)
    bigger = [conform(np.repeat(x[:, :, None], 3, axis=2), 32, 32, 3) for x in X[:3]]
    assert model.predict_proba(colour).shape == (3, 4) and model.predict_proba(bigger).shape == (3, 4)
    assert conform(np.full((2, 2, 3), 200, np.uint8), 2, 2, 1).shape == (2, 2, 1)


def test_balanced_class_weight_helps_the_rare_class_and_is_off_by_default():
    X, y = squares(0, counts=[60, 60, 60, 3], seed=2)
    X_test, y_test = squares(25, seed=3)
    plain = make_small("cnn", epochs=6, width=8, random_state=0)
    assert plain.class_weight is None
    weighted = make_small("cnn", epochs=6, width=8, random_state=0, class_weight="balanced")
    rare = y_test == "shirt"
    plain_recall = (plain.fit(X, y).predict(X_test)[rare] == "shirt").mean()
    weighted_recall = (weighted.fit(X, y).predict(X_test)[rare] == "shirt").mean()
    assert weighted_recall > plain_recall


def test_distill_moves_an_image_model_toward_the_targets(data):
    (X, y), _ = data
    model = make_small("cnn", epochs=3, width=8, batch_size=16, random_state=0).fit(X, y)
    target = np.tile([0.0, 0.0, 0.0, 1.0], (len(X), 1))
    before = model.predict_proba(X)[:, 3].mean()
    model.distill(X, target, epochs=5)
    assert model.predict_proba(X)[:, 3].mean() > before + 0.2


def test_bad_images_are_refused_by_name_in_fit(data, tmp_path):
    (X, y), _ = data
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"row 1: cannot decode image file .*broken.png"):
        make_small("cnn", epochs=1).fit([X[0], broken, X[2]], y[:3])


class FixedScores(ImageLabelModel):
    """Scores from a table: image brightness picks the row; for checking the shared image-backend logic."""

    def __init__(self, *, batch_size=2, prompt=None, price=None, cache=False, min_label_mass=0.0):
        self.batch_size, self.prompt, self.price, self.cache, self.min_label_mass = (
            batch_size,
            prompt,
            price,
            cache,
            min_label_mass,
        )

    def identity(self):
        return "fixed"

    def _label_logits(self, images, labels):
        base = {"cat": 2.0, "dog": 1.0, "fox": 0.0}
        return np.array([[base[label] + image.mean() / 255 for label in labels] for image in images])


def test_image_backends_apply_hard_and_soft_prompt_pruning_to_their_scores():
    images = [np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8), np.zeros((4, 4), np.uint8)]
    labels = ["cat", "dog", "fox"]
    plain = FixedScores().predict_proba(images, labels, modality="image").proba
    expected = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    np.testing.assert_allclose(plain[0], expected)
    hard = FixedScores().predict_proba(images, labels, candidates=[[1, 2], None, None], modality="image").proba
    assert hard[0, 0] == 0 and hard[0, 1] == pytest.approx(np.exp(1) / (np.exp(1) + 1))
    hint = soft_hint(np.array([0.05, 0.9, 0.05]), labels, [0])  # reliable on "cat": says 5%
    soft = FixedScores().predict_proba(images, labels, hints=[hint, None, None], modality="image").proba
    weighted = expected * np.exp(prior_log_weights(labels, hint.prior))
    np.testing.assert_allclose(soft[0], weighted / weighted.sum())
    assert soft[0, 0] < plain[0, 0] / 3 and np.allclose(soft[2], plain[2])
    with pytest.raises(ConfigError, match="answers about image"):
        FixedScores().predict_proba(["a text"], labels)


def test_the_few_shot_model_sees_k_images_per_class_and_saves_its_head_as_arrays(data):
    (X, y), (X_test, y_test) = data
    X_lt, y_lt = squares(0, counts=[30, 20, 9, 3], seed=4)
    model = FewShotImageModel(shots=5, image_size=32, cache=False).fit(X_lt, y_lt)
    assert model.shots_ == 3  # the rarest class has 3
    result = model.predict_proba(X_test, CLASSES, modality="image")
    assert result.ok.all() and (CLASSES_ARRAY[result.proba.argmax(1)] == y_test).mean() > 0.5
    other = FewShotImageModel(shots=5, image_size=32, random_state=1, cache=False).fit(X_lt, y_lt)
    assert other.identity() != model.identity()  # another draw of shots: other answers, another cache key
    restored = FewShotImageModel(image_size=32, cache=False).set_fitted_state(model.fitted_state())
    np.testing.assert_allclose(restored.predict_proba(X_test, CLASSES, modality="image").proba, result.proba)
    state = model.fitted_state()
    state["coef"] = state["coef"][:, :10]
    with pytest.raises(ConfigError, match="does not describe a head"):
        FewShotImageModel().set_fitted_state(state)
    unknown = model.predict_proba(X_test[:2], ["bag", "sandal"], modality="image")
    assert not unknown.ok.any() and "no examples of the label(s) ['sandal']" in unknown.error[0]


CLASSES_ARRAY = np.array(CLASSES, dtype=object)


def test_the_few_shot_weights_are_checked_before_loading(monkeypatch, data):
    (X, y), _ = data
    monkeypatch.setattr(fewshot, "WEIGHTS_SHA256", "0" * 64)
    monkeypatch.setattr(fewshot, "_network", {})
    monkeypatch.setattr(fewshot, "_features", fewshot.OrderedDict())
    with pytest.raises(ConfigError, match="not the published EfficientNet-Lite0 weights"):
        FewShotImageModel(image_size=32, cache=False).fit(X[::10], y[::10])


def test_an_image_shunt_routes_reports_by_group_and_survives_save_and_load(data, tmp_path):
    (X, y), (X_test, y_test) = data
    X_lt, y_lt = squares(0, counts=[40, 30, 10, 4], seed=5)
    shunt = ShuntClassifier(
        make_small("cnn", epochs=4, width=4, random_state=0),
        FewShotImageModel(shots=4, image_size=32, cache=tmp_path / "calls.sqlite"),
        threshold=0.6,
        random_state=0,
    ).fit(X_lt, y_lt, X_val=X, y_val=y)
    assert shunt.modality_ == "image"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but no image")
    table = shunt.route(list(X_test[:10]) + [broken])
    assert table["route"].iloc[-1] == "invalid" and "cannot decode" in table["flag"].iloc[-1]
    assert set(table["route"].iloc[:-1]) <= {"small", "large"}
    groups = count_groups(y_lt)
    assert groups == {"bag": "head", "boot": "medium", "coat": "medium", "shirt": "tail"}
    evaluation = compare(shunt, X_test, y_test, groups=groups)
    assert evaluation.per_group["group"].tolist() == ["head", "medium", "tail"]
    assert evaluation.per_group["support"].tolist() == [20, 40, 20]
    folder = save(shunt, tmp_path / "model")
    assert (folder / "stage_1_state.npz").is_file()
    loaded = load(folder, large_options={"cache": False})
    np.testing.assert_allclose(loaded.predict_proba(X_test), shunt.predict_proba(X_test), atol=1e-6)
    (folder / "stage_1_state.npz").write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(ModelFileError, match="stage_1_state.npz is corrupt"):
        load(folder)
    (folder / "stage_1_state.npz").unlink()
    with pytest.raises(ModelFileError, match="stage_1_state.npz is missing"):
        load(folder)


def write_pngs(root, X, y):
    from PIL import Image

    for i, (image, label) in enumerate(zip(X, y)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / label / f"{i}.png")


def test_the_cli_fits_a_folder_of_labelled_images_and_reports_by_group(data, tmp_path):
    (X, y), (X_test, y_test) = data
    X_lt, y_lt = squares(0, counts=[40, 30, 10, 4], seed=5)
    write_pngs(tmp_path / "train", X_lt, y_lt)
    write_pngs(tmp_path / "val", X, y)
    write_pngs(tmp_path / "test", X_test, y_test)
    (tmp_path / "new").mkdir()
    for i in range(3):
        (tmp_path / "new" / f"{i}.png").write_bytes((tmp_path / "test" / y_test[i] / f"{i}.png").read_bytes())
    (tmp_path / "new" / "broken.png").write_bytes(b"nope")
    (tmp_path / "run.toml").write_text(f"""
[data]
train = "{tmp_path / "train"}"
validation = "{tmp_path / "val"}"
test = "{tmp_path / "test"}"
groups = "count"

[small]
model = "cnn"
params = {{ epochs = 4, width = 4, random_state = 0 }}

[large]
backend = "fewshot"
shots = 4
image_size = 32
cache = "{tmp_path / "calls.sqlite"}"

[shunt]
modality = "image"
threshold = 0.6

[output]
dir = "{tmp_path / "out"}"
""")
    runner = CliRunner()
    fitted = runner.invoke(app, ["fit", str(tmp_path / "run.toml")])
    assert fitted.exit_code == 0, fitted.output
    assert "few-shot head" in fitted.output
    evaluated = runner.invoke(app, ["evaluate", str(tmp_path / "run.toml")])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [g["group"] for g in report["per_group"]] == ["head", "medium", "tail"]
    assert "by group of classes" in evaluated.output
    predicted = runner.invoke(
        app, ["predict", str(tmp_path / "run.toml"), "-i", str(tmp_path / "new"), "-o", str(tmp_path / "labels.csv")]
    )
    assert predicted.exit_code == 0, predicted.output
    labels = pd.read_csv(tmp_path / "labels.csv")
    assert labels.columns[0] == "path" and len(labels) == 4
    broken = labels[labels["path"].str.endswith("broken.png")].iloc[0]
    assert broken["route"] == "invalid" and "cannot decode" in broken["flag"]


def test_a_table_of_image_paths_resolves_relative_paths_against_the_table(tmp_path):
    (tmp_path / "img").mkdir()
    pd.DataFrame({"file": ["img/a.png", "/abs/b.png", ""], "label": ["x", "y", "x"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    items, labels = load_labeled(tmp_path / "t.csv", "file", "label", images=True)
    assert items.iloc[0] == tmp_path / "img" / "a.png" and str(items.iloc[1]) == "/abs/b.png"
    assert labels.tolist() == ["x", "y", "x"]
    with pytest.raises(DataError, match="no image files"):
        load_labeled(tmp_path / "img", "file", "label", images=True)
    with pytest.raises(DataError, match='is a folder, not a file .a folder of images needs modality = "image"'):
        load_labeled(tmp_path / "img", "file", "label")


def test_calls_carry_their_hint_for_backends_that_read_numbers():
    call = Call(0, "k", [], ["a"], [0], None, soft_hint([0.3, 0.7], ["a", "b"], [1]))
    assert call.hint.prior == {"b": 0.7} and str(call.hint).startswith("Prior knowledge")


def test_demo_images_runs_end_to_end_on_a_small_draw(tmp_path, monkeypatch):
    from datashunt.io.datasets.fashion_mnist import load_fashion_mnist

    try:
        load_fashion_mnist("test")
    except DataError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    monkeypatch.setenv("DATASHUNT_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(
        app,
        [
            "demo-images",
            "--small",
            "cnn",
            "--epochs",
            "1",
            "--n-validation",
            "3",
            "--n-test",
            "20",
            "--out",
            str(tmp_path / "report"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [g["group"] for g in report["per_group"]] == ["head", "medium", "tail"]
    assert report["calibration"]["goal"].startswith("large-call rate <= 0.7000 with probability >= 0.9")
    assert "few-shot stand-in" in report["info"]["large"] and (tmp_path / "report" / "model").is_dir()


def test_a_cascade_with_a_few_shot_stage_saves_its_head_and_2cd_rounds_take_images(data, tmp_path):
    from datashunt import Cascade
    from datashunt.collab.distill import distill_rounds

    (X, y), (X_test, y_test) = data
    X_lt, y_lt = squares(0, counts=[40, 30, 10, 4], seed=5)
    cascade = Cascade(
        [
            ("cnn", make_small("cnn", epochs=3, width=4, n_threads=1, random_state=0)),
            ("fewshot", FewShotImageModel(shots=4, image_size=32, cache=False)),
        ],
        thresholds=[0.6],
    ).fit(X_lt, y_lt)
    folder = save(cascade, tmp_path / "cascade")
    assert (folder / "stage_1_state.npz").is_file() and not (folder / "stage_0_state.npz").exists()
    loaded = load(folder, large_options={"fewshot": {"cache": False}})
    np.testing.assert_allclose(loaded.predict_proba(X_test), cascade.predict_proba(X_test), atol=1e-6)

    shunt = ShuntClassifier(
        make_small("cnn", epochs=3, width=4, n_threads=1, random_state=0),
        FewShotImageModel(shots=4, image_size=32, cache=False),
        threshold=0.9,
        random_state=0,
    ).fit(X_lt, y_lt, X_val=X, y_val=y)
    rounds = distill_rounds(
        shunt, list(X_test[::2]), 2, X_test[1::2], y_test[1::2], X_train=X_lt, y_train=y_lt, epochs=1
    )
    assert rounds["round"].tolist() == [0, 1, 2] and rounds["n_pool"].iloc[-1] == len(X_test[::2])


def test_a_bad_groups_setting_is_refused_with_what_it_takes():
    from datashunt.io.config import groups_of

    with pytest.raises(ConfigError, match='groups must be "count" or a table of group = \\[labels\\]'):
        groups_of({"data": {"groups": "by size"}})
    assert groups_of({"data": {"groups": {"rare": ["bag", "boot"]}}}) == {"bag": "rare", "boot": "rare"}
