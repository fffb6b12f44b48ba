"""Training checkpoints: written atomically, one fit per folder, checked before a resume loads anything.

Only tensors and plain values, so ``torch.load(weights_only=True)`` reads them and never runs pickled code.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from imgzoo._atomic import atomic_open
from imgzoo.errors import CheckpointError
from imgzoo.models.registry import ARCH_ATTR, KWARGS_ATTR, get_model_entry, list_models
from imgzoo.train.steps import MetricSums

FORMAT = "imgzoo-checkpoint-v1"
LAST = "last.pt"  # the latest finished epoch, rewritten each epoch
INTERRUPTED = "interrupted.pt"  # written on Ctrl-C: where the run stopped, inside an epoch or between two
REQUIRED = ("epoch", "seed", "model", "optimizer", "rng", "history")  # a file without them was not written by fit


def capture_rng() -> dict[str, Any]:
    """The state of every generator fit draws from (shuffling, dropout, augmentation), NumPy's as tensors."""
    numpy = np.random.get_state(legacy=False)
    state = numpy.pop("state")
    numpy |= {"key": torch.from_numpy(state["key"].astype(np.int64)), "pos": state["pos"]}
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng(state: dict[str, Any]) -> None:  # what capture_rng returned
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    key = {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]}
    np.random.set_state({**saved, "state": key})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus a format tag) to ``path`` atomically; returns the path."""
    with atomic_open(Path(path), "wb") as f:
        torch.save({"format": FORMAT, **payload}, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file or a folder's ``last.pt``; a :class:`CheckpointError` if damaged or foreign."""
    path = resolve_resume(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch's own message may suggest unpickling the file: never pass that on
        raise CheckpointError(_unreadable(path, type(e).__name__)) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an imgzoo training checkpoint (expected format {FORMAT!r}). "
                              "To load saved weights instead, use imgzoo.hub.api.load.")  # fmt: skip
    if missing := [key for key in REQUIRED if key not in payload]:
        raise CheckpointError(_unreadable(path, f"it has the imgzoo format tag but lacks {missing}"))
    return payload


def _unreadable(path: Path, why: str) -> str:
    size = path.stat().st_size
    what = "empty: 0 bytes" if size == 0 else f"{size} bytes; {why}"
    others = sorted(p.name for p in path.parent.glob("*.pt") if p != path)
    instead = f"resume from another checkpoint of the run ({', '.join(others)}), or " if others else ""
    return (f"{path} cannot be read as an imgzoo training checkpoint ({what}): it is damaged, e.g. by a full disk or "
            f"a copy that did not finish, or it is another kind of file. To go on, {instead}start the run again "
            "without resume= (delete or move the file first).")  # fmt: skip


def resume_point(path: str | os.PathLike[str]) -> Path | None:
    """The file to resume a folder from: an exact ``interrupted.pt``, else ``last.pt``, else None."""
    folder = Path(path)
    interrupted, last = folder / INTERRUPTED, folder / LAST
    if interrupted.is_file():
        state = load_checkpoint(interrupted)
        if "partial" in state and (state["partial"] is None or state["partial"]["exact"]):
            return interrupted
    return last if last.is_file() else None


def resolve_resume(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or a checkpoint folder's ``last.pt``; a clear error if neither exists."""
    path = Path(path) / LAST if Path(path).is_dir() else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; pass resume= the checkpoint_dir of an earlier fit or a .pt file it wrote"
        )
    return path


LOCK_NAME = "fit.lock"


class CheckpointDirError(RuntimeError):
    """A checkpoint_dir that cannot be written, or that another fit is writing."""


