"""A small image captioner: a CNN encoder and an LSTM decoder with soft attention ("Show, Attend and
Tell", Xu et al. 2015), trained from scratch, answering as a generation stage.

:class:`CaptionerGenerator` fulfils the generation contract of
:class:`~datashunt.backends.generate.base.Generator`: :meth:`~CaptionerGenerator.generate` returns a
:class:`~datashunt.backends.generate.base.Generation` with the log-probability of every word it
chose, so its confidence is the mean probability of those words
(:func:`datashunt.core.sequence.mean_proba`, the paper's C for a caption). It is also trainable:
``fit(images, references)`` and, for sequence-level 2-stage confidence distillation,
``distill(images, captions)`` on the large model's confident captions.

The network. Images are resized to ``image_size``² and standardised per channel (statistics from
``fit``); each block of the encoder is a 3×3 convolution, batch norm, ReLU and 2×2 max pooling, so
three blocks turn a 64×64 image into an 8×8 grid of 64 annotation vectors ``a_i``. The decoder
starts from ``h0, c0 = tanh(W·mean(a))``; at every step soft attention (Bahdanau: ``e_i = v·tanh(W_a
a_i + W_h h)``, ``α = softmax(e)``) gives the context ``z = β·Σ α_i a_i`` with the gate ``β =
σ(W_β h)``; an LSTM cell reads the previous word's embedding and ``z``; the deep output layer
gives the next word's logits ``L_o(E y + L_h h + L_z z)``. The loss is the words' cross-entropy
under teacher forcing plus the doubly stochastic regulariser ``alpha_c · Σ_i (1 − Σ_t α_ti)²``,
minimised with Adam (gradients clipped to norm 5). torch is imported only when a model is
fitted, used or restored; the state is plain Python and numpy (pickle, skops).
"""

import contextlib
import re
import time
from collections import Counter
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted, check_random_state

from ..backends.generate.base import Generation
from ..core.inputs import require_valid
from ..core.params import check_params
from ..exceptions import ConfigError, DataError, require
from ..modalities import as_inputs
from ..progress import track
from .torch_image import conform

SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")
PAD, START, END, UNK = range(4)
WORD_RE = re.compile(r"\w+(?:'\w+)?")
EMPTY_FLAG = "empty caption: the captioner chose <end> first"


def caption_words(text: str) -> list[str]:
    """The lower-cased words of a caption; punctuation is dropped.

    Examples
    --------
    >>> caption_words("A dog's ball, on the GRASS.")
    ['a', "dog's", 'ball', 'on', 'the', 'grass']
    """
    return WORD_RE.findall(text.lower())


def build_caption_vocabulary(captions, min_count: int = 1) -> list[str]:
    """``<pad> <start> <end> <unk>`` and the words seen at least ``min_count`` times, most frequent
    first (ties alphabetical, so the order of the captions does not matter); a word's id is its index.

    Examples
    --------
    >>> build_caption_vocabulary(["a red square", "a blue square"], min_count=2)
    ['<pad>', '<start>', '<end>', '<unk>', 'a', 'square']
    """
    counts = Counter(word for caption in captions for word in caption_words(caption))
    kept = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIALS), key=lambda w: (-counts[w], w))
    return [*SPECIALS, *kept]


