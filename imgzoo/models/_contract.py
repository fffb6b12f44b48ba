"""The head half of the model contract that every imgzoo model keeps (timm's, ``timm/models/resnet.py``).

Loading weights into a model with another number of classes goes through ``get_classifier`` and
``reset_classifier``, never through an attribute name, so a user's model whose head is called ``fc``
loads the same way as imgzoo's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn


class LinearHeadMixin:
    """``get_classifier`` / ``reset_classifier`` for a model whose head is one ``nn.Linear`` named ``classifier``."""

    if TYPE_CHECKING:  # only for type checkers: TorchScript reads class annotations and cannot resolve this one
        classifier: nn.Linear

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh, randomly initialised head with ``num_classes`` outputs on the old head's device and dtype."""
        old = self.classifier
        self.classifier = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
