"""Train one run from files: what ``imgzoo train`` does, as calls a script can make too.

The path, top to bottom as a run goes:

    data folder (any layout, found by looking) -> seeded 10% validation split -> optional
    stratified limit -> loaders for the model's DataSpec and augment -> fit, checkpointing
    every epoch into OUT/checkpoints -> OUT: weights (imgzoo.save), history.csv / .json,
    curves.png, samples.png, confusion.png

``OUT/run.json`` records what the run is (model, data, options) and how far it got, so the
same folder can be resumed exactly after a stop, or extended with more epochs later, and a
folder holding another run is never trained over by mistake. This module trains, so it sits
beside ``study.py`` above the loop and the Hub client; the ``imgzoo`` command is a thin layer
over it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from imgzoo._atomic import atomic_write_text
from imgzoo._device import describe_machine
from imgzoo.data import datasets
from imgzoo.data.loaders import FastLoader, default_cache_dir, unshared_generator
from imgzoo.data.transforms import AUGMENTS, for_model
from imgzoo.eval.evaluation import EvalResult, evaluate, plot_predictions
from imgzoo.eval.history import History
from imgzoo.hub.api import create_model, load, save
from imgzoo.hub.card import metrics_from_eval
from imgzoo.models.registry import get_model_entry
from imgzoo.train.callbacks import Callback
from imgzoo.train.checkpoint import resume_point
from imgzoo.train.config import recipe_averaging
from imgzoo.train.fit import FitConfig, fit
from imgzoo.train.recipes import RECIPES, Recipe, get_recipe, list_recipes

__all__ = [
    "AMP_CHOICES",
    "KNOWN_DATA",
    "RUN_OPTIONS",
    "RunConfig",
    "RunResult",
    "eval_data",
    "model_defaults",
    "open_data",
    "read_run",
    "split_data",
    "train_data",
    "train_run",
]

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
WEIGHTS = "weights"  # the imgzoo.save folder inside a run folder
_FORMAT = "imgzoo-run-v1"
VAL_FRACTION = 0.1  # the split every shipped weights entry reports its accuracy on
SAMPLES_SHOWN = 16  # two rows of the samples grid: enough to see the kinds of mistakes

# The command line's precision names -> fit's amp option. "auto": bf16 where the device computes it
# natively (a CUDA GPU that supports it, a CPU with AVX512-BF16 / AMX), else fp32.
AMP_CHOICES: dict[str, bool | str] = {"auto": "auto", "fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}

# Data sets known by name: downloaded (by torchvision, checksummed) into the cache on first use.
KNOWN_DATA: dict[str, Callable[..., Dataset]] = {"cifar10": datasets.cifar10, "mnist": datasets.mnist}

# What a run of a model does when the command line does not say: its recipe (imgzoo.train.recipes, the
# architecture's own, e.g. "resnet_cifar", or a named one such as "resnet_cifar.cifar10"), else this.
_EVERY_MODEL: dict[str, Any] = {
    "epochs": 15,
    "augment": "standard",
    "translate": None,
    "alternate_flips": False,
    "cutout": 0,
    "batch_size": 128,
    "lr": None,
    "kwargs": {},
}
# The recipe fields that become fit options of the run. Not amp: a recipe records the precision of the
# machine it ran on (bf16 on one with native bf16), which on another machine can be 10x slower than
# fp32; a run takes "auto" unless told otherwise.
_RECIPE_FIT_OPTIONS = ("optimizer", "momentum", "weight_decay", "schedule", "label_smoothing", "norm_bias_lr_scale")

# fit options that change how fast a run trains, not what it learns: a run may resume with them changed.
_SPEED_OPTIONS = ("compile",)

# The recipe fields that build the run's training loader.
_RECIPE_LOADER_OPTIONS = ("augment", "translate", "alternate_flips", "cutout", "batch_size")

# fit options a run sets itself (or forbids), so a study file cannot; and RunConfig's own options.
_RUNNER_OWNS = frozenset({"epochs", "callbacks", "checkpoint_dir", "resume", "verbose", "config"})
RUN_OPTIONS = ("epochs", "augment", "amp", "limit", "seed", "batch_size", "lr", "recipe")
_RUN_FIELDS = RUN_OPTIONS[1:]


def model_defaults(model: str, recipe: str | None = None) -> dict[str, Any]:
    """The epochs, augment, batch size, lr, builder kwargs and fit options a run of ``model`` starts from.

    They come from ``recipe`` (a name :func:`imgzoo.train.recipes.get_recipe` knows), else from the model's
    own recipe when it has one, else from a generic table; ``"recipe"`` names the one used, or is None.
    """
    found = recipe_for(model, recipe)
    if found is None:
        return {**_EVERY_MODEL, "recipe": None}
    return {
        **{k: getattr(found, k) for k in ("epochs", *_RECIPE_LOADER_OPTIONS, "lr", *_RECIPE_FIT_OPTIONS)},
        "kwargs": dict(found.model_kwargs),
        "recipe": found.name,
    }


def recipe_for(model: str, recipe: str | None = None) -> Recipe | None:
    """The Recipe named ``recipe`` (it must be one for ``model``), else ``model``'s own, else None."""
    if recipe is None:
        return RECIPES.get(model)
    found = get_recipe(recipe)  # an unknown name is refused with the closest known ones
    architecture = found.name.split(".", 1)[0]
    if architecture in RECIPES and architecture != model:
        raise ValueError(
            f"recipe {recipe!r} trains {architecture}, not {model}. Pass a recipe of {model} "
            f"({', '.join(n for n in list_recipes() if n.split('.', 1)[0] == model) or 'none yet'}), or none."
        )
    return found


