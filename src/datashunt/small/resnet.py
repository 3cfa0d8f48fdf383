"""ResNet-32 for small images (He et al. 2016, the CIFAR variant), trained from scratch."""

from numbers import Integral, Real

from sklearn.utils._param_validation import Interval

from .torch_image import TorchImageClassifier


class ResNet32Classifier(TorchImageClassifier):
    """The CIFAR ResNet-32 the paper routes long-tailed images with: 3 stages of 5 basic blocks.

    A 3×3 convolution of 16 channels, then stages of 16, 32 and 64 channels (the last two halve the
    resolution; their shortcuts subsample and zero-pad channels, He et al.'s option A), global
    average pooling and a linear layer. Trained with SGD (momentum 0.9, Nesterov, weight decay),
    a linear warm-up over the first epoch and a cosine schedule, from scratch.

    Parameters
    ----------
    epochs : int, default=60
        Passes over the training data.
    batch_size : int, default=128
        Images per mini-batch (training and prediction).
    lr : float, default=0.1
        Peak learning rate.
    weight_decay : float, default=5e-4
        L2 penalty on the weights.
    width : int, default=16
        Channels of the first stage (the others have 2× and 4×).
    blocks : int, default=5
        Basic blocks per stage (5: ResNet-32; 3: ResNet-20).
    image_size : int or None, default=None
        Side images are resized to; None keeps the training images' most common size.
    augment : bool, default=True
        Random shifts and horizontal flips while training.
    class_weight : {"balanced"} or None, default=None
        Re-weight the loss by inverse class frequency (for long-tailed data; off: the plain model).
    random_state : int, RandomState or None, default=None
        Seeds initial weights, augmentation and shuffling.
    device : str, default="cpu"
        torch device.
    n_threads : int or None, default=None
        torch CPU threads while fitting and predicting; None leaves torch's default.
    progress : bool, default=False
        Draw a progress bar over the training batches.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 60, size=(40, 12, 12), dtype=np.uint8)
    >>> X[20:, 3:9, 3:9] = 255                                   # a bright square: class "b"
    >>> y = ["a"] * 20 + ["b"] * 20
    >>> model = ResNet32Classifier(epochs=5, batch_size=8, blocks=1, lr=0.05, random_state=0).fit(X, y)
    >>> (model.predict(X) == np.array(y)).mean() > 0.9
    np.True_
    """

    _parameter_constraints = {
        **TorchImageClassifier._shared_constraints,
        "weight_decay": [Interval(Real, 0, 1, closed="both")],
        "width": [Interval(Integral, 1, 1024, closed="both")],
        "blocks": [Interval(Integral, 1, 64, closed="both")],
    }

    def __init__(
        self,
        *,
        epochs=60,
        batch_size=128,
        lr=0.1,
        weight_decay=5e-4,
        width=16,
        blocks=5,
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
        self.weight_decay = weight_decay
        self.width = width
        self.blocks = blocks
        self.image_size = image_size
        self.augment = augment
        self.class_weight = class_weight
        self.random_state = random_state
        self.device = device
        self.n_threads = n_threads
        self.progress = progress

    def _optimizer(self, torch, params, n_steps):
        optimizer = torch.optim.SGD(params, lr=self.lr, momentum=0.9, nesterov=True, weight_decay=self.weight_decay)
        warm = max(1, min(n_steps // self.epochs, n_steps - 1))
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warm)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(n_steps - warm, 1))
        return optimizer, torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[warm])

    def _new_module(self, torch, pretrained=True):
        nn, F = torch.nn, torch.nn.functional

        class Block(nn.Module):
            def __init__(self, cin, cout, stride):
                super().__init__()
                self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(cout)
                self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(cout)
                self.stride, self.extra = stride, cout - cin

            def forward(self, x):
                out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
                short = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
                if self.extra:  # option A: zero-padded channels, no parameters
                    short = F.pad(short, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
                return F.relu(out + short)

        class ResNet(nn.Module):
            def __init__(self, channels, width, blocks, n_classes):
                super().__init__()
                self.stem = nn.Sequential(
                    nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
                )
                layers, cin = [], width
                for stage in range(3):
                    cout = width * 2**stage
                    for b in range(blocks):
                        layers.append(Block(cin, cout, 2 if stage and not b else 1))
                        cin = cout
                self.layers = nn.Sequential(*layers)
                self.out = nn.Linear(cin, n_classes)
                for m in self.modules():
                    if isinstance(m, (nn.Conv2d, nn.Linear)):
                        nn.init.kaiming_normal_(m.weight)

            def forward(self, x):
                return self.out(self.layers(self.stem(x)).mean(dim=(2, 3)))

        return ResNet(self.input_shape_[2], int(self.width), int(self.blocks), len(self.classes_))
