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
bench_models takes it. One more step runs under TrafficCounter, which adds up the bytes the other
operators read and write; against the memory bandwidth (bench_models.memory_bandwidth) that says how
close to the memory's speed they run. A training step also counts the feature maps it keeps for its
backward pass, so that the traffic reads as so many passes over them. The profiler adds a little to
every operator; the step's own time is taken without it, and the operators' shares are applied to that.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import bench_models
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from imgzoo._device import describe_machine

CPU = torch.device("cpu")
# The operators that do a convolution's arithmetic on a CPU, forward and backward. Their self time is the
# kernels' time: the wrappers above them (aten::convolution, aten::_convolution) only dispatch.
GOALS = {"train": 0.55, "infer": 0.65}  # bench/run.py's goals for resnet_cifar, channels_last fp32
CONVOLUTION_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution_pointwise")


# The same convolutions as dispatched from Python, where TrafficCounter sees them (oneDNN's kernels run below).
CONVOLUTION_CALLS = (torch.ops.aten.convolution.default, torch.ops.aten.convolution_backward.default)


class TrafficCounter(TorchDispatchMode):
    """The bytes every operator but a convolution reads and writes, each tensor argument and result counted once.

    A lower bound on the memory traffic: batch norm's forward, for one, reads its input twice (its statistics,
    then the normalisation) and is counted once. Views move nothing and are left out; an in-place operator
    reads and writes its tensor, and counts it twice. A broadcast argument counts its storage, not its shape.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and func not in CONVOLUTION_CALLS:
            tensors = [t for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            self.bytes += sum(min(t.numel() * t.element_size(), t.untyped_storage().nbytes()) for t in tensors)
        return out


def traffic_bytes(step: Callable[[], None]) -> int:
    """What TrafficCounter counts over one call of ``step``."""
    with TrafficCounter() as counter:
        step()
    return counter.bytes


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
    traffic = traffic_bytes(step)
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
        "bandwidth_gbs": bandwidth / 1e9, "saved_mib": saved / 2**20, "traffic_gb": traffic / 1e9,
        "conv_ms": 1e3 * conv_seconds, "conv_share": conv_share,
        # The convolutions do nearly all the FLOPs, so their rate is the step's FLOPs over their time.
        "conv_of_peak": flops / conv_seconds / peak,
        "rest": sorted(((n, 1e3 * t / total * seconds) for n, t in ops.items()
                        if n not in CONVOLUTION_OPS), key=lambda item: -item[1]),
    }  # fmt: skip


def traffic_line(found: dict, ms: float) -> str:
    """The other operators' least traffic, as passes over the saved maps and as time at the bandwidth."""
    passes = ""
    if found["saved_mib"]:
        passes = (f" ({found['traffic_gb'] * 1e9 / 2**20 / found['saved_mib']:.1f} passes over the "
                  f"{found['saved_mib']:.0f} MiB of feature maps the step keeps for its backward pass)")  # fmt: skip
    at_bandwidth = 1e3 * found["traffic_gb"] / found["bandwidth_gbs"]
    balance = found["peak_gflops"] / found["bandwidth_gbs"]
    return (
        f"they read and write at least {found['traffic_gb']:.2f} GB{passes}, which take {at_bandwidth:.0f} ms at the "
        f"{found['bandwidth_gbs']:.1f} GB/s of a {bench_models.BANDWIDTH_MIB} MiB copy (the peak is {balance:.1f} FLOP "
        f"per byte of it): they move data at {at_bandwidth / ms:.2f}x the copy's rate or more"
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
        f"- every other operator: {rest_ms:.0f} ms ({1 - found['conv_share']:.0%}); {traffic_line(found, rest_ms)}",
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
    print(f"machine: {describe_machine(CPU)}, {torch.get_num_threads()} threads")
    mode = "infer" if args.infer else "train"
    print(report(breakdown(args.model, args.amp, not args.nchw, args.steps, mode), args.top))


if __name__ == "__main__":
    main()
