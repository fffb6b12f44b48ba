"""CIFAR-10, MNIST and dog-breed images on disk -> one dataset type with class names and a data spec.

imgzoo parses CIFAR-10's batches and MNIST's idx files itself (torchvision only downloads): torchvision's CIFAR10
md5-checks the full 50,000-image files and its MNIST reads only un-gzipped ones.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import math
import os
import pickle
import re
import socket
import urllib.parse
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from imgzoo.models.registry import CIFAR10, CIFAR10_CLASSES, MNIST, DataSpec

__all__ = ["CorruptFileError", "ImageDataset", "TensorImages", "check_classes", "cifar10", "classes_of",
           "detect_format", "dog_breeds", "image_folder", "kaggle_dogs", "labels_of", "mnist", "open_folder",
           "read_idx", "stanford_dogs", "train_val_split"]  # fmt: skip

Transform = Callable[[Any], Any]


class CorruptFileError(ValueError):
    """A file that cannot be decoded: a zero-byte, truncated or foreign image, or a damaged batch or idx file."""


class ImageDataset(Dataset):
    """Images with int64 ``targets``, ``classes`` (names, in label order) and the ``spec`` of a known data set.

    ``images``: a uint8 (N, C, H, W) tensor, or image files decoded on access (PIL, in the file's mode).
    ``on_error="skip"`` decodes every file up front (about a minute per 20,000 photos on one core) and leaves
    out, with one warning, those listed in ``skipped``; otherwise only a zero-byte file is refused at once.
    """

    def __init__(self, images: torch.Tensor | Sequence[str | os.PathLike], targets: torch.Tensor | Sequence[int],
                 classes: Sequence[str], *, transform: Transform | None = None, spec: DataSpec | None = None,
                 on_error: str = "raise", source: str = "") -> None:  # fmt: skip
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        targets = torch.as_tensor(targets, dtype=torch.int64).contiguous()  # as the decode cache saves them
        self.skipped: list[str] = []
        if isinstance(images, torch.Tensor):
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise ValueError(f"images must be uint8 (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
            self.images, self.files = images, None
        else:
            self.images, self.files = None, [str(f) for f in images]
            if len(self.files) == len(targets):
                targets = self._readable(targets, on_error, source)
        where = source or "the data"
        if len(targets) != len(self):
            raise ValueError(f"{len(self)} images but {len(targets)} labels in {where}")
        if len(targets) and not 0 <= int(targets.min()) <= int(targets.max()) < len(classes):
            raise ValueError(f"labels in {where} must lie in 0..{len(classes) - 1} for {len(classes)} classes; "
                             f"got {int(targets.min())}..{int(targets.max())}")  # fmt: skip
        self.targets, self.classes = targets, list(classes)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.transform, self.spec, self.source = transform, spec, source
        self.indices: list[int] | None = None  # a subset's positions in the dataset it was first taken from

    def _readable(self, targets: torch.Tensor, on_error: str, source: str) -> torch.Tensor:
        """The labels of the files kept: a zero-byte file is refused, or with "skip" any unreadable one dropped."""
        if on_error == "raise":
            empty = next((path for path in self.files if os.path.getsize(path) == 0), None)
            if empty is not None:
                raise CorruptFileError(f"{empty} is empty (0 bytes). Replace or delete it, or {_SKIP_ADVICE}.")
            return targets
        keep = [_decodes(path) for path in self.files]
        self.skipped = [path for path, good in zip(self.files, keep, strict=True) if not good]
        if self.skipped:
            shown = ", ".join(self.skipped[:3]) + (", ..." if len(self.skipped) > 3 else "")
            warnings.warn(f"skipped {len(self.skipped)} unreadable image(s) of {len(self.files)} in {source}: {shown}",
                          stacklevel=4)  # fmt: skip
        self.files = [path for path, good in zip(self.files, keep, strict=True) if good]
        return targets[torch.as_tensor(keep, dtype=torch.bool)]

    @property
    def samples(self) -> list[tuple[str, int]]:
        """(file, label) pairs, as torchvision's ImageFolder lists them; empty for tensor images."""
        return list(zip(self.files or [], self.targets.tolist(), strict=False))

    def __len__(self) -> int:
        return len(self.images) if self.files is None else len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index] if self.files is None else _open_image(self.files[index])
        return (self.transform(image) if self.transform else image), int(self.targets[index])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        """The images at ``indices``, with this dataset's classes, spec, transform and source."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        images = self.images[index] if self.files is None else [self.files[i] for i in index.tolist()]
        part = self._like(images, self.targets[index], self.transform)
        part.indices = index.tolist() if self.indices is None else [self.indices[i] for i in index.tolist()]
        return part

    def with_transform(self, transform: Transform | None) -> ImageDataset:
        """The same images and labels, given to ``transform`` when indexed."""
        return self._like(self.images if self.files is None else self.files, self.targets, transform)

    def _like(self, images: Any, targets: torch.Tensor, transform: Transform | None) -> ImageDataset:
        new = ImageDataset.__new__(ImageDataset)
        new.__dict__.update(self.__dict__)
        new.images, new.files = (images, None) if isinstance(images, torch.Tensor) else (None, list(images))
        new.targets, new.transform, new.skipped = targets, transform, []
        return new

    def __repr__(self) -> str:
        what = f"images {tuple(self.images.shape[1:])}" if self.files is None else "files"
        return f"ImageDataset({len(self)} {what}, {len(self.classes)} classes, {self.source!r})"


TensorImages = ImageDataset  # its 0.1 name: ImageDataset(images, targets, classes, spec=...) reads the same

_SKIP_ADVICE = "pass on_error='skip' to leave unreadable files out"


def _open_image(path: str, advice: str = _SKIP_ADVICE) -> Image.Image:
    """Fully decode ``path`` (``load`` finds a truncated file); PIL only warns of a decompression bomb between one
    and two times ``Image.MAX_IMAGE_PIXELS`` (a small PNG can claim 400 megapixels), so that is refused too."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                # A phone photo stores its pixels sideways and says so in EXIF: turn it as a viewer does.
                ImageOps.exif_transpose(image, in_place=True)
                return image
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise CorruptFileError(
            f"refusing to decode image {path}: {exc} If the image is genuine, raise PIL.Image.MAX_IMAGE_PIXELS "
            f"(now {Image.MAX_IMAGE_PIXELS}); otherwise delete it, or {advice}."
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptFileError(f"cannot decode image {path}: {exc}. Replace or delete the file, or {advice}.") from exc


def _decodes(path: str) -> bool:
    try:
        return _open_image(path) is not None
    except CorruptFileError:
        return False


def _show(names: Sequence[str]) -> str:
    return f"{len(names)} classes ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"


def check_classes(expected: Sequence[Any] | None, found: Sequence[Any] | None, *, expected_by: str, found_in: str,
                  advice: str) -> None:  # fmt: skip
    """Refuse classes that differ from the expected ones in names or order (label i would mean another class to
    the data than to the model: swapped labels). The one check fit, resume, evaluate and the commands share."""
    if not expected or not found:
        return
    expected, found = [str(c) for c in expected], [str(c) for c in found]
    if expected == found:
        return
    order = " (the same names in another order)" if sorted(expected) == sorted(found) else ""
    raise ValueError(f"{found_in} has {_show(found)} but {expected_by} predicts {_show(expected)}{order}: "
                     f"a label would mean another class to each. {advice}")  # fmt: skip


def classes_of(data: Any) -> list[str] | None:
    """The class names ``data`` carries (an ImageDataset, a FastLoader, a DataLoader or Subset of one), if any."""
    for _ in range(8):
        if getattr(data, "classes", None) is not None:
            return [str(c) for c in data.classes]
        data = getattr(data, "dataset", None) or getattr(data, "data", None)
    return None


def model_classes(model: Any) -> tuple[str, ...] | None:
    """The class names a model was built with (its DataSpec's), if it has them."""
    return getattr(getattr(model, "data_spec", None), "class_names", None)


def labels_of(data: Any, read: bool = True) -> torch.Tensor | None:
    """Every label of ``data`` from its ``targets`` (a Subset's or TensorDataset's too), as they are; else, with
    ``read``, read item by item (which decodes every image once), without it None."""
    targets = getattr(data, "targets", None)
    if isinstance(data, TensorDataset) and len(data.tensors) >= 2:
        targets = data.tensors[1]
    elif targets is None and isinstance(data, Subset):
        parent = labels_of(data.dataset, read=False)
        targets = parent[torch.as_tensor(list(data.indices), dtype=torch.int64)] if parent is not None else None
    if targets is None and read:
        targets = [int(data[i][1]) for i in range(len(data))]
    try:
        return torch.as_tensor(targets) if targets is not None else None
    except (TypeError, ValueError):
        return None


def train_val_split(
    dataset: Dataset, val_fraction: float | None = None, seed: int = 0, *, val_count: int | None = None
) -> tuple[Dataset, Dataset]:
    """A seeded split with ``val_fraction`` (default 0.1) of every class, or ``val_count`` images, in validation;
    stratified (every class on both sides), so no class skews a small set's validation accuracy. An ImageDataset
    gives ImageDatasets, else Subsets."""
    if val_fraction is not None and val_count is not None:
        raise ValueError(
            f"pass val_fraction or val_count, not both; got val_fraction={val_fraction!r}, val_count={val_count!r}"
        )
    if val_fraction is not None and not (is_real(val_fraction) and 0.0 < val_fraction < 1.0):
        raise ValueError(
            f"val_fraction must be a number between 0 and 1 (exclusive), e.g. 0.1; got {val_fraction!r} "
            f"({type(val_fraction).__name__}). For a number of validation images, pass val_count= instead."
        )
    if val_count is not None and not is_int(val_count, 1):
        raise ValueError(f"val_count must be a positive int (a number of images); got {val_count!r}")
    if not is_int(seed):
        raise ValueError(f"seed must be an int; got {seed!r} ({type(seed).__name__})")
    targets = labels_of(dataset).long()
    sizes = {label: int((targets == label).sum()) for label in torch.unique(targets).tolist()}
    n_val = _val_sizes(sizes, val_fraction, val_count, getattr(dataset, "classes", None))
    generator = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for label in sizes:
        members = torch.nonzero(targets == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)].tolist()
        val_idx += members[: n_val[label]]
        train_idx += members[n_val[label] :]
    if isinstance(dataset, ImageDataset):
        return dataset.subset(sorted(train_idx)), dataset.subset(sorted(val_idx))
    subsets = Subset(dataset, sorted(train_idx)), Subset(dataset, sorted(val_idx))
    for subset in subsets:  # the labels and names a later split, fit's checks and evaluate read
        subset.targets, subset.classes = targets[subset.indices], getattr(dataset, "classes", None)
    return subsets


