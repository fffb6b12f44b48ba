"""Train a registered model on MNIST or CIFAR-10 from files on disk, resumably, and save it.

The whole path a user takes, in one script: files -> dataset -> seeded stratified
train/validation split -> FastLoader (decoded once, augmented as tensors) -> fit with
a checkpoint every epoch -> evaluate on the validation split -> imgzoo.save.
Nothing here looks at a test split: the figure reported is the validation accuracy.

    python examples/train.py mnist_cnn ../shared/data/mnist --epochs 15 --out runs/mnist_cnn
    python examples/train.py resnet_cifar ../cifar10-jpeg --epochs 30 --out runs/resnet20

Run it again with the same --out after a crash or Ctrl-C and it resumes where it stopped: after
Ctrl-C, from the next step of the interrupted epoch; after a crash, from the last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import imgzoo
from imgzoo import datasets
from imgzoo.data.loaders import FastLoader
from imgzoo.train.checkpoint import resume_point

DATASETS = {"mnist": datasets.mnist, "cifar10": datasets.cifar10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a registered model name, e.g. mnist_cnn, resnet_cifar, basic_cnn")
    parser.add_argument("data", help="folder with the MNIST idx files or the CIFAR-10 batches / train/<class> tree")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (fit's default: 0.1 for SGD)")
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amp", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--out", type=Path, required=True, help="run folder: checkpoints/, weights/, history.json")
    args = parser.parse_args()

    model = imgzoo.create_model(args.model)
    spec = model.data_spec
    dataset = DATASETS[spec.name](args.data, train=True)
    train_part, val_part = datasets.train_val_split(dataset, args.val_fraction, seed=args.seed)
    train = FastLoader(train_part, args.batch_size, spec=spec, train=True, seed=args.seed)
    val = FastLoader(val_part, 512, spec=spec)

    checkpoints = args.out / "checkpoints"
    # interrupted.pt after a Ctrl-C (the next step of that epoch), else last.pt, else a fresh run.
    resume = resume_point(checkpoints) if checkpoints.is_dir() else None
    recipe = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": "sgd-nesterov",
        "momentum": 0.9,
        "lr": args.lr or 0.1,
        "weight_decay": 5e-4,
        "schedule": "onecycle",
        "label_smoothing": args.label_smoothing,
        "amp": args.amp,
        "augment": "standard",
        "val_fraction": args.val_fraction,
        "seed": args.seed,
        "data": str(Path(args.data).resolve().name),
    }
    history = imgzoo.fit(
        model,
        train,
        val,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        label_smoothing=args.label_smoothing,
        amp=args.amp,
        seed=args.seed,
        checkpoint_dir=checkpoints,
        resume=resume,
        verbose=1 if sys.stderr.isatty() else 2,  # a log file gets the per-epoch lines, not the bar
    )
    result = imgzoo.evaluate(model, val)
    print(f"validation ({len(val_part)} images, seed {args.seed}): top-1 {result.top1:.4f}, loss {result.loss:.4f}")
    metrics = {"val_acc": round(result.top1, 4), "val_loss": round(result.loss, 4)}
    folder = imgzoo.save(model, args.out / "weights", history, recipe=recipe, metrics=metrics)
    history.to_json(args.out / "history.json")
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"saved {folder}")


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main()
