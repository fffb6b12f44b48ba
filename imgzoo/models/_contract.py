"""The head half of timm's model contract: loading weights into another number of classes goes through
``get_classifier`` / ``reset_classifier``, never an attribute name, so a user's model with an ``fc`` loads too.

A model with layers set from training images before training (basic_cnn's whitening stem) says so with
``needs_init_from_data = True`` and does it in ``init_from_data(images)``; callers never name the family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn


class LinearHeadMixin:
    """``get_classifier`` / ``reset_classifier`` for a model whose head is one ``nn.Linear`` named ``classifier``."""

    if TYPE_CHECKING:  # TorchScript reads class annotations and cannot resolve this one
        classifier: nn.Linear

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh, randomly initialised head with ``num_classes`` outputs on the old head's device and dtype."""
        old = self.classifier
        self.classifier = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
