"""Hostile inputs, drawn by hypothesis: config.json fields, safetensors headers and dtypes, data-folder shapes and
command-line paths. Each case either works as documented or ends in an imgzoo error; either way it runs no code
the input names, changes no file it was not asked to write, and stays within the memory bound of docs/security.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import sys
from pathlib import Path

import pytest
import torch
from data_factories import write_image_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

import imgzoo
from imgzoo import datasets
from imgzoo._atomic import check_output
from imgzoo.cli.main import main
from imgzoo.errors import CheckpointError
from imgzoo.hub.format import MAX_ACTIVATION_BYTES, MAX_PIXELS
from imgzoo.study import config as run_config
from imgzoo.study import run as runs

FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: a file's bytes, a link's target (links are not followed)."""
    found: dict[str, bytes | str] = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(top, name)
            rel = str(path.relative_to(folder))
            found[rel] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return found


@pytest.fixture(scope="module", autouse=True)
def evil_module(tmp_path_factory):
    """A module a config may name (builder_module, architecture): importing it would leave it in sys.modules."""
    folder = tmp_path_factory.mktemp("evil")
    (folder / "imgzoo_evil_module.py").write_text("raise SystemExit('a config ran code')\n")
    sys.path.insert(0, str(folder))
    yield
    sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ck") / "mnist"
    torch.manual_seed(0)
    imgzoo.save(imgzoo.create_model("mnist_cnn", hidden=8, class_names=[str(i) for i in range(10)]), folder)
    return folder


def _copy(checkpoint: Path, to: Path) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    for file in checkpoint.iterdir():
        (to / file.name).write_bytes(file.read_bytes())
    return to


def _load_and_predict(folder: Path) -> None:
    """Load, then predict one image: the memory a config implies is spent here if anywhere."""
    model = imgzoo.load(str(folder))
    spec = model.data_spec
    assert spec.size[0] * spec.size[1] <= MAX_PIXELS
    scores = imgzoo.predict(model, Image.new("L", (28, 28)), topk=1)
    assert math.isfinite(scores[0][1]) and all(name.isprintable() for name in spec.class_names or ())