def fit_option_names() -> list[str]:
    """fit's options that a study file may set for a run (those the runner does not set itself)."""
    return sorted(f.name for f in dataclasses.fields(FitConfig) if f.name not in {*_RUNNER_OWNS, *_RUN_FIELDS})


@dataclass
class RunConfig:
    """Everything that decides what a run trains; stored in ``OUT/run.json``."""

    model: str
    data: str  # an absolute folder, or a name in KNOWN_DATA
    epochs: int
    augment: str = "standard"
    amp: str = "auto"
    limit: int | None = None  # train on this many images (stratified, seeded); None: all
    seed: int = 0
    batch_size: int = 128
    lr: float | None = None  # None: fit's default for the optimizer
    kwargs: dict[str, Any] = field(default_factory=dict)  # the model builder's
    fit_options: dict[str, Any] = field(default_factory=dict)  # any other fit option
    recipe: str | None = None  # the recipe (imgzoo.train.recipes) the defaults came from; fit adds its EMA
    translate: int | None = None  # the crop's largest shift in pixels; None: the loader's standard 1/8 of the side
    alternate_flips: bool = False  # airbench's derandomized flips (FastLoader's alternate_flips)
    cutout: int = 0  # the side of the square blanked in each training image (FastLoader's cutout); 0: none

    def augmentation(self) -> str:
        """The training augmentation in words, e.g. "standard (4-pixel crops, alternating flips, 12-pixel cutout)"."""
        extras = [f"{self.translate}-pixel crops"] if self.translate is not None and self.augment != "none" else []
        extras += ["alternating flips"] if self.alternate_flips and self.augment != "none" else []
        extras += [f"{self.cutout}-pixel cutout"] if self.cutout and self.augment != "none" else []
        return self.augment + (f" ({', '.join(extras)})" if extras else "")

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTS)}; got {self.augment!r}")
        if self.amp not in AMP_CHOICES:
            raise ValueError(f"amp must be one of {', '.join(AMP_CHOICES)}; got {self.amp!r}")
        for name in ("epochs", "batch_size", "limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.recipe is not None:
            get_recipe(self.recipe)
        unknown = sorted(set(self.fit_options) - set(fit_option_names()))
        if unknown:
            raise ValueError(f"unknown fit option(s) {', '.join(unknown)}; a run takes {', '.join(fit_option_names())}")
        self.fit_options_checked()

    def fit_options_checked(self) -> dict[str, Any]:
        """The keyword arguments of fit, checked by fit's own config now rather than after hours of other runs."""
        options = {
            "batch_size": self.batch_size,
            "lr": self.lr,
            "amp": AMP_CHOICES[self.amp],
            "seed": self.seed,
            **self.fit_options,
        }
        FitConfig(epochs=self.epochs, **options)
        return options

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def make_config(model: str, data: str, **given: Any) -> RunConfig:
    """A RunConfig from the model's recipe (or ``recipe=``'s), with each option in ``given`` not None over it."""
    get_model_entry(model)  # an unknown name fails here, with close matches, before any data is read
    defaults = model_defaults(model, given.get("recipe"))
    values = {k: v for k, v in defaults.items() if k in {f.name for f in dataclasses.fields(RunConfig)}}
    values["fit_options"] = {k: v for k, v in defaults.items() if k not in values}
    values["kwargs"] = dict(defaults["kwargs"])
    for key, value in given.items():
        if value is None:
            continue
        if key in ("kwargs", "fit_options"):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return RunConfig(model=model, data=resolve_data(data), **values)


# ---------------------------------------------------------------------------- data


def resolve_data(data: str | os.PathLike[str]) -> str:
    """An existing folder as an absolute path; else a known data set's name; else a FileNotFoundError."""
    path = Path(data).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if str(data) in KNOWN_DATA:
        return str(data)
    raise FileNotFoundError(
        f"data {str(data)!r} is neither a folder nor a known data set ({', '.join(KNOWN_DATA)}). "
        "Pass a folder in a layout imgzoo reads (CIFAR-10 batches, MNIST idx files, class folders of images, "
        "Stanford Dogs, Kaggle dog breeds), or a known name to download it."
    )


def open_data(data: str) -> Dataset:
    """The training images a RunConfig's ``data`` names: a folder in any layout, or a known data set."""
    if data in KNOWN_DATA and not Path(data).is_dir():
        return KNOWN_DATA[data](default_cache_dir() / "data" / data, train=True, download=True)
    return datasets.open_folder(data)


def split_data(dataset: Dataset, seed: int, limit: int | None = None) -> tuple[datasets.Split, datasets.Split]:
    """The seeded stratified split (10% validation); with ``limit``, the first ``limit`` images of training.

    The limit is a stratified, seeded draw of the training part, so a quick run sees every class
    in its usual share; the validation part stays whole, so figures stay comparable across limits.
    """
    train, val = datasets.train_val_split(dataset, VAL_FRACTION, seed=seed)
    classes = len(torch.unique(train.targets))
    if limit is None or limit >= len(train) - classes:
        return train, val
    if limit < classes:
        raise ValueError(
            f"limit={limit} is fewer than the {classes} classes of the data: a stratified limit keeps at least "
            f"one image of every class. Pass a limit of {classes} or more."
        )
    _, kept = datasets.train_val_split(train, seed=seed, val_count=limit)
    # One level of Split over the original data, as FastLoader expects.
    return datasets.Split(dataset, [train.indices[i] for i in kept.indices]), val


class Transformed(Dataset):
    """A dataset whose images go through ``transform``, keeping the parent's classes and labels."""

    def __init__(self, data: Dataset, transform: Callable[[Any], Any]) -> None:
        self.data, self.transform = data, transform
        self.classes = list(getattr(data, "classes", []))
        self.targets = getattr(data, "targets", None)

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.data[index]
        return self.transform(image), label


def _fast(model: nn.Module) -> bool:
    """FastLoader serves small images, with any augmentation; resized ones go through per-image transforms."""
    return model.data_spec.resize is None


def train_data(
    model: nn.Module,
    part: Dataset,
    augment: str,
    batch_size: int,
    seed: int,
    translate: int | None = None,
    alternate_flips: bool = False,
    cutout: int = 0,
) -> Any:
    """What fit trains on: a FastLoader where it can augment, else the images through the train transform."""
    if _fast(model):
        return FastLoader(
            part,
            batch_size,
            spec=model.data_spec,
            train=True,
            augment=augment,
            translate=translate,
            alternate_flips=alternate_flips,
            cutout=cutout,
            seed=seed,
        )
    return Transformed(part, for_model(model, train=True, augment=augment))


def eval_data(model: nn.Module, part: Dataset, batch_size: int = 256) -> Any:
    """Batches of ``part`` preprocessed as the model expects at evaluation: for fit's val and evaluate."""
    if _fast(model):
        return FastLoader(part, batch_size, spec=model.data_spec)
    return DataLoader(Transformed(part, for_model(model)), batch_size=batch_size, generator=unshared_generator())


def spread(part: Dataset, count: int) -> list[int]:
    """``count`` indices spread evenly over ``part``: a class-sorted folder shows every class, not the first."""
    n = len(part)  # type: ignore[arg-type]
    k = min(count, n)
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def check_classes(model: nn.Module, dataset: Dataset, source: str) -> None:
    """Refuse data whose classes are not the ones the model predicts: every figure would be wrong."""
    spec = model.data_spec
    classes = [str(c) for c in getattr(dataset, "classes", [])]
    names = [str(c) for c in (spec.class_names or range(spec.num_classes))]
    if classes and classes != names:
        raise ValueError(
            f"{source} has {len(classes)} classes ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}) "
            f"but the model predicts {len(names)} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}). "
            "Evaluate it on data with the classes it was trained on."
        )


# ---------------------------------------------------------------------------- the run folder


@dataclass
class RunRecord:
    """``OUT/run.json``: the config, the epochs finished by earlier trainings, and whether the last one ended."""

    config: RunConfig
    done_before: int = 0  # epochs in OUT's weights before the training now under way
    finished: bool = False

    def write(self, out: Path) -> None:
        record = {"format": _FORMAT, "config": self.config.to_dict(), "done_before": self.done_before}
        atomic_write_text(out / RUN_FILE, json.dumps({**record, "finished": self.finished}, indent=1) + "\n")


def weights_of(name_or_dir: str) -> str:
    """What imgzoo.load takes for a command's NAME_OR_DIR: a run folder (written by train) means its weights."""
    run_weights = Path(name_or_dir) / WEIGHTS
    return str(run_weights) if (Path(name_or_dir) / RUN_FILE).is_file() and run_weights.is_dir() else name_or_dir


def read_run(out: str | os.PathLike[str]) -> RunRecord | None:
    """The record of the run in ``out``; None when there is none."""
    path = Path(out) / RUN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != _FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {_FORMAT!r}")
        config = RunConfig.from_dict(data["config"])
        return RunRecord(config, int(data["done_before"]), bool(data["finished"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a run record imgzoo can read ({exc}). Choose another --out.") from None


def train_command(config: RunConfig, out: Path) -> str:
    """The command that trains this run from scratch: the options that differ from its recipe's are spelt out."""
    words = ["imgzoo", "train", config.model, config.data, "--out", str(out)]
    defaults = make_config(config.model, config.data, recipe=config.recipe)
    words += ["--recipe", config.recipe] if config.recipe and config.recipe != config.model else []
    for name in ("epochs", "augment", "amp", "limit", "seed", "batch_size", "lr", "translate", "cutout"):
        if getattr(config, name) != getattr(defaults, name):
            words += [f"--{name.replace('_', '-')}", str(getattr(config, name))]
    if config.alternate_flips != defaults.alternate_flips:
        words += ["--alternate-flips" if config.alternate_flips else "--no-alternate-flips"]
    words += ["--compile"] if config.fit_options.get("compile") else []
    changed = {k: v for k, v in config.kwargs.items() if defaults.kwargs.get(k, _UNSET) != v}
    if changed:
        words += [
            "--model-kwargs",
            *(f"{k}={v if isinstance(v, str) else repr(v).replace(' ', '')}" for k, v in changed.items()),
        ]
    return shlex.join(words)


_UNSET = object()  # a builder option the recipe does not set


def resume_command(config: RunConfig, out: Path, epochs: int | None = None) -> str:
    """The command that goes on with the run in ``out``; run.json supplies every other option."""
    words = ["imgzoo", "train", config.model, config.data, "--out", str(out)]
    words += ["--epochs", str(epochs)] if epochs is not None else []
    return shlex.join([*words, "--resume"])


@dataclass
class Plan:
    """What a call of :func:`train_run` will do: start, resume an unfinished training, extend, or nothing."""

    action: str  # "start", "resume", "extend" or "done"
    record: RunRecord


def plan_run(out: Path, config: RunConfig, resume: bool) -> Plan:
    """Decide what to do with ``out``, refusing anything that would train over another run."""
    record = read_run(out)
    if record is None:
        if resume:
            raise FileNotFoundError(f"nothing to resume: {out} holds no run ({RUN_FILE}). Run without --resume.")
        if (out / "model.safetensors").exists() or (out / CHECKPOINTS).exists():
            raise FileExistsError(f"{out} holds weights or checkpoints but no {RUN_FILE}; choose another --out.")
        return Plan("start", RunRecord(config))
    if not resume:
        raise FileExistsError(
            f"{out} already holds a run of {record.config.model} ({_progress(record)}). To go on with it: "
            f"{resume_command(record.config, out)}; for more epochs add --epochs N; or choose another --out."
        )
    _check_same_run(record.config, config, out)
    if not record.finished:
        if config.epochs != record.config.epochs:
            raise ValueError(
                f"{out} is {_progress(record)}; finish it first ({resume_command(record.config, out)}), "
                f"then extend it with --epochs {config.epochs}"
            )
        return Plan("resume", record)
    if config.epochs <= record.config.epochs:
        return Plan("done", record)
    return Plan("extend", RunRecord(config, done_before=record.config.epochs))


def _progress(record: RunRecord) -> str:
    state = "finished" if record.finished else "unfinished"
    return f"{state}, {record.config.epochs} epochs asked"


# What resuming or extending a run must keep: everything but the epochs and the speed options.
_SAME_IN_A_RUN = ("model", "data", "kwargs", "translate", "alternate_flips", "cutout", *_RUN_FIELDS)


def _settings(config: RunConfig) -> dict[str, Any]:
    """The options of ``config`` that decide what its run learns (a resumed run must keep them)."""
    learning = {k: v for k, v in config.fit_options.items() if k not in _SPEED_OPTIONS}
    return {**{name: getattr(config, name) for name in _SAME_IN_A_RUN}, "fit_options": learning}


def _check_same_run(old: RunConfig, new: RunConfig, out: Path) -> None:
    """Resuming or extending keeps the data, model and options; only the epochs and the speed options may change."""
    before, after = _settings(old), _settings(new)
    changed = [f"{name} {before[name]!r} -> {after[name]!r}" for name in before if before[name] != after[name]]
    if changed:
        raise ValueError(
            f"{out} holds a run with other settings ({'; '.join(changed)}). Resume it with the same ones "
            "(omit an option to keep the run's), or start a new run in another --out."
        )


def resume_config(out: Path, model: str, data: str, **given: Any) -> RunConfig:
    """The config to resume ``out`` with: its record's, with the options given explicitly laid over it."""
    record = read_run(out)
    if record is None:
        return make_config(model, data, **given)
    values = record.config.to_dict()
    values.update({k: v for k, v in given.items() if v is not None and k not in ("kwargs", "fit_options")})
    for merged in ("kwargs", "fit_options"):  # laid over the run's, as make_config does
        values[merged] = {**values[merged], **(given.get(merged) or {})}
    return RunConfig(**{**values, "model": model, "data": resolve_data(data)})


# ---------------------------------------------------------------------------- training


@dataclass
class RunResult:
    """What a run left in ``out``: every epoch so far (earlier trainings included) and the final metrics."""

    out: Path
    config: RunConfig
    history: History
    metrics: dict[str, float]
    finished: bool  # False: stopped before its epochs (max_time), and resumable
    action: str  # "start", "resume", "extend" or "done"

    @property
    def wall_time(self) -> float:
        """Seconds spent in training and validation, over every epoch of the run."""
        return float(sum(self.history.time))


def train_run(
    out: str | os.PathLike[str],
    config: RunConfig,
    *,
    resume: bool = False,
    verbose: int = 1,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train ``config`` into ``out`` (see the module docstring); ``resume`` goes on with the run there.

    A run stopped by Ctrl-C raises KeyboardInterrupt after its checkpoint is written, so the
    caller can say how to resume; a finished run asked for no more epochs trains nothing.
    """
    out = Path(out)
    plan = plan_run(out, config, resume)
    record, config = plan.record, plan.record.config
    if plan.action == "done":
        log(f"{out} has finished its {config.epochs} epochs; nothing to train. More: {_more(config, out)}")
        return _result_on_disk(out, record, plan.action)
    dataset = open_data(config.data)
    train_part, val_part = split_data(dataset, config.seed, config.limit)
    checkpoints = out / CHECKPOINTS
    model = _model_for(plan, dataset, out, train_part)
    out.mkdir(parents=True, exist_ok=True)
    if plan.action == "extend":  # the earlier training's checkpoints hold a schedule sized for its own epochs
        for stale in checkpoints.glob("*.pt"):
            stale.unlink()
    record.write(out)
    # An exact interrupted.pt (Ctrl-C) if there is one, else last.pt: resume_point knows which is newer.
    resume_from = resume_point(checkpoints) if plan.action == "resume" else None
    _announce(plan, out, len(train_part), len(val_part), resume_from is not None, log)
    epochs = config.epochs - record.done_before
    shaping = {name: getattr(config, name) for name in ("translate", "alternate_flips", "cutout")}
    started = time.time()
    history = fit(
        model,
        train_data(model, train_part, config.augment, config.batch_size, config.seed, **shaping),
        eval_data(model, val_part),
        epochs=epochs,
        checkpoint_dir=checkpoints,
        resume=resume_from,
        verbose=verbose,
        callbacks=recipe_callbacks(config),
        **config.fit_options_checked(),
    )
    if len(history) < epochs and _touched_since(checkpoints / "interrupted.pt", started):
        raise KeyboardInterrupt(f"stopped during epoch {len(history) + 1}; resume with: {resume_command(config, out)}")
    full = _joined(out, record.done_before, history)
    metrics = write_outputs(model, val_part, full, out, config)
    record.finished = len(history) >= epochs
    record.write(out)
    if record.finished:
        log(f"finished {config.epochs} epochs into {out}. More epochs: {_more(config, out)}")
    else:
        log(f"stopped after epoch {len(full)} of {config.epochs}. Resume: {resume_command(config, out)}")
    return RunResult(out, config, full, metrics, record.finished, plan.action)


def recipe_callbacks(config: RunConfig) -> list[Callback]:
    """The run's recipe's weight averaging (EMA or Lookahead), if it has one (its other options are in the config)."""
    found = recipe_for(config.model, config.recipe) if config.recipe else None
    return recipe_averaging(found) if found is not None else []


def _more(config: RunConfig, out: Path) -> str:
    return resume_command(config, out, epochs=2 * config.epochs)


def _touched_since(path: Path, since: float) -> bool:
    """Whether fit wrote ``path`` during this call (Ctrl-C writes interrupted.pt; an older one is not ours)."""
    return path.is_file() and path.stat().st_mtime >= since - 1


def _model_for(plan: Plan, dataset: Dataset, out: Path, train_part: Dataset) -> nn.Module:
    """A fresh model sized for the data's classes, or the run's own weights when it goes on from them."""
    config = plan.record.config
    from_weights = plan.action == "extend" or (
        plan.action == "resume" and plan.record.done_before > 0 and resume_point(out / CHECKPOINTS) is None
    )
    if from_weights:
        return load(out / WEIGHTS)  # a resumed fit restores its checkpoint's weights over whatever it is given
    torch.manual_seed(config.seed)  # fit seeds the training; the initial weights are drawn before it
    model = create_model(config.model, class_names=[str(c) for c in dataset.classes], **config.kwargs)
    if getattr(model, "needs_init_from_data", False):  # layers set from training images, e.g. a whitening stem
        model.init_from_data(whitening_images(model, train_part, config.seed))
    return model


# airbench94 sets its whitening layer from 5,000 training images (arXiv:2404.00498, section 3.2).
WHITENING_IMAGES = 5000


def whitening_images(model: nn.Module, train_part: Dataset, seed: int) -> torch.Tensor:
    """A seeded draw of up to 5,000 training images, un-augmented and normalised as the model sees them."""
    count = min(WHITENING_IMAGES, len(train_part))  # type: ignore[arg-type]
    loader = FastLoader(train_part, count, spec=model.data_spec, train=True, augment="none", seed=seed)
    images, _ = next(iter(loader))
    return images


def _announce(plan: Plan, out: Path, n_train: int, n_val: int, from_checkpoint: bool, log: Callable) -> None:
    config, before = plan.record.config, plan.record.done_before
    what = {
        "start": f"training {config.model} for {config.epochs} epochs",
        "resume": f"resuming {config.model} {'from its last checkpoint' if from_checkpoint else 'from the start'}",
        "extend": (
            f"extending {config.model} from its {before} finished epochs to {config.epochs}, from its weights with "
            f"a fresh {config.fit_options.get('schedule', 'onecycle')} schedule over {config.epochs - before} epochs"
        ),
    }[plan.action]
    log(f"{what}: {n_train} training / {n_val} validation images (seed {config.seed}), augment {config.augmentation()}")
    log(f"checkpoints every epoch in {out / CHECKPOINTS}; if stopped, resume with: {resume_command(config, out)}")


def _joined(out: Path, done_before: int, history: History) -> History:
    """Earlier trainings' epochs (from OUT/history.json) followed by this one's, numbered on from them."""
    rows = History.from_json(out / "history.json").to_dict() if done_before else History().to_dict()
    keep = [i for i, epoch in enumerate(rows["epoch"]) if epoch <= done_before]
    joined = {name: [values[i] for i in keep] for name, values in rows.items()}
    for name, values in history.to_dict().items():
        joined[name] += [v + done_before for v in values] if name == "epoch" else values
    return History.from_dict(joined)


def write_outputs(model: nn.Module, val_part: Dataset, history: History, out: Path, config: RunConfig) -> dict:
    """Weights, history, curves, samples grid, confusion matrix and metrics of the run, into ``out``."""
    result = evaluate(model, eval_data(model, val_part))
    tta = recipe_for(config.model, config.recipe).tta if config.recipe else False
    tta_result = evaluate(model, eval_data(model, val_part), tta=tta) if tta else None
    metrics = metrics_from_eval(result, tta_result)
    recipe = {**{k: v for k, v in config.to_dict().items() if k != "fit_options"}, **config.fit_options}
    recipe |= {"machine": describe_machine(), "command": train_command(config, out)}
    if tta:  # what `imgzoo evaluate RUN DATA --tta` measures with again
        recipe["tta"] = tta
    # The weights get a folder of their own: save() replaces its folder whole, so that a crash never
    # mixes two versions, and the run folder also holds checkpoints and reports.
    save(model, out / WEIGHTS, history, recipe={**recipe, "val_fraction": VAL_FRACTION}, metrics=metrics)
    history.to_csv(out / "history.csv")
    history.to_json(out / "history.json")
    history.plot(out / "curves.png")
    shown = torch.utils.data.Subset(val_part, spread(val_part, SAMPLES_SHOWN))
    plot_predictions(model, Transformed(shown, for_model(model)), n=SAMPLES_SHOWN, path=out / "samples.png")
    result.plot_confusion_matrix(out / "confusion.png")
    atomic_write_text(out / "metrics.json", json.dumps(eval_summary(result), indent=1) + "\n")
    return metrics


def eval_summary(result: EvalResult) -> dict[str, Any]:
    """An EvalResult as JSON-able numbers: NaN (a class absent from the data) becomes null."""
    data = result.to_dict()
    data["per_class_accuracy"] = {k: (None if v != v else v) for k, v in data["per_class_accuracy"].items()}
    return data


def _result_on_disk(out: Path, record: RunRecord, action: str) -> RunResult:
    """The RunResult of a finished run, read back from its folder rather than trained again."""
    history = History.from_json(out / "history.json")
    summary = json.loads((out / "metrics.json").read_text())
    metrics = {"val_acc": summary["top1"], "val_loss": summary["loss"], "val_top5": summary["top5"]}
    return RunResult(out, record.config, history, metrics, record.finished, action)
