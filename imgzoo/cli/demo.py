"""``imgzoo demo``: the shipped weights (``mnist_cnn.mnist``, ``resnet_cifar.cifar10``) classify the thirty
validation images of each data set shipped under ``imgzoo/samples/``: no network, no data, no GPU, seconds."""

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

DEMOS = (("mnist_cnn.mnist", "mnist"), ("resnet_cifar.cifar10", "cifar10"))  # (weights, sample folder)
TOPK = 5


def add_demo(command: Any) -> None:
    p = command("demo", cmd_demo, "classify the bundled sample images with the shipped weights (offline)")
    p.add_argument("--out", type=Path, help="folder for the predicted-samples grids (default: a new temporary one)")


def cmd_demo(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="imgzoo-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    samples = Path(str(resources.files("imgzoo") / "samples"))  # package data: also in an installed wheel
    for weights, folder in DEMOS:
        files = [f for f in sorted((samples / folder).iterdir()) if f.suffix.lower() in (".png", ".jpg")]
        model = load(weights)  # a packaged entry: read from the installed files, never downloaded
        truths = [f.name.rsplit("_", 1)[0] for f in files]  # files are named <class>_<index>
        print(_table(weights, folder, files, truths, predict(model, [str(f) for f in files], topk=TOPK)), end="\n\n")
        if _grid(model, files, truths, out / f"demo-{folder}.png"):
            print(f"predicted samples: {out / f'demo-{folder}.png'}", end="\n\n")
    return 0


def _table(weights: str, folder: str, files: list[Path], truths: list[str], ranked: list[Any]) -> str:
    """One row per image: its true class, whether the top guess is right, and the top five with probabilities."""
    width, true_width = max(len(f.name) for f in files), max(len(t) for t in [*truths, "true"])
    lines = [f"{weights} on {len(files)} {folder} validation images (imgzoo/samples/{folder})"]
    lines.append(f"{'file'.ljust(width)}  {'true'.ljust(true_width)}  ok  top-{TOPK}")
    for file, truth, top in zip(files, truths, ranked, strict=True):
        guesses = "  ".join(f"{name} {p:.2f}" for name, p in top)
        right = "yes" if top[0][0] == truth else "NO "
        lines.append(f"{file.name.ljust(width)}  {truth.ljust(true_width)}  {right} {guesses}")
    correct = sum(top[0][0] == truth for truth, top in zip(truths, ranked, strict=True))
    return "\n".join([*lines, f"top-1: {correct} of {len(files)} right"])


def _grid(model: Any, files: list[Path], truths: list[str], path: Path) -> bool:
    """The predicted-samples grid of every sample; False (and a note) where matplotlib is not installed."""
    names, to_tensor = list(model.data_spec.class_names), for_model(model)  # the model's own preprocessing
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
