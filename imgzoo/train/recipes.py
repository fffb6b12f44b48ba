"""Recipes, FitConfig values with model kwargs, TTA and source: one per shipped weights entry (what trained it, as
its config.json says) and one per architecture (what ``imgzoo train ARCH`` and ``fit(..., recipe=ARCH)`` use)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

# Recipe, its table and its lookup live with FitConfig, so that fit(recipe=...) needs no import of this data.
from imgzoo.train.config import RECIPES, RENAMED, FitConfig, Recipe, get_recipe, list_recipes, resolve_config

__all__ = ["RECIPES", "Recipe", "get_recipe", "list_recipes", "resolve_config"]


_SGD_CIFAR = (
    "SGD with Nesterov momentum, weight decay 5e-4 and batch 128: He et al. 2016 (section 4.2) and the common "
    "CIFAR ResNet reproductions; one-cycle (Smith & Topin 2019) reaches a given accuracy in the fewest epochs, "
    "and cycles momentum 0.95 -> 0.85 -> 0.95 against the lr in place of the paper's fixed 0.9"
)
_EPYC = "a 2-core AMD EPYC (AVX2, no native bf16), torch 2.14.1"
_XEON = "a 2-core Intel Xeon (AVX512 with AMX, native bf16), torch 2.14.1, JPEG quality 75 copy of CIFAR-10"


def _ran(name: str, out: str, took: str, on: str = _XEON, flags: str = "") -> str:
    """A CIFAR-10 run's command line, machine and time, as the shipped config.json files word them."""
    arch = name.split(".")[0]
    return f"imgzoo train {arch} <CIFAR-10 train/<class>/*.jpg> --out runs/{out} --recipe {name}{flags}, on {on}{took}"


def _variant(base: Recipe, name: str, source: str, **changes: Any) -> Recipe:
    """``base`` under another name and source, with ``changes`` to its tta, model_kwargs or FitConfig."""
    own = {key: changes.pop(key) for key in ("tta", "model_kwargs") if key in changes}
    return replace(base, name=name, source=source, config=replace(base.config, **changes), **own)


# airbench94 (Jordan 2024, arXiv:2404.00498, airbench94.py) in fit's terms: its loss is summed over the batch and
# its lr 11.5 per 1024 images is divided by 1024 * (1 + 1 / (1 - momentum)): 11.5 / 7.67 = 1.5 on fit's mean loss;
# its decoupled weight decay, 0.0153 * batch / 7850.7 = 0.0020 of each weight per step, is 0.0020 / 1.5 here.
_AIRBENCH94 = FitConfig(
    epochs=11,  # airbench94's 484 steps: 9.9 epochs of 50,000 images there, 11 of 45,000 (44 batches) here
    batch_size=1024, lr=1.5, momentum=0.85, weight_decay=0.0153 * 1024 / (1024 * (1 + 1 / 0.15)) / 1.5,
    schedule="linear",  # 0.2x -> 1x over 23% of the steps, then -> 0.07x, momentum held
    norm_bias_lr_scale=64.0,  # batch-norm shifts at 64x the lr; their scales are fixed (bn_scale=False)
    label_smoothing=0.2,
    translate=2,  # airbench94's pad-and-crop: 2 pixels for 10 epochs (4 is the usual for longer runs)
    lookahead_decay=0.95**5,  # every 5 steps, ramped in cubically over the run
)  # fmt: skip
_AIRBENCH94_SOURCE = (
    "airbench94's recipe (Jordan 2024, arXiv:2404.00498, airbench94.py) through fit: whitened stem, dirac "
    "init, batch-norm momentum 0.6 (0.4 in torch's convention) with fixed scales, logits x 1/9, Nesterov SGD "
    "momentum 0.85 at batch 1024, batch-norm shifts at 64x the lr, label smoothing 0.2, its linear schedule "
    "and lookahead, 2-pixel crops and flips, flip+shift TTA. Left out: training the stem's bias for 3 epochs "
    "(here the stem has no bias) and decay of the batch-norm shifts (fit never decays biases). Its alternating "
    "flips, which its ablations credit with 1 of its 10 epochs, are FastLoader(alternate_flips=True): in the "
    "recipe where alternate_flips is True."
)
_AIRBENCH_NET = {"whiten": True, "bn_momentum": 0.4, "bn_scale": False, "logit_scale": 1 / 9, "dirac_init": True}
# basic_cnn.airbench: 89.48% (90.74% with TTA) in fp32 on 2 AVX2 cores, 59 min; 16 epochs 89.50% (90.80%).
_AIRBENCH = Recipe("basic_cnn.airbench", _AIRBENCH94, "flip+shift", _AIRBENCH_NET, _AIRBENCH94_SOURCE)
# basic_cnn.cifar10: 90.78% (91.58% TTA) in 26 min (Xeon, bf16); cutout 8 px 90.32%, 12 px 90.78%, 16 px 89.02%.
_BASIC_RAN = (
    f"{_ran('basic_cnn.cifar10', 'basic_cnn', ': 1,584 s')}. airbench94's recipe for 36 epochs instead of 11, with its "
    f"alternating flips and airbench96's 4-pixel crops and 12-pixel cutout. {_AIRBENCH94_SOURCE}"
)
_BASIC = _variant(_AIRBENCH, "basic_cnn.cifar10", _BASIC_RAN, epochs=36, alternate_flips=True, translate=4, cutout=12)
# resnet_cifar.short: what 90 minutes buy ResNet-20 on 2 AVX2 cores in fp32, 87.06% (88.68% with TTA) in 36 epochs.
_SHORT_RAN = (
    f"{_ran('resnet_cifar.short', 'r20_short', ' copy of CIFAR-10', _EPYC + ', JPEG quality 75')}. {_SGD_CIFAR}"
)

