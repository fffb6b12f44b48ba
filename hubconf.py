"""torch.hub entry points, one per registered architecture, each forwarding to ``imgzoo.create_model``.

From a clone (or, once published, a GitHub repository):

    model = torch.hub.load("path/to/imgzoo", "resnet_cifar", source="local", pretrained=True)

``pretrained=True`` loads the architecture's default weights entry, ``pretrained="arch.tag"``
names one, and every other keyword argument goes to the builder, as in ``create_model``.
imgzoo is imported inside each entry point, not at the top: torch.hub checks
``dependencies`` only after importing this file, so a missing package is then reported
by its name rather than as an ImportError from deep inside imgzoo.
tests/test_hubconf.py checks that the entry points and the registry list the same names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers only: torch.hub would offer an imported callable as an entry point
    from torch import nn

# Import names, as torch.hub looks them up with importlib (pillow is imported as PIL).
dependencies = ["torch", "torchvision", "PIL", "numpy", "huggingface_hub", "safetensors", "tqdm"]


def _create(name: str, pretrained: bool | str, kwargs: dict[str, object]) -> nn.Module:
    from imgzoo import create_model

    return create_model(name, pretrained=pretrained, **kwargs)


def basic_cnn(pretrained: bool | str = False, **kwargs: object) -> nn.Module:
    """A plain 3-block CNN after airbench94 (arXiv:2404.00498), ~2M parameters, for 3x32x32 CIFAR-10 images.

    ``pretrained=True`` loads the shipped ``basic_cnn.cifar10`` weights (see ``imgzoo pretrained``). Keyword
    arguments (``widths``, ``num_classes``, ``stem_width``, ``dropout``) go to ``imgzoo.models.basic_cnn``.
    """
    return _create("basic_cnn", pretrained, kwargs)


def dogbreed_transfer(pretrained: bool | str = False, **kwargs: object) -> nn.Module:
    """EfficientNet-Lite0 (default) or a torchvision ResNet (``backbone``: resnet18, resnet34, resnet50) with a new
    head, for dog photos at 224x224.

    ``pretrained=True`` loads ``dogbreed_transfer.dogs120``, shipped inside the package (no download): 120 breeds,
    EfficientNet-Lite0 fine-tuned from ImageNet weights. ``weights="imagenet"`` starts a new backbone from ImageNet
    weights, ``weights=None`` from random initialisation. Other keyword arguments (``num_classes``,
    ``trainable_stages``, ``dropout``, ``image_size``, ``class_names``) go to ``imgzoo.models.dogbreed_transfer``.
    """
    return _create("dogbreed_transfer", pretrained, kwargs)


def mnist_cnn(pretrained: bool | str = False, **kwargs: object) -> nn.Module:
    """A ~0.47M-parameter CNN for 1x28x28 MNIST digits.

    ``pretrained=True`` loads ``mnist_cnn.mnist``, shipped inside the package (no
    download), and returns the model in eval mode. Keyword arguments (``num_classes``,
    ``dropout``, ``hidden``) go to ``imgzoo.models.mnist_cnn``; another ``num_classes``
    than the weights' loads everything but the classifier.
    """
    return _create("mnist_cnn", pretrained, kwargs)


def resnet_cifar(pretrained: bool | str = False, **kwargs: object) -> nn.Module:
    """He et al. 2016, section 4.2: a 6n+2-layer ResNet (ResNet-20 by default) for 3x32x32 CIFAR-10 images.

    ``pretrained=True`` loads ``resnet_cifar.cifar10``, shipped inside the package (no
    download), and returns the model in eval mode. Keyword arguments (``depth``,
    ``num_classes``, ``shortcut``, ``width``, ``zero_init_residual``) go to
    ``imgzoo.models.resnet_cifar``; another ``num_classes`` than the weights' loads
    everything but the classifier. Preprocess with ``imgzoo.data.transforms.for_model(model)``.
    """
    return _create("resnet_cifar", pretrained, kwargs)
