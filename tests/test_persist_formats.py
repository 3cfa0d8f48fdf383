"""One save format for every face; folders written in the older format (format 1) still load, under the same checks.

``_save_format_1`` writes exactly what ``save`` wrote before format 2: ``shunt.json``, ``small.skops``,
``learnable.skops`` and ``large_state.npz`` for a shunt; ``cascade.json`` or ``generator.json`` and
``stage_{i}.skops`` / ``stage_{i}_state.npz`` for the others; ``sweep.csv``.
"""

import json

import numpy as np
import pandas as pd
import pytest
import skops.io
from fakes import FakeOpenAIServer
from sklearn.frozen import FrozenEstimator
from test_security import _call, _inject

from datashunt import Cascade, ShuntClassifier, ShuntGenerator
from datashunt.backends import backend_name
from datashunt.backends.base import Backend
from datashunt.backends.generate import generator_name
from datashunt.backends.generate.openai_chat import OpenAIChatGenerator
from datashunt.backends.openai_chat import OpenAIChatModel
from datashunt.backends.prompt import Prompt
from datashunt.backends.replay import ReplayModel
from datashunt.exceptions import ConfigError, ModelFileError
from datashunt.io.checks import saved_threshold
from datashunt.io.persist import _large_options, load, save, saved_kind
from datashunt.small import make_small

OLD_SWEEP = {"threshold_1": "threshold", "last_rate": "large_rate", "n_last": "n_large"}  # a shunt's, before


def _plain(value):
    return value.item() if isinstance(value, np.generic) else str(value)


def _save_format_1(model, folder):
    """``model`` as the ``save`` of format 1 wrote it."""
    folder.mkdir(parents=True)
    params = {k: v for k, v in model.get_params(deep=False).items() if k not in ("small", "large", "stages")}
    params["modality"] = model.modality_
    meta = {"format": 1, "datashunt_version": "0.1.0", "params": params, "calibration": model.calibration_}
    sweep = model.sweep_
    if isinstance(model, ShuntClassifier):
        name = "shunt.json"
        meta |= {
            "classes": model.classes_.tolist(),
            "threshold": saved_threshold(model.threshold_),
            "class_report": model.class_report_.to_dict("list"),
            "distillation": getattr(model, "distillation_", None),
            "large": {"backend": backend_name(model.large_), "options": _large_options(model.large_)},
        }
        skops.io.dump(model.small_, folder / "small.skops")
        if getattr(model, "learnable_", None) is not None:
            skops.io.dump(model.learnable_, folder / "learnable.skops")
        if model.large_.fitted_state() is not None:
            np.savez(folder / "large_state.npz", **model.large_.fitted_state())
        sweep = None if sweep is None else sweep.rename(columns=OLD_SWEEP)
    else:
        cascade = isinstance(model, Cascade)
        name, stages = ("cascade.json" if cascade else "generator.json"), []
        for i, (stage, part) in enumerate(model.stages_):
            if isinstance(part, Backend):
                registry = backend_name(part) if cascade else generator_name(part)
                kind = "large" if cascade else "backend"
                stages.append({"name": stage, "kind": kind, "backend": registry, "options": _large_options(part)})
                if part.fitted_state() is not None:
                    np.savez(folder / f"stage_{i}_state.npz", **part.fitted_state())
            else:
                skops.io.dump(getattr(part, "estimator", part), folder / f"stage_{i}.skops")
                stages.append({"name": stage, "kind": "classifier" if cascade else "trainable"})
        thresholds = [np.vectorize(saved_threshold, otypes=[float])(t).tolist() for t in model.thresholds_]
        meta |= {"stages": stages, "thresholds": thresholds}
        if cascade:
            meta["classes"] = model.classes_.tolist()
    (folder / name).write_text(json.dumps(meta, indent=2, default=_plain))
    if sweep is not None:
        sweep.to_csv(folder / "sweep.csv", index=False)
    return folder


def _tamper(path, edit):
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.fixture
def answers(tmp_path, sentiment):
    texts, labels = sentiment
    path = tmp_path / "answers.csv"
    pd.DataFrame({"id": texts, "prediction": labels, "conf": 0.9}).to_csv(path, index=False)
    return path


