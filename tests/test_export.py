"""ONNX and TorchScript export: the files compute the eager model's logits, carry its preprocessing,
and leave the model as it was; bad requests are refused before any work.

Each family is exported once per format (module-scoped fixtures): torch.onnx's exporter takes
several seconds per model on a small CPU, most of it building its operator table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import imgzoo
from imgzoo.cli.main import main
from imgzoo.hub import export
from imgzoo.hub.export import TOLERANCE, ExportError, export_model, read_metadata

ort = pytest.importorskip("onnxruntime")  # in the dev and export extras

ROOT = Path(__file__).resolve().parent.parent

# Every built-in family, small: the ONNX exporter's time grows with the graph. resnet_cifar at depth 8
# has every kind of block depth 20 has; dogbreed_transfer on its smallest backbone and with random
# weights, so nothing is downloaded. docs/export.md gives the differences measured at the defaults.
FAMILIES = {
    "mnist_cnn": {},
    "basic_cnn": {},
    "resnet_cifar": {"depth": 8},
    "dogbreed_transfer": {"backbone": "resnet18", "weights": None},
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return imgzoo.create_model(name, **FAMILIES[name])  # in train mode, as create_model returns it


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    before = modes(model)
    model.eval()
    with torch.no_grad():
        out = model(x)
    for module, training in zip(model.modules(), before, strict=True):
        module.training = training
    return out


def batch(model: nn.Module, n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, *model.data_spec.input_shape, generator=torch.Generator().manual_seed(seed))


class Exported:
    """A model, its modes before export, the file, and the difference export_model reported."""

    def __init__(self, name: str, fmt: str, folder: Path) -> None:
        self.model = build(name)
        self.modes_before = modes(self.model)
        self.sample = batch(self.model, 2, seed=1)
        self.path = folder / f"{name}.{fmt}"
        self.difference = export_model(self.model, self.path, format=fmt, sample=self.sample)


@pytest.fixture(scope="module", params=list(FAMILIES))
def onnx_export(request, tmp_path_factory) -> Exported:
    return Exported(request.param, "onnx", tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module", params=list(FAMILIES))
def script_export(request, tmp_path_factory) -> Exported:
    return Exported(request.param, "torchscript", tmp_path_factory.mktemp("torchscript"))


# ---------------------------------------------------------------------------- the files compute the model


@pytest.mark.slow
def test_onnx_file_gives_the_eager_logits_for_another_batch_size(onnx_export):
    model = onnx_export.model
    session = ort.InferenceSession(str(onnx_export.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # named, not a fixed number
    x = batch(model, 3, seed=2)  # the export was traced on 2 images
    (logits,) = session.run(["logits"], {"images": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), eager(model, x), rtol=0, atol=TOLERANCE)
    (on_sample,) = session.run(["logits"], {"images": onnx_export.sample.numpy()})
    measured = (torch.from_numpy(on_sample) - eager(model, onnx_export.sample)).abs().max().item()
    assert onnx_export.difference == pytest.approx(measured, abs=1e-7)
    assert onnx_export.difference <= TOLERANCE


def test_torchscript_file_gives_the_eager_logits_for_another_batch_size(script_export):
    model = script_export.model
    loaded = torch.jit.load(str(script_export.path))
    x = batch(model, 3, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), eager(model, x), rtol=0, atol=TOLERANCE)
    assert 0 <= script_export.difference <= TOLERANCE


def test_onnx_export_hands_the_model_back_in_the_modes_it_came_in(onnx_export):
    # create_model returns train mode; a frozen backbone keeps its batch norms in eval (dogbreed_transfer).
    assert onnx_export.model.training
    assert modes(onnx_export.model) == onnx_export.modes_before


def test_torchscript_export_hands_the_model_back_in_the_modes_it_came_in(script_export):
    assert script_export.model.training
    assert modes(script_export.model) == script_export.modes_before


def test_onnx_metadata_carries_class_names_mean_and_std(onnx_export):
    spec = onnx_export.model.data_spec
    session = ort.InferenceSession(str(onnx_export.path), providers=["CPUExecutionProvider"])
    raw = session.get_modelmeta().custom_metadata_map  # what any ONNX Runtime user sees: JSON strings
    assert set(raw) >= {"class_names", "mean", "std", "input_shape", "architecture", "data_spec"}
    meta = read_metadata(onnx_export.path)
    assert meta["mean"] == list(spec.mean) and meta["std"] == list(spec.std)
    assert meta["input_shape"] == list(spec.input_shape)
    assert len(meta["class_names"]) == spec.num_classes
    if spec.class_names:
        assert meta["class_names"] == list(spec.class_names)
    assert meta["architecture"] == onnx_export.model.imgzoo_arch
    assert imgzoo.DataSpec.from_dict(meta["data_spec"]) == spec


def test_torchscript_archive_carries_the_same_metadata(script_export):
    meta = read_metadata(script_export.path)
    spec = script_export.model.data_spec
    assert (meta["mean"], meta["std"]) == (list(spec.mean), list(spec.std))
    assert imgzoo.DataSpec.from_dict(meta["data_spec"]) == spec


# ---------------------------------------------------------------------------- what is refused, and what is kept


def test_a_bad_format_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"onnx, torchscript; got 'tflite'"):
        export_model(imgzoo.mnist_cnn(), tmp_path / "m.tflite", format="tflite")
    assert not (tmp_path / "m.tflite").exists()


def test_missing_onnxruntime_names_the_extra_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ImportError, match=r'onnxruntime.*pip install "imgzoo\[export\]"'):
        export_model(imgzoo.mnist_cnn(), tmp_path / "m.onnx", format="onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_the_cli_exits_2_with_one_line_when_the_extra_is_missing(tmp_path, monkeypatch, capsys):
    folder = imgzoo.save(imgzoo.mnist_cnn(hidden=8), tmp_path / "tiny")
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", str(folder), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "imgzoo[export]" in err


def test_the_cli_takes_the_format_from_the_suffix_and_refuses_a_suffix_it_cannot_read(tmp_path, capsys):
    folder = imgzoo.save(imgzoo.mnist_cnn(hidden=8), tmp_path / "tiny")
    assert main(["export", str(folder), "--out", str(tmp_path / "m.pt")]) == 0
    assert "(torchscript)" in capsys.readouterr().out
    assert torch.jit.load(str(tmp_path / "m.pt")) is not None
    assert main(["export", str(folder), "--out", str(tmp_path / "m.bin")]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the format" in err and "--format onnx" in err and "'.bin'" in err
    assert not (tmp_path / "m.bin").exists()


def test_a_file_that_disagrees_with_pytorch_is_not_written(tmp_path, monkeypatch):
    target = tmp_path / "m.pt"
    target.write_bytes(b"the previous export")
    model = imgzoo.mnist_cnn()
    monkeypatch.setattr(export, "_run_torchscript", lambda data, sample: eager(model, sample) + 1e-3)
    with pytest.raises(ExportError, match=r"up to 0\.001 away from PyTorch's \(tolerance 0\.0001\)"):
        export_model(model, target, format="torchscript")
    assert target.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_a_sample_is_required_without_a_data_spec_and_must_be_a_float32_batch(tmp_path):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ValueError, match="no data_spec; pass sample="):
        export_model(plain, tmp_path / "m.pt", format="torchscript")
    with pytest.raises(ValueError, match=r"float32 batch \(N, C, H, W\).*torch.float64"):
        export_model(plain, tmp_path / "m.pt", format="torchscript", sample=torch.zeros(2, 3, 2, 2).double())
    difference = export_model(plain, tmp_path / "m.pt", format="torchscript", sample=torch.randn(1, 3, 2, 2))
    assert difference <= TOLERANCE
    assert read_metadata(tmp_path / "m.pt") == {"producer": f"imgzoo {imgzoo.__version__}"}


def test_a_half_precision_model_is_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"float32 models.*torch.float16.*model.float\(\)"):
        export_model(imgzoo.mnist_cnn().half(), tmp_path / "m.pt", format="torchscript")


class VarArgs(nn.Module):
    """TorchScript cannot compile ``*inputs``; tracing can."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(12, 3)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(inputs[0].flatten(1))


