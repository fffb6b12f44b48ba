"""The checkpoint folder: model.safetensors, config.json (how to rebuild), README.md. Both may come from a stranger:
safetensors cannot run code (pickle can), every config field is checked, and the model is built on ``meta`` and
compared with the safetensors header first: no config makes the loader allocate more than the weights file holds."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from imgzoo._atomic import atomic_open, atomic_write_text
from imgzoo._version import __version__
from imgzoo.errors import CheckpointError, ChecksumError
from imgzoo.hub.card import _is_number, count_macs
from imgzoo.models._contract import pretrained_cfg
from imgzoo.models.registry import ARCH_ATTR, KWARGS_ATTR, SPEC_ATTR, DataSpec, ModelEntry, get_model_entry, list_models

WEIGHTS_NAME = "model.safetensors"
# How model.safetensors may store floating-point parameters: fp16 halves the file (and a download).
STORAGE_DTYPES = ("fp32", "fp16")
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1
# Pickle files other libraries publish, recognised only to explain their refusal: torch.load on one can run code.
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "checkpoint.pth", "model.ckpt")
# Prefixes wrappers add to every key: (Distributed)DataParallel, and torch.compile's OptimizedModule.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# The largest image side a data spec may ask for: 8x the largest inputs (1024 px); one image stays in megabytes.
MAX_IMAGE_SIDE = 8192
# ...and the most pixels, for size and for the resize before the crop: 1024x1024 is 21x the 224x224 of the largest
# shipped model, one float image of it 12 MB. A [2048, 2048] config made `imgzoo predict` of one PNG take 1.8 GB.
MAX_PIXELS = 1024 * 1024
# The most memory one layer's output may take for one image (measured on meta): 32x the shipped models' largest
# (dogbreed_transfer, 64x112x112 floats, 3.2 MB), so one image predicts in well under 1 GB whatever the config.
MAX_ACTIVATION_BYTES = 100 * 2**20
# The most weights (parameters and buffers) a checkpoint may hold: 2.7x dogbreed_transfer on resnet50 (23.8M), 256 MB
# in fp32. A convolution copies its weight for oneDNN as it runs, so predict of one image at these bounds peaked at
# 560 MB (one 63.9M weight at 80x80) and 618 MB (63.5M, a 100 MiB layer output); 99.4M in one tensor took 787 MB.
MAX_LOAD_WEIGHTS = 64_000_000
# The smallest std: normalising divides by it, and 1e-320 (positive, subnormal) makes every pixel infinite.
MIN_STD = 1e-6


class NewHeadWarning(UserWarning):
    """Weights were loaded into a model with a different num_classes, all but the classifier."""


def unwrap(model: nn.Module) -> nn.Module:
    """The imgzoo model inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def build_config(model: nn.Module, *, recipe: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                 storage_dtype: str = "fp32") -> dict[str, Any]:  # fmt: skip
    """How to rebuild ``model`` (builder name and kwargs: a function has no JSON-able ``__init__``) and metrics."""
    model = unwrap(model)
    missing = [a for a in (ARCH_ATTR, KWARGS_ATTR, SPEC_ATTR) if not hasattr(model, a)]
    if missing:
        raise TypeError(
            f"save() needs a model built by imgzoo (it carries {', '.join(missing)}); got "
            f"{type(model).__name__}. Build it with imgzoo.create_model(name, ...) or a registered builder."
        )
    spec: DataSpec = getattr(model, SPEC_ATTR)
    try:  # the module whose import registers the architecture: a loader without it is told which to import
        builder_module = get_model_entry(getattr(model, ARCH_ATTR)).builder.__module__
    except ValueError:  # built by a builder that was unregistered since
        builder_module = type(model).__module__
    config = {
        "format": "imgzoo",
        "format_version": FORMAT_VERSION,
        "imgzoo_version": __version__,
        "architecture": getattr(model, ARCH_ATTR),
        "builder_module": builder_module,
        "kwargs": dict(getattr(model, KWARGS_ATTR)),
        # timm's Hub format beside imgzoo's (which older imgzoo versions read): architecture, num_classes,
        # model_args and pretrained_cfg are what timm.create_model("hf-hub:org/repo") reads.
        "model_args": dict(getattr(model, KWARGS_ATTR)),
        "num_features": getattr(model, "num_features", None),
        "pretrained_cfg": pretrained_cfg(spec, getattr(model, ARCH_ATTR)),
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names) if spec.class_names is not None else None,
        "data_spec": spec.to_dict(),
        "num_params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model),  # per image at the DataSpec's size, for the model card
        "recipe": recipe,
        "metrics": metrics,
        "storage_dtype": storage_dtype,  # how model.safetensors stores the parameters; loading gives fp32
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
    """Read a config.json of :func:`build_config`; a bad field is a :class:`CheckpointError` naming file and field."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, or an integer of 4300+ digits
        raise CheckpointError(f"{path} is not valid JSON ({exc}); was it written by imgzoo.save()?") from exc
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}); re-download or re-save the checkpoint") from exc
    if not isinstance(config, dict) or config.get("format") != "imgzoo":
        timm = isinstance(config, dict) and "pretrained_cfg" in config  # timm's push_to_hf_hub wrote it
        arch = config.get("architecture") if timm else None
        hint = f" It is a timm checkpoint (architecture {arch!r}): load it with timm.create_model('hf-hub:org/repo')."
        raise CheckpointError(
            f'{path} is not an imgzoo config (no "format": "imgzoo"). imgzoo loads folders written by '
            f"imgzoo.save() or imgzoo.push_to_hub().{hint if timm else ''}"
        )
    version = config.get("format_version", FORMAT_VERSION)  # a config older than the field is format 1
    if not _is_int(version) or version < 1:
        raise _bad(path, "format_version", "a positive integer", version)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format {version}, newer than this imgzoo "
            f"({FORMAT_VERSION}); upgrade imgzoo (saved by {config.get('imgzoo_version')})."
        )
    for key in ("architecture", "kwargs", "data_spec"):
        if key not in config:
            raise CheckpointError(f"{path} lacks the {key!r} entry; expected keys of imgzoo.save()")
    for key, (test, expected) in _FIELDS.items():
        if key in config and not test(config[key]):
            raise _bad(path, key, expected, config[key])
    spec = _spec_from_config(config["data_spec"], path)
    # The three places a config states the classes must say the same thing.
    kwargs_classes = config["kwargs"].get("num_classes", spec.num_classes)
    for field, value in (("num_classes", config.get("num_classes")), ("kwargs.num_classes", kwargs_classes)):
        if value is not None and value != spec.num_classes:
            raise _bad(path, field, f"{spec.num_classes}, as data_spec.num_classes says", value)
    names = config.get("class_names")
    if names is not None and tuple(names) != spec.class_names:
        raise _bad(path, "class_names", f"the data_spec's class names {spec.class_names}", names)
    return config


def _bad(path: Path, field: str, expected: str, got: Any) -> CheckpointError:
    shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
    return CheckpointError(
        f"{path}: {field} must be {expected}; got {shown} ({type(got).__name__}). The file is damaged or was "
        f"not written by imgzoo.save(): re-download it, re-save the model, or correct that field."
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_names(value: Any) -> bool:
    """Class names that print as themselves: a newline or an ANSI escape in one would forge or wipe output lines."""
    return value is None or (isinstance(value, list) and all(isinstance(v, str) and v.isprintable() for v in value))


# The top-level fields and what each must hold: (test, what the error calls it).
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "imgzoo_version": (lambda v: v is None or isinstance(v, str), "a version string"),
    "architecture": (lambda v: isinstance(v, str) and bool(v), "a registered model name (a non-empty string)"),
    "builder_module": (lambda v: v is None or isinstance(v, str), "a module name (a string) or null"),
    "kwargs": (lambda v: isinstance(v, dict), "an object of builder keyword arguments"),
    "model_args": (lambda v: isinstance(v, dict), "an object of builder keyword arguments (timm's name)"),
    "num_features": (lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer or null"),
    "pretrained_cfg": (lambda v: isinstance(v, dict), "an object (timm's preprocessing and labels)"),
    "num_classes": (lambda v: v is None or (_is_int(v) and v >= 1), "a positive integer or null"),
    "class_names": (lambda v: _is_names(v), "a list of printable strings or null"),
    "data_spec": (lambda v: isinstance(v, dict), "an object (the model's DataSpec)"),
    "num_params": (lambda v: v is None or (_is_int(v) and v >= 0), "a parameter count (an integer >= 0)"),
    "macs": (lambda v: v is None or (_is_int(v) and v >= 0), "a count of multiply-accumulates (an integer >= 0)"),
    "recipe": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "metrics": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "storage_dtype": (lambda v: v in STORAGE_DTYPES, f"one of {list(STORAGE_DTYPES)}"),
}


# Each DataSpec field, its test (given the channel count, which mean and std must match) and its description.
_SPEC_FIELDS: dict[str, tuple[Callable[[Any, int], bool], str]] = {
    "name": (lambda v, c: isinstance(v, str), "a string"),
    "channels": (lambda v, c: _is_int(v) and v in (1, 3), "1 or 3"),
    "size": (
        lambda v, c: (
            isinstance(v, list)
            and len(v) == 2
            and all(_is_int(s) and 1 <= s <= MAX_IMAGE_SIDE for s in v)
            and v[0] * v[1] <= MAX_PIXELS
        ),
        f"[height, width], two integers from 1 to {MAX_IMAGE_SIDE} of at most {MAX_PIXELS} pixels in all",
    ),
    "mean": (lambda v, c: isinstance(v, list) and len(v) == c and all(map(_is_number, v)), "one number per channel"),
    "std": (
        lambda v, c: isinstance(v, list) and len(v) == c and all(_is_number(s) and s >= MIN_STD for s in v),
        f"one positive number per channel, each at least {MIN_STD:g}",
    ),
    "num_classes": (lambda v, c: _is_int(v) and v >= 1, "a positive integer"),
    "class_names": (lambda v, c: _is_names(v), "a list of printable strings or null"),
    "resize": (
        lambda v, c: v is None or (_is_int(v) and v >= 1 and v * v <= MAX_PIXELS),
        f"null or a side in pixels of at most {math.isqrt(MAX_PIXELS)}",
    ),
}
_REQUIRED_SPEC = ("name", "channels", "size", "mean", "std", "num_classes")


def _spec_from_config(data: dict[str, Any], path: Path) -> DataSpec:
    """The DataSpec of ``data``, each field checked so that a poisoned spec never reaches a transform."""
    unknown = sorted(set(data) - set(_SPEC_FIELDS))
    if unknown:
        raise _bad(path, "data_spec", f"an object with the fields {sorted(_SPEC_FIELDS)}", unknown)
    for key in _REQUIRED_SPEC:
        if key not in data:
            raise _bad(path, f"data_spec.{key}", "present (a DataSpec has it)", None)
    channels = data["channels"] if data["channels"] in (1, 3) else 0
    for key, (test, expected) in _SPEC_FIELDS.items():
        if key in data and not test(data[key], channels):
            if key in ("mean", "std"):
                expected = f"{expected} ({channels})"
            raise _bad(path, f"data_spec.{key}", expected, data[key])
    names = data.get("class_names")
    if names is not None and len(names) != data["num_classes"]:
        raise _bad(path, "data_spec.class_names", f"{data['num_classes']} names (data_spec.num_classes)", names)
    return DataSpec.from_dict(data)


def strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    """Remove wrapper prefixes (``module.``, ``_orig_mod.``, any nesting) that every key shares, and only those."""
    while state:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


_FP16_MAX = torch.finfo(torch.float16).max


def storage_state(model: nn.Module, storage_dtype: str = "fp32") -> dict[str, torch.Tensor]:
    """The tensors model.safetensors holds; ``"fp16"`` halves floating-point parameters, refusing any beyond range."""
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"save: dtype must be one of {list(STORAGE_DTYPES)}, got {storage_dtype!r}")
    model = unwrap(model)
    parameters = {name for name, _ in model.named_parameters()}
    state = {}
    # clone(): safetensors refuses tensors that share storage (e.g. views); these models cost nothing to copy.
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous().clone()
        # Buffers stay fp32: a few kilobytes, and a running variance under fp16's smallest normal (6e-5) is lost.
        if storage_dtype == "fp16" and name in parameters and tensor.is_floating_point():
            largest = float(tensor.abs().max()) if tensor.numel() else 0.0
            if not largest <= _FP16_MAX:
                raise ValueError(
                    f"save: {name} holds {largest:g}, beyond fp16's range (+-{_FP16_MAX:g}), so dtype='fp16' "
                    "would store it as infinity; save with dtype='fp32'"
                )
            tensor = tensor.to(torch.float16)
        state[name] = tensor
    return strip_prefixes(state)


def write_checkpoint(directory: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Write model.safetensors (``state``, from :func:`storage_state`) then config.json, each atomically."""
    # One metadata key only: safetensors 0.8 writes the map in hash order, so two keys would make the same
    # weights hash differently from one save to the next, and a weights entry's sha256 must be reproducible.
    with atomic_open(directory / WEIGHTS_NAME, "wb") as f:
        f.write(save(state, metadata={"format": "pt"}))
    atomic_write_text(directory / CONFIG_NAME, json.dumps(config, indent=2) + "\n")


