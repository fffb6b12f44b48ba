"""fuse_for_inference and FusedConv2d: the folded network's logits, in oneDNN's fused calls where they apply."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fusion import _trained_statistics
from torch import nn

import imgzoo
from imgzoo.models import fused_conv
from imgzoo.models.fused_conv import FusedConv2d
from imgzoo.models.fusion import fold_batchnorm, fuse_for_inference

CL = torch.channels_last
onednn = pytest.mark.skipif(fused_conv._pointwise() is None, reason="this torch build has no oneDNN fused convolution")

# (builder options, input shape, convolutions that take in an activation or a residual sum)
FAMILIES = {
    "resnet_cifar": ({}, (3, 32, 32), 19),  # stem, then each block's two convolutions
    "resnet_cifar_b": ({"shortcut": "B"}, (3, 32, 32), 19),  # the 1x1 projections have no activation of their own
    "resnet_cifar_plain": ({"shortcut": "none"}, (3, 32, 32), 19),
    "mnist_cnn": ({}, (1, 28, 28), 4),
    "basic_cnn": ({}, (3, 32, 32), 4),  # a pool stands between three of its convolutions and their GELU
    "resnet18": ({"weights": None, "backbone": "resnet18"}, (3, 32, 32), 17),  # downsampling 1x1s: none
    "resnet50": ({"weights": None, "backbone": "resnet50"}, (3, 32, 32), 49),  # bottlenecks, GELU-free
}


def _build(key: str) -> tuple[nn.Module, tuple[int, ...], int]:
    options, shape, fused = FAMILIES[key]
    name = "dogbreed_transfer" if key.startswith("resnet") and "cifar" not in key else key
    name = "resnet_cifar" if key.startswith("resnet_cifar") else name
    torch.manual_seed(0)
    return _trained_statistics(imgzoo.create_model(name, **options)).eval(), shape, fused


def _counting(monkeypatch) -> list[int]:
    """Count the fused operator's calls."""
    calls = [0]
    real = fused_conv._call

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(fused_conv, "_call", counted)
    return calls


@onednn
@pytest.mark.parametrize("key", sorted(FAMILIES))
def test_every_family_fuses_to_the_folded_logits(key, monkeypatch):
    model, shape, expected = _build(key)
    folded = fold_batchnorm(model).to(memory_format=CL)
    fused = fuse_for_inference(model).to(memory_format=CL)
    assert sum(type(m) is FusedConv2d for m in fused.modules()) == expected
    x = torch.randn(4, *shape).contiguous(memory_format=CL)
    with torch.inference_mode():
        fused(x)  # the first call of each kind also runs its self-check through the operator
        calls = _counting(monkeypatch)
        want, got = folded(x), fused(x)
        assert calls[0] == expected  # every fused convolution ran as one oneDNN call
        # fp32: the post-ops add and clamp as the separate operators do, so only a GELU's own rounding may differ.
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = fused(x).float()
        assert low.dtype == torch.float32
        # bf16 through up to 50 layers: agree to bf16's rounding, measured against the logits' own scale.
        assert (low - want).abs().max() <= 0.05 * want.abs().max() + 0.05
    assert model.training is False and not any(type(m) is FusedConv2d for m in model.modules())  # untouched


@onednn
def test_the_plain_operators_serve_where_the_fused_call_does_not_apply(monkeypatch):
    model, shape, expected = _build("resnet_cifar")
    fused = fuse_for_inference(model)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        fused(x.contiguous(memory_format=CL))  # self-checks first
        calls = _counting(monkeypatch)
        want = fold_batchnorm(model)(x)
        torch.testing.assert_close(fused(x), want)  # NCHW: the plain operators
        assert calls[0] == 0
        fused.to(memory_format=CL)
        torch.testing.assert_close(fused(x.contiguous(memory_format=CL)), want, rtol=1e-4, atol=1e-5)
        assert calls[0] == expected
    # With gradients on (the fused operator has no backward) the plain operators run, and gradients flow.
    x = x.contiguous(memory_format=CL).requires_grad_()
    fused(x).sum().backward()
    assert calls[0] == expected and x.grad is not None and x.grad.abs().sum() > 0


