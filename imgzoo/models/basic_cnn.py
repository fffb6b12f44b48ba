"""A plain CNN for 32x32 colour images after airbench94 (Jordan 2024, arXiv:2404.00498); each of its details is an
argument, off by default, which the ``basic_cnn.airbench`` recipe sets."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

import imgzoo.models._checks as checks
from imgzoo.models._contract import LinearHeadMixin, stages_info
from imgzoo.models.registry import CIFAR10, register_model

__all__ = ["BasicCNN", "basic_cnn", "init_whitening"]

# airbench94's whitening: 2x2 patches of 3 channels have 12 dimensions; 12 filters and their negatives.
WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL**2
# airbench94's eps: keeps the near-zero eigenvalues of JPEG-smooth patches from blowing up their filters.
WHITEN_EPS = 5e-4


def conv_bn_act(
    in_channels: int, out_channels: int, pool: bool = False, bn_momentum: float = 0.1, bn_scale: bool = True
) -> list[nn.Module]:
    """conv3x3 [-> maxpool2] -> BN -> GELU. Pooling before BN halves the BN cost (airbench)."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
    bn.weight.requires_grad_(bn_scale)  # False: the scale stays 1 and only the shift learns (airbench)
    return [conv, *([nn.MaxPool2d(2)] if pool else []), bn, nn.GELU()]