@contextlib.contextmanager
def lock_checkpoint_dir(folder: str | os.PathLike[str] | None) -> Iterator[None]:
    """Hold ``folder``'s lock for the body; None (no checkpoints) locks nothing."""
    if folder is None:
        yield
        return
    from filelock import FileLock, Timeout  # only a fit with checkpoints pays its import (11 ms)

    folder = Path(folder)
    lock = FileLock(path := folder / LOCK_NAME, timeout=0)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        holder = path.read_text(errors="replace").split() if path.is_file() else []  # read before we try
        held = lock.acquire()  # a context manager that releases it
    except Timeout:  # before OSError: filelock's Timeout is a TimeoutError
        who = f"process {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
        raise CheckpointDirError(
            f"fit: {folder} is in use by another fit ({who}, see {path}); two runs writing the same checkpoints "
            "would overwrite each other's. Wait for that run to end, or pass another checkpoint_dir=."
        ) from None
    except OSError as e:
        raise CheckpointDirError(
            f"fit: cannot write checkpoints to {folder}: {e.strerror or e} ({type(e).__name__}). "
            "Pass a checkpoint_dir= in a folder you can write to, or fix its permissions; nothing was trained."
        ) from None
    with held:
        with contextlib.suppress(OSError):  # only to name the holder in another fit's refusal
            path.write_text(f"{os.getpid()} {socket.gethostname()}\n")
        yield


def model_identity(model: nn.Module) -> dict[str, Any]:
    """What the model was built as, saved in every checkpoint: a resume into another one is refused before loading."""
    classes = getattr(getattr(model, "data_spec", None), "class_names", None)  # checked against the data's
    return {"arch": getattr(model, ARCH_ATTR, None), "kwargs": getattr(model, KWARGS_ATTR, None), "classes": classes}


def check_model_fits(state: dict[str, Any], model: nn.Module, path: Path) -> None:
    """Refuse a checkpoint made for another architecture, other builder arguments, or other weight names/shapes."""
    saved_arch, saved_kwargs = state.get("arch"), state.get("kwargs") or {}
    if saved_arch in list_models():  # an argument the builder gained since the checkpoint was made takes its default
        saved_kwargs = {**get_model_entry(saved_arch).default_kwargs, **saved_kwargs}
    arch, kwargs = getattr(model, ARCH_ATTR, None), getattr(model, KWARGS_ATTR, None) or {}
    other_build = saved_arch is not None and arch is not None and (saved_arch, saved_kwargs) != (arch, kwargs)
    saved, own = state["model"], model.state_dict()
    differences = [f"{k} missing from the checkpoint" for k in own if k not in saved]
    differences += [f"{k} not in this model" for k in saved if k not in own]
    shapes = {k: (tuple(saved[k].shape), tuple(own[k].shape)) for k in own if k in saved}
    differences += [f"{k} is {a} in the checkpoint, {b} here" for k, (a, b) in shapes.items() if a != b]
    if not other_build and not differences:
        return
    built = ""
    if other_build:
        keys = [k for k in {**saved_kwargs, **kwargs} if saved_kwargs.get(k) != kwargs.get(k)]
        changed = "; ".join(f"{k}={saved_kwargs.get(k)!r} there, {k}={kwargs.get(k)!r} here" for k in keys)
        changed = f"{saved_arch} there, {arch} here" if saved_arch != arch else changed
        built = f" it was made for another model ({changed});"
    shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more" if len(differences) > 4 else "")
    weights = f" {len(differences)} weights differ in name or shape ({shown})." if differences else ""
    arguments = ", ".join(f"{k}={v!r}" for k, v in saved_kwargs.items())
    rebuild = f"imgzoo.create_model({saved_arch!r}, {arguments})" if saved_arch else "its model"
    raise CheckpointError(
        f"fit: cannot resume {path}:{built}{weights} Nothing was loaded. Resume with the model the checkpoint "
        f"was made for, {rebuild}, or train this model without resume=."
    )


def check_optimizer_fits(state: dict[str, Any], optimizer: torch.optim.Optimizer, name: str, path: Path) -> None:
    """Refuse a checkpoint whose optimizer state belongs to another optimizer or other parameter groups."""
    saved = state.get("optimizer_class")
    if saved is not None and saved != name:
        raise CheckpointError(
            f"fit: cannot resume {path}: it was trained with {saved}, and this call builds {name}; the saved "
            f"optimizer state (momentum buffers, moments) only fits {saved}. Resume with the optimizer the run "
            "was made with, or start a new run from its weights without resume=."
        )
    saved_groups = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
    groups = [len(g["params"]) for g in optimizer.param_groups]
    if saved_groups != groups:
        raise CheckpointError(
            f"fit: cannot resume {path}: its optimizer has parameter groups of {saved_groups} tensors, this one "
            f"of {groups}; were other parameters frozen (requires_grad)? Resume with the same trainable "
            "parameters, or start a new run from its weights without resume=."
        )


