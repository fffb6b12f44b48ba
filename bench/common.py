"""What every benchmark shares: the device, the machine it reports, the batch sizes, the one loader.

Apple's MPS is not offered: the timers here synchronise CUDA only.
"""

from __future__ import annotations

import re
import statistics

import torch

import imgzoo
from imgzoo._device import cpu_has_native_bf16, describe_machine

CHOICES = ("auto", "cpu", "cuda")
CPU = torch.device("cpu")

# Batch sizes by image side. On a CPU a step must stay short (a --quick timing window is 0.5 s);
# on a GPU a small batch measures kernel launches rather than the model, so it gets four times more.
BATCH = {"cpu": {"small": 128, "large": 16}, "cuda": {"small": 512, "large": 64}}
SMALL_SIDE = 32  # CIFAR-10 and MNIST; larger inputs (dogbreed_transfer's 224 px) get the "large" batch


def resolve(name: str) -> torch.device:
    """The device ``name`` (one of CHOICES) stands for here; ValueError when it is not available, rather than
    measuring the CPU and reporting it as a GPU run."""
    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise ValueError(
            f"--device cuda was asked for, but torch {torch.__version__} sees no CUDA device here "
            f"(torch.cuda.is_available() is False); available: cpu. Run with --device cpu or --device auto."
        )
    return torch.device(("cuda" if cuda else "cpu") if name == "auto" else name)


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_size(side: int, device: torch.device) -> int:
    """The benchmarks' batch for images ``side`` pixels high on ``device``."""
    return BATCH["cuda" if device.type == "cuda" else "cpu"]["small" if side <= SMALL_SIDE else "large"]


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware; elsewhere bf16 runs at a tenth of fp32's speed or less (0.09x,
    fit on a 2-core AMD EPYC)."""
    return torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()


def describe(device: torch.device) -> dict:
    """What the figures were measured on: imgzoo's describe_machine, the threads, the device and the GPU's memory."""
    info = describe_machine(device) | {"threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory
        info.update(cuda=torch.version.cuda, gpu_memory_gib=round(memory / 2**30, 1))
    elif torch.cuda.is_available():  # --device cpu on a machine with a GPU: the table must not say "none"
        info["gpu"] = f"{torch.cuda.get_device_name()} (not used: --device cpu)"
    return info


def kind(machine: dict) -> str:
    """The kind of machine a results file stands for, as its name says it: cpu-avx2, cpu-avx512-bf16, gpu-....

    Runs on one kind answer the goals alike (bf16 is 1.5x to 3x fp32 where native, a tenth where not), so
    bench/ keeps the newest run of each kind, and a new run replaces only its own kind's file.
    """
    if machine.get("device", "cpu").startswith("cuda"):
        return "gpu-" + re.sub(r"[^a-z0-9]+", "-", machine.get("gpu", "unknown").lower()).strip("-")
    return f"cpu-{machine['cpu_capability'].lower()}" + ("-bf16" if machine["native_bf16"] else "")


def paired_ratio(top: list[float], bottom: list[float]) -> float:
    """The median of the ratios of rates timed in the same repetition, not the ratio of the medians: the machine's
    speed drifts over minutes, and neighbouring runs share it. The ratio of the medians where the counts differ."""
    if len(top) != len(bottom):
        return statistics.median(top) / statistics.median(bottom)
    return statistics.median(a / b for a, b in zip(top, bottom, strict=True))


def loader(data, batch_size: int, device: torch.device, **options) -> imgzoo.loaders.FastLoader:
    """The library's loader, the one place the benchmarks build it: ``options`` are FastLoader's keywords."""
    return imgzoo.loaders.FastLoader(data, batch_size, device=device, **options)


def warm_up(device: torch.device) -> None:
    """Start CUDA's libraries (context, cuBLAS, cuDNN) before a timed race, as airbench94 warms up too: they take
    seconds to load, more than a whole race against airbench94's 3.29 s. Nothing to do on a CPU."""
    if device.type != "cuda":
        return
    layer = torch.nn.Conv2d(3, 8, 3, padding=1).to(device)
    x = torch.randn(8, 3, 32, 32, device=device)
    for dtype in (torch.float32, torch.bfloat16):  # recipes' amp="auto" is bf16 on a GPU
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            layer(x).flatten(1).matmul(torch.randn(8 * 32 * 32, 10, device=device)).sum().backward()
    sync(device)