@pytest.fixture
def shunt(answers, sentiment):
    texts, labels = sentiment
    large = ReplayModel(str(answers), price={"per_call": 0.5})
    return ShuntClassifier(make_small("tfidf"), large, random_state=0).fit(texts[:400], labels[:400])


@pytest.fixture
def cascade(answers, sentiment):
    texts, labels = sentiment
    small = FrozenEstimator(make_small("tfidf").fit(texts[:200], labels[:200]))
    replay = ReplayModel(str(answers), confidence_column="conf", price={"per_call": 0.01})
    return Cascade([("small", small), ("recorded", replay)], per_class=True, random_state=0).fit(
        texts[200:400], labels[200:400]
    )


ITEMS = [f"item {c}" for c in "abcdefghijklmnopqrst"]


@pytest.fixture
def servers():
    """A first stage right and sure on every other item, and a last stage right and sure on all of them
    (OpenAI-compatible, on loopback)."""
    small = {x: [(f"Ding {x[-1]}", -0.05)] if i % 2 else [(f"Dong {x[-1]}", -2.0)] for i, x in enumerate(ITEMS)}
    large = {x: [(f"Ding {x[-1]}", -0.01)] for x in ITEMS}
    with FakeOpenAIServer(small, sequence=True) as first, FakeOpenAIServer(large, sequence=True) as last:
        yield first, last


@pytest.fixture
def generator(servers):
    first, last = servers
    stages = [
        ("small", OpenAIChatGenerator("tiny", base_url=first.base_url, instruction="Translate.", shots=1)),
        ("large", OpenAIChatGenerator("big", base_url=last.base_url, instruction="Translate.")),
    ]
    references = [f"Ding {x[-1]}" for x in ITEMS]
    return ShuntGenerator(stages, metric="exact_match", random_state=0).fit(
        ITEMS, references, X_val=ITEMS, references_val=references
    )


# -- format 2: one file layout for every face ------------------------------------------------------
def test_every_face_saves_one_format_with_stage_files_by_position(shunt, cascade, generator, tmp_path):
    labels = ["negative", "positive"]
    for model, classes, learned, files in [
        (shunt, labels, ["class_report", "distillation"], ["stage_0.skops"]),
        (cascade, labels, ["distillation"], ["stage_0.skops"]),
        (generator, None, ["distillation"], ["stage_0_state.npz"]),  # the first stage's retrieved examples
    ]:
        folder = save(model, tmp_path / type(model).__name__)
        meta = json.loads((folder / "model.json").read_text())
        assert meta["format"] == 2 and meta["kind"] == type(model).__name__ == saved_kind(folder)
        assert meta["classes"] == classes and len(meta["thresholds"]) == len(meta["stages"]) - 1
        assert [s["name"] for s in meta["stages"]] == model.stage_names() and sorted(meta["learned"]) == learned
        files += ["model.json"] + (["sweep.csv"] if model.sweep_ is not None else [])
        assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    assert saved_kind(tmp_path / "nowhere") is None


def test_saving_over_an_older_folder_leaves_one_format(shunt, answers, sentiment, tmp_path):
    texts, _ = sentiment
    folder = _save_format_1(shunt, tmp_path / "model")
    (folder / "learnable.skops").write_bytes((folder / "small.skops").read_bytes())
    save(shunt, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "stage_0.skops", "sweep.csv"]
    loaded = load(folder, large_options={"table": str(answers)})
    pd.testing.assert_frame_equal(loaded.route(texts[400:]), shunt.route(texts[400:]))


