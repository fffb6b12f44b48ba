"""Hooks into :func:`imgzoo.fit`: early stopping with restore-best, a CSV log, or your own.

A callback subclasses :class:`Callback` and overrides the hooks it needs. Each hook gets
the :class:`FitState`: the (unwrapped) model, the optimizer, the History so far and the
current epoch; setting ``state.should_stop = True`` ends training after this epoch.
Callbacks that keep state (early stopping's best weights) save it in the checkpoint
through ``state_dict`` / ``load_state_dict``, so resuming continues them too.

Checkpointing every epoch is built into fit (``checkpoint_dir=``), because resume,
the NaN guard and Ctrl-C all rely on it.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgzoo.history import COLUMNS, History

__all__ = ["CSVLogger", "Callback", "EarlyStopping", "FitState"]


@dataclass
class FitState:
    """What callbacks can see and change."""

    model: nn.Module  # the plain model, not the DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    history: History
    epoch: int  # 1-based; 0 before the first epoch
    epochs: int
    is_main: bool  # rank 0: the only process that should write files
    should_stop: bool = False


class Callback:
    """Override any of these; all are no-ops by default."""

    def on_fit_start(self, state: FitState) -> None: ...

    def on_epoch_start(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState, step: int, loss: torch.Tensor) -> None: ...

    def on_epoch_end(self, state: FitState) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally restore the best weights.

    Defaults follow Keras and Lightning: watch ``val_loss``, lower is better, no
    minimum delta. ``restore_best=True`` (Keras's ``restore_best_weights``) loads the
    weights of the best epoch when training ends, however it ends.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 5,
        mode: str | None = None,  # None: "max" for accuracies, "min" otherwise
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        if monitor not in COLUMNS:
            raise ValueError(f"EarlyStopping: monitor must be a History column {COLUMNS}, got {monitor!r}")
        mode = mode or ("max" if monitor.endswith("acc") else "min")
        if mode not in ("min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError(f"EarlyStopping: patience must be >= 1, got {patience}")
        self.monitor, self.patience, self.mode = monitor, patience, mode
        self.min_delta, self.restore_best = min_delta, restore_best
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.wait = 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, state: FitState) -> None:
        value = getattr(state.history, self.monitor)[-1]
        if value is None:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which is None: pass a val set to fit")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, state.epoch, 0
            if self.restore_best:
                self.best_weights = copy.deepcopy({k: v.detach().cpu() for k, v in state.model.state_dict().items()})
        else:
            self.wait += 1
            if self.wait >= self.patience:
                state.should_stop = True

    def on_fit_end(self, state: FitState) -> None:
        if self.restore_best and self.best_weights is not None:
            state.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_weights = state["best_weights"]


class CSVLogger(Callback):
    """Rewrite ``path`` with the whole History after every epoch (atomically, on rank 0 only)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def on_epoch_end(self, state: FitState) -> None:
        if state.is_main:
            state.history.to_csv(self.path)
