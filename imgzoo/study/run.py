"""Train one run from files, as ``imgzoo train`` does: data -> seeded validation split -> optional limit -> batches ->
fit, checkpointing into OUT/checkpoints -> weights, history, figures; what a run is, is study.config's."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

import imgzoo.data.datasets as datasets
from imgzoo.data.loaders import batches, default_cache_dir
from imgzoo.hub.api import create_model
from imgzoo.study.config import (
    CHECKPOINTS,
    KNOWN_DATA,
    VAL_FRACTION,
    WEIGHTS,
    Plan,
    RunConfig,
    plan_run,
    recipe_differences,
    recipe_for,
    resume_command,
    train_command,
)
from imgzoo.study.outputs import joined, read_outputs, write_outputs
from imgzoo.train.checkpoint import load_checkpoint
from imgzoo.train.config import fitted_to_data
from imgzoo.train.fit import fit

__all__ = ["RunResult", "check_classes", "eval_data", "open_data", "spread", "split_data", "train_data", "train_run",
           "whitening_images"]  # fmt: skip

SAMPLES_SHOWN = 16  # two rows of the samples grid: enough to see the kinds of mistakes


def open_data(data: str) -> Dataset:
    """The training images a RunConfig's ``data`` names: a folder in any layout, or a known data set."""
    if data in KNOWN_DATA and not Path(data).is_dir():
        return KNOWN_DATA[data](default_cache_dir() / "data" / data, train=True, download=True)
    return datasets.open_folder(data)


def split_data(
    dataset: Dataset, seed: int, limit: int | None = None, val_fraction: float = VAL_FRACTION
) -> tuple[Dataset, Dataset | None]:
    """The seeded stratified validation split, whole so figures compare; ``limit``: a stratified part of train.
    ``val_fraction=0``: every image trains and there is no validation (None)."""
    names = datasets.classes_of(dataset) or []
    if len(names) == 1:  # every prediction right by construction: the "100%" would measure nothing
        raise ValueError(
            f"the data has one class ({names[0]}): a classifier needs two or more. Add a folder of images for each "
            "other class it should tell apart."
        )
    train, val = datasets.train_val_split(dataset, val_fraction, seed=seed) if val_fraction else (dataset, None)
    classes = len(torch.unique(datasets.labels_of(train)))
    if limit is None or limit >= len(train) - classes:
        return train, val
    if limit < classes:
        raise ValueError(
            f"limit={limit} is fewer than the {classes} classes of the data: a stratified limit keeps at least "
            f"one image of every class. Pass a limit of {classes} or more."
        )
    return datasets.train_val_split(train, seed=seed, val_count=limit)[1], val


def train_data(model: nn.Module, part: Dataset, augment: str, batch_size: int, seed: int, **options: Any) -> Any:
    """Whole-batch training batches for small images (``options``: batches' translate, alternate_flips, cutout); larger
    ones the images themselves, which fit transforms, shuffles and shards alike (a head warm-up takes features)."""
    if model.data_spec.resize is not None:
        return part
    return batches(part, batch_size, train=True, spec=model.data_spec, augment=augment, seed=seed, **options)


def eval_data(model: nn.Module, part: Dataset, batch_size: int = 256) -> Any:
    """Batches of ``part`` preprocessed as the model expects at evaluation: for fit's val and evaluate."""
    return batches(part, batch_size, train=False, spec=model.data_spec, num_workers=0)


def spread(part: Dataset, count: int) -> list[int]:
    """``count`` indices spread evenly over ``part``: a class-sorted folder shows every class, not the first."""
    n = len(part)  # type: ignore[arg-type]
    k = min(count, n)
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def check_classes(model: nn.Module, dataset: Dataset, source: str) -> None:
    """Refuse data whose classes are not the ones the model predicts, in the same order."""
    advice = "Evaluate it on data with the classes it was trained on, in the same order."
    datasets.check_classes(datasets.model_classes(model), datasets.classes_of(dataset), expected_by="the model",
                           found_in=source, advice=advice)  # fmt: skip


