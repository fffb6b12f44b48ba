"""timm's model contract: a new head goes through ``get_classifier`` / ``reset_classifier``, never an attribute
name. A model with layers set from training images says ``needs_init_from_data = True`` (``init_from_data``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn


class LinearHeadMixin:
    """``forward`` and the head methods for a model whose head is one ``nn.Linear`` named ``classifier``."""

    if TYPE_CHECKING:  # TorchScript reads class annotations and cannot resolve this one
        classifier: nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh, randomly initialised head with ``num_classes`` outputs on the old head's device and dtype."""
        old = self.classifier
        self.classifier = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
