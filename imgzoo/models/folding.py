"""Fold eval-mode batch norm (``a * x + b`` per channel) into the convolution before it: an inference copy, 1.11x the
images/s of ResNet-20 (docs/notes.md). Only where safe: Conv2d -> BatchNorm2d in an ``nn.Sequential``, with a
MaxPool2d between if every ``a`` is positive (so pooling commutes); torchvision ResNets' ``convK``/``bnK`` pairs."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models import resnet as tv_resnet

__all__ = ["UncopyableModelError", "fold_batchnorm"]

# torchvision's ResNet classes and the (conv, bn) attribute pairs their forward applies back to back.
_ATTRIBUTE_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    tv_resnet.ResNet: (("conv1", "bn1"),),
    tv_resnet.BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    tv_resnet.Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


class UncopyableModelError(TypeError):
    """The model cannot be deep-copied, so it cannot be folded without changing it."""


def _foldable(conv: nn.Module, bn: nn.Module, pooled: bool = False) -> bool:
    if type(conv) is not nn.Conv2d or not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
        return False
    # a = weight / sqrt(running_var + eps) is positive exactly where weight is (1 without a weight)
    return not pooled or bn.weight is None or bool((bn.weight > 0).all())


def _fold_sequential(seq: nn.Sequential) -> None:
    """Fold every Conv2d [-> MaxPool2d] -> BatchNorm2d run in ``seq``, the batch norm left as an Identity."""
    for i in range(len(seq) - 1):
        pooled = isinstance(seq[i + 1], nn.MaxPool2d) and i + 2 < len(seq)
        j = i + 2 if pooled else i + 1
        if _foldable(seq[i], seq[j], pooled):
            seq[i], seq[j] = fuse_conv_bn_eval(seq[i], seq[j]), nn.Identity()


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` (attributes such as ``data_spec`` kept) with its batch norms folded into the
    convolutions before them: the same logits up to ~1e-6 relative in fp32; for inference only."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_batchnorm takes a torch.nn.Module, got {type(model).__name__}")
    try:
        folded = copy.deepcopy(model).eval()
    except (TypeError, RuntimeError, copy.Error) as exc:  # e.g. a non-leaf tensor kept as an attribute
        raise UncopyableModelError(
            f"fold_batchnorm folds a copy, leaving the model as it is, and could not copy this "
            f"{type(model).__name__}: {exc}. Keep derived tensors (those computed from parameters) out of the "
            f"model's attributes, or run the model as it is"
        ) from exc
    for module in list(folded.modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
        for conv_name, bn_name in _ATTRIBUTE_PAIRS.get(type(module), ()):
            if _foldable(getattr(module, conv_name), getattr(module, bn_name)):
                setattr(module, conv_name, fuse_conv_bn_eval(getattr(module, conv_name), getattr(module, bn_name)))
                setattr(module, bn_name, nn.Identity())
    return folded