@torch.no_grad()
def dirac_init_(model: nn.Module) -> None:
    """Each trainable 3x3 convolution starts as the identity on its first filters, the rest random (airbench94:
    22 -> 18 epochs to 94% in its ablations)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3) and module.weight.requires_grad:
            weight = module.weight
            nn.init.dirac_(weight[: min(weight.shape[0], weight.shape[1])])


class BasicCNN(LinearHeadMixin, nn.Module):
    """Stem, then one block per width (each halving the resolution), global max pool, linear."""

    def __init__(
        self,
        widths: tuple[int, ...] = (64, 256, 256),
        num_classes: int = 10,
        stem_width: int = 32,
        dropout: float = 0.0,
        whiten: bool = False,
        bn_momentum: float = 0.1,
        bn_scale: bool = True,
        logit_scale: float = 1.0,
        dirac_init: bool = False,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.in_chans = in_chans
        norm = {"bn_momentum": bn_momentum, "bn_scale": bn_scale}
        if whiten:
            # No bias (airbench trains one for 3 epochs): the trainable parameters never change mid-run.
            whitening = nn.Conv2d(3, WHITEN_WIDTH, WHITEN_KERNEL, bias=False)
            whitening.weight.requires_grad_(False)  # set from data by init_from_data, never trained
            self.stem = nn.Sequential(whitening, nn.GELU())
            stem_width = WHITEN_WIDTH
        else:
            self.stem = nn.Sequential(*conv_bn_act(in_chans, stem_width, **norm))
        self.whiten = self.needs_init_from_data = whiten  # the model contract's flag for init_from_data
        pairs = zip([stem_width, *widths], widths, strict=False)  # each block halves the resolution
        blocks = [nn.Sequential(*conv_bn_act(a, b, pool=True, **norm), *conv_bn_act(b, b, **norm)) for a, b in pairs]
        self.blocks = nn.Sequential(*blocks)
        n = len(widths)
        self.feature_info = stages_info([f"blocks.{i}" for i in range(n)], list(widths), [2 << i for i in range(n)])
        self.min_size = 2 ** len(widths) + (WHITEN_KERNEL - 1 if whiten else 0)  # the 2x2 patches lose a pixel
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(widths[-1], num_classes)
        self.logit_scale = logit_scale
        if dirac_init:
            dirac_init_(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's feature map, (N, widths[-1], H / 2**len(widths), W / 2**len(widths))."""
        if not torch.jit.is_scripting():  # TorchScript compiles no branch below this test
            self._check_input(x, "basic_cnn", min_size=self.min_size)
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global max pool, dropout, the classifier (not with ``pre_logits``)."""
        x = self.dropout(self.pool(x).flatten(1))
        if pre_logits:
            return x
        logits = self.classifier(x)
        return logits if self.logit_scale == 1.0 else logits * self.logit_scale

    def init_from_data(self, images: torch.Tensor) -> BasicCNN:
        """Set the whitening stem from training images (:func:`init_whitening`); a no-op without one."""
        return init_whitening(self, images) if self.whiten else self


MAX_BLOCKS = 8  # each halves the resolution: eight need 256-pixel images, beyond the small ones this is for
MAX_WIDTH = 4096  # twice ResNet-50's widest stage


@register_model("basic_cnn", default_spec=CIFAR10)
def basic_cnn(
    *,
    widths: tuple[int, ...] | list[int] = (64, 256, 256),
    num_classes: int = 10,
    stem_width: int = 32,
    dropout: float = 0.0,
    whiten: bool = False,
    bn_momentum: float = 0.1,
    bn_scale: bool = True,
    logit_scale: float = 1.0,
    dirac_init: bool = False,
    in_chans: int = 3,
) -> BasicCNN:
    """A plain 3-block CNN after airbench94, ~2M parameters, for 3x32x32 images. ``whiten=True``: a frozen 2x2
    patch-whitening stem set by ``model.init_from_data(images)``; airbench94 uses ``bn_momentum=0.4``,
    ``bn_scale=False``, ``logit_scale=1/9``, ``dirac_init=True``; ``in_chans=1`` for grey images (no whitening)."""
    if not isinstance(widths, (tuple, list)) or not 1 <= len(widths) <= MAX_BLOCKS:
        raise TypeError(
            f"basic_cnn: widths must be a tuple or list of 1 to {MAX_BLOCKS} ints (one per block, each halving "
            f"the resolution), e.g. (64, 256, 256); got {widths!r}"
        )
    widths = tuple(widths)
    for name, value in {**{f"widths[{i}]": w for i, w in enumerate(widths)}, "stem_width": stem_width}.items():
        checks.check_int("basic_cnn", name, value, high=MAX_WIDTH, why="twice ResNet-50's widest stage")
    checks.check_bools("basic_cnn", whiten=whiten, bn_scale=bn_scale, dirac_init=dirac_init)
    if whiten and stem_width != 32:
        raise ValueError(
            f"basic_cnn: whiten=True fixes the stem's width at {WHITEN_WIDTH} (12 eigenvector filters and their "
            f"negatives), so stem_width={stem_width} would have no effect; leave it at 32, or pass whiten=False"
        )
    checks.check_choice("basic_cnn", "in_chans", in_chans, (1, 3) if not whiten else (3,))  # 12 colour filters
    checks.check_dropout("basic_cnn", dropout)
    checks.check_fraction("basic_cnn", "bn_momentum", bn_momentum, "the weight of each new batch in the statistics")
    checks.check_fraction("basic_cnn", "logit_scale", logit_scale, "a factor on the logits; airbench94 uses 1/9")
    checks.check_num_classes("basic_cnn", num_classes)
    # 3x3 convolutions and classifier: nearly all parameters
    convs = 9 * 3 * stem_width + sum(9 * (a * b + b * b) for a, b in zip((stem_width, *widths), widths, strict=False))
    arguments = f"widths={widths}, stem_width={stem_width}, num_classes={num_classes}"
    checks.check_parameter_budget("basic_cnn", convs + widths[-1] * num_classes, arguments)
    return BasicCNN(
        widths, num_classes, stem_width, dropout, whiten, bn_momentum, bn_scale, logit_scale, dirac_init, in_chans
    )


def _normalised(model: BasicCNN, images: torch.Tensor) -> torch.Tensor:
    """``images`` as the model sees them: uint8 batches normalised with its DataSpec, floats as they are."""
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        raise ValueError(
            f"init_whitening takes a batch of training images (N, 3, H, W), uint8 or normalised float, e.g. a few "
            f"thousand of them; got shape {tuple(images.shape)}"
        )
    if images.is_floating_point():
        return images.float()
    spec = getattr(model, "data_spec", None)
    if images.dtype != torch.uint8 or spec is None:
        raise ValueError(
            f"init_whitening: {images.dtype} images need the model's data_spec to be normalised, and only uint8 "
            "ones can be; pass uint8 images to a model built with imgzoo.create_model, or normalised float ones"
        )
    return TF.normalize(images.float() / 255.0, list(spec.mean), list(spec.std))


def _patch_second_moment(images: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """E[p p^T] over every 2x2 patch p, float64; not centred, as airbench94's (normalised images have zero mean)."""
    size = 3 * WHITEN_KERNEL**2
    total = torch.zeros(size, size, dtype=torch.float64, device=images.device)
    count = 0
    for part in images.split(chunk):
        flat = F.unfold(part, WHITEN_KERNEL).transpose(1, 2).reshape(-1, size).double()  # (N * H' * W', 12)
        total += flat.T @ flat
        count += len(flat)
    return total / count


@torch.no_grad()
def init_whitening(model: BasicCNN, images: torch.Tensor, eps: float = WHITEN_EPS) -> BasicCNN:
    """Set the whitening stem of ``basic_cnn(whiten=True)`` from training images (airbench94 uses 5,000): the
    patches' eigenvectors over sqrt(eigenvalue + eps), then negated (the GELU after it passes both signs)."""
    if not isinstance(model, BasicCNN) or not model.whiten:
        raise ValueError(f"init_whitening sets the stem of basic_cnn(whiten=True); got {type(model).__name__}"
                         + (" built with whiten=False" if isinstance(model, BasicCNN) else "")
                         + ". Build the model with imgzoo.create_model('basic_cnn', whiten=True)")  # fmt: skip
    eigenvalues, eigenvectors = torch.linalg.eigh(_patch_second_moment(_normalised(model, images)))
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.T.flip(0)  # largest first, one per row
    filters = eigenvectors / torch.sqrt(eigenvalues.clamp(min=0) + eps)[:, None]
    filters = filters.reshape(-1, 3, WHITEN_KERNEL, WHITEN_KERNEL)
    layer = model.stem[0]
    layer.weight.copy_(torch.cat([filters, -filters]).to(layer.weight))  # its dtype and device
    return model
