"""What every benchmark shares: the device, the machine it reports, the batch sizes, the one loader.

``--device auto`` (the default) takes the GPU where PyTorch sees one and the CPU elsewhere, so one
command measures the machine it runs on. ``--device cuda`` on a machine without CUDA stops before
anything is measured, naming what was asked for and what is there, rather than measuring the CPU and
reporting it as a GPU run. Apple's MPS is not offered: the timers here synchronise CUDA only.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import torch

import imgzoo

CHOICES = ("auto", "cpu", "cuda")

# Batch sizes by image side. On a CPU a step must stay short (a --quick timing window is 0.5 s);
# on a GPU a small batch measures kernel launches rather than the model, so it gets four times more.
BATCH = {"cpu": {"small": 128, "large": 16}, "cuda": {"small": 512, "large": 64}}
SMALL_SIDE = 32  # CIFAR-10 and MNIST; larger inputs (dogbreed_transfer's 224 px) get the "large" batch


def resolve(name: str) -> torch.device:
    """The device ``name`` stands for here; ValueError when it is not available."""
    if name not in CHOICES:
        raise ValueError(f"--device takes one of {', '.join(CHOICES)}; got {name!r}")
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
    """Whether ``device`` computes bf16 in hardware: a GPU that supports it, a CPU with AVX512-BF16 or AMX.

    Elsewhere bf16 is emulated and runs at a tenth of fp32's speed or less (0.09x, fit on a 2-core AMD EPYC).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    found = torch.cpu.get_capabilities()
    return bool(found.get("avx512_bf16") or found.get("amx_bf16"))


def describe(device: torch.device) -> dict:
    """What the figures were measured on: CPU, vector capability, native bf16, torch, threads, the GPU."""
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    info = {"cpu": names[0] if names else platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16(torch.device("cpu")),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device)}  # fmt: skip
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1))  # fmt: skip
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


def loader(data, batch_size: int, device: torch.device, **options) -> imgzoo.loaders.FastLoader:
    """The library's loader, the one place the benchmarks build it: ``options`` are FastLoader's keywords."""
    return imgzoo.loaders.FastLoader(data, batch_size, device=device, **options)


def warm_up(device: torch.device) -> None:
    """Start CUDA's libraries (context, cuBLAS, cuDNN) before a timed race, as airbench94 warms up too.

    The first convolution and matmul on a GPU load their libraries, which takes seconds: more than
    a whole race against airbench94's 3.29 s. Nothing to do on a CPU.
    """
    if device.type != "cuda":
        return
    layer = torch.nn.Conv2d(3, 8, 3, padding=1).to(device)
    x = torch.randn(8, 3, 32, 32, device=device)
    for dtype in (torch.float32, torch.bfloat16):  # recipes' amp="auto" is bf16 on a GPU
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            layer(x).flatten(1).matmul(torch.randn(8 * 32 * 32, 10, device=device)).sum().backward()
    sync(device)