def _check_run_classes(plan: Plan, model: nn.Module, dataset: Dataset, out: Path) -> None:
    """Refuse, before anything is written, data whose classes differ from those the run in ``out`` trained on."""
    point = plan.resume_from if plan.action == "resume" else None
    expected = load_checkpoint(point).get("classes") if point is not None else datasets.model_classes(model)
    advice = "Go on with the data the run was trained on (the same class folders), or train into a new --out."
    datasets.check_classes(expected, datasets.classes_of(dataset), expected_by=f"the run in {out}",
                           found_in=plan.record.config.data, advice=advice)  # fmt: skip


@dataclass
class RunResult:
    """What a run left in ``out``: every epoch so far (earlier trainings included) and the final metrics."""

    out: Path
    config: RunConfig
    history: Any  # imgzoo.eval.history.History
    metrics: dict[str, float]
    finished: bool  # False: stopped before its epochs (max_time), and resumable
    action: str  # "start", "resume", "extend" or "done"

    @property
    def wall_time(self) -> float:
        """Seconds spent in training and validation, over every epoch of the run."""
        return float(sum(self.history.time))


def train_run(out: str | os.PathLike[str], config: RunConfig, *, resume: bool = False, verbose: int = 1,
              log: Callable[[str], None] = print, tta: bool = True) -> RunResult:  # fmt: skip
    """Train ``config`` into ``out`` (``resume``: resume or extend the run there); Ctrl-C checkpoints, then raises.
    ``tta=False`` skips the recipe's test-time augmentation at the end (up to 6 passes over the validation images)."""
    out = Path(out)
    plan = plan_run(out, config, resume)
    record, config, cfg = plan.record, plan.record.config, plan.record.config.fit
    more = resume_command(config, out, epochs=2 * cfg.epochs)
    if plan.action == "done":
        log(f"{out} has finished its {cfg.epochs} epochs; nothing to train. More: {more}")
        return RunResult(out, config, *read_outputs(out), record.finished, plan.action)
    dataset = open_data(config.data)
    train_part, val_part = split_data(dataset, cfg.seed, config.limit, config.val_fraction)
    model = _model_for(plan, dataset, out, train_part)
    _check_run_classes(plan, model, dataset, out)
    if plan.action == "extend":  # the earlier training's checkpoints hold a schedule sized for its own epochs
        for stale in (out / CHECKPOINTS).glob("*.pt"):
            stale.unlink()
    record.write(out)
    _announce(plan, out, len(train_part), len(val_part or ()), log)
    if not {"batch_size", "lr"} & set(recipe_differences(config)[0]):  # a recipe's batch, not one asked for
        cfg, cut = fitted_to_data(cfg, len(train_part))  # run.json keeps the recipe's: the same data cuts it alike
        config = dataclasses.replace(config, fit=cfg)  # config.json records the batch and lr trained with
        if cut:
            log(cut)
    epochs, started = cfg.epochs - record.done_before, time.time()
    train = train_data(model, train_part, seed=cfg.seed, **cfg.loader_options())
    val = eval_data(model, val_part) if val_part is not None else None
    try:
        history = fit(model, train, val, config=cfg, initial_epoch=record.done_before, checkpoint_dir=out / CHECKPOINTS,
                      resume=plan.resume_from, verbose=verbose)  # fmt: skip
    except KeyboardInterrupt as stop:  # after the last step: the training is saved, its metrics and figures are not
        raise KeyboardInterrupt(f"{stop or 'stopped'}; go on with: {resume_command(config, out)}") from None
    interrupted = out / CHECKPOINTS / "interrupted.pt"  # Ctrl-C writes it; one older than this call is not ours
    if len(history) < epochs and interrupted.is_file() and interrupted.stat().st_mtime >= started - 1:
        raise KeyboardInterrupt(f"stopped during epoch {len(history) + 1}; resume with: {resume_command(config, out)}")
    full = joined(out, record.done_before, history)
    # plot_predictions preprocesses the images shown; a final fit (no val) writes only the training curves anew.
    shown = torch.utils.data.Subset(val_part, spread(val_part, SAMPLES_SHOWN)) if val_part is not None else None
    metrics = write_outputs(
        model, val, shown, full, out, _recorded(config, out), tta=tta, log=log, progress=verbose == 1
    )
    record.finished = len(history) >= epochs
    record.write(out)
    if record.finished:
        log(f"finished {cfg.epochs} epoch{'s' * (cfg.epochs != 1)} into {out}. More epochs: {more}")
    else:
        log(f"stopped after epoch {len(full)} of {cfg.epochs}. Resume: {resume_command(config, out)}")
    return RunResult(out, config, full, metrics, record.finished, plan.action)


