"""Modalities: texts, feature rows and images checked, keyed and prompted in one place."""

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from fakes import FakeLargeModel, FakeOpenAIServer
from PIL import Image as PILImage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from datashunt import Cascade, ShuntClassifier
from datashunt.backends.openai_chat import OpenAIChatModel
from datashunt.backends.replay import ReplayModel
from datashunt.exceptions import ConfigError, DataError
from datashunt.io.persist import load, save
from datashunt.modalities import as_inputs, get_modality
from datashunt.modalities.image import Image
from datashunt.small import make_small


def test_modality_auto_recognises_texts_rows_and_images():
    assert get_modality("auto", ["a", None]).name == "text"
    assert get_modality("auto", pd.DataFrame({"a": [1], "b": [2]})).name == "rows"
    assert get_modality("auto", np.zeros((4, 3))).name == "rows"
    assert get_modality("auto", np.zeros((4, 8, 8, 3), np.uint8)).name == "image"
    assert get_modality("auto", [PILImage.new("RGB", (4, 4))]).name == "image"
    with pytest.raises(ConfigError, match="unknown modality 'audio'"):
        get_modality("audio")


def test_image_problems_are_flagged_per_item_not_raised(tmp_path):
    good = tmp_path / "good.png"
    PILImage.new("RGB", (5, 4), (10, 20, 30)).save(good)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    PILImage.new("F", (3, 3)).save(tmp_path / "deep.tiff")
    items = [
        str(good),
        tmp_path / "broken.png",
        str(tmp_path / "missing.jpg"),
        str(tmp_path / "deep.tiff"),
        np.zeros((4, 4, 5)),
        np.array([["a"]]),
        None,
        3,
        np.zeros((0, 4)),
    ]
    batch = as_inputs(items, "image")
    assert batch.items[0].shape == (4, 5, 3) and batch.items[0][0, 0].tolist() == [10, 20, 30]
    problems = batch.problems
    assert problems[0] is None
    assert problems[1].startswith(f"cannot decode image file {tmp_path / 'broken.png'}")
    assert problems[2] == f"no such image file: {tmp_path / 'missing.jpg'}"
    assert problems[3].startswith("unsupported image mode 'F'")
    assert problems[4] == "an image array has shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got (4, 4, 5)"
    assert problems[5] == "image pixels must be numbers, got dtype <U1"
    assert problems[6] == "missing image (None/NaN)"
    assert problems[7].startswith("not an image (int)")
    assert problems[8] == "empty image (shape (0, 4, 1))"


def test_image_forms_become_one_uint8_form_and_keys_follow_content(tmp_path):
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    path = tmp_path / "x.png"
    PILImage.fromarray(pixels).save(path)
    rgba = np.dstack([pixels, np.full((4, 4), 7, np.uint8)])
    batch = as_inputs([pixels, pixels / 255.0, PILImage.fromarray(pixels), str(path), rgba], "image")
    keys = {Image().key(item) for item in batch.items}
    assert len(keys) == 1  # array, floats in [0, 1], PIL image, file and RGBA all hold the same picture
    other = as_inputs([pixels[::-1]], "image").items[0]
    assert Image().key(other) not in keys
    grey = as_inputs([PILImage.new("L", (2, 3), 9)], "image").items[0]
    assert grey.shape == (3, 2, 1) and grey.dtype == np.uint8


def test_text_problems_and_single_string_are_clear():
    with pytest.raises(DataError, match="got a single string; wrap it in a list"):
        as_inputs("just one")
    with pytest.raises(DataError, match="no inputs: the text column is empty"):
        as_inputs([])
    assert as_inputs(["ok", " "]).problems == [None, "blank text"]


def test_rows_enter_prompts_by_column_name():
    batch = as_inputs(pd.DataFrame({"age": [35], "income": [4.5]}))
    assert batch.modality.content(batch.items[0]) == "age=35.0, income=4.5"
    plain = as_inputs(np.array([[1.0, 2.0]]))
    assert plain.modality.content(plain.items[0]) == "x0=1.0, x1=2.0"


