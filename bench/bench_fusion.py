"""What evaluate's inference copy buys: the model as built, batch norm folded, and folded with oneDNN fusion.

For each model, three networks run inference side by side in channels_last on the CPU: the model as
built (``model(x)`` in eval mode), imgzoo.fold_batchnorm's copy, and imgzoo.fuse_for_inference's
(the folded copy with each activation and residual sum inside its convolution's oneDNN call, what
imgzoo.evaluate runs on a CPU). Each is timed in fp32 and in the precision amp="auto" picks here,
in windows that rotate through the three, so that load from other processes falls on all alike;
a matmul probe around each window turns images/s into a fraction of this machine's fp32 peak, the
figure the inference goal (resnet_cifar >= 65%) is stated in.

    python bench/bench_fusion.py [--models resnet_cifar mnist_cnn] [--reps 7] [--seconds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import bench_models
import torch

import imgzoo
from imgzoo._device import amp_dtype, autocast, describe_machine

CPU = torch.device("cpu")
NETWORKS = ("as built", "folded", "fused")


def networks(model_name: str) -> tuple[dict[str, torch.nn.Module], tuple[int, ...], int]:
    """The three networks of one model with the same weights, one image's shape, and the batch size."""
    model, shape, batch_size = bench_models.build(model_name)
    model.eval()
    built = {"as built": model, "folded": imgzoo.fold_batchnorm(model), "fused": imgzoo.fuse_for_inference(model)}
    return {k: m.to(memory_format=torch.channels_last) for k, m in built.items()}, shape, batch_size


def step(net: torch.nn.Module, batch: torch.Tensor, amp: str) -> Callable[[], None]:
    dtype = amp_dtype(amp, CPU)

    def infer() -> None:
        with torch.inference_mode(), autocast(CPU, dtype):
            net(batch)

    return infer


def measure(model_name: str, amp: str, reps: int, seconds: float) -> dict:
    """Images/s and fraction of the peak of each network, in windows rotating through them."""
    nets, shape, batch_size = networks(model_name)
    batch = torch.randn(batch_size, *shape).contiguous(memory_format=torch.channels_last)
    per_image = bench_models.flops_per_image(nets["as built"], shape, train=False)
    steps = {name: step(net, batch, amp) for name, net in nets.items()}
    rates: dict[str, list[float]] = {name: [] for name in NETWORKS}
    of_peak: dict[str, list[float]] = {name: [] for name in NETWORKS}
    probe = bench_models.matmul_peak(seconds=bench_models.probe_seconds(seconds))
    for rep in range(reps):
        order = NETWORKS[rep % 3 :] + NETWORKS[: rep % 3]  # each network leads in turn
        for name in order:
            rate = batch_size / bench_models.time_steps(steps[name], seconds)
            after = bench_models.matmul_peak(seconds=bench_models.probe_seconds(seconds))
            rates[name].append(rate)
            of_peak[name].append(rate * per_image / max(probe, after))
            probe = after
    rows = {name: {"images_per_sec": statistics.median(rates[name]), "of_peak": statistics.median(of_peak[name])}
            for name in NETWORKS}  # fmt: skip
    # Ratios of windows timed next to each other in the rotation share the machine's load of the moment.
    paired = {
        "folded / as built": statistics.median(a / b for a, b in zip(rates["folded"], rates["as built"], strict=True)),
        "fused / folded": statistics.median(a / b for a, b in zip(rates["fused"], rates["folded"], strict=True)),
    }
    return {"model": model_name, "amp": amp, "batch_size": batch_size, "windows": reps, "rows": rows, **paired}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=["resnet_cifar"])
    parser.add_argument("--reps", type=int, default=7, help="windows per network and precision")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each timing window")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    auto = "bf16" if amp_dtype("auto", CPU) == torch.bfloat16 else "fp32"
    amps = ["fp32"] + ([auto] if auto != "fp32" else [])
    machine = describe_machine(CPU)
    print(f"machine: {machine}, {torch.get_num_threads()} threads; channels_last; medians of {args.reps} windows")
    print("| model | amp | batch | as built | folded | fused | folded / as built | fused / folded |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    results = []
    for name in args.models:
        for amp in amps:
            r = measure(name, amp, args.reps, args.seconds)
            results.append(r)
            cells = [f"{r['rows'][n]['images_per_sec']:,.0f} img/s ({100 * r['rows'][n]['of_peak']:.0f}%)"
                     for n in NETWORKS]  # fmt: skip
            print(f"| {name} | {amp} | {r['batch_size']} | {' | '.join(cells)} | "
                  f"{r['folded / as built']:.2f}x | {r['fused / folded']:.2f}x |", flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
