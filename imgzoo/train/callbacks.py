"""Hooks into :func:`imgzoo.fit`: early stopping with restore-best, a CSV log, weight averaging, lookahead, or your own.

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

from imgzoo.eval.history import COLUMNS, History

__all__ = ["EMA", "CSVLogger", "Callback", "EarlyStopping", "FitState", "Lookahead"]


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
    steps_per_epoch: int = 0  # optimizer steps in one epoch (batches of the training loader)


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


class _ValidatedOnAverage(Callback):
    """Validation in fit on a weight average rather than on the weights being trained.

    The average is swapped in when the model first runs in eval mode after training steps (fit's
    validation), and the trained weights go back when the model trains again, at ``on_epoch_end``
    (before the checkpoint is written) and at ``on_fit_end``. So each epoch's validation figures are
    those of the weights fit hands back if it stops there, and training never sees the average.
    Subclasses say what the average is (:meth:`_average`) and arm the swap after their training steps.
    """

    def __init__(self) -> None:
        self._stash: dict[str, torch.Tensor] | None = None  # the trained weights while the average is swapped in
        self._armed = False  # training steps have run since the last on_epoch_end: an eval-mode forward swaps
        self._hook: Any = None

    def _average(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors of ``model``'s state dict to validate with, by name."""
        raise NotImplementedError

    @torch.no_grad()
    def _swap_in(self, model: nn.Module) -> None:
        tensors = model.state_dict(keep_vars=True)
        self._stash = {name: tensor.detach().clone() for name, tensor in tensors.items()}
        for name, kept in self._average(model).items():
            tensors[name].data.copy_(kept)

    @torch.no_grad()
    def _swap_out(self, model: nn.Module) -> None:
        if self._stash is None:
            return
        tensors = model.state_dict(keep_vars=True)
        for name, kept in self._stash.items():
            tensors[name].data.copy_(kept)
        self._stash = None

    def _before_forward(self, module: nn.Module, args: Any) -> None:
        if module.training:
            self._swap_out(module)  # never train on the average
        elif self._armed and self._stash is None:
            self._swap_in(module)

    def _start_swapping(self, model: nn.Module) -> None:
        self._armed = False
        disabled = torch.compiler.disable(self._before_forward)  # plain Python under torch.compile
        self._hook = model.register_forward_pre_hook(disabled)

    def on_epoch_end(self, state: FitState) -> None:
        self._swap_out(state.model)  # the checkpoint, written next, holds the trained weights
        self._armed = False

    def _stop_swapping(self, model: nn.Module) -> None:
        """The trained weights back in the model, and no more swapping."""
        self._swap_out(model)
        self._armed = False
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