# --- config.json: any value in any field --------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-320, 5e-324, 1e308, 0.0, -0.0, 2048, 8192, 10**6])
    | st.text(max_size=12)
    | st.sampled_from(["\n", "\x1b[2J", "os", "imgzoo_evil_module", "mnist_cnn", "basic_cnn"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
SPEC_FIELDS = ["name", "channels", "size", "mean", "std", "num_classes", "class_names", "resize"]
TOP_FIELDS = ["architecture", "builder_module", "kwargs", "num_classes", "class_names", "format_version",
              "storage_dtype", "num_params"]  # fmt: skip
SIZES = st.lists(st.integers(min_value=-2, max_value=9000), min_size=2, max_size=2)
KWARGS = st.fixed_dictionaries({}, optional={"hidden": st.integers(-1, 2**20), "dropout": st.floats(-1, 2)})


@FEW
@given(
    where=st.sampled_from(["data_spec", "top"]),
    field=st.sampled_from(SPEC_FIELDS + TOP_FIELDS),
    value=JSON_VALUES | SIZES | KWARGS,
)
def test_any_config_field_loads_within_the_memory_bound_or_is_refused_and_runs_no_code(
    checkpoint, tmp_path_factory, where, field, value
):
    folder = _copy(checkpoint, tmp_path_factory.mktemp("edited"))
    config = json.loads((folder / "config.json").read_text())
    (config["data_spec"] if where == "data_spec" and field in SPEC_FIELDS else config)[field] = value
    (folder / "config.json").write_text(json.dumps(config))
    before, modules = snapshot(folder), set(sys.modules)
    with contextlib.suppress(CheckpointError):
        _load_and_predict(folder)
    assert snapshot(folder) == before
    assert "imgzoo_evil_module" not in set(sys.modules) - modules


@pytest.mark.parametrize(
    ("arch", "kwargs", "size", "message"),
    [
        ("mnist_cnn", {}, [2048, 2048], "at most 1048576 pixels"),  # the 26 s and 1.8 GB predict
        ("mnist_cnn", {}, [8192, 8192], "at most 1048576 pixels"),
        ("mnist_cnn", {}, [1024, 1024], "cannot take an image of its config's data_spec size"),  # Linear of 7x7
        ("basic_cnn", {}, [1024, 1024], "256 MiB for one layer's output"),  # 64 channels of 1024x1024 floats
        ("basic_cnn", {"widths": (1024, 8, 8)}, [256, 256], "MiB for one layer's output"),  # a tiny file, wide layer
    ],
)
def test_a_config_that_implies_too_much_memory_is_refused_before_it_is_allocated(tmp_path, arch, kwargs, size, message):
    imgzoo.save(imgzoo.create_model(arch, **kwargs), tmp_path / "ck")
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    config["data_spec"]["size"] = size
    (tmp_path / "ck" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        imgzoo.load(str(tmp_path / "ck"))


def test_the_shipped_models_are_far_inside_the_activation_bound():
    for name in ("mnist_cnn.mnist", "resnet_cifar.cifar10"):
        model = imgzoo.load(name)  # measured on load: refused if over
        assert model is not None
    assert MAX_ACTIVATION_BYTES >= 30 * 64 * 112 * 112 * 4  # 30x dogbreed_transfer's largest layer output


# --- safetensors: dtypes, values and headers ----------------------------------------------------------------------

DTYPES = [torch.int32, torch.int64, torch.bool, torch.uint8, torch.float16, torch.bfloat16, torch.float64,
          torch.float8_e4m3fn, torch.complex64, torch.float32]  # fmt: skip


@FEW
@given(dtype=st.sampled_from(DTYPES), key_index=st.integers(0, 7), poison=st.sampled_from([None, "nan", "inf"]))
def test_a_tensor_of_another_dtype_or_not_finite_is_refused_not_reinterpreted(
    checkpoint, tmp_path_factory, dtype, key_index, poison
):
    folder = _copy(checkpoint, tmp_path_factory.mktemp("dtype"))
    state = load_file(folder / "model.safetensors")
    key = sorted(k for k, v in state.items() if v.is_floating_point())[key_index % 6]
    state[key] = state[key].to(dtype)
    if poison and state[key].is_floating_point() and dtype != torch.float8_e4m3fn:
        state[key].view(-1)[0] = float(poison)
    save_file(state, folder / "model.safetensors")
    before = snapshot(folder)
    if dtype == torch.float32 and poison is None:
        _load_and_predict(folder)
    else:
        expected = "NaN or infinite" if dtype == torch.float32 else "other dtypes"
        with pytest.raises(CheckpointError, match=expected):
            imgzoo.load(str(folder))
    assert snapshot(folder) == before


HEADER_ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "I32", "I64", "BOOL", "F8_E4M3", "C64", "X", ""]) | st.text(max_size=4),
        "shape": st.lists(st.integers(-1, 2**40), max_size=4),
        "data_offsets": st.lists(st.integers(-1, 2**62), min_size=0, max_size=3),
    }
)


@FEW
@given(entries=st.dictionaries(st.sampled_from(["fc1.weight", "conv1.bias", "x", ""]), HEADER_ENTRY, max_size=3),
       tail=st.binary(max_size=64))  # fmt: skip
def test_a_forged_safetensors_header_is_refused_without_allocating(checkpoint, tmp_path_factory, entries, tail):
    folder = _copy(checkpoint, tmp_path_factory.mktemp("header"))
    header = json.dumps(entries).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + tail)
    before = snapshot(folder)
    with pytest.raises(CheckpointError):
        imgzoo.load(str(folder))
    assert snapshot(folder) == before


# --- data folders: links, loops, hidden entries, one class --------------------------------------------------------

ENTRY = st.sampled_from(["image", "hidden_image", "hidden_dir", "loop_up", "loop_root", "link_sibling", "subdir"])


@FEW
@given(layout=st.lists(st.lists(ENTRY, max_size=4), min_size=1, max_size=3))
def test_any_data_folder_shape_reads_each_file_inside_it_once_or_is_refused(tmp_path_factory, layout):
    root = tmp_path_factory.mktemp("data")
    names = [f"c{i}" for i in range(len(layout))]
    for name, entries in zip(names, layout, strict=True):
        folder = root / name
        write_image_folder(root, (name,), n_per_class=1, size=(8, 8))
        for i, entry in enumerate(entries):
            if entry in ("image", "hidden_image", "subdir"):
                target = folder / "sub" if entry == "subdir" else folder
                target.mkdir(exist_ok=True)
                Image.new("RGB", (8, 8)).save(target / f"{'.' if entry == 'hidden_image' else ''}{i}.png")
            elif entry == "hidden_dir":
                (folder / ".cache").mkdir(exist_ok=True)
                Image.new("RGB", (8, 8)).save(folder / ".cache" / f"{i}.png")
            else:
                target = {"loop_up": "..", "loop_root": str(root), "link_sibling": str(root / names[0])}[entry]
                os.symlink(target, folder / f"link{i}")
    before = snapshot(root)
    try:
        data = datasets.image_folder(root)
    except (ValueError, FileNotFoundError):
        assert snapshot(root) == before
        return
    real = [os.path.realpath(path) for path, _ in data.samples]
    assert len(real) == len(set(real))  # no file twice: never under two labels, never in both splits
    assert all(Path(p).is_relative_to(root.resolve()) for p in real)
    assert not any(part.startswith(".") for path, _ in data.samples for part in Path(path).relative_to(root).parts)
    assert data.classes == names
    if len(names) == 1:
        with pytest.raises(ValueError, match="one class"):
            runs.split_data(data, seed=0)
    assert snapshot(root) == before


