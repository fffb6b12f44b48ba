"""imgzoo's own pretrained weights, registered when imgzoo is imported.

Each entry is a :class:`~imgzoo.models.registry.WeightsEntry`, as in torchvision's Weights
enums: where the files are (a Hub repository pinned to a commit, or a folder under
``imgzoo/hub/weights/`` shipped in the package), the sha256 of ``model.safetensors``,
and ``meta`` with the data set, metrics, training recipe and parameter count.

To publish an entry: train, ``commit = imgzoo.push_to_hub(model, "org/repo", history)``,
then paste ``entry_from_folder("arch.tag", folder, repo_id="org/repo",
revision=commit.oid)`` (printed with ``repr``) into ``PRETRAINED`` below. Mark at most
one entry per architecture ``default=True``: it is what ``pretrained=True`` loads.
tests/test_pretrained.py checks every entry's metadata against its architecture.
"""

from __future__ import annotations

import os
from pathlib import Path

import imgzoo.models  # noqa: F401  (an entry's architecture must be registered first)
from imgzoo.hub.format import CONFIG_NAME, WEIGHTS_NAME, read_config, sha256_of
from imgzoo.models.registry import CIFAR10, WeightsEntry, register_weights
from imgzoo.train.recipes import RECIPES

__all__ = ["PRETRAINED", "REQUIRED_META", "check_meta", "entry_from_folder", "register_builtin"]

REQUIRED_META = ("dataset", "metrics", "recipe", "num_params")

_DIGITS = [str(d) for d in range(10)]

# Where the figures of every entry below are measured: a seeded 10% validation split of the training data.
_SPLIT = {"val_fraction": 0.1, "seed": 0}
_CIFAR_JPEG = "CIFAR-10 train split as JPEG quality 75"


def _recipe(name: str, **data: str) -> dict[str, object]:
    """The entry's meta["recipe"]: its Recipe (imgzoo.train.recipes), the split, the data."""
    return {**RECIPES[name].to_meta(), **_SPLIT, **data}