# What a damaged or hostile safetensors file makes the reader raise (the Rust parser's, or Python's).
_UNREADABLE = (SafetensorError, OSError, ValueError, TypeError, RuntimeError, OverflowError)


def _read_safetensors(path: str | os.PathLike[str], like: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The (shape, dtype) of each tensor in a safetensors file (no tensor data read), without prefixes; with ``like``
    (the model's state_dict, which the file's names and shapes fit) the tensors themselves, in ``like``'s dtypes.
    Tensors that are not finite are refused: NaN weights would predict NaN for every image."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:  # the Rust reader checks offsets fit the file
            header = {key: f.get_slice(key) for key in f.keys()}  # noqa: SIM118
            header = {key: (tuple(v.get_shape()), v.get_dtype()) for key, v in header.items()}
        if like is None:
            return strip_prefixes(header)
        dtypes = {saved: like[name].dtype for name, saved in strip_prefixes({k: k for k in header}).items()}
        state = strip_prefixes(dict(_tensors(path, dtypes)))
    except _UNREADABLE as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); re-download or re-save it") from exc
    broken = [k for k, v in state.items() if v.is_floating_point() and not _finite(v)]
    if broken:
        raise CheckpointError(
            f"{path} holds NaN or infinite values in {len(broken)} tensor(s) ({_first_five(broken)}): the training "
            "that wrote it diverged. Load an earlier checkpoint, or train again with a lower learning rate."
        )
    return state


