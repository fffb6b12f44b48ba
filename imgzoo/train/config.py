"""FitConfig, every training option with the reason for its default, and the optimizer and schedule it describes."""

from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from imgzoo._device import AMP_CHOICES
from imgzoo.data.datasets import is_int, is_real
from imgzoo.data.transforms import AUGMENTS
from imgzoo.eval.evaluation import TTA_MODES
from imgzoo.models.registry import get_weights_entry, list_pretrained
from imgzoo.train.callbacks import EMA, Callback, EarlyStopping, Lookahead

OptimizerSpec = str | type[torch.optim.Optimizer] | Callable[..., torch.optim.Optimizer]
ScheduleSpec = str | None | Callable[[torch.optim.Optimizer], Any]
# The options named by one of a few words; the command line offers the same choices.
CHOICES: dict[str, tuple[Any, ...]] = {
    "augment": AUGMENTS, "optimizer": ("sgd", "adamw"), "schedule": ("onecycle", "cosine", "step", "linear"),
    "schedule_interval": ("epoch", "step"), "amp": AMP_CHOICES, "channels_last": (True, False, "auto"),
    "verbose": (0, 1, 2),
}  # fmt: skip
# How a run is carried out, not what it learns: a resumed run may change them, a recipe does not record them.
HOW_TO_RUN = ("compile", "device", "num_workers", "max_time", "verbose", "callbacks", "checkpoint_dir", "resume")
LOADER_FIELDS = ("batch_size", "augment", "translate", "alternate_flips", "cutout")


