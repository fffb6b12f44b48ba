"""fit: the training loop, top to bottom as a run goes: options -> checks on the data -> loaders, optimizer and
schedule -> what a resume must match -> the folder's lock -> epochs -> History.

Exact resume rests on two rules: each epoch's shuffle is derived from (seed, epoch), and a checkpoint keeps every
random generator's state, so a resumed run draws the numbers an unbroken one draws.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import imgzoo.train.checkpoint as ckpt
import imgzoo.train.config as fit_config
import imgzoo.train.data as fit_data
import imgzoo.train.distributed as distributed
import imgzoo.train.steps as train_steps
from imgzoo._device import amp_dtype, autocast, resolve_device, use_channels_last
from imgzoo.eval import History, eval_sums
from imgzoo.train.callbacks import CSVLogger, EarlyStopping, FitState
from imgzoo.train.config import FitConfig
from imgzoo.train.steps import MetricSums, NonFiniteLoss, OptimizerStep, ProgressBar, StepBoundaryInterrupt

__all__ = ["CSVLogger", "EarlyStopping", "FitConfig", "History", "amp_dtype", "fit"]


def fit(model: nn.Module, train: Dataset | DataLoader, val: Dataset | DataLoader | None = None, *,
        config: FitConfig | None = None, **options: Any) -> History:  # fmt: skip
    """Train ``model`` in place on ``train``; return the :class:`History`.

    ``train`` and ``val``: Datasets of (image, class index) pairs (an untransformed ImageDataset is batched for the
    model's data spec), DataLoaders, ``imgzoo.data.batches(...)`` or any iterable of (x, y) batches. ``options``:
    :class:`FitConfig`'s fields (``epochs=3, lr=0.1``), laid over ``config=FitConfig(...)`` or a ``recipe=``'s on a
    copy. ``checkpoint_dir`` gets ``last.pt`` every epoch, and ``interrupted.pt`` on Ctrl-C (after the step under
    way); ``resume=`` either continues to exactly an unbroken run's weights (CPU, seeded). A non-finite loss or weight
    raises FloatingPointError, keeping the last good checkpoint. Under ``torchrun``: DDP (batch norms: rank 0's)."""
    cfg = fit_config.resolve_config(config, options)
    device = resolve_device(cfg.device)
    ctx = distributed.setup(device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    run = _Run(model, train, val, cfg, device, ctx)  # every check; nothing trained or written yet
    folder, error = run.checkpoint_dir, None
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(ckpt.lock_checkpoint_dir(folder if ctx.is_main else None))
        except ckpt.CheckpointDirError as e:
            error = e
        # Rank 0 holds the folder's lock; every process learns if it failed, so none waits forever.
        if distributed.any_process(ctx, error is not None, device=device):
            raise error or ckpt.CheckpointDirError(f"fit: rank 0 could not lock {folder}; its error says why")
        return run.run()


class _Run:
    """One call of fit: the state that lives for the run, and its phases as methods."""

    late_interrupt = False  # a Ctrl-C during the last validation, when no step was left to stop at

    def __init__(self, model: nn.Module, train: Any, val: Any, cfg: FitConfig, device: torch.device, ctx: Any) -> None:
        self.cfg, self.device, self.ctx, self.model = cfg, device, ctx, model  # the plain module: saved, restored
        self.say = ctx.is_main and cfg.verbose > 0
        self.bars = self.say and cfg.verbose == 1  # progress bars beside the lines
        self.amp_dtype = amp_dtype(cfg.amp, device)
        self.channels_last = use_channels_last(cfg.channels_last, device, self.amp_dtype)
        # Checks first: nothing is trained, seeded or written unless the inputs are sound.
        model.to(device)
        self.resume_path = ckpt.resolve_resume(cfg.resume) if cfg.resume is not None else None
        saved = self.saved = ckpt.load_checkpoint(self.resume_path) if self.resume_path is not None else None
        fresh_seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(4), "little")
        self.seed = seed = saved["seed"] if saved is not None else fresh_seed
        self.callbacks = fit_config.fit_callbacks(cfg, has_val=val is not None)
        # A new head first learns alone on the un-augmented images' features: fit needs the images themselves.
        fresh = saved is None and not cfg.initial_epoch  # a run that goes on has its trained head already
        self.head_batches = fit_data.plain_batches(train, model) if cfg.head_epochs and fresh else None
        train = fit_data.accept(train, model, cfg, seed, "training", ctx, device)
        val = fit_data.accept(val, model, cfg, seed, "validation", ctx, device)
        self.num_classes = fit_data.check_data(model, train, val, device, saved, self.resume_path)
        # Dropout differs per process; shuffles agree through the sampler.
        random.seed(seed + ctx.rank)
        np.random.seed((seed + ctx.rank) % 2**32)
        torch.manual_seed(seed + ctx.rank)
        self.train_loader, self.sampler, self.loader_generator = fit_data.train_loader(train, cfg, seed, ctx, device)
        self.val_loader = fit_data.val_loader(val, cfg, ctx, device)
        steps = len(self.train_loader)
        if steps == 0:
            raise ValueError("fit: the training loader yields no batches (drop_last with fewer samples than a batch?)")
        self.labels_checked = fit_data.labels_known(train)
        # A user's loader shuffles with its own generator, or with the global one (restored from the checkpoint).
        self.user_generator = fit_data.own_generator(self.train_loader) if self.sampler is None else None
        self.schedule_sized_for = fit_config.schedule_size(cfg, steps)
        self.optimizer = fit_config.build_optimizer(model, cfg)
        if saved is not None:  # everything a resume must match, compared before a single tensor is loaded
            path = self.resume_path
            ckpt.check_stop_resumable(saved, path, ctx.world_size)
            ckpt.check_model_fits(saved, model, path)
            ckpt.check_optimizer_fits(saved, self.optimizer, fit_config.optimizer_name(self.optimizer), path)
            if saved["epoch"] < cfg.epochs:
                fit_config.check_schedule_resumable(saved.get("schedule_sized_for"), self.schedule_sized_for, path)
        self.scheduler, self.schedule_interval = fit_config.build_schedule(self.optimizer, cfg, steps)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype is torch.float16 else None
        per_step = self.scheduler if self.schedule_interval == "step" else None
        self.step = OptimizerStep(self.optimizer, scaler=self.scaler, grad_clip=cfg.grad_clip, scheduler=per_step)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.history = History()
        first = self.start_epoch = cfg.initial_epoch + 1
        self.state = FitState(model, self.optimizer, self.history, first - 1, cfg.epochs, ctx.is_main, steps, first - 1)
        self.position, self.sums = ckpt.EpochPosition(self.train_loader, self.user_generator), MetricSums(device)
        self.lr, self.epoch_began = self.optimizer.param_groups[0]["lr"], time.perf_counter()
        self.partial: dict[str, Any] | None = None  # set by a resume from interrupted.pt
        self.refresh = 1 if device.type == "cpu" else 20  # a sync per step costs nothing on CPU; on a GPU it does
        self.interrupts = StepBoundaryInterrupt(enabled=not ctx.enabled, say=self._print)
        # A resumed run keeps checkpointing where it resumed from, unless told otherwise.
        directory = cfg.checkpoint_dir or (self.resume_path.parent if self.resume_path is not None else None)
        self.checkpoint_dir = Path(directory) if directory is not None else None

    def run(self) -> History:
        """Restore the checkpoint when resuming, then train; every check has passed by now."""
        if self.saved is not None:
            self._restore(self.saved)
        if self.start_epoch > self.cfg.epochs:
            done = f"{self.start_epoch - 1} of {self.cfg.epochs}"
            self._print(f"nothing to do: the checkpoint has already finished {done} epochs")
            return self.history
        if self.head_batches is not None:  # a fresh fit only: a checkpoint already holds the warmed-up head
            options = {"dtype": self.amp_dtype, "label_smoothing": self.cfg.label_smoothing, "seed": self.seed}
            options |= {"say": self._print, "progress": self.bars}
            train_steps.warm_up_head(self.model, self.head_batches, self.cfg.head_epochs, device=self.device, **options)
        # channels_last, DDP and torch.compile; callbacks and checkpoints keep seeing the plain model.
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        net: nn.Module = self.model
        if self.ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.net = torch.compile(net) if self.cfg.compile else net
        for cb in self.callbacks:
            cb.on_fit_start(self.state)
        try:
            self._epochs()
        except Exception as error:
            # However fit ends, callbacks end too (EarlyStopping restores the best weights); then the error goes on.
            self._fit_end(error)
            raise
        self._fit_end()
        if self.late_interrupt:  # the training is done and saved; the caller's work after fit is what stops
            raise KeyboardInterrupt(
                f"Ctrl-C after the last step of epoch {self.history.epoch[-1]}: the training is done and saved"
            )
        return self.history

    def _restore(self, state: dict[str, Any]) -> None:
        """Load the checkpoint into every part of the run; its checks in __init__ have passed."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for part, key in ((self.scheduler, "scheduler"), (self.scaler, "scaler")):
            if part is not None and state[key] is not None:
                part.load_state_dict(state[key])
        for cb, cb_state in zip(self.callbacks, state.get("callbacks", []), strict=False):
            cb.load_state_dict(cb_state)
        if self.user_generator is not None and state.get("loader_generator") is not None:
            self.user_generator.set_state(state["loader_generator"])
        self.history = self.state.history = History.from_dict(state["history"])
        self.start_epoch = state["epoch"] + 1
        # Each process its own generators; with another number of processes (or a checkpoint without
        # them) every process takes rank 0's, and the resume is no longer exact.
        per_rank = state.get("rng_per_rank")
        own = per_rank is not None and len(per_rank) == self.ctx.world_size
        ckpt.restore_rng(per_rank[self.ctx.rank] if own else state["rng"])
        # interrupted.pt: the epoch it stopped in goes on from its next step (check_stop_resumable passed).
        self.partial, self.rng_at_stop = state.get("partial"), state["rng"]

    def _fit_end(self, error: Exception | None = None) -> None:
        if self.ctx.enabled:
            # DDP sits in reference cycles: uncollected, it held gloo work until the interpreter's teardown, which
            # then aborted 5 of 110 torchrun runs of tests/_fit_worker.py (2-core Xeon); 0 of 140 with this.
            self.net = self.model
            gc.collect()
        if self.channels_last and self.cfg.channels_last == "auto":
            # fit's choice, not the user's: hand the model back computing exactly as its weights loaded from disk.
            self.model.to(memory_format=torch.contiguous_format)
        for cb in self.callbacks:
            try:
                cb.on_fit_end(self.state)
            except Exception as cb_error:  # the training error stays the one raised; this one is attached
                if error is None:
                    raise
                if hasattr(error, "add_note"):  # Python 3.11+
                    error.add_note(f"{type(cb).__name__}.on_fit_end also failed: {cb_error!r}")

    def _epochs(self) -> None:
        """Every epoch of the run; returns on finishing, a stop request, max_time or Ctrl-C."""
        cfg, fit_start = self.cfg, time.perf_counter()
        try:
            with self.interrupts:
                for epoch in range(self.start_epoch, cfg.epochs + 1):
                    row = self._epoch(epoch)
                    elapsed = time.perf_counter() - fit_start + row["time"]
                    out_of_time = cfg.max_time is not None and epoch < cfg.epochs and elapsed > cfg.max_time
                    # Every process decides alike, or the others would wait forever.
                    if distributed.any_process(self.ctx, self.state.should_stop or out_of_time, device=self.device):
                        why = f"another epoch would pass max_time={cfg.max_time:g} s" if out_of_time else None
                        self._print(f"stopping after epoch {epoch}: {why or 'a callback asked to stop'}")
                        break
            self.late_interrupt = self.interrupts.requested
        except KeyboardInterrupt:
            self._interrupted()
        except NonFiniteLoss as e:
            raise self._non_finite(f"the training loss became {e.value} at epoch {e.epoch}, batch {e.step}") from None

    def _epoch(self, epoch: int) -> dict[str, Any]:
        """Train, validate, check, record, checkpoint and print one epoch."""
        self.position.begin_epoch(epoch)
        self.interrupts.raise_if_requested()  # a Ctrl-C during the last validation stops here, between epochs
        self.state.epoch = epoch
        for cb in self.callbacks:
            cb.on_epoch_start(self.state)
        row: dict[str, Any] = {"epoch": epoch, **self._train_epoch(epoch), **self._validate()}
        self._check_finite(epoch, row)  # before callbacks and the checkpoint see the epoch
        if self.scheduler is not None and self.schedule_interval == "epoch":
            self.scheduler.step()
        row["time"] = time.perf_counter() - self.epoch_began
        self.history.append(**row)
        for cb in self.callbacks:
            cb.on_epoch_end(self.state)
        self._save(ckpt.LAST, epoch)
        if self.checkpoint_dir is not None and self.ctx.is_main:  # superseded: the folder's latest point is last.pt
            (self.checkpoint_dir / ckpt.INTERRUPTED).unlink(missing_ok=True)
        self._print(epoch_line(row, self.cfg.epochs))
        return row

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        batches, steps = self._epoch_batches(epoch), len(self.train_loader)
        self.net.train()
        label = f"epoch {epoch:>{len(str(self.cfg.epochs))}}/{self.cfg.epochs}"
        done, seen = self.position.steps_done, self.sums.seen
        bar = ProgressBar(self.bars, label, steps, done=done, seen_before=seen, world_size=self.ctx.world_size)
        try:
            for step, (x, y) in enumerate(self._fetching(batches), start=done):
                loss = self._train_step(epoch, step, x, y)
                if step % self.refresh == 0 or step == steps - 1:  # the NaN guard and the bar's figures
                    loss_sum, correct, seen = self.sums.read()
                    train_steps.check_finite_loss(loss_sum, epoch, step)
                    bar.show(loss_sum, correct, seen)
                bar.update()
                for cb in self.callbacks:
                    cb.on_batch_end(self.state, step, loss)
                self.interrupts.raise_if_requested()
                self.position.at_step_boundary = False  # the next batch is being fetched
        finally:
            bar.close()
        loss, correct, n = distributed.all_reduce_sums(self.ctx, *self.sums.read(), device=self.device)
        train_steps.check_finite_loss(loss, epoch, steps - 1)
        seconds = time.perf_counter() - self.epoch_began
        return {"train_loss": loss / n, "train_acc": correct / n, "lr": self.lr, "images_per_sec": n / seconds}

    def _epoch_batches(self, epoch: int) -> Iterator:
        """The epoch's batches, shuffled by (seed, epoch); after an interruption, from the next step on."""
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        elif callable(getattr(self.train_loader, "set_epoch", None)):
            self.train_loader.set_epoch(epoch - 1)  # a FastLoader's alternating flips; fit counts from 1, it from 0
        self.loader_generator.manual_seed(self.seed * 1_000_003 + epoch)
        partial, self.partial = self.partial, None
        self.sums = MetricSums(self.device)
        if partial is None or partial["epoch"] != epoch:
            self.epoch_began = time.perf_counter()
            return self.position.begin_batches()
        self.sums.load_state_dict(partial["sums"])
        self.lr, self.epoch_began = partial["lr"], time.perf_counter() - partial["seconds"]
        return self.position.resume_batches(partial, self.rng_at_stop)

    def _fetching(self, batches: Iterator) -> Iterator:
        """The batches; a loader broken by a deferred Ctrl-C (its worker processes get it at once) stops cleanly:
        the failed fetch produced no batch, so the run still stands between two steps."""
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception:
                if not self.interrupts.requested:
                    raise
                self.position.at_step_boundary = True
                raise KeyboardInterrupt from None
            yield batch

    def _train_step(self, epoch: int, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, loss, optimizer step and metric sums for one batch; returns the batch's detached loss."""
        if not self.labels_checked:
            fit_data.check_labels(y, self.num_classes, f"epoch {epoch}, batch {step}")
        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(self.device, non_blocking=True)
        with autocast(self.device, self.amp_dtype):
            logits = self.net(x)
            loss = self.criterion(logits, y)
        self.lr = self.step(loss)
        self.sums.add(loss, logits, y)
        self.position.end_step()
        return loss.detach()

    def _validate(self) -> dict[str, float | None]:
        if self.val_loader is None:
            return {"val_loss": None, "val_acc": None}
        # Under DDP, validate the plain module: the shards may differ by one batch, and DDP's
        # forward would wait for a buffer broadcast from processes that have already finished.
        net = self.model if self.ctx.enabled else self.net
        sums = eval_sums(
            net, self.val_loader, device=self.device, amp_dtype=self.amp_dtype, channels_last=self.channels_last
        )
        loss, correct, n = distributed.all_reduce_sums(
            self.ctx, sums["loss_sum"], float(sums["correct"]), float(sums["n"]), device=self.device
        )
        return {"val_loss": loss / n, "val_acc": correct / n}

    def _save(self, name: str, epoch: int, *, all_ranks: bool = True, **stop: Any) -> Path | None:
        """Write a checkpoint on rank 0; under torchrun every process calls it at the same point, except with
        ``all_ranks=False`` (Ctrl-C stops processes anywhere), which skips gathering their generator states."""
        if self.checkpoint_dir is None:
            return None
        rng = stop.pop("rng", None) or ckpt.capture_rng()  # this process's (rank 0's)
        # Under torchrun, every process's generator states in rank order; each restores its own.
        rng_per_rank = distributed.all_gather_objects(self.ctx, rng) if self.ctx.enabled and all_ranks else None
        if not self.ctx.is_main:
            return None
        payload = {
            "epoch": epoch,  # finished epochs
            "seed": self.seed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_class": fit_config.optimizer_name(self.optimizer),  # another optimizer's state would not fit
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            # A user's loader's own generator; fit's are derived from (seed, epoch).
            "loader_generator": self.user_generator.get_state() if self.user_generator is not None else None,
            **ckpt.model_identity(self.model),
            "rng": rng,
            "rng_per_rank": rng_per_rank,
            "history": self.history.to_dict(),
            "schedule_sized_for": self.schedule_sized_for,  # a resume that asks for another length is refused
            "world_size": self.ctx.world_size,
            "partial": None,  # where inside an epoch interrupted.pt stopped; None: at an epoch's end
            **stop,
        }
        return ckpt.save_checkpoint(self.checkpoint_dir / name, payload)

    def _interrupted(self) -> None:
        """Ctrl-C: write interrupted.pt, where the run stopped, and say what it saved and how to go on from there."""
        position, finished = self.position, self.history.epoch[-1] if len(self.history) else 0
        seconds = time.perf_counter() - self.epoch_began
        partial = position.record(self.sums, self.lr, seconds, self.ctx.world_size)
        if partial is None:  # no step of this epoch finished: the run stands at the end of the last one
            stop = {"rng": position.entry_rng, "loader_generator": position.entry_loader_generator}
        else:
            stop = {"rng": ckpt.capture_rng(), "partial": partial}
        path = self._save(ckpt.INTERRUPTED, finished, all_ranks=False, **stop)
        where, kept = f"interrupted during epoch {position.epoch}", f"History holds the {finished} finished epochs."
        if path is None:
            text = f"{where}. {kept} (Pass checkpoint_dir= to be able to resume.)"
        elif partial is None:
            text = f"{where}, before its first step; saved {path}. {kept} Continue with fit(..., resume='{path}')."
        elif partial["exact"]:
            steps = f"after {partial['steps_done']} of its {len(self.train_loader)} steps"
            text = f"{where} {steps}; saved {path}. {kept} Continue exactly from there: fit(..., resume='{path}')."
        else:
            last = path.with_name(ckpt.LAST)
            instead = f"resume from {last} (the end of epoch {finished})" if finished else "start again without resume="
            text = f"{where}; the weights of that moment are in {path}, but {partial['why']}: {instead}. {kept}"
        self._print(text)

    def _non_finite(self, what: str, stopped: str = "") -> FloatingPointError:
        last = self.checkpoint_dir / ckpt.LAST if self.checkpoint_dir is not None else None
        kept = f"The last good checkpoint, {last}, is kept" if last is not None and last.exists() else None
        kept = kept or "No checkpoint was written (pass checkpoint_dir= to keep one)"
        advice = "Try a lower lr, grad_clip=1.0, or amp='bf16' instead of fp16."
        return FloatingPointError(f"fit: {what}; training stopped{stopped}. {kept}. {advice}")

    def _check_finite(self, epoch: int, row: dict[str, Any]) -> None:
        """Raise FloatingPointError if the epoch's losses or the weights are not all finite: weights that turn NaN
        at the epoch's last step show only in val_loss or in the weights, and such an epoch must not be last.pt."""
        found = [f"{k} ({row[k]})" for k in ("train_loss", "val_loss") if not math.isfinite(row[k] or 0.0)]
        found += train_steps.non_finite_tensors(self.model, self.device)
        # Batch-norm buffers are each process's own: every process must agree to stop, or the others hang.
        if not distributed.any_process(self.ctx, bool(found), device=self.device):
            return
        what = ", ".join(found) if found else "the weights of another process"
        where = f"non-finite values at the end of epoch {epoch}: {what}"
        raise self._non_finite(where, " before the epoch was recorded or checkpointed")

    def _print(self, text: str) -> None:
        if self.say:
            from tqdm.auto import tqdm

            tqdm.write(text)  # does not break a progress bar that is still on screen


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The one fixed-format line printed per epoch, e.g. ``epoch 3/30 | train loss 0.812 acc 71.4% | ...``."""
    parts = [f"epoch {row['epoch']:>{len(str(epochs))}}/{epochs}",
             f"train loss {row['train_loss']:.3f} acc {100 * row['train_acc']:.1f}%"]  # fmt: skip
    if row["val_loss"] is not None:
        parts.append(f"val loss {row['val_loss']:.3f} acc {100 * row['val_acc']:.1f}%")
    return " | ".join([*parts, f"lr {row['lr']:.3g}", f"{row['time']:.1f} s"])