def _tensors(path: str | os.PathLike[str], dtypes: dict[str, torch.dtype]) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor of a safetensors file whose header safe_open has checked, read into its own memory and cast to
    ``dtypes[name]`` one at a time. Not safe_open's get_tensor: its memory map stays in the process's resident set
    (loading a 91 MB file that way peaked 49 MB higher than these reads, with each tensor dropped once read)."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        for name, entry in json.loads(f.read(length)).items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            data = torch.empty(end - begin, dtype=torch.uint8)
            f.seek(8 + length + begin)
            if f.readinto(data.numpy()) != end - begin:
                raise OSError(f"{name}'s data ends early: the file changed while it was read")
            yield name, data.view(_DTYPES[entry["dtype"]]).reshape(entry["shape"]).to(dtypes[name])


def _finite(tensor: torch.Tensor) -> bool:
    """In slices of 4 MB: torch.isfinite of a whole 103 MB tensor took 175 MB more (an abs() copy and masks)."""
    return all(torch.isfinite(part).all() for part in tensor.flatten().split(1 << 20))


# How safetensors names the dtypes of imgzoo's models' tensors.
_DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
                torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}  # fmt: skip
_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}


def load_checkpoint(config: dict[str, Any], weights: str | os.PathLike[str], *, source: str,
                    num_classes: int | None = None, class_names: list[str] | tuple[str, ...] | None = None,
                    **overrides: Any) -> nn.Module:  # fmt: skip
    """Rebuild ``config``'s model and load ``weights`` strictly; another ``num_classes`` replaces the head and warns,
    ``overrides`` replace builder kwargs that keep tensor shapes (e.g. dropout)."""
    if num_classes is not None and not (_is_int(num_classes) and num_classes >= 1):
        raise ValueError(f"num_classes must be a positive integer (the new head's outputs); got {num_classes!r}")
    entry = _model_entry(config, source)
    kwargs = _builder_kwargs(entry, config, overrides, source)
    spec = DataSpec.from_dict(config["data_spec"])
    new_head = num_classes is not None and num_classes != spec.num_classes
    meta_model = _build(entry, kwargs, source, meta=True)
    lacking = [m for m in ("get_classifier", "reset_classifier") if not callable(getattr(meta_model, m, None))]
    if new_head and lacking:
        raise TypeError(
            f"loading {entry.name} with another num_classes needs get_classifier() and "
            f"reset_classifier(num_classes) on {type(meta_model).__name__} (it lacks {', '.join(lacking)}); add "
            f"both methods, as imgzoo's models do (timm's contract, see docs/models.md)."
        )
    if new_head and "num_classes" not in inspect.signature(entry.builder).parameters:
        raise TypeError(
            f"{entry.name}'s builder takes no num_classes, so a model with another head could not be saved and "
            f"rebuilt; add a num_classes keyword argument to it."
        )
    _check_fits(meta_model, _read_safetensors(weights), source, config.get("storage_dtype"))
    _check_activations(meta_model, spec, source)
    _check_count(meta_model, weights)
    model = _build(entry, kwargs, source, meta=True)  # another: measuring left the first in eval mode
    state = _read_safetensors(weights, like=model.state_dict())  # fp16 storage comes back in the model's fp32
    try:
        model = _filled(model, state, lambda: _build(entry, kwargs, source, meta=False))
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied into the model's
        raise CheckpointError(f"the weights in {source} cannot be copied into {entry.name}: {exc}") from exc
    if new_head:  # a fresh head; the data spec and kwargs follow, so the model saves as what it now is
        kept = len(state) - len(model.get_classifier().state_dict())
        model.reset_classifier(num_classes)
        setattr(model, KWARGS_ATTR, {**getattr(model, KWARGS_ATTR), "num_classes": num_classes})
        warnings.warn(
            f"{source}: loaded {kept} tensors but NOT the classifier (the checkpoint has {spec.num_classes} classes, "
            f"the model {num_classes}); the classifier is freshly initialised: fine-tune it before use.",
            NewHeadWarning,
            stacklevel=_first_frame_outside_imgzoo(),
        )
    if new_head or class_names is not None:
        spec = spec.with_classes(num_classes if new_head else spec.num_classes, class_names)
    setattr(model, SPEC_ATTR, spec)
    return model


