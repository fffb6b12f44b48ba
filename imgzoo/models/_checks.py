"""Input and argument validation shared by the model families.

A wrong-shaped batch should fail with a sentence that names the model, what it
expected and what it got, not with a conv-layer shape error three calls deep; a
wrong builder argument should fail the same way before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.fx import _symbolic_trace

# A backstop for combinations of arguments that are each within bounds but together are not
# (resnet_cifar depth=1202 with width=16 is ~4.9G parameters): 500M float32 parameters are 2 GB
# of weights, 8 GB with gradients and Adam's two moments, and 20x the largest model here
# (dogbreed_transfer on resnet50, 23.7M). The estimate runs before any layer is allocated.
MAX_PARAMETERS = 500_000_000

# ImageNet-21k's 21,841 classes fit with room to spare; a head far wider than this is a typo
# (10**9 classes would be a 2048 x 10**9 matrix, 8 TB of float32).
MAX_CLASSES = 100_000


def _skip_input_checks() -> bool:
    """True while torch.fx or torch.export trace the model.

    Their inputs are proxies or fake tensors, and a traced graph cannot carry Python's
    isinstance/raise branches; the eager model checked the same shapes before it was traced.
    (TorchScript is handled at the call site: ``if not torch.jit.is_scripting()``.)
    """
    # Older torch has only the broader tests, which also skip the checks under torch.compile.
    is_fx = getattr(_symbolic_trace, "is_fx_symbolic_tracing", _symbolic_trace.is_fx_tracing)
    is_exporting = getattr(torch.compiler, "is_exporting", torch.compiler.is_compiling)
    return is_fx() or is_exporting()


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # older torch takes no device type
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


def _expected_input(channels: int, size: tuple[int, int] | None, multiple_of: int, min_size: int) -> str:
    if size is not None:
        return f"{channels}-channel {size[0]}x{size[1]} images (N, {channels}, {size[0]}, {size[1]})"
    rule = f"H and W multiples of {multiple_of}" if multiple_of > 1 else f"H and W >= {min_size}"
    return f"{channels}-channel images (N, {channels}, H, W) with {rule}"


def check_input(
    x: torch.Tensor,
    *,
    model: str,
    channels: int,
    size: tuple[int, int] | None = None,
    multiple_of: int = 1,
    min_size: int = 1,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Raise unless ``x`` is an (N, channels, H, W) batch the model accepts.

    ``size`` fixes H and W exactly; otherwise they must be at least ``min_size``
    and multiples of ``multiple_of``. ``dtype`` is the model's weights' dtype: a batch
    of another floating dtype is refused outside autocast, where convolution would fail
    with "Input type (double) and bias type (float) should be the same".
    """
    if _skip_input_checks():
        return
    expected = _expected_input(channels, size, multiple_of, min_size)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} expects a torch.Tensor of {expected}; got {type(x).__name__}.")
    if not _shape_fits(tuple(x.shape), channels, size, multiple_of, min_size):
        hint = (
            " Add a batch dimension with x.unsqueeze(0)."
            if x.dim() == 3
            else " Use imgzoo.data.transforms.for_model(model) to preprocess."
        )
        raise ValueError(f"{model} expects {expected}; got {tuple(x.shape)}.{hint}")
    _check_dtype(x, model, dtype)


def _shape_fits(
    shape: tuple[int, ...], channels: int, size: tuple[int, int] | None, multiple_of: int, min_size: int
) -> bool:
    if len(shape) != 4 or shape[1] != channels:
        return False
    if size is not None:
        return shape[2:] == tuple(size)
    return all(s >= min_size and s % multiple_of == 0 for s in shape[2:])


def _check_dtype(x: torch.Tensor, model: str, dtype: torch.dtype) -> None:
    if not x.is_floating_point():
        raise TypeError(
            f"{model} expects a floating-point tensor of normalised images; got dtype {x.dtype}. "
            f"Use imgzoo.data.transforms.for_model(model) to convert and normalise."
        )
    if x.dtype != dtype and not _autocast_on(x.device.type):
        raise TypeError(
            f"{model} has {dtype} weights and expects a {dtype} batch; got dtype {x.dtype}. "
            f"Convert the batch with x.to({dtype}), convert the model with model.to({x.dtype}), "
            f"or run it under torch.autocast for mixed precision."
        )


def check_num_classes(model: str, num_classes: Any) -> None:
    check_int(model, "num_classes", num_classes, high=MAX_CLASSES, why="ImageNet-21k has 21,841")


def check_int(model: str, name: str, value: Any, *, low: int = 1, high: int, why: str) -> None:
    """An int (not a bool, str or float) in [low, high]; ``why`` says where ``high`` comes from."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{model}: {name} must be an int from {low} to {high}; got {value!r} ({type(value).__name__}). "
            f"Pass a Python int, not a {type(value).__name__}."
        )
    if not low <= value <= high:
        raise ValueError(f"{model}: {name} must be from {low} to {high} ({why}); got {value!r}.")


def check_bool(model: str, name: str, value: Any) -> None:
    """Only True or False: ``bool("no")`` is True, so a string would silently mean yes."""
    if not isinstance(value, bool):
        raise TypeError(f"{model}: {name} must be True or False; got {value!r} ({type(value).__name__}).")


def check_dropout(model: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{model}: dropout must be a number in [0, 1); got {value!r} ({type(value).__name__}).")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{model}: dropout must be in [0, 1), the probability of zeroing a feature; got {value!r}.")


def check_choice(model: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{model}: {name} must be one of {tuple(choices)}, got {value!r}")


def check_parameter_budget(model: str, estimate: int, arguments: str) -> None:
    """Refuse a network of more than MAX_PARAMETERS before a single layer is allocated."""
    if estimate > MAX_PARAMETERS:
        raise ValueError(
            f"{model}: {arguments} would give about {estimate:,} parameters "
            f"({estimate * 4 / 2**30:.1f} GiB of float32 weights); imgzoo builds at most {MAX_PARAMETERS:,}. "
            f"Use a smaller depth, width or number of classes."
        )