class CaptionerGenerator(BaseEstimator):
    """A small CNN-LSTM captioner with soft attention, trained from scratch (Xu et al. 2015).

    Parameters
    ----------
    image_size : int, default=64
        Images are resized (bilinear) to this side; the encoder halves it once per block.
    embed_dim, hidden_dim, attention_dim : int, default=128, 256, 128
        Word embedding, LSTM state and attention layer sizes.
    encoder_channels : tuple of int, default=(32, 64, 128)
        Channels of the encoder's blocks (3×3 conv, batch norm, ReLU, 2×2 max pool); the last one is
        the size of an annotation vector.
    vocab_min_count : int, default=1
        Words seen fewer times in the training captions become ``<unk>``.
    max_len : int, default=20
        Longest caption in words: training captions are cut there, decoding stops there.
    epochs : int, default=10
        Passes over all (image, caption) pairs.
    batch_size : int, default=32
        Pairs per training step; images per decoding batch.
    lr : float, default=1e-3
        Adam's learning rate.
    alpha_c : float, default=1.0
        Weight of the doubly stochastic attention regulariser (0: none).
    random_state : int, RandomState or None
        Seeds the weights and the order of the batches (the caller's random state is left alone).
    verbose : bool, default=False
        Draw a progress bar over the training steps.
    device : str, default="cpu"
        Where torch runs ("cpu", "cuda", "cuda:0", "mps").

    Attributes
    ----------
    vocabulary_ : list of str
        The words; a word's id is its index (0-3: ``<pad> <start> <end> <unk>``).
    n_channels_, pixel_mean_, pixel_std_
        The input channels (3 if any training image has colour, else 1) and their statistics.

    Notes
    -----
    :meth:`generate` decodes greedily. ``token_logprob`` holds the log-probability of each *word*
    of the caption (the closing ``<end>`` is not a word and is not counted; neither in
    ``completion_tokens``); a caption cut at ``max_len`` has ``max_len`` words. If the first choice
    is ``<end>``, the row's text is None and its flag says "empty caption". ``<unk>`` can be chosen
    and then appears as ``<unk>`` in the text. The model is not shown hints. Training uses no image
    augmentation (a caption may say "left" or "right").

    Example (not run here)::

        model = CaptionerGenerator(image_size=32, epochs=5, random_state=0).fit(images, captions)
        got = model.generate(new_images)
        got.text, mean_proba(got.token_logprob)    # captions and their confidence
        model.distill(more_images, large_model_captions, epochs=2)
    """

    modalities = ("image",)
    _clip_norm = 5.0
    _transient = ("module_", "word_index_")
    _fitted_attributes = ("vocabulary_", "n_channels_", "pixel_mean_", "pixel_std_", "module_state_")
    _parameter_constraints = {
        "image_size": [Interval(Integral, 2, 4096, closed="both")],
        "embed_dim": [Interval(Integral, 1, 1 << 14, closed="both")],
        "hidden_dim": [Interval(Integral, 1, 1 << 14, closed="both")],
        "attention_dim": [Interval(Integral, 1, 1 << 14, closed="both")],
        "encoder_channels": [tuple, list],
        "vocab_min_count": [Interval(Integral, 1, None, closed="left")],
        "max_len": [Interval(Integral, 1, 1024, closed="both")],
        "epochs": [Interval(Integral, 1, 10_000, closed="both")],
        "batch_size": [Interval(Integral, 1, 1 << 16, closed="both")],
        "lr": [Interval(Real, 0, 10, closed="right")],
        "alpha_c": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["boolean"],
        "device": [StrOptions({"cpu", "cuda", "mps"} | {f"cuda:{i}" for i in range(16)})],
    }

    def __init__(
        self,
        *,
        image_size=64,
        embed_dim=128,
        hidden_dim=256,
        attention_dim=128,
        encoder_channels=(32, 64, 128),
        vocab_min_count=1,
        max_len=20,
        epochs=10,
        batch_size=32,
        lr=1e-3,
        alpha_c=1.0,
        random_state=None,
        verbose=False,
        device="cpu",
    ):
        self.image_size = image_size
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.attention_dim = attention_dim
        self.encoder_channels = encoder_channels
        self.vocab_min_count = vocab_min_count
        self.max_len = max_len
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.alpha_c = alpha_c
        self.random_state = random_state
        self.verbose = verbose
        self.device = device

    def _validate_params(self):
        super()._validate_params()
        channels = list(self.encoder_channels)
        if not channels or not all(
            isinstance(c, Integral) and not isinstance(c, bool) and 1 <= c <= 4096 for c in channels
        ):
            raise InvalidParameterError(
                "The 'encoder_channels' parameter must be a non-empty tuple of integers "
                f"in [1, 4096]. Got {self.encoder_channels!r} instead."
            )
        if self.image_size >> len(channels) < 1:
            raise InvalidParameterError(
                f"The 'image_size' parameter ({self.image_size}) is too small for "
                f"{len(channels)} encoder blocks, each halving it; give at least "
                f"{1 << len(channels)}."
            )

    # -- training -----------------------------------------------------------------------------

    def fit(self, X, references):
        """Learn the vocabulary, the pixel statistics and the network from images and their captions.

        Parameters
        ----------
        X : images
            Anything :func:`datashunt.modalities.as_inputs` reads as images; every one must decode.
        references : sequence
            Per image, one caption string or a list of them; every (image, caption) pair is trained on.

        Returns
        -------
        self
        """
        check_params(self)
        images, captions = self._check_pairs(X, references)
        with self._torch() as torch:
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            with self._seeded(torch, seed):
                self.vocabulary_ = build_caption_vocabulary([c for cs in captions for c in cs], self.vocab_min_count)
                self.word_index_ = {w: i for i, w in enumerate(self.vocabulary_)}
                self.n_channels_ = 3 if any(image.shape[2] == 3 for image in images) else 1
                pixels = self._encode_images(images).reshape(-1, self.n_channels_).astype(np.float64) / 255.0
                self.pixel_mean_ = pixels.mean(axis=0).tolist()
                self.pixel_std_ = np.maximum(pixels.std(axis=0), 1e-3).tolist()
                self.module_ = self._new_module(torch).to(self.device)
                self._train(torch, images, captions, self.epochs, np.random.default_rng(seed))
        return self

    def distill(self, X, references, epochs: int | None = None):
        """Train on from the current weights with new (image, caption) pairs, such as the large
        model's confident captions (sequence-level 2-stage confidence distillation).

        The vocabulary and pixel statistics stay those of :meth:`fit` (unknown words are trained as
        ``<unk>``). The model changes in place: ``copy.deepcopy`` it first to keep the original.

        Parameters
        ----------
        X, references : as for :meth:`fit`
        epochs : int, optional
            Passes over the new pairs; ``self.epochs`` when None.

        Returns
        -------
        self
        """
        check_is_fitted(self, "module_")
        check_params(self)
        if epochs is None:
            epochs = self.epochs
        if not isinstance(epochs, Integral) or isinstance(epochs, bool) or epochs < 1:
            raise ConfigError(f"distill: epochs must be a positive integer or None, got {epochs!r}")
        images, captions = self._check_pairs(X, references)
        with self._torch() as torch:
            seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max) + 1
            with self._seeded(torch, seed):
                self._train(torch, images, captions, int(epochs), np.random.default_rng(seed))
        return self

    def _check_pairs(self, X, references):
        """The decoded images and, per image, its non-empty captions; DataError naming what is wrong."""
        batch = as_inputs(X, "image")  # an empty batch is refused here: "no inputs"
        if isinstance(references, (str, bytes)) or not hasattr(references, "__len__"):
            raise DataError(
                f"references must hold one caption (or a list of captions) per image, got a {type(references).__name__}"
            )
        references = list(references.tolist() if isinstance(references, (np.ndarray, pd.Series)) else references)
        if len(references) != len(batch):
            raise DataError(
                f"got {len(batch)} images but {len(references)} references; give one caption "
                "(or a list of captions) per image"
            )
        require_valid(
            batch.problems, what="images", hint="Give each row a decodable image (array, PIL image or file path)."
        )
        captions = []
        for i, ref in enumerate(references):
            found = (
                [ref]
                if isinstance(ref, str)
                else list(ref)
                if isinstance(ref, (list, tuple, np.ndarray, pd.Series))
                else None
            )
            if found is None:
                raise DataError(f"row {i}: expected a caption string or a list of them, got {type(ref).__name__}")
            wrong = [c for c in found if not isinstance(c, str)]
            if wrong:
                raise DataError(f"row {i}: a caption must be a string, got {type(wrong[0]).__name__}")
            found = [c for c in found if caption_words(c)]  # blank captions among good ones are dropped
            if not found:
                raise DataError(f"row {i}: the image has no caption (none with a word)")
            captions.append(found)
        return batch.items, captions

    def _ids(self, caption: str) -> np.ndarray:
        """``<start>``, the caption's word ids (at most ``max_len``; unknown: ``<unk>``) and ``<end>``."""
        words = caption_words(caption)[: self.max_len]
        return np.array([START, *(self.word_index_.get(w, UNK) for w in words), END], dtype=np.int64)

    def _train(self, torch, images, captions, epochs: int, rng) -> None:
        encoded = self._encode_images(images)
        pairs = [(i, self._ids(c)) for i, cs in enumerate(captions) for c in cs]
        params = [p for p in self.module_.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr)
        batches = [
            order[s : s + self.batch_size]
            for order in (rng.permutation(len(pairs)) for _ in range(epochs))
            for s in range(0, len(pairs), self.batch_size)
        ]
        self.module_.train()
        for rows in track(batches, f"training {type(self).__name__}", enabled=self.verbose):
            x = self._pixels(torch, encoded[[pairs[r][0] for r in rows]])
            ids = torch.from_numpy(_pad([pairs[r][1] for r in rows])).to(self.device)
            logprob, alpha = self.module_(x, ids[:, :-1])
            target = ids[:, 1:]
            loss = torch.nn.functional.nll_loss(
                logprob.reshape(-1, logprob.shape[-1]), target.reshape(-1), ignore_index=PAD
            )
            if self.alpha_c:
                alpha = alpha * (target != PAD).unsqueeze(2).to(alpha.dtype)  # padded steps attend nowhere
                loss = loss + self.alpha_c * ((1.0 - alpha.sum(dim=1)) ** 2).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self._clip_norm)
            optimizer.step()
        self.module_.eval()

    # -- answering ----------------------------------------------------------------------------

    def generate(self, inputs, hints=None, progress: bool = False, modality="auto"):
        """Caption each image greedily; unreadable images are flagged per row, never raised.

        ``hints`` (one per input) is accepted for the generator contract and ignored: the model
        reads images only. ``modality="auto"`` reads the inputs as images (file paths included).
        ``cost`` and ``price`` are zero; ``seconds`` is each image's share of its decoding batch.

        Returns
        -------
        Generation
            ``text`` (words joined by spaces, or None), ``token_logprob`` (one log-probability per
            word), ``completion_tokens`` (the number of words) and ``flag`` per row.
        """
        check_is_fitted(self, "module_")
        n = len(inputs)
        out = Generation.empty(n)
        if n == 0:
            return out
        batch = as_inputs(inputs, "image" if modality == "auto" else modality)  # paths as strings are images
        self.check_modality(batch.modality.name)
        if hints is not None and len(hints) != n:
            raise ConfigError(f"got {len(hints)} hints for {n} inputs")
        problems = batch.problems or [None] * n
        for i, problem in enumerate(problems):
            if problem is not None:
                out.flag[i] = f"{problem}; not captioned"
        rows = [i for i, p in enumerate(problems) if p is None]
        chunks = [rows[s : s + self.batch_size] for s in range(0, len(rows), self.batch_size)]
        with self._torch() as torch, torch.no_grad():
            self.module_.eval()
            for chunk in track(chunks, f"captioning with {type(self).__name__}", enabled=progress):
                start = time.perf_counter()
                words, logprobs = self._greedy(torch, self._encode_images([batch.items[i] for i in chunk]))
                seconds = (time.perf_counter() - start) / len(chunk)
                for i, ids, lp in zip(chunk, words, logprobs):
                    out.seconds[i] = seconds
                    if not ids:
                        out.flag[i] = EMPTY_FLAG
                        continue
                    out.text[i] = " ".join(self.vocabulary_[w] for w in ids)
                    out.token_logprob[i] = lp
                    out.completion_tokens[i] = len(ids)
        return out

    def caption_logprob(self, X, captions) -> list[np.ndarray]:
        """Log-probability of each word of ``captions[i]`` given image ``X[i]`` (teacher forcing), as
        :meth:`generate` reports them for its own captions: words only, unknown ones as ``<unk>``.

        The images must decode (DataError otherwise).
        """
        check_is_fitted(self, "module_")
        images, found = self._check_pairs(X, [[c] if isinstance(c, str) else c for c in captions])
        ids = [self._ids(cs[0]) for cs in found]
        encoded = self._encode_images(images)
        out = []
        with self._torch() as torch, torch.no_grad():
            self.module_.eval()
            for s in range(0, len(ids), self.batch_size):
                chunk = ids[s : s + self.batch_size]
                padded = torch.from_numpy(_pad(chunk)).to(self.device)
                logprob, _ = self.module_(self._pixels(torch, encoded[s : s + self.batch_size]), padded[:, :-1])
                picked = logprob.gather(2, padded[:, 1:].unsqueeze(2)).squeeze(2).double().cpu().numpy()
                out += [picked[j, : len(row) - 2] for j, row in enumerate(chunk)]
        return out

    def check_modality(self, name: str) -> None:
        """Refuse items of modality ``name``: the captioner reads images only."""
        if name not in self.modalities:
            raise ConfigError(
                f"{type(self).__name__} answers about images, not {name} items; "
                "give images (arrays, PIL images or file paths)"
            )

    def price_of(self, prompt_tokens, completion_tokens) -> np.ndarray:
        """A local model: every answer is free."""
        return np.zeros(len(completion_tokens))

    def _greedy(self, torch, encoded):
        """Word ids (without ``<end>``) and their log-probabilities for a batch of encoded images."""
        net = self.module_
        annotations = net.encode(self._pixels(torch, encoded))
        projected = net.att_a(annotations)
        h, c = net.begin(annotations)
        n = len(encoded)
        prev = torch.full((n,), START, dtype=torch.long, device=annotations.device)
        chosen, scores = [], []
        done = torch.zeros(n, dtype=torch.bool, device=annotations.device)
        for _ in range(self.max_len):
            logits, _, h, c = net.step(annotations, projected, prev, h, c)
            logprob = torch.log_softmax(logits, dim=1)
            best = logprob.argmax(dim=1)
            chosen.append(best)
            scores.append(logprob.gather(1, best[:, None])[:, 0])
            done = done | (best == END)
            if bool(done.all()):
                break
            prev = best
        chosen = torch.stack(chosen, 1).cpu().numpy()
        scores = torch.stack(scores, 1).double().cpu().numpy()
        words, logprobs = [], []
        for ids, lp in zip(chosen, scores):
            ends = np.flatnonzero(ids == END)
            k = int(ends[0]) if len(ends) else len(ids)
            words.append(ids[:k].tolist())
            logprobs.append(np.minimum(lp[:k], 0.0))
        return words, logprobs

    # -- images and the network ---------------------------------------------------------------

    def _encode_images(self, images) -> np.ndarray:
        size = int(self.image_size)
        return np.stack([conform(image, size, size, self.n_channels_) for image in images])

    def _pixels(self, torch, encoded):
        x = torch.from_numpy(np.ascontiguousarray(encoded)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.pixel_mean_, dtype=x.dtype, device=x.device)[None, :, None, None]
        std = torch.tensor(self.pixel_std_, dtype=x.dtype, device=x.device)[None, :, None, None]
        return (x - mean) / std

    def _new_module(self, torch):
        return _network(torch)(
            self.n_channels_,
            tuple(int(c) for c in self.encoder_channels),
            len(self.vocabulary_),
            int(self.embed_dim),
            int(self.hidden_dim),
            int(self.attention_dim),
        )

    @contextlib.contextmanager
    def _torch(self):
        yield require("torch", "torch")

    @contextlib.contextmanager
    def _seeded(self, torch, seed: int):
        """Seed torch (the initial weights) without changing the caller's global random state."""
        device = torch.device(self.device)
        if device.type == "cpu":
            state = torch.random.get_rng_state()
            try:
                torch.manual_seed(seed)
                yield
            finally:
                torch.random.set_rng_state(state)
            return
        with torch.random.fork_rng(devices=[device], device_type=device.type):
            torch.manual_seed(seed)
            yield

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    # -- state: plain Python and numpy only ---------------------------------------------------

    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in self._transient}
        if "module_" in self.__dict__:
            state["module_state_"] = {k: v.detach().cpu().numpy().copy() for k, v in self.module_.state_dict().items()}
        return state

    def __setstate__(self, state):
        """Restore from plain data only: the parameters (checked), the vocabulary, the pixel
        statistics and the weights (named arrays); anything else is refused (``ValueError``)."""
        state = dict(state)
        unknown = sorted(set(state) - set(self._get_param_names()) - set(self._fitted_attributes))
        if unknown:
            raise ValueError(f"{type(self).__name__} state has unexpected attribute(s) {unknown}")
        weights = state.pop("module_state_", None)
        if weights is not None and not (
            isinstance(weights, dict)
            and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in weights.items())
        ):
            raise ValueError(f"{type(self).__name__} weights must be named arrays")
        vocabulary = state.get("vocabulary_")
        if vocabulary is not None and not (
            isinstance(vocabulary, (list, tuple))
            and all(isinstance(w, str) for w in vocabulary)
            and tuple(vocabulary[:4]) == SPECIALS
        ):
            raise ValueError(f"{type(self).__name__} vocabulary must be a list of words starting with {SPECIALS}")
        self.__dict__.update(state)
        check_params(self)
        if vocabulary is not None:
            self.vocabulary_ = list(vocabulary)
            self.word_index_ = {w: i for i, w in enumerate(self.vocabulary_)}
        if weights is None:
            return
        with self._torch() as torch, self._seeded(torch, 0):  # initial weights are overwritten: spare the RNG
            module = self._new_module(torch)
            module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
            self.module_ = module.to(self.device).eval()