def _model_entry(config: dict[str, Any], source: str) -> ModelEntry:
    """The config's registry entry, or an error naming the import it needs: a downloaded config must not run code."""
    arch = config["architecture"]
    if arch in list_models():
        return get_model_entry(arch)
    module = config.get("builder_module")
    hint = (
        f"it was registered by the module {module!r} when saved: `import {module}` first, then load again"
        if module
        else "import the module that registers it (the one with its @register_model builder) first, then load again"
    )
    raise CheckpointError(
        f"{source} holds a {arch!r} checkpoint, but no model {arch!r} is registered in this process; {hint}. "
        f"Registered: {', '.join(list_models())}."
    )


def _builder_kwargs(entry: ModelEntry, config: dict[str, Any], overrides: dict[str, Any], source: str) -> dict:
    """The saved kwargs with ``overrides`` applied, each name checked against the builder's signature."""
    accepted = set(inspect.signature(entry.builder).parameters)
    for origin, names in (("config.json's kwargs", config["kwargs"]), ("keyword arguments", overrides)):
        unknown = sorted(set(names) - accepted)
        if unknown:
            raise CheckpointError(
                f"{source}: {origin} {unknown} are not arguments of {entry.name}, which takes {sorted(accepted)}; "
                f"the checkpoint was saved by another version of the model, or the names are misspelt."
            )
    # JSON has no tuples: give back the type of the builder's default (e.g. widths=(64, 256, 256)).
    saved = {k: tuple(v) if isinstance(v, list) and isinstance(entry.default_kwargs.get(k), tuple) else v
             for k, v in config["kwargs"].items()}  # fmt: skip
    kwargs = {**saved, **overrides}
    # A builder's `weights` only says where initial weights come from: the checkpoint replaces them all.
    if "weights" in entry.default_kwargs and "weights" not in overrides:
        kwargs["weights"] = None
    return kwargs


