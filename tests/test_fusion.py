"""fold_batchnorm: the same logits, fewer batch norms, and the caller's model untouched; evaluate runs the model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

import imgzoo
from imgzoo.models.folding import UncopyableModelError, fold_batchnorm

BUILD = {
    "basic_cnn": {},
    "basic_cnn_whitened": {"whiten": True, "bn_scale": False},
    "mnist_cnn": {},
    "resnet_cifar": {},
    "resnet_cifar_b": {"shortcut": "B"},
    "dogbreed_transfer": {"weights": None, "backbone": "resnet18"},
}


def _build(key: str) -> nn.Module:
    name = key.removesuffix("_whitened").removesuffix("_b")
    return imgzoo.create_model(name, **BUILD[key])


@torch.no_grad()
def _trained_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with the statistics and affine parameters of a trained network, not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            if m.weight.requires_grad:  # basic_cnn with bn_scale=False keeps its scales at 1
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("key", sorted(BUILD))
def test_every_family_folds_to_the_same_logits_without_batch_norm(key):
    torch.manual_seed(0)
    model = _trained_statistics(_build(key)).eval()
    size = model.data_spec.input_shape
    x = torch.randn(4, *size[:1], min(size[1], 64), min(size[2], 64))
    folded = fold_batchnorm(model)
    assert _batch_norms(model) > 0
    assert _batch_norms(folded) == 0, "every conv-BN pair of the built-in families is foldable"
    with torch.no_grad():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert folded.data_spec == model.data_spec


def test_the_callers_model_is_untouched():
    model = _trained_statistics(imgzoo.create_model("resnet_cifar")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert model.training and not folded.training
    assert before.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert _batch_norms(model) == 19


def test_a_pool_between_conv_and_a_negative_scale_is_not_folded():
    """max(a * x + b) == a * max(x) + b only for a > 0: a negative scale must keep its batch norm."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.ReLU())
    _trained_statistics(net)
    with torch.no_grad():
        net[2].weight[1] = -1.0
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    folded = fold_batchnorm(net)
    assert isinstance(folded[2], nn.BatchNorm2d)
    torch.testing.assert_close(folded(x), net(x))
    with torch.no_grad():
        net[2].weight.abs_()
    assert isinstance(fold_batchnorm(net)[2], nn.Identity)


def test_batch_statistics_in_eval_mode_are_not_folded():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    folded = fold_batchnorm(net)
    assert isinstance(folded[1], nn.BatchNorm2d)
    x = torch.randn(3, 3, 6, 6)
    torch.testing.assert_close(folded(x), net(x))


def test_a_non_module_is_refused():
    with pytest.raises(TypeError, match="torch.nn.Module, got dict"):
        fold_batchnorm({"weight": torch.ones(1)})


@settings(max_examples=25, deadline=None)
@given(
    cin=st.integers(1, 4),
    cout=st.integers(1, 6),
    kernel=st.sampled_from([1, 3]),
    stride=st.sampled_from([1, 2]),
    bias=st.booleans(),
    affine=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_conv_bn_pair_folds_exactly(cin, cout, kernel, stride, bias, affine, seed):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=bias), nn.BatchNorm2d(cout, affine=affine)
    )
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.1, 3.0)
        if affine:
            net[1].weight.normal_()
            net[1].bias.normal_()
    net.eval()
    x = torch.randn(2, cin, 7, 7)
    folded = fold_batchnorm(net)
    assert isinstance(folded[1], nn.Identity)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)


def test_evaluate_measures_the_model_itself_and_hands_it_back_in_its_layout():
    """evaluate runs the model (on channels_last copies of its weights on a CPU), never a folded copy."""
    torch.manual_seed(0)
    model = _trained_statistics(imgzoo.create_model("resnet_cifar")).train()
    x, y = torch.randn(40, 3, 32, 32), torch.randint(0, 10, (40,))
    result = imgzoo.evaluate(model, TensorDataset(x, y), batch_size=16, device="cpu")
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert result.loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert round(result.top1 * 40) == (logits.argmax(1) == y).sum().item()
    assert round(result.top5 * 40) == (logits.topk(5).indices == y[:, None]).any(1).sum().item()
    assert _batch_norms(model) == 19
    assert all(p.is_contiguous() for p in model.parameters()), "the caller's layout is kept"


def test_a_model_that_cannot_be_copied_is_refused_by_name_and_evaluate_still_measures_it():
    model = imgzoo.create_model("mnist_cnn", hidden=16)
    model.derived = model.classifier.weight * 2  # a non-leaf tensor: deepcopy refuses it
    with pytest.raises(UncopyableModelError, match="could not copy this MnistCNN.*derived tensors"):
        fold_batchnorm(model)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    result = imgzoo.evaluate(model, TensorDataset(x, y), device="cpu")
    model.eval()
    with torch.no_grad():
        assert result.loss == pytest.approx(F.cross_entropy(model(x), y).item(), rel=1e-5)
    assert _batch_norms(model) == 4
