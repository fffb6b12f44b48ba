"""Fine-tune an ImageNet ResNet on dog breeds in two stages, as the original notebooks did.

1. Warm-up: the backbone stays frozen (its batch norms keep their ImageNet statistics) and
   only the new classifier trains, so its random first gradients cannot wreck the features.
2. Fine-tune: the last residual stage is unfrozen (model.unfreeze(last=1)) and trains at a
   10x lower rate than the head (model.param_groups(lr, backbone_lr_scale=0.1)), handed to
   fit as a callable optimizer.

The data may be the Stanford Dogs tree (Images/n02085620-Chihuahua/*.jpg), Kaggle's
dog-breed-identification (train/ and labels.csv) or any ImageFolder; a seeded stratified
20% of it is held out for validation. The ImageNet weights come from torchvision's cache,
$TORCH_HOME/hub/checkpoints/ (downloaded there on first use unless IMGZOO_OFFLINE=1).

    python examples/finetune_dogbreed.py PATH/TO/stanford-dogs --backbone resnet50 --out runs/dogs
    python examples/finetune_dogbreed.py --smoke   # generated images; random weights stand in for ImageNet's
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
import torchvision

import imgzoo
from imgzoo import datasets, transforms
from imgzoo.models.dogbreed_transfer import imagenet_weights_path


def finetune(root: Path, out: Path, *, backbone: str, epochs: tuple[int, int], batch_size: int, workers: int) -> Path:
    breeds = datasets.dog_breeds(root).classes
    model = imgzoo.create_model("dogbreed_transfer", backbone=backbone, weights="imagenet", class_names=breeds)
    # Two views of the same files, split with the same seed: augmented for training, plain for validation.
    train, _ = datasets.train_val_split(
        datasets.dog_breeds(root, transform=transforms.for_model(model, train=True)), 0.2, seed=0
    )
    _, val = datasets.train_val_split(datasets.dog_breeds(root, transform=transforms.for_model(model)), 0.2, seed=0)
    print(f"{len(breeds)} breeds: {len(train)} training and {len(val)} validation images from {root}")
    options = {"batch_size": batch_size, "num_workers": workers, "seed": 0, "verbose": 2, "schedule": "cosine"}

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"stage 1: head only ({trainable:,} trainable parameters), lr 0.01")
    imgzoo.fit(model, train, val, epochs=epochs[0], lr=0.01, **options)

    model.unfreeze(last=1)  # layer4 and the head; layers 1-3 stay frozen
    groups = model.param_groups(lr=0.01, backbone_lr_scale=0.1)
    print(f"stage 2: + layer4 ({sum(p.numel() for g in groups for p in g['params']):,} trainable), lr 0.01 / 0.001")

    def sgd(_params):  # fit passes the trainable parameters; the groups carry their own rates
        return torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=1e-4)

    history = imgzoo.fit(model, train, val, epochs=epochs[1], optimizer=sgd, **options)

    result = imgzoo.evaluate(model, val, num_workers=workers)
    print(f"validation top-1 {result.top1:.4f}, top-5 {result.top5:.4f} ({result.num_samples} images)")
    recipe = {"backbone": backbone, "warmup_epochs": epochs[0], "finetune_epochs": epochs[1], "unfrozen": "layer4"}
    folder = imgzoo.save(model, out / "model", history, recipe=recipe, metrics={"val_acc": round(result.top1, 4)})
    image, label = val.dataset.samples[val.indices[0]]  # a held-out file, and its breed
    ranked = imgzoo.predict(model, image, topk=3)
    print(f"{Path(image).name} ({breeds[label]}): " + ", ".join(f"{name} {p:.2f}" for name, p in ranked))
    print(f"saved {folder}")
    return folder


def stand_in_imagenet_weights(torch_home: Path, backbone: str) -> Path:
    """A randomly initialised torchvision state dict where torchvision looks for the ImageNet one."""
    os.environ["TORCH_HOME"] = str(torch_home)  # torch.hub reads it on every call
    path = Path(imagenet_weights_path(backbone))  # the file name torchvision expects, hash suffix included
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.get_model(backbone, weights=None).state_dict(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", type=Path, help="dog images: Stanford Dogs, Kaggle, or an ImageFolder")
    parser.add_argument("--backbone", default="resnet50", choices=("resnet18", "resnet34", "resnet50"))
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs after the warm-up")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=4, help="processes decoding images")
    parser.add_argument("--out", type=Path, help="folder for the saved model (required without --smoke)")
    parser.add_argument("--smoke", action="store_true", help="generated images and stand-in weights, resnet18")
    args = parser.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="imgzoo-smoke-") as tmp:
            from tiny_data import write_stanford_dogs  # beside this script

            root = write_stanford_dogs(Path(tmp) / "dogs")
            weights = stand_in_imagenet_weights(Path(tmp) / "torch_home", "resnet18")
            print(f"--smoke: wrote 12 generated dog images to {root}")
            print(f"--smoke: wrote RANDOM resnet18 weights to {weights}, standing in for ImageNet's")
            finetune(root, args.out or Path(tmp) / "run", backbone="resnet18", epochs=(1, 1), batch_size=4, workers=0)
        return
    if args.data is None or args.out is None:
        parser.error("give the dog images folder and --out (or --smoke)")
    epochs = (args.warmup_epochs, args.epochs)
    finetune(
        args.data, args.out, backbone=args.backbone, epochs=epochs, batch_size=args.batch_size, workers=args.workers
    )


if __name__ == "__main__":
    main()
