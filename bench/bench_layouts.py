"""What a mix of memory layouts costs, and what resnet_cifar's option-A shortcut pays in each layout.

1. The ReLU backward (aten.threshold_backward) at ResNet-20's first stage (batch 128, 16 x 32 x 32): its
   gradient and its output both channels_last, against an NCHW gradient beside a channels_last output,
   which is what the shortcut's slicing used to hand back in a channels_last network.
2. The shortcut itself, forward and backward as far as the previous block's ReLU backward: by
   slicing, by a 1x1 average pool, and by imgzoo's subsample (the pool on channels_last input that
   carries a gradient, slicing elsewhere), in NCHW and channels_last, fp32 and bf16. On NCHW input
   imgzoo's subsample slices, so there its column times the same code as the first: their ratio shows
   the noise.

The variants of each row are timed in alternating windows, and each row's median is reported.

    python bench/bench_layouts.py [--reps 7]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import bench_models
import torch
import torch.nn.functional as F

from imgzoo._device import describe_machine
from imgzoo.models.resnet_cifar import subsample

CPU = torch.device("cpu")
FIRST_STAGE = (128, 16, 32, 32)  # ResNet-20's first stage at batch 128: where the first downsampling block reads


def alternating(variants: dict[str, Callable[[], object]], reps: int, seconds: float = 0.3) -> dict[str, float]:
    """The median ms per call of each variant, timed in turn ``reps`` times, the first of them alternating."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(reps):
        for name in list(variants)[:: 1 if rep % 2 else -1]:
            times[name].append(1e3 * bench_models.time_steps(variants[name], seconds))
    return {name: statistics.median(t) for name, t in times.items()}


def relu_backward(reps: int) -> dict[str, float]:
    output = torch.randn(FIRST_STAGE).relu().contiguous(memory_format=torch.channels_last)
    matching = torch.randn(FIRST_STAGE).contiguous(memory_format=torch.channels_last)
    mixed = matching.contiguous()  # the same values, NCHW
    backward = torch.ops.aten.threshold_backward
    return alternating(
        {
            "channels_last": lambda: backward(matching, output, 0),
            "NCHW": lambda: backward(mixed, output, 0),
        },
        reps,
    )


def shortcut_step(x: torch.Tensor, residual: torch.Tensor, upstream: torch.Tensor, subsampled) -> Callable[[], object]:
    """Forward and backward of ``residual + pad(subsample(x))`` to x, as far as the ReLU that made x.

    The block's input also feeds its residual branch, so autograd sums the two gradients, and the sum goes
    on into the backward of the previous block's ReLU: the two operators a mismatched layout slows.
    """
    other = torch.randn_like(x)
    made_by_relu = x.detach().relu()

    def step() -> torch.Tensor:
        out = residual + F.pad(subsampled(x), (0, 0, 0, 0, 0, x.shape[1]))
        (grad,) = torch.autograd.grad(out, x, upstream)
        return torch.ops.aten.threshold_backward(grad + other, made_by_relu, 0)

    return step


def shortcut(reps: int) -> dict[str, dict[str, float]]:
    found = {}
    n, c, h, w = FIRST_STAGE
    for dtype in (torch.float32, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(FIRST_STAGE, dtype=dtype).contiguous(memory_format=layout).requires_grad_()
            residual = torch.randn(n, 2 * c, h // 2, w // 2, dtype=dtype).contiguous(memory_format=layout)
            upstream = torch.randn_like(residual)
            variants = {
                "slicing": shortcut_step(x, residual, upstream, lambda t: t[:, :, ::2, ::2]),
                "1x1 average pool": shortcut_step(x, residual, upstream, lambda t: F.avg_pool2d(t, 1, 2)),
                "imgzoo's subsample": shortcut_step(x, residual, upstream, lambda t: subsample(t, 2)),
            }
            name = "channels_last" if layout is torch.channels_last else "NCHW"
            found[f"{name}, {str(dtype).removeprefix('torch.')}"] = alternating(variants, reps)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {describe_machine(CPU)}, {torch.get_num_threads()} threads; ms per call, medians")
    relu = relu_backward(args.reps)
    print(f"\nReLU backward at {FIRST_STAGE}, fp32, its output channels_last:")
    print("\n".join(f"  gradient {name}: {ms:.2f} ms" for name, ms in relu.items()))
    print("\nOption-A shortcut from the first stage, forward and backward to the ReLU before it:")
    print("| layout, dtype | slicing | 1x1 average pool | imgzoo's subsample | slicing / subsample |")
    print("|---|---:|---:|---:|---:|")
    for setting, ms in shortcut(args.reps).items():
        sliced, pooled, ours = ms["slicing"], ms["1x1 average pool"], ms["imgzoo's subsample"]
        print(f"| {setting} | {sliced:.2f} ms | {pooled:.2f} ms | {ours:.2f} ms | {sliced / ours:.2f}x |")


if __name__ == "__main__":
    main()
