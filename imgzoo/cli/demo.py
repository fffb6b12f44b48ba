"""``imgzoo demo``: the shipped weights classify the shipped sample images, offline, in seconds.

The first thing a new user runs. Everything it touches is inside the installed package: the
weights entries ``mnist_cnn.mnist`` and ``resnet_cifar.cifar10`` (shipped under
``imgzoo/hub/weights/``, sha256-checked) and thirty validation images of each data set under
``imgzoo/samples/`` (see its README), so it needs no network, no data and no GPU.
"""

from __future__ import annotations

import argparse
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from imgzoo.data.transforms import for_model
from imgzoo.eval.evaluation import plot_predictions, predict
from imgzoo.hub.api import load

# (weights name, sample folder): one model per data set whose weights ship in the package.
DEMOS = (("mnist_cnn.mnist", "mnist"), ("resnet_cifar.cifar10", "cifar10"))
TOPK = 5


def samples_dir() -> Path:
    """The sample images shipped in the package (package data, so also in an installed wheel)."""
    return Path(str(resources.files("imgzoo") / "samples"))


def add_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo", parents=[common], help="classify the bundled sample images with the shipped weights (offline)"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="folder for the predicted-samples grids (default: a new temporary one)"
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="imgzoo-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    for weights, folder in DEMOS:
        files = sorted((samples_dir() / folder).iterdir())
        files = [f for f in files if f.suffix.lower() in (".png", ".jpg")]
        model = load(weights)  # a packaged entry: read from the installed files, never downloaded
        truths = [f.name.rsplit("_", 1)[0] for f in files]  # files are named <class>_<index>
        ranked = predict(model, [str(f) for f in files], topk=TOPK)
        print(_table(weights, folder, files, truths, ranked))
        print()
        grid = out / f"demo-{folder}.png"
        if _grid(model, files, truths, grid):
            print(f"predicted samples: {grid}")
            print()
    return 0


def _table(weights: str, folder: str, files: list[Path], truths: list[str], ranked: list[Any]) -> str:
    """One row per image: its true class, whether the top guess is right, and the top five with probabilities."""
    width = max(len(f.name) for f in files)
    true_width = max(len(t) for t in [*truths, "true"])
    lines = [f"{weights} on {len(files)} {folder} validation images (imgzoo/samples/{folder})"]
    lines.append(f"{'file'.ljust(width)}  {'true'.ljust(true_width)}  ok  top-{TOPK}")
    correct = 0
    for file, truth, top in zip(files, truths, ranked, strict=True):
        right = top[0][0] == truth
        correct += right
        guesses = "  ".join(f"{name} {p:.2f}" for name, p in top)
        lines.append(f"{file.name.ljust(width)}  {truth.ljust(true_width)}  {'yes' if right else 'NO '} {guesses}")
    lines.append(f"top-1: {correct} of {len(files)} right")
    return "\n".join(lines)


def _grid(model: Any, files: list[Path], truths: list[str], path: Path) -> bool:
    """The predicted-samples grid of every sample; False (and a note) where matplotlib is not installed."""
    names = list(model.data_spec.class_names)
    to_tensor = for_model(model)  # the preprocessing travels with the model's data_spec
    samples = []
    for file, truth in zip(files, truths, strict=True):
        with Image.open(file) as image:
            samples.append((to_tensor(image), names.index(truth)))
    try:
        plot_predictions(model, samples, n=len(samples), path=path)
    except ImportError as exc:
        print(f"no predicted-samples grid: {exc}")
        return False
    return True
