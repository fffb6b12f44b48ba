"""Hooks into :func:`imgzoo.fit` (docs/training.md); a callback's ``state_dict`` goes into the checkpoint."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgzoo.data.datasets import is_int
from imgzoo.eval.history import COLUMNS, History


@dataclass
class FitState:
    """What callbacks can see and change."""

    model: nn.Module  # the plain model, not the DDP / compiled wrapper
    optimizer: torch.optim.Optimizer
    history: History
    epoch: int  # 1-based; 0 before the first epoch
    epochs: int
    is_main: bool  # rank 0: the only process that should write files
    steps_per_epoch: int = 0  # optimizer steps in one epoch (batches of the training loader)
    initial_epoch: int = 0  # epochs trained before this fit (FitConfig.initial_epoch); it trains the ones after
    should_stop: bool = False  # set True: training ends after this epoch


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
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras's and Lightning's defaults);
    ``restore_best`` loads the best epoch's weights when training ends, however it ends."""

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
        self.best, self.best_epoch, self.wait = math.inf if mode == "min" else -math.inf, 0, 0
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, state: FitState) -> None:
        value = getattr(state.history, self.monitor)[-1]  # fit refuses a val_ column without validation data
        if value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta:
            self.best, self.best_epoch, self.wait = value, state.epoch, 0
            if self.restore_best:
                self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()}
        else:
            self.wait += 1
            state.should_stop |= self.wait >= self.patience

    def on_fit_end(self, state: FitState) -> None:
        if self.restore_best and self.best_weights is not None:
            state.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait, self.best_weights = (state[k] for k in self.state_dict())


