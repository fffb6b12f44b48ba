"""A convolution with the activation after it, and a residual block's sum, in one oneDNN call on a CPU.

Once batch norm is folded (imgzoo.models.fusion), a ResNet block's inference is conv, relu, conv, the
shortcut's sum, relu: each relu and the sum a pass of its own over a feature map that the
convolution had just written. oneDNN, PyTorch's CPU convolution library, can apply an activation
and a sum to the convolution's output while it is still in cache ("post-ops", oneDNN's developer
guide); torch.compile's CPU backend (Inductor, when it freezes a model for inference) fuses
convolutions through the same operator, ``torch.ops.mkldnn._convolution_pointwise``.
:class:`FusedConv2d` calls it in eager mode.

Measured by ``python bench/bench_fusion.py --reps 5`` on a 2-core Intel Xeon with AVX512 and AMX
(torch 2.14.1; ResNet-20, batch 128, channels_last, the three networks in rotating windows): 2,399
images/s fused against 2,235 with batch norm folded only in fp32 (1.07x; 66% and 62% of the machine's
fp32 matmul peak), with bitwise the same logits (the post-ops add and clamp exactly as the separate
operators do), and 8,069 against 5,923 under bf16 autocast (1.37x).

That operator is internal to PyTorch, so it runs only where it is known to work: on the CPU, in
channels_last (its NCHW bf16 sum fails an internal assertion in torch 2.14.1), in fp32 or bf16,
with gradients off (it has no backward), outside torch.compile (which fuses on its own), and once a
self-check at its first use has matched it against the plain ops. Anywhere else the module computes
the same thing with the plain ops.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FusedConv2d", "fusable_activation"]

_COMPUTED = (torch.float32, torch.bfloat16)
_checked: dict[tuple[str, str, bool, torch.dtype], bool] = {}  # self-check results, one per kind of call


def fusable_activation(module: nn.Module) -> tuple[str, str] | None:
    """oneDNN's (post-op, algorithm) for ``module``: ReLU and GELU (exact or tanh); None for any other."""
    if type(module) is nn.ReLU:
        return "relu", ""
    if type(module) is nn.GELU:
        return "gelu", module.approximate  # "none" (erf) or "tanh", the names oneDNN's gelu takes
    return None


def _pointwise() -> object | None:
    """PyTorch's oneDNN convolution with post-ops, where this build has it."""
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_convolution_pointwise", None)


def _autocast_dtype() -> torch.dtype | None:
    try:
        on = torch.is_autocast_enabled("cpu")
        return torch.get_autocast_dtype("cpu") if on else None
    except TypeError:  # torch before 2.4 has only the CPU-specific names
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


def _compiling() -> bool:
    return torch.jit.is_scripting() or torch.compiler.is_compiling()


