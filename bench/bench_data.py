"""Does data loading keep up with training? The loader's images/s against ResNet-20 training, in one run.

The goal: the loader delivers augmented CIFAR-10 images at five times or more the rate ResNet-20
(resnet_cifar, depth 20) trains on them, on the same machine, so data never bottlenecks training. Both
are measured side by side, with the same batch size, threads and device:

- loader: train=True, augment="standard" (shuffle, reflection pad-crop, flip, normalise on a uint8 copy of
  the data set); and augment="strong", whose TrivialAugmentWide and random erasing run image by image
  (reported, no goal);
- training: forward, cross-entropy, backward and an SGD step on one batch already in memory: the model alone.

With a CIFAR-10 tree (train/<class>/*.jpg) the first run decodes the 50,000 JPEGs once into imgzoo's
cache, outside the timed windows; without one, 50,000 synthetic uint8 images.
"""

from __future__ import annotations

import time
from pathlib import Path

import common
import torch
import torch.nn.functional as F

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


def rate(step, seconds: float, device: torch.device, warm_up: int = 2) -> float:
    """Calls of ``step`` per second over ``seconds``, after ``warm_up`` untimed ones."""
    for _ in range(warm_up):
        step()
    common.sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    common.sync(device)
    return count / (time.perf_counter() - start)


def batches(loader):
    """A step that takes the loader's next batch, starting a new epoch when one ends."""
    state = {"it": iter(loader)}

    def step() -> None:
        try:
            next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)

    return step


def training(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
    """A step of ResNet-20 training on one fixed batch (the model's cost alone)."""
    # He et al. 2016, section 4.2: SGD, momentum 0.9, weight decay 1e-4, lr 0.1.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = batch

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(path: str | None, seconds: float, device: torch.device) -> dict:
    """The loader's augmented images/s (standard and strong) and ResNet-20's training images/s, and ratios."""
    batch_size = common.batch_size(32, device)
    model = imgzoo.create_model("resnet_cifar", depth=20).to(device).train()
    data, what = load_data(path, model.data_spec)
    standard = common.loader(data, batch_size, device, spec=model.data_spec, train=True, augment="standard")
    strong = common.loader(data, batch_size, device, spec=model.data_spec, train=True, augment="strong")
    load = rate(batches(standard), seconds, device, warm_up=3)
    load_strong = rate(batches(strong), seconds, device, warm_up=3)
    train = rate(training(model, next(iter(standard))), seconds, device)
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