class CSVLogger(Callback):
    """Rewrite ``path`` with the whole History after every epoch (atomically, on rank 0 only)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def on_epoch_end(self, state: FitState) -> None:
        if state.is_main:
            state.history.to_csv(self.path)


@torch.no_grad()
def _copy_into(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    own = model.state_dict(keep_vars=True)  # copy_ casts to the model's dtypes
    for name, tensor in tensors.items():
        own[name].data.copy_(tensor)


def _moved(tensors: dict[str, torch.Tensor] | None, device: Any) -> dict[str, torch.Tensor] | None:
    return {k: v.detach().to(device) for k, v in tensors.items()} if tensors is not None else None


def _device_of(model: nn.Module) -> torch.device:
    return next(iter(model.state_dict().values())).device


class _ValidatedOnAverage(Callback):
    """Swaps ``_average(model)`` in at the first eval-mode forward after training steps, out when the model trains
    again and at epoch end (before the checkpoint); ``_every_step(model)`` runs every ``every``-th step."""

    def __init__(self, name: str, decay: float, every: int, example: str) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"{name}: decay must be in (0, 1), e.g. {example}; got {decay!r}")
        if not is_int(every, 1):
            raise ValueError(f"{name}: every must be an integer >= 1 (after every N-th optimizer step); got {every!r}")
        self.decay, self.every = decay, every
        self.steps = 0  # optimizer steps seen
        self._stash: dict[str, torch.Tensor] | None = None  # the trained weights while the average is swapped in
        self._armed = False  # training steps have run since the last on_epoch_end: an eval-mode forward swaps
        self._hook: Any = None

    def _swap_out(self, model: nn.Module) -> None:
        if self._stash is not None:
            _copy_into(model, self._stash)
            self._stash = None

    def _before_forward(self, module: nn.Module, args: Any) -> None:
        if module.training:
            self._swap_out(module)  # never train on the average
        elif self._armed and self._stash is None:
            self._stash = {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
            _copy_into(module, self._average(module))  # type: ignore[attr-defined]

    def on_fit_start(self, state: FitState) -> None:
        self._armed = False
        disabled = torch.compiler.disable(self._before_forward)  # plain Python under torch.compile
        self._hook = state.model.register_forward_pre_hook(disabled)

    def on_batch_end(self, state: FitState, step: int, loss: torch.Tensor) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            self._every_step(state.model)  # type: ignore[attr-defined]
        self._armed = True

    def on_epoch_end(self, state: FitState) -> None:
        self._swap_out(state.model)  # the checkpoint, written next, holds the trained weights
        self._armed = False

    def on_fit_end(self, state: FitState) -> None:
        self.on_epoch_end(state)
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


class EMA(_ValidatedOnAverage):
    """An fp32 moving average of the weights (timm's ``ModelEmaV3``), validated during fit and copied into the model
    at its end unless ``copy_to_model=False``; ``warmup``: decay ``min(decay, (1 + t) / (10 + t))`` (TensorFlow)."""

    def __init__(self, decay: float = 0.999, every: int = 1, warmup: bool = True, copy_to_model: bool = True) -> None:
        super().__init__("EMA", decay, every, "0.999 (an average over ~1000 steps)")
        self.warmup, self.copy_to_model = warmup, copy_to_model
        self.shadow: dict[str, torch.Tensor] | None = None
        self.updates = 0  # averaging updates made
        self._restored = False  # the shadow came from a checkpoint: this fit continues it

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Start the average at ``model``'s weights."""
        self.shadow = {k: v.detach().to(v.dtype, copy=True) for k, v in model.state_dict().items()}
        self.shadow = {k: v.float() if v.is_floating_point() else v for k, v in self.shadow.items()}
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

    _every_step = update

    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (cast to its dtypes)."""
        _copy_into(model, self._average(model))

    def _average(self, model: nn.Module) -> dict[str, torch.Tensor]:
        if self.shadow is None:
            raise RuntimeError("EMA: there is no average yet; it starts at fit's first step (or call ema.reset(model))")
        if differ := sorted(set(model.state_dict()) ^ set(self.shadow))[:4]:
            raise ValueError(f"EMA: the average was kept for another model (weights {differ} are in only one of them); "
                             "use a new EMA for each model")  # fmt: skip
        return self.shadow

    def on_fit_start(self, state: FitState) -> None:
        if not self._restored or self.shadow is None:
            self.reset(state.model)  # a new run: the average starts at its first weights
        self.shadow = _moved(self._average(state.model), _device_of(state.model))
        self._restored = False
        super().on_fit_start(state)

    def on_fit_end(self, state: FitState) -> None:
        super().on_fit_end(state)
        if self.copy_to_model and self.shadow is not None:
            self.copy_to(state.model)

    def state_dict(self) -> dict[str, Any]:
        return {"shadow": _moved(self.shadow, "cpu"), "steps": self.steps, "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.shadow, self.steps, self.updates = state["shadow"], state["steps"], state["updates"]
        self._restored = True


class Lookahead(_ValidatedOnAverage):
    """Lookahead (Zhang et al. 2019) as airbench94 schedules it: every ``every``-th step ``slow = d * slow + (1 - d)
    * weights``, then ``weights = slow``, with ``d = decay * progress ** ramp`` (useful with ``bn_momentum=0.4``)."""

    def __init__(self, decay: float = 0.95**5, every: int = 5, ramp: float = 3.0) -> None:
        super().__init__("Lookahead", decay, every, "0.95 ** 5 = 0.774 (airbench94)")
        if not ramp >= 0:
            raise ValueError(f"Lookahead: ramp must be >= 0 (0: the full decay at once; 3: airbench94); got {ramp!r}")
        self.ramp = ramp
        self.slow: dict[str, torch.Tensor] | None = None
        self.total = 0  # optimizer steps in this fit: (epochs - initial_epoch) * steps_per_epoch

    def current_decay(self) -> float:
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

    def _every_step(self, model: nn.Module) -> None:
        self.pull(model, self.current_decay())

    def _average(self, model: nn.Module) -> dict[str, torch.Tensor]:  # what a pull writes
        return {name: kept for name, kept in (self.slow or {}).items() if kept.is_floating_point()}

    def on_fit_start(self, state: FitState) -> None:
        self.total = (state.epochs - state.initial_epoch) * state.steps_per_epoch
        if self.slow is None:
            self.slow = {name: tensor.detach().clone() for name, tensor in state.model.state_dict().items()}
        else:  # restored from a checkpoint
            self.slow = _moved(self.slow, _device_of(state.model))
        super().on_fit_start(state)

    def on_fit_end(self, state: FitState) -> None:
        super().on_fit_end(state)
        if self.slow is not None and self.steps:
            self.pull(state.model, 1.0)  # decay 1: the model takes the slow weights as they are

    def state_dict(self) -> dict[str, Any]:
        return {"slow": _moved(self.slow, "cpu"), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.slow, self.steps = state["slow"], state["steps"]
