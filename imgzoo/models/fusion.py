"""Fold batch norm into the convolution before it, for inference.

In eval mode a BatchNorm2d is a fixed per-channel affine map, ``y = a * x + b``, so the
convolution feeding it can absorb it: its weights scaled by ``a``, ``b`` added to its bias
(torch.nn.utils.fusion.fuse_conv_bn_eval does the arithmetic). The network then makes one
pass less over every feature map. On a 2-core AMD EPYC (AVX2, torch 2.14.1), channels_last
fp32 inference at batch 128 ran 1.11x faster folded for ResNet-20 (1,245 against 1,118
images/s), 1.15x for mnist_cnn and 1.09x for a ResNet-18 backbone (docs/benchmarks.md);
``python bench/bench_models.py`` measures it on any machine as the ``evaluate`` rows.
:func:`imgzoo.evaluate` runs every model through this fold (and in channels_last where fit
would train in it).

Which pairs are folded, and why those are safe:

- A Conv2d directly followed by a BatchNorm2d in an ``nn.Sequential``: in a Sequential the
  convolution's output reaches nothing but the batch norm. Every imgzoo family builds its
  conv-BN pairs this way.
- The same with a MaxPool2d between them (basic_cnn pools before its batch norm, as airbench
  does), when every channel's scale ``a`` is positive: max-pooling commutes with ``a * x + b``
  only then.
- torchvision's ResNet and its blocks (the dogbreed_transfer backbone), whose ``convK`` feeds
  ``bnK`` and nothing else in their forward.

A batch norm without running statistics (``track_running_stats=False``) normalises with the
batch's own statistics even in eval mode, so it is never folded. The caller's model is left
as it was: the folded network is a copy, in eval mode, and only for inference (its batch
norms are gone, so training it would train a different network).

:func:`fuse_for_inference` goes one step further, for the CPU: in the folded copy, each
convolution that a ReLU or GELU follows in a Sequential (past the Identity left by its batch
norm), the stem of a torchvision ResNet, and the last convolution of an imgzoo or torchvision
residual block together with the shortcut's sum and the ReLU after it, become one
:class:`imgzoo.models.fused_conv.FusedConv2d` each: one oneDNN call instead of two or three passes over
the feature map (that module has the measurements and the cases where the plain operators run).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import resnet as tv_resnet

from imgzoo.models.fused_conv import FusedConv2d, fusable_activation
from imgzoo.models.resnet_cifar import BasicBlock

__all__ = ["UncopyableModelError", "fold_batchnorm", "fuse_for_inference"]

# torchvision's ResNet classes and the (conv, bn) attribute pairs their forward applies back to back.
_TORCHVISION_PAIRS: tuple[tuple[type[nn.Module], tuple[tuple[str, str], ...]], ...] = (
    (tv_resnet.ResNet, (("conv1", "bn1"),)),
    (tv_resnet.BasicBlock, (("conv1", "bn1"), ("conv2", "bn2"))),
    (tv_resnet.Bottleneck, (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))),
)


def _scale(bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """The per-channel factor ``a`` of the eval-mode batch norm ``a * x + b``."""
    weight = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    return weight / torch.sqrt(bn.running_var + bn.eps)


def _foldable(conv: nn.Module, bn: nn.Module, pooled: bool = False) -> bool:
    if type(conv) is not nn.Conv2d or not isinstance(bn, nn.BatchNorm2d):
        return False
    if bn.running_mean is None or bn.running_var is None:  # batch statistics even in eval mode
        return False
    return not pooled or bool((_scale(bn) > 0).all())


def _fold_sequential(seq: nn.Sequential) -> int:
    """Fold every Conv2d [-> MaxPool2d] -> BatchNorm2d run in ``seq``; the number folded."""
    folded = 0
    for i in range(len(seq) - 1):
        pooled = isinstance(seq[i + 1], nn.MaxPool2d) and i + 2 < len(seq)
        j = i + 2 if pooled else i + 1
        if _foldable(seq[i], seq[j], pooled):
            seq[i] = fuse_conv_bn_eval(seq[i], seq[j])
            seq[j] = nn.Identity()
            folded += 1
    return folded


def _fold_attributes(module: nn.Module) -> int:
    """Fold the (convK, bnK) pairs of a torchvision ResNet or block; the number folded."""
    folded = 0
    for cls, pairs in _TORCHVISION_PAIRS:
        if type(module) is not cls:
            continue
        for conv_name, bn_name in pairs:
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            if _foldable(conv, bn):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


class UncopyableModelError(TypeError):
    """The model cannot be deep-copied, so it cannot be folded without changing it."""


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with its batch norms folded into the convolutions before them.

    The copy computes the same logits up to float rounding (about 1e-6 relative in fp32) and
    runs faster; ``model`` itself is not changed. Layers this cannot prove safe to fold (see the
    module's docstring) are copied as they are, so any model is accepted. The copy keeps the
    model's attributes (``data_spec``, ``pretrained_cfg``), so the transforms still travel with it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_batchnorm takes a torch.nn.Module, got {type(model).__name__}")
    try:
        folded = copy.deepcopy(model).eval()
    except (TypeError, RuntimeError, copy.Error) as exc:  # e.g. a non-leaf tensor kept as an attribute
        raise UncopyableModelError(
            f"fold_batchnorm folds a copy, leaving the model as it is, and could not copy this "
            f"{type(model).__name__}: {exc}. Keep derived tensors (those computed from parameters) out of the "
            f"model's attributes, or fold nothing and run the model as it is"
        ) from exc
    for module in list(folded.modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        _fold_attributes(module)
    return folded


# ---------------------------------------------------------------------------- activations and sums


class _FusedResidual(nn.Module):
    """A residual block as inference runs it: ``last(body(x), residual=shortcut(x))``.

    ``last`` is the block's final convolution with its sum and activation fused (FusedConv2d);
    ``shortcut`` None is a block without a skip connection.
    """

    def __init__(self, body: nn.Module, last: FusedConv2d, shortcut: nn.Module | None) -> None:
        super().__init__()
        self.body, self.last, self.shortcut = body, last, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.body(x), residual=None if self.shortcut is None else self.shortcut(x))


def _folded(*modules: nn.Module) -> bool:
    """Whether the batch norms that stood here were all folded away (each is now an Identity)."""
    return all(type(m) is nn.Identity for m in modules)


def _residual_of(block: nn.Module) -> _FusedResidual | None:
    """The fused form of a folded imgzoo or torchvision residual block; None for anything else."""
    if type(block) is BasicBlock:
        parts = list(block.residual)  # conv, bn, relu, conv, bn; then relu(residual + shortcut)
        if len(parts) < 2 or type(parts[-2]) is not nn.Conv2d or not _folded(parts[-1]):
            return None
        return _FusedResidual(nn.Sequential(*parts[:-2]), FusedConv2d(parts[-2], nn.ReLU()), block.shortcut)
    if type(block) in (tv_resnet.BasicBlock, tv_resnet.Bottleneck):
        count = 2 if type(block) is tv_resnet.BasicBlock else 3  # relu(bnK(convK(...)) + downsample(x)), K last
        convs = [getattr(block, f"conv{k}") for k in range(1, count + 1)]
        if not _folded(*(getattr(block, f"bn{k}") for k in range(1, count + 1))):
            return None
        if any(type(c) is not nn.Conv2d for c in convs) or fusable_activation(block.relu) is None:
            return None
        body = nn.Sequential(*(m for conv in convs[:-1] for m in (conv, block.relu)))
        shortcut = block.downsample if block.downsample is not None else nn.Identity()
        return _FusedResidual(body, FusedConv2d(convs[-1], block.relu), shortcut)
    return None


def _fuse_blocks(model: nn.Module) -> None:
    """Replace every residual block _residual_of knows by its fused form, wherever it sits."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            fused = _residual_of(child)
            if fused is not None:
                setattr(parent, name, fused)


