"""What fit(compile=True) buys: a model eager against torch.compile, side by side, as fractions of the peak.

resnet_cifar's training step (forward, backward, Nesterov SGD) and its inference as evaluate runs it
(batch norm folded), in channels_last, in fp32 and in the precision amp="auto" picks here, each
timed eager and compiled in alternating windows, so that load from other processes hits both alike.
A matmul probe before and after each window (bench_models.matmul_peak) turns images/s into a
fraction of this machine's fp32 peak, the figure the model-speed goals are stated in. The
compilation itself (Inductor's first call, which also builds its C++ kernels, in a fresh cache
folder unless TORCHINDUCTOR_CACHE_DIR is set) is timed apart: it is what a run pays once for the
faster steps.

    python bench/bench_compile.py [--model resnet_cifar] [--reps 5] [--seconds 4] [--json out.json] [--profile]

Runs on the CPU only: it answers whether the CPU training goal (resnet_cifar >= 55% of the peak)
is within reach of compilation where eager PyTorch, imgzoo's or a plain ResNet-20, falls short.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# A fresh Inductor cache, set before torch is imported: with the user's warm cache the "compilation" column
# read 2 s for a training step that took 45 s to compile cold (same machine, the run before).
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="imgzoo-bench-inductor-"))

import bench_models  # noqa: E402
import torch  # noqa: E402

from imgzoo._device import amp_dtype, describe_machine  # noqa: E402

CPU = torch.device("cpu")


@dataclass
class Pair:
    mode: str  # "train" or "evaluate"
    amp: str  # "fp32" or what amp="auto" picks here ("bf16" on a CPU with native bf16)
    compile_seconds: float = 0.0  # the compiled step's first call, less the eager step's first call
    eager: list[float] = field(default_factory=list)  # images/s of each window, eager
    compiled: list[float] = field(default_factory=list)  # the same, compiled
    eager_of_peak: list[float] = field(default_factory=list)  # each window as a fraction of the higher probe around it
    compiled_of_peak: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        eager, compiled = statistics.median(self.eager), statistics.median(self.compiled)
        return {
            "mode": self.mode,
            "amp": self.amp,
            "eager_images_per_sec": eager,
            "compiled_images_per_sec": compiled,
            "compiled_over_eager": compiled / eager,
            "eager_of_peak": statistics.median(self.eager_of_peak),
            "compiled_of_peak": statistics.median(self.compiled_of_peak),
            "compile_seconds": self.compile_seconds,
            "windows": len(self.eager),
        }


def steps(model_name: str, mode: str, amp: str) -> tuple[dict[bool, Callable[[], None]], int, float, float]:
    """The eager and the compiled step (keyed by compiled), the batch size, FLOPs per image, and the compile time."""
    model, shape, batch_size = bench_models.build(model_name)
    per_image = bench_models.flops_per_image(model, shape, mode == "train")
    cfg = bench_models.Config(model_name, mode, amp, channels_last=True)
    found, first = {}, {}
    for compiled in (False, True):
        net, _, _ = bench_models.build(model_name)
        net.load_state_dict(model.state_dict())
        if mode == "evaluate":
            net = bench_models.folded(model_name, net)
        net = net.to(memory_format=torch.channels_last)
        batch = torch.randn(batch_size, *shape).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, 10, (batch_size,))
        runner = torch.compile(net) if compiled else net
        step = bench_models.step_function(runner, cfg, batch, labels)  # sets train or eval mode itself
        start = time.perf_counter()
        step()
        first[compiled] = time.perf_counter() - start
        found[compiled] = step
    return found, batch_size, per_image, first[True] - first[False]


def measure(model_name: str, mode: str, amp: str, reps: int, seconds: float) -> Pair:
    """``reps`` windows each of the eager and the compiled step, the first of each pair alternating."""
    step, batch_size, per_image, compile_seconds = steps(model_name, mode, amp)
    pair = Pair(mode, amp, compile_seconds=compile_seconds)
    before = bench_models.matmul_peak(seconds=min(1.0, seconds / 2))
    for rep in range(reps):
        for compiled in (False, True) if rep % 2 == 0 else (True, False):
            rate = batch_size / bench_models.time_steps(step[compiled], seconds)
            after = bench_models.matmul_peak(seconds=min(1.0, seconds / 2))
            (pair.compiled if compiled else pair.eager).append(rate)
            (pair.compiled_of_peak if compiled else pair.eager_of_peak).append(rate * per_image / max(before, after))
            before = after
    return pair


def profile_table(step: Callable[[], None], steps: int = 5, rows: int = 12) -> str:
    """torch.profiler's operators by self CPU time over ``steps`` steps, after one untimed step."""
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet_cifar")
    parser.add_argument("--reps", type=int, default=5, help="windows of each, eager and compiled")
    parser.add_argument("--seconds", type=float, default=4.0, help="each timing window")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--profile", action="store_true", help="then print torch.profiler's top operators of 5 training steps, each way"
    )
    args = parser.parse_args()
    auto = "bf16" if amp_dtype("auto", CPU) is torch.bfloat16 else "fp32"
    amps = ["fp32", *(["bf16"] if auto == "bf16" else [])]
    machine = describe_machine(CPU)
    print(f"machine: {machine}, {torch.get_num_threads()} threads; {args.model}, channels_last")
    print("| mode | amp | eager images/s | compiled images/s | compiled / eager | eager of peak | compiled of peak | "
          "compilation |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for mode in ("train", "evaluate"):
        for amp in amps:
            row = measure(args.model, mode, amp, args.reps, args.seconds).summary()
            rows.append(row)
            print(f"| {mode} | {amp} | {row['eager_images_per_sec']:,.0f} | {row['compiled_images_per_sec']:,.0f} | "
                  f"{row['compiled_over_eager']:.2f}x | {row['eager_of_peak']:.0%} | {row['compiled_of_peak']:.0%} | "
                  f"{row['compile_seconds']:.0f} s |", flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "model": args.model, "rows": rows, "pairs": "alternating"}, f, indent=2)
    if args.profile:  # where a compiled step gains or loses its time, operator by operator
        step = steps(args.model, "train", auto)[0]
        for compiled in (False, True):
            print(f"\n{args.model} training, {auto}, {'compiled' if compiled else 'eager'}, 5 steps:")
            print(profile_table(step[compiled]))


if __name__ == "__main__":
    main()
