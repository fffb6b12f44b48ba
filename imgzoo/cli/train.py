"""``imgzoo train``, ``evaluate`` and ``compare``: arguments into calls of :mod:`imgzoo.study`, which checks them."""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_type_hints

import imgzoo.study.config as run_config
import imgzoo.study.run as runs
from imgzoo._atomic import check_output
from imgzoo.eval.evaluation import evaluate, json_safe
from imgzoo.hub.api import load
from imgzoo.study.compare import load_study, run_study
from imgzoo.train.config import CHOICES, FitConfig

_WORDS = {"true": True, "false": False, "none": None, "null": None}  # as a TOML or JSON user would type them


def model_kwarg(text: str) -> tuple[str, Any]:
    """argparse type: ``KEY=VALUE``, the value a Python literal (``widths=[32,64]``, ``whiten=true``) or a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. depth=56 or widths=[32,64,128]; got {text!r}")
    with contextlib.suppress(ValueError, SyntaxError):
        return key, _WORDS[raw.lower()] if raw.lower() in _WORDS else ast.literal_eval(raw)
    return key, raw


def printable(text: str) -> str:
    """``text`` safe to print on a line of its own: a newline, an ANSI escape or a byte that is not UTF-8 (in a file
    or class name) is written as its escape, so it can neither forge an output line nor drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def out_path(text: str) -> Path:
    """argparse type of every --out: Path("") would be ".", the current folder, which nobody means by an empty path."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name the file or folder to write, e.g. --out runs/first")
    return Path(text)


def _need_plots() -> None:
    """Refuse before training, not after it, when the figures the run promises cannot be drawn."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("this command draws its figures with matplotlib, not installed: pip install 'imgzoo[plot]'")


FLAG_HELP = {  # one line per fit option a run takes: the flags are FitConfig's fields (imgzoo.train.config)
    "epochs": "total epochs; more extends a finished run",
    "batch_size": "images per step",
    "augment": "training augmentation",
    "translate": "largest shift of the random crop in pixels (none: 1/8 of the side)",
    "alternate_flips": "flip each image on alternate epochs instead of at random, as airbench does",
    "cutout": "side of the square blanked in each training image, in pixels (0: none)",
    "optimizer": "the optimizer",
    "lr": "peak learning rate (none: 0.1 for sgd, 1e-3 for adamw)",
    "momentum": "SGD's Nesterov momentum (the onecycle schedule cycles it from 0.95 to 0.85 and back instead)",
    "weight_decay": "weight decay of the weights (none: 5e-4 for sgd, 0.05 for adamw)",
    "schedule": "learning-rate schedule",
    "schedule_interval": "how often a scheduler steps (callables only)",
    "label_smoothing": "label smoothing of the loss",
    "norm_bias_lr_scale": "the learning rate of norm layers' biases as a multiple of --lr",
    "backbone_lr_scale": "the learning rate of a pretrained backbone as a multiple of --lr",
    "head_epochs": "first train the new head alone for N epochs on the frozen backbone's features, computed once",
    "ema_decay": "train with an EMA of the weights of this decay",
    "lookahead_decay": "train with airbench's Lookahead of this decay",
    "grad_clip": "largest gradient L2 norm",
    "amp": "precision (auto: bf16 where the hardware computes it natively)",
    "channels_last": "NHWC memory layout",
    "compile": "train through torch.compile: ResNet-56 1.2x faster, basic_cnn 0.87x (docs/notes.md)",
    "device": "cpu, cuda, cuda:1, mps or auto",
    "seed": "seed of the split, the limit, the weights and training",
    "num_workers": "loader worker processes",
    "max_time": "seconds; no epoch starts that would not finish in time",
    "recipe": "train by this recipe (imgzoo.train.recipes), e.g. resnet_cifar.cifar10 (default: the model's own)",
}


def _fit_value(name: str) -> Callable[[str], Any]:
    """argparse type for the fit option ``name``: its annotation's types ("none" for None), checked by FitConfig."""
    hint = get_type_hints(FitConfig)[name]
    kinds = [t for t in (get_args(hint) or (hint,)) if t in (int, float, str)]

    def parse(text: str) -> Any:
        value: Any = text if text in CHOICES.get(name, ()) else _WORDS.get(text.lower(), text)  # true, false, none
        if isinstance(value, str) and name not in CHOICES:
            for kind in kinds:  # int before float
                with contextlib.suppress(ValueError):
                    value = kind(text)
                    break
            else:
                raise argparse.ArgumentTypeError(f"expected {' or '.join(k.__name__ for k in kinds)}; got {text!r}")
        try:
            FitConfig(**{"epochs": 1, name: value})  # every check of the option, in the one place it is written
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("fit: ")) from None
        return value

    parse.__name__ = name  # argparse names the type in its errors
    return parse


