"""Recipes: how a set of weights was trained, and the defaults for training each architecture.

A :class:`Recipe` is the part of a training run that is not the model or the data: optimizer,
learning rate, schedule, epochs, batch size, label smoothing, mixed precision, augmentation,
weight averaging and test-time augmentation, with a note on where each value comes from. There is
one per shipped weights entry (``"resnet_cifar.cifar10"``: exactly what trained those weights) and
one per architecture (``"resnet_cifar"``: what ``imgzoo train resnet_cifar DATA`` uses).

``fit(model, train, val, recipe="resnet_cifar.cifar10")`` takes the optimizer, schedule, epochs,
batch size, label smoothing, amp and EMA from it (keywords passed beside it win). The data-side
choices are the loader's: a loader the user built is not rebuilt, so build it with
``FastLoader(data, **recipe.loader_options(), spec=spec, train=True)``; fit warns when the one it
gets disagrees with the recipe. Test-time augmentation is evaluation's:
``evaluate(model, val, tta=recipe.tta)``.

The weights entries in :mod:`imgzoo.hub.pretrained` record ``recipe.to_meta()``, so an entry's
``meta["recipe"]`` and its Recipe cannot drift apart (tests/test_recipes.py also checks both
against the recipe written in the shipped ``config.json``).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from imgzoo._device import AMP_CHOICES
from imgzoo.data.transforms import AUGMENTS
from imgzoo.models.registry import get_weights_entry, list_pretrained

__all__ = ["RECIPES", "Recipe", "get_recipe", "list_recipes"]

# FitConfig's options that a recipe sets: fit(recipe=...) copies exactly these.
FIT_FIELDS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "label_smoothing",
    "norm_bias_lr_scale",
    "amp",
)
SCHEDULES = ("onecycle", "cosine", "step", "linear")  # fit's built-in learning-rate schedules
TTA_CHOICES = (False, True, "flip", "shift", "flip+shift")


@dataclass(frozen=True)
class Recipe:
    """One training recipe; every value is what a run used, and ``source`` says where it comes from."""

    name: str  # a weights name ("resnet_cifar.cifar10") or an architecture name ("resnet_cifar")
    epochs: int
    optimizer: str = "sgd"  # fit's names: "sgd" (Nesterov whenever momentum > 0) or "adamw"
    lr: float = 0.1  # the peak of the schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"  # one of SCHEDULES
    batch_size: int = 128
    label_smoothing: float = 0.0
    norm_bias_lr_scale: float = 1.0  # the learning rate of batch-norm shifts, as a multiple of lr
    amp: bool | str = "auto"  # fit's amp: "auto", "fp32", "bf16", "fp16"
    augment: str = "standard"  # FastLoader's augment: "none", "standard", "strong" or "affine"
    translate: int | None = None  # FastLoader's pad-and-crop in pixels; None: its default (1/8 of the side)
    alternate_flips: bool = False  # FastLoader's alternate_flips: airbench's derandomized flip, not a toss per epoch
    cutout: int = 0  # FastLoader's cutout: the side in pixels of a square blanked in each training image; 0: none
    ema_decay: float | None = None  # callbacks.EMA(decay=...) during training; None: no weight average
    # callbacks.Lookahead(decay=...) during training; None: none. Not with ema_decay: both rewrite the weights.
    lookahead_decay: float | None = None
    tta: bool | str = False  # evaluate(tta=...): False, "flip", "shift" or "flip+shift"
    # create_model's keyword arguments beyond the data's classes, e.g. {"whiten": True}, {"depth": 56}
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""  # the command that ran it, the figures it gave, or the paper it follows

    def __post_init__(self) -> None:
        problems = [
            f"{rule}, got {value!r}"
            for ok, rule, value in (
                (isinstance(self.epochs, int) and self.epochs >= 1, "epochs must be an integer >= 1", self.epochs),
                (self.optimizer in ("sgd", "adamw"), "optimizer must be 'sgd' or 'adamw'", self.optimizer),
                (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}", self.schedule),
                (self.amp in AMP_CHOICES, f"amp must be one of {AMP_CHOICES}", self.amp),
                (self.augment in AUGMENTS, f"augment must be one of {AUGMENTS}", self.augment),
                (
                    self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
                    "ema_decay must be in (0, 1) or None",
                    self.ema_decay,
                ),
                (
                    self.lookahead_decay is None or 0.0 < self.lookahead_decay < 1.0,
                    "lookahead_decay must be in (0, 1) or None",
                    self.lookahead_decay,
                ),
                (
                    self.ema_decay is None or self.lookahead_decay is None,
                    "a recipe takes ema_decay or lookahead_decay, not both",
                    (self.ema_decay, self.lookahead_decay),
                ),
                (
                    self.translate is None or (isinstance(self.translate, int) and self.translate >= 0),
                    "translate must be an integer >= 0 or None",
                    self.translate,
                ),
                (isinstance(self.alternate_flips, bool), "alternate_flips must be True or False", self.alternate_flips),
                (
                    isinstance(self.cutout, int) and not isinstance(self.cutout, bool) and self.cutout >= 0,
                    "cutout must be an integer >= 0 (pixels; 0 blanks nothing)",
                    self.cutout,
                ),
                (self.norm_bias_lr_scale > 0, "norm_bias_lr_scale must be > 0", self.norm_bias_lr_scale),
                (self.tta in TTA_CHOICES, f"tta must be one of {TTA_CHOICES}", self.tta),
                (isinstance(self.model_kwargs, dict), "model_kwargs must be a dict", self.model_kwargs),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"Recipe {self.name!r}: " + "; ".join(problems))
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))  # its own copy: recipes may share one

    def fit_options(self) -> dict[str, Any]:
        """The FitConfig options this recipe sets (its EMA is added by fit as a callback)."""
        return {name: getattr(self, name) for name in FIT_FIELDS}

    def loader_options(self) -> dict[str, Any]:
        """The training loader's options, which fit cannot apply to a loader it is given:
        ``FastLoader(data, **recipe.loader_options(), spec=spec, train=True)``. ``translate``,
        ``alternate_flips`` and ``cutout`` are named only where the recipe sets them (else the loader's defaults)."""
        options: dict[str, Any] = {"batch_size": self.batch_size, "augment": self.augment}
        if self.translate is not None:
            options["translate"] = self.translate
        if self.alternate_flips:
            options["alternate_flips"] = True
        if self.cutout:
            options["cutout"] = self.cutout
        return options

    def loader_differences(self, loader: Any) -> list[str]:
        """How a training loader's batch size and augmentation differ from the recipe's, each as a phrase.

        Reads what the loader states (FastLoader: ``batch_size`` and ``augment``; DataLoader:
        ``batch_size``); what it does not state is not compared.
        """
        found = []
        # alternate_flips and cutout are compared even where the recipe leaves them at the default: a loader that
        # alternates differs from a recipe that tosses a coin, one that blanks squares from one that does not.
        defaults_too = {"alternate_flips": self.alternate_flips, "cutout": self.cutout}
        for option, wanted in {**self.loader_options(), **defaults_too}.items():
            has = getattr(loader, option, None)
            if has is not None and has != wanted:
                found.append(f"{option}={has!r} (the recipe's is {wanted!r})")
        return found

    def to_meta(self) -> dict[str, Any]:
        """The recipe as the JSON-able dict a weights entry's ``meta["recipe"]`` and config.json hold."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "name"}

    @classmethod
    def from_meta(cls, name: str, meta: dict[str, Any]) -> Recipe:
        """The Recipe a ``meta["recipe"]`` dict records; its extra keys (data, seed, ...) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)} - {"name"}
        meta = dict(meta)
        # Recipes written before this class named Nesterov SGD "sgd-nesterov" and described the augmentation in words.
        if meta.get("optimizer") == "sgd-nesterov":
            meta["optimizer"] = "sgd"
        if isinstance(meta.get("augment"), str):
            meta["augment"] = meta["augment"].split(" ", 1)[0]
        if "epochs" not in meta:
            raise ValueError(
                f"the recipe recorded for {name!r} has no 'epochs' (it has {sorted(meta)}); a recipe needs at least "
                "the number of epochs. Record the run's options with Recipe(...).to_meta() when saving it."
            )
        return cls(name=name, **{k: v for k, v in meta.items() if k in known})


