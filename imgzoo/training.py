"""fit: the training loop the original notebooks wrote by hand for each experiment, written once.

Read top to bottom in the order a run goes: options -> data loaders -> checks on one
batch -> optimizer and schedule -> resume -> epochs (train, validate, record, checkpoint,
print) -> History. Reproducibility rests on two rules: each epoch's shuffle is derived
from (seed, epoch), and the checkpoint keeps every random generator's state, so a run
killed and resumed draws exactly the numbers an uninterrupted run draws.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset
from torch.utils.data.dataloader import default_collate

from imgzoo import checkpoint as ckpt
from imgzoo import distributed
from imgzoo._device import amp_dtype, autocast, resolve_device
from imgzoo.callbacks import Callback, CSVLogger, EarlyStopping, FitState
from imgzoo.evaluation import eval_sums
from imgzoo.history import History
from imgzoo.loaders import is_batch_loader, own_generator

__all__ = ["CSVLogger", "EarlyStopping", "FitConfig", "History", "amp_dtype", "fit"]

OptimizerSpec = str | type[torch.optim.Optimizer] | Callable[..., torch.optim.Optimizer]
ScheduleSpec = str | None | Callable[[torch.optim.Optimizer], Any]


@dataclass
class FitConfig:
    """Every option of :func:`fit`, with the reason for each default."""

    epochs: int
    # He et al. 2016 trained the CIFAR ResNets with batch 128; so did the original notebooks.
    batch_size: int = 128
    # None: 0.1 for SGD (He et al. 2016, batch 128), else 1e-3 (AdamW, Loshchilov & Hutter 2019).
    lr: float | None = None
    # SGD with Nesterov momentum 0.9 is the CIFAR recipe of He et al. 2016 and of airbench;
    # "adamw", a torch.optim class, or a callable(params) -> optimizer also work.
    # torch.optim.SGD and torch.optim.AdamW get exactly what "sgd" and "adamw" get (SGD: lr 0.1,
    # `momentum` with Nesterov, weight decay 5e-4); any other class gets cls(groups, lr=lr) with
    # lr 1e-3 and weight decay 0.05 by default, and no momentum. A callable gets none of these.
    optimizer: OptimizerSpec = "sgd"
    momentum: float = 0.9  # SGD only; Nesterov whenever > 0
    # None: 5e-4 for SGD (the value of the common CIFAR ResNet reproductions, e.g.
    # kuangliu/pytorch-cifar), else 0.05 (AdamW: DeiT, ConvNeXt). Biases and norm
    # weights are never decayed ("Bag of Tricks", He et al. 2019, section 3.1).
    weight_decay: float | None = None
    # One-cycle (Smith & Topin 2019) reaches a given accuracy in the fewest epochs;
    # "cosine" and "step" (x0.1 at 50% and 75%, He et al. 2016) are the classics.
    # A callable(optimizer) -> scheduler is stepped every `schedule_interval`.
    schedule: ScheduleSpec = "onecycle"
    schedule_interval: str = "epoch"  # "epoch" (Lightning's default) or "step"; callables only
    label_smoothing: float = 0.0  # 0 keeps losses comparable to the notebooks'; timm uses 0.1
    # False: fp32, as Lightning's default. True: bf16 on CPU and on GPUs that support it,
    # else fp16 with a GradScaler. Or name it: "bf16" / "fp16".
    amp: bool | str = False
    grad_clip: float | None = None  # max gradient L2 norm; None: no clipping (Lightning's default)
    channels_last: bool = False  # helps convolutions on tensor-core GPUs; measure before enabling on CPU
    compile: bool = False  # torch.compile costs a minute of compilation; worth it for long runs only
    device: str | torch.device = "auto"  # cuda, then mps, then cpu
    # Runs are reproducible unless asked otherwise; None draws a fresh seed.
    seed: int | None = 0
    # None: 0 for in-memory TensorDatasets (indexing is cheaper than inter-process copies),
    # else min(4, CPUs - 1), timm's default capped by the machine.
    num_workers: int | None = None
    callbacks: Sequence[Callback] = field(default_factory=tuple)
    checkpoint_dir: str | os.PathLike[str] | None = None  # writes last.pt after every epoch
    # A checkpoint_dir or a .pt file it wrote; checkpoints then go on in that folder by default.
    # Resume with the original options: another `epochs` (or batches per epoch, or schedule) than a
    # one-cycle, cosine or step schedule was sized for is refused before any work.
    resume: str | os.PathLike[str] | None = None
    max_time: float | None = None  # seconds; no epoch is started that would not finish in time
    verbose: int = 1  # 0: silent, 1: progress bar and a line per epoch, 2: the lines only

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1:
            raise ValueError(f"fit: epochs must be an integer >= 1, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"fit: batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"fit: lr must be > 0, got {self.lr!r}")
        if isinstance(self.optimizer, str) and self.optimizer not in ("sgd", "adamw"):
            raise ValueError(
                f"fit: optimizer must be 'sgd', 'adamw', a torch.optim class or a callable, got {self.optimizer!r}"
            )
        if isinstance(self.schedule, str) and self.schedule not in ("onecycle", "cosine", "step"):
            raise ValueError(
                f"fit: schedule must be 'onecycle', 'cosine', 'step', None or a callable, got {self.schedule!r}"
            )
        if self.schedule_interval not in ("epoch", "step"):
            raise ValueError(f"fit: schedule_interval must be 'epoch' or 'step', got {self.schedule_interval!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"fit: label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.amp not in (False, True, "bf16", "fp16"):
            raise ValueError(f"fit: amp must be False, True, 'bf16' or 'fp16', got {self.amp!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"fit: grad_clip must be > 0 or None, got {self.grad_clip!r}")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"fit: max_time must be > 0 seconds or None, got {self.max_time!r}")
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"fit: verbose must be 0, 1 or 2, got {self.verbose!r}")
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"fit: callbacks must be imgzoo.callbacks.Callback instances, got {type(cb).__name__}")


# ---------------------------------------------------------------------------- data


def _dataset_of(data: Dataset | DataLoader, role: str) -> Dataset:
    dataset = data.dataset if isinstance(data, DataLoader) else data
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"fit: the {role} data must be a map-style Dataset (with __len__) or a DataLoader over one; "
            f"got {type(dataset).__name__}"
        ) from None
    if size == 0:
        raise ValueError(f"fit: the {role} data set is empty; pass at least one (image, label) sample")
    return dataset


def _default_workers(dataset: Dataset) -> int:
    if isinstance(dataset, TensorDataset):
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _train_loader(
    data: Dataset | DataLoader, cfg: FitConfig, seed: int, ctx: distributed.DistContext, device: torch.device
) -> tuple[DataLoader, DistributedSampler | None, torch.Generator]:
    """The training loader, with a sampler whose shuffle is a function of (seed, epoch).

    A user's DataLoader is used as given in a single process (its shuffle then draws from
    the global generator, whose state the checkpoint keeps); under torchrun it is rebuilt
    around a DistributedSampler so that each process sees its own shard.
    """
    generator = torch.Generator()  # draws the worker seeds; reseeded every epoch
    if is_batch_loader(data) and ctx.enabled:
        raise ValueError(
            f"fit under torchrun cannot shard a {type(data).__name__}; pass the Dataset itself so that "
            "each process gets its own part through a DistributedSampler"
        )
    if (isinstance(data, DataLoader) or is_batch_loader(data)) and not ctx.enabled:
        return data, None, generator
    dataset = _dataset_of(data, "training")
    batch_size = data.batch_size if isinstance(data, DataLoader) and data.batch_size else cfg.batch_size
    workers = data.num_workers if isinstance(data, DataLoader) else cfg.num_workers
    workers = _default_workers(dataset) if workers is None else workers
    # DistributedSampler with one replica is a plain seeded shuffle: one code path for 1 or N processes.
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=data.collate_fn if isinstance(data, DataLoader) else None,
        pin_memory=device.type == "cuda",
        generator=generator,
        # Not persistent: workers seeded once could not replay an epoch's augmentation on resume.
        persistent_workers=False,
    )
    return loader, sampler, generator


def _val_loader(
    data: Dataset | DataLoader | None, cfg: FitConfig, ctx: distributed.DistContext, device: torch.device
) -> DataLoader | None:
    if data is None:
        return None
    if is_batch_loader(data) or (isinstance(data, DataLoader) and not ctx.enabled):
        return data  # under DDP every process scores all of it; the means stay right
    dataset = _dataset_of(data, "validation")
    if ctx.enabled:  # every process scores a disjoint slice; the sums are added up, nothing counted twice
        dataset = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))  # type: ignore[arg-type]
    workers = cfg.num_workers if cfg.num_workers is not None else _default_workers(dataset)
    return DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda"
    )


def _known_labels(dataset: Dataset) -> torch.Tensor | None:
    """All labels at once where the data set exposes them cheaply; else None (checked per batch)."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[1]
    targets = getattr(dataset, "targets", None)  # torchvision's data sets
    if targets is not None:
        try:
            return torch.as_tensor(targets)
        except (TypeError, ValueError):
            return None
    return None


