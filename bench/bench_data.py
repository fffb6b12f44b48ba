"""Does data loading keep up with training? The loader's images/s against ResNet-20 training, in one run.

The goal: the loader (augment="standard"; "strong", image by image, is reported without one) delivers images
at five times or more the rate ResNet-20 trains on one batch already in memory, with the same batch, threads and
device. A CIFAR-10 tree (train/<class>/*.jpg) is decoded once into imgzoo's cache, outside the timed windows;
without one, 50,000 synthetic uint8 images.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import bench_models
import common
import torch

import imgzoo
from imgzoo import datasets


def load_data(path: str | None, spec) -> tuple[datasets.TensorImages, str]:
    if path and Path(path).exists():
        data = datasets.cifar10(path)
        return data, f"{len(data)} CIFAR-10 images from {Path(path).name}/"
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, 10, (50_000,), generator=generator)
    note = f"no data at {path}; " if path else ""
    return datasets.TensorImages(images, targets, spec.class_names, spec=spec), f"{note}50000 synthetic images"


def batches(loader) -> Callable[[], object]:
    """A step that takes the loader's next batch, epoch after epoch."""
    stream = itertools.chain.from_iterable(itertools.repeat(loader))
    return lambda: next(stream)


def measure(path: str | None, seconds: float, device: torch.device) -> dict:
    """The loader's augmented images/s (standard and strong) and ResNet-20's training images/s, and ratios."""
    batch_size = common.batch_size(32, device)
    model = imgzoo.create_model("resnet_cifar", depth=20).to(device).train()
    data, what = load_data(path, model.data_spec)
    standard = common.loader(data, batch_size, device, spec=model.data_spec, train=True, augment="standard")
    strong = common.loader(data, batch_size, device, spec=model.data_spec, train=True, augment="strong")
    train_step = bench_models.step_function(model, bench_models.Config("resnet_cifar", "train", "fp32", False),
                                            *next(iter(standard)))  # fmt: skip
    load, load_strong, train = (  # steps per second, each after an untimed warm-up step
        1 / bench_models.time_steps(step, seconds, device=device)
        for step in (batches(standard), batches(strong), train_step)
    )
    return {
        "data": what,
        "device": str(device),
        "batch_size": batch_size,
        "loader_images_per_sec": load * batch_size,
        "strong_loader_images_per_sec": load_strong * batch_size,
        "training_images_per_sec": train * batch_size,
        "ratio": load / train,
        "strong_ratio": load_strong / train,
    }
