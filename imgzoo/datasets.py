"""CIFAR-10, MNIST and dog-breed images on disk -> datasets with class names.

Two dataset types cover every source:

- :class:`TensorImages`: images already decoded into one uint8 tensor (N, C, H, W),
  for CIFAR-10's pickle batches and MNIST's idx files (and any folder decoded by
  :func:`imgzoo.loaders.decode`). Indexing gives ``(image, label)``, the image a
  uint8 (C, H, W) tensor, or whatever ``transform`` makes of it.
- :class:`ImageFiles`: one file per image, decoded on access: the Stanford Dogs
  and Kaggle dog-breed layouts and any ImageFolder tree. Indexing gives
  ``(PIL image, label)`` in the file's own mode, or ``transform``'s output.

Why imgzoo parses CIFAR-10 and MNIST itself instead of returning torchvision's
datasets: torchvision's ``CIFAR10`` verifies the md5 of each original batch file
on construction, so only the exact 50,000-image files load, and ``MNIST`` reads
only the un-gzipped idx files. imgzoo keeps torchvision for what it does well,
downloading and verifying the archives (``download=True`` calls it), and reads
the files with one small parser that serves the real data, the gzipped copies
users often have, and the tiny files tests write alike.

Every dataset carries ``classes`` (names, in a stable order: CIFAR-10's official
order, digits 0-9, sorted folder names or breeds) and ``targets`` (one label per
image). :func:`train_val_split` carves a seeded, stratified validation split.
"""

from __future__ import annotations

import csv
import gzip
import os
import pickle
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from imgzoo.registry import CIFAR10, CIFAR10_CLASSES, MNIST, DataSpec

__all__ = [
    "CorruptFileError",
    "ImageFiles",
    "Split",
    "TensorImages",
    "cifar10",
    "dog_breeds",
    "image_folder",
    "kaggle_dogs",
    "mnist",
    "read_idx",
    "stanford_dogs",
    "train_val_split",
]

Transform = Callable[[Any], Any]
ON_ERROR = ("raise", "skip")


class CorruptFileError(ValueError):
    """A file that cannot be decoded: a zero-byte, truncated or foreign image, or a damaged batch or idx file."""


# ---------------------------------------------------------------------------
# Dataset types


class TensorImages(Dataset):
    """Images held as one uint8 tensor (N, C, H, W), labels as int64 (N,), plus class names.

    ``spec`` is the :class:`DataSpec` of the data set when it is a known one
    (CIFAR-10, MNIST); the fast loader takes its normalisation from it.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor | Sequence[int],
        classes: Sequence[str],
        *,
        transform: Transform | None = None,
        spec: DataSpec | None = None,
        source: str = "",
    ) -> None:
        targets = torch.as_tensor(targets, dtype=torch.int64)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} labels in {source or 'the data'}")
        if len(targets) and not 0 <= int(targets.min()) <= int(targets.max()) < len(classes):
            raise ValueError(
                f"labels in {source or 'the data'} must lie in 0..{len(classes) - 1} for {len(classes)} classes; "
                f"got {int(targets.min())}..{int(targets.max())}"
            )
        self.images = images
        self.targets = targets
        self.classes = list(classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.transform = transform
        self.spec = spec
        self.source = source

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), int(self.targets[index])

    def __repr__(self) -> str:
        shape = tuple(self.images.shape[1:])
        return f"TensorImages({len(self)} images {shape}, {len(self.classes)} classes, {self.source!r})"


class ImageFiles(Dataset):
    """Image files with labels, decoded on access.

    A zero-byte file is an error at construction. ``on_error="raise"`` (the
    default) decodes lazily and raises :class:`CorruptFileError` naming the file
    when one cannot be decoded; ``on_error="skip"`` decodes every file up front
    (a one-off cost: about a minute per 20,000 photos on one core), drops the bad
    ones with one warning, and lists them in ``skipped``.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        *,
        transform: Transform | None = None,
        on_error: str = "raise",
        source: str = "",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.classes = list(classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.transform = transform
        self.source = source
        self.spec: DataSpec | None = None  # set when the files are a known data set (CIFAR-10 as images)
        self.skipped: list[str] = []
        if on_error == "skip":
            good = []
            for path, label in samples:
                try:
                    _open_image(path)
                except CorruptFileError:
                    self.skipped.append(path)
                else:
                    good.append((path, label))
            if self.skipped:
                shown = ", ".join(self.skipped[:3]) + (", ..." if len(self.skipped) > 3 else "")
                warnings.warn(
                    f"skipped {len(self.skipped)} unreadable image(s) of {len(samples)} in {source}: {shown}",
                    stacklevel=3,
                )
            samples = good
        else:
            for path, _ in samples:
                if os.path.getsize(path) == 0:
                    raise CorruptFileError(
                        f"{path} is empty (0 bytes). Replace or delete it, or pass on_error='skip' to leave it out."
                    )
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = _open_image(path)
        return (self.transform(image) if self.transform else image), label

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files, {len(self.classes)} classes, {self.source!r})"