def _pad(ids) -> np.ndarray:
    """Id sequences stacked into one array, padded with ``<pad>`` to the longest."""
    out = np.full((len(ids), max(len(row) for row in ids)), PAD, dtype=np.int64)
    for i, row in enumerate(ids):
        out[i, : len(row)] = row
    return out


_NETWORK = None


def _network(torch):
    """The network class, defined once torch is imported."""
    global _NETWORK
    if _NETWORK is not None:
        return _NETWORK
    nn = torch.nn

    class ShowAttendTell(nn.Module):
        """Encoder blocks → a grid of annotation vectors; an LSTM decoder with soft attention."""

        def __init__(self, channels, encoder_channels, vocab, embed, hidden, attention):
            super().__init__()
            blocks, cin = [], channels
            for cout in encoder_channels:
                blocks += [
                    nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                ]
                cin = cout
            self.encoder = nn.Sequential(*blocks)
            self.embed = nn.Embedding(vocab, embed, padding_idx=PAD)
            self.init_h, self.init_c = nn.Linear(cin, hidden), nn.Linear(cin, hidden)
            self.att_a, self.att_h, self.att_v = (
                nn.Linear(cin, attention),
                nn.Linear(hidden, attention),
                nn.Linear(attention, 1),
            )
            self.gate = nn.Linear(hidden, cin)
            self.lstm = nn.LSTMCell(embed + cin, hidden)
            self.out_h, self.out_z, self.out = nn.Linear(hidden, embed), nn.Linear(cin, embed), nn.Linear(embed, vocab)
            never = torch.zeros(vocab, dtype=torch.bool)
            never[[PAD, START]] = True  # never a next word: masked out of every distribution
            self.register_buffer("never", never, persistent=False)

        def encode(self, x):
            return self.encoder(x).flatten(2).transpose(1, 2)  # (n, locations, channels)

        def begin(self, annotations):
            mean = annotations.mean(dim=1)
            return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))

        def step(self, annotations, projected, prev, h, c):
            alpha = torch.softmax(self.att_v(torch.tanh(projected + self.att_h(h)[:, None])).squeeze(2), dim=1)
            z = torch.sigmoid(self.gate(h)) * (alpha.unsqueeze(2) * annotations).sum(dim=1)
            embedded = self.embed(prev)
            h, c = self.lstm(torch.cat([embedded, z], dim=1), (h, c))
            logits = self.out(embedded + self.out_h(h) + self.out_z(z)).masked_fill(self.never, float("-inf"))
            return logits, alpha, h, c

        def forward(self, x, inputs):
            """Teacher forcing: log-probabilities ``(n, T, vocab)`` of the next words and attention ``(n, T, L)``."""
            annotations = self.encode(x)
            projected = self.att_a(annotations)
            h, c = self.begin(annotations)
            logprobs, alphas = [], []
            for t in range(inputs.shape[1]):
                logits, alpha, h, c = self.step(annotations, projected, inputs[:, t], h, c)
                logprobs.append(torch.log_softmax(logits, dim=1))
                alphas.append(alpha)
            return torch.stack(logprobs, 1), torch.stack(alphas, 1)

    _NETWORK = ShowAttendTell
    return _NETWORK