def test_image_reaches_a_vision_endpoint_as_an_image_part_and_is_cached_by_content(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, size=(3, 6, 6, 3), dtype=np.uint8)
    cache = tmp_path / "calls.sqlite"
    with FakeOpenAIServer({"image_url": [(" cat", -0.2), (" dog", -1.8)]}) as server:
        model = OpenAIChatModel("vision", base_url=server.base_url, cache=str(cache))
        first = model.predict_proba(list(images) + [None], ["cat", "dog"], modality="image")
        again = model.predict_proba([PILImage.fromarray(images[1])], ["cat", "dog"])  # same picture, other form
    assert first.ok[:3].all() and first.error[3] == "missing image (None/NaN); not sent"
    assert len(server.requests) == 3
    content = server.requests[0]["body"]["messages"][-1]["content"]
    assert [part["type"] for part in content] == [
        "text",
        "image_url",
    ]
    assert content[0]["text"].endswith("Image: ")
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert again.cached.all() and np.allclose(again.proba[0], first.proba[1])
    stored = sqlite3.connect(cache).execute("SELECT value FROM calls").fetchall()
    assert len(stored) == 3 and not any("base64" in value for (value,) in stored)  # answers only, no pixels


def test_text_only_backend_refuses_images_before_any_work():
    images = np.zeros((20, 4, 4), np.uint8)
    y = ["a", "b"] * 10
    with pytest.raises(ConfigError, match="FakeLargeModel answers about text, rows, not image items"):
        ShuntClassifier(_image_classifier(), FakeLargeModel(), random_state=0).fit(images, y)


def test_cascade_routes_images_and_replays_answers_by_content_hash(tmp_path):
    rng = np.random.default_rng(0)
    y = np.array(["dark", "light"] * 40)
    images = np.stack(
        [rng.integers(0, 120, (6, 6)) if label == "dark" else rng.integers(130, 256, (6, 6)) for label in y]
    ).astype(np.uint8)
    keys = [Image().key(item) for item in as_inputs(images, "image").items]
    table = pd.DataFrame({"id": keys, "prediction": y, "conf": 0.99})
    cascade = Cascade(
        [("cnn", _image_classifier()), ("api", ReplayModel(table, confidence_column="conf"))],
        thresholds=[0.9],
        random_state=0,
    ).fit(images, y)
    assert cascade.modality_ == "image"
    routes = cascade.route(list(images[:4]) + ["no/such/file.png"])
    assert routes["label"].iloc[:4].tolist() == y[:4].tolist()
    assert routes["route"].iloc[4] == "invalid" and routes["flag"].iloc[4] == "no such image file: no/such/file.png"


def test_saved_shunt_remembers_its_modality_and_older_folders_load_as_auto(tmp_path):
    texts = [f"{w} film {i}" for i, w in enumerate(["great", "awful"] * 20)]
    y = ["pos", "neg"] * 20
    table = tmp_path / "answers.csv"
    pd.DataFrame({"id": texts, "prediction": y}).to_csv(table, index=False)
    shunt = ShuntClassifier(make_small("tfidf"), ReplayModel(str(table)), threshold=0.5, random_state=0).fit(texts, y)
    folder = save(shunt, tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    assert meta["params"]["modality"] == "text"
    assert load(folder, large_options={"table": str(table)}).modality_ == "text"
    del meta["params"]["modality"]  # a folder written before modalities existed
    (folder / "model.json").write_text(json.dumps(meta))
    older = load(folder, large_options={"table": str(table)})
    assert older.modality_ == "auto" and older.predict(texts[:2]).tolist() == y[:2]


def _flatten(items):
    return np.stack([np.asarray(item, dtype=float).ravel() / 255 for item in items])


def _image_classifier():
    return make_pipeline(FunctionTransformer(_flatten), LogisticRegression())


def test_a_single_image_or_a_wrong_batch_shape_is_refused_with_the_reason():
    with pytest.raises(DataError, match="got a single one; wrap it in a list"):
        as_inputs(PILImage.new("RGB", (2, 2)), "image")
    with pytest.raises(DataError, match=r"has shape \(N, H, W\) or \(N, H, W, C\), got \(5, 5\)"):
        as_inputs(np.zeros((5, 5)), "image")
    with pytest.raises(DataError, match="no inputs: the batch of images is empty"):
        as_inputs([], "image")


def test_a_table_of_several_columns_is_refused_as_texts_or_images():
    table = pd.DataFrame({"a": ["x"], "b": ["y"]})
    with pytest.raises(DataError, match="texts come as one column, got a table of 2 columns"):
        as_inputs(table, "text")
    with pytest.raises(DataError, match="images come as one column, got a table of 2 columns"):
        as_inputs(table, "image")
    with pytest.raises(DataError, match="cannot read the feature rows"):
        as_inputs([[1.0, np.nan]], "rows")
