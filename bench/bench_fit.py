"""fit's end-to-end training throughput against a hand-written minimal loop, side by side.

The same ResNet-20, synthetic data, batch, optimizer and one-cycle schedule, trained by the minimal loop (fp32,
NCHW), fit with amp="fp32" and channels_last=False (its overhead, goal >= 0.90), fit's defaults (goal: never
slower than fit in fp32 NCHW) and fit in bf16 (emulated: a tenth of fp32's speed, so timed once, on a quarter of
the images, after the others). Repetitions are interleaved, and each ratio is the median of the two rows' ratios
within a repetition: the machine's speed drifts over minutes, and neighbouring runs share it (the 2-core Xeon's
stored run reads fit / minimal loop as 0.96 from the medians, 0.99 from the pairs).
"""

from __future__ import annotations

import statistics
import time
import warnings

import common
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import imgzoo


def minimal_loop(model: nn.Module, data: TensorDataset, epochs: int, batch_size: int,
                 device: torch.device = common.CPU) -> None:  # fmt: skip
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
    common.sync(device)
    return epochs * len(data) / (time.perf_counter() - start)


def measure(images: int = 1024, epochs: int = 2, reps: int = 3, device: torch.device = common.CPU) -> dict:
    """Median images/s of each row on ``device``, each row's runs, and the ratios the goals are stated in."""
    batch_size = common.batch_size(32, device)
    data = synthetic(images)

    def fit(**options):
        return lambda m, d: imgzoo.fit(m, d, epochs=epochs, batch_size=batch_size, verbose=0, device=device, **options)

    native = common.native_bf16(device)
    runs = {
        "minimal loop": lambda m, d: minimal_loop(m, d, epochs, batch_size, device),
        "fit, same settings": fit(amp="fp32", channels_last=False),
        "fit defaults": fit(),
        **({"fit bf16": fit(amp="bf16")} if native else {}),  # emulated, it runs once, after the others
    }
    rates: dict[str, list[float]] = {name: [] for name in [*runs, "fit bf16"]}
    runs["minimal loop"](imgzoo.resnet_cifar(depth=20), data)  # warm-up: allocator, oneDNN or CUDA kernels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the slow-bf16 warning is what the emulated row measures
        for _ in range(reps):
            for name, run in runs.items():
                rates[name].append(timed_rate(run, imgzoo.resnet_cifar(depth=20), data, epochs, device))
        if not native:
            quarter, model = synthetic(max(batch_size, images // 4)), imgzoo.resnet_cifar(depth=20)
            rates["fit bf16"].append(timed_rate(fit(amp="bf16"), model, quarter, epochs, device))
    return {
        "images_per_sec": {name: statistics.median(r) for name, r in rates.items()},
        "runs": rates,
        **ratios(rates),
        "native_bf16": native,
        "setup": f"resnet_cifar-20, {images} images x {epochs} epochs, batch {batch_size}, "
        f"{torch.get_num_threads()} threads, median of {reps} interleaved runs, on {device}",
    }


def ratios(rates: dict[str, list[float]]) -> dict[str, float]:
    """The ratios the goals are stated in, from each row's runs in the order of the repetitions."""
    fp32, minimal, defaults = rates["fit, same settings"], rates["minimal loop"], rates["fit defaults"]
    return {
        "fit_over_minimal": common.paired_ratio(fp32, minimal),
        "defaults_over_minimal": common.paired_ratio(defaults, minimal),
        "defaults_over_fp32": common.paired_ratio(defaults, fp32),
        "bf16_over_fp32": common.paired_ratio(rates["fit bf16"], fp32),  # emulated bf16 runs once: the medians
    }
