"""The parts of fit's training step: optimizer step, metric sums, NaN guard, progress bar, Ctrl-C."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class OptimizerStep:
    """Backward, clipping (of the unscaled gradients under a GradScaler), step, and a per-step schedule."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, scaler: torch.amp.GradScaler | None = None,
                 grad_clip: float | None = None, scheduler: Any = None) -> None:  # fmt: skip
        self.optimizer, self.grad_clip, self.scheduler = optimizer, grad_clip, scheduler
        self.scaler = scaler or torch.amp.GradScaler(enabled=False)  # disabled: plain backward and step
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def __call__(self, loss: torch.Tensor) -> float:
        """Step on ``loss``; return the learning rate the step used (the first group's)."""
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clipping and the skip test see the true gradients
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return lr


class MetricSums:
    """An epoch's loss sum (float64: the order of additions does not show), correct and image counts, on the device
    until read; sums, so processes can add theirs and an interrupted epoch carry on."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:  # loss: the batch's mean
        self.loss_sum += loss.detach().double() * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.seen += len(y)

    def read(self) -> tuple[float, int, int]:
        """(loss sum, correct, images) as Python numbers: one wait for the device."""
        return self.loss_sum.item(), int(self.correct.item()), self.seen

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum.detach().cpu(), "correct": self.correct.detach().cpu(), "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss_sum = state["loss_sum"].to(self.loss_sum.device, torch.float64)
        self.correct = state["correct"].to(self.correct.device, torch.int64)
        self.seen = int(state["seen"])


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite (fit turns it into a FloatingPointError with advice)."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"loss {value} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.value = epoch, step, value


def check_finite_loss(loss_sum: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss_sum):
        raise NonFiniteLoss(epoch, step, loss_sum)


def non_finite_tensors(model: nn.Module, device: torch.device) -> list[str]:
    """The model's parameters and floating-point buffers that hold a NaN or infinity, named; one sync."""
    named = [(f"parameter {n!r}", t) for n, t in model.named_parameters()]
    named += [(f"buffer {n!r}", t) for n, t in model.named_buffers() if t.is_floating_point()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(t.detach()).all().to(device) for _, t in named]).tolist()
    return [name for (name, _), good in zip(named, ok, strict=True) if not good]


class ProgressBar:
    """One epoch's tqdm bar; tqdm's own no-op when disabled."""

    def __init__(self, enabled: bool, desc: str, total: int, *, done: int = 0, seen_before: int = 0,
                 world_size: int = 1) -> None:  # fmt: skip
        from tqdm.auto import tqdm  # a widget in notebooks, a text bar in terminals

        self.bar = tqdm(total=total, initial=done, desc=desc, leave=False, unit="batch", disable=not enabled)
        self.update, self.close = self.bar.update, self.bar.close
        # A resumed epoch starts with the steps and images done before it stopped; the rate counts this call's.
        self.start, self.seen_before, self.world_size = time.perf_counter(), seen_before, world_size

    def show(self, loss_sum: float, correct: int, seen: int) -> None:
        """``loss 0.812 acc 71.4% 1520 img/s`` beside the bar; images/s of this call, all processes."""
        if not self.bar.disable:
            rate = (seen - self.seen_before) * self.world_size / max(time.perf_counter() - self.start, 1e-9)
            text = f"loss {loss_sum / seen:.3f} acc {100 * correct / seen:.1f}% {rate:.0f} img/s"
            self.bar.set_postfix_str(text, refresh=False)


class StepBoundaryInterrupt:
    """Ctrl-C stops at the end of the step under way (halfway, a step leaves a state no run ever had), a second at
    once; only over Python's own handler in one process's main thread (torchrun's others would wait forever)."""

    def __init__(self, enabled: bool, say: Callable[[str], None] = print) -> None:
        self.enabled, self.say, self.requested, self.previous = enabled, say, False, None

    def __enter__(self) -> StepBoundaryInterrupt:
        main_thread = threading.current_thread() is threading.main_thread()
        if self.enabled and main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    def _handle(self, signum: int, frame: object) -> None:
        self.raise_if_requested()  # the second Ctrl-C: at once
        self.requested = True
        self.say("stopping after the step or validation under way (Ctrl-C again to stop at once, mid-step)")

    def raise_if_requested(self) -> None:  # between steps
        if self.requested:
            raise KeyboardInterrupt