_SHORT = Recipe("resnet_cifar.short", FitConfig(epochs=36, label_smoothing=0.1), "flip+shift", source=_SHORT_RAN)
# resnet_cifar.cifar10: 89.12% (89.98% with TTA) in 72 min compiled in bf16 (Xeon), +0.98 points over e90 (no cutout).
_RESNET_RAN = (
    f"{_ran('resnet_cifar.cifar10', 'r20', ': 4,294 s', flags=' --compile')}. resnet_cifar.short's recipe with "
    f"alternating flips and an 8-pixel cutout over 90 epochs. {_SGD_CIFAR}"
)
# Its momentum held at 0.9 instead of one-cycle's 0.95-0.85: 89.22% (90.72% TTA), within a seed: cycling kept.
_RESNET = _variant(_SHORT, "resnet_cifar.cifar10", _RESNET_RAN, epochs=90, alternate_flips=True, cutout=8)
# ResNet-56 in 90 epochs: 90.26% (91.66% with TTA; He et al. 2016: 93.03% in 164), 2 h 58 min; +2.1 over d56_e40.
_D56_RAN = (
    f"{_ran('resnet_cifar.d56_cifar10', 'r56', ': 10,661 s', flags=' --compile')}. He et al. 2016's depth-56 network "
    f"with resnet_cifar.short's recipe over 90 epochs, with alternating flips and an 8-pixel cutout. {_SGD_CIFAR}"
)
# mnist_cnn.mnist: 99.68% (shift TTA 99.63%) in 29 min; each alone: dropout 0.1 99.63%, batch 64 99.68% (+-0.07).
# Digits are never flipped: a mirrored digit is another digit.
_MNIST_RAN = (f"imgzoo train mnist_cnn <MNIST train idx files> --out runs/mnist --recipe mnist_cnn.mnist, on {_EPYC}: "
              f"1,751 s, 62-78 s an epoch. {_SGD_CIFAR}; here batch 64 and dropout 0.1, each chosen on the validation "
              "split (see imgzoo/recipes.py)")  # fmt: skip
_MNIST_FIT = FitConfig(epochs=24, batch_size=64, label_smoothing=0.1)
_MNIST = Recipe("mnist_cnn.mnist", _MNIST_FIT, "shift", {"dropout": 0.1}, _MNIST_RAN)

_D56 = {"depth": 56}
_QUICK = "python bench/bench_time_to_accuracy.py --recipe mnist_cnn.quick"
_E60 = "python examples/train.py resnet_cifar <CIFAR-10 jpg> --epochs 60 --amp bf16 on 2 CPU cores (before recipes)"
_ONECYCLE = f"{_ran('basic_cnn', 'basic_cnn', ': 53 min', _EPYC)} (by the basic_cnn recipe then). {_SGD_CIFAR}"
# Transfer learning (Kornblith et al. 2019; Kumar et al. 2022): EfficientNet-Lite0's ImageNet features, its head
# trained alone for 10 epochs on them (computed once), then its last 2 stages and head fine-tuned by SGD, the
# backbone at a tenth of the head's rate, its batch norms kept as ImageNet left them. Chosen on the seeded 10%
# validation split of the dog photos (2-core Xeon, bf16; docs/dogbreeds.md): head alone 10 epochs 52.2% top-1 at
# 128 px (30: 50.1%, 100: 50.1%; at 90 px 38.9%); fine-tuned with its batch norms training 33.3% after epoch 1,
# frozen 51.2% (49.6% without augmentation); 4 epochs at 128 px 53.8% (82.6% top-5), at 224 px: see the entry.
_DOGS_FIT = FitConfig(epochs=4, batch_size=64, lr=0.01, weight_decay=1e-4, schedule="cosine", label_smoothing=0.1,
                      backbone_lr_scale=0.1, head_epochs=10)  # fmt: skip
