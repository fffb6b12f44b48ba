"""Fine-tune an ImageNet ResNet on dog breeds in two stages, as the original notebooks did.

1. Warm-up: the backbone stays frozen (its batch norms keep their ImageNet statistics) and
   only the new classifier trains, so its random first gradients cannot wreck the features.
2. Fine-tune: the last residual stage is unfrozen (model.unfreeze(last=1)) and trains at a
   10x lower rate than the head (model.param_groups(lr, backbone_lr_scale=0.1)), handed to
   fit as a callable optimizer.

The data may be the Stanford Dogs tree (Images/n02085620-Chihuahua/*.jpg), Kaggle's
dog-breed-identification (train/ and labels.csv) or any ImageFolder; a seeded stratified
20% of it is held out for validation. --official-split instead trains on Stanford Dogs' own
training list and validates on its test list (train_list.mat and test_list.mat from lists.tar;
reading them needs scipy: pip install "imgzoo[dogs]"), the split published results use.
The ImageNet weights come from torchvision's cache, $TORCH_HOME/hub/checkpoints/
(downloaded there on first use unless IMGZOO_OFFLINE=1); --weights none starts from random
weights instead, to try the recipe without that file.

    python examples/finetune_dogbreed.py PATH/TO/stanford-dogs --backbone resnet50 --out runs/dogs
    python examples/finetune_dogbreed.py PATH/TO/stanford-dogs --official-split --out runs/dogs-official
    python examples/finetune_dogbreed.py --smoke   # generated images, resnet18 with random weights
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import imgzoo
from imgzoo import datasets, transforms

WEIGHTS = {"imagenet": "imagenet", "none": None}  # --weights -> dogbreed_transfer(weights=...)
LR = 0.01  # the new head's rate, in both stages
BACKBONE_LR_SCALE = 0.1  # the unfrozen stage trains 10x slower, so the head's first gradients cannot wreck it


def finetune(
    root: Path,
    out: Path,
    *,
    backbone: str,
    weights: str | None = "imagenet",
    epochs: tuple[int, int],
    batch_size: int,
    workers: int,
    official_split: bool = False,
) -> Path:
    breeds = datasets.dog_breeds(root).classes
    model = imgzoo.create_model("dogbreed_transfer", backbone=backbone, weights=weights, class_names=breeds)
    train, val = split(root, model, official_split)
    print(f"{len(breeds)} breeds: {len(train)} training and {len(val)} validation images from {root}")
    options = {"batch_size": batch_size, "num_workers": workers, "seed": 0, "verbose": 2, "schedule": "cosine"}

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"stage 1: head only ({trainable:,} trainable parameters), lr {LR}")
    imgzoo.fit(model, train, val, epochs=epochs[0], lr=LR, **options)

    model.unfreeze(last=1)  # layer4 and the head; layers 1-3 stay frozen
    groups = model.param_groups(lr=LR, backbone_lr_scale=BACKBONE_LR_SCALE)
    trainable = sum(p.numel() for g in groups for p in g["params"])
    print(f"stage 2: + layer4 ({trainable:,} trainable), lr {LR} / {LR * BACKBONE_LR_SCALE:g}")

    def sgd(_params):  # fit passes the trainable parameters; the groups carry their own rates
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=1e-4)

    history = imgzoo.fit(model, train, val, epochs=epochs[1], optimizer=sgd, **options)

    result = imgzoo.evaluate(model, val, num_workers=workers)
    print(f"validation top-1 {result.top1:.4f}, top-5 {result.top5:.4f} ({result.num_samples} images)")
    recipe = {"backbone": backbone, "weights": weights, "warmup_epochs": epochs[0], "finetune_epochs": epochs[1]}
    recipe |= {"unfrozen": "layer4", "lr": LR, "backbone_lr_scale": BACKBONE_LR_SCALE}
    folder = imgzoo.save(model, out / "weights", history, recipe=recipe, metrics={"val_acc": round(result.top1, 4)})
    image, label = val.samples[0]  # a held-out file
    ranked = imgzoo.predict(model, image, topk=3)
    print(f"{Path(image).name} ({breeds[label]}): " + ", ".join(f"{name} {p:.2f}" for name, p in ranked))
    print(f"saved {folder}")
    return folder


def split(root: Path, model: torch.nn.Module, official: bool) -> tuple:
    """The training and validation images, augmented for training and plain for validation."""
    train_tf, eval_tf = transforms.for_model(model, train=True), transforms.for_model(model)
    if official:  # Stanford Dogs' own lists: 100 images per breed to train on, the rest to test
        train = datasets.stanford_dogs(root, train_tf, split="train")
        return train, datasets.stanford_dogs(root, eval_tf, split="test")
    train, val = datasets.train_val_split(datasets.dog_breeds(root), 0.2, seed=0)
    return train.with_transform(train_tf), val.with_transform(eval_tf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", type=Path, help="dog images: Stanford Dogs, Kaggle, or an ImageFolder")
    parser.add_argument("--backbone", default="resnet50", choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument(
        "--weights", default="imagenet", choices=tuple(WEIGHTS), help="the backbone's start: ImageNet's, or random"
    )
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs after the warm-up")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4, help="processes decoding images")
    parser.add_argument("--out", type=Path, help="folder for the saved model (required without --smoke)")
    parser.add_argument("--smoke", action="store_true", help="generated images, resnet18 with random weights")
    parser.add_argument(
        "--official-split", action="store_true", help="Stanford Dogs' train_list.mat / test_list.mat, not a 20%% split"
    )
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="imgzoo-smoke-") as tmp:
            from tiny_data import write_stanford_dogs  # beside this script

            root = write_stanford_dogs(Path(tmp) / "dogs")
            print(f"--smoke: wrote 12 generated dog images to {root}")
            print("--smoke: resnet18 starts from RANDOM weights (weights=None); no ImageNet file is read")
            out = args.out or Path(tmp) / "run"
            finetune(root, out, backbone="resnet18", weights=None, epochs=(1, 1), batch_size=4, workers=0)
        return
    if args.data is None or args.out is None:
        parser.error("give the dog images folder and --out (or --smoke)")
    epochs = (args.warmup_epochs, args.epochs)
    options = {"epochs": epochs, "batch_size": args.batch_size, "workers": args.workers}
    options["official_split"] = args.official_split
    finetune(args.data, args.out, backbone=args.backbone, weights=WEIGHTS[args.weights], **options)


if __name__ == "__main__":
    main()