def _check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or y.dim() != 1:
        raise ValueError(
            f"fit: labels must be a 1-D integer tensor of class indices; got dtype {y.dtype}, shape {tuple(y.shape)} "
            f"({where}). One-hot labels: pass y.argmax(1)."
        )
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"fit: labels must lie in [0, {num_classes - 1}] for a model with {num_classes} outputs; "
            f"found {int(y.min())}..{int(y.max())} ({where}). Build the model with num_classes={int(y.max()) + 1} "
            "or fix the labels."
        )


def _dry_run(model: nn.Module, train: Dataset | DataLoader, device: torch.device) -> int:
    """Feed two training samples through the model before any work; return the number of classes.

    Done in eval mode under no_grad, before seeding, so it changes neither the weights,
    the batch-norm statistics nor any random generator that training draws from.
    """
    if is_batch_loader(train):
        if len(train) == 0:
            raise ValueError(f"fit: the training {type(train).__name__} yields no batches")
        dataset = train
        generator = own_generator(train)
        saved = generator.get_state() if generator is not None else None
        batch = next(iter(train))
        if generator is not None:
            generator.set_state(saved)  # the check must not shift the loader's shuffle
    else:
        dataset = _dataset_of(train, "training")
        collate = train.collate_fn if isinstance(train, DataLoader) else default_collate
        batch = collate([dataset[i] for i in range(min(2, len(dataset)))])  # type: ignore[arg-type]
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise ValueError("fit: the training data must yield (image_tensor, label) pairs")
    x, y = batch
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(device))
    except Exception as e:
        spec = getattr(model, "data_spec", None)
        expected = f" It expects {spec.input_shape} per image." if spec is not None else ""
        raise ValueError(
            f"fit: the model could not take a batch of the training data (batch shape {tuple(x.shape)}).{expected} "
            f"Preprocess with imgzoo.transforms.for_model(model, train=True). The model said: {e}"
        ) from e
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise ValueError(f"fit: the model must return (N, num_classes) logits; got shape {tuple(out.shape)}")
    num_classes = out.shape[1]
    labels = _known_labels(dataset)
    _check_labels(labels if labels is not None else torch.as_tensor(y), num_classes, "in the training data")
    return num_classes


