"""Export to ONNX (the torch.export-based exporter: the old one traces) or TorchScript, with preprocessing as JSON
metadata; the file is written only if the runtime serving it gives PyTorch's logits within ``TOLERANCE``."""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import os
import warnings
import zipfile
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch
from torch import nn

from imgzoo._atomic import atomic_open
from imgzoo._version import __version__
from imgzoo.eval.evaluation import _borrowed

FORMATS = ("onnx", "torchscript")
# fp32 logits of the same graph in two runtimes differ by summation order only: ~1e-6 for these
# models (docs/export.md lists the measured values); 1e-4 leaves room and still catches a wrong op.
TOLERANCE = 1e-4
INPUT_NAME, OUTPUT_NAME = "images", "logits"
METADATA_FILE = "imgzoo.json"  # the TorchScript archive's extra file holding the same metadata
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # exporter, its op library, the checking runtime


class ExportError(RuntimeError):
    """The exporter failed, or the exported file's outputs differ from the model's."""


def export_model(
    model: nn.Module, path: str | os.PathLike[str], *, format: str, sample: torch.Tensor | None = None
) -> float:
    """Write ``model`` to ``path`` as ``format`` (dynamic batch); return the max abs difference of its CPU logits
    from PyTorch's on ``sample`` (default: two seeded random images). Over ``TOLERANCE``: ExportError, no file."""
    if format not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}; got {format!r}. Pick one of those.")
    for name in ONNX_PACKAGES if format == "onnx" else ():  # fail before minutes of exporting, not after
        _import(name)
    sample = _sample(model, sample)
    metadata = _metadata(model)
    with _borrowed_on_cpu(model) as cpu_model, torch.no_grad():
        expected = cpu_model(sample)
        example = sample if len(sample) > 1 else torch.cat([sample, sample])  # see _onnx_bytes
        export = _onnx_bytes if format == "onnx" else _torchscript_bytes
        data = export(cpu_model, example, metadata)
    got = _run_onnx(data, sample) if format == "onnx" else _run_torchscript(data, sample)
    difference = (got - expected).abs().max().item()
    if not difference <= TOLERANCE:  # `not <=` so that a NaN fails too
        raise ExportError(
            f"the {format} export of {metadata.get('architecture', type(model).__name__)} gives logits up to "
            f"{difference:.3g} away from PyTorch's (tolerance {TOLERANCE:g}); {path} was not written. "
            f"Try the other format, and report the model and torch version if the difference persists."
        )
    with atomic_open(path) as f:
        f.write(data)
    return difference


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata :func:`export_model` wrote into an ONNX or TorchScript file (a zip archive), from JSON."""
    if zipfile.is_zipfile(path):
        files = {METADATA_FILE: ""}
        with _quiet_torchscript():
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        return json.loads(files[METADATA_FILE]) if files[METADATA_FILE] else {}
    onnx = _import("onnx")
    found = {}
    for prop in onnx.load(str(path), load_external_data=False).metadata_props:
        try:
            found[prop.key] = json.loads(prop.value)
        except json.JSONDecodeError:  # another producer's text is kept as it is
            found[prop.key] = prop.value
    return found


def _first_line(exc: BaseException) -> str:
    """An exporter's error names the type and its first line; the rest is a stack of its internals."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _sample(model: nn.Module, sample: torch.Tensor | None) -> torch.Tensor:
    """The caller's batch, or two seeded random images: the same model always measures the same difference."""
    if sample is None:
        spec = getattr(model, "data_spec", None)
        if spec is None:
            raise ValueError(f"export_model needs a sample batch for a {type(model).__name__}, which has no data_spec; "
                             "pass sample=torch.randn(2, C, H, W) in the shape the model takes.")  # fmt: skip
        return torch.randn(2, *spec.input_shape, generator=torch.Generator().manual_seed(0))
    if not isinstance(sample, torch.Tensor) or sample.dim() != 4 or sample.dtype != torch.float32 or not len(sample):
        got = f"{sample.dtype} tensor of shape {tuple(sample.shape)}" if isinstance(sample, torch.Tensor) else sample
        raise ValueError(
            f"export_model's sample must be a float32 batch (N, C, H, W) of preprocessed images; got {got}. "
            "Leave it out to use random images of the model's input shape."
        )
    return sample.detach().cpu()


