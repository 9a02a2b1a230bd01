"""ImageNet classifiers in torchvision's state-dict layout, with the ImageNet normalisation inside.

:class:`ImageNetResNet` registers the modules of ``torchvision.models.resnet.ResNet`` under the same names
(``conv1``, ``bn1``, ``layer1..4`` of ``Bottleneck``/``BasicBlock`` blocks with ``conv1/bn1/conv2/bn2[/conv3/bn3]``
and ``downsample.0`` (1x1 conv) / ``downsample.1`` (BatchNorm), ``fc``), so a torchvision checkpoint such as
``resnet50-0676ba61.pth`` or ``resnet50-19c8e357.pth`` (a plain state dict) loads strictly, e.g.
``load_classifier("resnet50:PATH/resnet50-0676ba61.pth")``. The stride of a downsampling Bottleneck sits on its
3x3 ``conv2`` (torchvision's "ResNet v1.5"), the stem is 7x7/2 + 3x3/2 max pooling, the head global average pooling.

Inputs are [0, 1] images of ``image_size`` (224 by default; the ``imagenet`` dataset's resize 256 -> center crop 224).
``resize_to``: when set, the classifier first resizes its input (bilinear, ``align_corners=False``, no antialias:
what DiffPure does between its 256x256 ADM and its 224x224 classifiers) to that size, so e.g. ``image_size=256,
resize_to=224`` takes the ``imagenet256`` data the 256x256 diffusion model purifies. The network itself has no fixed
input size (adaptive pooling): ``image_size=64`` runs it on 64x64 images as they are.

An ``ARCH:PATH`` spec takes the architecture's defaults; for other arguments on the command line, save the model once
with its sidecar and pass that file::

    m = load_classifier("resnet50:resnet50-0676ba61.pth", image_size=256, resize_to=224)
    save_classifier(m, "resnet50-256.safetensors", dataset="imagenet256")   # --classifier resnet50-256.safetensors
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .classifiers import ImageClassifier

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports groups=1 and width_per_group=64 only (as torchvision)")
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 groups: int = 1, base_width: int = 64) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_BLOCKS = {"basic": _BasicBlock, "bottleneck": _Bottleneck}


class ImageNetResNet(ImageClassifier):
    """torchvision's ResNet family (``resnet18/34/50/101/152``, ``wide_resnet50_2``: ``width_per_group=128``,
    ``resnext50_32x4d``: ``groups=32, width_per_group=4``) with torchvision's key layout; see the module docstring."""

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), block: str = "bottleneck", num_classes: int = 1000,
                 in_channels: int = 3, image_size: int = 224, resize_to: int | None = None, groups: int = 1,
                 width_per_group: int = 64, mean: Sequence[float] | None = IMAGENET_MEAN,
                 std: Sequence[float] | None = IMAGENET_STD) -> None:
        super().__init__(in_channels, image_size, num_classes, mean, std)
        if block not in _BLOCKS:
            raise ValueError(f"ImageNetResNet block must be one of {', '.join(_BLOCKS)}, got {block!r}")
        layers = [int(v) for v in layers]
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"ImageNetResNet layers: expected four positive block counts, got {layers!r}")
        if resize_to is not None and int(resize_to) < 1:
            raise ValueError(f"ImageNetResNet resize_to must be a positive size or None, got {resize_to!r}")
        self.resize_to = None if resize_to is None else int(resize_to)
        blk = _BLOCKS[block]
        self.groups, self.base_width, self.inplanes = int(groups), int(width_per_group), 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(blk, 64, layers[0], 1)
        self.layer2 = self._make_layer(blk, 128, layers[1], 2)
        self.layer3 = self._make_layer(blk, 256, layers[2], 2)
        self.layer4 = self._make_layer(blk, 512, layers[3], 2)
        self.fc = nn.Linear(512 * blk.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, blk: type, planes: int, n: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * blk.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * blk.expansion, stride),
                                       nn.BatchNorm2d(planes * blk.expansion))
        blocks = [blk(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * blk.expansion
        blocks += [blk(self.inplanes, planes, 1, None, self.groups, self.base_width) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize_to is None or tuple(x.shape[-2:]) == (self.resize_to, self.resize_to):
            return x
        return F.interpolate(x, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def logits(self, x_normalised: torch.Tensor) -> torch.Tensor:
        # bilinear resizing commutes with the per-channel normalisation (its weights sum to one)
        return self.fc(self._body(self._resize(x_normalised)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._body(self._resize((x - self.mean) / self.std))


#: torchvision's constructors as (layers, block, groups, width_per_group)
TORCHVISION_RESNETS = {
    "resnet18": ((2, 2, 2, 2), "basic", 1, 64),
    "resnet34": ((3, 4, 6, 3), "basic", 1, 64),
    "resnet50": ((3, 4, 6, 3), "bottleneck", 1, 64),
    "resnet101": ((3, 4, 23, 3), "bottleneck", 1, 64),
    "resnet152": ((3, 8, 36, 3), "bottleneck", 1, 64),
    "wide_resnet50_2": ((3, 4, 6, 3), "bottleneck", 1, 128),
}

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageNetResNet", "TORCHVISION_RESNETS"]