_SGD_CIFAR = (
    "SGD with Nesterov momentum 0.9, weight decay 5e-4 and batch 128: He et al. 2016 (section 4.2) and the common "
    "CIFAR ResNet reproductions; one-cycle (Smith & Topin 2019) reaches a given accuracy in the fewest epochs"
)

# airbench94 (Jordan 2024, arXiv:2404.00498; its hyperparameters as published in airbench94.py) in fit's terms.
# Its loss is summed over the batch and its lr 11.5 is per 1024 images divided by 1024 * (1 + 1 / (1 - momentum)):
# 11.5 / 7.67 = 1.5 on fit's mean loss. Its decoupled weight decay, 0.0153 * batch / 7850.7 = 0.0020 of each
# weight per step, is 0.0020 / 1.5 on fit's SGD.
_AIRBENCH94: dict[str, Any] = {
    "epochs": 11,  # airbench94's 484 steps: 9.9 epochs of 50,000 images there, 11 of 45,000 (44 batches) here
    "batch_size": 1024,
    "lr": 1.5,
    "momentum": 0.85,
    "weight_decay": 0.0153 * 1024 / (1024 * (1 + 1 / 0.15)) / 1.5,
    "schedule": "linear",  # 0.2x -> 1x over 23% of the steps, then -> 0.07x, momentum held
    "norm_bias_lr_scale": 64.0,  # batch-norm shifts at 64x the lr; their scales are fixed (bn_scale=False)
    "label_smoothing": 0.2,
    "amp": "auto",
    "augment": "standard",
    "translate": 2,  # airbench94's pad-and-crop: 2 pixels for 10 epochs (4 is the usual for longer runs)
    "lookahead_decay": 0.95**5,  # every 5 steps, ramped in cubically over the run
    "tta": "flip+shift",  # airbench94's tta_level 2
    "model_kwargs": {"whiten": True, "bn_momentum": 0.4, "bn_scale": False, "logit_scale": 1 / 9, "dirac_init": True},
}
_AIRBENCH94_SOURCE = (
    "airbench94's recipe (Jordan 2024, arXiv:2404.00498, airbench94.py) through fit: whitened stem, dirac "
    "init, batch-norm momentum 0.6 (0.4 in torch's convention) with fixed scales, logits x 1/9, Nesterov SGD "
    "momentum 0.85 at batch 1024, batch-norm shifts at 64x the lr, label smoothing 0.2, its linear schedule "
    "and lookahead, 2-pixel crops and flips, flip+shift TTA. Left out: training the stem's bias for 3 epochs "
    "(here the stem has no bias) and decay of the batch-norm shifts (fit never decays biases). Its alternating "
    "flips, which its ablations credit with 1 of its 10 epochs, are FastLoader(alternate_flips=True): in the "
    "recipe where alternate_flips is True."
)

