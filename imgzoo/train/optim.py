"""fit's optimizer and schedule, and the record of them that refuses a resume of another run up front."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from imgzoo.train.config import FitConfig


def build_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, with weight decay on weights only (never biases or norms); with
    ``norm_bias_lr_scale`` other than 1, norm layers' biases form a third group at that multiple of the lr
    (only then, so that older checkpoints' optimizer states still fit)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("fit: the model has no trainable parameters (all have requires_grad=False)")
    spec = cfg.optimizer
    if callable(spec) and not (isinstance(spec, type) and issubclass(spec, torch.optim.Optimizer)):
        return spec(params)
    lr, wd = cfg.lr_and_weight_decay()
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)  # batch, group, layer, instance norm
    shifts = {id(m.bias) for m in model.modules() if isinstance(m, norms) and getattr(m, "bias", None) is not None}
    shifts = shifts if cfg.norm_bias_lr_scale != 1.0 else set()
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": wd},
        {"params": [p for p in params if p.ndim <= 1 and id(p) not in shifts], "weight_decay": 0.0},  # biases, norms
        {"params": [p for p in params if id(p) in shifts], "weight_decay": 0.0, "lr": lr * cfg.norm_bias_lr_scale},
    ]
    groups = [g for g in groups if g["params"]]
    # torch.optim.SGD and AdamW themselves get the recipes of "sgd" and "adamw", not the generic defaults.
    if spec in ("sgd", torch.optim.SGD):
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if spec in ("adamw", torch.optim.AdamW):
        return torch.optim.AdamW(groups, lr=lr)
    return spec(groups, lr=lr)  # another torch.optim class: the generic defaults


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    """The optimizer's class as a checkpoint records it, e.g. ``torch.optim.SGD``."""
    cls = type(optimizer)
    module = "torch.optim" if cls.__module__.startswith("torch.optim.") else cls.__module__
    return f"{module}.{cls.__qualname__}"


def build_schedule(optimizer: torch.optim.Optimizer, cfg: FitConfig, steps_per_epoch: int) -> tuple[Any, str]:
    """The LR scheduler and whether it steps every batch ("step") or every epoch."""
    total, sched = cfg.epochs * steps_per_epoch, torch.optim.lr_scheduler
    peaks = [g["lr"] for g in optimizer.param_groups]
    if cfg.schedule is None:
        return None, "epoch"
    if cfg.schedule == "onecycle":
        has = optimizer.defaults
        cycle = any(k in has for k in ("momentum", "betas")) and has.get("momentum", 1) > 0
        return sched.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, cycle_momentum=cycle), "step"
    if cfg.schedule == "linear":
        # airbench94's: from peak / 5 up to the peak at 23% of the steps, then down to peak * 0.07 = (peak / 5) * 0.35.
        linear = {"pct_start": 0.23, "anneal_strategy": "linear", "div_factor": 5.0, "final_div_factor": 1 / 0.35}
        return sched.OneCycleLR(optimizer, max_lr=peaks, total_steps=total, cycle_momentum=False, **linear), "step"
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total), "step"
    if cfg.schedule == "step":
        milestones = sorted({max(1, int(cfg.epochs * 0.5)), max(1, int(cfg.epochs * 0.75))})
        return sched.MultiStepLR(optimizer, milestones=milestones, gamma=0.1), "epoch"
    return cfg.schedule(optimizer), cfg.schedule_interval


_SIZED = {"onecycle": "per step", "linear": "per step", "cosine": "per step", "step": "per epoch"}  # by the length


def schedule_size(cfg: FitConfig, steps_per_epoch: int) -> dict[str, Any]:
    """What the schedule is built for, as recorded in the checkpoint: its kind, epochs and steps per epoch."""
    kind = cfg.schedule if cfg.schedule is None or isinstance(cfg.schedule, str) else "callable"
    return {"schedule": kind, "epochs": cfg.epochs, "steps_per_epoch": steps_per_epoch}


def _length(size: dict[str, Any]) -> str:
    steps = f" of {size['steps_per_epoch']} steps" if _SIZED.get(size["schedule"]) == "per step" else ""
    return f"{size['epochs']} epochs{steps}"


def check_schedule_resumable(saved: dict[str, Any] | None, now: dict[str, Any], path: Any) -> None:
    """Refuse, before any work, a resume whose schedule would not continue the checkpointed one: a restored
    OneCycleLR, CosineAnnealingLR or MultiStepLR keeps its length (a longer run fails inside torch, trains at
    the final rate or drops the rate at the old milestones), and its state fits only the same kind of
    schedule. None and callables are not sized by fit; checkpoints without the record are not checked."""
    if saved is None:
        return
    was, asked = ("a callable" if s["schedule"] == "callable" else repr(s["schedule"]) for s in (saved, now))
    new_run = (
        f"start a new run from its weights: model.load_state_dict(imgzoo.train.checkpoint.load_checkpoint('{path}')"
        "['model']), then fit without resume= (a fresh schedule for the new length)"
    )
    if saved["schedule"] != now["schedule"]:
        raise ValueError(
            f"fit: cannot resume {path}: it was made with schedule={was}, and this call asks for schedule={asked}; "
            f"the restored scheduler state fits only the same schedule. Resume with schedule={was}, or {new_run}."
        )
    if now["schedule"] in _SIZED and _length(saved) != _length(now):
        raise ValueError(
            f"fit: cannot resume {path}: it was made with schedule={was} sized for {_length(saved)}, and this call "
            f"asks for {_length(now)}. A restored {saved['schedule']} schedule keeps the length it was built for, "
            f"so training would fail or go on at the wrong learning rate. To continue that run, resume with "
            f"epochs={saved['epochs']} (and the same batch size and training data); to train for another "
            f"length, {new_run}."
        )
