"""What a run of ``imgzoo train`` is (:class:`RunConfig`), and what to do with its folder (``OUT/run.json``)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imgzoo.data.datasets as datasets
from imgzoo._atomic import atomic_write_text, check_output
from imgzoo.eval.evaluation import TTA_MODES
from imgzoo.hub.format import CONFIG_NAME, read_config
from imgzoo.models.registry import get_model_entry, get_weights_entry, list_pretrained
from imgzoo.train.checkpoint import resume_point
from imgzoo.train.config import HOW_TO_RUN, FitConfig
from imgzoo.train.recipes import RECIPES, Recipe, get_recipe, list_recipes

__all__ = ["KNOWN_DATA", "RunConfig", "make_config", "read_run", "resume_config", "run_options"]

RUN_FILE, CHECKPOINTS, WEIGHTS = "run.json", "checkpoints", "weights"  # WEIGHTS: the imgzoo.save folder
_FORMAT = "imgzoo-run-v1"
KNOWN_DATA = {"cifar10": datasets.cifar10, "mnist": datasets.mnist}  # downloaded (checksummed) on first use
_RUNNER_OWNS = ("callbacks", "checkpoint_dir", "resume", "verbose", "initial_epoch")  # a run owns its checkpoints
VAL_FRACTION = 0.1  # the split every shipped weights entry reports its accuracy on


def run_options() -> list[str]:
    """The fit options a run takes from the command line or a study file: FitConfig's, less the runner's own."""
    return [f.name for f in dataclasses.fields(FitConfig) if f.name not in _RUNNER_OWNS]


@dataclass
class RunConfig:
    """Everything that decides what a run trains; stored in ``OUT/run.json``."""

    model: str
    data: str  # an absolute folder, or a name in KNOWN_DATA
    fit: FitConfig  # its seed also draws the split, the limit and the initial weights
    limit: int | None = None  # train on this many images (stratified, seeded); None: all
    kwargs: dict[str, Any] = field(default_factory=dict)  # the model builder's
    # 0: a final fit on every image, once a validation run has chosen the recipe (as airbench and He et al. do)
    val_fraction: float = VAL_FRACTION

    def __post_init__(self) -> None:
        if self.limit is not None and not datasets.is_int(self.limit, 1):
            raise ValueError(f"limit must be a positive integer; got {self.limit!r}")
        if not (datasets.is_real(self.val_fraction) and 0 <= self.val_fraction < 1):
            raise ValueError(
                f"val_fraction must be a number from 0 to below 1, e.g. 0.1 (0: train on every image, no validation); "
                f"got {self.val_fraction!r}"
            )
        if not isinstance(self.fit.seed, int):
            raise ValueError(f"a run needs a whole-number seed (its split depends on it); got {self.fit.seed!r}")
        for name in ("optimizer", "schedule"):
            if callable(getattr(self.fit, name)):
                raise ValueError(f"a run records its options in run.json: {name} must be a name, not a callable")

    def augmentation(self) -> str:
        """The training augmentation in words, e.g. "standard (4-pixel crops, alternating flips, 12-pixel cutout)"."""
        fit = self.fit
        extras = [f"{fit.translate}-pixel crops"] if fit.translate is not None else []
        extras += ["alternating flips"] if fit.alternate_flips else []
        extras += [f"{fit.cutout}-pixel cutout"] if fit.cutout else []
        return fit.augment + (f" ({', '.join(extras)})" if extras and fit.augment != "none" else "")

    def to_dict(self) -> dict[str, Any]:
        """run.json's record: the run's own fields and every fit option, side by side."""
        fit = {k: v for k, v in self.fit.to_dict().items() if k not in _RUNNER_OWNS}
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "fit"}, **fit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Also reads 0.1's run.json, which kept the less common fit options under "fit_options"."""
        options = {**data, **data.get("fit_options", {})}
        if "ema_decay" not in options and options.get("recipe"):  # 0.1 took a recipe's averaging from the recipe
            found = get_recipe(options["recipe"]).config
            options |= {"ema_decay": found.ema_decay, "lookahead_decay": found.lookahead_decay}
        fit = FitConfig(**{k: options[k] for k in run_options() if k in options})
        kwargs, fraction = dict(options.get("kwargs", {})), options.get("val_fraction", VAL_FRACTION)  # 0.1's: 0.1
        return cls(data["model"], data["data"], fit, options.get("limit"), kwargs, fraction)


