"""The on-disk checkpoint format, the same for a local folder and a Hub repository.

A checkpoint is a folder holding::

    model.safetensors   the state dict; safetensors cannot run code when read, unlike pickle
    config.json         how to rebuild the model: architecture, builder kwargs, data spec, metrics
    README.md           the model card (written by imgzoo.model_card)

This module reads and writes the first two and decides which tensors a model accepts.
It knows nothing of the network; imgzoo.hub fetches the files and calls it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from imgzoo._atomic import atomic_open, atomic_write_text
from imgzoo._version import __version__
from imgzoo.registry import ARCH_ATTR, KWARGS_ATTR, SPEC_ATTR, DataSpec, get_model_entry

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "PICKLE_NAMES",
    "WEIGHTS_NAME",
    "CheckpointError",
    "ChecksumError",
    "NewHeadWarning",
    "build_config",
    "build_model",
    "load_weights",
    "read_config",
    "read_state_dict",
    "sha256_of",
    "strip_prefixes",
    "unwrap",
    "verify_sha256",
    "write_checkpoint",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
# Pickle-based files that other libraries publish. They are recognised only to explain
# why they are refused: torch.load on a downloaded pickle can run arbitrary code.
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "checkpoint.pth", "model.ckpt")
# Prefixes that wrappers add to every key: nn.DataParallel / DistributedDataParallel
# ("module.") and torch.compile's OptimizedModule ("_orig_mod.").
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
CLASSIFIER_PREFIX = "classifier."


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the requested model, with the reason and the fix."""


class NewHeadWarning(UserWarning):
    """Weights were loaded into a model with a different num_classes, all but the classifier."""


class ChecksumError(CheckpointError):
    """A weights file whose sha256 differs from the one its weights entry records."""


def unwrap(model: nn.Module) -> nn.Module:
    """The imgzoo model inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


# --- config.json ---------------------------------------------------------------------------------


def build_config(
    model: nn.Module, *, recipe: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything needed to rebuild ``model`` and to know what it was trained for.

    A function-built model has no JSON-able ``__init__``, so the config records the
    registered builder's name and its full keyword arguments instead (the registry
    attaches both to every model it builds).
    """

    model = unwrap(model)
    missing = [a for a in (ARCH_ATTR, KWARGS_ATTR, SPEC_ATTR) if not hasattr(model, a)]
    if missing:
        raise TypeError(
            f"save() needs a model built by imgzoo (it carries {', '.join(missing)}); got "
            f"{type(model).__name__}. Build it with imgzoo.create_model(name, ...) or a registered builder."
        )
    spec: DataSpec = getattr(model, SPEC_ATTR)
    config = {
        "format": "imgzoo",
        "format_version": FORMAT_VERSION,
        "imgzoo_version": __version__,
        "architecture": getattr(model, ARCH_ATTR),
        "kwargs": dict(getattr(model, KWARGS_ATTR)),
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names) if spec.class_names is not None else None,
        "data_spec": spec.to_dict(),
        "num_params": sum(p.numel() for p in model.parameters()),
        "recipe": recipe,
        "metrics": metrics,
    }
    try:
        json.dumps(config, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"config.json must be plain JSON (str, numbers, lists, dicts, None; finite floats): {exc}. "
            f"Check the model's builder kwargs {config['kwargs']}, recipe and metrics."
        ) from exc
    return config


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a config.json written by :func:`build_config`."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); was it written by imgzoo.save()?") from exc
    if not isinstance(config, dict) or config.get("format") != "imgzoo":
        raise CheckpointError(
            f'{path} is not an imgzoo config (no "format": "imgzoo"). imgzoo loads folders written by '
            f"imgzoo.save() or imgzoo.push_to_hub()."
        )
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {config['format_version']}, newer than this imgzoo "
            f"({FORMAT_VERSION}); upgrade imgzoo (saved by {config.get('imgzoo_version')})."
        )
    for key in ("architecture", "kwargs", "data_spec"):
        if key not in config:
            raise CheckpointError(f"{path} lacks the {key!r} entry; expected keys of imgzoo.save()")
    return config