def _build(entry: ModelEntry, kwargs: dict[str, Any], source: str, *, meta: bool) -> nn.Module:
    """``entry.builder(**kwargs)``, on the ``meta`` device if asked; a refusal names the checkpoint."""
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            return entry.builder(**kwargs)
    except (TypeError, ValueError, RuntimeError, OverflowError, NotImplementedError) as exc:
        where = " on the meta device (shapes only, to compare with the weights before allocating)" if meta else ""
        raise CheckpointError(
            f"{source}: {entry.name} could not be built{where} from the kwargs its config.json gives "
            f"({type(exc).__name__}: {exc}); the config is damaged or was written for another version of "
            f"{entry.name}."
        ) from exc


def _check_fits(model: nn.Module, header: dict[str, tuple], source: str, storage: str | None = "fp32") -> None:
    """Compare the (meta) model's tensors with the file's header (shapes and dtypes), naming every key that differs:
    copying I32, bool or float8 bytes into a float32 model would reinterpret them as other numbers."""
    state = model.state_dict()
    expected = {k: (tuple(v.shape), _DTYPE_NAMES.get(v.dtype, str(v.dtype))) for k, v in state.items()}
    if storage == "fp16":  # the floating-point parameters are stored in half precision
        names = {name for name, _ in model.named_parameters()}
        expected |= {k: (shape, "F16") for k, (shape, dtype) in expected.items() if k in names and dtype == "F32"}
    shared = sorted(set(header) & set(expected))
    found = {"missing": sorted(set(expected) - set(header)), "unexpected": sorted(set(header) - set(expected))}
    for i, label in enumerate(("different shapes", "other dtypes")):  # both hold (shape, dtype) per key
        differ = [k for k in shared if header[k][i] != expected[k][i]]
        found[label] = [f"{k}: checkpoint {header[k][i]} vs model {expected[k][i]}" for k in differ]
    problems = [f"{len(items)} {label} ({_first_five(items)})" for label, items in found.items() if items]
    if problems:
        raise CheckpointError(
            f"the weights in {source} do not fit {getattr(model, ARCH_ATTR)}({getattr(model, KWARGS_ATTR)}): "
            f"{'; '.join(problems)}. Load without overriding architecture kwargs, or check that the "
            f"checkpoint's config.json belongs to its model.safetensors. Nothing was allocated for it."
        )


