"""imgzoo: small models for small images, one fit loop, and weights on the Hugging Face Hub."""

from imgzoo import (
    datasets,
    loaders,
    models,  # registers the built-in architectures
    pretrained,  # registers the built-in weights entries
    transforms,
)
from imgzoo._version import __version__
from imgzoo.evaluation import evaluate, predict
from imgzoo.factory import create_model
from imgzoo.fusion import fold_batchnorm, fuse_for_inference
from imgzoo.history import History
from imgzoo.hub import download, load, push_to_hub, save
from imgzoo.models import basic_cnn, dogbreed_transfer, mnist_cnn, resnet_cifar
from imgzoo.registry import DataSpec, list_models, list_pretrained, register_model, register_weights
from imgzoo.study import compare
from imgzoo.training import fit

__all__ = [
    "DataSpec",
    "History",
    "__version__",
    "basic_cnn",
    "compare",
    "create_model",
    "datasets",
    "dogbreed_transfer",
    "download",
    "evaluate",
    "fit",
    "fold_batchnorm",
    "fuse_for_inference",
    "list_models",
    "list_pretrained",
    "load",
    "loaders",
    "mnist_cnn",
    "models",
    "predict",
    "pretrained",
    "push_to_hub",
    "register_model",
    "register_weights",
    "resnet_cifar",
    "save",
    "transforms",
]
