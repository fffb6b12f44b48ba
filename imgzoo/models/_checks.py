"""Input validation shared by the model families.

A wrong-shaped batch should fail with a sentence that names the model, what it
expected and what it got, not with a conv-layer shape error three calls deep.
"""

from __future__ import annotations

import torch


def check_input(
    x: torch.Tensor,
    *,
    model: str,
    channels: int,
    size: tuple[int, int] | None = None,
    multiple_of: int = 1,
    min_size: int = 1,
) -> None:
    """Raise ValueError unless ``x`` is an (N, channels, H, W) batch the model accepts.

    ``size`` fixes H and W exactly; otherwise they must be at least ``min_size``
    and multiples of ``multiple_of``.
    """
    if size is not None:
        expected = f"{channels}-channel {size[0]}x{size[1]} images (N, {channels}, {size[0]}, {size[1]})"
    else:
        rule = f"H and W multiples of {multiple_of}" if multiple_of > 1 else f"H and W >= {min_size}"
        expected = f"{channels}-channel images (N, {channels}, H, W) with {rule}"
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{model} expects a torch.Tensor of {expected}; got {type(x).__name__}.")
    shape = tuple(x.shape)
    bad = x.dim() != 4 or shape[1] != channels
    if not bad and size is not None:
        bad = shape[2:] != tuple(size)
    elif not bad:
        bad = any(s < min_size or s % multiple_of for s in shape[2:])
    if bad:
        hint = (
            " Add a batch dimension with x.unsqueeze(0)."
            if x.dim() == 3
            else " Use imgzoo.transforms.for_model(model) to preprocess."
        )
        raise ValueError(f"{model} expects {expected}; got {shape}.{hint}")
    if not x.is_floating_point():
        raise TypeError(
            f"{model} expects a floating-point tensor of normalised images; got dtype {x.dtype}. "
            f"Use imgzoo.transforms.for_model(model) to convert and normalise."
        )


def check_num_classes(model: str, num_classes: int) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"{model}: num_classes must be a positive integer, got {num_classes!r}")