def build_model(
    config: dict[str, Any],
    *,
    num_classes: int | None = None,
    class_names: list[str] | tuple[str, ...] | None = None,
    **overrides: Any,
) -> tuple[nn.Module, bool]:
    """Rebuild the architecture of ``config``; returns the model and whether its head is new.

    ``overrides`` replace builder kwargs that do not change tensor shapes (e.g. dropout).
    A builder's ``weights`` argument only says where initial weights come from; the
    checkpoint replaces them all, so it is rebuilt with ``weights=None`` and never
    reaches for a download.
    """
    entry = get_model_entry(config["architecture"])
    # JSON has no tuples: give back the type of the builder's default (e.g. widths=(64, 256, 256)).
    saved = {
        k: tuple(v) if isinstance(v, list) and isinstance(entry.default_kwargs.get(k), tuple) else v
        for k, v in config["kwargs"].items()
    }
    kwargs = {**saved, **overrides}
    if "weights" in entry.default_kwargs and "weights" not in overrides:
        kwargs["weights"] = None
    saved_classes = int(config.get("num_classes") or config["data_spec"]["num_classes"])
    new_head = num_classes is not None and num_classes != saved_classes
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = entry.builder(**kwargs)
    spec = DataSpec.from_dict(config["data_spec"])
    if new_head or class_names is not None:
        spec = spec.with_classes(num_classes or saved_classes, class_names)
    setattr(model, SPEC_ATTR, spec)
    return model, new_head


# --- model.safetensors ---------------------------------------------------------------------------


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes that every key carries (``module.``, ``_orig_mod.``, in any nesting).

    A prefix is stripped only when all keys share it, so a model with a submodule that
    happens to be called ``module`` keeps its names.
    """
    while state:
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                break
        else:
            return state
    return state


def write_checkpoint(model: nn.Module, directory: Path, config: dict[str, Any]) -> None:
    """Write model.safetensors then config.json into ``directory``, each atomically."""
    model = unwrap(model)
    # clone(): safetensors refuses tensors that share storage (e.g. views); a checkpoint
    # the size of these models costs nothing to copy.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in strip_prefixes(model.state_dict()).items()}
    # One metadata key only: safetensors writes the metadata map in hash order, so two keys
    # would make the same weights hash differently from one save to the next (seen with
    # safetensors 0.8), and a weights entry's sha256 must be reproducible. config.json names
    # the architecture.
    metadata = {"format": "pt"}
    with atomic_open(directory / WEIGHTS_NAME, "wb") as f:
        f.write(save(state, metadata=metadata))
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, with wrapper prefixes removed."""
    try:
        return strip_prefixes(load_file(str(path), device="cpu"))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); re-download or re-save it") from exc


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, new_head: bool, source: str) -> None:
    """Load ``state`` strictly; with ``new_head`` load everything except ``classifier.*``.

    The comparison is done before ``load_state_dict`` so that the error can name the
    keys and shapes that differ, and so that nothing is copied into a model that will
    be rejected.
    """
    expected = model.state_dict()
    saved_head = state.get(CLASSIFIER_PREFIX + "weight")
    if new_head:
        state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIX)}
        expected = {k: v for k, v in expected.items() if not k.startswith(CLASSIFIER_PREFIX)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or reshaped:
        arch = getattr(model, ARCH_ATTR, type(model).__name__)
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("different shapes", reshaped)):
            if items:
                shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
                problems.append(f"{len(items)} {label} ({shown})")
        raise CheckpointError(
            f"the weights in {source} do not fit {arch}({getattr(model, KWARGS_ATTR, {})}): "
            f"{'; '.join(problems)}. Load without overriding architecture kwargs, or check that the "
            f"checkpoint's config.json belongs to its model.safetensors."
        )
    model.load_state_dict(state, strict=not new_head)
    if new_head:
        saved = saved_head.shape[0] if saved_head is not None else "?"
        warnings.warn(
            f"{source}: loaded {len(state)} tensors but NOT the classifier (the checkpoint has {saved} classes, "
            f"the model {model.classifier.out_features}); the classifier is freshly initialised: fine-tune it "
            f"before use.",
            NewHeadWarning,
            stacklevel=_first_frame_outside_imgzoo(),
        )


def _first_frame_outside_imgzoo() -> int:
    """The ``stacklevel`` that points a warning at the user's line, however deep inside imgzoo it starts.

    ``imgzoo.load`` and ``imgzoo.create_model(pretrained=...)`` reach the warning through
    different numbers of imgzoo frames; a fixed stacklevel would blame imgzoo for one of them.
    """
    package = str(Path(__file__).resolve().parent)
    frame, level = sys._getframe(2), 2  # level 1 is load_weights, which warns; 2 is its caller
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


# --- sha256 --------------------------------------------------------------------------------------


def sha256_of(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike[str], expected: str, *, name: str, refetch: str) -> None:
    """Raise :class:`ChecksumError` unless the file's sha256 is ``expected``."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"sha256 mismatch for {name}: expected {expected.lower()}, got {actual} ({path}). The file is "
            f"corrupted or was replaced; nothing was loaded. Fetch it again with `{refetch}`."
        )