def is_int(value: Any, minimum: float = -math.inf, below: float = math.inf) -> bool:
    """An int (never a bool) in [minimum, below): the one test of whole-number options across imgzoo."""
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value < below


def is_real(value: Any) -> bool:
    """A finite int or float: "0.1" or NaN would fail later, inside torch, with its own message (or none)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _val_sizes(
    sizes: dict[int, int], val_fraction: float | None, val_count: int | None, classes: Sequence[str] | None
) -> dict[int, int]:
    """How many images of each class go to validation: at least one, and at least one left to train on."""
    total = sum(sizes.values())
    if total == 0:
        raise ValueError("cannot split an empty dataset: it has no images")
    for label, n in sizes.items():
        if n < 2:
            name = classes[label] if classes is not None and 0 <= label < len(classes) else label
            raise ValueError(
                f"class {name!r} (label {label}) has {n} image: a stratified split needs at least 2 of every class, "
                f"one to train on and one to validate on. Add images of {name!r}, or leave the class out."
            )
    if val_count is None:
        fraction = 0.1 if val_fraction is None else float(val_fraction)
        return {label: min(max(round(n * fraction), 1), n - 1) for label, n in sizes.items()}
    low, high = len(sizes), total - len(sizes)
    if not low <= val_count <= high:
        raise ValueError(
            f"val_count={val_count} does not fit {total} images in {len(sizes)} classes: every class keeps one "
            f"image on each side, so val_count must lie in {low}..{high}. Pick a count in that range, or val_fraction."
        )
    # Shared in proportion to the class sizes by largest remainders, 1..n-1 each.
    ideal = {label: n * val_count / total for label, n in sizes.items()}
    shares = {label: min(max(int(ideal[label]), 1), sizes[label] - 1) for label in sizes}
    while sum(shares.values()) < val_count:
        label = max((lb for lb in sizes if shares[lb] < sizes[lb] - 1), key=lambda lb: ideal[lb] - shares[lb])
        shares[label] += 1
    while sum(shares.values()) > val_count:
        label = min((lb for lb in sizes if shares[lb] > 1), key=lambda lb: ideal[lb] - shares[lb])
        shares[label] -= 1
    return shares


# --- CIFAR-10 and MNIST: torchvision downloads, imgzoo parses ---------------------------------------------------

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_HOW = (
    f"Pass download=True to fetch it (163 MB), or place the extracted '{_CIFAR_DIR}' folder of {_CIFAR_URL} in it, "
    "or a folder tree train/<class>/*.png (e.g. a JPEG copy of CIFAR-10)."
)
_CIFAR_BY_HAND = (
    f"Without a network, fetch {_CIFAR_URL} on another machine and extract it into {{root}}, so that "
    "{root}/cifar-10-batches-py/ holds data_batch_1 .. 5 and test_batch; then call again without download=True."
)
_CONNECT_TIMEOUT_S = 10.0  # how long the download host may take to answer before there is "no network"


def _download(what: str, source: Any, root: Path, train: bool, by_hand: str) -> None:
    """Fetch through torchvision, or fail at once saying where to put the files by hand: torchvision opens its URLs
    without a timeout (minutes per mirror where packets drop); one TCP connection per host finds that in seconds."""
    unreachable = _unreachable_hosts(source)
    if unreachable:
        raise ConnectionError(f"cannot download {what}: no connection to {'; '.join(unreachable)}. {by_hand}")
    try:
        source(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:  # urllib's URLError is an OSError; MNIST wraps it in RuntimeError
        raise ConnectionError(f"cannot download {what} into {root}: {exc}. {by_hand}") from exc


def _unreachable_hosts(source: Any) -> list[str]:
    """'host:port (reason)' for each URL of a torchvision dataset class (CIFAR10.url, MNIST.mirrors) whose host
    refuses a connection; [] when one accepts, or behind a proxy."""
    url = getattr(source, "url", None)
    urls = [url] if isinstance(url, str) else [m for m in getattr(source, "mirrors", None) or () if isinstance(m, str)]
    failures = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme in urllib.request.getproxies() or not parts.hostname:
            return []
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT_S).close()
            return []
        except OSError as exc:
            failures.append(f"{parts.hostname}:{port} ({exc})")
    return failures


def cifar10(
    root: str | os.PathLike, train: bool = True, download: bool = False, transform: Transform | None = None
) -> ImageDataset:
    """The CIFAR-10 training (50,000) or test (10,000) images, classes in the official order: from the python
    batches in ``root`` or ``root/cifar-10-batches-py/`` (a uint8 tensor), or from image trees ``root/train/<class>/``
    and ``root/test/<class>/`` (a JPEG copy) whose folders are the ten CIFAR-10 names."""
    root = Path(root)
    batches = _find_cifar_batches(root)
    split = "train" if train else "test"
    if batches is None and (root / split).is_dir():
        dataset = image_folder(root / split, transform=transform)
        if dataset.classes != list(CIFAR10_CLASSES):  # sorted folder names are also CIFAR-10's official order
            raise ValueError(f"{root / split} should hold the ten CIFAR-10 class folders {', '.join(CIFAR10_CLASSES)}; "
                             f"found {', '.join(dataset.classes)}")  # fmt: skip
        dataset.spec = CIFAR10
        return dataset
    if batches is None and download:
        _download("CIFAR-10", torchvision.datasets.CIFAR10, root, train, _CIFAR_BY_HAND.format(root=root))
        batches = _find_cifar_batches(root)
    if batches is None:
        raise FileNotFoundError(f"no CIFAR-10 data in {root}. {_CIFAR_HOW}")
    names = [f"data_batch_{k}" for k in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (batches / n).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 in {batches} lacks {', '.join(missing)}. {_CIFAR_HOW}")
    images, targets = zip(*(_read_cifar_batch(batches / n) for n in names), strict=True)
    return ImageDataset(torch.cat(images), torch.cat(targets), CIFAR10_CLASSES, transform=transform, spec=CIFAR10,
                        source=str(batches))  # fmt: skip


def _find_cifar_batches(root: Path) -> Path | None:
    for folder in (root / _CIFAR_DIR, root):
        if (folder / "batches.meta").is_file() or (folder / "data_batch_1").is_file():
            return folder
    return None


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3's protocol-2 pickles use it for bytes, and for nothing else."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not bytes data")
    return text.encode("latin1")


# Every global a CIFAR-10 batch names (pickletools on the real Python 2 files, and on the ones Python 3 writes
# under numpy 1 and 2); anything else, os.system above all, is refused.
_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray((0,)).__reduce__()[0],
    ("numpy._core.multiarray", "_reconstruct"): np.ndarray((0,)).__reduce__()[0],
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_encode,
}  # fmt: skip


class _CifarUnpickler(pickle.Unpickler):
    """Builds only numpy arrays, dicts, lists, strings and numbers: ``pickle.load`` calls whatever a file names,
    so a batch someone else wrote could run any command."""

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles; latin1 is how torchvision reads them too
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise CorruptFileError(
                f"refusing to unpickle CIFAR-10 batch {self.path}: it refers to {module}.{name}, but a CIFAR-10 "
                f"batch refers only to numpy's array rebuilding (numpy.core.multiarray._reconstruct, numpy.ndarray, "
                f"numpy.dtype). The file is not the original; delete it and fetch the data again (download=True)."
            )
        return _CIFAR_GLOBALS[(module, name)]


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch: ``data`` is (N, 3072) uint8 rows of R, G, B 32x32 planes, ``labels`` N ints in 0..9."""
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, path).load()
        if not isinstance(batch, dict):
            raise ValueError(f"expected a dict with 'data' and 'labels'; got a {type(batch).__name__}")
        batch = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}
        if "data" not in batch or "labels" not in batch:
            raise ValueError(f"expected the keys 'data' and 'labels'; got {sorted(map(str, batch))}")
        data, labels = batch["data"], batch["labels"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ValueError(f"expected 'data' to be a uint8 array of shape (N, 3072); got {got}")
        if not isinstance(labels, list) or len(labels) != len(data):
            got = f"{len(labels)} labels" if isinstance(labels, list) else f"a {type(labels).__name__}"
            raise ValueError(f"expected 'labels' to be a list of {len(data)} ints, one per image; got {got}")
        bad = [x for x in labels if type(x) is not int or not 0 <= x <= 9]
        if bad:
            raise ValueError(f"expected labels that are ints in 0..9; got {bad[0]!r} among {len(bad)} bad label(s)")
    except CorruptFileError:
        raise
    except (OSError, EOFError, MemoryError, pickle.UnpicklingError, ValueError, TypeError, IndexError) as exc:
        raise CorruptFileError(
            f"cannot read CIFAR-10 batch {path}: {exc!r}. Delete the folder and fetch it again (download=True)."
        ) from exc
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.as_tensor(labels, dtype=torch.int64)


_MNIST_HOW = (
    "Pass download=True to fetch it, or place train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), "
    "t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz) in it or in its MNIST/raw/ folder."
)
_MNIST_BY_HAND = (
    "Without a network, fetch train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
    "and t10k-labels-idx1-ubyte.gz (from https://ossci-datasets.s3.amazonaws.com/mnist/) on another machine and "
    "put them in {root} or {root}/MNIST/raw/; then call again without download=True."
)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """An idx file (MNIST's format: 0000, a type code, ndim, big-endian uint32 dims, C-order data), raw or gzipped.
    Other than the header's size is a :class:`CorruptFileError`; a gzip is never inflated past it (no gzip bombs)."""
    path = Path(path)
    try:
        with open(path, "rb") as raw_file:
            gzipped = raw_file.read(2) == b"\x1f\x8b"  # gzip magic, whatever the file is called
        with (gzip.open if gzipped else open)(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_DTYPES:
                codes = ", ".join(f"{code:02x}" for code in _IDX_DTYPES)
                raise CorruptFileError(
                    f"{path} is not an idx file: expected a header 0000<type><ndim> with type one of {codes}; "
                    f"got {magic.hex() or 'an empty file'}. Fetch it again."
                )
            dims = f.read(4 * magic[3])
            if len(dims) < 4 * magic[3]:
                raise CorruptFileError(f"{path} ends inside its header ({magic[3]} dimensions). Fetch it again.")
            dtype, shape = np.dtype(_IDX_DTYPES[magic[2]]), tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
            size = math.prod(shape) * dtype.itemsize
            data = bytearray()
            while len(data) < size and (chunk := f.read(min(size - len(data), 1 << 24))):  # memory follows the file
                data += chunk
            if len(data) != size or f.read(1):
                raise CorruptFileError(
                    f"{path}: its header declares shape {shape}, {size} bytes of data; got "
                    f"{f'{len(data)} bytes' if len(data) < size else 'more'}: truncated or corrupt. Fetch it again."
                )
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise CorruptFileError(f"cannot read idx file {path}: {exc}. Fetch it again.") from exc
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("=")))


