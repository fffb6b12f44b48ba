"""Train and eval preprocessing from a model's DataSpec, as torchvision.transforms.v2 pipelines:
any image (PIL of any mode; uint8 or float tensor (H, W) / (C, H, W); numpy (H, W) / (H, W, C)) -> uint8 with the
spec's channels (gray <-> RGB, ITU-R 601-2 luma; alpha dropped) -> resize / augmentation -> float32 -> normalise.

16-bit images are divided by 65535 and F images taken as 0..1 (or scaled from a TIFF's declared range), never
clipped as PIL's convert clips them (an I;16 1000 to 255, an F 0.5 to 0); values outside the range are an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from imgzoo.data.datasets import is_int
from imgzoo.models.registry import DataSpec, get_model_entry, get_weights_entry

__all__ = ["AUGMENTS", "Cutout", "ToImage", "augmentation", "build_transform", "flip_preserves_label", "for_model",
           "spec_of"]  # fmt: skip

AUGMENTS = ("none", "standard", "strong", "affine")

PAD_FRACTION = 4 / 32  # the random crop's padding: 4 pixels on 32x32, as He et al. 2016 (section 4.2)


def flip_preserves_label(spec: DataSpec) -> bool:
    """Whether a horizontal flip keeps an image's label: not on MNIST, where a mirrored digit is not the same digit."""
    return spec.name != "mnist"


class Cutout(v2.RandomErasing):
    """A ``size``-pixel square set to 0 (the mean, once normalised) wholly inside the image: RandomErasing of one
    fixed square area. DeVries and Taylor 2017 (arXiv:1708.04552) used 16 on CIFAR-10, airbench96 (Jordan 2024) 12."""

    def __init__(self, size: int, image_size: Sequence[int]) -> None:
        area = size * size / (image_size[0] * image_size[1])
        super().__init__(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0)
        self.size = size


def _pixels(what: str, value: Any, side: int) -> None:
    """A count of pixels under the image's shorter side: a larger shift or square would blank the whole image."""
    if not is_int(value, 0, side):
        raise ValueError(f"{what} under the image's side of {side}; got {value!r}")


def augmentation(
    spec: DataSpec, augment: str = "standard", *, translate: int | None = None, cutout: int = 0
) -> tuple[list[Any], list[Any]]:
    """The training augmentation, defined once: (ops on uint8 images, ops on normalised float images), applied image
    by image by :func:`build_transform` and to whole batches by :class:`imgzoo.data.loaders.FastLoader`.

    ``"standard"``: a random crop of a reflection-padded copy (``translate`` pixels, default 1/8 of the side;
    reflection as airbench, so the border is no frame to key on), or RandomResizedCrop for ``spec.resize``; a flip
    unless it changes the label. ``"strong"`` adds TrivialAugmentWide (arXiv:2103.10158) and random erasing
    (arXiv:1708.04896); ``"affine"`` rotation up to 10 degrees and scaling 0.9-1.1 (Simard et al. 2003, MNIST).
    """
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    side = min(spec.size)
    _pixels("translate must be a whole number of pixels >= 0 (None: 1/8 of the side)", translate or 0, side)
    _pixels("cutout is the side of the square blanked out, a whole number of pixels >= 0", cutout, side)
    if augment == "none":
        return [], []
    if spec.resize is not None:
        before: list[Any] = [v2.RandomResizedCrop(spec.size, antialias=True)]
    else:
        pad = round(PAD_FRACTION * side) if translate is None else translate
        before = [v2.RandomCrop(spec.size, padding=pad, padding_mode="reflect")]
    before += [v2.RandomHorizontalFlip()] if flip_preserves_label(spec) else []
    if augment != "standard":
        before.append(v2.TrivialAugmentWide() if augment == "strong" else v2.RandomAffine(degrees=10, scale=(0.9, 1.1)))
    after: list[Any] = [v2.RandomErasing(p=0.25, value=0)] if augment == "strong" else []
    after += [Cutout(cutout, spec.size)] if cutout else []
    return before, after