@dataclass
class FitConfig:
    """Every option of :func:`imgzoo.fit`, with the reason for its default."""

    epochs: int  # the last epoch's number
    # Epochs trained before this call, as Keras's: it trains initial_epoch+1..epochs, numbered so, on a schedule
    initial_epoch: int = 0  # over those epochs alone (an extended run starts a fresh one from its weights)
    batch_size: int = 128  # He et al. 2016 trained the CIFAR ResNets with batch 128
    augment: str = "standard"  # pad-and-crop and flips: the CIFAR standard since He et al. 2016
    translate: int | None = None  # the crop's largest shift in pixels; None: 1/8 of the side (4 on CIFAR)
    alternate_flips: bool = False  # airbench's flips on alternate epochs; its ablations credit 1 epoch in 10
    cutout: int = 0  # side of a square blanked in each image (DeVries & Taylor 2017); 0: none
    # Nesterov SGD: He et al. 2016's and airbench's; "adamw", another torch.optim class (lr 1e-3, decay 0.05)
    optimizer: OptimizerSpec = "sgd"  # or a callable(params) -> optimizer (nothing added)
    lr: float | None = None  # the peak; None: 0.1 for SGD at batch 128 (He et al. 2016), else 1e-3 (AdamW)
    momentum: float = 0.9  # SGD only; Nesterov whenever > 0. "onecycle" cycles it 0.95 -> 0.85 -> 0.95 instead
    # None: 5e-4 for SGD (kuangliu/pytorch-cifar's), else 0.05 (DeiT, ConvNeXt); never on biases and norms
    weight_decay: float | None = None  # ("Bag of Tricks", He et al. 2019, section 3.1)
    # One-cycle (Smith & Topin 2019) reaches an accuracy in the fewest epochs; "cosine", "step", "linear", None, or a
    schedule: ScheduleSpec = "onecycle"  # callable(optimizer) -> scheduler stepped every schedule_interval
    schedule_interval: str = "epoch"  # for callables only; "epoch" is Lightning's default
    label_smoothing: float = 0.0  # 0 keeps losses comparable to the notebooks'; timm uses 0.1
    norm_bias_lr_scale: float = 1.0  # norm layers' biases' lr multiple; airbench94's 64: 94% in 13.5 epochs, not 18
    # A pretrained ``model.backbone``'s lr multiple: below 1 its features move less than a new head (Kornblith 2019)
    backbone_lr_scale: float = 1.0
    head_epochs: int = 0  # first, epochs of the head alone on the frozen backbone's features, computed once
    ema_decay: float | None = None  # an EMA of the weights (fit adds callbacks.EMA); None: none
    lookahead_decay: float | None = None  # airbench94's Lookahead (callbacks.Lookahead); not with ema_decay
    grad_clip: float | None = None  # max gradient L2 norm; None: no clipping (Lightning's default)
    # "auto": bf16 where the hardware computes it natively, else fp32: bf16 ran at 0.09x fp32's speed on an
    # AVX2-only CPU and 1.92x with avx512_bf16 (bench/bench_fit.py). True also allows fp16 on older GPUs.
    amp: bool | str = "auto"
    channels_last: bool | str = "auto"  # CPUs (ResNet-20 on AVX2: 300 against 258 img/s) and GPUs in amp
    compile: bool = False  # a minute of compiling: ResNet-56 1.2x faster after it, basic_cnn 0.87x
    device: str | torch.device = "auto"  # cuda, then mps, then cpu
    seed: int | None = 0  # runs are reproducible unless asked otherwise; None draws a fresh seed
    num_workers: int | None = None  # None: 0 for TensorDatasets, else min(4, CPUs - 1) (timm's, capped)
    callbacks: Sequence[Callback] = field(default_factory=tuple)
    checkpoint_dir: str | os.PathLike[str] | None = None  # last.pt after every epoch, written atomically
    resume: str | os.PathLike[str] | None = None  # a checkpoint_dir or a .pt in it; the same options
    max_time: float | None = None  # seconds; no epoch starts that would not finish in time
    verbose: int = 1  # 0: silent, 1: progress bar and a line per epoch, 2: the lines only
    recipe: str | None = None  # the recipe the options came from; fit warns if a loader it gets disagrees

    def __post_init__(self) -> None:
        if problems := _problems(self):
            raise ValueError("fit: " + "; ".join(problems))
        if wrong := [type(cb).__name__ for cb in self.callbacks if not isinstance(cb, Callback)]:
            raise TypeError(f"fit: callbacks must be imgzoo.train.callbacks.Callback instances, got {wrong[0]}")

    def lr_and_weight_decay(self) -> tuple[float, float]:
        """The peak lr and weight decay the run uses: the ones given, else the optimizer's defaults."""
        sgd = self.optimizer in ("sgd", torch.optim.SGD)
        lr = self.lr if self.lr is not None else (0.1 if sgd else 1e-3)
        return lr, self.weight_decay if self.weight_decay is not None else (5e-4 if sgd else 0.05)

    def loader_options(self) -> dict[str, Any]:
        """The training batches' keywords: ``FastLoader(data, **cfg.loader_options(), spec=spec, train=True)``."""
        return {name: getattr(self, name) for name in LOADER_FIELDS}

    def to_dict(self, *, learning_only: bool = False) -> dict[str, Any]:
        """The JSON-able options (run.json); ``learning_only``: what decides the learning, lr and decay resolved."""
        skipped = (
            (*HOW_TO_RUN, "recipe", "initial_epoch") if learning_only else ("callbacks", "checkpoint_dir", "resume")
        )
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skipped}
        if learning_only:
            values["lr"], values["weight_decay"] = self.lr_and_weight_decay()
        return {k: str(v) if isinstance(v, torch.device) else v for k, v in values.items() if not callable(v)}


