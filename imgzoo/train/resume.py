"""Resuming a run: what a checkpoint must match before anything is loaded, and where in an epoch a run stopped.

Every check runs before the first tensor is copied, so a refused resume changes nothing. ``interrupted.pt``
records the generators' states where the epoch's batches began, the steps done and the metric sums; a new
process draws the same batches, skips those done, and takes the generators' states of the moment it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from imgzoo.models.registry import ARCH_ATTR, KWARGS_ATTR
from imgzoo.train.callbacks import Callback
from imgzoo.train.checkpoint import INTERRUPTED, LAST, CheckpointError, capture_rng, restore_rng
from imgzoo.train.optim import optimizer_name
from imgzoo.train.steps import MetricSums


@dataclass
class RunParts:
    """The objects of a run whose state a checkpoint saves and a resume loads back."""

    model: nn.Module  # the plain module, never the DDP or compiled wrapper
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    callbacks: Sequence[Callback]
    loader_generator: torch.Generator | None  # a user's loader's own; fit's are derived from (seed, epoch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_class": optimizer_name(self.optimizer),  # another optimizer's state would not fit
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "loader_generator": self.loader_generator.get_state() if self.loader_generator is not None else None,
            # What the model was built as: a resume into another one is refused before loading.
            "arch": getattr(self.model, ARCH_ATTR, None),
            "kwargs": getattr(self.model, KWARGS_ATTR, None),
            "classes": getattr(getattr(self.model, "data_spec", None), "class_names", None),  # checked on resume
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load every part; call only after check_model_fits and check_optimizer_fits have passed."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        for cb, cb_state in zip(self.callbacks, state.get("callbacks", []), strict=False):
            cb.load_state_dict(cb_state)
        if self.loader_generator is not None and state.get("loader_generator") is not None:
            self.loader_generator.set_state(state["loader_generator"])


def _weight_differences(saved: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> list[str]:
    """Each weight name that one side lacks, or whose shape differs, as a short phrase."""
    missing = [f"{k} missing from the checkpoint" for k in own if k not in saved]
    extra = [f"{k} not in this model" for k in saved if k not in own]
    shapes = [
        f"{k} is {tuple(saved[k].shape)} in the checkpoint, {tuple(own[k].shape)} here"
        for k in own
        if k in saved and saved[k].shape != own[k].shape
    ]
    return missing + extra + shapes


def check_model_fits(state: dict[str, Any], model: nn.Module, path: Path) -> None:
    """Refuse a checkpoint made for another model: another architecture, other builder arguments,
    or any weight whose name or shape differs. Nothing is loaded before this passes."""
    saved_arch, saved_kwargs = state.get("arch"), state.get("kwargs") or {}
    arch, kwargs = getattr(model, ARCH_ATTR, None), getattr(model, KWARGS_ATTR, None) or {}
    other_build = saved_arch is not None and arch is not None and (saved_arch, saved_kwargs) != (arch, kwargs)
    differences = _weight_differences(state["model"], model.state_dict())
    if not other_build and not differences:
        return
    built = ""
    if other_build:
        keys = [k for k in {**saved_kwargs, **kwargs} if saved_kwargs.get(k) != kwargs.get(k)]
        changed = "; ".join(f"{k}={saved_kwargs.get(k)!r} there, {k}={kwargs.get(k)!r} here" for k in keys)
        if saved_arch != arch:
            changed = f"{saved_arch} there, {arch} here"
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
    """Where the run stands inside the current epoch; what ``interrupted.pt`` records of it."""

    def __init__(self) -> None:
        self.epoch, self.steps_done, self.at_step_boundary = 0, 0, True
        self.entry_rng: dict[str, Any] | None = None  # where the epoch began, before on_epoch_start
        self.entry_loader_generator: torch.Tensor | None = None
        self.batches_rng: dict[str, Any] | None = None  # where the epoch's batches began
        self.batches_loader_generator: torch.Tensor | None = None

    def begin_epoch(self, epoch: int, loader_generator: torch.Generator | None) -> None:
        self.epoch, self.steps_done, self.at_step_boundary = epoch, 0, True
        self.entry_rng, self.batches_rng = capture_rng(), None
        self.entry_loader_generator = loader_generator.get_state() if loader_generator is not None else None

    def begin_batches(self, loader_generator: torch.Generator | None) -> None:
        self.batches_rng = capture_rng()
        self.batches_loader_generator = loader_generator.get_state() if loader_generator is not None else None
        self.at_step_boundary = False  # the first batch is being fetched

    def resume_batches(self, partial: dict[str, Any]) -> None:
        """Take up an interrupted epoch: its batches began where the checkpoint says, and some steps are done."""
        self.batches_rng, self.batches_loader_generator = partial["batches_rng"], partial["batches_loader_generator"]
        self.steps_done, self.at_step_boundary = partial["steps_done"], False

    def end_step(self) -> None:
        self.steps_done += 1
        self.at_step_boundary = True

    def record(
        self, sums: MetricSums, lr: float, seconds: float, world_size: int, loader_problem: str | None = None
    ) -> dict[str, Any] | None:
        """The ``partial`` entry of interrupted.pt; None when no step of the epoch has finished."""
        if self.steps_done == 0:
            return None
        why = loader_problem
        if not self.at_step_boundary:
            why = "it was written in the middle of a step (after a second Ctrl-C, or an error inside the step)"
        elif world_size > 1:
            why = "under torchrun each process stops at its own step, and only rank 0's state is saved"
        return {
            "epoch": self.epoch,
            "steps_done": self.steps_done,
            "exact": why is None,
            "why": why,
            "batches_rng": self.batches_rng,
            "batches_loader_generator": self.batches_loader_generator,
            "sums": sums.state_dict(),
            "lr": lr,
            "seconds": seconds,
        }


def replay_problem(loader: Any) -> str | None:
    """Why an epoch of ``loader`` cannot be drawn again from recorded generator states; None if it can
    (persistent workers keep their generators inside their own processes, where no checkpoint reads them)."""
    if isinstance(loader, DataLoader) and loader.num_workers > 0 and loader.persistent_workers:
        return (
            "its DataLoader has persistent_workers=True, whose worker processes keep random generators no "
            "checkpoint can hold (pass persistent_workers=False to make interrupted runs resumable)"
        )
    return None


def replay_batches(loader: Any, partial: dict[str, Any], rng_at_stop: dict[str, Any], generator: Any) -> Iterator:
    """The loader's iterator after the steps an interrupted epoch had done: the skipped batches are drawn again
    from the same generator states, then every generator takes the state it had when the run stopped."""
    restore_rng(partial["batches_rng"])
    if generator is not None and partial["batches_loader_generator"] is not None:
        generator.set_state(partial["batches_loader_generator"])
    batches = iter(loader)
    for _ in range(partial["steps_done"]):
        next(batches)
    restore_rng(rng_at_stop)
    return batches
