"""TransformersGenerator against tiny randomly initialised models written to disk (nothing to download):
a GPT-2, a T5, a ViT-GPT-2 VisionEncoderDecoder and a BLIP captioner, each over a word-level vocabulary."""

import pickle
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("PIL.Image")

from datashunt.backends.generate.base import cut_at_stop
from datashunt.backends.generate.transformers import TransformersGenerator, fingerprint
from datashunt.exceptions import ConfigError, ModelFileError

WORDS = (
    "the a cat dog bird fish sat ran on under mat box red blue green big small old new runs jumps sleeps "
    "and or but is was very quite here there now then user assistant"
).split()
SPECIALS = ["<pad>", "<eos>", "<unk>", "<bos>"]
PAD, EOS, UNK, BOS = range(4)
VOCAB = {w: i for i, w in enumerate(SPECIALS + WORDS)}
TOWER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
PROMPTS = [
    "the cat sat on the mat",
    "a dog",
    "big red box under the old mat and the new bird",
    "fish",
    "here is a small green bird",
]


def word_tokenizer(wrap=None, **specials):
    """A whitespace word-level tokenizer over WORDS (decoding joins the words with spaces); ``wrap`` adds
    special tokens around a text, such as ``"$A <eos>"``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if wrap:
        backend.post_processor = processors.TemplateProcessing(
            single=wrap, special_tokens=[("<bos>", BOS), ("<eos>", EOS)]
        )
    names = {"pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>", "bos_token": "<bos>", **specials}
    return PreTrainedTokenizerFast(tokenizer_object=backend, **names)


def scramble(model, seed, std=0.5, eos_gain=None):
    """Large random weights, so greedy decoding wanders over the vocabulary instead of repeating one token;
    ``eos_gain`` scales the end token's output row so that some answers end early."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
        if eos_gain is not None:
            model.get_output_embeddings().weight[EOS] *= eos_gain
    return model


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (20 + 5 * i, 24 + 3 * i, 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def gpt_folder(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    config = GPT2Config(
        vocab_size=len(VOCAB),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    torch.manual_seed(0)
    scramble(GPT2LMHeadModel(config), 1, eos_gain=EOS_GAIN).save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    return folder


EOS_GAIN = 3.0


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    config = T5Config(
        vocab_size=len(VOCAB),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=PAD,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    torch.manual_seed(0)
    scramble(T5ForConditionalGeneration(config), 2).save_pretrained(folder)
    word_tokenizer("$A <eos>").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def ved_folder(tmp_path_factory):
    """ViT encoder (32-pixel images) + GPT-2 decoder with cross-attention, image processor and tokenizer."""
    from transformers import (
        GPT2Config,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
    )
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny-ved")
    encoder = ViTConfig(image_size=32, patch_size=8, **TOWER)
    decoder = GPT2Config(
        vocab_size=len(VOCAB),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        add_cross_attention=True,
        is_decoder=True,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = BOS, PAD, EOS
    torch.manual_seed(0)
    model = scramble(VisionEncoderDecoderModel(config=config), 3)
    model.generation_config.decoder_start_token_id = BOS
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = EOS, PAD
    model.save_pretrained(folder)
    word_tokenizer().save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory):
    """A BLIP captioner (BlipForConditionalGeneration) with its processor; [SEP] (= <eos>) ends a caption."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny-blip")
    config = BlipConfig(
        text_config=dict(
            **TOWER,
            vocab_size=len(VOCAB),
            max_position_embeddings=64,
            bos_token_id=BOS,
            eos_token_id=EOS,
            sep_token_id=EOS,
            pad_token_id=PAD,
        ),
        vision_config=dict(**TOWER, image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    scramble(BlipForConditionalGeneration(config), 4).save_pretrained(folder)
    tokenizer = word_tokenizer("<bos> $A <eos>", sep_token="<eos>", cls_token="<bos>")  # as BERT: [CLS] $A [SEP]
    BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer
    ).save_pretrained(folder)
    return folder


def greedy(step, prompt, max_new_tokens, special=frozenset(VOCAB[s] for s in SPECIALS)):
    """Reference greedy decoding one forward pass at a time: the chosen tokens (special ones left out, as
    in the answer's text) and the log-softmax of the model's logits at each, up to the end token."""
    tokens, logprobs, ids = [], [], list(prompt)
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logp = torch.log_softmax(step(ids).float(), dim=-1)
        token = int(torch.argmax(logp))
        if token == EOS:
            break
        ids.append(token)
        if token not in special:
            tokens.append(token)
            logprobs.append(float(logp[token]))
    return tokens, logprobs


def decode(tokens):
    return " ".join(WORDS[t - len(SPECIALS)] for t in tokens)


def make(folder, tmp_path, **options):
    options = {"template": "{text}", **options}  # the item alone is the prompt unless a test says otherwise
    return TransformersGenerator(str(folder), cache=str(tmp_path / "calls.sqlite"), **options)


# -- causal ---------------------------------------------------------------------------------------
def test_causal_log_probabilities_are_the_models_own(gpt_folder, tmp_path):
    gen = make(gpt_folder, tmp_path, max_new_tokens=10)
    assert gen.modalities == ("text",) and gen._resolved_kind() == "causal"
    out = gen.generate(PROMPTS[:3])
    model = transformers.AutoModelForCausalLM.from_pretrained(gpt_folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt_folder)
    for i, prompt in enumerate(PROMPTS[:3]):
        ids = tokenizer(prompt)["input_ids"]
        tokens, logprobs = greedy(lambda seq: model(torch.tensor([seq])).logits[0, -1], ids, 10)
        assert out.text[i] == decode(tokens) != ""
        np.testing.assert_allclose(out.token_logprob[i], logprobs, atol=1e-4)
        assert out.prompt_tokens[i] == len(ids) and out.completion_tokens[i] == len(tokens)
        assert out.flag[i] is None and out.seconds[i] > 0
    assert len({len(lp) for lp in out.token_logprob}) > 1  # some answers ended early: padding and ends were dropped


def test_batches_give_the_same_answers_as_one_by_one(gpt_folder, tmp_path):
    batched = make(gpt_folder, tmp_path / "a", max_new_tokens=12, batch_size=3).generate(PROMPTS)
    single = make(gpt_folder, tmp_path / "b", max_new_tokens=12, batch_size=1).generate(PROMPTS)
    assert batched.text == single.text and all(t for t in batched.text)
    for a, b in zip(batched.token_logprob, single.token_logprob):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert len({len(lp) for lp in batched.token_logprob}) > 1


def test_a_chat_template_is_applied(gpt_folder, tmp_path):
    folder = tmp_path / "chat"
    shutil.copytree(gpt_folder, folder)
    tokenizer = word_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant{% endif %}"
    )
    tokenizer.save_pretrained(folder)
    out = TransformersGenerator(
        str(folder), instruction="here", max_new_tokens=4, cache=str(tmp_path / "calls.sqlite")
    ).generate(["the cat"])
    # "user here\nText: the cat assistant": the instruction, the default template and the generation prompt
    assert out.prompt_tokens[0] == len(tokenizer("user here Text: the cat assistant")["input_ids"])
    assert out.ok.all()


def test_stop_truncates_the_text_and_its_log_probabilities(gpt_folder, tmp_path):
    full = make(gpt_folder, tmp_path / "a", max_new_tokens=12).generate(PROMPTS[:1])
    words = full.text[0].split()
    k = next(i for i in range(1, len(words)) if words[i] not in words[:i])  # the first repeat-free later word
    stop = " " + words[k]
    cut = make(gpt_folder, tmp_path / "b", max_new_tokens=12, stop=[stop]).generate(PROMPTS[:1])
    assert cut.text[0] == cut_at_stop(full.text[0], [stop])[0].strip() == " ".join(words[:k])
    np.testing.assert_allclose(cut.token_logprob[0], full.token_logprob[0][:k])


def test_blank_and_too_long_prompts_are_flagged_the_rest_answered(gpt_folder, tmp_path):
    too_long = " ".join(["cat"] * 60)  # 60 tokens + 8 new > 64 positions
    out = make(gpt_folder, tmp_path, max_new_tokens=8).generate(["  ", too_long, "the dog"])
    assert out.flag[0] == "blank text; not sent"
    assert out.text[1] is None and "prompt of 60 tokens" in out.flag[1] and "64 positions" in out.flag[1]
    assert "not sent" in out.flag[1]
    assert out.text[2] and out.flag[2] is None


def test_a_failing_batch_is_flagged_row_by_row_and_the_others_go_on(gpt_folder, tmp_path):
    gen = make(gpt_folder, tmp_path, max_new_tokens=4, batch_size=2)
    gen._load()
    real, calls = gen._model.generate, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    gen._model.generate = flaky
    out = gen.generate(PROMPTS[:4])
    failed = [f for f in out.flag if f is not None]
    assert len(failed) == 2 and all("RuntimeError: boom" in f and "batch of 2" in f for f in failed)
    assert out.ok.sum() == 2 and len(calls) == 2
    again = gen.generate(PROMPTS[:4])  # nothing failed was cached; the answers were
    assert again.ok.all() and again.cached.sum() == 2


def test_a_missing_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelFileError, match="no-such-model"):
        TransformersGenerator(str(missing), cache=str(tmp_path / "calls.sqlite")).generate(["the cat"])
    with pytest.raises(ModelFileError, match="no-such-model"):
        TransformersGenerator(missing, kind="seq2seq", cache=False).generate(["the cat"])


def test_what_cannot_be_loaded_is_a_config_error_naming_it(gpt_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty"):
        TransformersGenerator(str(tmp_path / "empty"), cache=False).generate(["the cat"])
    with pytest.raises(ConfigError, match="nobody-xyz/nothing-abc"):  # local files only: nothing is downloaded
        TransformersGenerator("nobody-xyz/nothing-abc", cache=False).generate(["the cat"])
    with pytest.raises(ConfigError, match="cannot load a seq2seq model"):
        TransformersGenerator(str(gpt_folder), kind="seq2seq", cache=False).generate(["the cat"])


def test_identity_names_the_model_its_kind_and_files(gpt_folder, tmp_path):
    gen = make(gpt_folder, tmp_path)
    identity = gen.identity()
    assert identity.startswith(f"transformers_generate:{gpt_folder.name}:causal:")
    assert identity.endswith(fingerprint(gpt_folder))
    folder = tmp_path / "copy"
    shutil.copytree(gpt_folder, folder)
    assert fingerprint(folder) == fingerprint(gpt_folder)  # a copy keeps its cached answers
    (folder / "generation_config.json").write_text('{"eos_token_id": 2}')
    assert fingerprint(folder) != fingerprint(gpt_folder)
    big = tmp_path / "big"
    big.mkdir()
    weights = np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8)
    (big / "model.safetensors").write_bytes(weights.tobytes())
    before = fingerprint(big)
    weights[::4096] ^= 1  # retrained weights of the same size (no file was renamed or resized)
    (big / "model.safetensors").write_bytes(weights.tobytes())
    assert fingerprint(big) != before
    gen.generate(["the cat"])
    restored = pickle.loads(pickle.dumps(gen))
    assert not hasattr(restored, "_model") and restored.identity() == identity


# -- sequence to sequence -------------------------------------------------------------------------
def test_seq2seq_answers_match_the_models_own_greedy_decoding(t5_folder, tmp_path):
    gen = make(t5_folder, tmp_path, max_new_tokens=8, batch_size=4)
    assert gen._resolved_kind() == "seq2seq"
    out = gen.generate(PROMPTS)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(t5_folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(t5_folder)
    for i, prompt in enumerate(PROMPTS):
        source = torch.tensor([tokenizer(prompt)["input_ids"]])
        tokens, logprobs = greedy(
            lambda seq, source=source: model(input_ids=source, decoder_input_ids=torch.tensor([seq])).logits[0, -1],
            [PAD],
            8,
        )
        if not tokens:
            assert out.flag[i] == "the generator returned no text"
            continue
        assert out.text[i] == decode(tokens)
        np.testing.assert_allclose(out.token_logprob[i], logprobs, atol=1e-4)
    assert out.ok.sum() >= 3


# -- image to text --------------------------------------------------------------------------------
def test_vision_encoder_decoder_captions_images_and_caches_them_by_pixels(ved_folder, tmp_path):
    from transformers import AutoImageProcessor, VisionEncoderDecoderModel

    gen = make(ved_folder, tmp_path, max_new_tokens=6, batch_size=2)
    assert gen.modalities == ("image",) and gen._resolved_kind() == "image-to-text"
    pictures = images(3)
    out = gen.generate(pictures, modality="image")
    assert out.ok.all() and not out.cached.any(), out.flag
    model = VisionEncoderDecoderModel.from_pretrained(ved_folder).eval()
    processor = AutoImageProcessor.from_pretrained(ved_folder)
    from PIL import Image

    for i, picture in enumerate(pictures):
        pixels = processor(images=[Image.fromarray(picture)], return_tensors="pt")["pixel_values"]
        tokens, logprobs = greedy(
            lambda seq, pixels=pixels: model(pixel_values=pixels, decoder_input_ids=torch.tensor([seq])).logits[0, -1],
            [BOS],
            6,
        )
        assert out.text[i] == decode(tokens)
        np.testing.assert_allclose(out.token_logprob[i], logprobs, atol=1e-4)
    assert out.prompt_tokens.tolist() == [0, 0, 0]
    copies = [p.copy() for p in pictures]
    again = gen.generate(copies, modality="image")
    assert again.cached.all() and again.text == out.text
    changed = [p.copy() for p in pictures[:1]]
    changed[0][0, 0, 0] ^= 1
    assert not gen.generate(changed, modality="image").cached[0]
    with pytest.raises(ConfigError, match="image"):
        gen.generate(["a text"])


def test_blip_captions_plainly_or_after_an_instruction(blip_folder, tmp_path):
    from PIL import Image
    from transformers import BlipForConditionalGeneration, BlipProcessor

    pictures = images(2, seed=1) + [images(1, seed=2)[0][:, :, :1]]  # a grey image too
    plain = make(blip_folder, tmp_path / "a", max_new_tokens=6).generate(pictures, modality="image")
    prefixed = make(blip_folder, tmp_path / "b", max_new_tokens=6, instruction="a big").generate(
        pictures, modality="image"
    )
    assert plain.ok.sum() >= 2 and prefixed.ok.sum() >= 2, (plain.flag, prefixed.flag)
    assert prefixed.prompt_tokens[prefixed.ok].tolist() == [2] * prefixed.ok.sum()
    assert (plain.prompt_tokens == 0).all()
    model = BlipForConditionalGeneration.from_pretrained(blip_folder).eval()
    processor = BlipProcessor.from_pretrained(blip_folder)
    for i, picture in enumerate(pictures):
        rgb = Image.fromarray(np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else picture)
        pixels = processor(images=[rgb], return_tensors="pt")["pixel_values"]
        for out, prompt in ((plain, [BOS]), (prefixed, [BOS, VOCAB["a"], VOCAB["big"]])):
            tokens, logprobs = greedy(
                lambda seq, pixels=pixels: model(pixel_values=pixels, input_ids=torch.tensor([seq])).logits[0, -1],
                prompt,
                6,
            )
            if not tokens:  # the caption ended at once: flagged, as any empty answer
                assert out.flag[i] == "the generator returned no text"
                continue
            assert out.text[i] == decode(tokens)  # the prefix is not repeated
            np.testing.assert_allclose(out.token_logprob[i], logprobs, atol=1e-4)


CHAT = (
    "{% for m in messages %}{{ m['role'] }} {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}assistant{% endif %}"
)


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory):
    """A chat vision-language model (LLaVA: CLIP vision tower, Llama text model) with its chat template."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = tmp_path_factory.mktemp("tiny-llava")
    tokenizer = word_tokenizer(extra_special_tokens={"image_token": "<image>"})
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", **TOWER, image_size=32, patch_size=8),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            bos_token_id=BOS,
            eos_token_id=EOS,
            pad_token_id=PAD,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = scramble(LlavaForConditionalGeneration(config), 5)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = EOS, PAD
    model.save_pretrained(folder)
    images_in = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(
        image_processor=images_in,
        tokenizer=tokenizer,
        patch_size=8,
        num_additional_image_tokens=1,
        vision_feature_select_strategy="default",
        chat_template=CHAT,
    ).save_pretrained(folder)
    return folder


def test_a_chat_vision_language_model_gets_the_image_in_the_users_turn(llava_folder, tmp_path):
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    pictures, hints = images(3, seed=3), ["big", None, "red dog sat"]  # prompts of different lengths in one batch
    gen = make(llava_folder, tmp_path, template=None, instruction="here", max_new_tokens=5, batch_size=3)
    assert gen.modalities == ("image",)
    out = gen.generate(pictures, hints=hints, modality="image")
    model = LlavaForConditionalGeneration.from_pretrained(llava_folder).eval()
    processor = AutoProcessor.from_pretrained(llava_folder)
    for i, (picture, hint) in enumerate(zip(pictures, hints)):
        turn = [{"type": "text", "text": f"here\n{hint}\nImage: " if hint else "here\nImage: "}, {"type": "image"}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": turn}], add_generation_prompt=True, tokenize=False
        )
        inputs = processor(images=[Image.fromarray(picture)], text=[text], return_tensors="pt")
        tokens, logprobs = greedy(
            lambda seq, inputs=inputs: model(input_ids=torch.tensor([seq]), pixel_values=inputs["pixel_values"]).logits[
                0, -1
            ],
            inputs["input_ids"][0].tolist(),
            5,
        )
        assert out.prompt_tokens[i] == inputs["input_ids"].shape[1] > 16  # the image's 16 placeholder tokens too
        if not tokens:
            assert out.flag[i] == "the generator returned no text"
            continue
        assert out.text[i] == decode(tokens)
        np.testing.assert_allclose(out.token_logprob[i], logprobs, atol=1e-4)
    assert out.ok.sum() >= 2


# -- the paper's captioning path: a small CNN-LSTM, a transformers image-to-text model last --------
def test_captioning_shunt_routes_saves_and_distills_on_tiny_models(ved_folder, tmp_path):
    from test_captioner import SETTINGS, make_shapes, references

    from datashunt import ShuntGenerator
    from datashunt.io.persist import load, save
    from datashunt.small.captioner import CaptionerGenerator

    X, truth = make_shapes(160, seed=0)
    refs = references(truth)
    stages = [
        ("small", CaptionerGenerator(**{**SETTINGS, "epochs": 4})),
        ("large", make(ved_folder, tmp_path, max_new_tokens=6)),
    ]
    shunt = ShuntGenerator(stages, metric="bleu1", random_state=0)
    shunt.fit(X[:100], refs[:100], X_val=X[100:140], references_val=refs[100:140])
    assert shunt.modality_ == "image" and len(shunt.thresholds_) == 1
    table = shunt.route(X[140:])
    assert set(table["route"]) <= {"small", "large"} and table["text"].notna().all()
    small_conf = table.loc[table["route"] == "small", "confidence"]
    assert (small_conf >= shunt.thresholds_[0]).all()  # a kept caption cleared δ; the rest went on
    folder = save(shunt, tmp_path / "saved")
    again = load(folder, large_options={"large": {"model": str(ved_folder), "cache": str(tmp_path / "c.sqlite")}})
    assert again.route(X[140:])["text"].tolist() == table["text"].tolist()
    with pytest.raises(ConfigError, match="takes where its calls go only from you"):
        load(folder)  # the large model's folder comes from the caller, never from the saved files
    shunt.distill(X[140:], min_confidence=0.0, epochs=1)
    assert shunt.distillation_["n_pool"] == 20 and shunt.learnable_ is not shunt.stages_[0][1]
    assert set(shunt.route(X[140:])["route"]) <= {"small", "learnable", "large"}
