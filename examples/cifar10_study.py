"""The original notebooks' CIFAR-10 study, through imgzoo.compare: what augmentation and residual
connections each add, every model trained with the same options, seed and validation split. The same
four models and augmentations as examples/study.toml, written out in Python; `imgzoo compare
examples/study.toml` trains each by its model's recipe instead of one set of options for all.

    basic CNN                          no augmentation
    basic CNN + augmentation           random crop from a reflection-padded image, horizontal flip
    ResNet-20                          He et al. 2016's CIFAR network, no augmentation (as the notebooks)
    ResNet-20 + strong augmentation    crops and flips plus TrivialAugmentWide and random erasing

Writes comparison.md (final-epoch accuracy and loss per model) and curves.png (accuracy and
loss per epoch, solid train, dashed validation) into --out. The test split is never read.

    python examples/cifar10_study.py PATH/TO/cifar10 --epochs 30 --out runs/cifar10-study   # a GPU helps
    python examples/cifar10_study.py --smoke     # tiny generated batches, narrow models, one epoch each

PATH/TO/cifar10 holds cifar-10-batches-py/ (torchvision's download) or train/<class>/*.png.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from torch.utils.data import DataLoader

import imgzoo
from imgzoo import datasets, transforms
from imgzoo.data.loaders import FastLoader


def loaders(root: Path, batch_size: int, workers: int, seed: int = 0) -> tuple[dict, FastLoader]:
    """Training data by augmentation ("none", "standard", "strong"), and one validation loader for all."""
    data = datasets.cifar10(root, train=True)  # uint8 tensors: FastLoader augments whole batches
    train_part, val_part = datasets.train_val_split(data, 0.1, seed=seed)
    print(f"{len(train_part)} training and {len(val_part)} validation images from {root}")
    # FastLoader has no strong preset: those images go one by one through torchvision's transforms.
    # The same seed splits the same images off for validation.
    strong = transforms.for_model("resnet_cifar", train=True, augment="strong")
    strong_part, _ = datasets.train_val_split(datasets.cifar10(root, train=True, transform=strong), 0.1, seed=seed)
    train = {
        "none": FastLoader(train_part, batch_size, spec=data.spec, train=True, augment="none", seed=seed),
        "standard": FastLoader(train_part, batch_size, spec=data.spec, train=True, augment="standard", seed=seed),
        "strong": DataLoader(strong_part, batch_size, shuffle=True, num_workers=workers),
    }
    return train, FastLoader(val_part, 512, spec=data.spec)


def study(root: Path, out: Path, *, epochs: int, batch_size: int, workers: int, smoke: bool = False) -> None:
    train, val = loaders(root, batch_size, workers)
    # --smoke trains narrow versions of the same families: the point there is the path, not the numbers.
    depth = 8 if smoke else 20
    basic = {"widths": (16, 32, 32), "stem_width": 8} if smoke else {}
    runs = {  # name: (model, augmentation)
        "basic CNN": (imgzoo.basic_cnn(**basic), "none"),
        "basic CNN + augmentation": (imgzoo.basic_cnn(**basic), "standard"),
        f"ResNet-{depth}": (imgzoo.resnet_cifar(depth=depth), "none"),
        f"ResNet-{depth} + strong augmentation": (imgzoo.resnet_cifar(depth=depth), "strong"),
    }
    models = {name: model for name, (model, _) in runs.items()}
    data = {name: train[augment] for name, (_, augment) in runs.items()}
    comparison = imgzoo.compare(models, data, val, epochs=epochs, batch_size=batch_size, seed=0, verbose=2)
    table = comparison.to_markdown()
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table + "\n")
    comparison.plot(out / "curves.png")
    print(f"wrote {out / 'comparison.md'} and {out / 'curves.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", type=Path, help="folder with the CIFAR-10 training batches or images")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=4, help="processes decoding the strong augmentation")
    parser.add_argument("--out", type=Path, help="folder for comparison.md and curves.png (required without --smoke)")
    parser.add_argument("--smoke", action="store_true", help="generate tiny CIFAR-10 batches in a temporary folder")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="imgzoo-smoke-") as tmp:
            from tiny_data import write_cifar10  # beside this script

            root = write_cifar10(Path(tmp) / "cifar10")
            print(f"--smoke: wrote 60 generated images as CIFAR-10 batches to {root}")
            study(root, args.out or Path(tmp) / "study", epochs=1, batch_size=16, workers=0, smoke=True)
        return
    if args.data is None or args.out is None:
        parser.error("give the CIFAR-10 folder and --out (or --smoke)")
    study(args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, workers=args.workers)


if __name__ == "__main__":
    main()
