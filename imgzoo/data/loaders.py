"""Datasets -> batches: :func:`batches`, and the whole-batch path it takes for small images.

A DataLoader spends most of its time in Python, one image at a time; as airbench (Jordan 2024, arXiv:2404.00498),
:class:`FastLoader` keeps the data set as one uint8 tensor on the device and augments whole batches (208x a
DataLoader's images/s, docs/benchmarks.md): files --decode()--> cached uint8 (N, C, H, W) --FastLoader--> batches.
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
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from imgzoo._atomic import atomic_open
from imgzoo._device import resolve_device
from imgzoo.data.datasets import ImageDataset, _open_image, is_int
from imgzoo.data.transforms import Cutout, ToImage, augmentation, build_transform
from imgzoo.models.registry import DataSpec

__all__ = ["FastLoader", "Transformed", "batches", "decode", "default_cache_dir", "default_workers", "is_batches",
           "own_generator", "root_of"]  # fmt: skip

_CACHE_VERSION = 2  # bumped when the decoded format changes (2: EXIF orientation), so stale caches go unread


def default_cache_dir() -> Path:
    """``$IMGZOO_CACHE``, else ``~/.cache/imgzoo`` (``$XDG_CACHE_HOME`` respected)."""
    if os.environ.get("IMGZOO_CACHE"):
        return Path(os.environ["IMGZOO_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imgzoo"


def _checksum(dataset: ImageDataset, size: tuple[int, int], channels: int) -> str:
    """blake2b of every file's bytes and label plus the output format: any edit to the data gives a new key."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([_CACHE_VERSION, list(size), channels, dataset.classes]).encode())
    for path, label in dataset.samples:
        digest.update(f"\0{label}\0{len(dataset.classes)}\0".encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def decode(dataset: ImageDataset, size: tuple[int, int] | DataSpec, channels: int = 3, *,
           cache_dir: str | os.PathLike | None = None) -> ImageDataset:  # fmt: skip
    """The ImageDataset of files ``dataset`` decoded to a uint8 (N, channels, *size) tensor (a DataSpec gives both),
    cached in ``cache_dir`` (default :func:`default_cache_dir`) under a checksum of the files' bytes and labels.
    A file that fails to decode raises; ``on_error="skip"`` when making the dataset leaves such files out."""
    if isinstance(size, DataSpec):
        size, channels = size.size, size.channels
    if not isinstance(dataset, ImageDataset):
        raise TypeError(f"decode expects an imgzoo ImageDataset; got {type(dataset).__name__}")
    if dataset.files is None:
        return dataset
    size = (int(size[0]), int(size[1]))
    path = Path(cache_dir or default_cache_dir()) / f"decoded-{_checksum(dataset, size, channels)}.safetensors"
    images = _load_cache(path, dataset, (channels, *size))
    if images is None:
        images = _decode_files(dataset, size, channels)
        try:
            with atomic_open(path, "wb") as f:
                f.write(save({"images": images, "targets": dataset.targets}, metadata={"source": dataset.source}))
        except OSError as exc:  # the cache only saves time: a read-only or full one must not stop the job
            warnings.warn(f"decode cache {path} not written ({exc}); the next run decodes again", stacklevel=2)
    return ImageDataset(images, dataset.targets, dataset.classes, spec=dataset.spec, source=dataset.source)


def _load_cache(path: Path, dataset: ImageDataset, image_shape: tuple[int, ...]) -> torch.Tensor | None:
    """The cached decode of ``dataset``; None when there is none, or it is damaged (cut short, edited): then
    one warning, and the decode rebuilds it, so a bad cache neither fails every later run nor feeds wrong images."""
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
        images, targets = tensors["images"], tensors["targets"]
        expected = (len(dataset), *image_shape)
        if images.dtype != torch.uint8 or tuple(images.shape) != expected:
            raise ValueError(f"images are {images.dtype} {tuple(images.shape)}, expected uint8 {expected}")
        if not torch.equal(targets, dataset.targets):
            raise ValueError(f"its {tuple(targets.shape)} {targets.dtype} labels differ from the dataset's")
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        warnings.warn(f"decode cache {path} is damaged ({exc}); decoding the images again to rebuild it", stacklevel=3)
        return None
    return images


def _decode_files(dataset: ImageDataset, size: tuple[int, int], channels: int) -> torch.Tensor:
    """uint8 images of every file, resized to ``size``."""
    to_image = ToImage(channels)
    images = torch.empty((len(dataset), channels, *size), dtype=torch.uint8)
    for i, file in enumerate(tqdm(dataset.files, desc=f"decoding {dataset.source}", disable=None)):
        image = TF.resize(to_image(_open_image(file)), list(size), antialias=True)  # a no-op at that size already
        images[i] = TF.to_dtype(image, torch.uint8, scale=True)  # 16-bit and float images come as floats in 0..1
    return images


def root_of(data: Any) -> tuple[Any, torch.Tensor | None, DataSpec | None]:
    """The dataset under any chain of Subsets, the indices into it (an outer Subset's point into the next one
    down: they compose as ``inner[outer]``), and the first spec met from the outside in."""
    indices, spec = None, getattr(data, "spec", None)
    while isinstance(data, Subset):
        here = torch.as_tensor(list(data.indices), dtype=torch.int64)
        indices = here if indices is None else here[indices]
        data = data.dataset
        spec = spec or getattr(data, "spec", None)
    return data, indices, spec


def _unwrap(data: Dataset, spec: DataSpec | None, cache_dir: Any) -> tuple[ImageDataset, DataSpec]:
    """The ImageDataset of uint8 tensors under ``data`` (an ImageDataset or Subsets of one), and its spec."""
    given = type(data).__name__
    data, indices, own_spec = root_of(data)
    spec = spec or own_spec
    if not isinstance(data, ImageDataset):
        raise TypeError(
            f"FastLoader takes an imgzoo ImageDataset (or a Subset of one); got {given} of {type(data).__name__}. "
            "Wrap your images as imgzoo.datasets.ImageDataset(uint8_images, labels, classes), or build a "
            "DataLoader with imgzoo.transforms.for_model(model)."
        )
    if spec is None:
        raise ValueError(
            f"FastLoader needs spec= (a DataSpec, e.g. model.data_spec) for {given} of {data.source or 'images'}: "
            "it carries no spec of its own (only known data sets such as datasets.cifar10 and datasets.mnist do)"
        )
    data = decode(data, spec, cache_dir=cache_dir)
    return (data if indices is None else data.subset(indices)), spec


def _fit_to_spec(images: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Convert channels and size once, for the whole set, so batches need no per-image work."""
    if images.shape[1] == 1 and spec.channels == 3:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] == 3 and spec.channels == 1:
        images = TF.rgb_to_grayscale(images)
    return TF.resize(images, list(spec.size), antialias=True).contiguous()  # resize: a no-op at that size already


class FastLoader:
    """Shuffled float32 (B, C, H, W) batches normalised with ``spec`` and int64 labels from uint8 images on ``device``.

    With ``train``, :func:`imgzoo.data.transforms.augmentation`'s ops on whole batches: crop and flip as one gather,
    affine as one grid_sample, cutout as one mask, the rest image by image. ``alternate_flips``: airbench's flip
    (arXiv:2404.00498, 3.6), one toss per image from ``seed`` for epoch 0, then the other way round each epoch
    (``set_epoch``'s, else the passes done). Every draw comes from ``generator`` (seeded): resumed runs repeat exactly.
    """

    def __init__(self, data: Dataset, batch_size: int = 512, *, spec: DataSpec | None = None, train: bool = False,
                 augment: str = "standard", translate: int | None = None, alternate_flips: bool = False,
                 cutout: int = 0, shuffle: bool | None = None, drop_last: bool = False,
                 device: str | torch.device | None = None, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None) -> None:  # fmt: skip
        if not is_int(batch_size, 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        dataset, self.spec = _unwrap(data, spec, cache_dir)
        if len(dataset) == 0:
            raise ValueError("FastLoader got an empty dataset; pass one with at least one image")
        self.classes, self.device, self.batch_size = dataset.classes, resolve_device(device), batch_size
        self.train, self.augment = train, augment if train else "none"
        self.shuffle = train if shuffle is None else shuffle
        self.drop_last, self.epoch, self.alternate_flips = drop_last, 0, bool(alternate_flips)
        ops = augmentation(self.spec, augment, translate=translate, cutout=cutout)  # checked even when not training
        before, self.float_ops = ops if train else ([], [])
        crop = next((op for op in before if isinstance(op, v2.RandomCrop)), None)
        # The crop's largest shift in pixels (0 when not augmenting), as FitConfig's translate.
        self.translate = crop.padding[0] if crop is not None and crop.padding else 0
        self.gathers = crop is not None  # crop and flip as one gather over a padded copy (also at translate=0)
        self.flip = self.gathers and any(isinstance(op, v2.RandomHorizontalFlip) for op in before)
        self.uint8_ops = [op for op in before if not isinstance(op, (v2.RandomCrop, v2.RandomHorizontalFlip))]
        self.cutout = next((op.size for op in self.float_ops if isinstance(op, Cutout)), 0)
        # The first epoch's toss for every image, from a generator of its own: the shuffle's draws stay as they were.
        self._first_flips = torch.rand(len(dataset), generator=torch.Generator().manual_seed(seed)) < 0.5
        self.generator = torch.Generator().manual_seed(seed)
        images = _fit_to_spec(dataset.images, self.spec)
        if self.gathers:
            # Padded once for the whole set, as airbench does; channels last, so the per-pixel gather copies
            # 3 contiguous bytes at a time (1.5x the batches/s of channels-first on one CPU thread, measured).
            images = F.pad(images, (self.translate,) * 4, mode="reflect").permute(0, 2, 3, 1).contiguous()
        self.images, self.targets = images.to(self.device), dataset.targets.to(self.device)
        mean = torch.tensor(self.spec.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, device=self.device).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std), -mean / std  # (x / 255 - mean) / std as one multiply-add

    def set_epoch(self, epoch: int) -> None:
        """The epoch (from 0) the next pass is, as DistributedSampler.set_epoch: it decides alternate_flips."""
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
        x = self._crop_flip(index) if self.gathers else self.images[index.to(self.device)]
        for op in self.uint8_ops:
            x = self._affine(x, op) if isinstance(op, v2.RandomAffine) else self._each(x, op)
        x = x.float().mul_(self.scale).add_(self.shift)
        for op in self.float_ops:
            x = self._cut_out(x, op.size) if isinstance(op, Cutout) else self._each(x, op)
        return x

    def _crop_flip(self, index: torch.Tensor) -> torch.Tensor:
        """Row r of image b is padded row dy[b] + r; column c is dx[b] + c, or dx[b] + (width - 1 - c) mirrored."""
        (height, width), b = self.spec.size, len(index)
        dy = torch.randint(0, 2 * self.translate + 1, (b, 1), generator=self.generator)
        dx = torch.randint(0, 2 * self.translate + 1, (b, 1), generator=self.generator)
        cols = torch.arange(width).expand(b, -1)
        if self.flip:  # with alternate_flips, each image's first toss, the other way round every odd epoch
            turned = (self._first_flips[index] ^ bool(self.epoch % 2))[:, None]
            mirrored = turned if self.alternate_flips else torch.rand(b, 1, generator=self.generator) < 0.5
            cols = torch.where(mirrored, width - 1 - cols, cols)
        rows, cols = (dy + torch.arange(height)).to(self.device), (dx + cols).to(self.device)
        index = index.to(self.device)
        x = self.images[index[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return x.permute(0, 3, 1, 2).contiguous()

    def _each(self, x: torch.Tensor, op: Any) -> torch.Tensor:
        """``op`` image by image, drawing from a fork of torch's global generator seeded from this loader's."""
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.stack([op(image) for image in x.cpu()]).to(self.device)

    def _affine(self, x: torch.Tensor, op: v2.RandomAffine) -> torch.Tensor:
        """RandomAffine's rotation and scaling about each centre as one grid_sample (nearest, 0 outside, as
        torchvision's, whose one image at a time read 475 MNIST images/s, slower than mnist_cnn trains)."""
        b, _, height, width = x.shape
        angle = torch.empty(b).uniform_(*op.degrees, generator=self.generator).deg2rad()
        scale = torch.empty(b).uniform_(*op.scale, generator=self.generator)
        cos, sin, zero = angle.cos() / scale, angle.sin() / scale, torch.zeros(b)
        # Output pixel -> input pixel: rotation by -angle then scaling by 1/scale, in pixel space (the aspect terms).
        theta = torch.stack([torch.stack([cos, sin * height / width, zero], 1),
                             torch.stack([-sin * width / height, cos, zero], 1)], 1)  # fmt: skip
        grid = F.affine_grid(theta.to(self.device), [b, 1, height, width], align_corners=False)
        return F.grid_sample(x.float(), grid, mode="nearest", align_corners=False)

    def _cut_out(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """Cutout's square, at a place drawn for each image, as one mask over the batch."""
        b, _, height, width = x.shape
        top = torch.randint(0, height - size + 1, (b, 1, 1), generator=self.generator).to(self.device)
        left = torch.randint(0, width - size + 1, (b, 1, 1), generator=self.generator).to(self.device)
        rows = torch.arange(height, device=self.device).view(1, -1, 1)
        cols = torch.arange(width, device=self.device).view(1, 1, -1)
        inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
        return x.masked_fill_(inside[:, None], 0.0)

    def eval_batch(self, indices: torch.Tensor | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The images at ``indices`` (positions in the data set) unaugmented and normalised; draws nothing."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        if index.dim() != 1 or (len(index) and not 0 <= int(index.min()) <= int(index.max()) < len(self.targets)):
            raise IndexError(f"eval_batch takes positions in 0..{len(self.targets) - 1}; got {index.tolist()}")
        index = index.to(self.device)
        x = self.images[index]
        if self.gathers:  # stored padded and channels last: the centre crop is the image itself
            (height, width), pad = self.spec.size, self.translate
            x = x[:, pad : pad + height, pad : pad + width, :].permute(0, 3, 1, 2).contiguous()
        return x.float().mul_(self.scale).add_(self.shift), self.targets[index]

    def __repr__(self) -> str:
        return (
            f"FastLoader({len(self.targets)} images, batch_size={self.batch_size}, train={self.train}, "
            f"augment={self.augment!r}, device={self.device})"
        )


class Transformed(Dataset):
    """Any dataset's (image, label) items with the image put through ``transform``, keeping classes and labels."""

    def __init__(self, data: Dataset, transform: Any) -> None:
        self.data, self.transform = data, transform
        self.classes, self.targets = getattr(data, "classes", None), getattr(data, "targets", None)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.data[index]
        return self.transform(image), int(label)


def batches(dataset: Dataset, batch_size: int, *, train: bool, spec: DataSpec | None = None, augment: str = "standard",
            translate: int | None = None, alternate_flips: bool = False, cutout: int = 0, seed: int = 0,
            num_workers: int | None = None, device: str | torch.device | None = None,
            cache_dir: str | os.PathLike | None = None) -> Any:  # fmt: skip
    """``dataset`` as (x, y) batches for training (shuffled, augmented) or evaluation, normalised for ``spec``
    (default: the dataset's own): a :class:`FastLoader` for an ImageDataset of small images (a spec without
    ``resize``), else a DataLoader with :func:`imgzoo.data.transforms.build_transform`; both seeded by ``seed``."""
    root, _, own_spec = root_of(dataset)
    spec = spec or own_spec
    if spec is None:
        raise ValueError("batches needs spec= (a DataSpec, e.g. model.data_spec): the dataset carries none")
    if spec.resize is None and isinstance(root, ImageDataset):
        return FastLoader(dataset, batch_size, spec=spec, train=train, augment=augment, translate=translate,
                          alternate_flips=alternate_flips, cutout=cutout, seed=seed, device=device,
                          cache_dir=cache_dir)  # fmt: skip
    if alternate_flips and train:
        raise ValueError(
            "alternate_flips needs the whole-batch path, which takes an ImageDataset of small images (a spec "
            f"without resize); {spec.name!r} images go image by image. Pass alternate_flips=False."
        )
    transform = build_transform(spec, train, augment, translate=translate, cutout=cutout)
    workers = default_workers(dataset) if num_workers is None else num_workers
    return DataLoader(Transformed(dataset, transform), batch_size=batch_size, shuffle=train, num_workers=workers,
                      generator=torch.Generator().manual_seed(seed))  # fmt: skip


def default_workers(dataset: Any) -> int:
    """Processes decoding for a DataLoader: none for tensors already in memory, else up to 4, one core spared."""
    return 0 if isinstance(dataset, TensorDataset) else max(0, min(4, (os.cpu_count() or 1) - 1))


def is_batches(data: Any) -> bool:
    """An iterable of (x, y) batches that is neither a Dataset nor a DataLoader: a FastLoader, a list of
    batches, a generator's result. A list of (image, label) samples is a dataset: its labels are not tensors."""
    if isinstance(data, (Dataset, DataLoader)) or not hasattr(data, "__iter__"):
        return False
    if not isinstance(data, (list, tuple)):
        return not hasattr(data, "__getitem__")
    first = data[0] if len(data) else None
    labels = first[1] if isinstance(first, (list, tuple)) and len(first) == 2 else None
    return isinstance(labels, torch.Tensor) and labels.dim() == 1


def own_generator(data: Any) -> torch.Generator | None:
    """The generator a loader shuffles (and augments) with, if it has its own: fit checkpoints and restores it."""
    generator = getattr(data, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None