def _recorded(config: RunConfig, out: Path) -> dict[str, Any]:
    """The recipe a run's config.json records: its options, the command and its TTA."""
    found = recipe_for(config.model, config.fit.recipe) if config.fit.recipe else None
    return {
        **{"model": config.model, "data": config.data, "limit": config.limit, "kwargs": config.kwargs},
        **config.fit.to_dict(learning_only=True),
        "recipe": config.fit.recipe,
        "tta": found.tta if found else False,  # what `imgzoo evaluate RUN DATA --tta` measures with again
        "command": train_command(config, out),
        "val_fraction": config.val_fraction,
    }


def _model_for(plan: Plan, dataset: Dataset, out: Path, train_part: Dataset) -> nn.Module:
    """A fresh model sized for the data's classes, or the run's own weights when it goes on from them."""
    config = plan.record.config
    if plan.from_weights:  # a resumed fit restores its checkpoint's weights over whatever it is given
        return create_model(config.model, pretrained=str(out / WEIGHTS))
    torch.manual_seed(config.fit.seed)  # fit seeds the training; the initial weights are drawn before it
    model = create_model(config.model, class_names=[str(c) for c in dataset.classes], **config.kwargs)
    if getattr(model, "needs_init_from_data", False):  # layers set from training images, e.g. a whitening stem
        model.init_from_data(whitening_images(model, train_part, config.fit.seed))
    return model


# airbench94 sets its whitening layer from 5,000 training images (arXiv:2404.00498, section 3.2).
WHITENING_IMAGES = 5000


def whitening_images(model: nn.Module, train_part: Dataset, seed: int) -> torch.Tensor:
    """A seeded draw of up to 5,000 training images, un-augmented and normalised as the model sees them."""
    count = min(WHITENING_IMAGES, len(train_part))  # type: ignore[arg-type]
    return next(iter(batches(train_part, count, train=True, spec=model.data_spec, augment="none", seed=seed)))[0]


def _announce(plan: Plan, out: Path, n_train: int, n_val: int, log: Callable) -> None:
    config, before, cfg = plan.record.config, plan.record.done_before, plan.record.config.fit
    what = {
        "start": f"training {config.model} for {cfg.epochs} epoch{'s' * (cfg.epochs != 1)}",
        "resume": f"resuming {config.model} {'from its last checkpoint' if plan.resume_from else 'from the start'}",
        "extend": (
            f"extending {config.model} from its {before} finished epochs to {cfg.epochs}, from its weights with a "
            f"fresh {cfg.schedule} schedule over epochs {before + 1}-{cfg.epochs}"
        ),
    }[plan.action]
    images = f"{n_train} training / {n_val} validation images" if n_val else f"all {n_train} images, no validation"
    log(f"{what}: {images} (seed {cfg.seed}), augment {config.augmentation()}")
    log(f"checkpoints every epoch in {out / CHECKPOINTS}; if stopped, resume with: {resume_command(config, out)}")
