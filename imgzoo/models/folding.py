"""Fold batch norm into the convolution before it: an inference copy, for export and for users who ask.

In eval mode a BatchNorm2d is a fixed per-channel affine map ``a * x + b``, so the convolution feeding
it can absorb it (torch.nn.utils.fusion.fuse_conv_bn_eval does the arithmetic) and the network makes
one pass less over every feature map: 1.11x the images/s of ResNet-20 in channels_last fp32 on a
2-core AMD EPYC (docs/benchmarks.md). Folded, only where provably safe:

- a Conv2d directly followed by a BatchNorm2d in an ``nn.Sequential``, where the convolution's
  output reaches nothing else (every imgzoo family builds its conv-BN pairs so);
- the same with a MaxPool2d between them, when every channel's scale ``a`` is positive (max-pooling
  commutes with ``a * x + b`` only then: basic_cnn pools before its batch norm, as airbench does);
- torchvision's ResNet and its blocks (the dogbreed_transfer backbone), whose forward applies
  ``convK`` then ``bnK`` and nothing else to the convolution's output.

A batch norm without running statistics normalises with the batch's own even in eval mode: never folded.
"""

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
    weight = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
    return not pooled or bool((weight / torch.sqrt(bn.running_var + bn.eps) > 0).all())


def _fold_sequential(seq: nn.Sequential) -> None:
    """Fold every Conv2d [-> MaxPool2d] -> BatchNorm2d run in ``seq``, the batch norm left as an Identity."""
    for i in range(len(seq) - 1):
        pooled = isinstance(seq[i + 1], nn.MaxPool2d) and i + 2 < len(seq)
        j = i + 2 if pooled else i + 1
        if _foldable(seq[i], seq[j], pooled):
            seq[i], seq[j] = fuse_conv_bn_eval(seq[i], seq[j]), nn.Identity()


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with its batch norms folded into the convolutions before them.

    The same logits up to float rounding (about 1e-6 relative in fp32); ``model`` is not changed. Layers
    not provably safe to fold are copied as they are, so any model is accepted. The copy keeps the model's
    attributes (``data_spec``), so its transforms travel with it; it is for inference only (its batch norms
    are gone, so training it would train another network).
    """
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