# Newest last. Every figure is the accuracy on a seeded 10% validation split of the
# training data (imgzoo.data.datasets.train_val_split, seed 0); no test split was used.
PRETRAINED: tuple[WeightsEntry, ...] = (
    # imgzoo train mnist_cnn <folder of the MNIST train idx files> --out runs/mnist --recipe mnist_cnn.mnist
    # 24 epochs over 54,001 digits at batch 64, dropout 0.1, label smoothing 0.1, 62-78 s an epoch on a 2-core
    # AMD EPYC (AVX2). 99.68% on the 5,999 validation digits (99.63% with shift TTA); stored in fp16 (top-1
    # unchanged).
    WeightsEntry(
        name="mnist_cnn.mnist",
        sha256="c3a7fe572b69edf447c925c0c643c439098605f70e0b2c6f3f5578d962f69402",
        config_sha256="90099f392cb2f8a67416389b38b649790362dfe7c3ed9f8f779c12f362cfc6e8",
        package_dir="mnist_cnn-mnist",
        default=True,
        meta={
            "dataset": "mnist",
            "metrics": {
                "val_acc": 0.9968328054675779,
                "val_top5": 1.0,
                "val_loss": 0.10847348240062105,
                "val_acc_tta": 0.9963327221203534,
                "val_top5_tta": 1.0,
                "tta": "shift",
                "train_acc": 0.9977407825781004,
                "epochs": 24,
            },
            "recipe": _recipe("mnist_cnn.mnist", data="MNIST train split"),
            "num_params": 468_010,
            "categories": _DIGITS,
            "kwargs": {"num_classes": 10, "dropout": 0.1, "hidden": 128},
        },
    ),
    # imgzoo train resnet_cifar <CIFAR-10 train/<class>/*.jpg> --out runs/r20 --recipe resnet_cifar.cifar10 --compile:
    # ResNet-20 (He et al. 2016) for 90 epochs, label smoothing 0.1, alternating flips and an 8-pixel cutout, 4,294 s
    # (72 min) on a 2-core Intel Xeon (AVX512 with AMX, bf16, compiled). 89.12% on the 5,000 validation images,
    # 89.98% with flip+shift TTA; stored in fp16, which moved top-1 to 89.14% (+0.02 points). Trained and validated
    # on a JPEG (quality 75) copy of CIFAR-10, which costs accuracy against the lossless original; the paper's
    # 91.25% took 164 epochs. The weights it replaces, the same without cutout (resnet_cifar.e90), gave 88.14%
    # (89.88%); the 60-epoch ones before those (resnet_cifar.e60) 88.08% (89.60%).
    WeightsEntry(
        name="resnet_cifar.cifar10",
        sha256="0cd8129418a1f77a96e80be11ef7453d6cd20b00718112b1af67e7cf2fbae908",
        config_sha256="a31af0ab04662367cc8b7392499fc5f3372c077ba23b10db3988ebde6f98880e",
        package_dir="resnet_cifar-cifar10",
        default=True,
        meta={
            "dataset": "cifar10",
            "metrics": {
                "val_acc": 0.8914,
                "val_top5": 0.9946,
                "val_loss": 0.38523436431884767,
                "val_acc_tta": 0.8998,
                "val_top5_tta": 0.9958,
                "tta": "flip+shift",
                "train_acc": 0.9308,
                "epochs": 90,
            },
            "recipe": _recipe("resnet_cifar.cifar10", data=_CIFAR_JPEG),
            "num_params": 269_722,
            "categories": list(CIFAR10.class_names),
            "kwargs": {"depth": 20, "num_classes": 10, "shortcut": "A", "width": 1, "zero_init_residual": False},
        },
    ),
    # imgzoo train basic_cnn <CIFAR-10 train/<class>/*.jpg> --out runs/basic_cnn --recipe basic_cnn.cifar10:
    # airbench94's network and recipe through fit for 36 epochs, with its alternating flips and airbench96's 4-pixel
    # crops and 12-pixel cutout, at batch 1024 in 26 min on a 2-core Intel Xeon (AVX512 with AMX, bf16). 90.78% on
    # the 5,000 validation images, 91.58% with flip+shift TTA; stored in fp16, which left top-1 at 90.78% (91.62%
    # with TTA). The weights it replaces, the same for 22 epochs without cutout (basic_cnn.e22), gave 90.26% (91.08%
    # with TTA) in 20 min.
    WeightsEntry(
        name="basic_cnn.cifar10",
        sha256="daa134a928076e65348f676b92ee88463d8d01187a2ca7718d283383d0efedda",
        config_sha256="1eea52800f4ef843982e430d775cc62f2693af416b9cfb909eef94fee5c39f0d",
        package_dir="basic_cnn-cifar10",
        default=True,
        meta={
            "dataset": "cifar10",
            "metrics": {
                "val_acc": 0.9078,
                "val_top5": 0.9972,
                "val_loss": 0.46218429565429686,
                "val_acc_tta": 0.9162,
                "val_top5_tta": 0.9966,
                "tta": "flip+shift",
                "train_acc": 0.9211333333333334,
                "epochs": 36,
            },
            "recipe": _recipe("basic_cnn.cifar10", data=_CIFAR_JPEG),
            "num_params": 1_972_778,
            "categories": list(CIFAR10.class_names),
            "kwargs": {
                "widths": [64, 256, 256],
                "num_classes": 10,
                "stem_width": 32,
                "dropout": 0.0,
                "whiten": True,
                "bn_momentum": 0.4,
                "bn_scale": False,
                "logit_scale": 1 / 9,
                "dirac_init": True,
            },
        },
    ),
    # imgzoo train resnet_cifar <CIFAR-10 train/<class>/*.jpg> --out runs/r56 --recipe resnet_cifar.d56_cifar10 \
    #     --compile
    # ResNet-56 (He et al. 2016: 93.03% on lossless CIFAR-10 after 164 epochs), 90 epochs at batch 128 with
    # alternating flips and an 8-pixel cutout, 10,661 s (2 h 58 min) on a 2-core Intel Xeon (AVX512 with AMX, bf16,
    # compiled). 90.26% on the 5,000 validation images, 91.66% with flip+shift TTA; stored in fp16, which moved top-1
    # to 90.24% (TTA unchanged). The 40-epoch weights it replaces (resnet_cifar.d56_e40) gave 88.14% (89.62%). Not
    # the default of resnet_cifar: create_model("resnet_cifar", depth=56, pretrained=True) finds it by its depth.
    WeightsEntry(
        name="resnet_cifar.d56_cifar10",
        sha256="de3a2834287f604c96704f2e7c528ca3d97cf0ce039b9f1ac8a97cdc99f7cf6b",
        config_sha256="bf913c390a869fb42e12903885a7e75dce80a48d3df99fdc58b56ccae99f9dcd",
        package_dir="resnet_cifar-d56_cifar10",
        meta={
            "dataset": "cifar10",
            "metrics": {
                "val_acc": 0.9024,
                "val_top5": 0.993,
                "val_loss": 0.3682085521697998,
                "val_acc_tta": 0.9166,
                "val_top5_tta": 0.9968,
                "tta": "flip+shift",
                "train_acc": 0.9663333333333334,
                "epochs": 90,
            },
            "recipe": _recipe("resnet_cifar.d56_cifar10", data=_CIFAR_JPEG),
            "num_params": 853_018,
            "categories": list(CIFAR10.class_names),
            "kwargs": {"depth": 56, "num_classes": 10, "shortcut": "A", "width": 1, "zero_init_residual": False},
        },
    ),
)


def entry_from_folder(
    name: str,
    folder: str | os.PathLike[str],
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    package_dir: str | None = None,
    default: bool = False,
) -> WeightsEntry:
    """A weights entry for a folder written by ``imgzoo.save`` (the same files as the Hub repo).

    The sha256 pins are computed from the folder's ``model.safetensors`` and ``config.json``, and ``meta`` is
    taken from its ``config.json``, so the entry cannot disagree with the files.
    ``default=True`` makes it what ``create_model(arch, pretrained=True)`` loads.
    """
    folder = Path(folder)
    config = read_config(folder / CONFIG_NAME)
    arch = name.split(".", 1)[0]
    if config["architecture"] != arch:
        raise ValueError(f"{name!r} names architecture {arch!r} but {folder} holds {config['architecture']!r}")
    meta = {
        "dataset": config["data_spec"]["name"],
        "metrics": config.get("metrics") or {},
        "recipe": config.get("recipe") or {},
        "num_params": config["num_params"],
        "categories": config.get("class_names"),
        "kwargs": config["kwargs"],
    }
    return WeightsEntry(
        name=name,
        sha256=sha256_of(folder / WEIGHTS_NAME),
        config_sha256=sha256_of(folder / CONFIG_NAME),  # class names and preprocessing are pinned too
        repo_id=repo_id,
        revision=revision,
        package_dir=package_dir,
        meta=meta,
        default=default,
    )


def check_meta(entry: WeightsEntry) -> None:
    """Every entry documents what it is; a missing key is an error at import, not in a user's hands."""
    missing = [k for k in REQUIRED_META if k not in entry.meta]
    if missing:
        raise ValueError(f"weights {entry.name!r}: meta lacks {missing}; every entry records {list(REQUIRED_META)}")


def register_builtin(entries: tuple[WeightsEntry, ...] = PRETRAINED) -> None:
    for entry in entries:
        check_meta(entry)
        register_weights(entry)


register_builtin()
