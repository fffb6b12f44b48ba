"""Training on the CPU with glibc's malloc left alone, against fit's setting that keeps freed memory.

fit makes glibc keep the blocks a training step frees (imgzoo/_allocator.py says why). This
measures what that buys: each row trains a model for a few steps in a fresh interpreter, once with
``IMGZOO_CPU_ALLOCATOR=default`` (glibc as shipped) and once as fit runs, alternating pairs so that
load from other processes hits both alike. Reported per setting: the median images/s, the page
faults and the share of CPU time spent in the kernel a step, and peak resident memory.

Rows: resnet_cifar at batch 128 (fit's default) and basic_cnn as airbench94 trains it, at batch
1024, where every activation is a block of tens to hundreds of MB. Both channels_last, fp32 on a
CPU without native bf16. Linux with glibc only; elsewhere there is nothing to compare.

    python bench/bench_allocator.py [--reps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
import imgzoo
from imgzoo._allocator import keep_freed_memory

name, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kept = keep_freed_memory()  # as fit does on the CPU; IMGZOO_CPU_ALLOCATOR=default makes it a no-op
torch.manual_seed(0)
from imgzoo.recipes import get_recipe
recipe = get_recipe("basic_cnn.airbench") if name == "basic_cnn" else None
model = imgzoo.create_model(name, num_classes=10, **(recipe.model_kwargs if recipe else {}))
model = model.to(memory_format=torch.channels_last).train()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (batch,))

def step():
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

for _ in range(2):  # warm-up: oneDNN's kernels, and the allocator's first blocks
    step()
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
peak = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({
    "kept": kept,
    "images_per_sec": steps * batch / seconds,
    "page_faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
    "kernel_share": system / max(user + system, 1e-9),
    "peak_rss_mb": peak,
}))
"""

ROWS = (("resnet_cifar", 128, 24), ("basic_cnn", 1024, 3))  # model, batch, timed steps (about 10 s each here)
SETTINGS = ("glibc default", "kept (fit)")


def one(name: str, batch: int, steps: int, setting: str) -> dict:
    """One fresh interpreter's measurement under ``setting``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["IMGZOO_CPU_ALLOCATOR"] = "default" if setting == SETTINGS[0] else "fit"
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(batch), str(steps)], env=env, capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"{name} under {setting!r} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(reps: int = 3, rows: tuple[tuple[str, int, int], ...] = ROWS) -> dict:
    """Per row: each setting's medians over ``reps`` alternating pairs, and kept / default images/s."""
    results = {}
    for name, batch, steps in rows:
        runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
        for rep in range(reps):
            for setting in SETTINGS if rep % 2 == 0 else SETTINGS[::-1]:  # the first of a pair alternates
                runs[setting].append(one(name, batch, steps, setting))
        medians = {
            s: {key: statistics.median(r[key] for r in found) for key in found[0] if key != "kept"}
            for s, found in runs.items()
        }
        results[f"{name} batch {batch}"] = {
            **medians,
            "applied": all(r["kept"] for r in runs[SETTINGS[1]]),
            "speedup": medians[SETTINGS[1]]["images_per_sec"] / medians[SETTINGS[0]]["images_per_sec"],
            "images_per_sec_runs": {s: [round(r["images_per_sec"], 1) for r in found] for s, found in runs.items()},
        }
    return results


def lines(results: dict) -> list[str]:
    """The Markdown table docs/benchmarks.md shows."""
    out = [
        "| training | malloc | images/s | page faults / step | kernel share of CPU time | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for row, found in results.items():
        for setting in SETTINGS:
            m = found[setting]
            out.append(
                f"| {row} | {setting} | {m['images_per_sec']:.0f} | {m['page_faults_per_step']:,.0f} | "
                f"{m['kernel_share']:.1%} | {m['peak_rss_mb']:,.0f} MB |"
            )
        out.append(f"| {row} | **kept / default** | **{found['speedup']:.2f}x** | | | |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = measure(args.reps)
    print("\n".join(lines(results)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
