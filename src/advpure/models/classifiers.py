"""Image classifiers. One contract: ``model(x)`` with x float [0, 1] NCHW returns logits (N, classes).

Normalisation lives inside the model (non-persistent buffers ``mean``/``std``), so state dicts keep
the original layouts: :class:`ResNetCifar` loads the third-party "ResNet for CIFAR-10" checkpoints
(He et al. 2016, option-A shortcuts) as they are, :class:`WideResNet` matches RobustBench's
"Standard" WRN-28-10 key layout and :class:`DMWideResNet` RobustBench's ``DMWideResNet`` (DeepMind's WRN-70-16).
torchvision's ImageNet ResNets are in :mod:`advpure.models.imagenet`.
"""

from __future__ import annotations

import abc
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..contracts import check_images

CIFAR_MEAN_IMAGENET = (0.485, 0.456, 0.406)
CIFAR_STD_IMAGENET = (0.229, 0.224, 0.225)


class ImageClassifier(nn.Module, abc.ABC):
    """Base: validates inputs (range, shape, NaN) and normalises before :meth:`logits`.

    Set ``validate_inputs = False`` on an instance to skip the checks in a tight loop.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int,
                 mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.validate_inputs = True
        mean = tuple(mean) if mean is not None else (0.0,) * in_channels
        std = tuple(std) if std is not None else (1.0,) * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values, got {len(mean)} and {len(std)}")
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.validate_inputs:
            check_images(x, channels=self.in_channels, size=self.image_size)
        return self.logits((x - self.mean) / self.std)

    @abc.abstractmethod
    def logits(self, x_normalised: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of already normalised inputs."""

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features of [0, 1] images (used by semantic-aware MMD kernels)."""


# --------------------------------------------------------------------------- ResNet for CIFAR (option A)
class _LambdaShortcut(nn.Module):
    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class _BasicBlockA(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _LambdaShortcut(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(ImageClassifier):
    """ResNet-(6n+2) for CIFAR-10: 3x3 stem (16 ch), three stages of n basic blocks (16/32/64 ch),
    option-A shortcuts, global average pooling, linear. depth 20 -> n=3, 56 -> n=9, 8 -> n=1."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 width: int = 16, mean: Sequence[float] | None = CIFAR_MEAN_IMAGENET,
                 std: Sequence[float] | None = CIFAR_STD_IMAGENET) -> None:
        super().__init__(in_channels, image_size, num_classes, mean, std)
        if (depth - 2) % 6 != 0:
            raise ValueError(f"ResNetCifar depth must be 6n+2 (8, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        planes = [width, 2 * width, 4 * width]
        self.layer1 = self._stage(width, planes[0], n, 1)
        self.layer2 = self._stage(planes[0], planes[1], n, 2)
        self.layer3 = self._stage(planes[1], planes[2], n, 2)
        self.linear = nn.Linear(planes[2], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = []
        for i in range(n):
            blocks.append(_BasicBlockA(in_planes if i == 0 else planes, planes, stride if i == 0 else 1))
        return nn.Sequential(*blocks)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self._body(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._body((x - self.mean) / self.std)


# --------------------------------------------------------------------------- WideResNet (RobustBench layout)
class _WRNBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.equal_in_out:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.equal_in_out else self.convShortcut(x))


class _NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            _WRNBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
            for i in range(n)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(ImageClassifier):
    """WRN-depth-width (Zagoruyko & Komodakis 2016) with RobustBench's key layout (conv1, block1..3,
    bn1, fc). RobustBench's "Standard" WRN-28-10 takes un-normalised inputs: mean 0, std 1."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, drop_rate: float = 0.0, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, image_size, num_classes, mean, std)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (16, 28, 34, 70), got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = _NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = _NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = _NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self._body(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._body((x - self.mean) / self.std)


# --------------------------------------------------------------------------- DeepMind WideResNet (RobustBench)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
_ACTIVATIONS = {"swish": nn.SiLU, "relu": nn.ReLU}


class _DMBlock(nn.Module):
    """Pre-activation block of DeepMind's WideResNet: ``batchnorm_0 -> act -> conv_0`` (3x3, padding 0 after a
    TensorFlow "SAME" pad: (1, 1, 1, 1) at stride 1, (0, 1, 0, 1) at stride 2) ``-> batchnorm_1 -> act -> conv_1``,
    plus the identity or, when the width changes, a 1x1 ``shortcut`` conv of the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"DMWideResNet block: stride must be 1 or 2, got {stride}")
        act = _ACTIVATIONS[activation]
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = act()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = act()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False) if self.has_shortcut else None
        self._pad = (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu_0(self.batchnorm_0(x))
        out = self.conv_0(F.pad(a, self._pad))
        out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
        return (self.shortcut(a) if self.has_shortcut else x) + out


class _DMBlockGroup(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.block = nn.Sequential(*[
            _DMBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, activation)
            for i in range(n)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(ImageClassifier):
    """DeepMind's WideResNet (Gowal et al. 2020, Rebuffi et al. 2021) in the key layout of RobustBench's
    ``DMWideResNet`` (``model_zoo/architectures/dm_wide_resnet.py``): ``init_conv``, ``layer.{0,1,2}.block.i``
    (``batchnorm_0``, ``conv_0``, ``batchnorm_1``, ``conv_1``, ``shortcut``), ``batchnorm``, ``logits``.

    This is the WRN-70-16 DiffPure evaluates (its ``utils.get_image_classifier``): ``wideresnet-70-16`` is
    ``DMWideResNet(depth=70, width=16, activation_fn=Swish)`` and the adversarially trained ``wrn-70-16-at0/at1`` are
    RobustBench's ``Gowal2021Improving_70_16_ddpm_100m`` / ``Rebuffi2021Fixing_70_16_cutmix_extra``, the same class
    with Swish and the CIFAR-10 mean/std inside. Swish is ``x * sigmoid(x)`` (``nn.SiLU``).

    Normalisation: CIFAR-10 mean/std by default (as RobustBench builds these models). Some RobustBench versions
    store ``mean``/``std`` in the state dict (persistent buffers of shape (3, 1, 1)), others do not: both load;
    stored values replace the defaults (:meth:`adapt_state_dict`). Our own state dict leaves them out, like every
    advpure classifier. ``padding`` pads the input by that many zeros first (RobustBench's argument; 0 for CIFAR).
    """

    def __init__(self, depth: int = 70, width: int = 16, num_classes: int = 10, in_channels: int = 3,
                 image_size: int = 32, activation: str = "swish", padding: int = 0,
                 mean: Sequence[float] | None = CIFAR10_MEAN, std: Sequence[float] | None = CIFAR10_STD) -> None:
        super().__init__(in_channels, image_size, num_classes, mean, std)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"DMWideResNet depth must be 6n+4 (28, 34, 70, 106), got {depth}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"DMWideResNet activation must be one of {', '.join(_ACTIVATIONS)}, got {activation!r}")
        n = (depth - 4) // 6
        ch = [16, 16 * width, 32 * width, 64 * width]
        self.padding = int(padding)
        self.init_conv = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.layer = nn.Sequential(
            _DMBlockGroup(n, ch[0], ch[1], 1, activation),
            _DMBlockGroup(n, ch[1], ch[2], 2, activation),
            _DMBlockGroup(n, ch[2], ch[3], 2, activation),
        )
        self.batchnorm = nn.BatchNorm2d(ch[3])
        self.relu = _ACTIVATIONS[activation]()
        # RobustBench names the linear head ``logits``, which is also ImageClassifier's method name: the module is
        # registered directly (state dict keys ``logits.weight``/``logits.bias``) and reached as ``self.head``.
        self._modules["logits"] = nn.Linear(ch[3], num_classes)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(self.init_conv(x))
        out = self.relu(self.batchnorm(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        # RobustBench pads the raw input, then normalises: a zero pad is 0 in pixel space, not the mean
        if self.padding > 0:
            x = F.pad(x, (self.padding,) * 4)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.validate_inputs:
            check_images(x, channels=self.in_channels, size=self.image_size)
        return self.head(self._body(self._prepare(x)))

    @property
    def head(self) -> nn.Linear:
        return self._modules["logits"]  # type: ignore[return-value]

    def logits(self, x_normalised: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.padding > 0:  # the zero pad belongs to pixel space
            x_normalised = self._prepare(x_normalised * self.std + self.mean)
        return self.head(self._body(x_normalised))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._body(self._prepare(x))

    @torch.no_grad()
    def adapt_state_dict(self, state_dict: dict, prefix: str = "") -> dict:
        """Take ``mean``/``std`` out of a RobustBench state dict (when it has them) into this model's buffers."""
        sd = dict(state_dict)
        for name in ("mean", "std"):
            v = sd.pop(prefix + name, None)
            if v is None:
                continue
            if not isinstance(v, torch.Tensor) or v.numel() != self.in_channels:
                raise ValueError(f"DMWideResNet: checkpoint {name!r} has shape {tuple(getattr(v, 'shape', ()))}, "
                                 f"expected {self.in_channels} values")
            getattr(self, name).copy_(v.reshape(1, -1, 1, 1).to(getattr(self, name)))
        return sd

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # noqa: D401 - torch hook: ``load_state_dict`` takes RobustBench files too
        stats = self.adapt_state_dict({k: state_dict[k] for k in (prefix + "mean", prefix + "std") if k in state_dict},
                                      prefix)
        assert not stats
        for k in (prefix + "mean", prefix + "std"):
            state_dict.pop(k, None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


# --------------------------------------------------------------------------- PreAct ResNet-18
class _PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + sc


class PreActResNet18(ImageClassifier):
    """PreAct ResNet-18 (He et al. 2016b) in the common CIFAR layout (conv1, layer1..4, bn, linear)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 mean: Sequence[float] | None = CIFAR_MEAN_IMAGENET,
                 std: Sequence[float] | None = CIFAR_STD_IMAGENET) -> None:
        super().__init__(in_channels, image_size, num_classes, mean, std)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        planes, layers, in_planes = [64, 128, 256, 512], [], 64
        for i, p in enumerate(planes):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(_PreActBlock(in_planes, p, stride), _PreActBlock(p, p, 1)))
            in_planes = p
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self._body(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._body((x - self.mean) / self.std)


# --------------------------------------------------------------------------- small CNN (digits)
class SmallCNN(ImageClassifier):
    """A small CNN for 8x8 digits (or any small input): two 3x3 conv blocks, one pooling, MLP head."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, width: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, image_size, num_classes, mean, std)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (image_size // 2) ** 2, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


# --------------------------------------------------------------------------- fast CIFAR net (airbench style)
class _ConvGroup(nn.Module):
    """conv 3x3 -> maxpool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU (Jordan 2024, airbench)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.bn1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.bn2(self.conv2(x)))


class FastCifarNet(ImageClassifier):
    """The fast-training CIFAR-10 network of K. Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU"
    (arXiv:2404.00498, airbench94): a 2x2 patch-whitening stem (24 channels, set from the training data's patch
    covariance by :meth:`init_whitening` and kept fixed; its bias trains), three conv groups of widths
    64/256/256, global max pooling and a bias-free linear head scaled by ``head_scale`` (1/9 in airbench).

    ``flip_tta``: when true, the logits are averaged over the image and its horizontal mirror (test-time
    augmentation; doubles the cost of a forward). Input normalisation: the whitening stem subtracts the
    patch mean itself, so mean/std default to none.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 widths: Sequence[int] = (64, 256, 256), head_scale: float = 1 / 9, flip_tta: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(in_channels, image_size, num_classes, mean, std)
        w = [int(v) for v in widths]
        if len(w) != 3 or min(w) < 1:
            raise ValueError(f"FastCifarNet widths: expected three positive ints, got {widths!r}")
        self.whiten = nn.Conv2d(in_channels, 2 * in_channels * 4, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.group1 = _ConvGroup(2 * in_channels * 4, w[0])
        self.group2 = _ConvGroup(w[0], w[1])
        self.group3 = _ConvGroup(w[1], w[2])
        self.head = nn.Linear(w[2], num_classes, bias=False)
        self.head_scale = float(head_scale)
        self.flip_tta = bool(flip_tta)

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem to the eigenvectors of the 2x2 patch covariance of ``x`` (N, C, H, W in [0, 1],
        normalised as the model normalises), scaled by 1/sqrt(eigenvalue + eps), each with its negative."""
        x = (x - self.mean) / self.std
        c = x.shape[1]
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, c, 2, 2).double()
        flat = patches.flatten(1)
        flat = flat - flat.mean(0, keepdim=True)
        cov = flat.T @ flat / len(flat)
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0), evecs.T.flip(0)  # largest first
        w = (evecs / torch.sqrt(evals.clamp_min(0) + eps)[:, None]).view(-1, c, 2, 2)
        self.whiten.weight.copy_(torch.cat([w, -w]).to(self.whiten.weight.dtype))

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(x))
        x = self.group3(self.group2(self.group1(x)))
        return x.amax(dim=(2, 3))

    def _logits_once(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._body(x)) * self.head_scale

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip_tta:
            return 0.5 * (self._logits_once(x) + self._logits_once(x.flip(3)))
        return self._logits_once(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._body((x - self.mean) / self.std)
