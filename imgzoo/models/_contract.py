"""timm's model contract (``get_classifier`` / ``reset_classifier``, ``num_classes``, ``num_features``,
``pretrained_cfg``, ``feature_info``, ``forward_intermediates``), so timm's tools take imgzoo models as they are. A
model with layers set from training images says ``needs_init_from_data = True`` (``init_from_data``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from imgzoo.models._checks import check_input
from imgzoo.models.registry import ARCH_ATTR, SPEC_ATTR, DataSpec

POOLS = {"avg": nn.AdaptiveAvgPool2d, "max": nn.AdaptiveMaxPool2d}


def pretrained_cfg(spec: DataSpec, architecture: str | None = None) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for a :class:`DataSpec`, whose eval transform timm's ``crop_pct`` (``resize=256`` for
    224: 0.875) or ``"squash"`` (straight to ``size``) reproduces."""
    return {
        "architecture": architecture,
        "input_size": spec.input_shape,
        "interpolation": "bilinear",
        "crop_pct": spec.size[0] / spec.resize if spec.resize else 1.0,
        "crop_mode": "center" if spec.resize else "squash",
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
    """The contract for a model whose head is one ``nn.Linear`` named ``classifier``, its stages in ``feature_info``."""

    # TorchScript compiles properties too and cannot type feature_info's dicts; none of them is for forward.
    __jit_unused_properties__ = ["num_classes", "num_features", "head_hidden_size", "pretrained_cfg"]

    if TYPE_CHECKING:  # TorchScript reads class annotations and cannot resolve these
        classifier: nn.Linear
        feature_info: list[dict[str, Any]]
        in_chans: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]

    def _check_input(self, x: torch.Tensor, model: str, **rule: Any) -> None:
        """_checks.check_input with the model's channels and dtype; called where TorchScript compiles no branch."""
        check_input(x, model=model, channels=self.in_chans, dtype=self.classifier.weight.dtype, **rule)

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
        """A fresh head with ``num_classes`` outputs on the old head's device and dtype; ``global_pool`` ("avg" or
        "max") replaces the pool too. ``data_spec`` is left as it is, as timm keeps ``pretrained_cfg``."""
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
        """timm's call: the outputs of the stages ``feature_info`` lists (``indices``: which, or the last n), and the
        final feature map unless ``intermediates_only``; read by hooks, so each family's ``forward_features`` runs."""
        count = len(self.feature_info)
        if isinstance(indices, int):
            indices = list(range(count - indices, count))
        take = list(range(count)) if indices is None else [i % count for i in indices]
        outputs: dict[int, torch.Tensor] = {}
        stages = [(i, self.get_submodule(self.feature_info[i]["module"])) for i in take]
        hooks = [m.register_forward_hook(lambda _m, _a, out, i=i: outputs.__setitem__(i, out)) for i, m in stages]
        try:
            final = self.forward_features(x)  # type: ignore[attr-defined]
        finally:
            for hook in hooks:
                hook.remove()
        intermediates = [outputs[i] for i in take]
        return intermediates if intermediates_only else (final, intermediates)