def recipe_for(model: str, recipe: str | None = None) -> Recipe | None:
    """The Recipe named ``recipe`` (it must be one for ``model``), else ``model``'s own, else None."""
    if recipe is None:
        return RECIPES.get(model)
    found = get_recipe(recipe)  # an unknown name is refused with the closest known ones
    architecture = found.name.split(".", 1)[0]
    if architecture in RECIPES and architecture != model:
        own = ", ".join(n for n in list_recipes() if n.split(".", 1)[0] == model) or "none yet"
        raise ValueError(
            f"recipe {recipe!r} trains {architecture}, not {model}. Pass one of {model}'s ({own}), or none."
        )
    return found


def make_config(
    model: str,
    data: str,
    *,
    recipe: str | None = None,
    limit: int | None = None,
    kwargs: dict | None = None,
    val_fraction: float | None = None,
    **given: Any,
) -> RunConfig:
    """A RunConfig from the model's recipe (or ``recipe=``'s), each fit option in ``given`` not None over it. The
    recipe's amp was its machine's (bf16 can run 10x slower than fp32 elsewhere): a run takes "auto" unless told."""
    known = list(get_model_entry(model).default_kwargs)  # an unknown model fails here, with close matches
    if not isinstance({} if kwargs is None else kwargs, dict):
        raise ValueError(f"kwargs must be a table of {model}'s options, e.g. kwargs = {{ depth = 20 }}; got {kwargs!r}")
    for what, names, allowed, whose in (("fit option", given, run_options(), "a run"), ("kwarg", kwargs, known, model)):
        if unknown := sorted(set(names or ()) - set(allowed)):
            raise ValueError(f"unknown {what}(s) {', '.join(unknown)}; {whose} takes {', '.join(allowed)}")
    found = recipe_for(model, recipe)
    base = dataclasses.replace(found.config, amp="auto", recipe=found.name) if found else FitConfig(epochs=15)
    fit = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
    builder = {**(found.model_kwargs if found else {}), **(kwargs or {})}
    fraction = VAL_FRACTION if val_fraction is None else val_fraction
    return RunConfig(model, resolve_data(data), fit, limit, builder, fraction)


def resolve_data(data: str | os.PathLike[str]) -> str:
    """An existing folder as an absolute path; else a known data set's name; else a FileNotFoundError."""
    path = Path(data).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if str(data) in KNOWN_DATA:
        return str(data)
    raise FileNotFoundError(
        f"data {str(data)!r} is neither a folder nor a known data set ({', '.join(KNOWN_DATA)}). Pass a folder in "
        "a layout imgzoo reads (CIFAR-10, MNIST, class folders, dog breeds), or a known name to download it."
    )


