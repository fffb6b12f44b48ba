"""fit's end-to-end training throughput against a hand-written minimal loop, side by side.

Same model (resnet_cifar, depth 20), same synthetic 3x32x32 data, same batch size,
optimizer (SGD, Nesterov) and one-cycle schedule. Rows:

- minimal loop: what a user writes by hand (fp32, NCHW, no checks, no metrics);
- fit, same settings: fit with amp="fp32" and channels_last=False, so the ratio to the minimal
  loop is fit's own overhead (goal >= 0.90);
- fit defaults: amp="auto", channels_last="auto", what a user gets without choosing;
- fit bf16: amp="bf16" forced. On a CPU without native bf16 it runs at a tenth of fp32's speed,
  so it is timed once, on a quarter of the images, and says so.

Repetitions are interleaved so that load from other processes on a shared CPU hits all rows
alike; the median of each is reported, with ratios.

On a GPU (``--device cuda``, or ``auto`` where there is one) both loops train there, at batch 512;
give it more images (``--images 8192``), or an epoch is two steps.

    .venv/bin/python bench/bench_fit.py [--images 1024] [--epochs 2] [--reps 3] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import device_choice
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import imgzoo
from imgzoo._allocator import keep_freed_memory
from imgzoo._device import cpu_has_native_bf16, describe_machine

CPU = torch.device("cpu")


def minimal_loop(
    model: nn.Module, data: TensorDataset, epochs: int, batch_size: int, device: torch.device = CPU
) -> None:
    """What a user writes by hand: no progress bar, no metrics, no checks; each batch moved to ``device``."""
    model.to(device)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, pin_memory=device.type == "cuda")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def synthetic(images: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(images, 3, 32, 32, generator=g), torch.randint(0, 10, (images,), generator=g))


def timed_rate(run, model: nn.Module, data: TensorDataset, epochs: int, device: torch.device) -> float:
    """Images/s of ``run(model, data)``, the GPU's queue drained before the clock stops."""
    start = time.perf_counter()
    run(model, data)
    device_choice.sync(device)
    return epochs * len(data) / (time.perf_counter() - start)


def measure(
    images: int = 1024, epochs: int = 2, reps: int = 3, batch_size: int | None = None, device: torch.device = CPU
) -> dict:
    """Median images/s of each row on ``device``, and the ratios the goals are stated in.

    ``batch_size`` None: 128 on a CPU, 512 on a GPU (device_choice.BATCH).
    """
    batch_size = batch_size or device_choice.batch_size(32, device)
    data = synthetic(images)
    if device.type == "cpu":
        # fit's allocator setting is process-wide once made: made here, before the first row, every row (the
        # minimal loop too) runs under it, and the ratio measures fit's own overhead alone.
        keep_freed_memory()

    def fit(**options):
        return lambda m, d: imgzoo.fit(m, d, epochs=epochs, batch_size=batch_size, verbose=0, device=device, **options)

    runs = {
        "minimal loop": lambda m, d: minimal_loop(m, d, epochs, batch_size, device),
        "fit, same settings": fit(amp="fp32", channels_last=False),
        "fit defaults": fit(),
    }
    rates: dict[str, list[float]] = {name: [] for name in [*runs, "fit bf16"]}
    runs["minimal loop"](imgzoo.resnet_cifar(depth=20), data)  # warm-up: allocator, oneDNN or CUDA kernels
    for _ in range(reps):
        for name, run in runs.items():
            rates[name].append(timed_rate(run, imgzoo.resnet_cifar(depth=20), data, epochs, device))
    native = device.type == "cuda" or cpu_has_native_bf16()
    bf16_data = data if native else synthetic(max(batch_size, images // 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the slow-bf16 warning is what this row measures
        for _ in range(reps if native else 1):
            rates["fit bf16"].append(
                timed_rate(fit(amp="bf16"), imgzoo.resnet_cifar(depth=20), bf16_data, epochs, device)
            )
    median = {name: statistics.median(r) for name, r in rates.items()}
    return {
        "images_per_sec": median,
        "runs": rates,
        "fit_over_minimal": median["fit, same settings"] / median["minimal loop"],
        "defaults_over_minimal": median["fit defaults"] / median["minimal loop"],
        "bf16_over_fp32": median["fit bf16"] / median["fit, same settings"],
        "native_bf16": native,
        "device": str(device),
        "setup": f"resnet_cifar-20, {images} images x {epochs} epochs, batch {batch_size}, "
        f"{torch.get_num_threads()} threads, median of {reps} interleaved runs, on {device}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 on CPU, 512 on GPU")
    device_choice.add_option(parser)
    args = parser.parse_args()
    device = device_choice.from_args(parser, args)
    result = measure(args.images, args.epochs, args.reps, args.batch_size, device)
    print(f"machine: {describe_machine(device)}")
    print(result["setup"])
    for name, rate in result["images_per_sec"].items():
        runs = ", ".join(f"{r:.0f}" for r in result["runs"][name])
        print(f"  {name:<19} {rate:8.1f} img/s   (runs: {runs})")
    print(f"fit, same settings / minimal loop: {result['fit_over_minimal']:.3f}  (goal >= 0.90)")
    print(f"fit defaults / minimal loop:       {result['defaults_over_minimal']:.3f}")
    note = "" if result["native_bf16"] else "  (no native bf16: one run on a quarter of the images)"
    print(f"fit bf16 / fit fp32:               {result['bf16_over_fp32']:.3f}{note}")


if __name__ == "__main__":
    main()
