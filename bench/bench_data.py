"""Does data loading keep up with training? FastLoader batches/s against ResNet-20 training, in one run.

The target (issue 3): the fast path delivers augmented CIFAR-10 images at five times
or more the rate ResNet-20 (resnet_cifar, depth 20) trains on them, on the same
machine, so data never bottlenecks training. Both are measured here side by side,
with the same batch size, threads and device:

- loader: FastLoader(train=True, augment="standard"): shuffle, reflection pad-crop,
  flip, normalise, on a uint8 copy of the data set; and the same with augment="strong",
  whose TrivialAugmentWide and random erasing run image by image (reported, no target);
- training: a minimal loop of forward, cross-entropy, backward and an SGD step on
  batches already in memory, so it measures the model alone.

Usage (the CIFAR-10 folder tree train/<class>/*.jpg; synthetic uint8 data if absent):

    python bench/bench_data.py /work/cifar10-jpeg --seconds 10 [--device auto|cpu|cuda]

Both halves run on the GPU where there is one (``--device auto``), at batch 512 there.

The first run with real data decodes the 50,000 JPEGs once into the imgzoo cache;
later runs read the cache. Timings depend on what else runs on the machine:
compare the ratio, which both halves of one run share.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import device_choice
import torch
import torch.nn.functional as F

import imgzoo
from imgzoo import datasets
from imgzoo.data import loaders
from imgzoo.models.registry import CIFAR10


def load_data(path: str | None, cache_dir: str | None) -> tuple[datasets.TensorImages, str]:
    if path and Path(path).exists():
        start = time.perf_counter()
        data = loaders.decode(datasets.cifar10(path), CIFAR10, cache_dir=cache_dir)
        took = time.perf_counter() - start
        return data, f"{len(data)} CIFAR-10 images from {Path(path).name}/ (decoded or read from cache in {took:.1f} s)"
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50_000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, 10, (50_000,), generator=generator)
    note = f"no data at {path}; " if path else ""
    return datasets.TensorImages(images, targets, CIFAR10.class_names, spec=CIFAR10), f"{note}50000 synthetic images"


def loader_rate(loader: loaders.FastLoader, seconds: float) -> tuple[float, int]:
    """Batches per second over whole epochs' worth of batches until ``seconds`` have passed."""
    batches = iter(loader)
    for _ in range(3):  # warm-up
        next(batches)
    device_choice.sync(loader.device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        try:
            x, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        count += 1
    device_choice.sync(loader.device)
    return count / (time.perf_counter() - start), count


def training_rate(batch: tuple[torch.Tensor, torch.Tensor], seconds: float, device: torch.device) -> tuple[float, int]:
    """Training steps per second of ResNet-20 on one fixed batch (the model's cost alone)."""
    model = imgzoo.create_model("resnet_cifar", depth=20).to(device).train()
    # He et al. 2016, section 4.2: SGD, momentum 0.9, weight decay 1e-4, lr 0.1.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = batch

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up
        step()
    device_choice.sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    device_choice.sync(device)
    return count / (time.perf_counter() - start), count


def measure(
    path: str | None,
    seconds: float,
    batch_size: int | None = None,
    cache_dir: str | None = None,
    device: torch.device | None = None,
) -> dict:
    """FastLoader's augmented images/s and ResNet-20's training images/s, side by side, and their ratio.

    ``device`` None: the GPU where there is one. ``batch_size`` None: 128 on a CPU, 512 on a GPU.
    """
    device = device or device_choice.resolve("auto")
    batch_size = batch_size or device_choice.batch_size(32, device)
    data, what = load_data(path, cache_dir)
    loader = loaders.FastLoader(data, batch_size, train=True, augment="standard", device=device)
    load_bps, load_n = loader_rate(loader, seconds)
    strong = loaders.FastLoader(data, batch_size, train=True, augment="strong", device=device)
    strong_bps, strong_n = loader_rate(strong, seconds)
    train_sps, train_n = training_rate(next(iter(loader)), seconds, device)
    return {
        "data": what,
        "device": str(device),
        "batch_size": batch_size,
        "loader_images_per_sec": load_bps * batch_size,
        "loader_batches": load_n,
        "strong_loader_images_per_sec": strong_bps * batch_size,
        "strong_loader_batches": strong_n,
        "strong_ratio": strong_bps / train_sps,
        "training_images_per_sec": train_sps * batch_size,
        "training_steps": train_n,
        "ratio": load_bps / train_sps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", help="CIFAR-10 root (batches or train/<class>/ tree); synthetic if absent")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="both halves; default 128 as in He et al. 2016 on CPU, 512 on GPU"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per half")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cache-dir", default=None, help="decoded-data cache (default: $IMGZOO_CACHE or ~/.cache)")
    device_choice.add_option(parser)
    args = parser.parse_args()
    device = device_choice.from_args(parser, args)

    torch.set_num_threads(args.threads)
    result = measure(args.data, args.seconds, args.batch_size, args.cache_dir, device)
    print(f"data: {result['data']}")
    print(
        f"device {result['device']}, {args.threads} threads, batch size {result['batch_size']}, cpus {os.cpu_count()}"
    )
    loader, training = result["loader_images_per_sec"], result["training_images_per_sec"]
    print(f"FastLoader, standard augment: {loader:9.0f} images/s ({result['loader_batches']} batches)")
    strong = result["strong_loader_images_per_sec"]
    print(f"FastLoader, strong augment:   {strong:9.0f} images/s ({result['strong_loader_batches']} batches)")
    print(f"ResNet-20 fwd+bwd+SGD step:   {training:9.0f} images/s ({result['training_steps']} steps)")
    ratio = result["ratio"]
    print(f"ratio loader / training: {ratio:.1f}x (target >= 5x): {'PASS' if ratio >= 5 else 'FAIL'}")
    print(f"ratio strong loader / training: {result['strong_ratio']:.1f}x")


if __name__ == "__main__":
    main()