# What trains the shipped ResNets, at depth 20 (resnet_cifar.cifar10) and 56 (resnet_cifar.d56_cifar10): SGD as in
# _SGD_CIFAR under a one-cycle schedule, label smoothing 0.1, crops with airbench's alternating flips and an
# 8-pixel cutout (DeVries and Taylor 2017), 90 epochs; flip+shift TTA. Each step is measured in those recipes.
_RESNET_CIFAR10: dict[str, Any] = {
    "epochs": 90,
    "label_smoothing": 0.1,
    "amp": "auto",
    "augment": "standard",  # reflect pad 4, random crop 32, horizontal flip
    "alternate_flips": True,
    "cutout": 8,
    "tta": "flip+shift",
}

_BUILTIN = (
    # ---------------------------------------------------------------- what trained the shipped weights
    Recipe(
        name="mnist_cnn.mnist",
        # 99.68% on the seeded 10% validation split (5,999 digits), 24 epochs, 29 min. Where it came from, all
        # 24 epochs of one-cycle SGD unless said, measured one at a time on that split (2-core AMD EPYC, AVX2):
        # 20 epochs without smoothing 99.53%; label smoothing 0.1 at batch 128 with dropout 0.25 (the weights
        # shipped before these) 99.62% (99.63% with shift TTA); the same with EMA weights (decay 0.999)
        # 99.57%, with 32 epochs 99.58%, with small rotations and scalings (--augment affine) 99.55%. That run's
        # training accuracy under augmentation and dropout (99.71%) sat close to its validation accuracy, so
        # regularisation, not capacity, was next: dropout 0.1 gave 99.63% (99.62% with TTA), and dropout 0.1 at
        # batch 64 (twice the steps, and more gradient noise) 99.68% (this recipe). Seven settings on one split:
        # the best of them carries some luck of the split; one run's count of errors (19 here) varies by about
        # sqrt(19) = 4, i.e. +-0.07 points.
        epochs=24,
        batch_size=64,  # 844 steps an epoch; on 2 AVX2 cores as fast as batch 128 (71-77 s an epoch)
        label_smoothing=0.1,
        amp="auto",  # fp32 on the AVX2 machine that trained it
        augment="standard",  # reflect pad 4, random crop 28; never flipped (a mirrored digit is another digit)
        # The image and two one-pixel shifts, kept so the card states the figure with TTA beside the plain
        # one: here it lowers top-1, 99.68% -> 99.63% (it raised the batch-128 weights' 99.62% to 99.63%).
        tta="shift",
        model_kwargs={"dropout": 0.1},
        source=(
            "imgzoo train mnist_cnn <MNIST train idx files> --out runs/mnist --recipe mnist_cnn.mnist, on a 2-core "
            "AMD EPYC (AVX2, no native bf16), torch 2.14.1: 1,751 s, 62-78 s an epoch. "
            f"{_SGD_CIFAR}; here batch 64 and dropout 0.1, each chosen on the validation split (see imgzoo/recipes.py)"  # noqa: E501 (as its config.json records it)
        ),
    ),
    Recipe(
        name="resnet_cifar.e60",
        # What trained the first resnet_cifar.cifar10 weights (shipped until the 90-epoch ones replaced them).
        epochs=60,  # 88.08% after 60 epochs; 30 epochs of the same recipe gave 86.56% (36 with smoothing: .short)
        amp="bf16",  # examples/train.py --amp bf16
        augment="standard",  # reflect pad 4, random crop 32, horizontal flip
        # The image, its mirror and one-pixel shifts (airbench's level 2): 88.08% -> 89.60% on the 5,000
        # validation images; the mirror alone gave 89.40%, the shifts alone 88.54% (evaluate(tta=...), 2-core EPYC).
        tta="flip+shift",
        source=(
            "python examples/train.py resnet_cifar <CIFAR-10 train/<class>/*.jpg> --epochs 60 --amp bf16, on 2 CPU "
            "cores, JPEG quality 75 copy of CIFAR-10; today's equivalent: imgzoo train resnet_cifar DATA --recipe "
            f"resnet_cifar.e60 --amp bf16. {_SGD_CIFAR}"
        ),
    ),
    Recipe(
        name="resnet_cifar.cifar10",
        # ResNet-20 for the epochs that fit 90 minutes on 2 cores with native bf16: 89.12% (89.98% with flip+shift
        # TTA, top-5 99.46%) on the seeded 5,000 validation images after 90 epochs, 4,294 s (72 min; 39-50 s an
        # epoch compiled, the first two 194-210 s while the ResNet-56 was evaluated beside them) on a 2-core Intel
        # Xeon with AVX512 and AMX, in bf16 (amp="auto"). resnet_cifar.e90's recipe with an 8-pixel cutout (DeVries
        # and Taylor 2017), the one change, one run each: +0.98 points plain, +0.10 with TTA. The cutout held
        # training accuracy (under augmentation and smoothing) at 93.1% in the last epoch against 96.7% without it,
        # and validation was still rising (88.1% -> 89.2% over the last 9 epochs). Target (>= 89.5% in <= 90 min):
        # met with TTA (89.98%), not without it (89.12%).
        **_RESNET_CIFAR10,
        source=(
            "imgzoo train resnet_cifar <CIFAR-10 train/<class>/*.jpg> --out runs/r20 --recipe resnet_cifar.cifar10 "
            "--compile, on a 2-core Intel Xeon (AVX512 with AMX, native bf16), torch 2.14.1, JPEG quality 75 copy of "
            "CIFAR-10: 4,294 s. resnet_cifar.short's recipe with alternating flips and an 8-pixel cutout over 90 "
            f"epochs. {_SGD_CIFAR}"
        ),
    ),
    Recipe(
        name="resnet_cifar.e90",
        # What trained the resnet_cifar.cifar10 weights shipped before the ones with cutout.
        # ResNet-20 for the epochs that fit 90 minutes on 2 cores with native bf16: 88.14% (89.88% with flip+shift
        # TTA, top-5 99.42%) on the seeded 5,000 validation images after 90 epochs, 4,410 s (74 min; 42-59 s an
        # epoch) on a 2-core Intel Xeon with AVX512 and AMX, in bf16 (amp="auto"). resnet_cifar.short's recipe
        # (smoothing 0.1) with airbench's alternating flips, over 90 epochs instead of 36. Against the 60 epochs it
        # replaced (resnet_cifar.e60, no smoothing, random flips: 88.08%, 89.60% with TTA) it gained 0.06 points
        # plain and 0.28 with TTA, one run each: about the noise of one run. Validation sat at 88.1-88.3% over the
        # last 4 epochs with training accuracy (under augmentation and smoothing) at 96.7%: ResNet-20's 0.27M
        # parameters, not the epochs, hold it here; He et al.'s 91.25% is on lossless CIFAR-10 after 164 epochs.
        epochs=90,
        label_smoothing=0.1,
        amp="auto",
        augment="standard",  # reflect pad 4, random crop 32, horizontal flip
        alternate_flips=True,
        tta="flip+shift",
        source=(
            "imgzoo train resnet_cifar <CIFAR-10 train/<class>/*.jpg> --out runs/r20 --recipe resnet_cifar.e90, "
            "on a 2-core Intel Xeon (AVX512 with AMX, native bf16), torch 2.14.1, JPEG quality 75 copy of CIFAR-10: "
            f"4,410 s. resnet_cifar.short's recipe with alternating flips over 90 epochs. {_SGD_CIFAR}"
        ),
    ),
    Recipe(
        name="basic_cnn.cifar10",
        # 90.78% after 36 epochs (91.58% with flip+shift TTA, top-5 99.72%) on the 5,000 validation images, 1,584 s
        # (26 min; 40-46 s an epoch, 54 and 67 s for the 2nd and 3rd while tests ran beside them) on a 2-core Intel
        # Xeon with AVX512 and AMX, bf16 (amp="auto"). Training accuracy in its last epoch, under cutout and
        # smoothing, 92.1%, and validation still rising (89.5% -> 90.3% -> 89.8% -> 90.78% with the final
        # lookahead weights over the last 4 epochs): at this length the augmentation, not the network, is the limit.
        # What it changed from basic_cnn.e22 (22 epochs: 90.26%, 91.08% with TTA, in 20 min; training accuracy 99.2%,
        # so that network had memorised its data) was two things at once, one run: airbench96's augmentation
        # (Jordan 2024: 4-pixel crops instead of 2, and a 12-pixel cutout; DeVries and Taylor 2017) and 36 epochs
        # instead of 22, as many as 30 minutes hold at about 44 s an epoch. Target (>= 91.5% in <= 30 min with
        # native bf16): met with TTA (91.58%), not without it (90.78%). A second run with seed 1 for the weights, the
        # loader and training, on the same seed-0 split, gave 90.58% (91.66% with TTA) in 1,631 s: met again.
        # The cutout's side, one run each with everything else the same: 8 pixels gave 90.32% (91.46% with TTA;
        # training accuracy in the last epoch 96.2%: less blanking, more memorising), 12 pixels this recipe, 16
        # pixels 89.02% (90.18%; training accuracy 86.0%: too little left to learn from in 36 epochs). Measured like
        # validation (imgzoo evaluate RUN DATA --split train), this recipe's training accuracy is 97.50%, loss 0.2934.
        **{**_AIRBENCH94, "epochs": 36, "alternate_flips": True, "translate": 4, "cutout": 12},
        source=(
            "imgzoo train basic_cnn <CIFAR-10 train/<class>/*.jpg> --out runs/basic_cnn --recipe basic_cnn.cifar10, "
            "on a 2-core Intel Xeon (AVX512 with AMX, native bf16), torch 2.14.1, JPEG quality 75 copy of CIFAR-10: "
            "1,584 s. airbench94's recipe for 36 epochs instead of 11, with its alternating flips and airbench96's "
            "4-pixel crops and 12-pixel cutout. " + _AIRBENCH94_SOURCE
        ),
    ),
    Recipe(
        name="basic_cnn.e22",
        # What trained the basic_cnn.cifar10 weights shipped before basic_cnn.cifar10's 36 epochs with cutout.
        # 90.26% after 22 epochs (91.08% with flip+shift TTA, top-5 99.30%) on the 5,000 validation images, 1,174 s
        # (20 min; 36-43 s an epoch, but 168 and 157 s for the first two while another process evaluated beside them)
        # on a 2-core Intel Xeon with AVX512 and AMX, bf16 (amp="auto"). Training accuracy in its last epoch 99.2%.
        # Where it came from, each one run on the same split: airbench94's 11 epochs (basic_cnn.airbench) gave 89.48%
        # (90.74% with TTA) in fp32 on 2 AVX2 cores in 59 min; 16 epochs of it 89.50% (90.80%) in 81 min there; the
        # same 11 epochs with alternating flips (basic_cnn.altflip) 89.82% (90.38%) in bf16 on the Xeon in 7 min;
        # 22 epochs of that, with the linear schedule and lookahead stretched to match, this recipe (run as
        # --recipe basic_cnn.altflip --epochs 22, the same values as --recipe basic_cnn.e22). The alternating
        # flips and bf16 changed together, so that run does not credit either; airbench95's author measured random
        # flips at 94.95% against alternating 95.01% (n=100 runs). airbench94's own script gave 91.16% with its TTA
        # on the held-out test split of this JPEG copy in 35 min on 2 cores (fp32). The target (>= 91.5% in 30 min
        # with native bf16) was missed by 0.4 points with TTA; airbench95's width (128/384/384) would cost about 2x a
        # step and store 9 MB in fp16, more than the package's 10 MB for all weights allows beside the others.
        **{**_AIRBENCH94, "epochs": 22, "alternate_flips": True},
        source=(
            "imgzoo train basic_cnn <CIFAR-10 train/<class>/*.jpg> --out runs/basic_cnn --recipe basic_cnn.e22, "
            "on a 2-core Intel Xeon (AVX512 with AMX, native bf16), torch 2.14.1, JPEG quality 75 copy of CIFAR-10: "
            "1,174 s. airbench94's recipe for 22 epochs instead of 11, with its alternating flips. "
            + _AIRBENCH94_SOURCE
        ),
    ),
    Recipe(
        name="resnet_cifar.d56_cifar10",
        # He et al. 2016's ResNet-56 (93.03% on lossless CIFAR-10 after 164 epochs) in 90 epochs: 90.26% (91.66% with
        # flip+shift TTA, top-5 99.30%) on the seeded 5,000 validation images, 10,661 s of training (2 h 58 min;
        # 99-157 s an epoch, the slow ones while tests ran beside them) on a 2-core Intel Xeon with AVX512 and AMX,
        # in bf16 (amp="auto"), compiled (--compile, about 1.2x an epoch there). One run, stopped and resumed
        # exactly from its checkpoint twice. Against resnet_cifar.d56_e40 (40 epochs, random flips, no cutout:
        # 88.14%, 89.62% with TTA) it gained 2.1 points plain and 2.0 with TTA; the epochs, airbench's alternating
        # flips and an 8-pixel cutout (DeVries and Taylor 2017) changed together, so the run credits none alone.
        # Validation sat at 89.9-90.3% over the last 5 epochs with training accuracy (under augmentation and
        # smoothing) at 96.6%. Target (>= 91% in <= 4 h with native bf16): met with TTA, not without it.
        **_RESNET_CIFAR10,
        model_kwargs={"depth": 56},
        source=(
            "imgzoo train resnet_cifar <CIFAR-10 train/<class>/*.jpg> --out runs/r56 --recipe "
            "resnet_cifar.d56_cifar10 --compile, on a 2-core Intel Xeon (AVX512 with AMX, native bf16), torch 2.14.1, "
            "JPEG quality 75 copy of CIFAR-10: 10,661 s. He et al. 2016's depth-56 network with resnet_cifar.short's "
            f"recipe over 90 epochs, with alternating flips and an 8-pixel cutout. {_SGD_CIFAR}"
        ),
    ),
    Recipe(
        name="resnet_cifar.d56_e40",
        # What trained the resnet_cifar.d56_cifar10 weights shipped before the 90-epoch ones.
        # He et al. 2016's ResNet-56 (93.03% on lossless CIFAR-10 after 164 epochs) in 40 epochs of resnet_cifar.short:
        # 88.14% (89.62% with flip+shift TTA, top-5 99.30%) on the seeded 5,000 validation images,
        # 4,813 s (80 min; 106-122 s an epoch, the first three 150-256 s while tests ran beside them) on a 2-core
        # Intel Xeon with AVX512 and AMX, in bf16 (amp="auto"). 3.1x ResNet-20's work an image (0.125 against 0.041
        # GMACs a forward pass; 0.85M parameters): about 4 h on 2 AVX2 cores in fp32. Against ResNet-20's 36 epochs
        # of the same recipe (87.06%, fp32 on AVX2) depth bought a point. Validation sat at 88.1-88.2% over the last
        # 3 epochs, with training accuracy (under augmentation and smoothing) at 95.8%: target (>= 91%) missed.
        epochs=40,
        label_smoothing=0.1,
        amp="auto",
        augment="standard",
        tta="flip+shift",
        model_kwargs={"depth": 56},
        source=(
            "imgzoo train resnet_cifar <CIFAR-10 train/<class>/*.jpg> --out runs/r56 --recipe "
            "resnet_cifar.d56_e40, on a 2-core Intel Xeon (AVX512 with AMX, native bf16), torch 2.14.1, JPEG "
            "quality 75 copy of CIFAR-10: 4,813 s. "
            f"He et al. 2016's depth-56 network with resnet_cifar.short's recipe over 40 epochs. {_SGD_CIFAR}"
        ),
    ),
    # ---------------------------------------------------------------- named variants of an architecture's recipe
    Recipe(
        name="mnist_cnn.quick",
        # One epoch for bench/bench_time_to_accuracy.py's race against PyTorch's MNIST example. Measured one at a
        # time on the seeded validation split (2-core AMD EPYC, AVX2), all one epoch without augmentation:
        # fit's defaults 98.67%; lr 0.2 without dropout 98.47%; AdamW 3e-3 98.47%; label smoothing 0.1 98.87%,
        # 0.2 98.90%; smoothing 0.1 with EMA 0.98 98.95% at batch 128, 98.95% at batch 64. Every optimizer setting
        # then sat at 98.83-98.98% (batch 64 at lr 0.05, 0.1, 0.2; AdamW 2e-3; batch 32): what held the one pass
        # back was dropout, which slows fitting when nothing overfits yet. At batch 64: dropout 0 99.05%, 0.1
        # 99.08% (this one), 0 with hidden 256 99.08%, 0 with smoothing 0.2 99.12%. Over initialisation seeds
        # 0, 1, 2 (--init-seed) this recipe gave 99.08%, 98.87%, 99.07%: 99% after one pass is its typical
        # result, not a certainty.
        epochs=1,
        batch_size=64,  # 844 steps instead of 422; and on 2 AVX2 cores 833 images/s against 740 at batch 128
        augment="none",  # the shifts the 24-epoch recipe learns from cost accuracy in a single pass
        label_smoothing=0.1,
        ema_decay=0.98,  # an average over the last ~50 of its 844 steps
        amp="auto",
        model_kwargs={"dropout": 0.1},
        source=(
            "each variant above: python bench/bench_time_to_accuracy.py --recipe mnist_cnn.quick --set FIELD=VALUE "
            "... (e.g. --set ema_decay=null --set label_smoothing=0 --set 'model_kwargs={\"dropout\": 0}'). "
            f"{_SGD_CIFAR}"
        ),
    ),
    Recipe(
        name="basic_cnn.onecycle",
        # What trained the first basic_cnn.cifar10 weights (shipped until airbench94's recipe replaced them) and the
        # study's basic-CNN rows (docs/study.md): fit's SGD defaults with airbench94's stem, smoothing and TTA.
        epochs=10,  # 88.26% after 10 epochs (89.14% with flip+shift TTA); val accuracy rose 1.4 points in the last
        label_smoothing=0.2,  # epoch alone, so the one-cycle schedule, not the network, set the ceiling here
        amp="auto",  # fp32 on the AVX2 machine that trained it
        augment="standard",  # reflect pad 4, random crop 32, horizontal flip
        tta="flip+shift",  # 88.26% -> 89.14% on the 5,000 validation images
        model_kwargs={"whiten": True},  # the frozen patch-whitening stem, set from 5,000 training images
        source=(
            "imgzoo train basic_cnn <CIFAR-10 train/<class>/*.jpg> --out runs/basic_cnn (then the basic_cnn recipe), "
            "on a 2-core AMD EPYC (AVX2, no native bf16), torch 2.14.1, JPEG quality 75 copy of CIFAR-10: 53 min, "
            "286-300 s an epoch when the machine was not shared (epochs 6-7 shared it: 390 and 444 s). airbench94 "
            "reaches 94% with this network by its own optimizer settings (decoupled lr, batch 1024, Lookahead): "
            f"basic_cnn.airbench. {_SGD_CIFAR}"
        ),
    ),
    Recipe(
        name="resnet_cifar.short",
        # What 90 minutes buy ResNet-20 on 2 AVX2 cores: 87.06% (88.68% with flip+shift TTA, top-5 99.30%) on the
        # seeded 5,000 validation images after 36 epochs, 4,949 s (82 min; 102-155 s an epoch, one epoch at 275 s
        # while tests ran beside it) on a 2-core AMD EPYC (AVX2, fp32). Training accuracy measured like validation:
        # 94.44%. Six more epochs and smoothing gave half a point over 30 epochs of resnet_cifar.e60's recipe
        # (86.56%); its 60 epochs stay a point ahead (88.08%, 89.60% with TTA), so those weights stayed shipped.
        # Smoothing was not measured apart from the extra epochs.
        epochs=36,
        label_smoothing=0.1,
        amp="auto",
        augment="standard",  # reflect pad 4, random crop 32, horizontal flip
        tta="flip+shift",
        source=(
            "imgzoo train resnet_cifar <CIFAR-10 train/<class>/*.jpg> --out runs/r20_short "
            "--recipe resnet_cifar.short, on a 2-core AMD EPYC (AVX2, no native bf16), torch 2.14.1, JPEG quality 75 "
            f"copy of CIFAR-10. {_SGD_CIFAR}"
        ),
    ),
    Recipe(
        name="basic_cnn.airbench",
        **_AIRBENCH94,
        source=_AIRBENCH94_SOURCE,
    ),
    Recipe(
        name="basic_cnn.altflip",
        **{**_AIRBENCH94, "alternate_flips": True},
        # 89.82% after 11 epochs (90.38% with flip+shift TTA) on the 5,000 validation images, 427 s (36-41 s an
        # epoch) on a 2-core Intel Xeon with AVX512 and AMX, bf16 (amp="auto"); training accuracy in the last epoch
        # 96.0%. basic_cnn.e22 is the same for 22 epochs.
        source=(
            "imgzoo train basic_cnn <CIFAR-10 train/<class>/*.jpg> --out runs/altflip --recipe basic_cnn.altflip, on "
            "a 2-core Intel Xeon (AVX512 with AMX, native bf16), torch 2.14.1, JPEG quality 75 copy of CIFAR-10: "
            "427 s. basic_cnn.airbench with airbench94's alternating flips (FastLoader(alternate_flips=True)): "
            + _AIRBENCH94_SOURCE
        ),
    ),
    # ---------------------------------------------------------------- per architecture: what `imgzoo train ARCH` uses
    Recipe(
        name="mnist_cnn",
        epochs=24,  # the shipped mnist_cnn.mnist recipe: 99.68% on the validation split
        batch_size=64,
        label_smoothing=0.1,
        amp="auto",  # bf16 only where the hardware computes it natively (fit's default)
        tta="shift",  # one-pixel shifts only: a mirrored digit is another digit
        model_kwargs={"dropout": 0.1},
        source=f"mnist_cnn.mnist's recipe. {_SGD_CIFAR}",
    ),
    Recipe(
        name="resnet_cifar",
        # The shipped resnet_cifar.cifar10 recipe (He et al. 2016 trained 164 epochs for 91.25%).
        **_RESNET_CIFAR10,
        # Its tta, the image, its mirror and two one-pixel shifts with logits averaged, takes resnet_cifar.cifar10's
        # weights from 89.12% to 89.98% on their 5,000 validation images and resnet_cifar.e90's from 88.14% to 89.88%
        # (2-core Intel Xeon, AMX). The 60-epoch weights before those went from 88.08% to 89.60%, 89.40% with the
        # mirror alone (evaluate(tta=...) on a 2-core AMD EPYC, AVX2: 61 s for flip+shift, 50 s for flip, 21 s without).
        source=f"resnet_cifar.cifar10's recipe. {_SGD_CIFAR}",
    ),
    Recipe(
        name="basic_cnn",
        # The shipped basic_cnn.cifar10 recipe (26 min on 2 cores with bf16); basic_cnn.altflip gives 89.82% (90.38%
        # with TTA) in 7 min there, for a quicker look.
        **{**_AIRBENCH94, "epochs": 36, "alternate_flips": True, "translate": 4, "cutout": 12},
        source="basic_cnn.cifar10's recipe: " + _AIRBENCH94_SOURCE,
    ),
    Recipe(
        name="dogbreed_transfer",
        epochs=5,  # only the new head trains (the ImageNet backbone is frozen): a few passes converge
        optimizer="adamw",  # AdamW at 1e-3 suits a fresh linear head, where SGD's 0.1 would overshoot
        lr=1e-3,
        weight_decay=0.05,  # fit's AdamW default (DeiT, ConvNeXt)
        batch_size=64,  # 224x224 images: half of CIFAR's batch keeps memory in bounds
        amp="auto",
        tta="flip",  # dog breeds are left/right symmetric
        model_kwargs={"weights": "imagenet"},
        source=(
            "a linear head on a frozen ImageNet ResNet-50 (imgzoo.models.dogbreed_transfer); "
            "examples/finetune_dogbreed.py then unfreezes the last stage. Not yet trained with imgzoo."
        ),
    ),
)

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in _BUILTIN}

