"""Transfer learning for dog breeds: an ImageNet-pretrained torchvision ResNet with a new head.

The original notebooks fine-tuned a ResNet-50 pretrained on ImageNet to classify
the 120 breeds of Stanford Dogs (Khosla et al. 2011). The backbone comes from
torchvision's weights API; its 1000-way classifier is replaced by a fresh
``num_classes``-way linear head.

Freezing and learning rates::

    model = dogbreed_transfer(weights="imagenet")        # backbone frozen, head trains
    model.unfreeze(last=1)                                # ... then also layer4
    model.unfreeze()                                      # ... or everything
    opt = torch.optim.SGD(model.param_groups(lr=0.01, backbone_lr_scale=0.1), momentum=0.9)
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from imgzoo.models._checks import check_input, check_num_classes
from imgzoo.models._contract import LinearHeadMixin
from imgzoo.registry import IMAGENET, register_model

__all__ = ["DogBreedTransfer", "dogbreed_transfer", "imagenet_weights_path"]

BACKBONES = ("resnet18", "resnet34", "resnet50")
STAGES = ("layer1", "layer2", "layer3", "layer4")


def _imagenet_weights(backbone: str) -> torchvision.models.WeightsEnum:
    # DEFAULT is torchvision's best ImageNet checkpoint for the architecture
    # (resnet50: IMAGENET1K_V2, 80.86% top-1; resnet18/34: IMAGENET1K_V1).
    return torchvision.models.get_model_weights(backbone).DEFAULT


def imagenet_weights_path(backbone: str) -> str:
    """Where torchvision caches the ImageNet weights of ``backbone`` (under TORCH_HOME)."""
    url = _imagenet_weights(backbone).url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def _ensure_reachable(backbone: str) -> None:
    """Fail at once, with the file to fetch, when the weights are neither cached nor downloadable."""
    path = imagenet_weights_path(backbone)
    if os.path.exists(path):
        return
    url = _imagenet_weights(backbone).url
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        raise RuntimeError(
            f"dogbreed_transfer: ImageNet weights for {backbone} are not in the torch hub cache "
            f"and {host} cannot be reached ({exc.__class__.__name__}: {exc}).\n"
            f"Expected file: {path}\n"
            f'Fetch it on a machine with internet (python -c "import torchvision; '
            f"torchvision.models.{backbone}(weights='DEFAULT')\", or download {url}) and copy it "
            f"there, or set TORCH_HOME to a folder whose hub/checkpoints/ holds it. "
            f"weights=None builds the network with random weights instead."
        ) from None


class DogBreedTransfer(LinearHeadMixin, nn.Module):
    """A torchvision ResNet trunk (its ``fc`` removed) plus a linear ``classifier``."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        in_features = backbone.fc.in_features
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_features, num_classes)

    def freeze_backbone(self) -> None:
        """Train only the classifier; the backbone's BatchNorm layers keep their ImageNet statistics."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> DogBreedTransfer:
        """As nn.Module.train, except that frozen BatchNorm layers stay in eval mode.

        A frozen layer should be frozen entirely: in train mode BatchNorm would still
        overwrite its ImageNet running statistics with those of small fine-tuning batches,
        and the features the head learns on would drift under it (the reason detectron2
        and torchvision's detection models use FrozenBatchNorm2d in fine-tuned backbones).
        """
        super().train(mode)
        if mode:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters()
                ):
                    module.eval()
        return self

    def unfreeze(self, last: int | None = None) -> None:
        """Make the whole backbone trainable, or only its ``last`` residual stages (1-4)."""
        if last is None:
            modules: list[nn.Module] = [self.backbone]
        else:
            if not isinstance(last, int) or not 0 <= last <= len(STAGES):
                raise ValueError(f"unfreeze(last=...) takes 0-{len(STAGES)} stages, got {last!r}")
            modules = [getattr(self.backbone, s) for s in STAGES[len(STAGES) - last :]]
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(True)
        self.train(self.training)  # unfrozen BatchNorm layers follow the model's mode again

    def param_groups(self, lr: float, backbone_lr_scale: float = 0.1) -> list[dict[str, Any]]:
        """Optimizer groups: the head at ``lr``, trainable backbone parameters at ``lr * backbone_lr_scale``.

        A smaller backbone rate keeps the pretrained features from being wrecked by the
        large early gradients of a randomly initialised head (Kornblith et al. 2019,
        "Do Better ImageNet Models Transfer Better?", fine-tune with a lower rate).
        """
        head = [p for p in [*self.classifier.parameters()] if p.requires_grad]
        body = [p for p in self.backbone.parameters() if p.requires_grad]
        groups = [{"params": head, "lr": lr}]
        if body:
            groups.append({"params": body, "lr": lr * backbone_lr_scale})
        return groups

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, model="dogbreed_transfer", channels=3, min_size=32)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.forward_features(x)))


@register_model("dogbreed_transfer", default_spec=IMAGENET)
def dogbreed_transfer(
    *,
    backbone: str = "resnet50",
    weights: str | None = None,
    num_classes: int = 120,
    freeze_backbone: bool = True,
    dropout: float = 0.0,
) -> DogBreedTransfer:
    """A torchvision ResNet (resnet18/34/50) with ImageNet weights (``weights="imagenet"``) and a new head.

    ``weights=None`` gives random initialisation. With ``freeze_backbone`` (the default)
    only the head trains; see :meth:`DogBreedTransfer.unfreeze` and
    :meth:`DogBreedTransfer.param_groups` for fine-tuning the rest.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"dogbreed_transfer: backbone must be one of {BACKBONES}, got {backbone!r}")
    if weights not in (None, "imagenet"):
        raise ValueError(f"dogbreed_transfer: weights must be 'imagenet' or None, got {weights!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dogbreed_transfer: dropout must be in [0, 1), got {dropout!r}")
    check_num_classes("dogbreed_transfer", num_classes)
    tv_weights = None
    if weights == "imagenet":
        _ensure_reachable(backbone)
        tv_weights = _imagenet_weights(backbone)
    model = DogBreedTransfer(torchvision.models.get_model(backbone, weights=tv_weights), num_classes, dropout)
    if freeze_backbone:
        model.freeze_backbone()
    return model
