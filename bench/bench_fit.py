"""fit's end-to-end training throughput against a hand-written minimal loop, side by side.

Same model (resnet_cifar, depth 20), same synthetic 3x32x32 data, same batch size,
optimizer (SGD, Nesterov) and one-cycle schedule. Repetitions are interleaved
(minimal, fit fp32, fit bf16, minimal, ...) so that load from other processes on a
shared CPU hits all three alike; the median of each is reported, with ratios.

    .venv/bin/python bench/bench_fit.py [--images 1024] [--epochs 2] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import imgzoo


def minimal_loop(model: nn.Module, data: TensorDataset, epochs: int, batch_size: int) -> None:
    """What a user writes by hand: no progress bar, no metrics, no checks."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.randn(args.images, 3, 32, 32, generator=g), torch.randint(0, 10, (args.images,), generator=g)
    )
    runs = {
        "minimal loop": lambda m: minimal_loop(m, data, args.epochs, args.batch_size),
        "fit fp32": lambda m: imgzoo.fit(m, data, epochs=args.epochs, batch_size=args.batch_size, verbose=0),
        "fit bf16": lambda m: imgzoo.fit(
            m, data, epochs=args.epochs, batch_size=args.batch_size, amp="bf16", verbose=0
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in runs}
    runs["minimal loop"](imgzoo.resnet_cifar(depth=20))  # warm-up: allocator, oneDNN kernels
    for _ in range(args.reps):
        for name, run in runs.items():
            model = imgzoo.resnet_cifar(depth=20)
            start = time.perf_counter()
            run(model)
            rates[name].append(args.epochs * args.images / (time.perf_counter() - start))

    median = {name: statistics.median(r) for name, r in rates.items()}
    print(
        f"resnet_cifar-20, {args.images} images x {args.epochs} epochs, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads, median of {args.reps} interleaved runs (shared CPU)"
    )
    for name, rate in median.items():
        print(f"  {name:<13} {rate:8.1f} img/s   (runs: {', '.join(f'{r:.0f}' for r in rates[name])})")
    print(f"fit fp32 / minimal loop: {median['fit fp32'] / median['minimal loop']:.3f}  (target >= 0.9)")
    print(f"fit bf16 / fit fp32:     {median['fit bf16'] / median['fit fp32']:.3f}")


if __name__ == "__main__":
    main()