# --- command-line paths -------------------------------------------------------------------------------------------

OUT_KINDS = ["new", "empty", "", "existing_file", "existing_dir", "user_folder", "the_checkpoint", "inside_checkpoint",
             "under_a_file", "inside_data"]  # fmt: skip


def _out_path(kind: str, base: Path, checkpoint: Path, data: Path) -> str:
    (base / "notes.txt").write_text("the user's")
    (base / "user").mkdir(exist_ok=True)
    (base / "user" / "metrics.json").write_text("the user's")
    (base / "empty").mkdir(exist_ok=True)
    return {
        "new": str(base / "new" / "out.pt"),
        "empty": str(base / "empty"),
        "": "",
        "existing_file": str(base / "notes.txt"),
        "existing_dir": str(base / "user"),
        "user_folder": str(base / "user"),
        "the_checkpoint": str(checkpoint / "model.safetensors"),
        "inside_checkpoint": str(checkpoint / "model.pt"),
        "under_a_file": str(base / "notes.txt" / "out.pt"),
        "inside_data": str(data / "new"),
    }[kind]


@FEW
@given(kind=st.sampled_from(OUT_KINDS), command=st.sampled_from(["export", "train", "evaluate"]))
def test_a_command_writes_only_a_new_path_outside_what_it_reads(checkpoint, tmp_path_factory, kind, command, capsys):
    base = tmp_path_factory.mktemp("cli")
    ck, data = _copy(checkpoint, base / "ck"), write_image_folder(base / "data", ("a", "b"), size=(28, 28))
    out = _out_path(kind, base, ck, data)
    before = snapshot(base)
    argv = {
        "export": ["export", str(ck), "--format", "torchscript", "--out", out],
        # Past the rule, each fails on purpose before writing: 3 outputs for 2 class folders, the model's classes.
        "train": ["train", "mnist_cnn", str(data), "--out", out, "--epochs", "1", "--model-kwargs", "num_classes=3"],
        "evaluate": ["evaluate", str(ck), str(data), "--out", out],
    }[command]
    if command == "export" and kind in ("new", "inside_data"):  # export reads no data: a new file anywhere else
        assert main(argv) == 0
        written = set(snapshot(base)) - set(before)
        assert written == {str(Path(out).relative_to(base)), *(["new"] if kind == "new" else [])}
        return
    if kind == "":
        with pytest.raises(SystemExit):
            main(argv)
        assert "empty path" in capsys.readouterr().err
    else:
        assert main(argv) == 2
        assert capsys.readouterr().err.count("\n") == 1  # one line, whatever the path holds
    assert snapshot(base) == before