def _fuse_activations(model: nn.Module) -> None:
    """Each Conv2d followed in a Sequential (past folded batch norms) by a ReLU or GELU takes it in.

    torchvision's ResNet stem too: its forward applies conv1, bn1 and relu back to back.
    """
    for module in list(model.modules()):
        stem = type(module) is tv_resnet.ResNet and _folded(module.bn1) and type(module.conv1) is nn.Conv2d
        if stem and fusable_activation(module.relu) is not None:
            module.conv1, module.relu = FusedConv2d(module.conv1, module.relu), nn.Identity()
        if not isinstance(module, nn.Sequential):
            continue
        parts = list(module)
        for i, conv in enumerate(parts):
            j = i + 1
            while j < len(parts) and type(parts[j]) is nn.Identity:
                j += 1
            if type(conv) is nn.Conv2d and j < len(parts) and fusable_activation(parts[j]) is not None:
                module[i], module[j] = FusedConv2d(conv, parts[j]), nn.Identity()


def fuse_for_inference(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """:func:`fold_batchnorm`'s copy, with activations and residual sums fused into the convolutions.

    Each convolution followed by a ReLU or GELU, and each residual block's last convolution with the
    shortcut's sum and the ReLU after it, becomes one :class:`imgzoo.models.fused_conv.FusedConv2d`: one
    oneDNN call on a CPU in channels_last, and the plain operators anywhere else (see that module for
    where, and for the speed it measured). The logits are the same as the folded copy's in fp32 and
    agree to bf16's rounding under bf16 autocast. ``model`` itself is not changed; the copy is for
    inference only. The copy is for ``device``: on any other device than a CPU the fused modules
    could only run the plain operators, so there the copy is :func:`fold_batchnorm`'s alone.
    """
    fused = fold_batchnorm(model)
    if torch.device(device).type != "cpu":
        return fused
    _fuse_blocks(fused)
    _fuse_activations(fused)
    return fused
