"""Properties of the CIFAR ResNet's basic block and shortcuts (He et al. 2016, sections 3.3 and 4.2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import imgzoo
from imgzoo.models.resnet_cifar import BasicBlock, PadShortcut


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def zero_residual_branch(block: BasicBlock) -> None:
    with torch.no_grad():
        block.last_bn.weight.zero_()
        block.last_bn.bias.zero_()


@given(
    channels=st.integers(1, 16),
    height=st.integers(2, 10),
    width=st.integers(2, 10),
    batch=st.integers(1, 3),
    shortcut=st.sampled_from(["A", "B"]),
    train=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_zeroed_residual_branch_makes_a_stride1_block_return_relu_x(
    channels, height, width, batch, shortcut, train, seed
):
    block = BasicBlock(channels, channels, stride=1, shortcut=shortcut).train(train)
    zero_residual_branch(block)
    x = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(x))


def test_without_a_shortcut_a_zeroed_branch_returns_zeros():
    # The contrast to the property above: it is the shortcut that carries x through.
    block = BasicBlock(8, 8, shortcut="none").eval()
    zero_residual_branch(block)
    with torch.no_grad():
        assert not block(torch.randn(2, 8, 6, 6)).any()


@given(
    in_channels=st.integers(1, 16),
    extra=st.integers(0, 16),
    half_height=st.integers(1, 8),
    half_width=st.integers(1, 8),
    shortcut=st.sampled_from(["A", "B", "none"]),
)
def test_downsampling_block_halves_resolution_and_maps_channels(in_channels, extra, half_height, half_width, shortcut):
    out_channels = in_channels + extra
    block = BasicBlock(in_channels, out_channels, stride=2, shortcut=shortcut).eval()
    with torch.no_grad():
        out = block(torch.randn(2, in_channels, 2 * half_height, 2 * half_width))
    assert out.shape == (2, out_channels, half_height, half_width)


@given(
    in_channels=st.integers(1, 8),
    extra=st.integers(0, 8),
    height=st.integers(1, 11),
    width=st.integers(1, 11),
    channels_last=st.booleans(),
    requires_grad=st.booleans(),
)
def test_option_a_subsamples_and_zero_pads(in_channels, extra, height, width, channels_last, requires_grad):
    # Odd sizes too: channels_last input that carries a gradient is subsampled by a 1x1 average pool, which must
    # pick the same pixels.
    x = torch.randn(2, in_channels, height, width)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(requires_grad)
    out = PadShortcut(in_channels, in_channels + extra, stride=2)(x).detach()
    assert torch.equal(out[:, :in_channels], x[:, :, ::2, ::2])
    assert not out[:, in_channels:].any()


@pytest.mark.parametrize("channels_last", [False, True])
def test_option_a_gradient_is_the_slices_and_keeps_the_input_layout(channels_last):
    # A gradient in another layout than the residual branch's makes their sum, and the ReLU backward after it,
    # mix layouts: the slow path this shortcut avoids.
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(4, 8, 12, 10).to(memory_format=layout).requires_grad_()
    out = PadShortcut(8, 16, stride=2)(x)
    upstream = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, upstream)  # as autograd passes it on (x.grad would be re-laid out)
    expected = torch.zeros(4, 8, 12, 10)
    expected[:, :, ::2, ::2] = upstream[:, :8]
    assert torch.equal(grad, expected)
    assert grad.is_contiguous(memory_format=layout)


def test_option_a_adds_no_parameters_and_option_b_adds_projections():
    plain, a, b = (BasicBlock(16, 32, stride=2, shortcut=s) for s in ("none", "A", "B"))
    assert count(a) == count(plain)
    assert count(b) == count(plain) + 16 * 32 + 2 * 32  # 1x1 conv + BatchNorm scale and shift

    nets = {s: count(imgzoo.resnet_cifar(depth=20, shortcut=s)) for s in ("none", "A", "B")}
    assert nets["A"] == nets["none"]
    # Option B projects only where the shape changes: 16->32 and 32->64.
    assert nets["B"] - nets["A"] == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_option_a_cannot_shrink_channels():
    with pytest.raises(ValueError, match="shortcut='B'"):
        BasicBlock(32, 16, stride=2, shortcut="A")
    assert BasicBlock(32, 16, stride=2, shortcut="B")(torch.randn(1, 32, 4, 4)).shape == (1, 16, 2, 2)


def test_zero_init_residual_starts_every_branch_at_zero():
    blocks = [m for m in imgzoo.resnet_cifar(depth=14, zero_init_residual=True).modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 6
    assert all(not b.last_bn.weight.any() for b in blocks)
    default = [m for m in imgzoo.resnet_cifar(depth=14).modules() if isinstance(m, BasicBlock)]
    assert all(b.last_bn.weight.all() for b in default)


def gradient_ratio(depth: int, shortcut: str, seed: int = 0) -> float:
    """First-layer over last-layer gradient norm at initialisation, in train mode (batch statistics)."""
    torch.manual_seed(seed)
    model = imgzoo.resnet_cifar(depth=depth, shortcut=shortcut).train()
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))  # 8x8: the same contrast at 1/16 of the cost
    F.cross_entropy(model(x), y).backward()
    first = model.stem[0].weight.grad.norm()
    last = model.classifier.weight.grad.norm()
    return (first / last).item()


def test_shortcuts_keep_gradients_well_scaled_where_a_plain_stack_explodes():
    # Measured (seeds 0-2, batch 16, 8x8): with option A the ratio is 0.87-1.10 at depth 56 and 1.16-1.62
    # at 110. Without shortcuts it is 1.3e3-3.4e3, then 7.5e6-1.2e7 (at 32x32: 0.39-0.41 and 0.45-0.73
    # against 1.2e3-2.3e3 and 7e6-1.3e7): with BatchNorm at init a plain stack's gradients explode towards
    # the input rather than vanish. Margins here are 10x or more.
    residual = {depth: gradient_ratio(depth, "A") for depth in (56, 110)}
    plain = {depth: gradient_ratio(depth, "none") for depth in (56, 110)}
    for depth in (56, 110):
        assert 0.05 < residual[depth] < 5, residual
    assert plain[56] > 100 * residual[56], (plain, residual)
    assert plain[110] > 1e5 * residual[110], (plain, residual)
    assert plain[110] > 100 * plain[56], plain  # and it grows with depth