def add_fit_flags(p: argparse.ArgumentParser) -> None:
    """A flag per FitConfig field a run takes, each defaulting to None: the recipe's value (or the run's)."""
    hints = get_type_hints(FitConfig)
    for name in run_config.run_options():
        about = FLAG_HELP[name] + " (default: the recipe's)" * ("default:" not in FLAG_HELP[name])
        choices = ",".join(c if isinstance(c, str) else str(c).lower() for c in CHOICES.get(name, ()))
        how = {"type": _fit_value(name), "metavar": f"{{{choices}}}" if choices else None}
        how = {"action": argparse.BooleanOptionalAction} if hints[name] is bool else how
        p.add_argument(f"--{name.replace('_', '-')}", help=about, **how)


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def cmd_train(args: argparse.Namespace) -> int:
    _need_plots()
    given = {name: getattr(args, name) for name in [*run_config.run_options(), "limit", "val_fraction"]}
    given["kwargs"] = dict(args.model_kwargs) if args.model_kwargs else None
    # With --resume, the run's own options, with any given here laid over them (and checked).
    make = functools.partial(run_config.resume_config, args.out) if args.resume else run_config.make_config
    config = make(args.model, args.data, **given)
    verbose = 1 if sys.stderr.isatty() else 2  # a progress bar for a person at a terminal, lines for a log file
    result = runs.train_run(args.out, config, resume=args.resume, verbose=verbose, tta=args.tta)
    if result.action == "done":
        return 0
    m = result.metrics
    if not m:  # a final fit: nothing held out to measure on
        print(f"{config.model}: trained on every image for {_epochs(len(result.history))} ({result.wall_time:.1f} s)")
        print(f"wrote {result.out}: {run_config.WEIGHTS}/, history.csv, history.json, curves.png")
        return 0 if result.finished else 1
    tta = f"; with TTA {m['tta']}: top-1 {m['val_acc_tta']:.2%}" if "tta" in m else ""
    scores = f"val top-1 {m['val_acc']:.2%}, top-5 {m['val_top5']:.2%}, loss {m['val_loss']:.4f}{tta}"
    print(f"{config.model}: {scores} after {_epochs(len(result.history))} ({result.wall_time:.1f} s)")
    files = "(model.safetensors, config.json, README.md), history.csv, curves.png, samples.png, confusion.png"
    print(f"wrote {result.out}: {run_config.WEIGHTS}/ {files}, metrics.json")
    return 0 if result.finished else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.out is not None:  # before the work: a new or empty folder, or one evaluate wrote into before
        check_output(args.out, reads=(args.data,), folder_of="confusion.png")
    weights = run_config.weights_of(args.weights)
    tta = run_config.recorded_tta(weights) if args.tta == "recipe" else args.tta or False
    model, record = load(weights), run_config.read_run(args.weights)
    # A run validated on the split its seed drew, and trained on its limited part only.
    seed, limit, fraction = (0, None, run_config.VAL_FRACTION)
    if record is not None:
        seed, limit, fraction = record.config.fit.seed, record.config.limit, record.config.val_fraction
    if args.split == "val" and not fraction:
        raise ValueError(f"{args.weights} was trained on every image (--val 0): it has no validation split to measure")
    dataset = runs.open_data(run_config.resolve_data(args.data))
    runs.check_classes(model, dataset, args.data)
    which = {"train": 0, "val": 1}.get(args.split)
    part = dataset if which is None else runs.split_data(dataset, seed, limit, fraction)[which]
    result = evaluate(model, runs.eval_data(model, part), tta=tta, progress=sys.stderr.isatty())
    if args.out is not None:
        result.plot_confusion_matrix(args.out / "confusion.png")
    if args.json:
        where = {"weights": args.weights, "data": args.data, "split": args.split, "seed": seed}
        print(json.dumps({**where, **json_safe(result.to_dict())}, indent=1))
        return 0
    what = {"val": f"the validation split ({fraction:.0%}, seed {seed})", "all": "every image"}.get(args.split)
    what = what or f"the training split ({1 - fraction:.0%}, seed {seed}), without augmentation"
    print(f"{result.num_samples} images, {what}\n{result}\n\nclass accuracy")
    width = max(len(name) for name in result.class_names)
    for name, accuracy in zip(result.class_names, result.per_class_accuracy, strict=True):
        print(printable(f"{name.ljust(width)}  {'n/a (no images)' if accuracy != accuracy else f'{accuracy:.2%}'}"))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    _need_plots()
    study = load_study(args.study, epochs=args.epochs, limit=args.limit, data=args.data)
    report = run_study(study, args.out, verbose=1 if sys.stderr.isatty() else 2, tta=args.tta)
    print(report.comparison.to_markdown(timing=True))
    print(f"wrote {args.out / 'report.md'}, report.json, curves.png and each run's folder in {args.out / 'runs'}")
    return 0 if all(result.finished for result in report.results.values()) else 1