def recipe_differences(config: RunConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fit options and builder kwargs in which ``config`` differs from its recipe's, in field order."""
    base = make_config(config.model, config.data, recipe=config.fit.recipe)
    fit = {k: v for k, v in config.to_dict().items() if k in run_options() and v != getattr(base.fit, k)}
    kwargs = {k: v for k, v in config.kwargs.items() if k not in base.kwargs or base.kwargs[k] != v}
    return fit, kwargs


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
        return RunRecord(RunConfig.from_dict(data["config"]), int(data["done_before"]), bool(data["finished"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path} is not a run record imgzoo can read ({exc}). Choose another --out.") from None


def train_command(config: RunConfig, out: Path) -> str:
    """The command that trains this run from scratch: the options that differ from its recipe's are spelt out."""
    words = ["imgzoo", "train", config.model, config.data, "--out", str(out)]
    words += ["--recipe", config.fit.recipe] if config.fit.recipe and config.fit.recipe != config.model else []
    words += ["--limit", str(config.limit)] if config.limit else []
    words += ["--val", str(config.val_fraction)] if config.val_fraction != VAL_FRACTION else []
    fit, kwargs = recipe_differences(config)
    for name, value in fit.items():
        flag = f"--{name.replace('_', '-')}"
        if name != "recipe":  # spelt out above; a renamed recipe's old name differs from its new one
            words += [flag if value else f"--no-{flag[2:]}"] if isinstance(value, bool) else [flag, str(value)]
    shown = [f"{k}={v if isinstance(v, str) else repr(v).replace(' ', '')}" for k, v in kwargs.items()]
    return shlex.join(words + (["--model-kwargs", *shown] if shown else []))


def resume_command(config: RunConfig, out: Path, epochs: int | None = None) -> str:
    """The command that goes on with the run in ``out``; run.json supplies every other option."""
    more = ["--epochs", str(epochs)] if epochs is not None else []
    return shlex.join(["imgzoo", "train", config.model, config.data, "--out", str(out), *more, "--resume"])


@dataclass
class Plan:
    """What a call of ``train_run`` will do: start, resume an unfinished training, extend, or nothing."""

    action: str  # "start", "resume", "extend" or "done"
    record: RunRecord
    resume_from: Path | None = None  # the checkpoint an unfinished training goes on from
    from_weights: bool = False  # the run goes on from OUT's weights (an extension), not from fresh ones


def plan_run(out: Path, config: RunConfig, resume: bool) -> Plan:
    """Decide what to do with ``out``, refusing anything that would train over another run."""
    check_output(out, reads=(config.data,), folder_of=RUN_FILE)  # nothing of the user's is written over
    record = read_run(out)
    # A start that failed or was killed before its first checkpoint left only run.json: nothing to go on from or
    # lose, so the corrected command starts afresh instead of being refused as "already holds a run".
    unstarted = record is not None and not record.finished and not record.done_before
    if unstarted and not resume and resume_point(out / CHECKPOINTS) is None and not (out / WEIGHTS).exists():
        record = None
    if record is None:
        if resume:
            raise FileNotFoundError(f"nothing to resume: {out} holds no run ({RUN_FILE}). Run without --resume.")
        return Plan("start", RunRecord(config))
    old, going_on = record.config, resume_command(record.config, out)
    progress = f"{'finished' if record.finished else 'unfinished'}, {old.fit.epochs} epochs asked"
    if not resume:
        raise FileExistsError(f"{out} already holds a run of {old.model} ({progress}). To go on with it: {going_on}; "
                              "for more epochs add --epochs N; or choose another --out.")  # fmt: skip
    # Only the epochs and how it runs (compile, device...) may change: the rest decides what the run learns.
    before, after = ({k: v for k, v in c.to_dict().items() if k not in (*HOW_TO_RUN, "epochs")} for c in (old, config))
    changed = [f"{name} {before[name]!r} -> {after.get(name)!r}" for name in before if before[name] != after.get(name)]
    if changed:
        raise ValueError(f"{out} holds a run with other settings ({'; '.join(changed)}). Resume it with the same ones "
                         "(omit an option to keep the run's), or start a new run in another --out.")  # fmt: skip
    if not record.finished:
        if config.fit.epochs != old.fit.epochs:
            raise ValueError(
                f"{out} is {progress}; finish it first ({going_on}), then extend it with --epochs {config.fit.epochs}"
            )
        # An exact interrupted.pt (Ctrl-C) if there is one, else last.pt; none: the training had not checkpointed.
        checkpoint = resume_point(out / CHECKPOINTS)
        return Plan("resume", record, checkpoint, from_weights=record.done_before > 0 and checkpoint is None)
    if config.fit.epochs <= old.fit.epochs:
        return Plan("done", record)
    return Plan("extend", RunRecord(config, done_before=old.fit.epochs), from_weights=True)


def resume_config(out: Path, model: str, data: str, **given: Any) -> RunConfig:
    """The config to resume ``out`` with: its record's, with the options given explicitly laid over it."""
    record = read_run(out)
    if record is None:
        return make_config(model, data, **given)
    old, kwargs, limit = record.config, given.pop("kwargs", None) or {}, given.pop("limit", None)
    fraction = given.pop("val_fraction", None)
    fit = dataclasses.replace(old.fit, **{k: v for k, v in given.items() if v is not None})
    limit, fraction = old.limit if limit is None else limit, old.val_fraction if fraction is None else fraction
    return RunConfig(model, resolve_data(data), fit, limit, {**old.kwargs, **kwargs}, fraction)


def recorded_tta(weights: str) -> str:
    """The TTA mode ``weights`` record (a name's card or a folder's config.json), so ``--tta`` measures the same."""
    config = Path(weights) / CONFIG_NAME
    recipe = get_weights_entry(weights).meta["recipe"] if weights in list_pretrained() else None
    mode = ((read_config(config).get("recipe") if config.is_file() else recipe) or {}).get("tta")
    if mode in (None, False, "none"):
        modes = " | --tta ".join(TTA_MODES[1:])
        raise ValueError(f"--tta: {weights} records no test-time augmentation of its own; name one: --tta {modes}")
    return "flip" if mode is True else mode