class ToImage:
    """Convert any supported image to a uint8 (or float) ``tv_tensors.Image`` with ``channels`` channels."""

    def __init__(self, channels: int) -> None:
        if channels not in (1, 3):
            raise ValueError(f"ToImage: channels must be 1 or 3, got {channels!r}")
        self.channels = channels

    def __call__(self, image: Any) -> tv_tensors.Image:
        if isinstance(image, Image.Image) and image.mode in _FULL_SCALE:
            image = _wide_to_unit_float(image)
        elif isinstance(image, Image.Image):
            # P and PA through RGBA: a palette's transparency would make PIL warn; opaque pixels keep their colours
            image = image.convert("RGBA") if image.mode in ("P", "PA") else image
            return tv_tensors.Image(TF.pil_to_tensor(_convert(image, "L" if self.channels == 1 else "RGB")))
        if isinstance(image, np.ndarray):
            if image.ndim == 3:  # numpy images are channels-last (H, W, C)
                image = image.transpose(2, 0, 1)
            image = torch.from_numpy(np.ascontiguousarray(image))
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"expected a PIL image, a torch.Tensor (C, H, W) or a numpy array (H, W, C); got {type(image).__name__}"
            )
        if image.dtype != torch.uint8 and not image.is_floating_point():
            raise TypeError(f"expected a uint8 image (0-255) or a float image (0-1); got dtype {image.dtype}. "
                            f"Convert it first, e.g. (x / x.max() * 255).to(torch.uint8).")  # fmt: skip
        if image.ndim == 2:
            image = image.unsqueeze(0)
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4) or min(image.shape[1:]) < 1:
            raise ValueError(f"expected one image shaped (H, W) or (C, H, W) with C in 1, 3, 4 "
                             f"(numpy arrays: (H, W) or (H, W, C)); got shape {tuple(image.shape)}. "
                             f"For a batch, transform each image or use imgzoo.data.loaders.FastLoader.")  # fmt: skip
        image = image.as_subclass(torch.Tensor)
        if image.shape[0] == 4:  # drop alpha, as PIL's RGBA -> RGB does
            image = image[:3]
        if image.shape[0] == 3 and self.channels == 1:
            image = TF.rgb_to_grayscale(image)
        elif image.shape[0] == 1 and self.channels == 3:
            image = image.expand(3, -1, -1)
        return tv_tensors.Image(image.contiguous())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channels={self.channels})"


# "Full white" of PIL's high-bit-depth modes: 16-bit PNG and TIFF open as I;16 (or I in older PIL and some TIFFs).
_FULL_SCALE = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}

_TIFF_MIN_SAMPLE, _TIFF_MAX_SAMPLE = 340, 341  # SMinSampleValue, SMaxSampleValue: the range a TIFF declares


def _wide_to_unit_float(image: Image.Image) -> torch.Tensor:
    """A 16-bit or float image as float32 (1, H, W) in 0..1, scaled by its (TIFF-declared) range, never clipped."""
    values = np.asarray(image, dtype=np.float64)
    tags = getattr(image, "tag_v2", None) or {}
    low, high = np.min(tags.get(_TIFF_MIN_SAMPLE, np.nan)), np.max(tags.get(_TIFF_MAX_SAMPLE, np.nan))
    low, high = (float(low), float(high)) if high > low else (0.0, _FULL_SCALE[image.mode])  # NaN: none declared
    if values.size and (np.isnan(values).any() or values.min() < low or values.max() > high):
        finite = values[~np.isnan(values)]  # np.nanmin of only NaN would print numpy's warning before this error
        raise ValueError(
            f"a mode {image.mode} image should hold values in {low:g}..{high:g}; got "
            f"{f'{finite.min():g}..{finite.max():g}' if finite.size else 'no number'}"
            f"{' and NaN' if np.isnan(values).any() else ''}. "
            f"Scale it to 0..1 first (e.g. Image.fromarray(np.asarray(image) / image_max)), or convert it "
            f"to an 8-bit mode with your own mapping; imgzoo does not clip."
        )
    return torch.from_numpy(((values - low) / (high - low)).astype(np.float32)).unsqueeze(0)


