"""TextCNN (Kim 2014): word embeddings, convolutions of several widths, max-pooling over time."""

from numbers import Integral

from sklearn.utils._param_validation import Interval

from .torch_text import WordSequenceClassifier


class TextCNNClassifier(WordSequenceClassifier):
    """Kim's (2014) convolutional sentence classifier, embeddings learned from scratch ("CNN-rand").

    Texts are split by :func:`~datashunt.small.torch_text.tokenize`; each width in ``kernel_sizes``
    gets ``n_filters`` ReLU convolutions, max-pooled over the words of the text; the pooled features
    pass dropout and a linear layer. Trained with Adam on cross-entropy.

    Parameters
    ----------
    epochs : int, default=12
        Passes over the training data.
    batch_size : int, default=50
        Texts per mini-batch (training and prediction).
    lr : float, default=1e-3
        Adam's learning rate.
    max_len : int, default=100
        Words kept per text; the rest is cut.
    embedding_dim : int, default=128
        Size of the word embeddings.
    n_filters : int, default=100
        Convolution filters per width.
    kernel_sizes : tuple of int, default=(3, 4, 5)
        Convolution widths, in words.
    dropout : float, default=0.5
        Dropout on the pooled features.
    max_vocab : int or None, default=20000
        Largest vocabulary, padding and unknown-word ids included; the most frequent words are kept.
    min_count : int, default=1
        Words seen fewer times in ``fit`` are unknown.
    random_state : int, RandomState or None, default=None
        Seeds initial weights, dropout and shuffling; an int makes ``fit`` reproducible.
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
    vocabulary_ : dict of str to int
        Word ids; 0 pads, 1 is an unknown word.
    module_ : torch.nn.Module
        The trained network.

    Examples
    --------
    >>> texts = [f"great superb movie {i}" for i in range(20)] + [f"awful dull movie {i}" for i in range(20)]
    >>> labels = ["positive"] * 20 + ["negative"] * 20
    >>> model = TextCNNClassifier(epochs=5, random_state=0).fit(texts, labels)
    >>> model.predict(["a superb movie", "a dull movie"]).tolist()
    ['positive', 'negative']
    """

    _parameter_constraints = {
        **WordSequenceClassifier._shared_constraints,
        "n_filters": [Interval(Integral, 1, 4096, closed="both")],
        "kernel_sizes": [tuple, list],
    }

    def __init__(
        self,
        *,
        epochs=12,
        batch_size=50,
        lr=1e-3,
        max_len=100,
        embedding_dim=128,
        n_filters=100,
        kernel_sizes=(3, 4, 5),
        dropout=0.5,
        max_vocab=20000,
        min_count=1,
        random_state=None,
        device="cpu",
        n_threads=None,
        progress=False,
    ):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.max_len = max_len
        self.embedding_dim = embedding_dim
        self.n_filters = n_filters
        self.kernel_sizes = kernel_sizes
        self.dropout = dropout
        self.max_vocab = max_vocab
        self.min_count = min_count
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.progress = progress

    @property
    def _min_len(self):  # batches are padded to the widest kernel
        return max(int(k) for k in self.kernel_sizes)

    def _new_module(self, torch, pretrained=True):
        nn = torch.nn
        widths = [int(k) for k in self.kernel_sizes]
        n_words, n_classes = len(self.vocabulary_), len(self.classes_)

        class TextCNN(nn.Module):
            def __init__(self, dim, n_filters, dropout):
                super().__init__()
                self.embedding = nn.Embedding(n_words, dim, padding_idx=0)
                self.convs = nn.ModuleList(nn.Conv1d(dim, n_filters, k) for k in widths)
                self.dropout = nn.Dropout(dropout)
                self.out = nn.Linear(n_filters * len(widths), n_classes)

            def forward(self, ids, mask):
                x = self.embedding(ids).transpose(1, 2)  # (batch, dim, words)
                lengths = mask.sum(dim=1, keepdim=True)
                pooled = []
                for k, conv in zip(widths, self.convs):
                    h = torch.relu(conv(x))  # (batch, filters, windows)
                    # windows inside the text (padded to k): the result does not depend on the batch's padding
                    last = lengths.clamp(min=k) - k
                    inside = torch.arange(h.shape[2], device=h.device)[None, :] <= last
                    pooled.append((h * inside[:, None, :]).amax(dim=2))  # ReLU >= 0, so 0 never wins wrongly
                return self.out(self.dropout(torch.cat(pooled, dim=1)))

        return TextCNN(self.embedding_dim, self.n_filters, self.dropout)
