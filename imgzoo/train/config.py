"""FitConfig: every option of :func:`imgzoo.fit`, with the reason for each default.

``FitOptions`` repeats the fields as a TypedDict, so that ``fit(model, train, epochs=3, lr=0.1)``
is checked by type checkers and completed by IDEs like the dataclass itself; a test keeps the two
in step. ``resolve_config`` turns fit's ``config=`` and keyword overrides into the one config a run
uses, on a copy: the caller's FitConfig is never changed.

A recipe (:mod:`imgzoo.train.recipes`) fills the options a training run is known by:
``fit(model, train, val, recipe="resnet_cifar.cifar10")`` or ``FitConfig.from_recipe(name)``
take its epochs, batch size, optimizer, lr, momentum, weight decay, schedule, label smoothing and
amp, and add its EMA as a callback; every keyword passed beside it wins. ``config=`` and
``recipe=`` together are refused: a FitConfig already fixes every option, so there is nothing
left for the recipe to fill. ``FitConfig(recipe=...)`` built by hand only records the name.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import torch

from imgzoo._device import AMP_CHOICES
from imgzoo.train.callbacks import EMA, Callback, Lookahead
from imgzoo.train.recipes import SCHEDULES, Recipe, get_recipe

__all__ = [
    "FitConfig",
    "FitOptions",
    "OptimizerSpec",
    "ScheduleSpec",
    "recipe_averaging",
    "resolve_config",
    "warn_if_loader_differs",
]

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
    # "cosine" and "step" (x0.1 at 50% and 75%, He et al. 2016) are the classics; "linear" is
    # airbench94's: up from 0.2x the peak to the peak over the first 23% of steps, then straight down
    # to 0.07x, with the momentum held (one-cycle also cycles it).
    # A callable(optimizer) -> scheduler is stepped every `schedule_interval`.
    schedule: ScheduleSpec = "onecycle"
    schedule_interval: str = "epoch"  # "epoch" (Lightning's default) or "step"; callables only
    label_smoothing: float = 0.0  # 0 keeps losses comparable to the notebooks'; timm uses 0.1
    # The learning rate of normalisation layers' shifts (biases) as a multiple of `lr`. airbench94 uses
    # 64: its ablations reached 94% in 13.5 epochs with it against 18 without (with dirac init).
    norm_bias_lr_scale: float = 1.0
    # "auto": bf16 where the hardware computes it natively (a CUDA GPU that supports it, a CPU with
    # AVX512-BF16 or AMX), else fp32. bf16 on an AVX2-only CPU measured 0.09x fp32's speed, and 1.92x
    # on a CPU with avx512_bf16 (bench/bench_fit.py), so the choice is the machine's, not luck's.
    # True also allows fp16 with a GradScaler on GPUs without bf16. False / "fp32": full precision.
    amp: bool | str = "auto"
    grad_clip: float | None = None  # max gradient L2 norm; None: no clipping (Lightning's default)
    # "auto": on for CPUs (ResNet-20 training +16% on an AVX2 CPU, 300 against 258 img/s) and for GPUs
    # under mixed precision (tensor cores read NHWC); off elsewhere. True / False force it.
    channels_last: bool | str = "auto"
    compile: bool = False  # a minute of compiling; it repaid that on long ResNet runs, not on basic_cnn
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
    # The recipe (imgzoo.train.recipes) the options came from, by name: fit(recipe=...) and from_recipe fill the
    # options from it and record it here; fit then warns if a FastLoader it is given has another batch
    # size or augmentation. Set by hand on a FitConfig, it only records the name.
    recipe: str | Recipe | None = None

    def __post_init__(self) -> None:
        for problem in (*_number_problems(self), *_choice_problems(self)):
            raise ValueError(f"fit: {problem}")
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"fit: callbacks must be imgzoo.train.callbacks.Callback instances, got {type(cb).__name__}"
                )
        if self.recipe is not None:
            get_recipe(self.recipe)  # an unknown name is refused here, with the closest known ones

    @classmethod
    def from_recipe(cls, recipe: str | Recipe, **overrides: Any) -> FitConfig:
        """The recipe's options (and its EMA or Lookahead as a callback), with ``overrides`` winning over them."""
        found = get_recipe(recipe)
        options: dict[str, Any] = {**found.fit_options(), **overrides}
        callbacks = tuple(options.get("callbacks", ()))
        if not any(isinstance(cb, (EMA, Lookahead)) for cb in callbacks):
            options["callbacks"] = (*callbacks, *recipe_averaging(found))
        options["recipe"] = recipe
        return cls(**options)