def _convert(image: Image.Image, mode: str) -> Image.Image:
    """``image.convert(mode)``, through LA, RGBA or RGB for the modes PIL cannot convert directly (La, LAB)."""
    for route in ((), ("LA",), ("RGBA",), ("RGB",)):
        try:
            converted = image
            for step in (*route, mode):
                if converted.mode != step:
                    converted = converted.convert(step)
            return converted
        except ValueError:
            continue
    raise ValueError(
        f"cannot convert a mode {image.mode} image to {mode}; expected one of PIL's usual modes "
        f"(1, L, LA, P, RGB, RGBA, CMYK, YCbCr, I;16, I, F). Convert it to RGB yourself first."
    )


def build_transform(
    spec: DataSpec, train: bool = False, augment: str = "standard", *, translate: int | None = None, cutout: int = 0
) -> v2.Compose:
    """Any image -> float32 tensor of ``spec.input_shape``, normalised; with ``train``, :func:`augmentation`'s ops,
    else resized (small images), or shorter side resized to ``spec.resize`` and centre-cropped (ImageNet-style)."""
    if not isinstance(spec, DataSpec):
        raise TypeError(f"build_transform expects a DataSpec; got {type(spec).__name__}. Use for_model() for models.")
    ops = augmentation(spec, augment, translate=translate, cutout=cutout)
    before, after = ops if train else ([], [])
    if before or spec.resize is None:
        resize = [v2.Resize(spec.size, antialias=True)] if spec.resize is None else []
    else:
        resize = [v2.Resize(spec.resize, antialias=True), v2.CenterCrop(spec.size)]
    normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)]
    return v2.Compose([ToImage(spec.channels), *resize, *before, *normalise, *after, v2.ToPureTensor()])


def _spec_of_name(name: str) -> DataSpec:
    """The DataSpec a model name or weights name (``arch.tag``) stands for: the architecture's ``default_spec``
    with the entry's categories, the same preprocessing as the weights' config.json (which the hub layer reads)."""
    if "/" in name or "\\" in name:
        raise ValueError(f"for_model takes a model, a registered model name ('resnet_cifar') or weights name "
                         f"('resnet_cifar.cifar10'); got {name!r}, which looks like a Hub repository or a folder. "
                         f"Load it first: for_model(imgzoo.load({name!r})).")  # fmt: skip
    if "." not in name:
        return get_model_entry(name).default_spec
    entry = get_weights_entry(name)
    spec = get_model_entry(entry.arch).default_spec
    categories = entry.meta.get("categories")
    if categories:
        return spec.with_classes(len(categories), tuple(str(c) for c in categories))
    return spec.with_classes(entry.meta.get("kwargs", {}).get("num_classes", spec.num_classes))


def spec_of(model_or_name: nn.Module | str | DataSpec) -> DataSpec:
    """The DataSpec of a model, a registered model or weights name, or a DataSpec itself."""
    if isinstance(model_or_name, DataSpec):
        return model_or_name
    if isinstance(model_or_name, str):
        return _spec_of_name(model_or_name)
    spec = getattr(model_or_name, "data_spec", None)
    if isinstance(spec, DataSpec):
        return spec
    raise TypeError(
        f"expected an imgzoo model (with .data_spec), a registered model name ('mnist_cnn'), a weights name "
        f"('resnet_cifar.cifar10') or a DataSpec; got {type(model_or_name).__name__}. Build models with "
        f"imgzoo.create_model(), or pass a DataSpec to build_transform()."
    )


def for_model(model_or_name: nn.Module | str | DataSpec, train: bool = False, augment: str = "standard") -> v2.Compose:
    """The transform a model expects (``for_model(model)(pil_image)`` is ready for ``model(x.unsqueeze(0))``), from
    a model, a model or weights name (``"resnet_cifar.cifar10"``) or a DataSpec, before any weights load."""
    return build_transform(spec_of(model_or_name), train=train, augment=augment)
