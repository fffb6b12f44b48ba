"""imgzoo's pretrained weights, registered on import (tests/test_pretrained.py checks each); ``default=True``
marks what ``pretrained=True`` loads. To publish: ``commit = imgzoo.push_to_hub(model, "org/repo", history)``,
then paste ``repr(entry_from_folder("arch.tag", folder, repo_id="org/repo", revision=commit.oid))`` below."""

from __future__ import annotations

import os
from pathlib import Path

import imgzoo.models  # noqa: F401  (an entry's architecture must be registered first)
from imgzoo.hub.format import CONFIG_NAME, WEIGHTS_NAME, read_config, sha256_of
from imgzoo.models.registry import CIFAR10, WeightsEntry, register_weights
from imgzoo.train.recipes import RECIPES

REQUIRED_META = ("dataset", "metrics", "recipe", "num_params")

_DIGITS = [str(d) for d in range(10)]
_SPLIT = {"val_fraction": 0.1, "seed": 0}
_CIFAR_JPEG = "CIFAR-10 train split as JPEG quality 75"
_DOGS = "Kaggle Dog Breed Identification training photos, 90x90; ImageNet images, which the backbone saw in pretraining"
# The 120 breeds of Kaggle's labels.csv, in its sorted order: the shipped config.json's, which config_sha256 pins.
_DOG_BREEDS = read_config(Path(__file__).parent / "weights" / "dogbreed_transfer-dogs120" / CONFIG_NAME)["class_names"]


# A final fit: the recipe chosen on the split, refit on every image; the entry states the validation run's figures.
_REFIT = {"val_fraction": 0.0, "validation": "the validation run's figures; these weights were refit on every image"}


def _recipe(name: str, **data: str) -> dict[str, object]:
    """The entry's meta["recipe"]: its Recipe (imgzoo.train.recipes), the split, the data."""
    return {**RECIPES[name].to_meta(), **_SPLIT, **data}