def _metadata(model: nn.Module) -> dict[str, Any]:
    """What a runtime needs besides the graph: preprocessing, label names, and where the model came from."""
    found: dict[str, Any] = {"producer": f"imgzoo {__version__}"}
    if getattr(model, "imgzoo_arch", None):
        found["architecture"] = model.imgzoo_arch
    spec = getattr(model, "data_spec", None)
    if spec is not None:
        names = list(spec.class_names) if spec.class_names else [str(i) for i in range(spec.num_classes)]
        found.update(input_shape=list(spec.input_shape), mean=list(spec.mean), std=list(spec.std), class_names=names,
                     resize=spec.resize, data_spec=spec.to_dict())  # fmt: skip
    return found


@contextlib.contextmanager
def _borrowed_on_cpu(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in fp32 eval mode on the CPU (a GPU model copied: TF32 would differ), modes put back after."""
    dtypes = {p.dtype for p in model.parameters()} | {b.dtype for b in model.buffers() if b.is_floating_point()}
    if dtypes - {torch.float32}:
        raise ValueError(
            f"export_model exports float32 models; this one has {sorted(map(str, dtypes))} tensors. "
            "Export model.float(): ONNX Runtime and TorchScript then compute what PyTorch computes."
        )
    on_cpu = all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    with _borrowed(model if on_cpu else copy.deepcopy(model).cpu(), torch.device("cpu")) as target:
        yield target


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"ONNX export needs the {name} package, which is not installed; install it with "
                          'pip install "imgzoo[export]"') from exc  # fmt: skip


def _onnx_bytes(model: nn.Module, example: torch.Tensor, metadata: dict[str, Any]) -> bytes:
    """The ONNX bytes, dynamic batch (``example`` has 2+ images: torch.export fixes a size-1 dimension)."""
    batch = torch.export.Dim("batch", min=1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals say nothing to a user
            names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "verbose": False}
            program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},), **names)
    except Exception as exc:  # torch.onnx raises several unrelated types; they all mean the same here
        raise ExportError(
            f"torch.onnx.export could not export {type(model).__name__} ({_first_line(exc)}). Try format='torchscript'."
        ) from exc
    proto = program.model_proto
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto.SerializeToString()


def _run_onnx(data: bytes, sample: torch.Tensor) -> torch.Tensor:
    ort = _import("onnxruntime")
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors are its own pybind types, none a Python built-in
        raise ExportError(f"ONNX Runtime {ort.__version__} cannot run the exported graph ({_first_line(exc)}). "
                          "Upgrade onnxruntime, or try format='torchscript'.") from exc  # fmt: skip
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: sample.numpy()})
    return torch.from_numpy(logits)


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """torch >= 2.9 marks torch.jit deprecated on every call; it still ships, and docs/export.md says so once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit")
        yield


def _torchscript_bytes(model: nn.Module, example: torch.Tensor, metadata: dict[str, Any]) -> bytes:
    """The archive with ``metadata``; scripted (all built-in families are), else traced on ``example`` and warned."""
    with _quiet_torchscript():
        try:
            compiled = torch.jit.script(model)
        except Exception as exc:  # the TorchScript frontend raises many types for the same thing
            warnings.warn(f"torch.jit.script could not compile {type(model).__name__} ({_first_line(exc)}); "
                          "tracing it instead, which freezes its Python branches to the path the sample took. "
                          "format='onnx' captures the model with torch.export instead.",
                          stacklevel=3)  # fmt: skip
            try:  # export_model compares the outputs itself
                compiled = torch.jit.trace(model, example, check_trace=False)
            except Exception as exc:
                raise ExportError(
                    f"TorchScript could neither script nor trace {type(model).__name__} ({_first_line(exc)}). "
                    "Try format='onnx'."
                ) from exc
        buffer = io.BytesIO()
        torch.jit.save(compiled, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
    return buffer.getvalue()


def _run_torchscript(data: bytes, sample: torch.Tensor) -> torch.Tensor:
    with _quiet_torchscript():
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.no_grad():
        return loaded(sample)
