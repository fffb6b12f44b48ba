"""The parts of fit's training step: optimizer step, metric sums, NaN guard, progress bar, Ctrl-C; and transfer
learning's first step, a new head trained alone on a frozen backbone's pooled features, computed once. A random
head's first gradients, sent back through an unfrozen backbone, would wreck the features it came for (Kumar et al.
2022, "Fine-Tuning can Distort Pretrained Features", arXiv:2202.10054: linear probing then fine-tuning beats
fine-tuning alone); on cached features the head's epochs cost next to nothing."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from imgzoo._device import autocast


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


HEAD_LR = 1e-3  # AdamW's default: SGD at 0.1 overshot a new head on frozen features
HEAD_BATCH = 256


def pooled_features(
    model: nn.Module, batches: Iterable, device: torch.device, dtype: torch.dtype | None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of every batch: ``forward_head(..., pre_logits=True)`` in eval mode, as float32."""
    from tqdm.auto import tqdm

    model.eval()
    features, labels = [], []
    with torch.no_grad(), autocast(device, dtype):
        for x, y in tqdm(batches, desc="backbone features (once)", leave=False, disable=not progress):
            features.append(model.forward_head(model.forward_features(x.to(device)), pre_logits=True).float())
            labels.append(y.to(device))
    return torch.cat(features), torch.cat(labels)


def warm_up_head(
    model: nn.Module,
    batches: Iterable,
    epochs: int,
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
    label_smoothing: float = 0.0,
    seed: int = 0,
    say: Callable[[str], None] | None = print,
    progress: bool = False,
) -> float:
    """Train ``model.get_classifier()`` alone for ``epochs`` passes over the features of ``batches`` (un-augmented
    training images), with AdamW on a cosine schedule; returns its training accuracy. The backbone is not touched.
    ``say`` gets the result line; ``progress`` shows a bar while the features are computed."""
    head = model.get_classifier()
    x, y = pooled_features(model, batches, device, dtype, progress=progress)
    optimizer = torch.optim.AdamW(head.parameters(), lr=HEAD_LR)
    steps = epochs * -(-len(y) // HEAD_BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    loss_fn, generator = nn.CrossEntropyLoss(label_smoothing=label_smoothing), torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=generator).split(HEAD_BATCH):
            idx = idx.to(y.device)
            loss = loss_fn(head(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        accuracy = (head(x).argmax(1) == y).float().mean().item()
    if say is not None:
        say(f"head: {epochs} epochs on the frozen backbone's features of {len(y)} images, train top-1 {accuracy:.2%}")
    return accuracy
