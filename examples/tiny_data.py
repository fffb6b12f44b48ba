"""Tiny data sets in the real on-disk formats, for the examples' ``--smoke`` runs.

Each writer puts a few images per class under ``root`` in exactly the layout the real
download has, so a smoke run reads them through the same imgzoo call as real data. The
images are noise around a grey level that grows with the label: learnable, so the
printed accuracies mean something even on a few images, but no stand-in for real data.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Three Stanford Dogs classes with their real WordNet ids.
DOG_BREEDS = {"n02085620": "Chihuahua", "n02085782": "Japanese_spaniel", "n02085936": "Maltese_dog"}


def images_for(labels: list[int], height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """uint8 (N, H, W, C) images: grey level 20 + 20 * label, plus noise."""
    rng = np.random.default_rng(seed)
    levels = 20 + 20 * np.array(labels, dtype=np.int16)[:, None, None, None]
    noise = rng.integers(-8, 9, size=(len(labels), height, width, channels), dtype=np.int16)
    return np.clip(levels + noise, 0, 255).astype(np.uint8)


def write_mnist(root: Path, per_class: int = 6) -> Path:
    """train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz, as LeCun's site serves them; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    labels = [label for _ in range(per_class) for label in range(10)]
    images = images_for(labels, 28, 28, 1)[..., 0]
    for name, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", np.array(labels, np.uint8))):
        # idx: two zero bytes, the type code (0x08: uint8), the number of dimensions, big-endian sizes, the data.
        header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
        (root / f"{name}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return root


def write_cifar10(root: Path, per_class: int = 6) -> Path:
    """The "python version" batches in ``root/cifar-10-batches-py``, as the archive unpacks; returns ``root``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    labels = [label for _ in range(per_class) for label in range(10)]
    rows = images_for(labels, 32, 32, 3).transpose(0, 3, 1, 2).reshape(len(labels), 3072)  # R, G, B planes
    for k in range(5):  # the real archive deals 50,000 images over five batches
        batch = {"batch_label": f"training batch {k + 1} of 5", "labels": labels[k::5], "data": rows[k::5]}
        with open(folder / f"data_batch_{k + 1}", "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": 10000, "num_vis": 3072}, f, protocol=2)
    return root


def write_stanford_dogs(root: Path, per_class: int = 4, size: tuple[int, int] = (60, 80)) -> Path:
    """``root/Images/<wnid>-<Breed>/<wnid>_<k>.jpg``, the Stanford Dogs layout; returns ``root``."""
    for label, wnid in enumerate(sorted(DOG_BREEDS)):
        folder = root / "Images" / f"{wnid}-{DOG_BREEDS[wnid]}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(images_for([label] * per_class, *size, 3, seed=label)):
            Image.fromarray(image).save(folder / f"{wnid}_{k}.jpg", quality=90)
    return root
