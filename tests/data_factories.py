"""Tiny data sets in the real on-disk formats, for tests.

Each writer puts a few images per class under ``root`` and returns the path a
user would hand to imgzoo (the folder to pass to ``imgzoo.data.datasets``). Every image
is filled with a grey level that encodes its label (``class_level(label)``, plus
a little noise), so a test can check that labels still match images after loading,
splitting and batching: ``round((pixel_mean - 20) / 20)`` recovers the label for
up to 12 classes, even after JPEG compression.
"""

from __future__ import annotations

import csv
import gzip
import io
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "CIFAR10_CLASSES",
    "DOG_BREEDS",
    "IDX_TYPES",
    "class_level",
    "idx_bytes",
    "label_of",
    "make_images",
    "truncate",
    "write_cifar10",
    "write_image_folder",
    "write_kaggle_dogs",
    "write_mnist",
    "write_stanford_dogs",
    "zero_byte",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Three Stanford Dogs synsets with their real WordNet ids.
DOG_BREEDS = {"n02085620": "Chihuahua", "n02085782": "Japanese_spaniel", "n02085936": "Maltese_dog"}


def class_level(label: int) -> int:
    """The grey level (0-255) that images of class ``label`` are filled with."""
    return 20 + 20 * label


def label_of(image: np.ndarray) -> int:
    """Recover the label from an image written here (uint8, any layout)."""
    return round((float(np.asarray(image, dtype=np.float64).mean()) - 20) / 20)


def make_images(labels: Sequence[int], height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """uint8 images shaped (N, H, W, C) whose grey level encodes each label."""
    rng = np.random.default_rng(seed)
    levels = np.array([class_level(label) for label in labels], dtype=np.int16)[:, None, None, None]
    noise = rng.integers(-3, 4, size=(len(labels), height, width, channels), dtype=np.int16)
    return np.clip(levels + noise, 0, 255).astype(np.uint8)


def _labels(num_classes: int, n_per_class: int) -> list[int]:
    return [label for _ in range(n_per_class) for label in range(num_classes)]


class _Python2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2 ``str`` (BINSTRING), as cPickle did for the real CIFAR-10 batches.

    Python 3 pickles bytes at protocol 2 through a ``_codecs.encode`` call; the
    original files have no such call, only numpy's three globals, and this
    writer reproduces that, so the reader is tested on both.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes | str) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str
    dispatch[str] = save_python2_str


