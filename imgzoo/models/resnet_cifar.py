"""ResNet for 32x32 images: He et al., "Deep Residual Learning for Image Recognition", 2016, section 4.2.

The CIFAR network is a 3x3 stem with 16 filters, then three stages of n basic
blocks at widths 16, 32 and 64 on feature maps of 32, 16 and 8 pixels, then global
average pooling and a linear classifier: 6n+2 weighted layers. The paper reports
ResNet-20 at 8.75% test error (91.25% accuracy) with shortcut option A.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgzoo.models._checks import (
    check_bool,
    check_choice,
    check_input,
    check_int,
    check_num_classes,
    check_parameter_budget,
)
from imgzoo.models._contract import LinearHeadMixin
from imgzoo.models.registry import CIFAR10, register_model

__all__ = ["BasicBlock", "ResNetCifar", "resnet_cifar"]

SHORTCUTS = ("A", "B", "none")


def subsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Every ``stride``-th pixel of each row and column, in x's own memory layout, gradient included.

    The same pixels either way (a 1x1 average is the pixel itself). Slicing's backward scatters the gradient
    into a fresh NCHW tensor, so in a channels_last network the sum with the residual branch's gradient, and the
    ReLU backward after it, mixed layouts (found with torch.profiler). avg_pool2d's backward keeps the input's
    layout. bench/bench_layouts.py, on a 2-core Xeon with AMX (AVX512), at ResNet-20's first stage, batch 128:
    the ReLU backward took 4.95 ms with an NCHW gradient against 0.48 ms with a channels_last one, and the
    shortcut's forward and backward, as far as that ReLU backward, ran 2.9x (fp32) and 4.5x (bf16) faster on
    channels_last input; on NCHW input the pool was 1.8x (fp32) and 2.9x (bf16) slower than slicing, which
    therefore stays there. In bench/bench_models.py, resnet_cifar / its plain ResNet-20 (which slices) for
    channels_last training went from 1.03 to 1.06 in fp32 and from 0.97 to 1.04 in bf16, two runs back to back
    on the same machine. Where no gradient will flow back (inference) slicing stays too: it is a view, where
    the pool was a pass of its own, 0.5 ms of a 53 ms forward pass (``bench/bench_step_profile.py --infer`` on
    the code that pooled there, same machine).
    """
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
    """Two 3x3 conv-BN layers plus a shortcut: ``relu(residual(x) + shortcut(x))``.

    ``shortcut="none"`` drops the skip connection, giving the "plain" network the
    paper compares against (figure 6).
    """

    # TorchScript compiles properties too, and cannot type an nn.Sequential element as BatchNorm2d;
    # last_bn is for initialisation and tests, never for forward.
    __jit_unused_properties__ = ["last_bn"]

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        if stride not in (1, 2):
            raise ValueError(f"BasicBlock: stride must be 1 or 2, got {stride!r}")
        if shortcut == "A" and out_channels < in_channels:
            # Zero-padding can only add channels; F.pad with a negative width would
            # silently drop some instead.
            raise ValueError(
                f"BasicBlock: shortcut 'A' pads channels and cannot map {in_channels} to {out_channels}; "
                f"use shortcut='B' (1x1 projection)"
            )
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module | None
        if shortcut == "none":
            self.shortcut = None
        elif stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:  # "B": a 1x1 projection, used only where the shape changes (the paper's option B)
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

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
    ) -> None:
        super().__init__()
        widths = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages = []
        in_channels = widths[0]
        for i, out_channels in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride, shortcut))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al. 2015 init, as in the paper
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            # Each block starts as the identity; +0.2-0.3% top-1 on ImageNet
            # (Goyal et al. 2017, arXiv:1706.02677, section 5.1).
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.last_bn.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, (N, 64 * width, H / 4, W / 4)."""
        if not torch.jit.is_scripting():  # TorchScript compiles no branch below this test
            check_input(x, model="resnet_cifar", channels=3, multiple_of=4, dtype=self.classifier.weight.dtype)
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, then the classifier; ``pre_logits`` stops before the classifier."""
        x = self.pool(x).flatten(1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# The deepest network of He et al. 2016 (section 4.2, "Exploring over 1000 layers", n = 200).
MAX_DEPTH = 1202
# Wide ResNets on CIFAR (Zagoruyko & Komodakis 2016) widen by up to k = 10 (WRN-28-10).
MAX_WIDTH = 16


@register_model("resnet_cifar", default_spec=CIFAR10)
def resnet_cifar(
    *,
    depth: int = 20,
    num_classes: int = 10,
    shortcut: str = "A",
    width: int = 1,
    zero_init_residual: bool = False,
) -> ResNetCifar:
    """He et al. 2016, section 4.2: a 6n+2-layer ResNet for 32x32 images (depth 20, 32, 44, 56, 110).

    ``shortcut`` is "A" (zero-padding, parameter-free, as in the paper's CIFAR runs),
    "B" (1x1 projections where the shape changes) or "none" (the plain network);
    ``width`` multiplies the 16/32/64 stage widths.
    """
    check_int("resnet_cifar", "depth", depth, low=8, high=MAX_DEPTH, why="6n+2; the paper's deepest is 1202")
    if (depth - 2) % 6:
        raise ValueError(f"resnet_cifar: depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth!r}")
    check_choice("resnet_cifar", "shortcut", shortcut, SHORTCUTS)
    check_int("resnet_cifar", "width", width, high=MAX_WIDTH, why="a multiplier; Wide ResNets use up to 10")
    check_bool("resnet_cifar", "zero_init_residual", zero_init_residual)
    check_num_classes("resnet_cifar", num_classes)
    blocks_per_stage = (depth - 2) // 6
    check_parameter_budget(
        "resnet_cifar",
        _parameter_estimate(blocks_per_stage, width, num_classes),
        f"depth={depth}, width={width}, num_classes={num_classes}",
    )
    return ResNetCifar(blocks_per_stage, num_classes, shortcut, width, zero_init_residual)


def _parameter_estimate(blocks_per_stage: int, width: int, num_classes: int) -> int:
    """The 3x3 convolutions' and the classifier's weights, which are nearly all of the network."""
    widths = [16 * width, 32 * width, 64 * width]
    convs = 9 * 3 * widths[0]
    for previous, channels in zip([widths[0], *widths], widths, strict=False):
        convs += 9 * (previous * channels + channels * channels)  # the stage's first block
        convs += 18 * channels * channels * (blocks_per_stage - 1)
    return convs + widths[-1] * num_classes