def _check_count(model: nn.Module, weights: str | os.PathLike[str]) -> None:
    """Refuse a (meta) model of more than MAX_LOAD_WEIGHTS weights before any is read: held in memory as predict
    runs, with the layer outputs MAX_ACTIVATION_BYTES allows, they must stay under 1 GB (docs/security.md)."""
    count = sum(t.numel() for t in model.state_dict().values())
    if count > MAX_LOAD_WEIGHTS:
        raise CheckpointError(
            f"{weights} holds {count:,} weights (parameters and buffers) for {getattr(model, ARCH_ATTR)}, over the "
            f"{MAX_LOAD_WEIGHTS:,} imgzoo loads, so that predicting one image stays under 1 GB of memory. If the "
            "model is yours and meant to be that large, build it with imgzoo.create_model(...) and fill it with "
            "model.load_state_dict(safetensors.torch.load_file(path)); nothing was read."
        )


def _filled(model: nn.Module, state: dict[str, torch.Tensor], build: Callable[[], nn.Module]) -> nn.Module:
    """The meta ``model`` holding ``state``'s tensors themselves: no random initialisation, no second copy. A model
    whose state_dict does not hold each of its tensors once (a non-persistent buffer its builder computes, a tied
    weight) is built for real instead, and ``state`` copied into it: twice the memory, but nothing left on meta."""
    saved = [id(t) for t in model.state_dict(keep_vars=True).values()]
    if len(set(saved)) == len(saved) == len({id(t) for t in [*model.parameters(), *model.buffers()]}):
        model.load_state_dict(state, strict=True, assign=True)
        return model
    model = build()
    model.load_state_dict(state, strict=True)
    return model


