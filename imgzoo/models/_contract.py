"""timm's model contract: a new head goes through ``get_classifier`` / ``reset_classifier``, never an attribute
name; ``num_classes``, ``num_features``, ``pretrained_cfg``, ``feature_info`` and ``forward_intermediates`` are
timm's names, so timm's data config, feature extraction and training script take imgzoo models as they are. A
model with layers set from training images says ``needs_init_from_data = True`` (``init_from_data``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from imgzoo.models.registry import ARCH_ATTR, SPEC_ATTR, DataSpec

POOLS = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}


def pretrained_cfg(spec: DataSpec, architecture: str | None = None) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for a :class:`DataSpec`. Its eval transform resizes the shorter side to
    ``size / crop_pct`` and centre-crops (``resize=256`` for 224: 0.875), or with ``"squash"`` resizes straight to
    ``size``: imgzoo's eval transform either way (bilinear, antialiased)."""
    crop = {"crop_pct": spec.size[0] / spec.resize, "crop_mode": "center"} if spec.resize else {}
    return {
        "architecture": architecture,
        "input_size": spec.input_shape,
        "interpolation": "bilinear",
        **(crop or {"crop_pct": 1.0, "crop_mode": "squash"}),
        "mean": spec.mean,
        "std": spec.std,
        "num_classes": spec.num_classes,
        "label_names": spec.class_names,
        "classifier": "classifier",
    }


def stages_info(modules: list[str], channels: list[int], reductions: list[int]) -> list[dict[str, Any]]:
    """timm's ``feature_info``: each stage's module, output channels and stride from the input."""
    return [{"module": m, "num_chs": c, "reduction": r} for m, c, r in zip(modules, channels, reductions, strict=True)]


class LinearHeadMixin:
    """``forward``, the head methods and timm's attributes for a model whose head is one ``nn.Linear`` named
    ``classifier`` and whose stages ``feature_info`` names."""

    # TorchScript compiles properties too and cannot type feature_info's dicts; none of them is for forward.
    __jit_unused_properties__ = ["num_classes", "num_features", "head_hidden_size", "pretrained_cfg"]

    if TYPE_CHECKING:  # TorchScript reads class annotations and cannot resolve these
        classifier: nn.Linear
        feature_info: list[dict[str, Any]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]

    def get_classifier(self) -> nn.Module:
        return self.classifier

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    @property
    def num_features(self) -> int:
        """Channels of ``forward_features``' output (timm's meaning); ``head_hidden_size`` is the classifier's input."""
        return self.feature_info[-1]["num_chs"]

    @property
    def head_hidden_size(self) -> int:
        return self.classifier.in_features

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """Derived from ``data_spec`` (what imgzoo's transforms read), so the two cannot disagree."""
        spec = getattr(self, SPEC_ATTR, None)
        return pretrained_cfg(spec, getattr(self, ARCH_ATTR, None)) if spec is not None else {}

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh, randomly initialised head with ``num_classes`` outputs on the old head's device and dtype;
        ``global_pool`` ("avg" or "max") replaces the pool too. Nothing else changes, ``data_spec`` included: the
        label set is the caller's (as timm's ``pretrained_cfg`` keeps the checkpoint's)."""
        if global_pool is not None:
            if global_pool not in POOLS or not isinstance(getattr(self, "pool", None), tuple(POOLS.values())):
                raise ValueError(
                    f"reset_classifier: global_pool must be None or one of {list(POOLS)} on a model with a global "
                    f"pool; got {global_pool!r} for {type(self).__name__}"
                )
            self.pool = POOLS[global_pool](1)
        old = self.classifier
        self.classifier = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)

    def forward_intermediates(
        self, x: torch.Tensor, indices: int | list[int] | None = None, intermediates_only: bool = False
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's call: the outputs of the stages ``feature_info`` lists (``indices``: which, or the last n), and
        the final feature map unless ``intermediates_only``. Read by forward hooks: every family's own
        ``forward_features`` runs, checks included."""
        count = len(self.feature_info)
        if isinstance(indices, int):
            indices = list(range(count - indices, count))
        take = list(range(count)) if indices is None else [i % count for i in indices]
        outputs: dict[int, torch.Tensor] = {}
        hooks = [
            self.get_submodule(self.feature_info[i]["module"]).register_forward_hook(
                lambda module, args, out, i=i: outputs.__setitem__(i, out)
            )
            for i in take
        ]
        try:
            final = self.forward_features(x)  # type: ignore[attr-defined]
        finally:
            for hook in hooks:
                hook.remove()
        intermediates = [outputs[i] for i in take]
        return intermediates if intermediates_only else (final, intermediates)