def test_a_generators_2cd_copy_survives_save_and_load(tmp_path):
    pytest.importorskip("torch")
    from test_captioner import SETTINGS, make_shapes, references

    from datashunt.small.captioner import CaptionerGenerator

    X, truth = make_shapes(48, seed=0)
    refs = references(truth)
    stages = [
        ("small", CaptionerGenerator(**{**SETTINGS, "epochs": 1})),
        ("large", CaptionerGenerator(**{**SETTINGS, "epochs": 2})),
    ]
    shunt = ShuntGenerator(stages, thresholds=[0.3], metric="bleu1").fit(X[:32], refs[:32])
    shunt.distill(X[32:], min_confidence=0.0, epochs=1)
    folder = save(shunt, tmp_path / "model")
    assert (folder / "learnable.skops").is_file()
    loaded = load(folder)
    assert loaded.learnable_ is not None and loaded.distillation_ == shunt.distillation_
    pd.testing.assert_frame_equal(loaded.route(X[32:]), shunt.route(X[32:]))
    (folder / "learnable.skops").write_bytes((folder / "stage_0.skops").read_bytes())
    _inject(folder / "learnable.skops", _call("builtins", "eval", ["1"]))
    with pytest.raises(
        ModelFileError, match=r"learnable.skops contains types that are not trusted: \['builtins.eval'\]"
    ):
        load(folder)
    skops.io.dump(make_small("tfidf"), folder / "learnable.skops")
    with pytest.raises(ModelFileError, match="learnable.skops does not hold a fitted generator"):
        load(folder)


# -- format 1: older folders load, route and are refused as before -----------------------------------
def test_an_older_shunt_folder_loads_and_routes_like_the_original(shunt, answers, sentiment, tmp_path):
    texts, labels = sentiment
    shunt.distill(texts[400:], X_train=texts[:400], y_train=labels[:400])
    folder = _save_format_1(shunt, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["learnable.skops", "shunt.json", "small.skops", "sweep.csv"]
    assert saved_kind(folder) == "ShuntClassifier"
    loaded = load(folder, large_options={"table": str(answers)})
    pd.testing.assert_frame_equal(loaded.route(texts[400:]), shunt.route(texts[400:]))
    assert loaded.threshold_ == shunt.threshold_ and loaded.distillation_ == shunt.distillation_
    pd.testing.assert_frame_equal(loaded.sweep_, shunt.sweep_)  # read under today's column names
    pd.testing.assert_frame_equal(loaded.class_report_, shunt.class_report_)


def test_an_older_cascade_folder_loads_and_routes_like_the_original(cascade, answers, sentiment, tmp_path):
    texts, _ = sentiment
    folder = _save_format_1(cascade, tmp_path / "model")
    assert saved_kind(folder) == "Cascade"
    loaded = load(folder, large_options={"recorded": {"table": str(answers)}})
    pd.testing.assert_frame_equal(loaded.route(texts[400:]), cascade.route(texts[400:]))
    assert np.shape(loaded.thresholds_[0]) == (2,) and loaded.calibration_ == cascade.calibration_


def test_an_older_generator_folder_loads_and_routes_like_the_original(generator, tmp_path):
    folder = _save_format_1(generator, tmp_path / "model")
    assert (folder / "stage_0_state.npz").is_file() and saved_kind(folder) == "ShuntGenerator"
    with pytest.raises(ConfigError, match="takes where its calls go only from you"):
        load(folder)
    loaded = load(folder, trust_saved_locations=True)
    table = generator.route(ITEMS)
    assert set(table["route"]) == {"small", "large"}
    pd.testing.assert_frame_equal(loaded.route(ITEMS), table)
    pd.testing.assert_frame_equal(loaded.sweep_, generator.sweep_)


@pytest.fixture
def older_folder(tmp_path, sentiment):
    """An older shunt folder whose large model is an OpenAI-compatible endpoint on loopback."""
    texts, labels = sentiment
    large = OpenAIChatModel("tiny", base_url="http://127.0.0.1:9/v1", api_key_env="TEST_KEY", prompt=Prompt("Good?"))
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.7, random_state=0).fit(texts[:400], labels[:400])
    return _save_format_1(shunt, tmp_path / "older")


MINE = {"model": "tiny", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "TEST_KEY"}


def test_an_older_folder_with_an_untrusted_type_is_refused(older_folder, tmp_path):
    marker = tmp_path / "pwned"
    _inject(older_folder / "small.skops", _call("os", "system", [f"touch {marker}"]))
    with pytest.raises(ModelFileError, match=r"small.skops contains types that are not trusted: \['os.system'\]"):
        load(older_folder, large_options=MINE)
    assert not marker.exists()


