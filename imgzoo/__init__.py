"""imgzoo: small models for small images, one fit loop, and weights on the Hugging Face Hub."""

import sys

from imgzoo import models  # registers the built-in architectures
from imgzoo._version import __version__
from imgzoo.data import datasets, loaders, transforms
from imgzoo.eval.evaluation import evaluate, predict
from imgzoo.eval.history import History
from imgzoo.hub import _timm, pretrained  # registers the built-in weights entries
from imgzoo.hub.api import create_model, download, load, push_to_hub, save
from imgzoo.models import basic_cnn, dogbreed_transfer, mnist_cnn, resnet_cifar
from imgzoo.models.folding import fold_batchnorm
from imgzoo.models.registry import DataSpec, list_models, list_pretrained, register_model, register_weights
from imgzoo.study.compare import compare
from imgzoo.train.fit import fit

__all__ = ["DataSpec", "History", "__version__", "basic_cnn", "compare", "create_model", "datasets",
           "dogbreed_transfer", "download", "evaluate", "fit", "fold_batchnorm", "list_models", "list_pretrained",
           "load", "loaders", "mnist_cnn", "models", "predict", "pretrained", "push_to_hub", "register_model",
           "register_weights", "resnet_cifar", "save", "transforms"]  # fmt: skip

# The data modules' 0.1 paths (`import imgzoo.datasets`, `from imgzoo.transforms import for_model`) keep working.
for _name, _module in (("datasets", datasets), ("transforms", transforms), ("loaders", loaders)):
    sys.modules[f"{__name__}.{_name}"] = _module

_timm.register_with_timm()  # into timm's registry, now or when timm is imported; never imports timm itself