def _find_idx(root: Path, name: str) -> Path | None:
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def mnist(
    root: str | os.PathLike, train: bool = True, download: bool = False, transform: Transform | None = None
) -> ImageDataset:
    """The MNIST training (60,000) or test (10,000) digits as (N, 1, 28, 28) uint8, classes "0".."9", from the idx
    files, gzipped or not, in ``root`` or ``root/MNIST/raw`` (where ``download=True`` puts them)."""
    root = Path(root)
    prefix = "train" if train else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find_idx(root, n) for n in names]
    if None in paths and download:
        _download("MNIST", torchvision.datasets.MNIST, root, train, _MNIST_BY_HAND.format(root=root))
        paths = [_find_idx(root, n) for n in names]
    if None in paths:
        missing = [n for n, p in zip(names, paths, strict=True) if p is None]
        raise FileNotFoundError(f"no MNIST {', '.join(missing)} in {root}. {_MNIST_HOW}")
    (images_path, labels_path), again = paths, "Fetch the MNIST files again."
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != torch.uint8 or images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise CorruptFileError(
            f"{images_path} should hold uint8 images of shape (N, 28, 28) (idx type 08, 3 dimensions); "
            f"got {images.dtype} {tuple(images.shape)}. {again}"
        )
    if labels.dtype != torch.uint8 or labels.ndim != 1:
        raise CorruptFileError(f"{labels_path} should hold uint8 labels of shape (N,) (idx type 08, 1 dimension); "
                               f"got {labels.dtype} {tuple(labels.shape)}. {again}")  # fmt: skip
    if len(images) != len(labels):
        raise CorruptFileError(
            f"MNIST files disagree: {images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels. Fetch both files again from the same source."
        )
    if len(labels) and int(labels.max()) > 9:
        raise CorruptFileError(f"{labels_path} holds the label {int(labels.max())}; expected digits 0..9.")
    return ImageDataset(images.unsqueeze(1), labels.long(), MNIST.class_names, transform=transform, spec=MNIST,
                        source=str(images_path.parent))  # fmt: skip


