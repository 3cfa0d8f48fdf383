"""The small attention captioner (Show, Attend and Tell) and the COCO captions reader."""

import copy
import json
import pickle
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.base import clone  # noqa: E402

from datashunt.core.sequence import mean_proba  # noqa: E402
from datashunt.exceptions import ConfigError, DataError  # noqa: E402
from datashunt.io.datasets.coco import load_coco_captions  # noqa: E402
from datashunt.small.captioner import EMPTY_FLAG, CaptionerGenerator, caption_words  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (230, 210, 30)}
SHAPES = ("square", "circle", "triangle")
# A small network on 32×32 images: a few seconds on one thread.
SETTINGS = dict(
    image_size=32,
    encoder_channels=(8, 16, 32),
    embed_dim=32,
    hidden_dim=64,
    attention_dim=32,
    epochs=10,
    batch_size=32,
    lr=3e-3,
    random_state=0,
)


FIT_SECONDS = []


def make_shapes(n, seed):
    """``n`` 32×32 images of a coloured square, circle or triangle on a plain grey background (with
    pixel noise), and their (colour, shape)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    images, truth = [], []
    for i in range(n):
        colour, shape = list(COLOURS)[i % 4], SHAPES[(i // 4) % len(SHAPES)]
        image = np.full((32, 32, 3), rng.integers(150, 250), np.int64)
        r = rng.integers(6, 10)
        cy, cx = rng.integers(r + 1, 31 - r, size=2)
        if shape == "square":
            mask = (abs(yy - cy) <= r * 0.8) & (abs(xx - cx) <= r * 0.8)
        elif shape == "circle":
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            mask = (yy >= cy - r) & (yy <= cy + r) & (abs(xx - cx) <= (yy - cy + r) / 2)
        image[mask] = COLOURS[colour]
        images.append(np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8))
        truth.append((colour, shape))
    return np.stack(images), truth


def references(truth):
    """Every image "a <colour> <shape>"; a third also "there is a ...", a third "the <shape> that is <colour>"."""
    out = []
    for i, (colour, shape) in enumerate(truth):
        refs = [f"a {colour} {shape}"]
        if i % 3 == 1:
            refs.append(f"there is a {colour} {shape}")
        elif i % 3 == 2:
            refs.append(f"the {shape} that is {colour}")
        out.append(refs)
    return out


def named(text):
    """The colour and shape words of a caption."""
    words = caption_words(text or "")
    return {w for w in words if w in COLOURS}, {w for w in words if w in SHAPES}


@pytest.fixture(scope="module")
def data():
    X, truth = make_shapes(288, seed=0)
    X_test, truth_test = make_shapes(96, seed=1)
    return X, truth, X_test, truth_test


@pytest.fixture(scope="module")
def fitted(data):
    X, truth, _, _ = data
    start = time.perf_counter()
    model = CaptionerGenerator(**SETTINGS).fit(X, references(truth))
    FIT_SECONDS.append(time.perf_counter() - start)  # for the report (-s shows it)
    return model


def test_captions_held_out_images(fitted, data):
    _, _, X_test, truth = data
    got = fitted.generate(X_test)
    exact = np.mean([text == f"a {c} {s}" for text, (c, s) in zip(got.text, truth)])
    words = np.mean([named(text) == ({c}, {s}) for text, (c, s) in zip(got.text, truth)])
    print(
        f"\nfit {FIT_SECONDS[0]:.1f} s; held-out exact {exact:.3f}, colour+shape {words:.3f}, "
        f"mean confidence {np.nanmean(mean_proba(got.token_logprob)):.3f}"
    )
    assert words >= 0.8 and exact >= 0.8
    assert fitted.vocabulary_[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert {"red", "square", "that", "is"} <= set(fitted.vocabulary_)
    assert not got.cost.any() and not got.price.any() and not got.cached.any()
    assert np.isfinite(got.seconds).all() and (got.seconds >= 0).all()


def test_token_logprob_is_per_word_and_matches_teacher_forcing(fitted, data):
    _, _, X_test, _ = data
    got = fitted.generate(X_test[:40])
    assert got.ok.all() and all(flag is None for flag in got.flag)
    for text, lp, n in zip(got.text, got.token_logprob, got.completion_tokens):
        assert isinstance(lp, np.ndarray) and lp.dtype == float
        assert len(lp) == len(text.split()) == n
        assert np.isfinite(lp).all() and (lp <= 0).all()
    rescored = fitted.caption_logprob(X_test[:40], got.text)
    for lp, again in zip(got.token_logprob, rescored):
        np.testing.assert_allclose(lp, again, atol=1e-4)
    confidence = mean_proba(got.token_logprob)
    assert ((confidence > 0) & (confidence <= 1)).all()
    # hints are accepted and ignored
    hinted = fitted.generate(X_test[:40], hints=["a purple zebra"] * 40)
    assert hinted.text == got.text
    with pytest.raises(ConfigError, match="hints"):
        fitted.generate(X_test[:4], hints=["x"])


def test_unreadable_images_are_flagged_per_row(fitted, data, tmp_path):
    _, _, X_test, _ = data
    inputs = [X_test[0], "no/such/image.png", None, np.zeros((0, 4, 3), np.uint8), X_test[1]]
    got = fitted.generate(inputs)
    assert got.ok.tolist() == [True, False, False, False, True]
    assert got.flag[0] is None and got.flag[4] is None
    assert "no such image file" in got.flag[1] and "missing image" in got.flag[2] and "empty image" in got.flag[3]
    assert all(got.token_logprob[i] is None for i in (1, 2, 3))
    assert got.text[0] == fitted.generate(X_test[:1]).text[0]
    assert len(fitted.generate([]).text) == 0
    from PIL import Image

    Image.fromarray(X_test[2]).save(tmp_path / "shape.png")
    got = fitted.generate([str(tmp_path / "shape.png"), str(tmp_path / "gone.png")])  # paths: images, not texts
    assert got.text[0] == fitted.generate(X_test[2:3]).text[0] and got.text[1] is None
    assert got.flag[1].startswith("no such image file") and got.flag[1].endswith("; not captioned")
    with pytest.raises(ConfigError, match="images"):
        fitted.generate(["a text, not an image"], modality="text")


def test_empty_caption_and_max_len(fitted, data):
    _, _, X_test, _ = data
    ends = copy.deepcopy(fitted)
    with torch.no_grad():
        ends.module_.out.bias[2] = 1e4  # <end> always wins
    got = ends.generate(X_test[:3])
    assert got.text == [None] * 3 and got.token_logprob == [None] * 3
    assert all(flag == EMPTY_FLAG and flag.startswith("empty caption") for flag in got.flag)
    short = copy.deepcopy(fitted).set_params(max_len=2)
    got = short.generate(X_test[:5])
    assert all(len(text.split()) == 2 and len(lp) == 2 for text, lp in zip(got.text, got.token_logprob))


def test_distill_moves_outputs_toward_new_captions(fitted, data):
    _, _, X_test, truth_test = data
    X_new, truth_new = make_shapes(144, seed=2)
    student = copy.deepcopy(fitted)
    before = student.generate(X_test).text
    new = [f"a {s} that is {c}" for c, s in truth_test]
    assert np.mean([text == want for text, want in zip(before, new)]) == 0
    student.distill(X_new, [f"a {s} that is {c}" for c, s in truth_new], epochs=4)
    after = student.generate(X_test).text
    print(f"\nafter distilling: {np.mean([text == want for text, want in zip(after, new)]):.3f} in the new phrasing")
    assert np.mean([text == want for text, want in zip(after, new)]) >= 0.6, after[:8]
    assert fitted.generate(X_test).text == before  # the original is untouched
    # the vocabulary is kept: new words are trained as <unk>
    vocabulary = list(student.vocabulary_)
    student.distill(X_new[:4], ["a purple square"] * 4, epochs=1)
    assert student.vocabulary_ == vocabulary
    assert len(student.caption_logprob(X_new[:1], ["a purple square"])[0]) == 3
    with pytest.raises(DataError, match="2 references"):
        student.distill(X_new[:3], ["a", "b"])


def test_pickle_round_trip_gives_identical_outputs(fitted, data):
    _, _, X_test, _ = data
    state = fitted.__getstate__()
    assert "module_" not in state and state["module_state_"]
    assert all(isinstance(v, np.ndarray) for v in state["module_state_"].values())
    assert not any(isinstance(v, torch.Tensor) for v in state.values())
    restored = pickle.loads(pickle.dumps(fitted))
    got, again = fitted.generate(X_test), restored.generate(X_test)
    assert got.text == again.text
    for a, b in zip(got.token_logprob, again.token_logprob):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unexpected"):
        CaptionerGenerator().__setstate__({**state, "evil_": 1})
    with pytest.raises(ValueError, match="named arrays"):
        CaptionerGenerator().__setstate__({**state, "module_state_": {"w": [1.0]}})


def test_clone_then_fit_and_random_state_untouched(fitted, data):
    X, truth, X_test, _ = data
    fresh = clone(fitted)
    assert not hasattr(fresh, "vocabulary_") and fresh.get_params() == fitted.get_params()
    np_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state()
    fresh.set_params(epochs=1).fit(X[:32], references(truth[:32]))
    assert (np.random.get_state()[1] == np_state).all() and torch.equal(torch.random.get_rng_state(), torch_state)
    assert len(fresh.generate(X_test[:4]).text) == 4
    grey = clone(fitted).set_params(epochs=1).fit(X[:16, :, :, 0], [f"a {c}" for c, _ in truth[:16]])
    assert grey.n_channels_ == 1 and len(grey.generate(X_test[:2]).text) == 2  # colour images made grey


def test_fit_refuses_bad_training_data(data):
    X, truth, _, _ = data
    model = CaptionerGenerator(**{**SETTINGS, "epochs": 1})
    refs = references(truth[:4])
    with pytest.raises(DataError, match="empty"):
        model.fit([], [])
    with pytest.raises(DataError, match="4 images but 3 references"):
        model.fit(X[:4], refs[:3])
    with pytest.raises(DataError, match="row 2: the image has no caption"):
        model.fit(X[:4], [refs[0], refs[1], [], refs[3]])
    with pytest.raises(DataError, match="row 1: the image has no caption"):
        model.fit(X[:4], [refs[0], " ... ", refs[2], refs[3]])
    with pytest.raises(DataError, match="row 0: a caption must be a string"):
        model.fit(X[:4], [[None], *refs[1:]])
    with pytest.raises(DataError, match="one caption"):
        model.fit(X[:4], "a red square")
    with pytest.raises(DataError, match="row 1: no such image file"):
        model.fit([X[0], "missing.png", X[2]], refs[:3])
    with pytest.raises(ConfigError, match="encoder_channels"):
        CaptionerGenerator(encoder_channels=()).fit(X[:4], refs)
    with pytest.raises(ConfigError, match="too small"):
        CaptionerGenerator(image_size=4, encoder_channels=(8, 8, 8)).fit(X[:4], refs)
    with pytest.raises(ConfigError, match="alpha_c"):
        CaptionerGenerator(alpha_c=-1.0).fit(X[:4], refs)


# -- COCO captions ------------------------------------------------------------------------------

KARPATHY = {
    "images": [
        {
            "filepath": "val2014",
            "filename": "COCO_val2014_1.jpg",
            "split": "test",
            "cocoid": 1,
            "sentences": [{"raw": "A cat on a mat.", "tokens": ["a", "cat"]}, {"raw": " Cat sleeping. "}],
        },
        {
            "filepath": "train2014",
            "filename": "COCO_train2014_2.jpg",
            "split": "train",
            "cocoid": 2,
            "sentences": [{"tokens": ["a", "dog"]}],
        },
        {
            "filepath": "val2014",
            "filename": "COCO_val2014_3.jpg",
            "split": "restval",
            "cocoid": 3,
            "sentences": [{"raw": "A bird."}],
        },
    ]
}
OFFICIAL = {
    "info": {},
    "licenses": [],
    "images": [{"id": 7, "file_name": "COCO_val2014_7.jpg"}, {"id": 9, "file_name": "COCO_val2014_9.jpg"}],
    "annotations": [
        {"id": 1, "image_id": 9, "caption": "Two dogs."},
        {"id": 2, "image_id": 7, "caption": "A cat."},
        {"id": 3, "image_id": 9, "caption": "Dogs playing "},
    ],
}


def write(tmp_path, content, name="captions.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_coco_reads_karpathy_split_file(tmp_path):
    path = write(tmp_path, KARPATHY)
    table = load_coco_captions(path, tmp_path / "coco")
    assert list(table.columns) == ["path", "references", "split"]
    assert table["path"].tolist() == [
        str(tmp_path / "coco" / "val2014" / "COCO_val2014_1.jpg"),
        str(tmp_path / "coco" / "train2014" / "COCO_train2014_2.jpg"),
        str(tmp_path / "coco" / "val2014" / "COCO_val2014_3.jpg"),
    ]
    assert table["references"].tolist() == [["A cat on a mat.", "Cat sleeping."], ["a dog"], ["A bird."]]
    assert table["split"].tolist() == ["test", "train", "restval"]
    test = load_coco_captions(path, tmp_path, split="test")
    assert test["references"].tolist() == [["A cat on a mat.", "Cat sleeping."]] and test.index.tolist() == [0]
    assert load_coco_captions(path, tmp_path, split=["train", "restval"])["split"].tolist() == ["train", "restval"]
    with pytest.raises(DataError, match=r"unknown split 'val'; the splits found are \['restval', 'test', 'train'\]"):
        load_coco_captions(path, tmp_path, split="val")


def test_coco_reads_official_captions_file(tmp_path):
    path = write(tmp_path, OFFICIAL)
    table = load_coco_captions(path, "relative/root")
    assert table["path"].map(lambda p: p.endswith("/relative/root/COCO_val2014_7.jpg")).tolist() == [True, False]
    assert all(p.startswith("/") for p in table["path"])
    assert table["references"].tolist() == [["A cat."], ["Two dogs.", "Dogs playing"]]
    assert table["split"].tolist() == [None, None]
    with pytest.raises(DataError, match="no splits"):
        load_coco_captions(path, tmp_path, split="train")


def test_coco_refuses_bad_files(tmp_path):
    with pytest.raises(DataError, match="no such annotation file"):
        load_coco_captions(tmp_path / "missing.json", tmp_path)
    with pytest.raises(DataError, match="malformed JSON"):
        load_coco_captions(write(tmp_path, '{"images": [', "broken.json"), tmp_path)
    with pytest.raises(DataError, match="unknown annotation format"):
        load_coco_captions(write(tmp_path, {"categories": []}, "other.json"), tmp_path)
    with pytest.raises(DataError, match="unknown annotation format"):
        load_coco_captions(write(tmp_path, {"images": [{"url": "x"}]}, "odd.json"), tmp_path)
    with pytest.raises(DataError, match="unknown annotation format"):
        load_coco_captions(write(tmp_path, [1, 2], "list.json"), tmp_path)
    orphan = {**OFFICIAL, "annotations": [{"image_id": 99, "caption": "lost"}]}
    with pytest.raises(DataError, match="image_id 99"):
        load_coco_captions(write(tmp_path, orphan, "orphan.json"), tmp_path)
    no_raw = {"images": [{"filename": "a.jpg", "split": "val", "sentences": [{}]}]}
    with pytest.raises(DataError, match="without 'raw'"):
        load_coco_captions(write(tmp_path, no_raw, "noraw.json"), tmp_path)