def _open_image(path: str) -> Image.Image:
    """Fully decode ``path`` (PIL opens lazily; ``load`` is what finds a truncated file)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptFileError(
            f"cannot decode image {path}: {exc}. Replace or delete the file, "
            f"or pass on_error='skip' to leave unreadable files out."
        ) from exc


class Split(Subset):
    """A subset that keeps its parent's ``classes``, ``spec`` and the labels of its own images."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        super().__init__(dataset, list(indices))
        self.classes = list(dataset.classes)
        self.spec = getattr(dataset, "spec", None)
        self.targets = torch.as_tensor(_targets(dataset))[self.indices]

    def __repr__(self) -> str:
        return f"Split({len(self)} of {self.dataset!r})"


def _targets(dataset: Dataset) -> torch.Tensor:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [int(dataset[i][1]) for i in range(len(dataset))]
    return torch.as_tensor(targets, dtype=torch.int64)


def train_val_split(dataset: Dataset, val_fraction: float = 0.1, seed: int = 0) -> tuple[Split, Split]:
    """A seeded split with ``val_fraction`` of every class in the validation part.

    Stratified, so the validation accuracy of a small or imbalanced data set is not
    skewed by a class that happened to land mostly on one side. Every class with at
    least two images gets at least one validation image. The same seed gives the
    same split, so model selection is repeatable and never touches test data.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    targets = _targets(dataset)
    generator = torch.Generator().manual_seed(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for label in torch.unique(targets).tolist():
        members = torch.nonzero(targets == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)].tolist()
        n_val = round(len(members) * val_fraction)
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_idx += members[:n_val]
        train_idx += members[n_val:]
    return Split(dataset, sorted(train_idx)), Split(dataset, sorted(val_idx))


# ---------------------------------------------------------------------------
# CIFAR-10

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_HOW = (
    "Pass download=True to fetch it (163 MB, from www.cs.toronto.edu), or place the extracted "
    f"'{_CIFAR_DIR}' folder of https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz in it, "
    "or a folder tree train/<class>/*.png (e.g. a JPEG copy of CIFAR-10)."
)


def cifar10(
    root: str | os.PathLike, train: bool = True, download: bool = False, transform: Transform | None = None
) -> TensorImages | ImageFiles:
    """The CIFAR-10 training (50,000) or test (10,000) images, classes in the official order.

    ``root`` holds either the python pickle batches (``root/cifar-10-batches-py/``,
    as torchvision downloads them; the folder itself also works), giving a
    :class:`TensorImages`, or an image tree ``root/train/<class>/*`` and
    ``root/test/<class>/*`` (as in the JPEG re-encodings of CIFAR-10), giving an
    :class:`ImageFiles` whose class folders must be the ten CIFAR-10 names.
    """
    root = Path(root)
    batches = _find_cifar_batches(root)
    split = "train" if train else "test"
    if batches is None and (root / split).is_dir():
        return _cifar_folder(root / split, transform)
    if batches is None and download:
        import torchvision  # torchvision fetches and md5-checks the archive; imgzoo parses the files

        torchvision.datasets.CIFAR10(str(root), train=train, download=True)
        batches = _find_cifar_batches(root)
    if batches is None:
        raise FileNotFoundError(f"no CIFAR-10 data in {root}. {_CIFAR_HOW}")
    names = [f"data_batch_{k}" for k in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (batches / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 in {batches} lacks {', '.join(missing)}. {_CIFAR_HOW}")
    parts = [_read_cifar_batch(batches / n) for n in names]
    images = torch.cat([p[0] for p in parts])
    targets = torch.cat([p[1] for p in parts])
    return TensorImages(images, targets, CIFAR10_CLASSES, transform=transform, spec=CIFAR10, source=str(batches))


def _find_cifar_batches(root: Path) -> Path | None:
    for folder in (root / _CIFAR_DIR, root):
        if (folder / "batches.meta").is_file() or (folder / "data_batch_1").is_file():
            return folder
    return None


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch: ``data`` is (N, 3072) uint8 rows of R, G, B 32x32 planes, ``labels`` a list."""
    try:
        with open(path, "rb") as f:
            # The batches are Python 2 pickles of numpy arrays; latin1 is how torchvision reads them too.
            batch = pickle.load(f, encoding="latin1")
        batch = {(k.decode() if isinstance(k, bytes) else k): v for k, v in batch.items()}
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = batch["labels"]
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise ValueError(f"data of shape {data.shape} with {len(labels)} labels; expected (N, 3072) and N labels")
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, AttributeError) as exc:
        raise CorruptFileError(
            f"cannot read CIFAR-10 batch {path}: {exc!r}. Delete the folder and fetch it again (download=True)."
        ) from exc
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.as_tensor(labels, dtype=torch.int64)


def _cifar_folder(folder: Path, transform: Transform | None) -> ImageFiles:
    dataset = image_folder(folder, transform=transform)
    # Folder names sort alphabetically, which for CIFAR-10 is also the official class order.
    if dataset.classes != list(CIFAR10_CLASSES):
        raise ValueError(
            f"{folder} should hold the ten CIFAR-10 class folders {', '.join(CIFAR10_CLASSES)}; "
            f"found {', '.join(dataset.classes)}"
        )
    dataset.spec = CIFAR10
    return dataset


# ---------------------------------------------------------------------------
# MNIST

_MNIST_HOW = (
    "Pass download=True to fetch it, or place train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), "
    "t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) in it or in its MNIST/raw/ folder."
)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an idx file (LeCun's MNIST format), raw or gzip-compressed.

    Layout: two zero bytes, a type code (0x08 = uint8), the number of dimensions,
    one big-endian uint32 per dimension, then the data in C order.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise CorruptFileError(f"cannot decompress {path}: {exc}. Fetch it again.") from exc
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise CorruptFileError(f"{path} is not an idx file (header {raw[:4].hex() or 'empty'}). Fetch it again.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise CorruptFileError(
            f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}: "
            "truncated or corrupt. Fetch it again."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(data.astype(dtype.newbyteorder("=")))


def _find_idx(root: Path, name: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def mnist(
    root: str | os.PathLike, train: bool = True, download: bool = False, transform: Transform | None = None
) -> TensorImages:
    """The MNIST training (60,000) or test (10,000) digits as (N, 1, 28, 28) uint8, classes "0".."9".

    Reads the idx files, gzipped or not, from ``root`` or from ``root/MNIST/raw``
    (where torchvision puts them; ``download=True`` fetches them there).
    """
    root = Path(root)
    prefix = "train" if train else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find_idx(root, n) for n in names]
    if None in paths and download:
        import torchvision  # torchvision fetches and md5-checks the archives; imgzoo parses the files

        torchvision.datasets.MNIST(str(root), train=train, download=True)
        paths = [_find_idx(root, n) for n in names]
    if None in paths:
        missing = [n for n, p in zip(names, paths, strict=True) if p is None]
        raise FileNotFoundError(f"no MNIST {', '.join(missing)} in {root}. {_MNIST_HOW}")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"MNIST files {paths[0]} and {paths[1]} disagree: images {tuple(images.shape)}, labels "
            f"{tuple(labels.shape)}; expected (N, 28, 28) and (N,)"
        )
    return TensorImages(
        images.unsqueeze(1).to(torch.uint8),
        labels.long(),
        MNIST.class_names,
        transform=transform,
        spec=MNIST,
        source=str(paths[0].parent),
    )


# ---------------------------------------------------------------------------
# Folders of image files: ImageFolder, Stanford Dogs, Kaggle dog-breed-identification


def _scan(root: Path, folders: list[str]) -> list[tuple[str, int]]:
    """Image files under each class folder, labelled by the folder's position; an empty folder is an error."""
    samples = make_dataset(
        str(root), {name: i for i, name in enumerate(folders)}, extensions=IMG_EXTENSIONS, allow_empty=True
    )
    counts = np.bincount([label for _, label in samples], minlength=len(folders))
    empty = [folders[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise ValueError(
            f"class folder(s) with no images in {root}: {', '.join(empty)} "
            f"(image extensions: {', '.join(IMG_EXTENSIONS)}). Add images or remove the folder(s)."
        )
    return samples


def _class_folders(root: Path, how: str) -> list[str]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist. {how}")
    try:
        folders, _ = find_classes(str(root))
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} has no class folders. {how}") from None
    return folders


def image_folder(root: str | os.PathLike, transform: Transform | None = None, on_error: str = "raise") -> ImageFiles:
    """Any tree ``root/<class>/<image>``; classes are the folder names, sorted."""
    root = Path(root)
    folders = _class_folders(root, "Expected one folder per class, e.g. root/cat/001.jpg, root/dog/002.jpg.")
    return ImageFiles(_scan(root, folders), folders, transform=transform, on_error=on_error, source=str(root))


_WNID = re.compile(r"^n\d{8}-(.+)$")
_DOGS_HOW = (
    "Expected the Stanford Dogs layout Images/n02085620-Chihuahua/*.jpg "
    "(http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar, extracted)."
)


def stanford_dogs(root: str | os.PathLike, transform: Transform | None = None, on_error: str = "raise") -> ImageFiles:
    """Stanford Dogs (Khosla et al. 2011): ``root/Images/<wnid>-<Breed>/*.jpg``, 120 breeds.

    ``root`` may also be the ``Images`` folder itself. Classes follow the WordNet
    ids' order (the data set's own) and are named without the id:
    ``n02085620-Chihuahua`` -> ``Chihuahua``.
    """
    root = Path(root)
    images = root / "Images" if (root / "Images").is_dir() else root
    folders = _class_folders(images, _DOGS_HOW)
    names = []
    for folder in folders:
        match = _WNID.match(folder)
        if not match:
            raise ValueError(f"{images / folder} is not named <wnid>-<Breed> (e.g. n02085620-Chihuahua). {_DOGS_HOW}")
        names.append(match.group(1))
    return ImageFiles(_scan(images, folders), names, transform=transform, on_error=on_error, source=str(images))


_KAGGLE_HOW = (
    "Expected the Kaggle dog-breed-identification layout: labels.csv (columns id,breed) beside "
    "train/<id>.jpg (kaggle competitions download -c dog-breed-identification)."
)


def kaggle_dogs(
    root: str | os.PathLike,
    transform: Transform | None = None,
    on_error: str = "raise",
    classes: Sequence[str] | None = None,
) -> ImageFiles:
    """Kaggle dog-breed-identification: ``root/train/<id>.jpg`` labelled by ``root/labels.csv``.

    The breeds are ``classes`` when given, else the breed columns of
    ``sample_submission.csv`` when present (the competition's order), else the
    sorted breeds of labels.csv. A row whose image is missing or whose breed is
    not a known class is an error: a wrong label must never pass silently.
    """
    root = Path(root)
    labels_csv = root / "labels.csv"
    if not labels_csv.is_file():
        raise FileNotFoundError(f"{labels_csv} does not exist. {_KAGGLE_HOW}")
    with open(labels_csv, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"id", "breed"} <= set(reader.fieldnames):
            raise ValueError(f"{labels_csv} must have the columns id,breed; got {reader.fieldnames}")
        rows = [(row["id"], row["breed"]) for row in reader]
    if not rows:
        raise ValueError(f"{labels_csv} has no rows. {_KAGGLE_HOW}")
    if classes is None and (root / "sample_submission.csv").is_file():
        with open(root / "sample_submission.csv", newline="") as f:
            header = next(csv.reader(f), [])
        classes = header[1:]
    names = list(classes) if classes is not None else sorted({breed for _, breed in rows})
    index = {name: i for i, name in enumerate(names)}
    seen: set[str] = set()
    samples = []
    for line, (image_id, breed) in enumerate(rows, start=2):
        where = f"{labels_csv}, line {line}"
        if breed not in index:
            raise ValueError(f"{where}: breed {breed!r} is not one of the {len(names)} known breeds.")
        if image_id in seen:
            raise ValueError(f"{where}: id {image_id!r} appears twice.")
        seen.add(image_id)
        path = root / "train" / f"{image_id}.jpg"
        if not path.is_file():
            raise FileNotFoundError(f"{where}: image {path} for id {image_id!r} does not exist.")
        samples.append((str(path), index[breed]))
    return ImageFiles(samples, names, transform=transform, on_error=on_error, source=str(labels_csv))


def dog_breeds(root: str | os.PathLike, transform: Transform | None = None, on_error: str = "raise") -> ImageFiles:
    """Dog-breed images in whichever layout ``root`` holds: Kaggle (labels.csv), Stanford Dogs, or ImageFolder."""
    root = Path(root)
    if (root / "labels.csv").is_file():
        return kaggle_dogs(root, transform, on_error)
    images = root / "Images" if (root / "Images").is_dir() else root
    if images.is_dir() and any(_WNID.match(p.name) for p in images.iterdir() if p.is_dir()):
        return stanford_dogs(root, transform, on_error)
    return image_folder(root, transform, on_error)