# --- Folders of image files: ImageFolder, Stanford Dogs, Kaggle dog-breed-identification ------------------------


def _class_folders(root: Path, how: str) -> list[str]:
    """The class folders of ``root``, sorted; hidden ones (``.git``, ``.ipynb_checkpoints``) are not classes. A link
    to a folder is one, but two that overlap (one inside the other, or ``root`` inside one) are refused: their
    images would be read twice, under two labels, and could land in both training and validation."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist. {how}")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise FileNotFoundError(f"{root} has no class folders. {how}")
    real = {name: (root / name).resolve() for name in folders}
    for name, path in real.items():
        inside = [o for o, other in real.items() if o != name and other.is_relative_to(path)]
        if inside or root.resolve().is_relative_to(path):
            raise ValueError(
                f"{root / name} leads to {path}, which holds {root if not inside else root / inside[0]} too (a "
                f"link): its images would be read under two classes. Make each class folder hold its own images."
            )
    return folders


def _scan(root: Path, folders: list[str]) -> list[tuple[str, int]]:
    """Image files under each class folder, labelled by the folder's position; an empty folder is an error. Links
    to folders below a class folder are not followed (``a/up -> ..`` would loop forever), hidden entries skipped."""
    samples = []
    for label, name in enumerate(folders):
        found = []  # in torchvision's make_dataset's order (sorted folders), which earlier splits were drawn in
        for top, dirs, files in os.walk(root / name):  # followlinks=False
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.append((top, [f for f in files if not f.startswith(".") and f.lower().endswith(IMG_EXTENSIONS)]))
        samples += [(os.path.join(top, f), label) for top, files in sorted(found) for f in sorted(files)]
    empty = [folders[i] for i in np.flatnonzero(np.bincount([y for _, y in samples], minlength=len(folders)) == 0)]
    if empty:
        raise ValueError(
            f"class folder(s) with no images in {root}: {', '.join(empty)} "
            f"(image extensions: {', '.join(IMG_EXTENSIONS)}). Add images or remove the folder(s)."
        )
    return samples


def _files(samples: list[tuple[str, int]], classes: Sequence[str], transform: Transform | None, on_error: str,
           source: Path) -> ImageDataset:  # fmt: skip
    return ImageDataset([path for path, _ in samples], [label for _, label in samples], classes, transform=transform,
                        on_error=on_error, source=str(source))  # fmt: skip


def image_folder(root: str | os.PathLike, transform: Transform | None = None, on_error: str = "raise") -> ImageDataset:
    """Any tree ``root/<class>/<image>``; classes are the folder names, sorted."""
    root = Path(root)
    folders = _class_folders(root, "Expected one folder per class, e.g. root/cat/001.jpg, root/dog/002.jpg.")
    return _files(_scan(root, folders), folders, transform, on_error, root)


_WNID = re.compile(r"^n\d{8}-(.+)$")
_DOGS_HOW = ("Expected the Stanford Dogs layout Images/n02085620-Chihuahua/*.jpg "
             "(http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar, extracted).")  # fmt: skip
_DOGS_SPLITS = ("train", "test")


def _dogs_images(root: Path) -> Path:
    return root / "Images" if (root / "Images").is_dir() else root


def stanford_dogs(
    root: str | os.PathLike, transform: Transform | None = None, on_error: str = "raise", split: str | None = None
) -> ImageDataset:
    """Stanford Dogs (Khosla et al. 2011): ``root/Images/<wnid>-<Breed>/*.jpg`` (or ``root`` = ``Images``), 120 breeds
    in WordNet order, named without the id (``n02085620-Chihuahua`` -> ``Chihuahua``). ``split="train"`` / ``"test"``:
    the official split (100 per breed to train) of ``lists.tar``'s ``{split}_list.mat`` (needs ``imgzoo[dogs]``)."""
    root = Path(root)
    images = _dogs_images(root)
    folders = _class_folders(images, _DOGS_HOW)
    bad = next((folder for folder in folders if not _WNID.match(folder)), None)
    if bad is not None:
        raise ValueError(f"{images / bad} is not named <wnid>-<Breed> (e.g. n02085620-Chihuahua). {_DOGS_HOW}")
    samples = _scan(images, folders)
    if split is not None:
        samples = _official_split(root, images, samples, split)
    return _files(samples, [_WNID.match(folder).group(1) for folder in folders], transform, on_error, images)


def _official_split(root: Path, images: Path, samples: list[tuple[str, int]], split: str) -> list[tuple[str, int]]:
    """The samples ``{split}_list.mat`` names, in the list's order; a listed file that is not there is an error."""
    if split not in _DOGS_SPLITS:
        raise ValueError(f"stanford_dogs: split must be one of {_DOGS_SPLITS} or None (every image), got {split!r}")
    places = [folder / f"{split}_list.mat" for folder in (root, root / "lists", images.parent, images.parent / "lists")]
    found = next((p for p in places if p.is_file()), None)
    if found is None:
        raise FileNotFoundError(
            f"stanford_dogs(split={split!r}) needs {split}_list.mat; looked in "
            f"{', '.join(str(p.parent) for p in places)}. It is in "
            "http://vision.stanford.edu/aditya86/ImageNetDogs/lists.tar: extract it into the data set's folder."
        )
    try:
        from scipy.io import loadmat  # MATLAB's format: optional, only the official split needs it
    except ImportError:
        raise ImportError(
            f'reading {found} (a MATLAB file) needs scipy, which is not installed: pip install "imgzoo[dogs]"'
        ) from None
    listed = [str(name) for name in loadmat(found, squeeze_me=True)["file_list"].ravel()]  # "n0208..-Breed/x.jpg"
    label_of = {Path(path).relative_to(images).as_posix(): label for path, label in samples}
    missing = [name for name in listed if name not in label_of]
    if missing:
        raise FileNotFoundError(
            f"{found} lists {len(missing)} image(s) not found under {images}, e.g. {missing[0]}. "
            f"Extract the whole images.tar there, or use split=None for the images you have."
        )
    return [(str(images / name), label_of[name]) for name in listed]


_KAGGLE_HOW = ("Expected the Kaggle dog-breed-identification layout: labels.csv (columns id,breed) beside "
               "train/<id>.jpg (kaggle competitions download -c dog-breed-identification).")  # fmt: skip


def kaggle_dogs(root: str | os.PathLike, transform: Transform | None = None, on_error: str = "raise",
                classes: Sequence[str] | None = None) -> ImageDataset:  # fmt: skip
    """Kaggle dog-breed-identification: ``root/train/<id>.jpg`` labelled by ``root/labels.csv``. Breeds: ``classes``,
    else ``sample_submission.csv``'s columns (the competition's order), else labels.csv's, sorted. A missing image or
    unknown breed is an error; an id is a file name, never a path or a link out of ``root/train``."""
    root = Path(root)
    labels_csv = root / "labels.csv"
    if not labels_csv.is_file():
        raise FileNotFoundError(f"{labels_csv} does not exist. {_KAGGLE_HOW}")
    rows = _read_labels_csv(labels_csv)
    if classes is None and (root / "sample_submission.csv").is_file():
        classes = next(_csv_rows(root / "sample_submission.csv"), (0, []))[1][1:]
    names = list(classes) if classes is not None else sorted({breed for _, _, breed in rows})
    if len(set(names)) != len(names) or "" in names:
        raise ValueError(f"breed names must be distinct and non-empty; got {names}. {_KAGGLE_HOW}")
    index = {name: i for i, name in enumerate(names)}
    samples: dict[str, tuple[str, int]] = {}  # by id, in the file's order
    for line, image_id, breed in rows:
        where = f"{labels_csv}, line {line}"
        if breed not in index:
            raise ValueError(f"{where}: breed {breed!r} is not one of the {len(names)} known breeds.")
        if image_id in samples:
            raise ValueError(f"{where}: id {image_id!r} appears twice.")
        samples[image_id] = (str(_kaggle_image(root / "train", image_id, where)), index[breed])
    return _files(list(samples.values()), names, transform, on_error, labels_csv)


def _read_text(path: Path) -> str:
    """A text file as UTF-8, or as whatever its byte-order mark says (Excel writes UTF-8 or UTF-16 with one)."""
    raw = path.read_bytes()
    encoding = "utf-8-sig"  # the UTF-32 LE mark begins with the UTF-16 LE one, so UTF-32 is tried first
    if raw[:4] in (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE):
        encoding = "utf-32"
    elif raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        encoding = "utf-16"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise CorruptFileError(
            f"{path} is not valid {encoding}: byte {raw[exc.start : exc.start + 1].hex()} at offset {exc.start} "
            f"({exc.reason}). Expected UTF-8 (or UTF-16 / UTF-32 with a byte-order mark); save it as UTF-8."
        ) from None


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of each non-blank row; csv's own errors become a ValueError naming the line."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    try:
        yield from ((reader.line_num, row) for row in reader if row)
    except csv.Error as exc:
        raise ValueError(f"{path}, line {reader.line_num}: {exc}. Fix the line or fetch the file again.") from None


def _read_labels_csv(path: Path) -> list[tuple[int, str, str]]:
    """(line, id, breed) of every row of a labels.csv, each row with exactly the header's columns and an id."""
    rows = _csv_rows(path)
    header = next(rows, (0, None))[1]
    if header is None or not {"id", "breed"} <= set(header):
        raise ValueError(f"{path} must have the columns id,breed; got {header}. {_KAGGLE_HOW}")
    id_col, breed_col = header.index("id"), header.index("breed")
    result = []
    for line, row in rows:
        if len(row) != len(header) or not row[id_col]:
            what = f"expected {len(header)} columns ({','.join(header)}); got {len(row)}"
            what = what if len(row) != len(header) else "the id is empty"
            raise ValueError(f"{path}, line {line}: {what}: {','.join(row)!r}. Fix or remove the row.")
        result.append((line, row[id_col], row[breed_col]))
    if not result:
        raise ValueError(f"{path} has no rows. {_KAGGLE_HOW}")
    return result


def _kaggle_image(train_dir: Path, image_id: str, where: str) -> Path:
    """``train_dir/<id>.jpg``, once the id is a plain file name whose image stays inside ``train_dir``."""
    if any(c in image_id for c in "/\\:\0") or image_id in (".", "..") or Path(image_id).is_absolute():
        raise ValueError(
            f"{where}: id {image_id!r} is not a file name; ids name images inside {train_dir} "
            f"(e.g. 000bec180eb18c7604dcecc8fe0dba07, without .jpg), never a path. Fix or remove the row."
        )
    path = train_dir / f"{image_id}.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: image {path} for id {image_id!r} does not exist.")
    if not path.resolve().is_relative_to(train_dir.resolve()):
        raise ValueError(
            f"{where}: image {path} for id {image_id!r} is a link to {path.resolve()}, outside {train_dir}. "
            f"Copy the image into {train_dir} instead, or remove the row."
        )
    return path


# --- Any of the layouts above, found by looking -----------------------------------------------------------------

FORMATS = ("cifar10", "mnist", "kaggle_dogs", "stanford_dogs", "image_folder")
_SPLIT_FOLDERS = frozenset({"train", "test", "val", "valid", "validation"})
_ANY_HOW = (
    "Expected one of the layouts imgzoo reads: CIFAR-10's python batches (cifar-10-batches-py/), MNIST's idx files "
    "(train-images-idx3-ubyte[.gz]), Kaggle dog breeds (labels.csv beside train/), Stanford Dogs "
    "(Images/n02085620-Chihuahua/), or class folders of images (<class>/<image>, or train/<class>/<image>)."
)


def _is_stanford_dogs(root: Path) -> bool:
    images = _dogs_images(root)
    return images.is_dir() and any(_WNID.match(p.name) for p in images.iterdir() if p.is_dir())


def dog_breeds(root: str | os.PathLike, transform: Transform | None = None, on_error: str = "raise") -> ImageDataset:
    """Dog-breed images in whichever layout ``root`` holds: Kaggle (labels.csv), Stanford Dogs, or ImageFolder."""
    root = Path(root)
    if (root / "labels.csv").is_file():
        return kaggle_dogs(root, transform, on_error)
    return (stanford_dogs if _is_stanford_dogs(root) else image_folder)(root, transform, on_error)


def detect_format(root: str | os.PathLike) -> str:
    """Which of :data:`FORMATS` ``root`` holds, by its files (most specific layout first), never by its name:
    CIFAR-10 as JPEG class folders is "cifar10" (official order and spec), any other class tree "image_folder"."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist. {_ANY_HOW}")
    if _find_cifar_batches(root) is not None:
        return "cifar10"
    if _find_idx(root, "train-images-idx3-ubyte") is not None:
        return "mnist"
    if (root / "labels.csv").is_file():
        return "kaggle_dogs"
    if _is_stanford_dogs(root):
        return "stanford_dogs"
    tree = _class_tree(root)
    if tree is None:
        raise FileNotFoundError(f"{root} holds no data set imgzoo can read. {_ANY_HOW}")
    if tree != root and sorted(p.name for p in tree.iterdir() if p.is_dir()) == sorted(CIFAR10_CLASSES):
        return "cifar10"
    return "image_folder"


def _class_tree(root: Path) -> Path | None:
    """The folder whose subfolders are the classes: ``root/train`` when ``root`` holds only split folders."""
    folders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not folders:
        return None
    if folders <= _SPLIT_FOLDERS:
        return root / "train" if "train" in folders else None
    return root


def open_folder(root: str | os.PathLike, transform: Transform | None = None, on_error: str = "raise") -> ImageDataset:
    """The training images in ``root``, whichever layout :func:`detect_format` finds (the training split where there
    is a test split: select models on :func:`train_val_split` of it; to measure a test split, name its folder)."""
    root = Path(root)
    found = detect_format(root)
    if found in ("cifar10", "mnist"):
        return (cifar10 if found == "cifar10" else mnist)(root, train=True, transform=transform)
    if found == "image_folder":
        return image_folder(_class_tree(root) or root, transform, on_error)
    return (kaggle_dogs if found == "kaggle_dogs" else stanford_dogs)(root, transform, on_error)