def _check_activations(model: nn.Module, spec: DataSpec, source: str) -> None:
    """Refuse a config whose model would need more than MAX_ACTIVATION_BYTES for one layer's output on one image
    (a tiny file can ask for 4096 channels at 1024x1024): measured by a forward pass on ``meta``, which allocates
    nothing. A model that cannot run on meta is not measured (its builder's own checks are all there is)."""
    largest = 0

    def measure(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    handles = [m.register_forward_hook(measure) for m in model.modules()]
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, *spec.input_shape, device="meta"))
    except NotImplementedError:  # an op without a meta kernel
        return
    except (RuntimeError, ValueError, TypeError) as exc:
        if "meta" in str(exc).lower():  # an op that reads tensor values (.item()): not measurable here
            return
        raise CheckpointError(  # e.g. a Linear sized for 28x28 inputs: predict would fail after allocating
            f"{source}: {getattr(model, ARCH_ATTR)}({getattr(model, KWARGS_ATTR)}) cannot take an image of its "
            f"config's data_spec size {list(spec.size)} ({type(exc).__name__}: {exc}); the config is damaged."
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    if largest > MAX_ACTIVATION_BYTES:
        raise CheckpointError(
            f"{source}: {getattr(model, ARCH_ATTR)}({getattr(model, KWARGS_ATTR)}) at the config's image size "
            f"{list(spec.size)} needs {largest / 2**20:.0f} MiB for one layer's output on one image, over the "
            f"{MAX_ACTIVATION_BYTES // 2**20} MiB imgzoo allows; the config is damaged or not for small images. "
            "Nothing was allocated for it."
        )


def _first_five(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def _first_frame_outside_imgzoo() -> int:
    """The ``stacklevel`` of the user's line: load and create_model warn from different depths."""
    package = str(Path(__file__).resolve().parent)
    frame, level = sys._getframe(2), 2  # level 1 is the function that warns; 2 is its caller
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


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