# The numeric options: a test, and what it asks for ("epochs must be an integer >= 1, got 0").
_NUMBERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda v: is_int(v, 1), "an integer >= 1"),
    "initial_epoch": (lambda v: is_int(v, 0), "an integer >= 0"),
    "batch_size": (lambda v: is_int(v, 1), "an integer >= 1"),
    "translate": (lambda v: v is None or is_int(v, 0), "an integer >= 0 or None"),
    "cutout": (lambda v: is_int(v, 0), "an integer >= 0 (pixels; 0 blanks nothing)"),
    "alternate_flips": (lambda v: isinstance(v, bool), "True or False"),
    "lr": (lambda v: v is None or (is_real(v) and v > 0), "> 0"),
    "momentum": (lambda v: is_real(v) and 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v is None or (is_real(v) and v >= 0), ">= 0 or None"),
    "label_smoothing": (lambda v: is_real(v) and 0.0 <= v < 1.0, "in [0, 1)"),
    "norm_bias_lr_scale": (lambda v: is_real(v) and v > 0, "> 0"),
    "backbone_lr_scale": (lambda v: is_real(v) and v > 0, "> 0"),
    "head_epochs": (lambda v: is_int(v, 0), "an integer >= 0"),
    "ema_decay": (lambda v: v is None or (is_real(v) and 0 < v < 1), "in (0, 1) or None"),
    "lookahead_decay": (lambda v: v is None or (is_real(v) and 0 < v < 1), "in (0, 1) or None"),
    "grad_clip": (lambda v: v is None or (is_real(v) and v > 0), "> 0 or None"),
    "max_time": (lambda v: v is None or (is_real(v) and v > 0), "> 0 seconds or None"),
    # torch.manual_seed takes 64 bits; fit adds the process's rank and the loaders multiply by 1_000_003.
    "seed": (lambda v: v is None or is_int(v, 0, 2**40), "an integer from 0 to 2**40 or None"),
    "num_workers": (lambda v: v is None or is_int(v, 0, 1025), "an integer from 0 to 1024 or None"),
}


def _problems(cfg: FitConfig) -> list[str]:
    """What is wrong with the options, each as "name must be ..., got ..."."""
    problems = [
        f"{n} must be {rule}, got {getattr(cfg, n)!r}" for n, (ok, rule) in _NUMBERS.items() if not ok(getattr(cfg, n))
    ]
    if is_int(cfg.initial_epoch) and is_int(cfg.epochs) and cfg.initial_epoch >= cfg.epochs:
        problems.append(f"initial_epoch must be below epochs (the last epoch's number), got {cfg.initial_epoch} and "
                        f"{cfg.epochs}: to train 5 more epochs after 10, pass initial_epoch=10, epochs=15")  # fmt: skip
    if cfg.ema_decay is not None and cfg.lookahead_decay is not None:
        pair = (cfg.ema_decay, cfg.lookahead_decay)
        problems.append(f"ema_decay and lookahead_decay both rewrite the weights: set one, got {pair!r}")
    extra = {"optimizer": ["a torch.optim class", "a callable"], "schedule": ["None", "a callable"]}
    for name, allowed in CHOICES.items():
        value = getattr(cfg, name)
        if name in extra and (callable(value) or (name == "schedule" and value is None)):
            continue
        if value not in allowed or type(value) not in {type(c) for c in allowed}:
            words = [*map(repr, allowed), *extra.get(name, [])]
            one_of = "one of " * (len(words) > 3) + ", ".join(words[:-1]) + " or " + words[-1]
            problems.append(f"{name} must be {one_of}, got {value!r}")
    return problems


# The fewest steps an epoch a recipe keeps: basic_cnn's batch 1024 (44 steps on 45,000 images) takes 2 steps an
# epoch on 2,000 images and learns nothing in 2 epochs (val 10.1%, loss ln 10); at batch 128 or 64 it reaches 33%.
# Never below batch 16: batch norm's error rises below it (Wu & He 2018, arXiv:1803.08494, figure 1).
MIN_STEPS, MIN_BATCH = 16, 16


