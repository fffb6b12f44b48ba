"""ResNet for 32x32 images (He et al. 2016, section 4.2): three stages of n basic blocks at widths 16/32/64, 6n+2
layers; the paper reports ResNet-20 at 8.75% test error."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import imgzoo.models._checks as checks
from imgzoo.models._contract import LinearHeadMixin, stages_info
from imgzoo.models.registry import CIFAR10, register_model

__all__ = ["BasicBlock", "ResNetCifar", "resnet_cifar"]

SHORTCUTS = ("A", "B", "none")


def subsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Every ``stride``-th pixel, in x's own memory layout: slicing's backward writes an NCHW gradient, which made
    a channels_last ReLU backward 10x slower (4.95 vs 0.48 ms, docs/notes.md); avg_pool2d keeps the layout."""
    if x.is_contiguous() or not x.requires_grad:
        return x[:, :, ::stride, ::stride]
    return F.avg_pool2d(x, 1, stride)


# A leaf of torch.fx graphs: symbolic tracing cannot branch on the layout of a traced tensor.
torch.fx.wrap("subsample")


class PadShortcut(nn.Module):
    """Option A: subsample by striding and zero-pad the new channels. Parameter-free."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = subsample(x, self.stride)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """``relu(residual(x) + shortcut(x))``, two 3x3 conv-BN layers; ``shortcut="none"``: the plain net (figure 6)."""

    # TorchScript compiles properties too and cannot type an nn.Sequential element; last_bn is not for forward.
    __jit_unused_properties__ = ["last_bn"]

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if stride not in (1, 2):
            raise ValueError(f"BasicBlock: stride must be 1 or 2, got {stride!r}")
        if shortcut == "A" and out_channels < in_channels:  # F.pad with a negative width would drop channels
            raise ValueError(f"BasicBlock: shortcut 'A' pads channels and cannot map {in_channels} to {out_channels}; "
                             f"use shortcut='B' (1x1 projection)")  # fmt: skip
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True), nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )  # fmt: skip
        self.shortcut: nn.Module | None
        if shortcut == "none":
            self.shortcut = None
        elif stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:  # "B": a 1x1 projection, used only where the shape changes (the paper's option B)
            project = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.shortcut = nn.Sequential(project, nn.BatchNorm2d(out_channels))

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.residual[-1]  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        # In place: `out` is this block's own tensor, and neither the sum's nor batch norm's backward reads it.
        # The allocating relu took 1.9% of a ResNet-20 training step, 5x the in-place one (torch.profiler, batch
        # 128, channels_last fp32, 2-core AMD EPYC with AVX2).
        return F.relu(out, inplace=True)


class ResNetCifar(LinearHeadMixin, nn.Module):
    """The 6n+2-layer CIFAR ResNet. Any input whose height and width are multiples of 4."""

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int = 10,
        shortcut: str = "A",
        width: int = 1,
        zero_init_residual: bool = False,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        widths = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages = []
        for i, (in_channels, out_channels) in enumerate(zip([widths[0], *widths], widths, strict=False)):
            first = BasicBlock(in_channels, out_channels, 2 if i > 0 else 1, shortcut)
            rest = [BasicBlock(out_channels, out_channels, 1, shortcut) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(first, *rest))
        self.stages = nn.Sequential(*stages)
        self.feature_info = stages_info([f"stages.{i}" for i in range(3)], widths, [1, 2, 4])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al. 2015 init, as in the paper
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            # Each block starts as the identity: +0.2-0.3% top-1 on ImageNet (Goyal et al. 2017, arXiv:1706.02677).
            if zero_init_residual and isinstance(m, BasicBlock):
                nn.init.zeros_(m.last_bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, (N, 64 * width, H / 4, W / 4)."""
        if not torch.jit.is_scripting():  # TorchScript compiles no branch below this test
            self._check_input(x, "resnet_cifar", multiple_of=4)
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, the classifier (not with ``pre_logits``)."""
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.classifier(x)


MAX_DEPTH = 1202  # He et al. 2016's deepest (section 4.2, "Exploring over 1000 layers")
MAX_WIDTH = 16  # Wide ResNets on CIFAR (Zagoruyko & Komodakis 2016) go up to k = 10


@register_model("resnet_cifar", default_spec=CIFAR10)
def resnet_cifar(
    *,
    depth: int = 20,
    num_classes: int = 10,
    shortcut: str = "A",
    width: int = 1,
    zero_init_residual: bool = False,
    in_chans: int = 3,
) -> ResNetCifar:
    """He et al. 2016, section 4.2: a 6n+2-layer ResNet for 32x32 images (depth 20, 32, 44, 56, 110). ``shortcut``:
    "A" (zero-padding, the paper's), "B" (1x1 projections) or "none"; ``width`` multiplies the stage widths;
    ``in_chans=1`` for grey images."""
    checks.check_int("resnet_cifar", "depth", depth, low=8, high=MAX_DEPTH, why="6n+2; the paper's deepest is 1202")
    if (depth - 2) % 6:
        raise ValueError(f"resnet_cifar: depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth!r}")
    checks.check_choice("resnet_cifar", "shortcut", shortcut, SHORTCUTS)
    checks.check_int("resnet_cifar", "width", width, high=MAX_WIDTH, why="a multiplier; Wide ResNets use up to 10")
    checks.check_bools("resnet_cifar", zero_init_residual=zero_init_residual)
    checks.check_num_classes("resnet_cifar", num_classes)
    checks.check_choice("resnet_cifar", "in_chans", in_chans, (1, 3))
    n, widths = (depth - 2) // 6, [16 * width, 32 * width, 64 * width]
    estimate = 9 * 3 * widths[0] + widths[-1] * num_classes  # 3x3 convolutions and classifier: nearly all
    for previous, channels in zip([widths[0], *widths], widths, strict=False):
        estimate += 9 * (previous * channels + channels * channels) + 18 * channels * channels * (n - 1)
    checks.check_parameter_budget("resnet_cifar", estimate, f"depth={depth}, width={width}, num_classes={num_classes}")
    return ResNetCifar(n, num_classes, shortcut, width, zero_init_residual, in_chans)