# Newest last. Every figure is on a seeded 10% validation split of the training data (no test split used).
# fmt: off
PRETRAINED: tuple[WeightsEntry, ...] = (
    # imgzoo train mnist_cnn <MNIST idx files> --out runs/mnist --recipe mnist_cnn.mnist: 24 epochs, 62-78 s each,
    # 2-core AMD EPYC (AVX2); 99.68% on 5,999 validation digits (99.63% shift TTA); fp16 keeps top-1.
    WeightsEntry(
        name="mnist_cnn.mnist",
        sha256="c3a7fe572b69edf447c925c0c643c439098605f70e0b2c6f3f5578d962f69402",
        config_sha256="f1214937efee56047b07ec3f847652cbbfc5d9bd70deca28a85268058505e91d",
        package_dir="mnist_cnn-mnist", default=True,
        meta={
            "dataset": "mnist",
            "metrics": {"val_acc": 0.9968328054675779, "val_top5": 1.0, "val_loss": 0.10847348240062105,
                        "val_acc_tta": 0.9963327221203534, "val_top5_tta": 1.0, "tta": "shift",
                        "train_acc": 0.9977407825781004, "epochs": 24},
            "recipe": _recipe("mnist_cnn.mnist", data="MNIST train split"),
            "num_params": 468_010, "categories": _DIGITS,
            "kwargs": {"num_classes": 10, "dropout": 0.1, "hidden": 128},
        },
    ),
    # imgzoo train resnet_cifar <CIFAR-10 JPEGs> --out runs/r20 --recipe resnet_cifar.cifar10 --compile: 90 epochs,
    # 72 min, 2-core Xeon (AMX, bf16); 89.12% val, TTA 89.98%, fp16 89.14%; no cutout 88.14%; paper 91.25% (164 ep.)
    # These weights: the same recipe refit on all 50,000 images (--val 0, 7 Dec 2026); the figures are the run's above.
    WeightsEntry(
        name="resnet_cifar.cifar10",
        sha256="da9bf77c0bd73221020ffdabcacfa5c1509156ad29741d55b5be11465a78d906",
        config_sha256="30bd2ad075ae6e6be7501b49f419a2bfd440430fcb414deb093766eeebe8f0f9",
        package_dir="resnet_cifar-cifar10", default=True,
        meta={
            "dataset": "cifar10",
            "metrics": {"val_acc": 0.8914, "val_top5": 0.9946, "val_loss": 0.38523434562683107, "val_acc_tta": 0.8998,
                        "val_top5_tta": 0.9958, "tta": "flip+shift", "train_acc": 0.92912, "epochs": 90},
            "recipe": {**_recipe("resnet_cifar.cifar10", data=_CIFAR_JPEG), **_REFIT},
            "num_params": 269_722, "categories": list(CIFAR10.class_names),
            "kwargs": {"depth": 20, "num_classes": 10, "shortcut": "A", "width": 1, "zero_init_residual": False,
                       "in_chans": 3},
        },
    ),
    # imgzoo train basic_cnn <CIFAR-10 JPEGs> --out runs/basic_cnn --recipe basic_cnn.cifar10 (airbench94's): 36
    # epochs, 26 min, 2-core Xeon (AMX, bf16); 90.78% val, TTA 91.58% (fp16 same, 91.62%); no cutout, 22 ep.: 90.26%.
    # These weights: the same recipe refit on all 50,000 images (--val 0, 7 Dec 2026); the figures are the run's above.
    WeightsEntry(
        name="basic_cnn.cifar10",
        sha256="a3b5ebab3b410d32fa230bbd3549d4b965fa6735baea0d79e7dd2207866f2f74",
        config_sha256="a9870db4c69d31733e28da0108a99c4e52c25b1442ccc5eb7ec9cc35f29fb097",
        package_dir="basic_cnn-cifar10", default=True,
        meta={
            "dataset": "cifar10",
            "metrics": {"val_acc": 0.9078, "val_top5": 0.9972, "val_loss": 0.4621842819213867, "val_acc_tta": 0.9162,
                        "val_top5_tta": 0.9966, "tta": "flip+shift", "train_acc": 0.915, "epochs": 36},
            "recipe": {**_recipe("basic_cnn.cifar10", data=_CIFAR_JPEG), **_REFIT},
            "num_params": 1_972_778, "categories": list(CIFAR10.class_names),
            "kwargs": {"widths": [64, 256, 256], "num_classes": 10, "stem_width": 32, "dropout": 0.0, "whiten": True,
                       "bn_momentum": 0.4, "bn_scale": False, "logit_scale": 1 / 9, "dirac_init": True, "in_chans": 3},
        },
    ),
    # imgzoo train resnet_cifar <CIFAR-10 JPEGs> --out runs/r56 --recipe resnet_cifar.d56_cifar10 --compile: 90
    # epochs, 2 h 58 min, 2-core Xeon (AMX, bf16); 90.26% val, 91.66% flip+shift TTA (fp16 90.24%); paper 93.03%.
    WeightsEntry(
        name="resnet_cifar.d56_cifar10",
        sha256="de3a2834287f604c96704f2e7c528ca3d97cf0ce039b9f1ac8a97cdc99f7cf6b",
        config_sha256="2c898215d822b49228432dbc736bb8207d47a1f47d5393f043dea1aaeeae1f57",
        package_dir="resnet_cifar-d56_cifar10",
        meta={
            "dataset": "cifar10",
            "metrics": {"val_acc": 0.9024, "val_top5": 0.993, "val_loss": 0.3682085521697998, "val_acc_tta": 0.9166,
                        "val_top5_tta": 0.9968, "tta": "flip+shift", "train_acc": 0.9663333333333334, "epochs": 90},
            "recipe": _recipe("resnet_cifar.d56_cifar10", data=_CIFAR_JPEG),
            "num_params": 853_018, "categories": list(CIFAR10.class_names),
            "kwargs": {"depth": 56, "num_classes": 10, "shortcut": "A", "width": 1, "zero_init_residual": False},
        },
    ),
    # imgzoo train dogbreed_transfer <dog photos> --out runs/dogs (dogbreed_transfer.dogs120): ImageNet EfficientNet-
    # Lite0 at 224 px, 10 head epochs on cached features then 4 of its last 2 stages, 19 min on a 2-core Xeon (AMX,
    # bf16); 69.53% top-1, 91.80% top-5 on 768 validation photos (flip TTA 69.66%); fp16 keeps top-1. Optimistic:
    # the photos are ImageNet training images.
    WeightsEntry(
        name="dogbreed_transfer.dogs120",
        sha256="2330d536e088a381c3acd3067699e1150e8cc5589eb8a80a7a1d989d058e137c",
        config_sha256="b6105f1897d49dbc810f20be13f743937320fe1dfbcef0f6ab884a8c186d8cf5",
        package_dir="dogbreed_transfer-dogs120", default=True,
        meta={
            "dataset": "imagenet",  # its data spec's: ImageNet's preprocessing; the photos are in recipe["data"]
            "metrics": {"val_acc": 0.6953125, "val_top5": 0.9166666666666666, "val_loss": 1.1985105276107788,
                        "val_acc_tta": 0.6979166666666666, "val_top5_tta": 0.9153645833333334, "tta": "flip",
                        "fp32_val_acc": 0.6953125, "train_acc": 0.6771837569383582, "epochs": 4},
            "recipe": _recipe("dogbreed_transfer.dogs120", data=_DOGS),
            "num_params": 3_524_728, "categories": _DOG_BREEDS,
            "kwargs": {"backbone": "efficientnet_lite0", "weights": None, "num_classes": 120, "freeze_backbone": True,
                       "trainable_stages": 2, "image_size": 224, "dropout": 0.2, "in_chans": 3},
        },
    ),
)
# fmt: on


def entry_from_folder(name: str, folder: str | os.PathLike[str], *, repo_id: str | None = None,
                      revision: str | None = None, package_dir: str | None = None,
                      default: bool = False) -> WeightsEntry:  # fmt: skip
    """A weights entry for a folder of ``imgzoo.save``; pins and ``meta`` come from its files, so they agree."""
    folder = Path(folder)
    config = read_config(folder / CONFIG_NAME)
    arch = name.split(".", 1)[0]
    if config["architecture"] != arch:
        raise ValueError(f"{name!r} names architecture {arch!r} but {folder} holds {config['architecture']!r}")
    meta = {"dataset": config["data_spec"]["name"], "metrics": config.get("metrics") or {},
            "recipe": config.get("recipe") or {}, "num_params": config["num_params"],
            "categories": config.get("class_names"), "kwargs": config["kwargs"]}  # fmt: skip
    pins = {"sha256": sha256_of(folder / WEIGHTS_NAME), "config_sha256": sha256_of(folder / CONFIG_NAME)}  # classes too
    return WeightsEntry(name=name, repo_id=repo_id, revision=revision, package_dir=package_dir, meta=meta,
                        default=default, **pins)  # fmt: skip


def check_meta(entry: WeightsEntry) -> None:
    """Every entry documents what it is; a missing key is an error at import, not in a user's hands."""
    missing = [k for k in REQUIRED_META if k not in entry.meta]
    if missing:
        raise ValueError(f"weights {entry.name!r}: meta lacks {missing}; every entry records {list(REQUIRED_META)}")


for _entry in PRETRAINED:
    check_meta(_entry)
    register_weights(_entry)