# ---------------------------------------------------------------------------- optimization


def _build_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("fit: the model has no trainable parameters (all have requires_grad=False)")
    spec = cfg.optimizer
    if callable(spec) and not (isinstance(spec, type) and issubclass(spec, torch.optim.Optimizer)):
        return spec(params)
    # torch.optim.SGD and AdamW themselves get the recipes of "sgd" and "adamw", not the generic defaults.
    is_sgd = spec == "sgd" or spec is torch.optim.SGD
    is_adamw = spec == "adamw" or spec is torch.optim.AdamW
    lr = cfg.lr if cfg.lr is not None else (0.1 if is_sgd else 1e-3)
    wd = cfg.weight_decay if cfg.weight_decay is not None else (5e-4 if is_sgd else 0.05)
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},  # biases, norm scales
    ]
    groups = [g for g in groups if g["params"]]
    if is_sgd:
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if is_adamw:
        return torch.optim.AdamW(groups, lr=lr)
    return spec(groups, lr=lr)  # another torch.optim class: the generic defaults


def _build_schedule(optimizer: torch.optim.Optimizer, cfg: FitConfig, steps_per_epoch: int) -> tuple[Any, str]:
    """The LR scheduler and whether it steps every batch ("step") or every epoch."""
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler
    if cfg.schedule is None:
        return None, "epoch"
    if cfg.schedule == "onecycle":
        cycle_momentum = any(k in optimizer.defaults for k in ("momentum", "betas")) and (
            optimizer.defaults.get("momentum", 1) > 0
        )
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return sched.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, cycle_momentum=cycle_momentum), "step"
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total), "step"
    if cfg.schedule == "step":
        milestones = sorted({max(1, int(cfg.epochs * 0.5)), max(1, int(cfg.epochs * 0.75))})
        return sched.MultiStepLR(optimizer, milestones=milestones, gamma=0.1), "epoch"
    return cfg.schedule(optimizer), cfg.schedule_interval


