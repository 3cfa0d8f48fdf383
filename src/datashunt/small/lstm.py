"""A bidirectional LSTM over learned word embeddings, pooled over the words."""

from numbers import Integral

from sklearn.utils._param_validation import Interval

from .torch_text import WordSequenceClassifier


class LSTMClassifier(WordSequenceClassifier):
    """Word embeddings, a bidirectional LSTM, mean- and max-pooling over the words, a linear layer.

    Texts are split by :func:`~datashunt.small.torch_text.tokenize`; the LSTM reads each text
    without its padding (packed sequences), so a text's probabilities do not depend on its batch.
    The mean and the maximum of the LSTM's outputs over the words are concatenated, pass dropout
    and a linear layer. Trained with Adam on cross-entropy.

    Parameters
    ----------
    epochs : int, default=8
        Passes over the training data.
    batch_size : int, default=32
        Texts per mini-batch (training and prediction).
    lr : float, default=2e-3
        Adam's learning rate.
    max_len : int, default=100
        Words kept per text; the rest is cut.
    embedding_dim : int, default=128
        Size of the word embeddings.
    hidden_size : int, default=128
        LSTM units per direction.
    num_layers : int, default=1
        Stacked LSTM layers.
    dropout : float, default=0.5
        Dropout on the embeddings and on the pooled features.
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
    >>> model = LSTMClassifier(epochs=5, random_state=0).fit(texts, labels)
    >>> model.predict(["a superb movie", "a dull movie"]).tolist()
    ['positive', 'negative']
    """

    _parameter_constraints = {
        **WordSequenceClassifier._shared_constraints,
        "hidden_size": [Interval(Integral, 1, 4096, closed="both")],
        "num_layers": [Interval(Integral, 1, 16, closed="both")],
    }

    def __init__(
        self,
        *,
        epochs=8,
        batch_size=32,
        lr=2e-3,
        max_len=100,
        embedding_dim=128,
        hidden_size=128,
        num_layers=1,
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
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.max_vocab = max_vocab
        self.min_count = min_count
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.progress = progress

    def _new_module(self, torch, pretrained=True):
        nn = torch.nn
        pack = nn.utils.rnn.pack_padded_sequence
        unpack = nn.utils.rnn.pad_packed_sequence
        n_words, n_classes = len(self.vocabulary_), len(self.classes_)

        class BiLSTM(nn.Module):
            def __init__(self, dim, hidden, layers, dropout):
                super().__init__()
                self.embedding = nn.Embedding(n_words, dim, padding_idx=0)
                self.lstm = nn.LSTM(
                    dim,
                    hidden,
                    num_layers=layers,
                    batch_first=True,
                    bidirectional=True,
                    dropout=dropout if layers > 1 else 0.0,
                )
                self.dropout = nn.Dropout(dropout)
                self.out = nn.Linear(4 * hidden, n_classes)

            def forward(self, ids, mask):
                lengths = mask.sum(dim=1)
                x = self.dropout(self.embedding(ids))
                packed = pack(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
                h, _ = unpack(self.lstm(packed)[0], batch_first=True, total_length=ids.shape[1])
                inside = mask[:, :, None].to(h.dtype)
                mean = (h * inside).sum(dim=1) / lengths[:, None].to(h.dtype)
                top = h.masked_fill(inside == 0, float("-inf")).amax(dim=1)
                return self.out(self.dropout(torch.cat([mean, top], dim=1)))

        return BiLSTM(self.embedding_dim, self.hidden_size, self.num_layers, self.dropout)
