"""A plain convolutional network (no skip connections) for 32x32 colour images.

The original notebooks' "basic CNN" stacked conv and pooling layers and reached
66% validation accuracy on CIFAR-10. This is the same idea done right, after the
airbench94 network (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv:2404.00498): three blocks of conv -> max-pool -> BatchNorm -> GELU ->
conv -> BatchNorm -> GELU at widths 64/256/256, about 2M parameters, which reaches
94% in 10 epochs with that paper's recipe.
"""

from __future__ import annotations

import torch
from torch import nn

from imgzoo.models._checks import check_input, check_num_classes
from imgzoo.models._contract import LinearHeadMixin
from imgzoo.registry import CIFAR10, register_model

__all__ = ["BasicCNN", "basic_cnn"]


def conv_bn_act(in_channels: int, out_channels: int, pool: bool = False) -> list[nn.Module]:
    """conv3x3 [-> maxpool2] -> BN -> GELU. Pooling before BN halves the BN cost (airbench)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(out_channels), nn.GELU()]
    return layers


class BasicCNN(LinearHeadMixin, nn.Module):
    """Stem, then one block per width (each halving the resolution), global max pool, linear."""

    def __init__(
        self,
        widths: tuple[int, ...] = (64, 256, 256),
        num_classes: int = 10,
        stem_width: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_act(3, stem_width))
        blocks = []
        in_channels = stem_width
        for width in widths:
            blocks.append(nn.Sequential(*conv_bn_act(in_channels, width, pool=True), *conv_bn_act(width, width)))
            in_channels = width
        self.blocks = nn.Sequential(*blocks)
        self.min_size = 2 ** len(widths)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, model="basic_cnn", channels=3, min_size=self.min_size)
        return self.pool(self.blocks(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.forward_features(x)))


@register_model("basic_cnn", default_spec=CIFAR10)
def basic_cnn(
    *,
    widths: tuple[int, ...] | list[int] = (64, 256, 256),
    num_classes: int = 10,
    stem_width: int = 32,
    dropout: float = 0.0,
) -> BasicCNN:
    """A plain 3-block CNN after airbench94 (arXiv:2404.00498), ~2M parameters, for 3x32x32 images."""
    widths = tuple(widths)
    if not widths or any(not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"basic_cnn: widths must be a non-empty sequence of positive integers, got {widths!r}")
    if not isinstance(stem_width, int) or stem_width < 1:
        raise ValueError(f"basic_cnn: stem_width must be a positive integer, got {stem_width!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"basic_cnn: dropout must be in [0, 1), got {dropout!r}")
    check_num_classes("basic_cnn", num_classes)
    return BasicCNN(widths, num_classes, stem_width, dropout)