def _pickle_like_python2(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    # numpy 1.x, which wrote the real files, lived at numpy.core; numpy 2 moved it to numpy._core.
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_cifar10(root: str | Path, n_per_class: int = 2, seed: int = 0, *, python2: bool = True) -> Path:
    """CIFAR-10 "python version" batches under ``root/cifar-10-batches-py``; returns ``root``.

    The layout and pickle keys are those of the real archive (and of
    torchvision's CIFAR10): five ``data_batch_k`` files, ``test_batch`` and
    ``batches.meta``. ``python2=True`` writes the pickles as the real archive holds
    them (Python 2 strings; globals numpy.core.multiarray._reconstruct, numpy.ndarray,
    numpy.dtype and nothing else); ``False`` writes what Python 3's
    ``pickle.dump(protocol=2)`` gives, which adds ``_codecs.encode``. Both read back
    with ``pickle.load(f, encoding="latin1")`` as torchvision does. The training
    images are dealt round-robin over the five batches; the test batch gets
    ``n_per_class`` per class too.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, labels: list[int], images: np.ndarray) -> None:
        batch = {
            "batch_label": name,
            "labels": labels,
            "data": images.transpose(0, 3, 1, 2).reshape(len(labels), 3 * 32 * 32),  # rows of R, G, B planes
            "filenames": [f"{name}_{i}.png" for i in range(len(labels))],
        }
        if python2:
            (folder / name).write_bytes(_pickle_like_python2(batch))
        else:
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))

    labels = _labels(10, n_per_class)
    images = make_images(labels, 32, 32, 3, seed)
    for k in range(5):
        dump(f"data_batch_{k + 1}", labels[k::5], images[k::5])
    test_labels = _labels(10, n_per_class)
    dump("test_batch", test_labels, make_images(test_labels, 32, 32, 3, seed + 1))
    meta = {"label_names": list(CIFAR10_CLASSES), "num_cases_per_batch": 10000, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return Path(root)


# idx type codes and the big-endian dtypes they stand for (LeCun's format description).
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """The idx format: magic (0, 0, type code, ndim), big-endian dims, then the data in the code's dtype."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_TYPES[type_code]).tobytes()


def write_mnist(
    root: str | Path, n_per_class: int = 2, *, compressed: bool = True, subdir: str = "MNIST/raw", seed: int = 0
) -> Path:
    """MNIST idx files (train and t10k, images and labels) under ``root/subdir``; returns ``root``.

    ``compressed=True`` writes ``*.gz`` as the original distribution (and the
    shared MNIST copy) does; ``False`` writes the raw files torchvision extracts.
    """
    folder = Path(root) / subdir
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, offset in (("train", 0), ("t10k", 1)):
        labels = _labels(10, n_per_class)
        images = make_images(labels, 28, 28, 1, seed + offset)[..., 0]
        for kind, array in (("images-idx3", images), ("labels-idx1", np.array(labels, dtype=np.uint8))):
            name = f"{prefix}-{kind}-ubyte"
            data = idx_bytes(array)
            if compressed:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return Path(root)


def _save(image: np.ndarray, path: Path, mode: str) -> None:
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if pil.mode != mode:
        pil = pil.convert(mode)
    pil.save(path)


def write_image_folder(
    root: str | Path,
    classes: Sequence[str] = ("cat", "dog"),
    n_per_class: int = 2,
    *,
    size: tuple[int, int] = (32, 32),
    ext: str = "jpg",
    mode: str = "RGB",
    seed: int = 0,
) -> Path:
    """An ImageFolder tree ``root/<class>/<k>.<ext>``; returns ``root``."""
    root = Path(root)
    labels = _labels(len(classes), n_per_class)
    images = make_images(labels, size[0], size[1], 3, seed)
    for i, (label, image) in enumerate(zip(labels, images, strict=True)):
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        _save(image, folder / f"{i:04d}.{ext}", mode)
    return root


def write_stanford_dogs(
    root: str | Path, n_per_class: int = 2, *, breeds: dict[str, str] | None = None, size: tuple[int, int] = (40, 48)
) -> Path:
    """The Stanford Dogs layout ``root/Images/<wnid>-<Breed>/<wnid>_<k>.jpg``; returns ``root``.

    Classes are numbered in sorted-wnid order, which is the order the loader must give.
    """
    breeds = breeds or DOG_BREEDS
    root = Path(root)
    for label, wnid in enumerate(sorted(breeds)):
        folder = root / "Images" / f"{wnid}-{breeds[wnid]}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(make_images([label] * n_per_class, size[0], size[1], 3, seed=label)):
            _save(image, folder / f"{wnid}_{k}.jpg", "RGB")
    return root


def write_kaggle_dogs(
    root: str | Path,
    n_per_class: int = 2,
    *,
    breeds: Sequence[str] = ("chihuahua", "japanese_spaniel", "maltese_dog"),
    size: tuple[int, int] = (40, 48),
    sample_submission: bool = False,
) -> Path:
    """The Kaggle dog-breed-identification layout: ``train/<id>.jpg`` and ``labels.csv`` (id,breed).

    Ids are hex strings as on Kaggle, written in an order unrelated to the breed.
    Labels are numbered in sorted-breed order. ``sample_submission=True`` also
    writes ``sample_submission.csv``, whose header lists the breeds. Returns ``root``.
    """
    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    names = sorted(breeds)
    labels = _labels(len(names), n_per_class)
    rows = []
    for i, (label, image) in enumerate(zip(labels, make_images(labels, size[0], size[1], 3), strict=True)):
        image_id = f"{(i * 2654435761) % 2**32:08x}"  # scrambled, so id order is not label order
        _save(image, root / "train" / f"{image_id}.jpg", "RGB")
        rows.append((image_id, names[label]))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "breed"])
        writer.writerows(rows)
    if sample_submission:
        with open(root / "sample_submission.csv", "w", newline="") as f:
            csv.writer(f).writerow(["id", *names])
    return root


def zero_byte(path: str | Path) -> Path:
    """Empty the file at ``path`` (a zero-byte image)."""
    Path(path).write_bytes(b"")
    return Path(path)


def truncate(path: str | Path, keep: float = 0.5) -> Path:
    """Cut the file at ``path`` to its first ``keep`` fraction of bytes (a truncated download)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: max(1, int(len(data) * keep))])
    return Path(path)
