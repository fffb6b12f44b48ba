"""Train the MNIST CNN from the idx files, check it on a held-out split, and save it.

files -> imgzoo.data.datasets.mnist -> a seeded, stratified 90/10 train/validation split ->
FastLoader (decoded once, shuffled and augmented as tensors) -> imgzoo.fit with a
checkpoint every epoch -> imgzoo.evaluate on the validation split -> imgzoo.save.
The test split is never read: the accuracy printed is the validation accuracy. 20 epochs of
this gave 99.53% on that split; the shipped ``mnist_cnn.mnist`` weights add label smoothing 0.1,
dropout 0.1 and batch 64, and train 24 epochs (99.68%):
``imgzoo train mnist_cnn PATH/TO/mnist --recipe mnist_cnn.mnist``.

    python examples/train_mnist.py PATH/TO/mnist --epochs 20 --out runs/mnist
    python examples/train_mnist.py --smoke      # tiny generated idx files, one epoch, a minute at most

PATH/TO/mnist holds train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] (or
MNIST/raw/ with them, as torchvision downloads them). Run again with the same --out to
resume after a crash or Ctrl-C.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import imgzoo
from imgzoo import datasets
from imgzoo.data.loaders import FastLoader


def train(data_root: Path, out: Path, *, epochs: int, batch_size: int, seed: int = 0) -> Path:
    data = datasets.mnist(data_root, train=True)
    train_part, val_part = datasets.train_val_split(data, 0.1, seed=seed)
    print(f"{len(train_part)} training and {len(val_part)} validation digits from {data_root}")

    model = imgzoo.mnist_cnn()
    spec = model.data_spec  # 1x28x28, MNIST's mean and std, the class names "0".."9"
    train_loader = FastLoader(train_part, batch_size, spec=spec, train=True, seed=seed)
    val_loader = FastLoader(val_part, 512, spec=spec)

    checkpoints = out / "checkpoints"
    history = imgzoo.fit(
        model,
        train_loader,
        val_loader,
        epochs=epochs,
        seed=seed,
        checkpoint_dir=checkpoints,
        resume=checkpoints if (checkpoints / "last.pt").exists() else None,
        verbose=2,  # one line per epoch
    )
    result = imgzoo.evaluate(model, val_loader)
    print(f"validation top-1 {result.top1:.4f}, loss {result.loss:.4f} ({result.num_samples} digits)")
    metrics = {"val_acc": round(result.top1, 4), "val_loss": round(result.loss, 4)}
    recipe = {"epochs": epochs, "batch_size": batch_size, "val_fraction": 0.1, "seed": seed}
    folder = imgzoo.save(model, out / "weights", history, recipe=recipe, metrics=metrics)
    print(f"saved {folder}: load it with imgzoo.load({str(folder)!r})")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", type=Path, help="folder with the MNIST training idx files")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, help="run folder: checkpoints/ and model/ (required without --smoke)")
    parser.add_argument("--smoke", action="store_true", help="generate tiny idx files in a temporary folder, 1 epoch")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="imgzoo-smoke-") as tmp:
            from tiny_data import write_mnist  # beside this script

            root = write_mnist(Path(tmp) / "mnist")
            print(f"--smoke: wrote 60 generated digits as MNIST idx files to {root}")
            train(root, args.out or Path(tmp) / "run", epochs=1, batch_size=16)
        return
    if args.data is None or args.out is None:
        parser.error("give the MNIST folder and --out (or --smoke)")
    train(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size)


if __name__ == "__main__":
    main()