@onednn
def test_a_self_check_that_fails_warns_once_and_the_plain_operators_serve(monkeypatch):
    class Wrong:
        """A fused operator that is off by one everywhere."""

        def __call__(self, x, weight, bias, padding, stride, dilation, groups, *rest):
            return F.conv2d(x, weight, bias, stride, padding, dilation, groups) + 1

        def binary(self, x, other, weight, bias, padding, stride, dilation, groups, *rest):
            return F.conv2d(x, weight, bias, stride, padding, dilation, groups) + other + 1

    monkeypatch.setattr(fused_conv, "_pointwise", lambda: Wrong())
    monkeypatch.setattr(fused_conv, "_checked", {})
    model, shape, _ = _build("resnet_cifar")
    fused = fuse_for_inference(model).to(memory_format=CL)
    x = torch.randn(2, *shape).contiguous(memory_format=CL)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match=r"did not match the plain operators.*plain operators"):
        got = fused(x)
    torch.testing.assert_close(got, fold_batchnorm(model)(x), rtol=1e-4, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: the result is kept
        with torch.no_grad():
            fused(x)
    assert set(fused_conv._checked.values()) == {False}


@onednn
def test_changed_weights_are_cast_again(monkeypatch):
    torch.manual_seed(0)
    block = FusedConv2d(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    x = torch.randn(1, 3, 5, 5).contiguous(memory_format=CL)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = block(x).float()
        block.conv.weight.mul_(-1)  # in place: the cached bf16 copy is stale
        after = block(x).float()
        plain = F.relu(block.conv(x)).float()
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, plain, rtol=2e-2, atol=2e-2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        block.conv.weight.data = -block.conv.weight.data  # replaced, as Module.to replaces it: a new storage
        replaced = block(x).float()
    torch.testing.assert_close(replaced, before, rtol=0, atol=0)  # the first weights again, cast afresh


def test_a_copy_for_another_device_is_folded_only():
    model, shape, _ = _build("resnet_cifar")
    for device in ("cuda", torch.device("meta")):  # named only: nothing runs there
        copy = fuse_for_inference(model, device)
        assert not any(type(m) is FusedConv2d for m in copy.modules())
        assert not any(isinstance(m, nn.BatchNorm2d) for m in copy.modules())


def test_only_a_convolution_and_a_relu_or_gelu_are_accepted():
    with pytest.raises(TypeError, match="an nn.Conv2d and an nn.ReLU or nn.GELU; got Conv2d and SiLU"):
        FusedConv2d(nn.Conv2d(1, 1, 1), nn.SiLU())
    with pytest.raises(TypeError, match="got Linear and ReLU"):
        FusedConv2d(nn.Linear(1, 1), nn.ReLU())


@onednn
@settings(max_examples=30, deadline=None)
@given(
    groups=st.sampled_from([1, 2]),
    per_group=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    kernel=st.sampled_from([1, 3, 5]),
    stride=st.sampled_from([1, 2]),
    padding=st.integers(0, 2),
    dilation=st.sampled_from([1, 2]),
    bias=st.booleans(),
    activation=st.sampled_from(["relu", "gelu", "gelu_tanh"]),
    with_sum=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_convolution_fuses_as_the_plain_operators_compute(
    groups, per_group, kernel, stride, padding, dilation, bias, activation, with_sum, seed
):
    torch.manual_seed(seed)
    conv = nn.Conv2d(groups * per_group[0], groups * per_group[1], kernel, stride, padding, dilation, groups, bias)
    act = nn.ReLU() if activation == "relu" else nn.GELU(approximate="tanh" if activation == "gelu_tanh" else "none")
    size = dilation * (kernel - 1) + 1  # the smallest input the convolution accepts without padding
    x = torch.randn(2, conv.in_channels, size + 3, size + 2).contiguous(memory_format=CL)
    with torch.no_grad():
        out = conv(x)
        residual = torch.randn_like(out) if with_sum else None
        want = act(out if residual is None else out + residual)
        got = FusedConv2d(conv, act)(x, residual=residual)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
