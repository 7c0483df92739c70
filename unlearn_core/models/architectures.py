"""Classifier architectures, all wrapped in one :class:`Classifier` shape.

Every model takes float images in pixel space ``[N, C, H, W]`` in ``[0, 1]`` and normalizes
them itself with the dataset's own mean/std (a buffer inside the model). Why: the boundary
search works in pixel space and must never mix normalized and raw tensors (a bug of the
reference code, which also used CIFAR statistics for every dataset).

Each model is ``body`` (image → penultimate embedding) + ``head`` (one ``nn.Linear``), so
embeddings, head swaps and block-wise composition work the same for every architecture.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from unlearn_core.errors import UserError


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an empty model of the right shape (stored with weights)."""

    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        """A spec from stored metadata, checked by :meth:`check` (a UserError if not sane)."""
        if not isinstance(data, dict):
            raise UserError(f"A model spec must be a JSON object, got {type(data).__name__}.")
        missing = [key for key in ("arch", "num_classes", "in_channels", "image_size", "mean", "std")
                   if key not in data]
        if missing:
            raise UserError(f"The model spec lacks {', '.join(missing)}; it cannot say how to rebuild "
                            "the model. Choose the architecture yourself.")
        try:
            spec = cls(
                arch=str(data["arch"]),
                num_classes=_whole(data["num_classes"]),
                in_channels=_whole(data["in_channels"]),
                image_size=_whole(data["image_size"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
            )
        except (TypeError, ValueError) as error:
            raise UserError(f"The model spec has a value of the wrong type ({error}); numbers "
                            "and lists of numbers are expected.") from None
        spec.check()
        return spec

    def check(self) -> None:
        """Refuse a spec no real model has, before anything is allocated for it.

        Why: the spec comes from a file's metadata; a forged one (a billion classes) would
        otherwise make :func:`build_model` allocate hundreds of gigabytes.
        """
        problems = []
        if self.arch not in ARCHITECTURES:
            problems.append(f"unknown architecture {self.arch[:40]!r} (known: {', '.join(ARCHITECTURES)})")
        if not 2 <= self.num_classes <= MAX_CLASSES:
            problems.append(f"{self.num_classes} classes (2 to {MAX_CLASSES:,} are supported)")
        if self.in_channels not in (1, 3):
            problems.append(f"{self.in_channels} input channels (1 or 3 are supported)")
        if not 4 <= self.image_size <= 1024:
            problems.append(f"image size {self.image_size} (4 to 1024 pixels are supported)")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            problems.append(f"{len(self.mean)} means and {len(self.std)} standard deviations for "
                            f"{self.in_channels} channel(s)")
        elif not all(math.isfinite(v) for v in self.mean + self.std) or min(self.std) <= 0:
            problems.append("normalization values that are not finite or a standard deviation <= 0")
        if problems:
            raise UserError("The model spec is not usable: " + "; ".join(problems) + ". The file's "
                            "metadata is damaged or was not written by this tool; choose the "
                            "architecture yourself or export the model again.")


#: The most classes a model may have (a spec claiming more is refused before building it).
MAX_CLASSES = 10_000


def _whole(value) -> int:
    """An int from an int (or integral float) in JSON; refuses text and fractions."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


class Classifier(nn.Module):
    """``head(body(normalize(x)))`` with ``x`` in [0, 1]; ``embed`` returns ``body(...)``."""

    def __init__(self, spec: ModelSpec, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))
        self.body = body
        self.head = head

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean) / self.std

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``[N, D]`` (what t-SNE plots and the head sees)."""
        return self.body(self.normalize(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(pixels))

    def blocks(self) -> list[str]:
        """Names of the top-level blocks (for block-wise composition), input to output."""
        return [f"body.{name}" for name, _ in self.body.named_children()] + ["head"]


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def small_cnn_body(in_channels: int, width: int = 32) -> tuple[nn.Module, int]:
    """Three conv blocks and global pooling: fast on a laptop CPU, the default model."""
    body = nn.Sequential()
    body.add_module("block1", nn.Sequential(_conv_bn(in_channels, width), nn.MaxPool2d(2)))
    body.add_module("block2", nn.Sequential(_conv_bn(width, 2 * width), nn.MaxPool2d(2)))
    body.add_module("block3", _conv_bn(2 * width, 4 * width))
    body.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    return body, 4 * width


def allcnn_body(in_channels: int, width: int = 96) -> tuple[nn.Module, int]:
    """All-CNN-C (Springenberg et al. 2015) with BatchNorm, as in the Boundary Shrink benchmark."""
    wide = 2 * width
    body = nn.Sequential()
    body.add_module("block1", nn.Sequential(
        _conv_bn(in_channels, width), _conv_bn(width, width), _conv_bn(width, width, stride=2)))
    body.add_module("block2", nn.Sequential(
        _conv_bn(width, wide), _conv_bn(wide, wide), _conv_bn(wide, wide, stride=2)))
    body.add_module("block3", nn.Sequential(_conv_bn(wide, wide), _conv_bn(wide, wide, kernel=1)))
    body.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    return body, wide


def resnet_body(depth: int, in_channels: int, image_size: int) -> tuple[nn.Module, int]:
    """torchvision ResNet adapted to small inputs and any channel count.

    Images of 32 px or less get the CIFAR stem (3×3 conv, no max-pool) so the last feature
    map is not smaller than a pixel; larger images keep the standard 7×7 stride-2 stem.
    """
    # Imported here: torchvision (with torch._dynamo, which it pulls in) adds ~2.6 s to every
    # process start, and only the ResNet architectures need it.
    import torchvision

    factory = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50}[depth]
    net = factory(weights=None)
    if image_size <= 32:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    features = net.fc.in_features
    body = nn.Sequential()
    body.add_module("stem", nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool))
    for name in ("layer1", "layer2", "layer3", "layer4"):
        body.add_module(name, getattr(net, name))
    body.add_module("pool", nn.Sequential(net.avgpool, nn.Flatten()))
    return body, features


ARCHITECTURES = {
    "small_cnn": lambda spec: small_cnn_body(spec.in_channels),
    "allcnn": lambda spec: allcnn_body(spec.in_channels),
    "resnet18": lambda spec: resnet_body(18, spec.in_channels, spec.image_size),
    "resnet50": lambda spec: resnet_body(50, spec.in_channels, spec.image_size),
}


def build_model(spec: ModelSpec) -> Classifier:
    """An untrained :class:`Classifier` for ``spec`` (weights initialized by PyTorch)."""
    if spec.arch not in ARCHITECTURES:
        raise UserError(f"Unknown architecture {spec.arch!r}; choose one of {', '.join(ARCHITECTURES)}.")
    spec.check()
    body, features = ARCHITECTURES[spec.arch](spec)
    return Classifier(spec, body, nn.Linear(features, spec.num_classes))


def spec_for(imageset, arch: str = "small_cnn") -> ModelSpec:
    """The model spec that fits an :class:`~unlearn_core.data.ImageSet`."""
    return ModelSpec(
        arch=arch,
        num_classes=imageset.num_classes,
        in_channels=imageset.channels,
        image_size=imageset.image_size,
        mean=tuple(imageset.mean),
        std=tuple(imageset.std),
    )
