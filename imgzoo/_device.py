"""The one device and precision rule that fit, evaluate, predict and the loaders share.

``amp="auto"`` takes bf16 on a CPU only where the hardware computes it: bench/run.py --only fit (ResNet-20, batch
128) measured bf16 at 1.97x fp32's images/s on an Intel Xeon with AMX, and at 0.10x on an AMD EPYC with AVX2 only
(docs/notes.md, "bf16 on a CPU", has a Xeon with AVX512-BF16 but no AMX, where it ran at 0.95x).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import warnings
from pathlib import Path

import torch

# amp=: False/"fp32" full precision, True/"auto" the fastest safe choice for the device, or a dtype by name.
AMP_CHOICES = (False, True, "auto", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA, then Apple's MPS, then the CPU; anything else is taken as named, refused
    before a model is moved if this machine lacks it, or if it is ``meta`` (no data: the weights would be lost)."""
    if device is not None and device != "auto":
        try:
            named = device if isinstance(device, torch.device) else torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {device!r} ({exc})"
            ) from None
        present = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available, "meta": lambda: False}
        if not present.get(named.type, lambda: True)():
            raise ValueError(
                f"device {str(named)!r} is not one this machine can compute on (the meta device holds no data); "
                "pass 'auto' for the best one present, or 'cpu'"
            )
        return named
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX), so bf16 autocast pays off."""
    if hasattr(torch.cpu, "get_capabilities"):  # torch >= 2.8
        found = torch.cpu.get_capabilities()
        return bool(found.get("avx512_bf16") or found.get("amx_bf16"))
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probes):
        return any(probe() for probe in probes if probe is not None)
    return bool(_cpuinfo_flags() & {"avx512_bf16", "amx_bf16"})


def _cpuinfo_flags() -> set[str]:
    return {flag for line in _cpuinfo_lines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, None for full precision: "auto" and True take bf16 where it is
    native, fp16 on older GPUs (True only), fp32 elsewhere; "bf16" on a CPU without native bf16 warns."""
    if not (isinstance(amp, bool) or (isinstance(amp, str) and amp in AMP_CHOICES)):
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if amp is False or amp == "fp32":
        return None
    if amp == "auto" or amp is True:
        if (device.type == "cuda" and torch.cuda.is_bf16_supported()) or (
            device.type == "cpu" and cpu_has_native_bf16()
        ):
            return torch.bfloat16
        return torch.float16 if amp is True and device.type == "cuda" else None
    if amp == "fp16" and device.type == "cpu":
        raise ValueError("amp='fp16' needs a GPU; on CPU use amp='auto' (bf16 where the CPU computes it natively)")
    if amp == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        _warn_slow_bf16()
    return torch.bfloat16 if amp == "bf16" else torch.float16


def use_channels_last(choice: bool | str, device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether to train in channels_last (NHWC); "auto": on CPUs, whose oneDNN convolutions run NHWC natively
    (ResNet-20 training +16% on an AVX2 CPU), and on GPUs under fp16/bf16 (tensor cores)."""
    if choice != "auto":
        return bool(choice)
    return device.type == "cpu" or (device.type == "cuda" and dtype is not None)


@functools.cache  # once per process
def _warn_slow_bf16() -> None:
    warnings.warn(
        "amp='bf16' on a CPU without native bf16 (no AVX512-BF16 or AMX): expect it to run far slower than fp32 "
        "(0.09x measured on an AVX2-only AMD EPYC). Use amp='auto' to pick the faster precision for this machine.",
        RuntimeWarning,
        stacklevel=3,
    )


def describe_machine(device: torch.device | None = None) -> dict[str, object]:
    """What a reported figure was measured on: CPU model, cores, vector capability, native bf16, torch, GPU."""
    device = device or resolve_device("auto")
    info: dict[str, object] = {"cpu": _cpu_model(), "cores": os.cpu_count(),
                               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                               "native_bf16": cpu_has_native_bf16(), "torch": torch.__version__}  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_model() -> str:
    names = [line.split(":", 1)[1].strip() for line in _cpuinfo_lines() if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def _cpuinfo_lines() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass, or nothing when ``dtype`` is None (full fp32)."""
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