_DOGS_NET = {"backbone": "efficientnet_lite0", "weights": "imagenet", "trainable_stages": 2, "image_size": 224,
             "dropout": 0.2}  # fmt: skip  # dropout: EfficientNet-B0's (Tan & Le 2019)
_DOGS_RAN = "imgzoo train dogbreed_transfer <dog photos: labels.csv + train/> --out runs/dogs"
_DOGS = Recipe("dogbreed_transfer.dogs120", _DOGS_FIT, "flip", _DOGS_NET, _DOGS_RAN)

_BUILTIN = (
    # ---------------------------------------------------------------- what trained the shipped weights
    _MNIST,
    _RESNET,
    _BASIC,
    _variant(_RESNET, "resnet_cifar.d56_cifar10", _D56_RAN, model_kwargs=_D56),
    # ---------------------------------------------------------------- weights shipped before, and variants
    # The first resnet_cifar.cifar10: 88.08% (89.60% with flip+shift TTA); 30 epochs 86.56%.
    _variant(_SHORT, "resnet_cifar.e60", _E60, epochs=60, label_smoothing=0.0, amp="bf16"),
    # 88.14% (89.88% with TTA) in 74 min (Xeon, bf16), 0.06 points over e60: ResNet-20's 0.27M parameters hold it.
    _variant(_SHORT, "resnet_cifar.e90", _ran("resnet_cifar.e90", "r20", ": 4,410 s"), epochs=90, alternate_flips=True),
    # The d56_cifar10 weights before: 88.14% (89.62% with TTA) in 80 min (Xeon, bf16); 3.1x ResNet-20's work.
    _variant(_SHORT, "resnet_cifar.d56_e40", _ran("resnet_cifar.d56_e40", "r56", ": 4,813 s"), model_kwargs=_D56,
             epochs=40),
    # The basic_cnn.cifar10 weights before: 90.26% (91.08% with TTA) in 20 min; airbench94's script: 91.16% in 35.
    _variant(_AIRBENCH, "basic_cnn.e22", _ran("basic_cnn.e22", "basic_cnn", ": 1,174 s"), epochs=22,
             alternate_flips=True),
    # 89.82% (90.38% with TTA) in 7 min (Xeon, bf16): a quicker look than basic_cnn.
    _variant(_AIRBENCH, "basic_cnn.altflip", _ran("basic_cnn.altflip", "altflip", ": 427 s"), alternate_flips=True),
    _AIRBENCH,
    # The first basic_cnn.cifar10 weights and the study's rows: 88.26% (89.14% with TTA) in 53 min on 2 AVX2 cores.
    Recipe("basic_cnn.onecycle", FitConfig(epochs=10, label_smoothing=0.2), "flip+shift", {"whiten": True}, _ONECYCLE),
    _SHORT,
    # One epoch for bench_time_to_accuracy.py: 99.08% (fit's defaults 98.67%); shifts cost in one pass.
    _variant(_MNIST, "mnist_cnn.quick", _QUICK, tta=False, epochs=1, augment="none", ema_decay=0.98),
    # ---------------------------------------------------------------- per architecture: what `imgzoo train ARCH` uses
    _variant(_MNIST, "mnist_cnn", "mnist_cnn.mnist's recipe"),
    _variant(_RESNET, "resnet_cifar", "resnet_cifar.cifar10's recipe"),
    _variant(_BASIC, "basic_cnn", "basic_cnn.cifar10's recipe"),
    _DOGS,
    _variant(_DOGS, "dogbreed_transfer", "dogbreed_transfer.dogs120's recipe"),
)  # fmt: skip

RECIPES.update({recipe.name: recipe for recipe in _BUILTIN})

# Former names, so that a run recorded under one (its run.json) still resumes and evaluates by its recipe.
RENAMED.update({"resnet_cifar.d56": "resnet_cifar.d56_e40", "resnet_cifar.r20_90min": "resnet_cifar.e90",
                "basic_cnn.cutout": "basic_cnn.cifar10"})  # fmt: skip
