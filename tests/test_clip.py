"""ClipModel against a tiny randomly initialised CLIP written to disk (no weights to download)."""

import pickle

import numpy as np
import pytest
from scipy.special import softmax

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
PIL_Image = pytest.importorskip("PIL.Image")

from sklearn.base import clone

from datashunt.backends.clip import DEFAULT_TEMPLATES, ClipModel
from datashunt.backends.vision import prior_log_weights
from datashunt.collab.pruning import soft_hint
from datashunt.exceptions import ConfigError

LABELS = ["cat", "dog", "car"]


def tiny_tokenizer():
    """A CLIP tokenizer whose words are spelled character by character (no merges, nothing to download)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({ch: len(vocab) + i for i, ch in enumerate(alphabet)})
    vocab.update({ch + "</w>": len(vocab) + i for i, ch in enumerate(alphabet)})  # a word's last character
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_processor(tokenizer):
    from transformers import CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


TOWER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """A CLIP with 2-layer, 32-wide towers, a character-level BPE tokenizer and 32-pixel images."""
    from transformers import CLIPConfig, CLIPModel

    folder = tmp_path_factory.mktemp("tiny-clip")
    tokenizer = tiny_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            **TOWER,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(**TOWER, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tiny_processor(tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory):
    """A tiny SigLIP (sigmoid loss, a learnt logit bias, last-token text pooling) with the same tokenizer."""
    from transformers import SiglipConfig, SiglipModel

    folder = tmp_path_factory.mktemp("tiny-siglip")
    tokenizer = tiny_tokenizer()
    config = SiglipConfig(
        text_config=dict(**TOWER, vocab_size=len(tokenizer), max_position_embeddings=77, pad_token_id=1),
        vision_config=dict(**TOWER, image_size=32, patch_size=8),
    )
    torch.manual_seed(1)
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_bias.fill_(-3.0)
    model.save_pretrained(folder)
    tiny_processor(tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reference(clip_folder):
    from transformers import CLIPModel, CLIPProcessor

    return CLIPModel.from_pretrained(clip_folder).eval(), CLIPProcessor.from_pretrained(clip_folder)


def images(n, seed=0, size=(24, 28)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(*size, 3), dtype=np.uint8) for _ in range(n)]


def as_rgb(image):
    image = np.asarray(image)
    return image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image.reshape(*image.shape[:2], 1), 3, 2)


def direct_logits(reference, pictures, labels, templates=DEFAULT_TEMPLATES):
    """logit_scale × cosine of the image and the template-ensembled label embeddings, from CLIPModel.forward."""
    model, processor = reference
    templates = (templates,) if isinstance(templates, str) else tuple(templates)
    sentences = [t.format(label=label) for label in labels for t in templates]
    pil = [PIL_Image.fromarray(as_rgb(p)) for p in pictures]
    with torch.no_grad():
        out = model(**processor(text=sentences, images=pil, padding=True, return_tensors="pt"))
    text = out.text_embeds.double().reshape(len(labels), len(templates), -1).mean(dim=1)
    text = text / text.norm(dim=-1, keepdim=True)
    return (model.logit_scale.detach().exp().double() * out.image_embeds.double() @ text.T).numpy()


def test_probabilities_are_the_softmax_of_scaled_cosines_with_the_template_ensemble(clip_folder, reference):
    pictures = images(3) + [np.random.default_rng(1).integers(0, 256, size=(40, 20), dtype=np.uint8)]  # + grey
    result = ClipModel(model=str(clip_folder), cache=False).predict_proba(pictures, LABELS, modality="image")
    assert result.proba.shape == (4, 3)
    assert result.error == [None] * 4
    np.testing.assert_allclose(result.proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(result.proba, softmax(direct_logits(reference, pictures, LABELS), axis=1), atol=1e-5)
    assert not np.allclose(result.proba, 1 / 3, atol=1e-3)  # the images are told apart, not a uniform answer
    assert (result.prompt_tokens == 0).all() and (result.cost == 0).all()
    assert np.isfinite(result.call_seconds).all()


def test_one_template_gives_the_models_own_logits_per_image(clip_folder, reference):
    model, processor = reference
    pictures = images(2, seed=3)
    template = "a photo of a {label}."
    result = ClipModel(model=clip_folder, templates=template, cache=False).predict_proba(pictures, LABELS)
    with torch.no_grad():
        out = model(
            **processor(
                text=[template.format(label=x) for x in LABELS],
                images=[PIL_Image.fromarray(p) for p in pictures],
                padding=True,
                return_tensors="pt",
            )
        )
    np.testing.assert_allclose(result.proba, out.logits_per_image.softmax(dim=1).numpy(), atol=1e-5)


def test_siglip_scores_with_its_bias_and_full_length_texts(siglip_folder):
    from transformers import AutoProcessor, SiglipModel

    model, processor = SiglipModel.from_pretrained(siglip_folder).eval(), AutoProcessor.from_pretrained(siglip_folder)
    pictures = images(3, seed=11)
    template = "a photo of a {label}."
    backend = ClipModel(model=siglip_folder, templates=template, cache=False)
    result = backend.predict_proba(pictures, LABELS, modality="image")
    with torch.no_grad():
        out = model(
            **processor(
                text=[template.format(label=x) for x in LABELS],
                images=[PIL_Image.fromarray(p) for p in pictures],
                padding="max_length",
                return_tensors="pt",
            )
        )
    np.testing.assert_allclose(result.proba, out.logits_per_image.softmax(dim=1).numpy(), atol=1e-5)
    raw = backend._label_logits(pictures, LABELS)  # the model's own scores, bias included
    np.testing.assert_allclose(raw, out.logits_per_image.numpy(), atol=1e-4)


def test_hard_pruning_drops_labels_and_renormalises_over_the_rest(clip_folder, reference):
    pictures = images(3, seed=4)
    result = ClipModel(model=str(clip_folder), cache=False).predict_proba(
        pictures, LABELS, candidates=[[0, 2], None, [1, 2]], modality="image"
    )
    logits = direct_logits(reference, pictures, LABELS)
    assert result.proba[0, 1] == 0.0 and result.proba[2, 0] == 0.0
    np.testing.assert_allclose(result.proba[0, [0, 2]], softmax(logits[0, [0, 2]]), atol=1e-5)
    np.testing.assert_allclose(result.proba[1], softmax(logits[1]), atol=1e-5)
    np.testing.assert_allclose(result.proba[2, [1, 2]], softmax(logits[2, [1, 2]]), atol=1e-5)
    np.testing.assert_allclose(result.proba.sum(axis=1), 1.0, atol=1e-12)


def test_soft_pruning_multiplies_in_the_hints_prior(clip_folder, reference):
    pictures = images(2, seed=5)
    hint = soft_hint([0.9, 0.06, 0.04], LABELS, [0])  # the small model is reliable on "cat"
    backend = ClipModel(model=str(clip_folder), cache=False)
    plain = backend.predict_proba(pictures, LABELS, modality="image")
    hinted = backend.predict_proba(pictures, LABELS, hints=[hint, None], modality="image")
    logits = direct_logits(reference, pictures, LABELS)
    expected = softmax(logits[0] + prior_log_weights(LABELS, hint.prior))
    np.testing.assert_allclose(np.exp(prior_log_weights(LABELS, hint.prior)), [0.9, 0.05, 0.05])
    np.testing.assert_allclose(hinted.proba[0], expected, atol=1e-5)
    assert hinted.proba[0, 0] > plain.proba[0, 0]
    np.testing.assert_allclose(hinted.proba[1], plain.proba[1], atol=1e-12)  # no hint, no prior


def test_the_cache_answers_the_same_pixels_from_a_file_and_keeps_templates_apart(clip_folder, tmp_path):
    pictures = images(2, seed=6)
    cache = tmp_path / "calls.sqlite"
    first = ClipModel(model=str(clip_folder), cache=cache).predict_proba(pictures, LABELS, modality="image")
    assert not first.cached.any()
    paths = []
    for i, picture in enumerate(pictures):
        paths.append(tmp_path / f"picture{i}.png")
        PIL_Image.fromarray(picture).save(paths[-1])
    again = ClipModel(model=str(clip_folder), cache=cache)
    second = again.predict_proba(paths, LABELS, modality="image")
    assert second.cached.all()
    np.testing.assert_array_equal(second.proba, first.proba)
    assert not hasattr(again, "_model")  # answered without loading the model
    other = ClipModel(model=str(clip_folder), templates="an image of a {label}", cache=cache)
    third = other.predict_proba(paths, LABELS, modality="image")
    assert not third.cached.any()
    assert not np.allclose(third.proba, first.proba)
    assert other.identity() != again.identity()
    assert other.identity().startswith(f"clip:{clip_folder}:")


def test_batch_size_does_not_change_the_answers(clip_folder):
    pictures = images(5, seed=7)
    small = ClipModel(model=str(clip_folder), batch_size=2, cache=False).predict_proba(pictures, LABELS)
    large = ClipModel(model=str(clip_folder), batch_size=32, cache=False).predict_proba(pictures, LABELS)
    assert small.ok.all()
    np.testing.assert_allclose(small.proba, large.proba, atol=1e-6)


def test_changed_templates_are_embedded_again(clip_folder, reference):
    pictures = images(2, seed=8)
    backend = ClipModel(model=str(clip_folder), cache=False)
    backend.predict_proba(pictures, LABELS, modality="image")
    backend.set_params(templates=["a drawing of a {label}", "{label}"])
    result = backend.predict_proba(pictures, LABELS, modality="image")
    expected = softmax(direct_logits(reference, pictures, LABELS, ["a drawing of a {label}", "{label}"]), axis=1)
    np.testing.assert_allclose(result.proba, expected, atol=1e-5)


def test_bad_images_are_flagged_per_row(clip_folder, tmp_path, reference):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png")
    good = images(2, seed=9)
    batch = [good[0], broken, tmp_path / "missing.png", good[1]]
    result = ClipModel(model=str(clip_folder), cache=False).predict_proba(batch, LABELS, modality="image")
    assert "cannot decode image file" in result.error[1] and "broken.png" in result.error[1]
    assert "no such image file" in result.error[2] and "missing.png" in result.error[2]
    assert result.error[0] is None and result.error[3] is None
    assert result.ok.tolist() == [True, False, False, True]
    np.testing.assert_allclose(result.proba[[0, 3]], softmax(direct_logits(reference, good, LABELS), axis=1), atol=1e-5)


def test_a_failed_forward_pass_flags_its_batch_only(clip_folder, reference):
    pictures = images(4, seed=12)
    backend = ClipModel(model=str(clip_folder), batch_size=2, cache=False)
    real, calls = backend._image_embeddings, []

    def failing_second_batch(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory")
        return real(batch)

    backend._image_embeddings = failing_second_batch
    result = backend.predict_proba(pictures, LABELS, modality="image")
    assert calls == [2, 2]
    assert result.ok.tolist() == [True, True, False, False]
    assert all("failed to score 2 image(s): RuntimeError: CUDA out of memory" in e for e in result.error[2:])
    np.testing.assert_allclose(
        result.proba[:2], softmax(direct_logits(reference, pictures[:2], LABELS), axis=1), atol=1e-5
    )


def test_texts_are_refused(clip_folder):
    with pytest.raises(ConfigError, match="answers about image"):
        ClipModel(model=str(clip_folder)).predict_proba(["a cat on a mat", "a red car"], LABELS)


@pytest.mark.parametrize(
    "templates, message",
    [
        ("a photo of a cat", "exactly once"),
        ("a {label} next to a {label}", "exactly once"),
        ("a {style} photo of a {label}", "no field but {label}; found {style}"),
        (["a photo of a {label}", "{0} {label}"], "found {0}"),
        ("a photo of a {label!r}", "exactly once"),
        ("a photo of a {label", "not a valid format string"),
        ([], "at least one template"),
        ([3], "a string or a list of strings"),
    ],
)
def test_bad_templates_are_refused(clip_folder, templates, message):
    backend = ClipModel(model=str(clip_folder), templates=templates)
    with pytest.raises(ConfigError, match="templates") as caught:
        backend.predict_proba(images(1), LABELS, modality="image")
    assert message in str(caught.value)
    with pytest.raises(ConfigError):
        backend.identity()


def test_a_folder_without_a_model_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ConfigError, match="not-a-model") as caught:
        ClipModel(model=str(empty), cache=False).predict_proba(images(1), LABELS, modality="image")
    assert "local_files_only" in str(caught.value)
    with pytest.raises(ConfigError, match="nobody/no-such-clip"):
        ClipModel(model="nobody/no-such-clip", cache=False).predict_proba(images(1), LABELS, modality="image")


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="batch_size"):
        ClipModel(model="x", batch_size=0).predict_proba(images(1), LABELS, modality="image")
    with pytest.raises(ConfigError, match="local_files_only"):
        ClipModel(model="x", local_files_only="yes").predict_proba(images(1), LABELS, modality="image")
    with pytest.raises(ConfigError, match="device 'gpu0' is not a torch device"):
        ClipModel(model="x", device="gpu0").predict_proba(images(1), LABELS, modality="image")


def test_clone_and_pickle_keep_the_settings_not_the_loaded_model(clip_folder):
    pictures = images(2, seed=10)
    backend = ClipModel(model=str(clip_folder), templates="a photo of a {label}", batch_size=4, cache=False)
    before = backend.predict_proba(pictures, LABELS, modality="image").proba
    assert hasattr(backend, "_model")
    copy = clone(backend)
    assert copy.get_params() == backend.get_params() and not hasattr(copy, "_model")
    restored = pickle.loads(pickle.dumps(backend))
    assert not hasattr(restored, "_model") and not hasattr(restored, "_text")
    np.testing.assert_allclose(restored.predict_proba(pictures, LABELS, modality="image").proba, before, atol=1e-6)
    assert ClipModel.location_params == ("model", "local_files_only")
    assert ClipModel.is_default_location("local_files_only", True)
    assert not ClipModel.is_default_location("local_files_only", False)
    assert str(clip_folder) in backend.describe() and "local files only" in backend.describe()


def test_inside_a_shunt_the_uncertain_images_go_to_clip(clip_folder):
    from datashunt import ShuntClassifier
    from datashunt.small import make_small

    rng = np.random.default_rng(0)
    classes = np.array(["cat", "dog", "car"])
    y = classes[np.arange(45) % 3]
    X = rng.integers(0, 80, size=(45, 16, 16, 3), dtype=np.uint8)
    X[y == "dog", 4:12, 4:12] = 255  # a bright square; cats and cars look alike to the small model
    shunt = ShuntClassifier(
        make_small("cnn", epochs=20, width=4, augment=False, n_threads=1, random_state=0),
        ClipModel(model=str(clip_folder), cache=False),
        threshold=0.5,
        modality="image",
        random_state=0,
    ).fit(X, y)
    table = shunt.route(X)
    assert set(table["route"]) == {"small", "large"}
    large = (table["route"] == "large").to_numpy()
    assert (large == (y != "dog")).mean() > 0.9  # the dogs stay with the small model, the rest go to CLIP
    assert table.loc[large, "confidence_large"].notna().all()
    assert table.loc[large, "confidence_large"].between(1 / 3, 1).all()
    assert (table.loc[large, "confidence_small"] < 0.5).all()
    assert (table.loc[~large, "confidence_small"] >= 0.5).all()
    assert table["label"].isin(classes).all() and table["flag"].isna().all()
    assert isinstance(shunt.large_, ClipModel) and shunt.large_ is not shunt.large