# Names a recipe had before it was renamed: a run recorded under the old name (its run.json) still resumes
# and evaluates, by the recipe that trained it. resnet_cifar.d56 was the 40-epoch ResNet-56 recipe (now
# resnet_cifar.d56_e40), resnet_cifar.r20_90min the 90-epoch ResNet-20 one without cutout (now resnet_cifar.e90).
_RENAMED = {
    "resnet_cifar.d56": "resnet_cifar.d56_e40",
    "resnet_cifar.r20_90min": "resnet_cifar.e90",
    "basic_cnn.cutout": "basic_cnn.cifar10",  # its name while it was measured
}


def list_recipes() -> list[str]:
    """Every recipe name: the built-in ones, then registered weights entries that record a recipe."""
    extra = [name for name in list_pretrained() if name not in RECIPES and _recorded(name) is not None]
    return sorted(RECIPES) + extra


def _recorded(name: str) -> dict[str, Any] | None:
    """The recipe dict a registered weights entry records, if any."""
    try:
        recorded = get_weights_entry(name).meta.get("recipe")
    except (KeyError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) and recorded else None


def get_recipe(name: str | Recipe) -> Recipe:
    """The recipe of a weights name ("resnet_cifar.cifar10") or an architecture name ("mnist_cnn").

    A weights entry registered outside imgzoo (``entry_from_folder``) gives the recipe its
    config.json recorded. An unknown name is refused with the closest known ones.
    """
    if isinstance(name, Recipe):
        return name
    if not isinstance(name, str):
        raise TypeError(f"get_recipe takes a recipe name or a Recipe, got {type(name).__name__}")
    if name in RECIPES or name in _RENAMED:
        return RECIPES[_RENAMED.get(name, name)]
    recorded = _recorded(name)
    if recorded is not None:
        return Recipe.from_meta(name, recorded)
    known = list_recipes()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"no recipe named {name!r}.{hint} Recipes exist for {known}; for another model, pass fit's options "
        "directly (fit(model, train, epochs=..., lr=...))."
    )
