"""create_model: build a registered architecture by name, from scratch or with pretrained weights.

This sits above both the registry and the Hub client, because ``pretrained=`` joins
them: the registry says which weights an architecture has, and :func:`imgzoo.hub.load`
fetches, verifies and loads them. Keeping the join here is what lets the registry
import nothing of imgzoo and the Hub client know nothing of how names become models.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from imgzoo import hub
from imgzoo.registry import default_weights, get_model_entry

__all__ = ["create_model"]


def create_model(name: str, *, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; keyword arguments go to its builder.

    ``pretrained=True`` loads the weights entry marked ``default=True`` for that
    architecture (or its only entry); ``pretrained="resnet_cifar.cifar10"`` names one.
    Asking for another ``num_classes`` than the weights were trained with loads
    everything but the classifier, as timm does. A pretrained model comes back in eval
    mode, as :func:`imgzoo.load` returns it; one built from scratch in train mode.
    """
    if not isinstance(pretrained, (bool, str)):
        raise TypeError(
            f"create_model's pretrained= takes True, False or a weights name like 'resnet_cifar.cifar10'; "
            f"got {type(pretrained).__name__} {pretrained!r}"
        )
    entry = get_model_entry(name)
    if not pretrained:
        return entry.builder(**kwargs)
    weights_name = pretrained if isinstance(pretrained, str) else default_weights(name)
    # The architecture is passed on, so weights of another model are refused rather than returned.
    return hub.load(weights_name, architecture=name, **kwargs)