_SIZED = {"onecycle": "per step", "cosine": "per step", "step": "per epoch"}  # built-ins sized by the run's length


def _schedule_size(cfg: FitConfig, steps_per_epoch: int) -> dict[str, Any]:
    """What the schedule is built for, as recorded in the checkpoint: its kind, epochs and steps per epoch."""
    kind = cfg.schedule if cfg.schedule is None or isinstance(cfg.schedule, str) else "callable"
    return {"schedule": kind, "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch}


def _check_schedule_resumable(state: dict[str, Any], now: dict[str, Any], resume: Any) -> None:
    """Refuse, before any work, a resume whose schedule would not continue the checkpointed one.

    A restored OneCycleLR, CosineAnnealingLR or MultiStepLR keeps the length it was built
    for: a longer run fails inside torch (one-cycle), trains at the final rate (cosine) or
    drops the rate at the old run's milestones (step). The checkpointed scheduler's state also only fits the same kind
    of schedule. schedule=None and callables are not sized by fit, so their runs resume
    with any epochs. Checkpoints written before the record was kept are not checked.
    """
    saved = state.get("schedule_sized_for")
    if saved is None:
        return
    path = ckpt.resolve_resume(resume)

    def shown(kind: str | None) -> str:
        return "a callable" if kind == "callable" else repr(kind)

    def length(size: dict[str, Any]) -> str:
        steps = f" of {size['steps_per_epoch']} steps" if _SIZED.get(size["schedule"]) == "per step" else ""
        return f"{size['epochs']} epochs{steps}"

    new_run = (
        f"start a new run from its weights: model.load_state_dict(imgzoo.checkpoint.load_checkpoint('{path}')"
        "['model']), then fit without resume= (a fresh schedule for the new length)"
    )
    if saved["schedule"] != now["schedule"]:
        raise ValueError(
            f"fit: cannot resume {path}: it was made with schedule={shown(saved['schedule'])}, and this call asks "
            f"for schedule={shown(now['schedule'])}; the restored scheduler state fits only the same schedule. "
            f"Resume with schedule={shown(saved['schedule'])}, or {new_run}."
        )
    per = _SIZED.get(now["schedule"])
    if per is None:
        return
    if saved["epochs"] != now["epochs"] or (per == "per step" and saved["steps_per_epoch"] != now["steps_per_epoch"]):
        raise ValueError(
            f"fit: cannot resume {path}: it was made with schedule={shown(saved['schedule'])} sized for "
            f"{length(saved)}, and this call asks for {length(now)}. A restored {saved['schedule']} schedule "
            "keeps the length it was built for, so training would fail or go on at the wrong learning rate. "
            f"To continue that run, resume with epochs={saved['epochs']} (and the same batch size and training "
            f"data); to train for another length, {new_run}."
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- the loop


def fit(
    model: nn.Module,
    train: Dataset | DataLoader,
    val: Dataset | DataLoader | None = None,
    *,
    epochs: int,
    **options: Any,
) -> History:
    """Train ``model`` in place on ``train`` for ``epochs`` epochs; return the :class:`History`.

    ``train`` and ``val`` are Datasets or DataLoaders yielding (image tensor, class index)
    pairs; preprocessing and augmentation are the data set's job
    (``imgzoo.transforms.for_model(model, train=True)``). Options, with their defaults
    and the reasons for them, are the fields of :class:`FitConfig`: batch_size, lr,
    optimizer, momentum, weight_decay, schedule, schedule_interval, label_smoothing,
    amp, grad_clip, channels_last, compile, device, seed, num_workers, callbacks,
    checkpoint_dir, resume, max_time, verbose.

    With ``checkpoint_dir``, ``last.pt`` is rewritten atomically after every epoch and
    ``fit(..., resume=checkpoint_dir)`` continues a run that was stopped in any way,
    ending (on CPU, with a seed) with exactly the weights of an uninterrupted run.
    A NaN or infinite loss, or weights that are not finite at the end of an epoch, raise
    FloatingPointError (after every callback's on_fit_end) and leave the last good
    checkpoint in place; Ctrl-C writes ``interrupted.pt`` and returns the History so far.
    Under ``torchrun --nproc_per_node=N`` the same call trains with DDP; the process group
    it starts stays open for later fit calls and ends at interpreter exit. The checkpoint
    keeps every process's random generator states and each restores its own; batch-norm
    running statistics are rank 0's, and resuming with another number of processes is not
    exact.
    """
    known = {f.name for f in dataclasses.fields(FitConfig)} - {"epochs"}
    unknown = set(options) - known
    if unknown:
        raise TypeError(f"fit() got unknown options {sorted(unknown)}; it takes {sorted(known)}")
    cfg = FitConfig(epochs=epochs, **options)
    device = resolve_device(cfg.device)
    ctx = distributed.setup(device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return _Run(model, train, val, cfg, device, ctx).run()


class _Run:
    """One call of fit: the state that lives for the run, and its phases as methods."""

    def __init__(
        self,
        model: nn.Module,
        train: Dataset | DataLoader,
        val: Dataset | DataLoader | None,
        cfg: FitConfig,
        device: torch.device,
        ctx: distributed.DistContext,
    ) -> None:
        self.cfg, self.device, self.ctx = cfg, device, ctx
        self.say = ctx.is_main and cfg.verbose > 0
        self.amp_dtype = amp_dtype(cfg.amp, device)
        # Checks first: nothing is trained, seeded or written unless the inputs are sound.
        model.to(device)
        self.num_classes = _dry_run(model, train, device)
        if val is not None and not is_batch_loader(val):
            _dataset_of(val, "validation")
        for cb in cfg.callbacks:
            if isinstance(cb, EarlyStopping) and cb.monitor.startswith("val_") and val is None:
                raise ValueError(
                    f"fit: EarlyStopping monitors {cb.monitor!r}, but fit was given no validation data: "
                    "pass val= to fit, or monitor a training column (EarlyStopping(monitor='train_loss'))"
                )
        resume_state = ckpt.load_checkpoint(cfg.resume) if cfg.resume is not None else None

        seed = cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(4), "little")
        self.seed = resume_state["seed"] if resume_state is not None else seed
        _seed_everything(self.seed + ctx.rank)  # dropout differs per process; shuffles agree via the sampler
        self.train_loader, self.sampler, self.loader_generator = _train_loader(train, cfg, self.seed, ctx, device)
        self.val_loader = _val_loader(val, cfg, ctx, device)
        if len(self.train_loader) == 0:
            raise ValueError("fit: the training loader yields no batches (drop_last with fewer samples than a batch?)")
        train_set = train if is_batch_loader(train) else _dataset_of(train, "training")
        self.labels_checked = _known_labels(train_set) is not None
        self.schedule_sized_for = _schedule_size(cfg, len(self.train_loader))
        if resume_state is not None and resume_state["epoch"] < cfg.epochs:
            _check_schedule_resumable(resume_state, self.schedule_sized_for, cfg.resume)
        # A user's loader shuffles with its own generator, or with the global one (restored from the checkpoint).
        self.user_generator = own_generator(self.train_loader) if self.sampler is None else None

        self.model = model  # the plain module: what is saved, restored and given to callbacks
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.optimizer = _build_optimizer(model, cfg)
        self.scheduler, self.schedule_interval = _build_schedule(self.optimizer, cfg, len(self.train_loader))
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype is torch.float16 else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.history = History()
        self.state = FitState(model, self.optimizer, self.history, 0, cfg.epochs, ctx.is_main)
        self.start_epoch = 1
        if resume_state is not None:
            self._restore(resume_state)

        net: nn.Module = model
        if ctx.enabled:
            ids = [device.index] if device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.net = torch.compile(net) if cfg.compile else net
        # A resumed run keeps checkpointing where it resumed from, unless told otherwise.
        directory = cfg.checkpoint_dir
        if directory is None and cfg.resume is not None:
            directory = ckpt.resolve_resume(cfg.resume).parent
        self.checkpoint_dir = Path(directory) if directory is not None else None

    # -- checkpoints

    def _payload(self, epoch: int, rng_per_rank: list[dict[str, Any]] | None) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "seed": self.seed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": ckpt.capture_rng(),  # this process's (rank 0's)
            # Under torchrun, every process's generator states in rank order; each restores its own.
            "rng_per_rank": rng_per_rank,
            "loader_generator": self.user_generator.get_state() if self.user_generator is not None else None,
            "history": self.history.to_dict(),
            "callbacks": [cb.state_dict() for cb in self.cfg.callbacks],
            "arch": getattr(self.model, "imgzoo_arch", None),
            # What the schedule was built for: a resume that asks for another length is refused.
            "schedule_sized_for": self.schedule_sized_for,
        }

    def _save(self, name: str, epoch: int, *, all_ranks: bool = True) -> Path | None:
        """Write a checkpoint on rank 0. Under torchrun every process must call it at the same point.

        ``all_ranks=False`` (Ctrl-C, where processes stop wherever they are) skips gathering the
        other processes' generator states, a collective that could wait forever.
        """
        if self.checkpoint_dir is None:
            return None
        rng_per_rank = None
        if self.ctx.enabled and all_ranks:
            rng_per_rank = distributed.all_gather_objects(self.ctx, ckpt.capture_rng())
        if not self.ctx.is_main:
            return None
        return ckpt.save_checkpoint(self.checkpoint_dir / name, self._payload(epoch, rng_per_rank))

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        for cb, cb_state in zip(self.cfg.callbacks, state.get("callbacks", []), strict=False):
            cb.load_state_dict(cb_state)
        self.history = self.state.history = History.from_dict(state["history"])
        self.start_epoch = state["epoch"] + 1
        # Each process its own generators; with another number of processes (or a checkpoint without
        # them) every process takes rank 0's, and the resume is no longer exact.
        per_rank = state.get("rng_per_rank")
        own = per_rank is not None and len(per_rank) == self.ctx.world_size
        ckpt.restore_rng(per_rank[self.ctx.rank] if own else state["rng"])
        if self.user_generator is not None and state.get("loader_generator") is not None:
            self.user_generator.set_state(state["loader_generator"])

    # -- one epoch

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, device = self.cfg, self.device
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        self.loader_generator.manual_seed(self.seed * 1_000_003 + epoch)
        self.net.train()
        # A sync per step costs nothing on CPU; on a GPU, read the loss every 20 steps.
        refresh = 1 if device.type == "cpu" else 20
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen, lr = 0, self.optimizer.param_groups[0]["lr"]
        bar = None
        if self.say and cfg.verbose == 1:
            from tqdm.auto import tqdm  # a widget in notebooks, a text bar in terminals

            width = len(str(cfg.epochs))
            bar = tqdm(
                total=len(self.train_loader), desc=f"epoch {epoch:>{width}}/{cfg.epochs}", leave=False, unit="batch"
            )
        start = time.perf_counter()
        try:
            for step, (x, y) in enumerate(self.train_loader):
                if not self.labels_checked:
                    _check_labels(y, self.num_classes, f"epoch {epoch}, batch {step}")
                x = x.to(device, non_blocking=True)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = y.to(device, non_blocking=True)
                with autocast(device, self.amp_dtype):
                    logits = self.net(x)
                    loss = self.criterion(logits, y)
                self.optimizer.zero_grad(set_to_none=True)
                lr = self.optimizer.param_groups[0]["lr"]
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    if cfg.grad_clip is not None:
                        self.scaler.unscale_(self.optimizer)
                        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                if self.scheduler is not None and self.schedule_interval == "step":
                    self.scheduler.step()
                loss_sum += loss.detach().double() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
                last = step == len(self.train_loader) - 1
                if step % refresh == 0 or last:
                    total = loss_sum.item()
                    if not math.isfinite(total):
                        raise _NonFiniteLoss(epoch, step, total)
                    if bar is not None:
                        elapsed = time.perf_counter() - start
                        bar.set_postfix_str(
                            f"loss {total / seen:.3f} acc {100 * correct.item() / seen:.1f}% "
                            f"{seen * self.ctx.world_size / elapsed:.0f} img/s",
                            refresh=False,
                        )
                if bar is not None:
                    bar.update()
                for cb in cfg.callbacks:
                    cb.on_batch_end(self.state, step, loss.detach())
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
        loss_total, correct_total, n = distributed.all_reduce_sums(
            self.ctx, loss_sum.item(), float(correct.item()), float(seen), device=device
        )
        if not math.isfinite(loss_total):
            raise _NonFiniteLoss(epoch, len(self.train_loader) - 1, loss_total)
        return {"train_loss": loss_total / n, "train_acc": correct_total / n, "lr": lr, "images_per_sec": n / seconds}

    def _validate(self) -> dict[str, float | None]:
        if self.val_loader is None:
            return {"val_loss": None, "val_acc": None}
        # Under DDP, validate the plain module: the shards may differ by one batch, and DDP's
        # forward would wait for a buffer broadcast from processes that have already finished.
        sums = eval_sums(
            self.model if self.ctx.enabled else self.net,
            self.val_loader,
            device=self.device,
            amp_dtype=self.amp_dtype,
            channels_last=self.cfg.channels_last,
        )
        loss, correct, n = distributed.all_reduce_sums(
            self.ctx, sums["loss_sum"], float(sums["correct"]), float(sums["n"]), device=self.device
        )
        return {"val_loss": loss / n, "val_acc": correct / n}

    def _line(self, row: dict[str, Any]) -> str:
        width = len(str(self.cfg.epochs))
        parts = [
            f"epoch {row['epoch']:>{width}}/{self.cfg.epochs}",
            f"train loss {row['train_loss']:.3f} acc {100 * row['train_acc']:.1f}%",
        ]
        if row["val_loss"] is not None:
            parts.append(f"val loss {row['val_loss']:.3f} acc {100 * row['val_acc']:.1f}%")
        parts += [f"lr {row['lr']:.3g}", f"{row['time']:.1f} s"]
        return " | ".join(parts)

    def _print(self, text: str) -> None:
        if self.say:
            from tqdm.auto import tqdm

            tqdm.write(text)  # does not break a progress bar that is still on screen

    # -- the run

    def run(self) -> History:
        cfg = self.cfg
        if self.start_epoch > cfg.epochs:
            self._print(
                f"nothing to do: the checkpoint has already finished {self.start_epoch - 1} of {cfg.epochs} epochs"
            )
            return self.history
        fit_start = time.perf_counter()
        for cb in cfg.callbacks:
            cb.on_fit_start(self.state)
        try:
            self._epochs(fit_start)
        except Exception as error:
            # However fit ends, callbacks end too (EarlyStopping restores the best weights); then the error goes on.
            self._fit_end(error)
            raise
        self._fit_end()
        return self.history

    def _fit_end(self, error: Exception | None = None) -> None:
        for cb in self.cfg.callbacks:
            if error is None:
                cb.on_fit_end(self.state)
                continue
            try:
                cb.on_fit_end(self.state)
            except Exception as cb_error:  # the training error stays the one raised; this one is attached
                if hasattr(error, "add_note"):  # Python 3.11+
                    error.add_note(f"{type(cb).__name__}.on_fit_end also failed: {cb_error!r}")

    def _epochs(self, fit_start: float) -> None:
        """Every epoch of the run; returns on finishing, a stop request, max_time or Ctrl-C."""
        cfg = self.cfg
        epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch, cfg.epochs + 1):
                self.state.epoch = epoch
                for cb in cfg.callbacks:
                    cb.on_epoch_start(self.state)
                epoch_start = time.perf_counter()
                row: dict[str, Any] = {"epoch": epoch, **self._train_epoch(epoch), **self._validate()}
                self._check_finite(epoch, row)  # before callbacks and the checkpoint see the epoch
                if self.scheduler is not None and self.schedule_interval == "epoch":
                    self.scheduler.step()
                row["time"] = time.perf_counter() - epoch_start
                self.history.append(**row)
                for cb in cfg.callbacks:
                    cb.on_epoch_end(self.state)
                self._save(ckpt.LAST, epoch)
                self._print(self._line(row))
                elapsed = time.perf_counter() - fit_start
                out_of_time = cfg.max_time is not None and epoch < cfg.epochs and elapsed + row["time"] > cfg.max_time
                if distributed.any_process(self.ctx, self.state.should_stop or out_of_time, device=self.device):
                    reason = (
                        f"another epoch would pass max_time={cfg.max_time:g} s"
                        if out_of_time
                        else "a callback asked to stop"
                    )
                    self._print(f"stopping after epoch {epoch}: {reason}")
                    break
        except KeyboardInterrupt:
            path = self._save(ckpt.INTERRUPTED, self.history.epoch[-1] if len(self.history) else 0, all_ranks=False)
            where = f"; weights saved to {path}" if path else ""
            self._print(
                f"interrupted during epoch {epoch}{where}. History holds the {len(self.history)} finished epochs."
            )
        except _NonFiniteLoss as e:
            raise FloatingPointError(
                f"fit: the training loss became {e.value} at epoch {e.epoch}, batch {e.step}; "
                f"training stopped.{self._kept()} {_NAN_ADVICE}"
            ) from None

    def _kept(self) -> str:
        last = self.checkpoint_dir / ckpt.LAST if self.checkpoint_dir is not None else None
        if last is not None and last.exists():
            return f" The last good checkpoint, {last}, is kept."
        return " No checkpoint was written (pass checkpoint_dir= to keep one)."

    def _check_finite(self, epoch: int, row: dict[str, Any]) -> None:
        """Raise FloatingPointError if the epoch's losses or the model's weights are not all finite.

        The loss is watched during the epoch, but weights that turn NaN at its last step only
        show in val_loss or in the weights themselves: such an epoch must not become last.pt.
        """
        found = [f"{key} ({row[key]})" for key in ("train_loss", "val_loss") if not _finite(row[key])]
        found += _non_finite_tensors(self.model, self.device)
        # Batch-norm buffers are each process's own: every process must agree to stop, or the others hang.
        if not distributed.any_process(self.ctx, bool(found), device=self.device):
            return
        what = ", ".join(found) if found else "the weights of another process"
        raise FloatingPointError(
            f"fit: non-finite values at the end of epoch {epoch}: {what}; training stopped before the epoch was "
            f"recorded or checkpointed.{self._kept()} {_NAN_ADVICE}"
        )


_NAN_ADVICE = "Try a lower lr, grad_clip=1.0, or amp='bf16' instead of fp16."


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)


def _non_finite_tensors(model: nn.Module, device: torch.device) -> list[str]:
    """The model's parameters and floating-point buffers that hold a NaN or infinity, named; one sync."""
    named = [(f"parameter {n!r}", t) for n, t in model.named_parameters()]
    named += [(f"buffer {n!r}", t) for n, t in model.named_buffers() if t.is_floating_point()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(t.detach()).all().to(device) for _, t in named]).tolist()
    return [name for (name, _), good in zip(named, ok, strict=True) if not good]


class _NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"loss {value} at epoch {epoch}, step {step}")
        self.epoch, self.step, self.value = epoch, step, value