class EMA(_ValidatedOnAverage):
    """An exponential moving average of the weights: validated during fit, and the model fit hands back.

    Keeps an fp32 shadow of every parameter and floating-point buffer (batch-norm running
    statistics included, as timm's ``ModelEmaV3`` does; integer buffers are copied), updated
    after every ``every``-th optimizer step: ``shadow = decay * shadow + (1 - decay) * weight``.
    With ``warmup``, update ``t`` (from 0) uses ``min(decay, (1 + t) / (10 + t))`` (TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``), so that the first steps' weights do not
    linger in the average for thousands of steps.

    Validation in fit runs on the shadow weights and training on the model's own: the shadow is
    swapped in when the model first runs in eval mode after an epoch's training steps, and the
    trained weights go back at ``on_epoch_end``, before the checkpoint is written. Callbacks listed
    before this one see the averaged weights in their ``on_epoch_end`` (what was scored), those
    after it the trained ones. At the end of fit the average is copied into the model
    (``copy_to_model=False`` keeps the trained weights; the average stays in :attr:`shadow`). Its
    state is checkpointed, so a resumed run averages exactly as an uninterrupted one.
    """

    def __init__(self, decay: float = 0.999, every: int = 1, warmup: bool = True, copy_to_model: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA: decay must be in (0, 1), e.g. 0.999 (an average over ~1000 steps); got {decay!r}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"EMA: every must be an integer >= 1 (update after every N-th step); got {every!r}")
        super().__init__()
        self.decay, self.every, self.warmup, self.copy_to_model = decay, every, warmup, copy_to_model
        self.shadow: dict[str, torch.Tensor] | None = None
        self.steps = 0  # optimizer steps seen
        self.updates = 0  # averaging updates made
        self._restored = False  # the shadow came from a checkpoint: this fit continues it

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Start the average at ``model``'s weights."""
        self.shadow = {
            name: tensor.detach().float().clone() if tensor.is_floating_point() else tensor.detach().clone()
            for name, tensor in model.state_dict().items()
        }
        self.steps = self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s weights by one step."""
        if self.shadow is None:
            self.reset(model)
        weight = 1.0 - self.current_decay()
        for name, tensor in model.state_dict().items():
            kept = self.shadow[name]  # type: ignore[index]
            if kept.is_floating_point():
                kept.lerp_(tensor.detach().to(kept.dtype), weight)
            else:
                kept.copy_(tensor)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (cast to its dtypes)."""
        tensors = model.state_dict(keep_vars=True)
        for name, kept in self._checked_shadow(model).items():
            tensors[name].data.copy_(kept)

    def _checked_shadow(self, model: nn.Module) -> dict[str, torch.Tensor]:
        if self.shadow is None:
            raise RuntimeError("EMA: there is no average yet; it starts at fit's first step (or call ema.reset(model))")
        own = set(model.state_dict())
        if own != set(self.shadow):
            differ = sorted(own ^ set(self.shadow))[:4]
            raise ValueError(
                f"EMA: the average was kept for another model (weights {differ} are in only one of them); "
                "use a new EMA for each model"
            )
        return self.shadow

    def _average(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return self._checked_shadow(model)

    # -- the hooks

    def on_fit_start(self, state: FitState) -> None:
        if not self._restored or self.shadow is None:
            self.reset(state.model)  # a new run: the average starts at its first weights
        device = next(iter(state.model.state_dict().values())).device
        self.shadow = {name: kept.to(device) for name, kept in self._checked_shadow(state.model).items()}
        self._restored = False
        self._start_swapping(state.model)

    def on_batch_end(self, state: FitState, step: int, loss: torch.Tensor) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            self.update(state.model)
        self._armed = True

    def on_fit_end(self, state: FitState) -> None:
        self._stop_swapping(state.model)
        if self.copy_to_model and self.shadow is not None:
            self.copy_to(state.model)

    def state_dict(self) -> dict[str, Any]:
        shadow = {k: v.detach().cpu() for k, v in self.shadow.items()} if self.shadow is not None else None
        return {"shadow": shadow, "steps": self.steps, "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow, self.steps, self.updates = state["shadow"], state["steps"], state["updates"]
        self._restored = True


class Lookahead(_ValidatedOnAverage):
    """Lookahead weights (Zhang et al. 2019) as airbench94 schedules them: a slow copy pulled towards the
    trained weights every ``every`` steps, which the training then goes on from.

    Every ``every``-th optimizer step: ``slow = decay_t * slow + (1 - decay_t) * weights``, then
    ``weights = slow``. ``decay_t = decay * progress ** ramp`` grows from 0 (the slow copy simply
    follows) to ``decay`` at the end of the run, so that the averaging bites as the learning rate
    falls. airbench94's values: every 5 steps, decay 0.95 ** 5, ramp 3; its ablations found lookahead
    useful only with fast batch-norm statistics (``basic_cnn(bn_momentum=0.4)``). Batch-norm running
    statistics are averaged with the weights. At the end of fit the model holds the slow weights,
    and fit's validation after each epoch runs on them too (the training goes on from its own), so
    the last epoch's figures are those of the model fit hands back. Its state is checkpointed, so a
    resumed run goes on exactly.
    """

    def __init__(self, decay: float = 0.95**5, every: int = 5, ramp: float = 3.0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"Lookahead: decay must be in (0, 1), e.g. 0.95 ** 5 = 0.774 (airbench94); got {decay!r}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"Lookahead: every must be an integer >= 1 (pull after every N-th step); got {every!r}")
        if not ramp >= 0:
            raise ValueError(
                f"Lookahead: ramp must be >= 0 (0: the full decay from the start; 3: airbench94); got {ramp!r}"
            )
        super().__init__()
        self.decay, self.every, self.ramp = decay, every, ramp
        self.slow: dict[str, torch.Tensor] | None = None
        self.steps = 0  # optimizer steps seen
        self.total = 0  # optimizer steps in the whole run: epochs * steps_per_epoch

    def current_decay(self) -> float:
        """The decay of the pull made after the current step."""
        progress = min(1.0, self.steps / self.total) if self.total else 1.0
        return self.decay * progress**self.ramp

    @torch.no_grad()
    def pull(self, model: nn.Module, decay: float) -> None:
        """Move the slow weights towards the model's by ``1 - decay`` and put them into the model."""
        tensors = model.state_dict()
        if self.slow is None or set(self.slow) != set(tensors):
            self.slow = {name: tensor.detach().clone() for name, tensor in tensors.items()}
        for name, tensor in tensors.items():
            if tensor.is_floating_point():
                kept = self.slow[name]
                kept.lerp_(tensor.detach().to(kept.dtype), 1.0 - decay)
                tensor.copy_(kept)

    def _average(self, model: nn.Module) -> dict[str, torch.Tensor]:
        slow = self.slow or {}
        return {name: kept for name, kept in slow.items() if kept.is_floating_point()}  # what a pull writes

    def on_fit_start(self, state: FitState) -> None:
        self.total = state.epochs * state.steps_per_epoch
        if self.slow is None:
            self.slow = {name: tensor.detach().clone() for name, tensor in state.model.state_dict().items()}
        else:  # restored from a checkpoint: onto the model's device
            device = next(iter(state.model.state_dict().values())).device
            self.slow = {name: tensor.to(device) for name, tensor in self.slow.items()}
        self._start_swapping(state.model)

    def on_batch_end(self, state: FitState, step: int, loss: torch.Tensor) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            self.pull(state.model, self.current_decay())
        self._armed = True

    def on_fit_end(self, state: FitState) -> None:
        self._stop_swapping(state.model)
        if self.slow is not None and self.steps:
            self.pull(state.model, 1.0)  # decay 1: the model takes the slow weights as they are

    def state_dict(self) -> dict[str, Any]:
        slow = {k: v.detach().cpu() for k, v in self.slow.items()} if self.slow is not None else None
        return {"slow": slow, "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.slow, self.steps = state["slow"], state["steps"]