def recipe_averaging(recipe: Recipe) -> list[Callback]:
    """The weight-averaging callback a recipe trains with: its EMA or its Lookahead, or none."""
    if recipe.ema_decay is not None:
        return [EMA(decay=recipe.ema_decay)]
    if recipe.lookahead_decay is not None:
        return [Lookahead(decay=recipe.lookahead_decay)]
    return []


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number_problems(cfg: FitConfig) -> list[str]:
    """What is wrong with the numeric options, each as "name must be ..., got ..."."""
    checks = [
        (_is_int(cfg.epochs) and cfg.epochs >= 1, "epochs must be an integer >= 1", cfg.epochs),
        (_is_int(cfg.batch_size) and cfg.batch_size >= 1, "batch_size must be an integer >= 1", cfg.batch_size),
        (cfg.lr is None or cfg.lr > 0, "lr must be > 0", cfg.lr),
        (0.0 <= cfg.label_smoothing < 1.0, "label_smoothing must be in [0, 1)", cfg.label_smoothing),
        (cfg.norm_bias_lr_scale > 0, "norm_bias_lr_scale must be > 0", cfg.norm_bias_lr_scale),
        (cfg.grad_clip is None or cfg.grad_clip > 0, "grad_clip must be > 0 or None", cfg.grad_clip),
        (cfg.max_time is None or cfg.max_time > 0, "max_time must be > 0 seconds or None", cfg.max_time),
    ]
    return [f"{rule}, got {value!r}" for ok, rule, value in checks if not ok]


def _choice_problems(cfg: FitConfig) -> list[str]:
    """What is wrong with the options that name one of a few choices."""
    problems = []
    if isinstance(cfg.optimizer, str) and cfg.optimizer not in ("sgd", "adamw"):
        problems.append(f"optimizer must be 'sgd', 'adamw', a torch.optim class or a callable, got {cfg.optimizer!r}")
    if isinstance(cfg.schedule, str) and cfg.schedule not in SCHEDULES:
        problems.append(
            f"schedule must be {', '.join(repr(s) for s in SCHEDULES)}, None or a callable, got {cfg.schedule!r}"
        )
    if cfg.schedule_interval not in ("epoch", "step"):
        problems.append(f"schedule_interval must be 'epoch' or 'step', got {cfg.schedule_interval!r}")
    if not (isinstance(cfg.amp, bool) or (isinstance(cfg.amp, str) and cfg.amp in AMP_CHOICES)):
        problems.append(f"amp must be one of {AMP_CHOICES}, got {cfg.amp!r}")
    if not (isinstance(cfg.channels_last, bool) or cfg.channels_last == "auto"):
        problems.append(f"channels_last must be True, False or 'auto', got {cfg.channels_last!r}")
    if cfg.verbose not in (0, 1, 2):
        problems.append(f"verbose must be 0, 1 or 2, got {cfg.verbose!r}")
    return problems


class FitOptions(TypedDict, total=False):
    """FitConfig's fields as keyword arguments of fit (``**overrides: Unpack[FitOptions]``)."""

    epochs: int
    batch_size: int
    lr: float | None
    optimizer: OptimizerSpec
    momentum: float
    weight_decay: float | None
    schedule: ScheduleSpec
    schedule_interval: str
    label_smoothing: float
    norm_bias_lr_scale: float
    amp: bool | str
    grad_clip: float | None
    channels_last: bool | str
    compile: bool
    device: str | torch.device
    seed: int | None
    num_workers: int | None
    callbacks: Sequence[Callback]
    checkpoint_dir: str | os.PathLike[str] | None
    resume: str | os.PathLike[str] | None
    max_time: float | None
    verbose: int
    recipe: str | Recipe | None


def resolve_config(config: FitConfig | None, overrides: dict[str, Any]) -> FitConfig:
    """The config a run uses: ``config`` (or the defaults) with ``overrides`` applied, as a new FitConfig."""
    fields = sorted(f.name for f in dataclasses.fields(FitConfig))
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise TypeError(f"fit() got unknown options {unknown}; it takes {fields}")
    recipe = overrides.get("recipe")
    if recipe is not None and config is not None:
        raise TypeError(
            f"fit() got both config= and recipe={recipe!r}: a FitConfig already sets every option, so the recipe "
            f"would have nothing to fill. Pass config=FitConfig.from_recipe({recipe!r}, ...) instead, or recipe= "
            "with keyword overrides and no config="
        )
    if recipe is not None:
        return FitConfig.from_recipe(recipe, **{k: v for k, v in overrides.items() if k != "recipe"})
    if config is None:
        if "epochs" not in overrides:
            raise TypeError("fit() needs epochs: pass fit(model, train, epochs=N) or config=FitConfig(epochs=N)")
        return FitConfig(**overrides)
    if not isinstance(config, FitConfig):
        raise TypeError(
            f"fit: config must be an imgzoo.train.fit.FitConfig, got {type(config).__name__}; "
            "pass options as keywords (fit(model, train, epochs=3, lr=0.1)) or build FitConfig(epochs=3, ...)"
        )
    return dataclasses.replace(config, **overrides)  # a copy, validated again by __post_init__


def warn_if_loader_differs(loader: Any, cfg: FitConfig) -> None:
    """One warning when the training loader a user built has another batch size or augmentation than the recipe.

    fit cannot rebuild a loader it is given, so the run would silently not be the recipe's.
    """
    if cfg.recipe is None:
        return
    recipe = get_recipe(cfg.recipe)
    differences = recipe.loader_differences(loader)
    if differences:
        warnings.warn(
            f"fit: recipe {recipe.name!r} trains with {recipe.loader_options()}, but the training "
            f"{type(loader).__name__} has {', '.join(differences)}; fit uses the loader as it is. Build it with "
            f"FastLoader(data, **get_recipe({recipe.name!r}).loader_options(), spec=spec, train=True) to follow "
            "the recipe.",
            UserWarning,
            stacklevel=6,  # the user's fit call: fit_data, _Run.__init__ and fit lie between
        )
