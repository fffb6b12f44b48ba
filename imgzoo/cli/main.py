"""The ``imgzoo`` command, a thin layer over the library (the commands that train are in train.py)."""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from PIL import UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

from imgzoo._atomic import check_output
from imgzoo._version import __version__
from imgzoo.cli.train import add_fit_flags, cmd_compare, cmd_evaluate, cmd_train, model_kwarg, out_path, printable
from imgzoo.eval.evaluation import TTA_MODES, json_safe, plot_predictions, predict
from imgzoo.hub.api import download, load
from imgzoo.hub.export import FORMATS, export_model
from imgzoo.models.registry import get_model_entry, get_weights_entry, list_models, list_pretrained
from imgzoo.study.config import weights_of


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"


def _align(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def models_table(pattern: str | None = None) -> str:
    """Build every registered model with its defaults and tabulate name, parameters and shapes."""
    rows = [("name", "params", "trainable", "input shape", "output shape", "description")]
    for name in list_models(pattern):
        entry = get_model_entry(name)
        model, x = entry.builder().eval(), torch.zeros(2, *entry.default_spec.input_shape)
        with torch.no_grad():
            shapes = (str(tuple(x.shape[1:])), str(tuple(model(x).shape[1:])))  # one image's, not the probe's 2
        params = _millions(sum(p.numel() for p in model.parameters()))
        trainable = _millions(sum(p.numel() for p in model.parameters() if p.requires_grad))  # fewer when frozen
        plain = re.sub(r"(?::\w+:)?`+([^`]*)`+", r"\1", entry.description)  # ``x`` and :func:`x` in a docstring
        rows.append((name, params, trainable, *shapes, re.split(r"(?<=\.) (?!\d)", plain)[0]))  # its first sentence
    return _align(rows)


def pretrained_table(pattern: str | None = None) -> str:
    """Every registered weights entry: what it was trained on, how well, and where its files are."""
    rows: list[tuple[str, ...]] = [("name", "dataset", "metrics", "params", "files")]
    for name in list_pretrained(pattern):
        entry = get_weights_entry(name)
        # The headline figures (the rest, in its card, make rows 250 columns wide): val top-1, with TTA, the mode.
        shown = [(k, v) for k, v in entry.meta["metrics"].items() if k in ("val_acc", "val_acc_tta", "tta")]
        metrics = ", ".join(f"{k} {format(v, '.4f') if isinstance(v, float) else v}" for k, v in shown)
        where = f"hf-hub:{entry.repo_id}@{entry.revision[:12]}" if entry.repo_id else f"package:{entry.package_dir}"
        rows.append((name, str(entry.meta["dataset"]), metrics or "-", _millions(entry.meta["num_params"]), where))
    return _align(rows)


def cmd_list(args: argparse.Namespace) -> int:
    """``models`` and ``pretrained``: the table of what matches the pattern; exit 1 when nothing does."""
    models = args.command == "models"
    names, kind = (list_models, "model") if models else (list_pretrained, "weights name")
    if args.pattern and not names(args.pattern):
        print(f"imgzoo: no {kind} matches {args.pattern!r}; known: {', '.join(names()) or 'none'}", file=sys.stderr)
        return 1
    print(models_table(args.pattern) if models else pretrained_table(args.pattern))
    if models and list_pretrained(args.pattern):  # the weights of the models shown, not every entry
        print(f"\n{pretrained_table(args.pattern)}")
    return 0


def image_paths(given: Sequence[str]) -> list[str]:
    """Every image a list of files, folders (searched recursively) and glob patterns names, in order."""
    found: list[str] = []
    for item in given:
        path = Path(item)
        if path.is_file():
            matches = [item]
        elif path.is_dir():
            matches = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        elif glob.has_magic(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
        else:
            raise FileNotFoundError(f"{item} does not exist; give image files, folders or a glob ('x/*.png')")
        if not matches:
            raise FileNotFoundError(f"{item} names no image files (looked for {', '.join(IMG_EXTENSIONS)})")
        found += matches
    return found


def cmd_predict(args: argparse.Namespace) -> int:
    paths, model = image_paths(args.images), load(weights_of(args.weights))
    # Images decoded and scored at once: 64 of 32x32, fewer of larger ones, so memory stays flat for thousands.
    step = max(1, min(64, 2**18 // (model.data_spec.size[0] * model.data_spec.size[1])))
    from tqdm.auto import tqdm  # the JSON comes whole at the end: a bar says how far it is meanwhile

    answers, starts = [], range(0, len(paths), step)
    for start in tqdm(starts, "predict", unit="batch", leave=False, disable=not (args.json and sys.stderr.isatty())):
        batch = paths[start : start + step]
        scored = list(zip(batch, predict(model, batch, topk=args.topk), strict=True))
        answers += scored
        for path, ranked in scored if not args.json else ():  # each line as soon as its batch is scored
            print(printable(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked)), flush=True)
    if args.json:  # a probability that is not finite (the logits overflowed) is null: JSON has no NaN
        top = [{"path": p, "top": [{"class": c, "probability": q} for c, q in ranked]} for p, ranked in answers]
        print(json.dumps(json_safe(top), indent=1))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    suffix = Path(args.out).suffix.lower()
    fmt = args.format or {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript"}.get(suffix)
    if fmt is None:
        raise ValueError(f"export: cannot tell the format from --out '{args.out}' (suffix {suffix!r}); name the file "
                         "model.onnx or model.pt, or give --format onnx or --format torchscript")  # fmt: skip
    check_output(args.out, reads=(weights_of(args.source),))  # before minutes of exporting: a new file, not the source
    model = load(weights_of(args.source))
    print(f"exporting {args.source} as {fmt}, then checking it against PyTorch", flush=True)  # seconds of tracing
    difference = export_model(model, args.out, format=fmt)  # a failed check: exit 1
    print(f"wrote {args.out} ({fmt}); max abs difference from PyTorch: {difference:.3g}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    print(download(args.name, revision=args.revision, cache_dir=args.cache_dir, force=args.force))
    return 0


# ``imgzoo demo``: the shipped weights classify the sample images in imgzoo/samples/; no network, data or GPU.
DEMOS = (("mnist_cnn.mnist", "mnist"), ("resnet_cifar.cifar10", "cifar10"))  # (weights, sample folder)
TOPK = 5


def cmd_demo(args: argparse.Namespace) -> int:
    out = check_output(args.out, folder_of="demo-mnist.png") if args.out else Path(tempfile.mkdtemp(prefix="imgzoo-"))
    samples = Path(str(resources.files("imgzoo") / "samples"))  # package data: also in an installed wheel
    for weights, folder in DEMOS:
        files = [f for f in sorted((samples / folder).iterdir()) if f.suffix.lower() in (".png", ".jpg")]
        model = load(weights)  # a packaged entry: read from the installed files, never downloaded
        truths = [f.name.rsplit("_", 1)[0] for f in files]  # files are named <class>_<index>
        print(_table(weights, folder, files, truths, predict(model, [str(f) for f in files], topk=TOPK)), end="\n\n")
        shown = [(str(f), model.data_spec.class_names.index(t)) for f, t in zip(files, truths, strict=True)]
        try:
            plot_predictions(model, shown, n=len(shown), path=out / f"demo-{folder}.png")
            print(f"predicted samples: {out / f'demo-{folder}.png'}", end="\n\n")
        except ImportError as exc:  # matplotlib is optional: the table is printed all the same
            print(f"no predicted-samples grid: {exc}")
    return 0


def _table(weights: str, folder: str, files: list[Path], truths: list[str], ranked: list[Any]) -> str:
    """One row per image: its true class, whether the top guess is right, and the top five with probabilities."""
    rows = [("file", "true", "ok", f"top-{TOPK}")]
    for file, truth, top in zip(files, truths, ranked, strict=True):
        guesses = "  ".join(f"{name} {p:.2f}" for name, p in top)
        rows.append((file.name, truth, "yes" if top[0][0] == truth else "NO", guesses))
    correct = sum(top[0][0] == truth for truth, top in zip(truths, ranked, strict=True))
    where = f"{weights} on {len(files)} {folder} validation images (imgzoo/samples/{folder})"
    return f"{where}\n{_align(rows)}\ntop-1: {correct} of {len(files)} right"


def build_parser() -> argparse.ArgumentParser:
    weights_help = "a weights name, hf-hub:org/repo[@revision], or a folder written by imgzoo train"
    data_help = "a data folder in any layout imgzoo reads, or a known name: cifar10, mnist"
    parser = argparse.ArgumentParser(prog="imgzoo", description="Small models for small images.")
    parser.add_argument("--version", action="version", version=f"imgzoo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    # --debug after the subcommand too; SUPPRESS keeps a subcommand from resetting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], about: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=about)
        p.set_defaults(func=func)
        return p

    p = command("demo", cmd_demo, "classify the bundled sample images with the shipped weights (offline)")
    p.add_argument("--out", type=out_path, help="folder for the predicted-samples grids (default: a new temporary one)")
    p = command("models", cmd_list, "build every registered model and print its parameters")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. 'resnet*'")
    p = command("pretrained", cmd_list, "list the pretrained weights that load by name")
    p.add_argument("pattern", nargs="?", help="fnmatch pattern, e.g. 'mnist*'")
    _add_training_commands(command, weights_help, data_help)
    p = command("predict", cmd_predict, "classify image files with trained weights")
    p.add_argument("weights", help=weights_help)
    p.add_argument("images", nargs="+", help="image files, folders of images, or glob patterns (quoted)")
    p.add_argument("--topk", type=int, default=3, help="classes to show per image (default 3)")  # predict checks it
    p.add_argument("--json", action="store_true", help="print one JSON list instead of a line per image")
    p = command("export", cmd_export, "write a model as ONNX or TorchScript, checked against PyTorch")
    p.add_argument("source", help=weights_help)
    p.add_argument("--format", choices=FORMATS, help="default: from --out's suffix (.onnx; .pt or .ts: torchscript)")
    p.add_argument("--out", type=out_path, required=True, help="the file to write, e.g. model.onnx")
    p = command("download", cmd_download, "fetch pretrained weights into the Hugging Face cache")
    p.add_argument("name", help="a weights name from imgzoo.list_pretrained(), or hf-hub:org/repo[@revision]")
    p.add_argument("--revision", help="branch, tag or commit sha (hf-hub: names only)")
    p.add_argument("--cache-dir", help="cache folder (default: HF_HUB_CACHE)")
    p.add_argument("--force", action="store_true", help="download again even if cached, e.g. after a sha256 error")
    return parser


NO_TTA = "skip the recipe's test-time augmentation after the last epoch (up to 6 more passes over the val images)"


def _add_training_commands(command: Callable[..., argparse.ArgumentParser], weights_help: str, data_help: str) -> None:
    """imgzoo train, evaluate and compare: the commands that read a data folder."""
    p = command("train", cmd_train, "train a model on a data folder; weights, history and figures go into --out")
    p.description = "Train MODEL on DATA's seeded 90% training split and validate on the other 10%."
    p.add_argument("model", help="a registered model name (imgzoo models)")
    p.add_argument("data", help=data_help)
    p.add_argument(
        "--out", type=out_path, required=True, help="the run's folder: weights, history, figures, checkpoints"
    )
    p.add_argument("--resume", action="store_true", help="go on with the run in --out: resume it, or extend it")
    # --limit and --epochs are checked by RunConfig and FitConfig, before any data is read.
    p.add_argument("--limit", type=int, help="train on N images (stratified, seeded), for quick runs")
    about = "fraction of the images held out to validate on (default 0.1); 0: a final fit on every image"
    p.add_argument("--val", type=float, dest="val_fraction", metavar="FRACTION", help=about)
    about = "the model builder's options over the recipe's, e.g. depth=56 or widths=[32,64,128]"
    p.add_argument("--model-kwargs", nargs="+", type=model_kwarg, metavar="KEY=VALUE", help=about)
    add_fit_flags(p)
    p.add_argument("--no-tta", dest="tta", action="store_false", help=NO_TTA)
    p = command("evaluate", cmd_evaluate, "loss, top-1, top-5 and per-class accuracy on a data folder")
    p.add_argument("weights", help=weights_help)
    p.add_argument("data", help=data_help)
    about = "the seeded 10%% validation split, the 90%% trained on, or all"
    p.add_argument("--split", choices=("val", "train", "all"), default="val", help=about)
    about = "test-time augmentation: the one the weights were published with (alone, or 'recipe'), or a mode"
    p.add_argument("--tta", nargs="?", const="recipe", choices=("recipe", *TTA_MODES[1:]), help=about)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    # No default: a measurement that drops a figure wherever it was run litters (and changes a checkout).
    p.add_argument("--out", type=out_path, help="also write confusion.png into this folder")
    p = command("compare", cmd_compare, "train every run of a study file and compare them")
    p.add_argument("study", type=Path, help="a study file, e.g. examples/study.toml")
    p.add_argument("--out", type=out_path, required=True, help="folder for report.md, report.json, curves.png, runs/")
    p.add_argument("--epochs", type=int, help="epochs for every run, instead of the file's")
    p.add_argument("--limit", type=int, help="train every run on N images (stratified, seeded)")
    p.add_argument("--data", help="the data of every run, instead of the file's: " + data_help)
    p.add_argument("--no-tta", dest="tta", action="store_false", help=NO_TTA)


# Wrong input (a name, a file, an argument) exits 2, as argparse does; a failure of the work (NaN loss, full disk) 1.
USER_ERRORS = (ValueError, TypeError, LookupError, FileNotFoundError, FileExistsError, NotADirectoryError)
USER_ERRORS += (IsADirectoryError, PermissionError, UnidentifiedImageError, ImportError)


def exit_status(error: BaseException) -> int:
    return 2 if isinstance(error, USER_ERRORS) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an error is one line on stderr (``--debug`` or ``IMGZOO_DEBUG=1``: the traceback)."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("IMGZOO_DEBUG", "") not in ("", "0")
    try:
        return args.func(args)
    except BrokenPipeError:  # `imgzoo ... | head`: the reader left; say nothing more to it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt as exc:
        print(f"imgzoo: interrupted{f': {exc}' if str(exc) else ''}", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        status = exit_status(exc)  # every message is imgzoo's, torch's or the Hub's: none contains a token
        hint = "" if status == 2 else "\nimgzoo: run again with --debug (or IMGZOO_DEBUG=1) for the traceback"
        message = str(exc) if status == 2 else f"{type(exc).__name__}: {exc}"
        print(f"imgzoo: error: {printable(message)}{hint}", file=sys.stderr)
        return status
