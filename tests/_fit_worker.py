"""Tiny learnable data, a tiny model, and the fit runs that tests start in subprocesses.

    python tests/_fit_worker.py kill OUT EPOCH STEP   # fit, SIGKILL itself at (epoch, batch)
    python tests/_fit_worker.py kill-rename OUT N     # SIGKILL between the N-th checkpoint's temp file and its rename
    torchrun --nproc_per_node=2 tests/_fit_worker.py ddp OUT   # fit, compare (two fits), a stop and resume

Tests import make_data, make_model and FIT_OPTIONS from here, so the in-process and
subprocess runs train exactly the same thing.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

# The same thread count as tests/conftest.py: CPU kernels may sum in a different order with another.
THREADS = min(2, os.cpu_count() or 1)
CLASSES = 4
FIT_OPTIONS = {"batch_size": 32, "lr": 0.05, "seed": 0, "verbose": 0, "num_workers": 0}


def make_data(n: int = 256, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """4 classes of 3x8x8 images: a fixed random prototype per class plus noise; 3/4 train, 1/4 val."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(CLASSES, 3, 8, 8, generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = prototypes[y] + 1.5 * torch.randn(n, 3, 8, 8, generator=g)
    cut = 3 * n // 4
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


def make_model(seed: int = 0) -> nn.Module:
    """Conv, batch norm and dropout: weights, running statistics and random draws all matter on resume."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(8 * 4 * 4, CLASSES),
    )


class Batches:
    """A loader in the style of imgzoo.data.loaders.FastLoader: its own generator shuffles and augments."""

    def __init__(self, dataset: TensorDataset, batch_size: int = 32, seed: int = 0) -> None:
        self.x, self.targets = dataset.tensors
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.targets), generator=self.generator)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            noise = 0.1 * torch.randn(self.x[index].shape, generator=self.generator)
            yield self.x[index] + noise, self.targets[index]


class NoisyImages(Dataset):
    """A data set whose augmentation (added noise) draws from torch's global generator, as torchvision's do."""

    def __init__(self, dataset: TensorDataset) -> None:
        self.x, self.targets = dataset.tensors

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.x[i] + 0.1 * torch.randn(self.x[i].shape), self.targets[i]


def _kill(out: Path, epoch: int, step: int) -> None:
    from imgzoo.train.callbacks import Callback
    from imgzoo.train.fit import fit

    class KillAt(Callback):
        def on_batch_end(self, state, batch, loss):  # noqa: ANN001
            if (state.epoch, batch) == (epoch, step):
                os.kill(os.getpid(), signal.SIGKILL)

    train, val = make_data()
    fit(make_model(), train, val, epochs=4, checkpoint_dir=out, callbacks=[KillAt()], **FIT_OPTIONS)


def _kill_rename(out: Path, nth: int) -> None:
    from imgzoo.train.fit import fit

    real_replace, calls = os.replace, []

    def replace(src, dst):  # noqa: ANN001
        calls.append(dst)
        if len(calls) == nth:  # the temp file is complete on disk; the rename never happens
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    os.replace = replace
    train, val = make_data()
    fit(make_model(), train, val, epochs=4, checkpoint_dir=out, **FIT_OPTIONS)


def _ddp(out: Path) -> None:
    import gc
    import json

    import torch.distributed as dist

    from imgzoo.study.compare import compare
    from imgzoo.train.fit import fit

    rank = int(os.environ["RANK"])
    train, val = make_data()
    model = make_model()
    gc.disable()  # only fit's own collection may free its DistributedDataParallel wrapper
    history = fit(model, train, val, epochs=4, checkpoint_dir=out / "ckpt", **FIT_OPTIONS)
    wrappers_alive = sum(isinstance(o, nn.parallel.DistributedDataParallel) for o in gc.get_objects())
    gc.enable()
    # Every process reports its weights: DDP must keep the replicas identical.
    torch.save(model.state_dict(), out / f"weights_rank{rank}.pt")
    if rank == 0:
        history.to_json(out / "history.json")

    # More fit calls in the same processes: compare trains two tiny models, one fit each.
    group_kept = dist.is_initialized()
    small_train, small_val = make_data(n=64)
    result = compare({"a": make_model(1), "b": make_model(2)}, small_train, small_val, epochs=1, **FIT_OPTIONS)
    report = {"group_kept": group_kept, "histories": {k: h.to_dict() for k, h in result.histories.items()}}
    report["wrappers_alive_after_fit"] = wrappers_alive

    # A run stopped after epoch 2 and resumed ends like an uninterrupted one on every process:
    # each restores its own random generators (dropout draws differ per process).
    from imgzoo.train.callbacks import Callback

    class CtrlCAtEpoch3(Callback):
        def on_epoch_start(self, state):  # noqa: ANN001
            if state.epoch == 3:
                raise KeyboardInterrupt

    reference = make_model()
    expected = fit(reference, small_train, small_val, epochs=3, **FIT_OPTIONS)
    ckpt = out / "resume"
    fit(make_model(), small_train, small_val, epochs=3, checkpoint_dir=ckpt, callbacks=[CtrlCAtEpoch3()], **FIT_OPTIONS)
    resumed = make_model(seed=123)
    history = fit(resumed, small_train, small_val, epochs=3, resume=ckpt, **FIT_OPTIONS)
    report["resume_train_loss"] = [history.train_loss, expected.train_loss]
    resumed_state = resumed.state_dict()
    report["resume_differs"] = [k for k, v in reference.state_dict().items() if not torch.equal(v, resumed_state[k])]
    (out / f"more_fits_rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    torch.set_num_threads(1 if sys.argv[1] == "ddp" else THREADS)
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "kill":
        _kill(out, int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "kill-rename":
        _kill_rename(out, int(sys.argv[3]))
    elif mode == "ddp":
        _ddp(out)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
