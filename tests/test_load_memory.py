"""The memory goal of docs/security.md: `imgzoo predict` of one image stays under 1 GB above the process's baseline
from any checkpoint that loads, and loading takes about the weights' own size. Checkpoints at the bounds are written
with zeros in a sparse file (no disk, no time), from the model built on meta; each peak is measured in a fresh
process, whose baseline is taken after the imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import imgzoo
from imgzoo.errors import CheckpointError
from imgzoo.hub.format import _DTYPE_NAMES, MAX_ACTIVATION_BYTES, MAX_LOAD_WEIGHTS, build_config

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from /proc")

# Just under MAX_LOAD_WEIGHTS, with the most memory at once: basic_cnn at 640x640, whose first block outputs 64x640x640
# floats (100 MiB, MAX_ACTIVATION_BYTES) and whose last has two 3x3 convolutions 1024->1920->1920 (63.5M weights);
# and one 2630->2630 convolution (63.9M weights in a single tensor, which oneDNN copies) with 68 MB outputs at 80x80.
WIDEST = {"widths": [64, 256, 1024, 1920]}
AT_THE_BOUNDS = [
    pytest.param("basic_cnn", WIDEST, [640, 640], False, id="fp32"),
    pytest.param("basic_cnn", WIDEST, [640, 640], True, id="fp16"),  # cast to fp32 one tensor at a time
    pytest.param("basic_cnn", {"widths": [64, 2630]}, [160, 160], False, id="one-tensor"),
]

_PEAK = """
import re, sys
from pathlib import Path
def high_water():  # VmHWM is the process's own (ru_maxrss would carry the parent's over the exec)
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) // 1024
import imgzoo, imgzoo.hub.api, imgzoo.eval.evaluation
from imgzoo.cli.main import main
before = high_water()
if sys.argv[2] == "load":
    imgzoo.load(Path(sys.argv[1]))
else:
    assert main(["predict", sys.argv[1], sys.argv[2]]) == 0
print(high_water() - before)
"""


def zero_checkpoint(folder: Path, arch: str, kwargs: dict, size: list[int] | None = None, fp16: bool = False) -> int:
    """A checkpoint of ``arch(**kwargs)`` whose weights are all zero, written without building the model for real;
    the number of weights in it."""
    with torch.device("meta"):
        model = imgzoo.create_model(arch, **kwargs)
    config = build_config(model, storage_dtype="fp16" if fp16 else "fp32")
    config["data_spec"]["size"] = size or config["data_spec"]["size"]
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    parameters = {name for name, _ in model.named_parameters()}
    header, end = {}, 0
    for name, tensor in model.state_dict().items():
        dtype = torch.float16 if fp16 and name in parameters else tensor.dtype
        begin, end = end, end + tensor.numel() * dtype.itemsize
        header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(tensor.shape), "data_offsets": [begin, end]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    with open(folder / "model.safetensors", "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + end)  # the data: zeros, in a sparse file
    return sum(t.numel() for t in model.state_dict().values())


def peak_mb(folder: Path, what: str = "predict") -> int:
    """MB above the baseline at the peak of `imgzoo predict` of one 28x28 image, or of imgzoo.load (``"load"``)."""
    if what == "predict":
        Image.new("RGB", (28, 28)).save(folder.parent / "x.png")
    env = {**os.environ, "PYTHONPATH": str(Path(imgzoo.__file__).parent.parent)}
    argv = [sys.executable, "-c", _PEAK, str(folder), "load" if what == "load" else str(folder.parent / "x.png")]
    return int(subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout.split()[-1])


@pytest.mark.parametrize(("arch", "kwargs", "size", "fp16"), AT_THE_BOUNDS)
def test_predict_at_the_weights_and_activation_bounds_together_stays_under_1_gb(tmp_path, arch, kwargs, size, fp16):
    count = zero_checkpoint(tmp_path / "ck", arch, kwargs, size, fp16=fp16)
    assert 0.99 * MAX_LOAD_WEIGHTS < count <= MAX_LOAD_WEIGHTS  # the most weights that load
    assert peak_mb(tmp_path / "ck") < 1024


def test_the_widest_configuration_has_the_largest_layer_output_that_loads():
    assert MAX_ACTIVATION_BYTES == 64 * 640 * 640 * 4  # basic_cnn's first block at 640x640, 64 channels


def test_loading_takes_little_more_than_the_weights_themselves(tmp_path):
    """The regression fixed: safetensors' load_file, the builder's random weights and load_state_dict's copy took
    3.5x the file (2.2 GB for 610 MB); read one tensor at a time into the meta model, it is the file and a little."""
    zero_checkpoint(tmp_path / "ck", "mnist_cnn", {"hidden": 8192})  # 25.8M weights, a 99 MiB file
    size_mb = (tmp_path / "ck" / "model.safetensors").stat().st_size / 2**20
    assert peak_mb(tmp_path / "ck", "load") < 1.6 * size_mb


def test_a_checkpoint_over_the_weights_bound_is_refused_before_its_tensors_are_read(tmp_path, monkeypatch):
    count = zero_checkpoint(tmp_path / "ck", "basic_cnn", {"widths": [64, 2640]})  # 64,351,375
    monkeypatch.setattr(imgzoo.hub.format, "_tensors", lambda *a: pytest.fail("the tensors were read"))
    with pytest.raises(CheckpointError, match=rf"model.safetensors holds {count:,} weights .* over the 64,000,000"):
        imgzoo.load(tmp_path / "ck")


def test_the_largest_shipped_model_is_far_inside_the_weights_bound():
    with torch.device("meta"):
        resnet50 = imgzoo.create_model("dogbreed_transfer")  # 95 MB in fp32
    assert sum(t.numel() for t in resnet50.state_dict().values()) * 2.5 < MAX_LOAD_WEIGHTS


def test_loading_draws_no_random_numbers(tmp_path):
    """The model is filled on meta from the file: no random initialisation is computed and then thrown away."""
    state = torch.random.get_rng_state()
    imgzoo.load("resnet_cifar.cifar10")
    assert torch.equal(torch.random.get_rng_state(), state)


class _Tied(nn.Module):
    """A tied weight, and a buffer the builder computes and the state_dict does not hold."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(28 * 28, 28 * 28, bias=False)
        self.decode = nn.Linear(28 * 28, 28 * 28, bias=False)
        self.decode.weight = self.embed.weight
        self.register_buffer("scale", torch.full((1,), 0.5), persistent=False)
        self.classifier = nn.Linear(28 * 28, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.decode(self.embed(x.flatten(1))) * self.scale)


def test_tied_weights_and_computed_buffers_come_back_as_saved(tmp_path, monkeypatch):
    from imgzoo.models import registry

    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))  # the registration ends with the test
    registry.register_model("zz_tied", default_spec=registry.MNIST)(lambda *, num_classes=10: _Tied(num_classes))
    model = imgzoo.create_model("zz_tied").eval()
    imgzoo.save(model, tmp_path / "ck")
    loaded = imgzoo.load(tmp_path / "ck")
    assert loaded.decode.weight is loaded.embed.weight and loaded.scale.device.type == "cpu"
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