def test_an_older_folder_cannot_choose_the_endpoint(older_folder):
    _tamper(older_folder / "shunt.json", lambda m: m["large"]["options"].update(base_url="http://attacker.example/v1"))
    with pytest.raises(
        ConfigError, match=r"shunt.json says its large model uses model='tiny', base_url='http://attacker.example/v1'"
    ):
        load(older_folder)
    assert load(older_folder, large_options=MINE).large_.base_url == "http://127.0.0.1:9/v1"
    assert load(older_folder, trust_saved_locations=True).large_.base_url == "http://attacker.example/v1"


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda m: m["params"].update(label_names={"positive": "negative", "negative": "positive"}),
            "shunt.json: label_names gives class 'negative' the word 'positive', the name of class 'positive'",
        ),
        (
            lambda m: m["large"].update(command="x"),
            r"shunt.json: missing key\(s\) \[\], unknown key\(s\) \['large.command'\]",
        ),
        (lambda m: m.update(threshold=1.5), r"shunt.json: thresholds must be 1 numbers, each within \[0, 1\]"),
        (lambda m: m.update(format=2), "shunt.json: unsupported format 2"),
        (
            lambda m: m["classes"].reverse() or m["class_report"]["class"].reverse(),
            r"classes \['positive', 'negative'\] differ from the small model's \['negative', 'positive'\]",
        ),
    ],
)
def test_a_tampered_older_folder_is_refused_as_before(older_folder, edit, message):
    _tamper(older_folder / "shunt.json", edit)
    with pytest.raises(ModelFileError, match=message):
        load(older_folder, large_options=MINE)


def test_a_tampered_older_cascade_folder_is_refused_as_before(cascade, answers, tmp_path):
    folder = _save_format_1(cascade, tmp_path / "model")
    _tamper(folder / "cascade.json", lambda m: m["stages"][0].update(kind="trainable"))
    with pytest.raises(
        ModelFileError, match="stages\\[0\\] must be a classifier or a large model, got kind 'trainable'"
    ):
        load(folder, large_options={"recorded": {"table": str(answers)}})


MINE_TINY = {"model": "tiny", "base_url": "http://127.0.0.1:9/v1"}


def test_a_shunts_retrieved_examples_survive_save_and_load_and_come_from_the_training_items(tmp_path):
    texts = [f"{w} package number {i}" for i, w in enumerate(["game", "editor", "daemon", "viewer"] * 10)]
    y = ["games", "editors", "admin", "graphics"] * 10
    large = OpenAIChatModel("tiny", base_url="http://127.0.0.1:9/v1", shots=2)
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.5).fit(texts[:30], y[:30], texts[30:], y[30:])
    assert sorted(shunt.large_.memory_.texts_) == sorted(texts[:30])  # never the calibration items
    folder = save(shunt, tmp_path / "model")
    assert (folder / "stage_1_state.npz").is_file()
    loaded = load(folder, large_options=MINE_TINY)
    probe = ["game package number 99"]
    assert loaded.large_._examples(probe, [None]) == shunt.large_._examples(probe, [None])
    assert loaded.large_._examples(probe, [None])[0][-1] == ("game package number 0", "games")
    (folder / "stage_1_state.npz").unlink()
    with pytest.raises(ModelFileError, match="stage_1_state.npz is missing"):
        load(folder, large_options=MINE_TINY)


def test_a_tampered_example_memory_is_refused_with_its_reason(tmp_path):
    texts = [f"{w} package number {i}" for i, w in enumerate(["game", "editor"] * 10)]
    large = OpenAIChatModel("tiny", base_url="http://127.0.0.1:9/v1", shots=1)
    shunt = ShuntClassifier(make_small("tfidf"), large, threshold=0.5).fit(texts, ["games", "editors"] * 10)
    folder = save(shunt, tmp_path / "model")
    np.savez(folder / "stage_1_state.npz", example_texts=np.arange(3), example_answers=np.array(["a", "b"]))
    with pytest.raises(ModelFileError, match="the saved example memory must be two string arrays of equal length"):
        load(folder, large_options=MINE_TINY)
