"""Where a training step's time goes: the convolutions against the machine's peak, and everything else.

A model's fraction of peak (bench_models.py) mixes two kinds of work. Convolutions are compute: their
FLOPs are nearly all the step's, and how close they run to the matmul peak is oneDNN's business. Batch
norm, ReLU, the residual sums and the optimizer do almost no arithmetic: each is a pass over a feature map,
bound by memory bandwidth. This splits one step's time between the two with torch.profiler, so a missed
goal can be read as "the convolutions are slow" or "the passes between them are too many or too slow",
and says what the step would reach if the second kind took no time at all: the ceiling for a library that
does not fuse those passes into the convolutions' kernels (torch.compile does; see bench_compile.py).

    python bench/bench_step_profile.py [--model resnet_cifar] [--amp fp32] [--nchw] [--infer] [--steps 10] [--top 10]

``--infer`` profiles the model's inference as built (eval mode, no gradients) instead of a training step.

The peak is bench_models.matmul_peak, the highest of probes before and after the profiled steps, as
bench_models takes it. The memory bandwidth (bench_models.memory_bandwidth) turns the other operators'
time into the bytes the memory could have moved meanwhile; a training step also counts the feature maps
it keeps for its backward pass, so that those bytes read as so many passes over them. The profiler adds
a little to every operator; the step's own time is taken without it, and the operators' shares are
applied to that.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import bench_models
import torch
from torch.profiler import ProfilerActivity, profile

from imgzoo._allocator import keep_freed_memory
from imgzoo._device import describe_machine

CPU = torch.device("cpu")
# The operators that do a convolution's arithmetic on a CPU, forward and backward. Their self time is the
# kernels' time: the wrappers above them (aten::convolution, aten::_convolution) only dispatch.
GOALS = {"train": 0.55, "infer": 0.65}  # bench/run.py's goals for resnet_cifar, channels_last fp32
CONVOLUTION_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution_pointwise")


def operator_times(step: Callable[[], None], steps: int) -> dict[str, float]:
    """Self CPU seconds per step of every operator, over ``steps`` profiled steps after two unprofiled ones."""
    step()
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return {e.key: e.self_cpu_time_total / 1e6 / steps for e in prof.key_averages() if e.self_cpu_time_total > 0}


def saved_bytes(model: torch.nn.Module, batch: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps from one forward pass for the backward pass, each storage once."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(batch)
    return sum(storages.values())


def step_seconds(step: Callable[[], None], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def breakdown(model_name: str, amp: str, channels_last: bool, steps: int, mode: str = "train") -> dict:
    """The step's time, its convolutions' share and speed, and the ceiling with every other pass free.

    ``mode`` "train" (forward, backward, SGD step) or "infer" (the model as built, in eval mode).
    """
    cfg = bench_models.Config(model_name, mode, amp, channels_last)
    model, shape, batch_size = bench_models.build(model_name)
    flops = bench_models.flops_per_image(model, shape, train=mode == "train") * batch_size
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    batch = torch.randn(batch_size, *shape).contiguous(memory_format=fmt)
    labels = torch.randint(0, 10, (batch_size,))
    saved = saved_bytes(model, batch) if mode == "train" else 0
    step = bench_models.step_function(model, cfg, batch, labels)
    before = bench_models.matmul_peak()
    ops = operator_times(step, steps)
    seconds = step_seconds(step, steps)
    peak = max(before, bench_models.matmul_peak())
    bandwidth = bench_models.memory_bandwidth()
    total = sum(ops.values())
    conv_share = sum(t for name, t in ops.items() if name in CONVOLUTION_OPS) / total
    if conv_share == 0:
        raise SystemExit(f"no convolution operator among the profiled ones; looked for {CONVOLUTION_OPS}")
    conv_seconds = conv_share * seconds
    return {
        "model": model_name, "mode": mode, "amp": amp, "channels_last": channels_last, "batch": batch_size,
        "step_ms": 1e3 * seconds, "of_peak": flops / seconds / peak, "peak_gflops": peak / 1e9,
        "bandwidth_gbs": bandwidth / 1e9, "saved_mib": saved / 2**20,
        "conv_ms": 1e3 * conv_seconds, "conv_share": conv_share,
        # The convolutions do nearly all the FLOPs, so their rate is the step's FLOPs over their time.
        "conv_of_peak": flops / conv_seconds / peak,
        "rest": sorted(((n, 1e3 * t / total * seconds) for n, t in ops.items()
                        if n not in CONVOLUTION_OPS), key=lambda item: -item[1]),
    }  # fmt: skip


def moved_line(found: dict, ms: float) -> str:
    """What the memory could move in ``ms``, and, for a training step, how many passes over its saved maps."""
    gigabytes = ms * found["bandwidth_gbs"] / 1e3
    balance = found["peak_gflops"] / found["bandwidth_gbs"]
    passes = ""
    if found["saved_mib"]:
        passes = (f", {gigabytes * 1e9 / 2**20 / found['saved_mib']:.1f} passes over the {found['saved_mib']:.0f} "
                  "MiB of feature maps the step keeps for its backward pass")  # fmt: skip
    return (
        f"as long as the memory takes to move {gigabytes:.2f} GB at {found['bandwidth_gbs']:.1f} GB/s"
        f"{passes} (a {bench_models.BANDWIDTH_MIB} MiB copy; the peak is {balance:.1f} FLOP per byte of it)"
    )


def report(found: dict, top: int) -> str:
    """The breakdown as printed: the split, the ceiling, the time left for the other operators at the goal."""
    rest_ms = found["step_ms"] - found["conv_ms"]
    layout = "channels_last" if found["channels_last"] else "NCHW"
    what = "training" if found["mode"] == "train" else "inference as built"
    goal = GOALS[found["mode"]]
    budget = max(0.0, found["step_ms"] * found["of_peak"] / goal - found["conv_ms"])
    lines = [
        f"{found['model']} {what}, {found['amp']}, {layout}, batch {found['batch']}: {found['step_ms']:.0f} ms a "
        f"step, {found['of_peak']:.0%} of the fp32 matmul peak ({found['peak_gflops']:.0f} GFLOP/s)",
        f"- convolutions: {found['conv_ms']:.0f} ms ({found['conv_share']:.0%} of the step), "
        f"{found['conv_of_peak']:.0%} of the peak while they run",
        f"- every other operator: {rest_ms:.0f} ms ({1 - found['conv_share']:.0%}), {moved_line(found, rest_ms)}",
        f"- with every other operator free the step would reach {found['conv_of_peak']:.0%} of the peak; at "
        f"{goal:.0%} (the goal) it may spend {budget:.0f} ms on them",
        "",
        "| operator (not a convolution) | ms a step |",
        "|---|---:|",
        *[f"| {name} | {ms:.1f} |" for name, ms in found["rest"][:top]],
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet_cifar")
    parser.add_argument("--amp", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--nchw", action="store_true", help="NCHW instead of channels_last")
    parser.add_argument("--infer", action="store_true", help="the model's inference as built, not a training step")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=10, help="rows of the table of other operators")
    args = parser.parse_args()
    keep_freed_memory()  # as fit trains on the CPU
    print(f"machine: {describe_machine(CPU)}, {torch.get_num_threads()} threads")
    mode = "infer" if args.infer else "train"
    print(report(breakdown(args.model, args.amp, not args.nchw, args.steps, mode), args.top))


if __name__ == "__main__":
    main()
