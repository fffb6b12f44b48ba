"""The one device and precision rule that fit, evaluate, predict, the plots and the loaders share.

``resolve_device("auto")`` picks CUDA, then Apple's MPS, then the CPU, everywhere in imgzoo:
a model trained by ``fit`` and the FastLoader feeding it land on the same device without the
user naming it. ``amp_dtype`` turns fit's ``amp=`` option into an autocast dtype.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["amp_dtype", "autocast", "resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA, then Apple's MPS, then the CPU; anything else is taken as named."""
    if isinstance(device, torch.device):
        return device
    if device is not None and device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``; None for full precision."""
    if not amp:
        return None
    if amp is True:
        if device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float16
    if amp == "fp16" and device.type == "cpu":
        raise ValueError("fit: amp='fp16' needs a GPU; on CPU use amp='bf16' (or amp=True)")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass, or nothing when ``dtype`` is None (full fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
