"""Load imgzoo's shipped weights by name, classify the bundled sample images, and start a new task from them.

The weights of ``mnist_cnn.mnist`` and ``resnet_cifar.cifar10`` ship inside the package, so
this runs offline (HF_HUB_OFFLINE=1 changes nothing). The samples in imgzoo/samples/ come
from each training set's seeded validation split, which the weights never trained on, and
are named <class>_<index>, so the script can score its own answers.

    python examples/load_pretrained.py
    python examples/load_pretrained.py --smoke    # three images per data set, of three classes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import imgzoo

SAMPLES = Path(imgzoo.__file__).parent / "samples"


def classify_samples(weights: str, folder: Path, every: int = 1) -> float:
    """Top-1 of the weights on the sample images in ``folder``; prints each answer."""
    model = imgzoo.load(weights)  # eval mode, with its DataSpec (class names, mean, std) attached
    images = sorted(folder.iterdir())[::every]
    ranked = imgzoo.predict(model, images, topk=2)  # applies the model's eval transform to each file
    correct = 0
    print(f"{weights} on {len(images)} images from {folder}:")
    for path, answers in zip(images, ranked, strict=True):
        truth = path.stem.rsplit("_", 1)[0]
        correct += answers[0][0] == truth
        shown = ", ".join(f"{name} {p:.2f}" for name, p in answers)
        print(f"  {path.name:22s} {shown}{'' if answers[0][0] == truth else '   <- wrong'}")
    accuracy = correct / len(images)
    print(f"  {correct}/{len(images)} right ({accuracy:.0%})")
    return accuracy


def new_head() -> None:
    """Everything but the classifier from the CIFAR-10 weights, and a fresh 5-way head, as timm does."""
    # Warns (NewHeadWarning) that the classifier is new: it must be trained before the answers mean anything.
    model = imgzoo.create_model("resnet_cifar", pretrained=True, num_classes=5)
    with torch.no_grad():
        logits = model(torch.zeros(1, *model.data_spec.input_shape))
    print(f"resnet_cifar with a new 5-way head: output {tuple(logits.shape)}, ready for imgzoo.fit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="three sample images per data set, of three classes")
    args = parser.parse_args()
    every = 10 if args.smoke else 1  # 30 images per set, three per class, sorted by class
    print("shipped weights:", ", ".join(imgzoo.list_pretrained()))
    classify_samples("mnist_cnn.mnist", SAMPLES / "mnist", every)
    classify_samples("resnet_cifar.cifar10", SAMPLES / "cifar10", every)
    new_head()


if __name__ == "__main__":
    main()
