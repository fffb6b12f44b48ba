"""Re-measure imgzoo's shipped weights on the validation split they report, from the files themselves.

Each entry was trained on the training split minus a seeded, stratified 10% validation split
(seed 0); this rebuilds that split, loads the entry by name (sha256 checked) and evaluates it,
with and without the test-time augmentation its card reports, printing the card's figure beside
the measured one, so the figures in imgzoo.hub.pretrained and on each card can be checked by anyone.

    python examples/evaluate_pretrained.py --mnist PATH/TO/mnist --cifar10 PATH/TO/cifar10-jpeg
"""

from __future__ import annotations

import argparse

import imgzoo
from imgzoo import datasets
from imgzoo.data.loaders import FastLoader
from imgzoo.models.registry import get_weights_entry

READERS = {"mnist": datasets.mnist, "cifar10": datasets.cifar10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", help="folder with the MNIST training idx files")
    parser.add_argument("--cifar10", help="folder with the CIFAR-10 training batches or train/<class> tree")
    args = parser.parse_args()
    roots = {"mnist": args.mnist, "cifar10": args.cifar10}

    print(f"{'weights':<26} {'figure':<16} {'card':>8} {'measured':>9}")
    for name in imgzoo.list_pretrained():
        model = imgzoo.load(name)
        entry_meta = get_weights_entry(name).meta
        dataset = entry_meta["dataset"]
        if roots.get(dataset) is None:
            print(f"{name:<22} skipped: pass --{dataset}")
            continue
        seed = entry_meta["recipe"].get("seed", 0)
        fraction = entry_meta["recipe"].get("val_fraction", 0.1)
        _, val = datasets.train_val_split(READERS[dataset](roots[dataset]), fraction, seed=seed)
        loader = FastLoader(val, 500, spec=model.data_spec)
        metrics = entry_meta["metrics"]
        tta = metrics.get("tta")
        plain = imgzoo.evaluate(model, loader)
        measured = {"val_acc": plain.top1, "val_top5": plain.top5}
        if tta:
            with_tta = imgzoo.evaluate(model, loader, tta=tta)
            measured |= {"val_acc_tta": with_tta.top1, "val_top5_tta": with_tta.top5}
        for key, value in measured.items():
            label = f"{key} ({tta})" if key.endswith("_tta") else key
            card = f"{metrics[key]:.2%}" if key in metrics else "-"
            print(f"{name:<26} {label:<16} {card:>8} {value:>9.2%}")
        print(f"{'':<26} {plain.num_samples} validation images (seed {seed})")


if __name__ == "__main__":
    main()
