"""The fast path for MNIST- and CIFAR-sized data: decode once, then augment whole batches as tensors.

A torch DataLoader with per-image PIL transforms spends most of its time in Python,
one image at a time; on two CPU cores it cannot keep up with even a small ResNet.
airbench (Jordan 2024, arXiv:2404.00498) showed the way out: keep the whole data
set as one uint8 tensor on the training device and apply flip and pad-and-crop to
a whole batch with a few tensor operations. imgzoo does the same:

    files --decode()--> uint8 (N, C, H, W), cached on disk by a checksum of the files
          --FastLoader--> shuffled, flipped, pad-cropped, normalised float batches

The "strong" preset adds TrivialAugmentWide and random erasing, which choose an operation per
image and so run image by image (torchvision's own v2 transforms, under the loader's generator);
the decode, the crop and the flip stay batched, and so does "affine"'s small random rotation and
scaling (one grid_sample over the batch).

``bench/bench_data.py`` measures the loader against ResNet-20 training throughput.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from imgzoo._atomic import atomic_open
from imgzoo._device import resolve_device
from imgzoo.data.datasets import CorruptFileError, ImageFiles, TensorImages, _open_image
from imgzoo.data.transforms import (
    AUGMENTS,
    PAD_FRACTION,
    ToImage,
    affine_policy,
    flip_preserves_label,
    strong_erasing,
    strong_policy,
)
from imgzoo.models.registry import DataSpec

__all__ = ["FastLoader", "decode", "default_cache_dir", "is_batch_loader", "own_generator", "unshared_generator"]

# Bumped when the decoded format changes, so stale caches are never read.
_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$IMGZOO_CACHE``, else ``~/.cache/imgzoo`` (``$XDG_CACHE_HOME`` respected)."""
    if os.environ.get("IMGZOO_CACHE"):
        return Path(os.environ["IMGZOO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imgzoo"


def _checksum(dataset: ImageFiles, size: tuple[int, int], channels: int) -> str:
    """blake2b of every file's bytes and label plus the output format: any edit to the data gives a new key."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([_CACHE_VERSION, list(size), channels, dataset.classes]).encode())
    for path, label in dataset.samples:
        digest.update(f"\0{label}\0{len(dataset.classes)}\0".encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def decode(
    dataset: ImageFiles | TensorImages,
    size: tuple[int, int] | DataSpec,
    channels: int = 3,
    *,
    cache_dir: str | os.PathLike | None = None,
    on_error: str = "raise",
) -> TensorImages:
    """Decode every image of ``dataset`` to a uint8 (N, channels, *size) tensor, once.

    ``size`` may be a DataSpec (its size and channels are used). The result is
    cached in ``cache_dir`` (default :func:`default_cache_dir`) under a checksum of
    the files' bytes and labels, so a second call, in this or a later process,
    reads one file instead of decoding tens of thousands. ``on_error="skip"``
    leaves out files that fail to decode, with a warning, instead of raising.
    """
    if isinstance(size, DataSpec):
        size, channels = size.size, size.channels
    if isinstance(dataset, TensorImages):
        return dataset
    if not isinstance(dataset, ImageFiles):
        raise TypeError(f"decode expects an imgzoo ImageFiles or TensorImages dataset; got {type(dataset).__name__}")
    size = (int(size[0]), int(size[1]))
    key = _checksum(dataset, size, channels)
    path = Path(cache_dir or default_cache_dir()) / f"decoded-{key}.safetensors"
    cached = _load_cache(path, dataset, (channels, *size))
    if cached is not None:
        return cached
    images, targets, bad = _decode_files(dataset, size, channels, on_error)
    if not bad:  # a cache of a partly unreadable data set would hide the problem on the next run
        _save_atomic(path, {"images": images, "targets": targets}, {"source": dataset.source})
    return TensorImages(images, targets, dataset.classes, spec=dataset.spec, source=dataset.source)


def _load_cache(path: Path, dataset: ImageFiles, image_shape: tuple[int, ...]) -> TensorImages | None:
    """The cached decode of ``dataset``, or None when there is none or it is damaged (then it is rebuilt).

    A cache cut short by a full disk, or overwritten by hand, must not fail every later
    run, nor feed wrong images: it is checked against the dataset, reported in one
    warning, and decoded again; the rebuilt file replaces it, so the warning is not repeated.
    """
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
        images, targets = tensors["images"], tensors["targets"]
        expected = (len(dataset), *image_shape)
        if images.dtype != torch.uint8 or tuple(images.shape) != expected:
            raise ValueError(f"images are {images.dtype} {tuple(images.shape)}, expected uint8 {expected}")
        if not torch.equal(targets, torch.as_tensor(dataset.targets, dtype=torch.int64)):
            raise ValueError(f"its {tuple(targets.shape)} {targets.dtype} labels differ from the dataset's")
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        warnings.warn(f"decode cache {path} is damaged ({exc}); decoding the images again to rebuild it", stacklevel=3)
        return None
    return TensorImages(images, targets, dataset.classes, spec=dataset.spec, source=dataset.source)


def _decode_files(
    dataset: ImageFiles, size: tuple[int, int], channels: int, on_error: str
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """uint8 images and labels of every readable file, and the unreadable files when ``on_error="skip"``."""
    to_image = ToImage(channels)
    images = torch.empty((len(dataset), channels, *size), dtype=torch.uint8)
    keep = torch.ones(len(dataset), dtype=torch.bool)
    bad: list[str] = []
    for i, (file, _) in enumerate(tqdm(dataset.samples, desc=f"decoding {dataset.source}", disable=None)):
        try:
            image = to_image(_open_image(file))
        except CorruptFileError:
            if on_error != "skip":
                raise
            keep[i] = False
            bad.append(file)
            continue
        image = TF.resize(image, list(size), antialias=True) if image.shape[1:] != size else image
        # 16-bit and float images arrive as floats in 0..1 (see imgzoo.data.transforms); the cache is uint8.
        images[i] = TF.to_dtype(image, torch.uint8, scale=True) if image.is_floating_point() else image
    if bad:
        warnings.warn(f"skipped {len(bad)} unreadable image(s) in {dataset.source}: {', '.join(bad[:3])}", stacklevel=3)
    targets = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return images[keep].contiguous(), targets[keep].contiguous(), bad


def _save_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write the cache through a temporary sibling and a rename: a crash never leaves half a cache."""
    with atomic_open(path, "wb") as f:
        f.write(save(tensors, metadata=metadata))


def _unwrap_subsets(data: Dataset) -> tuple[Dataset, torch.Tensor | None, DataSpec | None]:
    """The dataset under any chain of Subsets (a Split of a Split included), the indices into it, and a spec.

    An outer subset's indices point into the next one down, so they compose as
    ``inner[outer]``. The spec is the first one met from the outside in: a Split keeps
    its parent's, and a user may have set one on any level.
    """
    indices: torch.Tensor | None = None
    spec = getattr(data, "spec", None)
    while isinstance(data, Subset):
        here = torch.as_tensor(list(data.indices), dtype=torch.int64)
        indices = here if indices is None else here[indices]
        data = data.dataset
        spec = spec or getattr(data, "spec", None)
    return data, indices, spec


def _uint8_data(
    data: Dataset, spec: DataSpec | None, cache_dir: str | os.PathLike | None
) -> tuple[torch.Tensor, torch.Tensor, list[str], DataSpec]:
    """(images, targets, classes, spec) of a TensorImages / ImageFiles dataset or any Subset of one.

    ``spec`` given wins; otherwise it is the dataset's own (CIFAR-10 and MNIST carry one,
    and so does a CIFAR-10 image tree), so a known data set needs no ``spec=``.
    """
    given = type(data).__name__
    data, indices, data_spec = _unwrap_subsets(data)
    spec = spec or data_spec
    if isinstance(data, ImageFiles):
        if spec is None:
            raise ValueError(
                f"FastLoader needs spec= (a DataSpec, e.g. model.data_spec) to decode the image files of "
                f"{data.source or 'this dataset'}: they carry no spec, so the size and channels are unknown"
            )
        data = decode(data, spec, cache_dir=cache_dir)
    if not isinstance(data, TensorImages):
        raise TypeError(
            f"FastLoader takes an imgzoo dataset (TensorImages, ImageFiles, or a Subset or Split of one); got "
            f"{given} of {type(data).__name__}. For other datasets use torch.utils.data.DataLoader with "
            f"imgzoo.data.transforms."
        )
    if spec is None:
        raise ValueError(
            f"FastLoader needs spec= (a DataSpec, e.g. model.data_spec) for {given}: it carries "
            f"no spec of its own (only known data sets such as datasets.cifar10 and datasets.mnist do)"
        )
    images, targets = data.images, data.targets
    if indices is not None:
        images, targets = images[indices], targets[indices]
    return images, targets, data.classes, spec


def _fit_to_spec(images: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Convert channels and size once, for the whole set, so batches need no per-image work."""
    if images.shape[1] == 1 and spec.channels == 3:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] == 3 and spec.channels == 1:
        images = TF.rgb_to_grayscale(images)
    if tuple(images.shape[2:]) != tuple(spec.size):
        images = TF.resize(images, list(spec.size), antialias=True)
    return images.contiguous()


def _check_options(augment: str, batch_size: int, translate: int | None, cutout: int = 0) -> None:
    if augment not in AUGMENTS:
        raise ValueError(f"FastLoader augments with one of {AUGMENTS}, got {augment!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if translate is not None and (not isinstance(translate, int) or isinstance(translate, bool) or translate < 0):
        raise ValueError(
            f"translate must be a whole number of pixels >= 0 (the largest shift of the random crop), or None "
            f"for the standard 1/8 of the side; got {translate!r}"
        )
    if not isinstance(cutout, int) or isinstance(cutout, bool) or cutout < 0:
        raise ValueError(f"cutout is the side of the square blanked out, a whole number of pixels >= 0; got {cutout!r}")


class FastLoader:
    """Shuffled, augmented, normalised batches from a uint8 image tensor kept on ``device``.

    ``augment`` is ``"none"``, ``"standard"`` (random pad-and-crop with reflection
    padding, and a horizontal flip where the spec allows), ``"strong"`` (standard, then
    TrivialAugmentWide and random erasing) or ``"affine"`` (standard, then a random rotation
    of up to 10 degrees and scaling by 0.9-1.1), the same presets as
    ``imgzoo.data.transforms.build_transform(spec, train=True, augment=...)``, applied only when
    ``train``. ``translate`` is the largest shift of the pad-and-crop in pixels; None gives the
    standard 1/8 of the side (4 for CIFAR's 32), airbench94 uses 2 for its 10 epochs.
    ``alternate_flips`` replaces the coin toss per image and epoch by airbench's derandomized
    flip (Jordan 2024, arXiv:2404.00498, section 3.6): each image gets one toss, from ``seed``, for
    the first epoch, and every later epoch shows it the other way round from the epoch before, so
    two consecutive epochs always hold both views of every image; the paper finds it beats random
    flipping wherever flipping helps at all. The epoch is the one ``set_epoch`` gave (fit calls it,
    so a resumed run flips as the uninterrupted one did), else the count of full passes.
    ``cutout`` blanks a square of that many pixels a side in every training image, at a random
    place wholly inside it, to the data's mean (0 once normalised): DeVries and Taylor 2017
    (arXiv:1708.04552) used 16 for CIFAR-10, airbench96 (Jordan 2024) 12 with ``translate`` 4 for
    its 45 epochs; 0 (the default) blanks nothing. Each
    epoch is a fresh permutation from a generator seeded by ``seed``,
    so runs repeat exactly. Iterating yields ``(x, y)``: float32 (B, C, H, W)
    normalised with ``spec``'s mean and std, and int64 labels, both on ``device``
    (the GPU when there is one).
    """

    def __init__(
        self,
        data: Dataset,
        batch_size: int = 512,
        *,
        spec: DataSpec | None = None,
        train: bool = False,
        augment: str = "standard",
        translate: int | None = None,
        alternate_flips: bool = False,
        cutout: int = 0,
        shuffle: bool | None = None,
        drop_last: bool = False,
        device: str | torch.device | None = None,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        _check_options(augment, batch_size, translate, cutout)
        images, targets, self.classes, self.spec = _uint8_data(data, spec, cache_dir)
        if len(images) == 0:
            raise ValueError("FastLoader got an empty dataset; pass one with at least one image")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.train = train
        self.augment = augment if train else "none"
        self.shuffle = train if shuffle is None else shuffle
        self.drop_last = drop_last
        # Crops and flips come from one gather over a padded, channels-last copy (also at translate=0).
        self.gathers = self.augment != "none"
        self.flip = self.gathers and flip_preserves_label(self.spec)
        self.alternate_flips = bool(alternate_flips)  # acts only where images are flipped at all
        self.cutout = min(cutout, *self.spec.size) if self.augment != "none" else 0
        self.epoch = 0
        # The first epoch's toss for every image, from a generator of its own: the shuffle's draws stay as they were.
        self._first_flips = torch.rand(len(images), generator=torch.Generator().manual_seed(seed)) < 0.5
        standard = round(PAD_FRACTION * min(self.spec.size)) if translate is None else translate
        self.pad = standard if self.gathers else 0
        self._policy = strong_policy() if self.augment == "strong" else None
        # Its ranges, drawn and applied a batch at a time (_affine_batch): torchvision's RandomAffine one image at a
        # time read 475 MNIST images/s here, slower than mnist_cnn trains.
        self._affine = affine_policy() if self.augment == "affine" else None
        self._erasing = strong_erasing() if self.augment == "strong" else None
        self.generator = torch.Generator().manual_seed(seed)

        images = _fit_to_spec(images, self.spec)
        if self.gathers:
            # Pad once for the whole set, as airbench does, so a batch only indexes; channels
            # last, so that the per-pixel gather below copies 3 contiguous bytes at a time
            # (1.5x the batches/s of channels-first on one CPU thread, measured).
            images = torch.nn.functional.pad(images, (self.pad,) * 4, mode="reflect")
            images = images.permute(0, 2, 3, 1).contiguous()
        self.images = images.to(self.device)
        self.targets = targets.to(self.device)
        mean = torch.tensor(self.spec.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, device=self.device).view(1, -1, 1, 1)
        # x_norm = (x / 255 - mean) / std, folded into one multiply-add on the uint8 values.
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    @property
    def translate(self) -> int:
        """The crop's largest shift in pixels (0 when not augmenting): what Recipe.loader_differences compares."""
        return self.pad

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass is (from 0): it decides which way round each image is flipped with
        ``alternate_flips``. As DistributedSampler.set_epoch: call it before each pass to make that
        exact across interrupted runs; without it, each completed pass counts one."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.targets)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.targets)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self._batch(index), self.targets[index.to(self.device)]
        self.epoch += 1  # only after a full pass: a look at the first batch (as fit's checks take) counts none

    def _batch(self, index: torch.Tensor) -> torch.Tensor:
        height, width = self.spec.size
        if self.gathers:
            # One gather does crop and flip: row r of image b is padded row dy[b] + r; column c
            # is dx[b] + c, or dx[b] + (width - 1 - c) when the image is mirrored.
            b = len(index)
            dy = torch.randint(0, 2 * self.pad + 1, (b, 1), generator=self.generator)
            dx = torch.randint(0, 2 * self.pad + 1, (b, 1), generator=self.generator)
            cols = torch.arange(width).expand(b, -1)
            if self.flip:
                mirrored = self._mirrored(index)
                cols = torch.where(mirrored, width - 1 - cols, cols)
            rows = (dy + torch.arange(height)).to(self.device)
            cols = (dx + cols).to(self.device)
            index = index.to(self.device)
            x = self.images[index[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
            x = x.permute(0, 3, 1, 2).contiguous()
        else:
            x = self.images[index.to(self.device)]
        if self._policy is not None:
            x = self._strong(x)
        else:
            x = x.float() if self._affine is None else self._affine_batch(x)
            x = x.mul_(self.scale).add_(self.shift)
        return self._cut_out(x) if self.cutout else x

    def _cut_out(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with a ``cutout``-pixel square set to 0 (the mean, once normalised) in each image, wholly inside it."""
        b, _, height, width = x.shape
        top = torch.randint(0, height - self.cutout + 1, (b, 1, 1), generator=self.generator).to(self.device)
        left = torch.randint(0, width - self.cutout + 1, (b, 1, 1), generator=self.generator).to(self.device)
        rows = torch.arange(height, device=self.device).view(1, -1, 1)
        cols = torch.arange(width, device=self.device).view(1, 1, -1)
        inside = (rows >= top) & (rows < top + self.cutout) & (cols >= left) & (cols < left + self.cutout)
        return x.masked_fill_(inside[:, None], 0.0)

    def _mirrored(self, index: torch.Tensor) -> torch.Tensor:
        """Which images of the batch at ``index`` are shown mirrored, as a (B, 1) bool column."""
        if self.alternate_flips:
            return (self._first_flips[index] ^ bool(self.epoch % 2))[:, None]
        return torch.rand(len(index), 1, generator=self.generator) < 0.5

    def _affine_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Each image rotated and scaled about its centre by its own draw from affine_policy()'s ranges.

        As torchvision's RandomAffine: nearest-neighbour sampling, 0 where the image leaves the frame, an
        angle uniform over ``degrees`` and a scale uniform over ``scale``; here as one affine_grid and
        grid_sample over the batch, drawing from the loader's generator. Non-square images rotate in pixel
        space, hence the aspect ratio in the off-diagonal terms.
        """
        b, _, height, width = x.shape
        low, high = self._affine.degrees
        angle = torch.empty(b).uniform_(low, high, generator=self.generator).deg2rad()
        scale = torch.empty(b).uniform_(*self._affine.scale, generator=self.generator)
        cos, sin, zero = angle.cos() / scale, angle.sin() / scale, torch.zeros(b)
        # Output pixel -> input pixel: the inverse map, rotation by -angle then scaling by 1/scale.
        theta = torch.stack([torch.stack([cos, sin * height / width, zero], 1),
                             torch.stack([-sin * width / height, cos, zero], 1)], 1)  # fmt: skip
        grid = torch.nn.functional.affine_grid(theta.to(self.device), [b, 1, height, width], align_corners=False)
        return torch.nn.functional.grid_sample(x.float(), grid, mode="nearest", align_corners=False)

    def _strong(self, x: torch.Tensor) -> torch.Tensor:
        """TrivialAugmentWide on each uint8 image, normalise, then random erasing on each.

        torchvision's transforms draw from torch's global generator; they run here on a fork
        of it seeded from this loader's generator, so an epoch repeats exactly (fit's resume
        restores that generator) and the caller's global random state is left as it was.
        """
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = torch.stack([self._policy(image) for image in x.cpu()]).to(self.device)
            x = x.float().mul_(self.scale).add_(self.shift)
            return torch.stack([self._erasing(image) for image in x])

    def eval_batch(self, indices: torch.Tensor | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images at ``indices`` (positions in the data set, not in an epoch) as an eval batch gives them.

        Normalised, but neither cropped nor flipped, even when this loader trains: it is
        for looking at chosen samples (``imgzoo.eval.evaluation.plot_predictions``), and it
        leaves the generator alone, so the epochs to come are the same with or without it.
        """
        index = torch.as_tensor(indices, dtype=torch.int64)
        if index.dim() != 1 or (len(index) and not 0 <= int(index.min()) <= int(index.max()) < len(self.targets)):
            raise IndexError(
                f"eval_batch takes a list of positions in 0..{len(self.targets) - 1}; got {index.tolist()}"
            )
        index = index.to(self.device)
        x = self.images[index]
        if self.gathers:  # stored padded and channels last: the centre crop is the image itself
            height, width = self.spec.size
            x = x[:, self.pad : self.pad + height, self.pad : self.pad + width, :].permute(0, 3, 1, 2).contiguous()
        return x.float().mul_(self.scale).add_(self.shift), self.targets[index]

    def __repr__(self) -> str:
        return (
            f"FastLoader({len(self.targets)} images, batch_size={self.batch_size}, train={self.train}, "
            f"augment={self.augment!r}, device={self.device})"
        )


def is_batch_loader(data: Any) -> bool:
    """A ready-made loader that is not a torch DataLoader, e.g. a :class:`FastLoader`.

    It is used as it is: an iterable of (x, y) batches with a length, not indexable.
    """
    if isinstance(data, (Dataset, DataLoader)):
        return False
    return hasattr(data, "__iter__") and not hasattr(data, "__getitem__")


def unshared_generator() -> torch.Generator:
    """A generator for a loader that draws nothing random but must not touch the global one either.

    A DataLoader draws a base seed for its workers every time it is iterated, from the global
    generator unless it has its own; validation every epoch would then shift the dropout masks and
    augmentations of the training that follows, and a run with validation would train differently
    from the same run without it (tests/test_training.py).
    """
    return torch.Generator()


def own_generator(data: Any) -> torch.Generator | None:
    """The generator a loader shuffles (and augments) with, if it has its own, e.g. a FastLoader's.

    fit checkpoints and restores its state; compare rewinds it before each model.
    """
    generator = getattr(data, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None