def test_the_output_rule_allows_a_folder_the_same_command_made(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    assert check_output(tmp_path / "run", folder_of="run.json") == tmp_path / "run"
    with pytest.raises(FileExistsError, match="no confusion.png"):
        check_output(tmp_path / "run", folder_of="confusion.png")


# --- runs: the class check, failed starts and refused extensions ----------------------------------------------------


def _run(folder: Path, out: Path, **options) -> runs.RunResult:
    config = run_config.make_config("mnist_cnn", str(folder), epochs=options.pop("epochs", 1), amp="fp32", **options)
    return runs.train_run(out, config, resume=out.exists(), verbose=0, log=lambda _: None)


def test_a_run_refuses_a_renamed_or_added_class_folder_and_keeps_its_checkpoint(tmp_path):
    data = write_image_folder(tmp_path / "data", ("cat", "dog"), n_per_class=4, size=(28, 28))
    out = tmp_path / "run"
    _run(data, out)
    before = snapshot(out)
    (data / "cat").rename(data / "zebra")  # labels 0 and 1 would swap meanings
    with pytest.raises(ValueError, match="dog, zebra.*cat, dog"):
        _run(data, out, epochs=2)
    (data / "zebra").rename(data / "cat")
    write_image_folder(data, ("emu",), n_per_class=4, size=(28, 28))  # a new class: a refused extension
    with pytest.raises(ValueError, match="3 classes"):
        _run(data, out, epochs=2)
    assert snapshot(out) == before  # checkpoints/last.pt included


def test_a_start_that_failed_before_its_first_checkpoint_does_not_block_the_corrected_command(tmp_path):
    data = write_image_folder(tmp_path / "data", ("cat", "dog"), n_per_class=4, size=(28, 28))
    config = run_config.make_config("mnist_cnn", str(data), epochs=1, amp="fp32", device="meta")
    with pytest.raises(ValueError, match="meta"):
        runs.train_run(tmp_path / "run", config, verbose=0, log=lambda _: None)
    fixed = run_config.make_config("mnist_cnn", str(data), epochs=1, amp="fp32")
    assert runs.train_run(tmp_path / "run", fixed, verbose=0, log=lambda _: None).finished
    assert run_config.read_run(tmp_path / "run").finished


def test_a_read_only_cache_slows_a_run_but_does_not_stop_it(tmp_path, monkeypatch):
    data = write_image_folder(tmp_path / "data", ("cat", "dog"), n_per_class=4, size=(28, 28))
    (tmp_path / "cache").mkdir(mode=0o555)
    monkeypatch.setenv("IMGZOO_CACHE", str(tmp_path / "cache"))
    if os.access(tmp_path / "cache", os.W_OK):
        pytest.skip("running as a user who may write anywhere")
    with pytest.warns(UserWarning, match="not written"):
        assert _run(data, tmp_path / "run").finished


# --- what commands print ------------------------------------------------------------------------------------------


@given(name=st.text(min_size=1, max_size=12))
@settings(max_examples=50, deadline=None)
def test_printed_names_and_paths_cannot_forge_lines_or_drive_the_terminal(name):
    from imgzoo.cli.train import printable

    shown = printable(f"{name}: cat 0.900")
    assert "\n" not in shown and "\x1b" not in shown and "\r" not in shown
    assert shown.encode("utf-8")  # undecodable bytes (surrogates) are escaped, so the line can be written


def test_predict_json_is_valid_json_and_names_are_escaped_in_text(tmp_path, capsys, checkpoint):
    image = tmp_path / "a\nb\x1b[2J.png"
    Image.new("L", (28, 28)).save(image)
    assert main(["predict", str(checkpoint), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == str(image)
    assert main(["predict", str(checkpoint), str(image)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\x1b" not in out and "a\\nb\\x1b[2J.png" in out


def test_an_image_turned_by_exif_is_read_the_way_a_viewer_shows_it(tmp_path):
    image = Image.new("RGB", (20, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees
    image.save(tmp_path / "photo.jpg", exif=exif)
    assert datasets._open_image(str(tmp_path / "photo.jpg")).size == (10, 20)


# --- the memory goal: predict of one image from a checkpoint at the bounds, measured in a fresh process -------------

_PEAK = """
import re, sys
from imgzoo.cli.main import main
def high_water():  # VmHWM is the process's own (ru_maxrss would carry the parent's over the exec)
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
import imgzoo.hub.api, imgzoo.eval.evaluation
before = high_water()
assert main(["predict", sys.argv[1], sys.argv[2]]) == 0
print(high_water() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from /proc")
@pytest.mark.parametrize(("arch", "size"), [("resnet_cifar", [1024, 1024]), ("basic_cnn", [640, 640])])
def test_predict_of_one_image_from_a_checkpoint_at_the_bounds_stays_under_1_gb(tmp_path, arch, size):
    import subprocess

    imgzoo.save(imgzoo.create_model(arch), tmp_path / "ck")
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    config["data_spec"]["size"] = size  # the most pixels, or the largest layer output, that still loads
    (tmp_path / "ck" / "config.json").write_text(json.dumps(config))
    Image.new("RGB", (28, 28)).save(tmp_path / "x.png")
    env = {**os.environ, "PYTHONPATH": str(Path(imgzoo.__file__).parent.parent)}
    found = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / "ck"), str(tmp_path / "x.png")],
                           capture_output=True, text=True, env=env, check=True)  # fmt: skip
    assert int(found.stdout.split()[-1]) < 1024  # MB above the baseline