class FusedConv2d(nn.Module):
    """``activation(conv(x) [+ residual])``, in one oneDNN call where that is known to work.

    ``conv`` and ``activation`` are the modules it replaces (a Conv2d and a ReLU or GELU, see
    :func:`fusable_activation`); they stay as attributes and compute the result wherever the fused
    call does not apply (see the module's docstring), so the module accepts any input the two did.
    """

    def __init__(self, conv: nn.Conv2d, activation: nn.Module) -> None:
        super().__init__()
        post_op = fusable_activation(activation)
        if type(conv) is not nn.Conv2d or post_op is None:
            raise TypeError(
                f"FusedConv2d takes an nn.Conv2d and an nn.ReLU or nn.GELU; got {type(conv).__name__} and "
                f"{type(activation).__name__}"
            )
        self.conv, self.activation = conv, activation
        self.post_op, self.algorithm = post_op
        self._cast: dict[torch.dtype, tuple[tuple, torch.Tensor, torch.Tensor | None]] = {}

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self._fused_dtype(x, residual)
        if dtype is None:
            out = self.conv(x)
            return self.activation(out if residual is None else out + residual)
        return self._fused(x, residual, dtype)

    def _fused_dtype(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.dtype | None:
        """The dtype the fused call computes in, or None where the plain ops must run."""
        conv = self.conv
        if torch.is_grad_enabled() or _compiling() or not torch.backends.mkldnn.enabled:
            return None
        if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous(memory_format=torch.channels_last):
            return None
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros" or conv.weight.dtype not in _COMPUTED:
            return None
        if residual is not None and (residual.device.type != "cpu" or residual.dim() != 4 or self.post_op != "relu"):
            return None  # torch 2.14.1's fused sum takes a ReLU after it, no other activation
        dtype = _autocast_dtype() or x.dtype
        if dtype not in _COMPUTED or _pointwise() is None:
            return None
        return dtype if _self_check(self.post_op, self.algorithm, residual is not None, dtype) else None

    def _weights(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The weight and bias in ``dtype``: as they are where they have it, else cast once and kept.

        The kept cast is made again when a parameter changes: in place (its version moves) or
        replaced (``.data`` set, as ``Module.to`` does: its storage moves).
        """
        weight, bias = self.conv.weight.detach(), self.conv.bias
        bias = bias.detach() if bias is not None else None
        if weight.dtype == dtype and (bias is None or bias.dtype == dtype):
            return weight, bias
        key = tuple((t.data_ptr(), t._version) for t in (weight, bias) if t is not None)
        cached = self._cast.get(dtype)
        if cached is None or cached[0] != key:
            cached = (key, weight.to(dtype), bias.to(dtype) if bias is not None else None)
            self._cast[dtype] = cached
        return cached[1], cached[2]

    def _fused(self, x: torch.Tensor, residual: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        weight, bias = self._weights(dtype)
        geometry = (self.conv.padding, self.conv.stride, self.conv.dilation, self.conv.groups)
        return _call(geometry, x.to(dtype), residual, weight, bias, self.post_op, self.algorithm)


def _call(
    geometry: tuple,
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    post_op: str,
    algorithm: str,
) -> torch.Tensor:
    """The fused operator: ``geometry`` is the convolution's (padding, stride, dilation, groups)."""
    op = _pointwise()
    with torch.autocast("cpu", enabled=False):  # x and the weights are already in the dtype to compute in
        if residual is None:
            return op(x, weight, bias, *geometry, post_op, [], algorithm)  # type: ignore[operator]
        other = residual.to(x.dtype).contiguous(memory_format=torch.channels_last)
        return op.binary(x, other, weight, bias, *geometry, "add", None, post_op, [], algorithm)  # type: ignore[attr-defined]


def _self_check(post_op: str, algorithm: str, with_sum: bool, dtype: torch.dtype) -> bool:
    """Whether the fused call matches the plain ops for this kind of call; tried once per process and kind.

    A strided, padded 3x3 convolution of a small seeded input, against conv, sum and activation run
    apart on the same (rounded) values. A mismatch or an error is reported once, as a warning, and
    the plain ops serve from then on.
    """
    key = (post_op, algorithm, with_sum, dtype)
    if key in _checked:
        return _checked[key]
    generator = torch.Generator().manual_seed(0)
    weight, bias = (torch.randn(shape, generator=generator).to(dtype) for shape in ((8, 4, 3, 3), (8,)))
    x = torch.randn(2, 4, 7, 7, generator=generator).to(dtype).contiguous(memory_format=torch.channels_last)
    residual = torch.randn(2, 8, 4, 4, generator=generator).to(dtype) if with_sum else None
    plain = F.conv2d(x.float(), weight.float(), bias.float(), stride=2, padding=1)
    plain = plain + residual.float() if residual is not None else plain
    plain = F.relu(plain) if post_op == "relu" else F.gelu(plain, approximate=algorithm)
    problem = ""
    try:
        fused = _call(((1, 1), (2, 2), (1, 1), 1), x, residual, weight, bias, post_op, algorithm).float()
        error = (fused - plain).abs().max().item() / max(plain.abs().max().item(), 1e-6)
    except RuntimeError as exc:  # an operator this build lacks for this case
        error, problem = float("inf"), f"; {exc}"
    # bf16 keeps 8 bits of mantissa: its products and sums round at about 2**-8 of the largest value.
    ok = error <= (2e-2 if dtype == torch.bfloat16 else 1e-4)
    if not ok:
        warnings.warn(
            f"imgzoo: oneDNN's fused convolution ({post_op}{', with a sum' if with_sum else ''}, {dtype}) did not "
            f"match the plain operators on this build of torch {torch.__version__} (relative error {error:.2g}"
            f"{problem}); inference runs the plain operators "
            "instead, at their usual speed",
            RuntimeWarning,
            stacklevel=3,
        )
    _checked[key] = ok
    return ok
