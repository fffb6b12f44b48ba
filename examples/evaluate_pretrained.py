"""Re-measure imgzoo's shipped weights on the validation split they report, from the files themselves.

Each entry was trained by examples/train.py on the training split minus a seeded, stratified
10% validation split (seed 0); this rebuilds that split, loads the entry by name (sha256
checked) and evaluates it, so the figures in imgzoo.pretrained can be checked by anyone.

    python examples/evaluate_pretrained.py --mnist PATH/TO/mnist --cifar10 PATH/TO/cifar10-jpeg
"""

from __future__ import annotations

import argparse

import imgzoo
from imgzoo import datasets
from imgzoo.loaders import FastLoader
from imgzoo.registry import get_weights_entry

READERS = {"mnist": datasets.mnist, "cifar10": datasets.cifar10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", help="folder with the MNIST training idx files")
    parser.add_argument("--cifar10", help="folder with the CIFAR-10 training batches or train/<class> tree")
    args = parser.parse_args()
    roots = {"mnist": args.mnist, "cifar10": args.cifar10}

    print(f"{'weights':<22} {'reported':>9} {'measured':>9} {'top-5':>7} {'images':>7}")
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
        result = imgzoo.evaluate(model, FastLoader(val, 500, spec=model.data_spec))
        reported = entry_meta["metrics"]["val_acc"]
        print(f"{name:<22} {reported:>9.2%} {result.top1:>9.2%} {result.top5:>7.2%} {result.num_samples:>7}")


if __name__ == "__main__":
    main()
