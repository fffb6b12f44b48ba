"""Training on the CPU keeps the memory it frees: no page faults for blocks freed and taken again, and the memory
goes back to the system once fit ends. Each measurement runs in a fresh interpreter, because the setting is
process-wide and stays once made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _fit_worker import FIT_OPTIONS, make_data, make_model

import imgzoo.evaluation
import imgzoo.training
from imgzoo import _allocator
from imgzoo.evaluation import evaluate
from imgzoo.training import fit

ALLOCATOR_FILE = Path(_allocator.__file__)
GLIBC = _allocator._glibc() is not None
needs_glibc = pytest.mark.skipif(not GLIBC, reason="tunes glibc's malloc; this C library is not glibc")

BLOCK = 64 << 20  # above glibc's largest automatic mmap threshold (32 MiB): served by mmap unless tuned
PAGES = BLOCK // 4096

# Loads the module by its path, so the child measures without importing torch; prints what it saw as JSON.
CHILD = """
import ctypes, importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = int(sys.argv[2])

def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

class MallInfo2(ctypes.Structure):  # glibc >= 2.33
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]

def mapped_bytes():  # bytes glibc holds in blocks mapped on their own (None where it cannot say)
    if not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2().hblkhd

def take_and_free():
    before = mapped_bytes()
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)  # touch every page, as a step writes its activations
    held = None if before is None else mapped_bytes() - before  # how much of it glibc mapped on its own
    libc.free(block)
    return held

applied = allocator.keep_freed_memory()
mapped_while_held = take_and_free()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    take_and_free()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
kept = resident()
allocator.release_freed_memory()
print(json.dumps({"applied": applied, "faults": faults, "kept": kept, "released": resident(),
                  "mapped_while_held": mapped_while_held}))
"""


def _measure(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != _allocator.OPT_OUT}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ALLOCATOR_FILE), str(BLOCK)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@needs_glibc
def test_freed_blocks_are_reused_without_page_faults():
    default = _measure(**{_allocator.OPT_OUT: "default"})
    tuned = _measure()
    assert default["applied"] is False and tuned["applied"] is True
    if default["mapped_while_held"] is not None:  # glibc >= 2.33 says where a block came from
        # Left alone, glibc maps a 64 MiB block on its own, to unmap it on free; kept, it comes from the heap.
        assert default["mapped_while_held"] >= BLOCK and tuned["mapped_while_held"] == 0
    # Taken and freed four more times, a kept block is already in place: almost no page faults. (Left alone, the
    # count is four blocks' pages with 4 KiB pages; fewer where transparent huge pages are always on.)
    assert default["faults"] > 10 * tuned["faults"]
    assert tuned["faults"] < PAGES / 10


@needs_glibc
def test_the_kept_memory_goes_back_to_the_system_when_released():
    tuned = _measure()
    assert tuned["kept"] - tuned["released"] >= BLOCK * 0.9


@needs_glibc
@pytest.mark.parametrize(
    "env",
    [{"MALLOC_MMAP_THRESHOLD_": "131072"}, {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}],
    ids=["malloc-env", "glibc-tunables"],
)
def test_a_users_own_malloc_settings_are_left_alone(env):
    assert _measure(**env)["applied"] is False


@pytest.mark.parametrize(
    ("env", "left"),
    [
        ({_allocator.OPT_OUT: "default"}, True),
        ({_allocator.OPT_OUT: " Default "}, True),
        ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, True),
        ({"MALLOC_TRIM_THRESHOLD_": "0"}, True),
        ({_allocator.OPT_OUT: "tuned"}, False),
        ({}, False),
    ],
)
def test_who_decides(monkeypatch, env, left):
    for name in (_allocator.OPT_OUT, "LD_PRELOAD", "GLIBC_TUNABLES", *_allocator._USER_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _allocator._left_to_user() is left


def test_fit_on_the_cpu_keeps_freed_memory_while_training_and_releases_it_after(monkeypatch):
    calls = []
    monkeypatch.setattr(imgzoo.training, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(imgzoo.training, "release_freed_memory", lambda: calls.append("release"))
    train, _ = make_data(n=32)
    fit(make_model(), train, epochs=1, device="cpu", **FIT_OPTIONS)
    assert calls == ["keep", "release"]


def test_evaluate_on_the_cpu_keeps_freed_memory_for_its_pass_and_releases_it_even_when_it_fails(monkeypatch):
    calls = []
    monkeypatch.setattr(imgzoo.evaluation, "keep_freed_memory", lambda: calls.append("keep"))
    monkeypatch.setattr(imgzoo.evaluation, "release_freed_memory", lambda: calls.append("release"))
    _, val = make_data(n=32)
    assert evaluate(make_model(), val, device="cpu").num_samples == len(val)
    assert calls == ["keep", "release"]
    monkeypatch.setattr(imgzoo.evaluation, "eval_sums", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        evaluate(make_model(), val, device="cpu")
    assert calls == ["keep", "release"] * 2