def check_stop_resumable(state: dict[str, Any], path: Path, world_size: int) -> None:
    """Refuse an ``interrupted.pt`` that cannot continue exactly where its run stopped, naming what will work."""
    last = path.with_name(LAST)
    if "partial" not in state and path.name == INTERRUPTED:
        why = "an earlier imgzoo wrote it with the weights of a partial epoch and no record of where it stopped"
    elif state.get("partial") is None:
        return
    elif not state["partial"]["exact"]:
        why = state["partial"]["why"]
    elif world_size > 1:
        why = "a run under torchrun continues only from the end of an epoch"
    else:
        return
    raise CheckpointError(
        f"fit: cannot continue exactly from {path}: {why}. Resume from {last} instead "
        f"(fit(..., resume='{last}'): the end of epoch {state['epoch']}, the last one finished)."
    )


class EpochPosition:
    """Where the run stands inside the current epoch of ``loader``; what ``interrupted.pt`` records of it.
    ``generator``: the loader's own (a user's DataLoader's), whose states are recorded with the global ones."""

    def __init__(self, loader: Any, generator: torch.Generator | None) -> None:
        self.loader, self.generator = loader, generator
        self.epoch, self.steps_done, self.at_step_boundary = 0, 0, True
        self.entry_rng: dict[str, Any] | None = None  # where the epoch began, before on_epoch_start
        self.entry_loader_generator: torch.Tensor | None = None
        self.batches_rng: dict[str, Any] | None = None  # where the epoch's batches began
        self.batches_loader_generator: torch.Tensor | None = None

    def begin_epoch(self, epoch: int) -> None:
        self.epoch, self.steps_done, self.at_step_boundary = epoch, 0, True
        self.entry_rng, self.batches_rng = capture_rng(), None
        self.entry_loader_generator = self.generator.get_state() if self.generator is not None else None

    def begin_batches(self) -> Iterator:
        self.batches_rng = capture_rng()
        self.batches_loader_generator = self.generator.get_state() if self.generator is not None else None
        self.at_step_boundary = False  # the first batch is being fetched
        return iter(self.loader)

    def resume_batches(self, partial: dict[str, Any], rng_at_stop: dict[str, Any]) -> Iterator:
        """Take up an interrupted epoch: its batches, drawn again from where the checkpoint says they began, past the
        steps it had done; then every generator as when it stopped."""
        self.batches_rng, self.batches_loader_generator = partial["batches_rng"], partial["batches_loader_generator"]
        self.steps_done, self.at_step_boundary = partial["steps_done"], False
        restore_rng(self.batches_rng)
        if self.generator is not None and self.batches_loader_generator is not None:
            self.generator.set_state(self.batches_loader_generator)
        batches = iter(self.loader)
        for _ in range(self.steps_done):
            next(batches)
        restore_rng(rng_at_stop)
        return batches

    def end_step(self) -> None:
        self.steps_done += 1
        self.at_step_boundary = True

    def record(self, sums: MetricSums, lr: float, seconds: float, world_size: int) -> dict[str, Any] | None:
        """The ``partial`` entry of interrupted.pt; None when no step of the epoch has finished."""
        if self.steps_done == 0:
            return None
        why = None
        if not self.at_step_boundary:
            why = "it was written in the middle of a step (after a second Ctrl-C, or an error inside the step)"
        elif world_size > 1:
            why = "under torchrun each process stops at its own step, and only rank 0's state is saved"
        elif isinstance(self.loader, DataLoader) and self.loader.num_workers > 0 and self.loader.persistent_workers:
            why = (
                "its DataLoader has persistent_workers=True, whose worker processes keep random generators no "
                "checkpoint can hold (pass persistent_workers=False to make interrupted runs resumable)"
            )
        return {"epoch": self.epoch, "steps_done": self.steps_done, "exact": why is None, "why": why,
                "batches_rng": self.batches_rng, "batches_loader_generator": self.batches_loader_generator,
                "sums": sums.state_dict(), "lr": lr, "seconds": seconds}  # fmt: skip