def test_a_model_that_does_not_script_is_traced_with_a_warning(tmp_path):
    model = VarArgs()
    with pytest.warns(UserWarning, match="tracing it instead"):
        difference = export_model(model, tmp_path / "m.pt", format="torchscript", sample=torch.randn(2, 3, 2, 2))
    assert difference <= TOLERANCE
    x = torch.randn(4, 3, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.pt"))(x), model(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_model_exports_and_stays_on_its_device(tmp_path):
    model = imgzoo.resnet_cifar(depth=8).cuda()
    assert export_model(model, tmp_path / "m.pt", format="torchscript") <= TOLERANCE
    assert next(model.parameters()).device.type == "cuda"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model.eval()(x.cuda()).cpu()
        torch.testing.assert_close(torch.jit.load(str(tmp_path / "m.pt"))(x), reference, rtol=0, atol=1e-3)


# ---------------------------------------------------------------------------- the command


def test_a_loaded_model_scripts_as_a_built_one_does(tmp_path):
    loaded = imgzoo.load(imgzoo.save(imgzoo.mnist_cnn(hidden=8), tmp_path / "tiny"))
    children = list(loaded._modules)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # scripted, with no fallback to tracing
        assert export_model(loaded, tmp_path / "m.pt", format="torchscript") <= TOLERANCE
    assert list(loaded._modules) == children


def test_the_export_command_writes_a_checked_file_from_a_saved_folder(tmp_path):
    # TorchScript keeps this subprocess quick; the ONNX path of the same function is exported above
    # for every family, and examples/export_onnx.py runs it in a subprocess (tests/test_examples.py).
    torch.manual_seed(0)
    folder = imgzoo.save(imgzoo.mnist_cnn(hidden=8), tmp_path / "tiny")
    out = tmp_path / "tiny.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "imgzoo", "export", str(folder), "--format", "torchscript", "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"exporting {folder} as torchscript, then checking it against PyTorch\n")
    reported = float(proc.stdout.rsplit("max abs difference from PyTorch:", 1)[1])
    assert 0 <= reported <= TOLERANCE
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), eager(imgzoo.load(folder), x), rtol=0, atol=TOLERANCE)
    assert read_metadata(out)["class_names"] == [str(d) for d in range(10)]


def test_the_export_command_refuses_a_missing_folder_in_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err
    assert not (tmp_path / "m.pt").exists()


def test_the_export_command_exits_1_when_the_check_fails(tmp_path, monkeypatch, capsys):
    folder = imgzoo.save(imgzoo.mnist_cnn(hidden=8), tmp_path / "tiny")
    monkeypatch.setattr(export, "_run_torchscript", lambda data, sample: torch.full((len(sample), 10), float("nan")))
    assert main(["export", str(folder), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 1
    assert "ExportError" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_a_bad_format_on_the_command_line_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["export", "mnist_cnn.mnist", "--format", "tflite", "--out", "m.tflite"])
    assert info.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err
