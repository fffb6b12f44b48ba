"""Checks shared by the model families: a wrong batch or builder argument fails with a sentence naming the model,
what it expected and what came, not with a shape error three layers deep or an 8 TB allocation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.fx import _symbolic_trace

# A backstop for arguments each in bounds but not together (resnet_cifar depth=1202 width=16: ~4.9G parameters).
# 500M float32 parameters are 8 GB with gradients and Adam's moments, 20x dogbreed_transfer on resnet50 (23.7M).
MAX_PARAMETERS = 500_000_000
# ImageNet-21k's 21,841 classes fit; 10**9 classes would be an 8 TB head.
MAX_CLASSES = 100_000
PREPROCESS = "Use imgzoo.data.transforms.for_model(model) to preprocess (convert and normalise)."


def _skip_input_checks() -> bool:
    """True while torch.fx or torch.export trace: their proxies cannot take Python's raise branches."""
    # torch < 2.4 has only the broader tests, which also skip the checks under torch.compile.
    is_fx = getattr(_symbolic_trace, "is_fx_symbolic_tracing", _symbolic_trace.is_fx_tracing)
    return is_fx() or getattr(torch.compiler, "is_exporting", torch.compiler.is_compiling)()


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()


def check_input(x: torch.Tensor, *, model: str, channels: int, size: tuple[int, int] | None = None,
                multiple_of: int = 1, min_size: int = 1, dtype: torch.dtype = torch.float32) -> None:  # fmt: skip
    """Raise unless ``x`` is an (N, channels, H, W) batch of ``dtype`` (any float under autocast) whose H and W are
    ``size``, or at least ``min_size`` and multiples of ``multiple_of``."""
    if _skip_input_checks():
        return
    if size is not None:
        expected = f"{channels}-channel {size[0]}x{size[1]} images (N, {channels}, {size[0]}, {size[1]})"
    else:
        rule = f"H and W multiples of {multiple_of}" if multiple_of > 1 else f"H and W >= {min_size}"
        expected = f"{channels}-channel images (N, {channels}, H, W) with {rule}"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} expects a torch.Tensor of {expected}; got {type(x).__name__}.")
    shape, sides = tuple(x.shape), tuple(x.shape[2:])
    sides_fit = sides == tuple(size) if size is not None else all(s >= min_size and s % multiple_of == 0 for s in sides)
    if not (len(shape) == 4 and shape[1] == channels and sides_fit):
        hint = "Add a batch dimension with x.unsqueeze(0)." if x.dim() == 3 else PREPROCESS
        raise ValueError(f"{model} expects {expected}; got {shape}. {hint}")
    if not x.is_floating_point():
        raise TypeError(
            f"{model} expects a floating-point tensor of normalised images; got dtype {x.dtype}. {PREPROCESS}"
        )
    if x.dtype != dtype and not _autocast_on(x.device.type):  # or the convolution fails on "Input type (double)"
        raise TypeError(
            f"{model} has {dtype} weights and expects a {dtype} batch; got dtype {x.dtype}. Convert the batch with "
            f"x.to({dtype}), convert the model with model.to({x.dtype}), or run it under torch.autocast for mixed "
            "precision."
        )


def check_int(model: str, name: str, value: Any, *, low: int = 1, high: int, why: str) -> None:
    """An int (not a bool, str or float) in [low, high]; ``why`` says where ``high`` comes from."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{model}: {name} must be an int from {low} to {high}; got {value!r} ({type(value).__name__}).")
    if not low <= value <= high:
        raise ValueError(f"{model}: {name} must be from {low} to {high} ({why}); got {value!r}.")


def check_num_classes(model: str, num_classes: Any) -> None:
    check_int(model, "num_classes", num_classes, high=MAX_CLASSES, why="ImageNet-21k has 21,841")


def check_bools(model: str, **values: Any) -> None:
    """Only True or False: ``bool("no")`` is True, so a string would silently mean yes."""
    for name, value in values.items():
        if not isinstance(value, bool):
            raise TypeError(f"{model}: {name} must be True or False; got {value!r} ({type(value).__name__}).")


def check_fraction(model: str, name: str, value: Any, meaning: str, *, closed: str = "(]") -> None:
    """A number in (0, 1] (``closed="(]"``) or [0, 1) (``closed="[)"``); ``meaning`` says what it is."""
    interval = "(0, 1]" if closed == "(]" else "[0, 1)"
    expected = f"{model}: {name} must be a number in {interval} ({meaning}); got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{expected} ({type(value).__name__}).")
    if not (0.0 < value <= 1.0 if closed == "(]" else 0.0 <= value < 1.0):
        raise ValueError(f"{expected}.")


def check_dropout(model: str, value: Any) -> None:
    check_fraction(model, "dropout", value, "the probability of zeroing a feature", closed="[)")


def check_choice(model: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{model}: {name} must be one of {tuple(choices)}, got {value!r}")


def check_parameter_budget(model: str, estimate: int, arguments: str) -> None:
    """Refuse a network of more than MAX_PARAMETERS before a single layer is allocated."""
    if estimate > MAX_PARAMETERS:
        raise ValueError(
            f"{model}: {arguments} would give about {estimate:,} parameters ({estimate * 4 / 2**30:.1f} GiB of "
            f"float32 weights); imgzoo builds at most {MAX_PARAMETERS:,}. Use a smaller depth, width or number of "
            "classes."
        )
