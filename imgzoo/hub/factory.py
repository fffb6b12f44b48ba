"""create_model: build a registered architecture by name, from scratch or with pretrained weights.

This sits above both the registry and the Hub client, because ``pretrained=`` joins
them: the registry says which weights an architecture has, and :func:`imgzoo.hub.api.load`
fetches, verifies and loads them. Keeping the join here is what lets the registry
import nothing of imgzoo and the Hub client know nothing of how names become models.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from imgzoo.errors import CheckpointError
from imgzoo.hub import api as hub
from imgzoo.models.registry import default_weights, get_model_entry, get_weights_entry, list_pretrained

__all__ = ["create_model"]


def create_model(name: str, *, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; keyword arguments go to its builder.

    ``pretrained=True`` loads the weights entry marked ``default=True`` for that
    architecture (or its only entry), or among the entries trained with the builder arguments
    given, that one (``create_model("resnet_cifar", depth=56, pretrained=True)``: see
    :func:`imgzoo.models.registry.default_weights`); ``pretrained="resnet_cifar.cifar10"`` names one.
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
    weights_name = pretrained if isinstance(pretrained, str) else default_weights(name, **kwargs)
    try:
        # The architecture is passed on, so weights of another model are refused rather than returned.
        return hub.load(weights_name, architecture=name, **kwargs)
    except CheckpointError as exc:
        if pretrained is not True or not kwargs:
            raise
        raise CheckpointError(f"{exc} {_what_was_trained(name, kwargs)}") from exc


def _what_was_trained(arch: str, kwargs: dict[str, Any]) -> str:
    """The registered weights of ``arch`` with the values they were trained with for the arguments in ``kwargs``."""
    entries = [get_weights_entry(n) for n in list_pretrained(f"{arch}.*")]
    described = []
    for entry in entries:
        recorded = entry.meta.get("kwargs") or {}
        shown = ", ".join(f"{k}={recorded[k]!r}" for k in kwargs if k in recorded)
        described.append(f"{entry.name} ({shown})" if shown else entry.name)
    return (
        f"pretrained=True looks for {arch!r} weights trained with these arguments and found none; the registered "
        f"ones: {'; '.join(described)}. Drop the arguments, or build it without pretrained= to train it yourself."
    )