def fitted_to_data(cfg: FitConfig, images: int) -> tuple[FitConfig, str]:
    """``cfg``, where it gives fewer than MIN_STEPS steps an epoch on ``images``, with its batch cut to a power of
    two that gives them and the lr scaled with it (the linear rule, Goyal et al. 2017, arXiv:1706.02677), and a
    warning that says so; else ``cfg`` and ""."""
    batch = max(MIN_BATCH, 1 << max(images // MIN_STEPS, 1).bit_length() - 1)
    if cfg.batch_size <= batch or -(-images // cfg.batch_size) >= MIN_STEPS:
        return cfg, ""
    cut = replace(cfg, batch_size=batch, lr=cfg.lr_and_weight_decay()[0] * batch / cfg.batch_size)
    return cut, (
        f"warning: {cfg.recipe or 'the'} recipe's batch {cfg.batch_size} gives {-(-images // cfg.batch_size)} "
        f"step(s) an epoch on {images} images, too few to learn from; training at batch {batch}, lr {cut.lr:.3g} "
        "(scaled with the batch). Pass --batch-size and --lr to choose them."
    )


def averaging_callbacks(cfg: FitConfig) -> list[Callback]:
    """The EMA or Lookahead that ``ema_decay`` / ``lookahead_decay`` ask for, unless a callback given is one."""
    if any(isinstance(cb, (EMA, Lookahead)) for cb in cfg.callbacks):
        return []
    if cfg.ema_decay is not None:
        return [EMA(decay=cfg.ema_decay)]
    return [Lookahead(decay=cfg.lookahead_decay)] if cfg.lookahead_decay is not None else []


def fit_callbacks(cfg: FitConfig, has_val: bool) -> tuple[Callback, ...]:
    """The callbacks a fit runs: the ones given, then the averaging its options ask for; an EarlyStopping that
    watches a validation column is refused when there is no validation data (it would never see its column)."""
    for cb in cfg.callbacks:
        if isinstance(cb, EarlyStopping) and cb.monitor.startswith("val_") and not has_val:
            raise ValueError(
                f"fit: EarlyStopping monitors {cb.monitor!r}, but fit was given no validation data: "
                "pass val= to fit, or monitor a training column (EarlyStopping(monitor='train_loss'))"
            )
    return (*cfg.callbacks, *averaging_callbacks(cfg))


def loader_differences(loader: Any, cfg: FitConfig) -> list[str]:
    """How a loader's batch size and augmentation differ from ``cfg``'s, each as a phrase; what it does not
    state (a DataLoader's augment) is not compared."""
    has = {option: getattr(loader, option, None) for option in LOADER_FIELDS}
    return [
        f"{option}={has[option]!r} (the recipe's is {wanted!r})"
        for option, wanted in cfg.loader_options().items()
        if has[option] is not None and has[option] != wanted and not (option == "translate" and wanted is None)
    ]  # translate=None: the loader's own default


def warn_if_loader_differs(loader: Any, cfg: FitConfig) -> None:
    """One warning when the loader a user built is not the recipe's: fit cannot rebuild it."""
    if differences := loader_differences(loader, cfg) if cfg.recipe is not None else []:
        warnings.warn(
            f"fit: recipe {cfg.recipe!r} trains with {cfg.loader_options()}, but the training "
            f"{type(loader).__name__} has {', '.join(differences)}; fit uses the loader as it is. Build it with "
            f"FastLoader(data, **get_recipe({cfg.recipe!r}).config.loader_options(), spec=spec, train=True) to "
            "follow the recipe.",
            UserWarning,
            stacklevel=6,  # the user's fit call: fit_data, _Run.__init__ and fit lie between
        )


def build_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.Optimizer:
    """Decay on weights only; norm biases in a group of their own only when their lr differs (old checkpoints fit)."""
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
    if cfg.backbone_lr_scale != 1.0:  # each group's backbone part in a group of its own, at its lower rate
        body = {id(p) for p in getattr(model, "backbone", nn.Module()).parameters()}
        groups = [
            {**g, "params": [p for p in g["params"] if (id(p) in body) == inside]}
            | ({"lr": g.get("lr", lr) * cfg.backbone_lr_scale} if inside else {})
            for g in groups
            for inside in (False, True)
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
    epochs = cfg.epochs - cfg.initial_epoch  # the schedule spans this call's epochs
    total, sched = epochs * steps_per_epoch, torch.optim.lr_scheduler
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
        milestones = sorted({max(1, int(epochs * 0.5)), max(1, int(epochs * 0.75))})
        return sched.MultiStepLR(optimizer, milestones=milestones, gamma=0.1), "epoch"
    return cfg.schedule(optimizer), cfg.schedule_interval


_SIZED = {"onecycle": "per step", "linear": "per step", "cosine": "per step", "step": "per epoch"}  # by the length


def schedule_size(cfg: FitConfig, steps_per_epoch: int) -> dict[str, Any]:
    """What the schedule is built for, as recorded in the checkpoint: its kind, epochs and steps per epoch."""
    kind = cfg.schedule if cfg.schedule is None or isinstance(cfg.schedule, str) else "callable"
    return {
        "schedule": kind,
        "epochs": cfg.epochs,
        "initial_epoch": cfg.initial_epoch,
        "steps_per_epoch": steps_per_epoch,
    }


def _length(size: dict[str, Any]) -> str:
    steps = f" of {size['steps_per_epoch']} steps" if _SIZED.get(size["schedule"]) == "per step" else ""
    return f"{size['epochs']} epochs{steps}"


def check_schedule_resumable(saved: dict[str, Any] | None, now: dict[str, Any], path: Any) -> None:
    """Refuse up front a resume whose schedule would not continue the checkpointed one (kind and length kept)."""
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
    first = saved.get("initial_epoch", 0)  # absent from checkpoints older than the option
    if first != now["initial_epoch"]:
        raise ValueError(
            f"fit: cannot resume {path}: it was made with initial_epoch={first}, and this call asks for "
            f"initial_epoch={now['initial_epoch']}; its epochs are numbered from {first + 1}. Resume with "
            f"initial_epoch={first}, or {new_run}."
        )
    if now["schedule"] in _SIZED and _length(saved) != _length(now):
        raise ValueError(
            f"fit: cannot resume {path}: it was made with schedule={was} sized for {_length(saved)}, not "
            f"{_length(now)}, and keeps that length (else the run fails or goes on at the wrong lr). To continue it, "
            f"resume with epochs={saved['epochs']}{f', initial_epoch={first}' if first else ''} (same batch size and "
            f"data); for another length, {new_run}."
        )


# The named configs, filled by imgzoo.train.recipes when it is imported (as the model families fill the registry),
# and the names they were recorded under before, so that an old run.json still resumes by its recipe.
@dataclass(frozen=True)
class Recipe:
    """One training recipe: the run's FitConfig, and what the model and evaluation took beside it."""

    name: str  # a weights name ("resnet_cifar.cifar10") or an architecture name ("resnet_cifar")
    config: FitConfig
    tta: bool | str = False  # evaluate(tta=...): False, "flip", "shift" or "flip+shift"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # create_model's beyond classes: {"depth": 56}
    source: str = ""  # the command that ran it, the figures it gave, or the paper it follows

    def __post_init__(self) -> None:
        if self.tta not in (False, True, *TTA_MODES[1:]):
            raise ValueError(f"Recipe {self.name!r}: tta must be one of False, True, {TTA_MODES[1:]}, got {self.tta!r}")
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))  # its own copy: recipes may share one

    def to_meta(self) -> dict[str, Any]:
        """The JSON-able dict a weights entry's ``meta["recipe"]`` and config.json hold."""
        extras = {"tta": self.tta, "model_kwargs": self.model_kwargs, "source": self.source}
        return {**self.config.to_dict(learning_only=True), **extras}

    @classmethod
    def from_meta(cls, name: str, meta: dict[str, Any]) -> Recipe:
        """The Recipe a ``meta["recipe"]`` dict records; its other keys (data, machine, ...) are ignored."""
        if "epochs" not in meta:
            raise ValueError(
                f"the recipe recorded for {name!r} has no 'epochs' (it has {sorted(meta)}); record a run's options "
                "with Recipe(...).to_meta(), which holds the epochs and every option fit takes, when saving it."
            )
        options = {f.name: meta[f.name] for f in dataclasses.fields(FitConfig) if f.name in meta}
        # Written by imgzoo 0.1: Nesterov SGD was "sgd-nesterov", the augmentation was described in words.
        options["optimizer"] = {"sgd-nesterov": "sgd"}.get(options.get("optimizer"), options.get("optimizer", "sgd"))
        if isinstance(options.get("augment"), str):
            options["augment"] = options["augment"].split(" ", 1)[0]
        kwargs = meta.get("model_kwargs", meta.get("kwargs", {}))  # a run folder's config.json says "kwargs"
        return cls(name, FitConfig(**options), meta.get("tta", False), kwargs, meta.get("source", ""))


RECIPES: dict[str, Recipe] = {}
RENAMED: dict[str, str] = {}


def list_recipes() -> list[str]:
    """Every recipe name: the built-in ones, then registered weights entries that record a recipe."""
    return sorted(RECIPES) + [n for n in list_pretrained() if n not in RECIPES and _recorded(n) is not None]


def _recorded(name: str) -> dict[str, Any] | None:
    try:
        recorded = get_weights_entry(name).meta.get("recipe")
    except (KeyError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) and recorded else None


def get_recipe(name: str | Recipe) -> Recipe:
    """The recipe of a weights or architecture name; an outside weights entry gives its config.json's."""
    if isinstance(name, Recipe):
        return name
    if not isinstance(name, str):
        raise TypeError(f"get_recipe takes a recipe name or a Recipe, got {type(name).__name__}")
    if name in RECIPES or name in RENAMED:
        return RECIPES[RENAMED.get(name, name)]
    if (recorded := _recorded(name)) is not None:
        return Recipe.from_meta(name, recorded)
    known = list_recipes()
    close = ", ".join(map(repr, difflib.get_close_matches(name, known, n=3, cutoff=0.5)))
    raise ValueError(
        f"no recipe named {name!r}.{f' Did you mean {close}?' if close else ''} Recipes exist for {known}; for "
        "another model, pass fit's options directly (fit(model, train, epochs=..., lr=...))."
    )


def resolve_config(config: FitConfig | None, overrides: dict[str, Any]) -> FitConfig:
    """A new FitConfig: ``config``, the recipe named by ``recipe=`` or the defaults, with ``overrides`` applied."""
    fields = sorted(f.name for f in dataclasses.fields(FitConfig))
    if unknown := sorted(set(overrides) - set(fields)):
        raise TypeError(f"fit() got unknown options {unknown}; it takes {fields}")
    recipe = overrides.get("recipe")
    if recipe is not None and config is not None:
        raise TypeError(
            f"fit() got both config= and recipe={recipe!r}, and a FitConfig already sets every option. Pass "
            f"config=replace(get_recipe({recipe!r}).config, ...), or recipe= with keyword overrides and no config="
        )
    if recipe is not None:
        found = get_recipe(recipe)
        return replace(found.config, **{**overrides, "recipe": found.name})
    if config is None:
        if "epochs" not in overrides:
            raise TypeError("fit() needs epochs: pass fit(model, train, epochs=N) or config=FitConfig(epochs=N)")
        return FitConfig(**overrides)
    if not isinstance(config, FitConfig):
        raise TypeError(
            f"fit: config must be an imgzoo.train.fit.FitConfig, got {type(config).__name__}; "
            "pass options as keywords (fit(model, train, epochs=3, lr=0.1)) or build FitConfig(epochs=3, ...)"
        )
    return replace(config, **overrides)  # a copy, validated again by __post_init__
