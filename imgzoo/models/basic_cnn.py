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

from imgzoo.models._checks import (
    check_dropout,
    check_input,
    check_int,
    check_num_classes,
    check_parameter_budget,
)
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
        """The last block's feature map, (N, widths[-1], H / 2**len(widths), W / 2**len(widths))."""
        if not torch.jit.is_scripting():  # TorchScript compiles no branch below this test
            check_input(x, model="basic_cnn", channels=3, min_size=self.min_size, dtype=self.classifier.weight.dtype)
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global max pool, dropout, then the classifier; ``pre_logits`` stops before the classifier."""
        x = self.dropout(self.pool(x).flatten(1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# Each block halves the resolution: eight blocks already need 256-pixel images, beyond
# the small images this network is for.
MAX_BLOCKS = 8
# Four times airbench94's widest block (256) and twice ResNet-50's widest stage (2048).
MAX_WIDTH = 4096


@register_model("basic_cnn", default_spec=CIFAR10)
def basic_cnn(
    *,
    widths: tuple[int, ...] | list[int] = (64, 256, 256),
    num_classes: int = 10,
    stem_width: int = 32,
    dropout: float = 0.0,
) -> BasicCNN:
    """A plain 3-block CNN after airbench94 (arXiv:2404.00498), ~2M parameters, for 3x32x32 images."""
    widths = _checked_widths(widths)
    check_int("basic_cnn", "stem_width", stem_width, high=MAX_WIDTH, why="twice ResNet-50's widest stage")
    check_dropout("basic_cnn", dropout)
    check_num_classes("basic_cnn", num_classes)
    check_parameter_budget(
        "basic_cnn",
        _parameter_estimate(widths, stem_width, num_classes),
        f"widths={widths}, stem_width={stem_width}, num_classes={num_classes}",
    )
    return BasicCNN(widths, num_classes, stem_width, dropout)


def _checked_widths(widths: object) -> tuple[int, ...]:
    if not isinstance(widths, (tuple, list)) or not 1 <= len(widths) <= MAX_BLOCKS:
        raise TypeError(
            f"basic_cnn: widths must be a tuple or list of 1 to {MAX_BLOCKS} ints (one per block, each halving "
            f"the resolution), e.g. (64, 256, 256); got {widths!r}"
        )
    for i, width in enumerate(widths):
        check_int("basic_cnn", f"widths[{i}]", width, high=MAX_WIDTH, why="twice ResNet-50's widest stage")
    return tuple(widths)


def _parameter_estimate(widths: tuple[int, ...], stem_width: int, num_classes: int) -> int:
    """The 3x3 convolutions' and the classifier's weights, which are nearly all of the network."""
    convs, in_channels = 9 * 3 * stem_width, stem_width
    for width in widths:
        convs += 9 * (in_channels * width + width * width)
        in_channels = width
    return convs + in_channels * num_classes
