"""timm's model contract on every registered family, and the three ways to compile a model out of Python.

forward_features gives the feature map before pooling, forward_head pools and classifies
(or stops at the pooled features with ``pre_logits=True``), forward is the one after the
other, and get_classifier / reset_classifier reach the head without knowing its name.
TorchScript, torch.fx and torch.export must give the eager model's outputs.

Every model runs at its DataSpec's size. dogbreed_transfer runs on ResNet-18 with random
weights and a batch of one: ResNet-50 at 224x224 takes seconds per compile on two cores,
and the trunk's code path is the same for all three backbones.
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

import imgzoo

SMALL = {"dogbreed_transfer": {"backbone": "resnet18", "weights": None}}
BATCH = {"dogbreed_transfer": 1}
MODELS = imgzoo.list_models()
NEW_CLASSES = 7  # unlike every default, so a head that kept its size shows up


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return imgzoo.create_model(name, **SMALL.get(name, {})).eval()


def images(model: nn.Module) -> torch.Tensor:
    spec = model.data_spec
    batch = BATCH.get(model.imgzoo_arch, 2)
    return torch.randn(batch, spec.channels, *spec.size, generator=torch.Generator().manual_seed(1))


@functools.cache
def reference(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """One eval-mode model per family, its input and its eager output, shared by the tests that only read them."""
    model = build(name)
    x = images(model)
    with torch.no_grad():
        return model, x, model(x)


@pytest.mark.parametrize("name", MODELS)
def test_forward_is_forward_head_of_forward_features(name):
    model, x, out = reference(name)
    with torch.no_grad():
        assert torch.equal(out, model.forward_head(model.forward_features(x)))


@pytest.mark.parametrize("name", MODELS)
def test_forward_features_is_the_map_before_pooling(name):
    model, x, _ = reference(name)
    with torch.no_grad():
        features = model.forward_features(x)
    assert features.dim() == 4 and features.shape[0] == x.shape[0]
    # At the default input size every family's last map is several pixels wide; a pooled
    # (N, C, 1, 1) or flattened (N, C) output would mean pooling happened too early.
    assert features.shape[2] > 1 and features.shape[3] > 1


@pytest.mark.parametrize("name", MODELS)
def test_pre_logits_are_what_the_classifier_reads(name):
    model, x, _ = reference(name)
    classifier = model.get_classifier()
    with torch.no_grad():
        features = model.forward_features(x)
        embedding = model.forward_head(features, pre_logits=True)
        logits = model.forward_head(features)
    assert embedding.shape == (features.shape[0], classifier.in_features)
    torch.testing.assert_close(classifier(embedding), logits)


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier_replaces_the_head_and_nothing_else(name):
    model = build(name)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec, old_head = model.data_spec, model.get_classifier()

    model.reset_classifier(NEW_CLASSES)

    head = model.get_classifier()
    assert head is not old_head and head.out_features == NEW_CLASSES
    assert head.in_features == old_head.in_features
    after = model.state_dict()
    assert set(after) == set(before)
    changed = [k for k in before if before[k].shape != after[k].shape or not torch.equal(before[k], after[k])]
    assert sorted(changed) == ["classifier.bias", "classifier.weight"]
    assert model.data_spec is spec  # the label set is the caller's business, not the head's
    _, x, _ = reference(name)
    with torch.no_grad():
        assert model(x).shape == (x.shape[0], NEW_CLASSES)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("device", "dtype"), [("cpu", torch.float64), ("meta", torch.float32)])
def test_reset_classifier_keeps_the_heads_device_and_dtype(name, device, dtype):
    # "meta" stands in for an accelerator: a head created on the default device would be on "cpu".
    model = build(name).to(device=device, dtype=dtype)
    model.reset_classifier(NEW_CLASSES)
    weight = model.get_classifier().weight
    assert (weight.device.type, weight.dtype) == (device, dtype)


def _script(model: nn.Module, x: torch.Tensor) -> nn.Module:
    with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; it still ships
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(model)


def _fx(model: nn.Module, x: torch.Tensor) -> nn.Module:
    return torch.fx.symbolic_trace(model)


def _export(model: nn.Module, x: torch.Tensor) -> nn.Module:
    return torch.export.export(model, (x,)).module()


COMPILERS = {"jit.script": _script, "fx.symbolic_trace": _fx, "export": _export}


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("name", MODELS)
def test_compiled_model_matches_eager(name, compiler):
    model, x, eager = reference(name)
    compiled = COMPILERS[compiler](model, x)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("compiler", COMPILERS)
def test_eager_input_checks_survive_compiling(compiler):
    # The checks are skipped only while a compiler traces; the eager model must still refuse.
    model = build("mnist_cnn")
    COMPILERS[compiler](model, images(model))
    with pytest.raises(ValueError, match=r"mnist_cnn expects 1-channel 28x28 images"):
        model(torch.randn(2, 1, 32, 32))


def test_scripted_model_keeps_forward_features_and_forward_head_callable():
    model, x, _ = reference("resnet_cifar")
    scripted = _script(model, x)
    with torch.no_grad():
        features = scripted.forward_features(x)
        torch.testing.assert_close(scripted.forward_head(features, pre_logits=True), model.forward_head(features, True))
