"""Turn trained weights into an entry shipped inside the package, with every figure its card states.

    python scripts/ship_entry.py RUN_OR_WEIGHTS NAME DATA [--recipe NAME] [--command "..."]

RUN_OR_WEIGHTS is a folder written by ``imgzoo train`` (its ``weights/``, ``run.json`` and
``history.json`` are read) or by ``imgzoo.save``. The script rebuilds the seeded 10% validation
split of DATA, measures top-1 and top-5 with and without the recipe's test-time augmentation,
stores the parameters in fp16 when that moves top-1 by at most 0.05 points (else in fp32, and
says so), measures the stored file again, and writes ``imgzoo/hub/weights/<arch>-<tag>/``: the
safetensors, config.json and a card with the figures, MACs, training time, machine and command.
It prints the ``WeightsEntry`` to paste into ``imgzoo/hub/pretrained.py``.

A final fit (``imgzoo train ... --val 0``) trained on the validation images too, so it cannot be measured on them:
``--validated-by RUN`` names the validation run that chose its recipe, and the card states that run's figures, says
that the shipped weights were refit on every image, and gives both commands. The fp16 check still compares the
final weights with themselves, on the same images.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import imgzoo
from imgzoo.eval.evaluation import evaluate
from imgzoo.eval.history import History
from imgzoo.hub.card import metrics_from_eval, metrics_from_history
from imgzoo.hub.format import read_config
from imgzoo.hub.pretrained import entry_from_folder
from imgzoo.study import run as runs
from imgzoo.study.config import VAL_FRACTION, resolve_data, weights_of
from imgzoo.train.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[1]
FP16_TOLERANCE = 0.0005  # top-1 may move by at most 0.05 points for the entry to be stored in fp16


def measure(model, val_part, tta) -> dict:
    data = runs.eval_data(model, val_part)
    plain = evaluate(model, data)
    return metrics_from_eval(plain, evaluate(model, data, tta=tta) if tta else None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source", type=Path, help="a run folder (imgzoo train --out) or a weights folder")
    p.add_argument("name", help="the entry's name, arch.tag, e.g. mnist_cnn.mnist")
    p.add_argument("data", help="the training data the split is drawn from")
    p.add_argument("--recipe", help="the recipe the weights were trained by (default: the entry's name)")
    p.add_argument("--command", help="the command that trained them (default: the run's)")
    p.add_argument("--data-label", help="how the card names the data, e.g. 'MNIST train split' (default: DATA)")
    p.add_argument("--machine", help="JSON: the machine that trained them (default: the run's record)")
    about = "for a final fit (--val 0): the run (or weights folder) that validated its recipe"
    p.add_argument("--validated-by", type=Path, help=about)
    args = p.parse_args()

    weights = Path(weights_of(str(args.source)))
    config = read_config(weights / "config.json")
    recorded = dict(config.get("recipe") or {})
    recipe = get_recipe(args.recipe or args.name)
    history_path = next(
        (p / "history.json" for p in (args.source, weights.parent) if (p / "history.json").is_file()),
        args.source / "history.json",
    )
    history = History.from_json(history_path) if history_path.is_file() else None
    model = imgzoo.load(weights)
    val_part = runs.split_data(runs.open_data(resolve_data(args.data)), recorded.get("seed", 0))[1]
    final = recorded.get("val_fraction", VAL_FRACTION) == 0
    if final != (args.validated_by is not None):
        sys.exit("a final fit (--val 0) ships with --validated-by RUN, its validation run; a validated run without")

    full = measure(model, val_part, recipe.tta)
    with tempfile.TemporaryDirectory() as tmp:
        imgzoo.save(model, Path(tmp) / "w", dtype="fp16")
        half = measure(imgzoo.load(Path(tmp) / "w"), val_part, recipe.tta)
    moved = abs(half["val_acc"] - full["val_acc"])
    dtype = "fp16" if moved <= FP16_TOLERANCE else "fp32"
    print(f"fp32: {json.dumps(full)}\nfp16: {json.dumps(half)}\ntop-1 moved {100 * moved:.3f} points: storing {dtype}")

    before = dict(config.get("metrics") or {})  # what the folder recorded (train accuracy, epochs), if no history
    before = {k: v for k, v in before.items() if k in ("train_acc", "train_loss", "epochs", "train_seconds")}
    trained = metrics_from_history(history.to_dict()) if history else before
    metrics = {**trained, **(half if dtype == "fp16" else full)}
    metrics["fp32_val_acc"] = full["val_acc"]  # what the weights gave before storage, for the card's reader
    refit = {}
    if final:  # the figures are the validation run's: the final weights trained on these images
        validated = Path(weights_of(str(args.validated_by)))
        before_refit = read_config(validated / "config.json").get("recipe") or {}
        if before_refit.get("seed", 0) != recorded.get("seed", 0):
            sys.exit(f"{args.validated_by} drew its validation split with another seed than {args.source}")
        metrics = {**trained, **measure(imgzoo.load(validated), val_part, recipe.tta)}
        refit = {
            "validation": (
                f"the figures are the validation run's ({before_refit.get('val_fraction', VAL_FRACTION):.0%} of the "
                f"images held out, seed {before_refit.get('seed', 0)}); these weights were then refit on every image "
                "with the same recipe and epochs, and have no held-out figure of their own"
            ),
            "validation run": before_refit.get("command", "not recorded"),
        }
    meta = {
        **recipe.to_meta(),
        **refit,
        "val_fraction": recorded.get("val_fraction", VAL_FRACTION),
        "seed": recorded.get("seed", 0),
        "data": args.data_label or recorded.get("data", args.data),
        "machine": json.loads(args.machine) if args.machine else recorded.get("machine", "not recorded"),
        "command": args.command or recorded.get("command", "not recorded"),
        "storage": f"{dtype} (top-1 moved {100 * moved:.3f} points from fp32)",
    }
    arch, tag = args.name.split(".", 1)
    folder = ROOT / "imgzoo" / "hub" / "weights" / f"{arch}-{tag}"
    imgzoo.save(model, folder, history, recipe=meta, metrics=metrics, dtype=dtype)
    print(f"wrote {folder}")
    print(repr(entry_from_folder(args.name, folder, package_dir=folder.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
