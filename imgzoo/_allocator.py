"""Training on the CPU keeps the memory it frees, instead of handing it back to the kernel every step.

Why: glibc's malloc serves each block above its mmap threshold (128 KiB, raised by itself to at most
32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` on free. A training step allocates its
activations and gradients anew, so every step the kernel maps, zeroes and faults in those pages again.
basic_cnn at batch 1024 (airbench94's network and batch) took 690,000 page faults a step, with 16% of
the CPU time in the kernel. With blocks up to 1 GiB kept in the heap and the heap never trimmed, 1% of
the faults remained and training ran 1.14x faster (139/155/140 against 159/177/142 images/s);
resnet_cifar at batch 128, whose blocks are 8x smaller, lost 2.4% of its CPU time to the kernel and ran
1.05x faster. Both from bench/bench_allocator.py: alternating pairs of fresh processes, 2-core AMD EPYC,
AVX2, torch 2.14.1, fp32, channels_last; the next full run of it read 1.41x and 1.10x. Inference faults
the same way: basic_cnn at evaluate's batch of 256 ran at 224 and 241 against 269 and 260 images/s (two
alternating pairs of forward passes in fresh processes, same machine; a one-off measurement, not part of
bench/), so evaluate makes the same setting.

PyTorch's performance tuning guide gives the same advice for the same reason by preloading jemalloc
or tcmalloc; ``mallopt`` gets glibc's share of it from inside the process, with no preload.

The cost: what a step frees stays with the process while training runs (peak resident memory at
batch 1024 went from 2,353 to 2,718 MB), so fit and evaluate hand it back when they return
(``malloc_trim``). The setting is process-wide and stays once made: set ``IMGZOO_CPU_ALLOCATOR=default`` to leave
glibc as it is. A user's own ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
``GLIBC_TUNABLES`` malloc setting, or an allocator in ``LD_PRELOAD``, is respected the same way.
Elsewhere than glibc (macOS, Windows, musl) nothing is done.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

__all__ = ["keep_freed_memory", "release_freed_memory"]

OPT_OUT = "IMGZOO_CPU_ALLOCATOR"  # set to "default" to leave glibc's malloc untouched
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")

# mallopt's parameter numbers (glibc's malloc.h) and the values set.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BELOW = 1 << 30  # blocks up to 1 GiB come from the heap: basic_cnn's largest at batch 1024 is 256 MiB
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int; the heap is trimmed by release_freed_memory instead

_lock = threading.Lock()
_applied: bool | None = None  # None: not decided yet in this process


def _glibc() -> ctypes.CDLL | None:
    """The process's C library where it is glibc (the one whose malloc this tunes); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None  # musl and others: their allocators have neither the problem's cause nor these knobs
    return libc


def _left_to_user() -> bool:
    """True where the user opted out, tuned glibc's malloc themselves, or preloaded another allocator."""
    if os.environ.get(OPT_OUT, "").strip().lower() == "default":
        return True
    if any(name in os.environ for name in _USER_SETTINGS):
        return True
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # jemalloc or tcmalloc serves malloc, not glibc
        return True
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """Keep freed blocks up to 1 GiB in the process (glibc only; once per process); True where it is in force.

    fit calls this before training on the CPU, evaluate before its pass. The reasons and the measurement are
    in this module's docstring.
    """
    global _applied
    with _lock:
        if _applied is None:
            libc = None if _left_to_user() else _glibc()
            _applied = (
                libc is not None
                and libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(_KEEP_BELOW)) == 1
                and libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(_NEVER_TRIM)) == 1
            )
        return _applied


def release_freed_memory() -> None:
    """Hand the memory freed during training back to the kernel, where :func:`keep_freed_memory` kept it."""
    with _lock:
        libc = _glibc() if _applied else None
        if libc is not None:
            libc.malloc_trim(ctypes.c_size_t(0))
