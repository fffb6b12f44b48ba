"""A small CNN for 28x28 digits: two conv-conv-pool stages (32 and 64 filters, BatchNorm), a 128-unit hidden
layer with dropout; 0.47M parameters, under half of PyTorch's example Net (pytorch/examples, mnist/main.py).
"""

from __future__ import annotations

import torch
from torch import nn

import imgzoo.models._checks as checks
from imgzoo.models._contract import LinearHeadMixin, stages_info
from imgzoo.models.registry import MNIST, register_model

__all__ = ["MnistCNN", "mnist_cnn"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    return [conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class MnistCNN(LinearHeadMixin, nn.Module):
    """(N, 1, 28, 28) -> (N, num_classes)."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.25, hidden: int = 128, in_chans: int = 1) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.features = nn.Sequential(
            *_conv_bn_relu(in_chans, 32), *_conv_bn_relu(32, 32), nn.MaxPool2d(2),  # 28 -> 14
            *_conv_bn_relu(32, 64), *_conv_bn_relu(64, 64), nn.MaxPool2d(2),  # 14 -> 7
        )  # fmt: skip
        self.feature_info = stages_info(["features.6", "features.13"], [32, 64], [2, 4])  # the two max pools
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The second stage's feature map, (N, 64, 7, 7)."""
        if not torch.jit.is_scripting():  # TorchScript compiles no branch below this test
            self._check_input(x, "mnist_cnn", size=(28, 28))
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The MLP (a map this small needs no pooling), then the classifier unless ``pre_logits``."""
        x = self.head(x)
        return x if pre_logits else self.classifier(x)


MAX_HIDDEN = 8192  # twice AlexNet's 4096-wide layers, already 25.7M parameters here


@register_model("mnist_cnn", default_spec=MNIST)
def mnist_cnn(*, num_classes: int = 10, dropout: float = 0.25, hidden: int = 128, in_chans: int = 1) -> MnistCNN:
    """A ~0.47M-parameter CNN for 1x28x28 digits (PyTorch's example Net has 1.2M); ``in_chans=3`` for colour."""
    checks.check_num_classes("mnist_cnn", num_classes)
    checks.check_dropout("mnist_cnn", dropout)
    checks.check_choice("mnist_cnn", "in_chans", in_chans, (1, 3))
    checks.check_int("mnist_cnn", "hidden", hidden, high=MAX_HIDDEN, why="twice AlexNet's 4096-wide layers")
    estimate = 64 * 7 * 7 * hidden + hidden * num_classes  # the linear layers; the convolutions add 65k
    checks.check_parameter_budget("mnist_cnn", estimate, f"hidden={hidden}, num_classes={num_classes}")
    return MnistCNN(num_classes, dropout, hidden, in_chans)
