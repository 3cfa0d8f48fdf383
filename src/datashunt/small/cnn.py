"""A small convolutional network for images: three convolution blocks, global pooling, a linear layer."""

from numbers import Integral, Real

from sklearn.utils._param_validation import Interval

from .torch_image import TorchImageClassifier


class SmallCNNClassifier(TorchImageClassifier):
    """A fast image classifier: three blocks of 3×3 convolution, batch norm and ReLU (``width``, 2×, 4×
    channels; the first two max-pooled), global average pooling, dropout and a linear layer, trained
    with Adam from scratch.

    Parameters
    ----------
    epochs : int, default=30
        Passes over the training data.
    batch_size : int, default=128
        Images per mini-batch (training and prediction).
    lr : float, default=2e-3
        Adam's learning rate.
    width : int, default=32
        Channels of the first block.
    dropout : float, default=0.3
        Dropout before the linear layer.
    image_size, augment, class_weight, random_state, device, n_threads, progress
        As for :class:`~datashunt.small.resnet.ResNet32Classifier`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 60, size=(40, 12, 12), dtype=np.uint8)
    >>> X[20:, 3:9, 3:9] = 255                                   # a bright square: class "b"
    >>> y = ["a"] * 20 + ["b"] * 20
    >>> model = SmallCNNClassifier(epochs=10, width=8, random_state=0).fit(X, y)
    >>> (model.predict(X) == np.array(y)).mean() > 0.9
    np.True_
    """

    _parameter_constraints = {
        **TorchImageClassifier._shared_constraints,
        "width": [Interval(Integral, 1, 1024, closed="both")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        *,
        epochs=30,
        batch_size=128,
        lr=2e-3,
        width=32,
        dropout=0.3,
        image_size=None,
        augment=True,
        class_weight=None,
        random_state=None,
        device="cpu",
        n_threads=None,
        progress=False,
    ):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.width = width
        self.dropout = dropout
        self.image_size = image_size
        self.augment = augment
        self.class_weight = class_weight
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.progress = progress

    def _new_module(self, torch, pretrained=True):
        nn = torch.nn
        w, channels = int(self.width), self.input_shape_[2]

        def block(cin, cout, pool):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            return layers + [nn.MaxPool2d(2)] if pool else layers

        return nn.Sequential(
            *block(channels, w, True),
            *block(w, 2 * w, True),
            *block(2 * w, 4 * w, False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(self.dropout),
            nn.Linear(4 * w, len(self.classes_)),
        )
