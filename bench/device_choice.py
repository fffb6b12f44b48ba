"""Which device the benchmarks measure on, and the per-device settings every benchmark shares.

``--device auto`` (the default) takes the GPU where PyTorch sees one and the CPU elsewhere, so
one command measures the machine it runs on. ``--device cuda`` on a machine without CUDA stops
before anything is measured, naming what was asked for and what is there, rather than measuring
the CPU and reporting it as a GPU run. Apple's MPS is not offered: the timers here synchronise
CUDA only.
"""

from __future__ import annotations

import argparse

import torch

from imgzoo._device import autocast

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
    if name == "auto":
        return torch.device("cuda" if cuda else "cpu")
    return torch.device(name)


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        choices=CHOICES,
        help="auto (default): cuda where PyTorch sees a GPU, else cpu",
    )


def from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> torch.device:
    """The device the command line asks for; an unavailable one ends the command (exit status 2)."""
    try:
        return resolve(args.device)
    except ValueError as error:
        parser.error(str(error))
        raise  # parser.error exits; this line only tells type checkers so


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_size(side: int, device: torch.device) -> int:
    """The benchmarks' batch for images ``side`` pixels high on ``device``."""
    sizes = BATCH["cuda" if device.type == "cuda" else "cpu"]
    return sizes["small" if side <= SMALL_SIDE else "large"]


def warm_up(device: torch.device) -> None:
    """Start CUDA's libraries (context, cuBLAS, cuDNN) before a timed race, as airbench94 warms up too.

    The first convolution and matmul on a GPU load their libraries, which takes seconds: more than
    a whole race against airbench94's 3.29 s. Nothing to do on a CPU.
    """
    if device.type != "cuda":
        return
    layer = torch.nn.Conv2d(3, 8, 3, padding=1).to(device)
    x = torch.randn(8, 3, 32, 32, device=device)
    for dtype in (None, torch.bfloat16):  # fp32 and bf16 kernels: recipes' amp="auto" is bf16 on a GPU
        with autocast(device, dtype):
            layer(x).flatten(1).matmul(torch.randn(8 * 32 * 32, 10, device=device)).sum().backward()
    sync(device)
