"""imgzoo.save(dtype="fp16"): half the file, parameters within fp16's rounding, an fp32 model on load."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

import imgzoo
from imgzoo.hub.format import CONFIG_NAME, WEIGHTS_NAME, read_config


def _model():
    torch.manual_seed(0)
    model = imgzoo.create_model("resnet_cifar", depth=8).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.fill_(3e-7)  # below fp16's smallest normal number: would lose its digits
    return model


def test_fp16_storage_halves_the_file_and_loads_back_as_fp32_within_fp16_rounding(tmp_path):
    model = _model()
    imgzoo.save(model, tmp_path / "full")
    imgzoo.save(model, tmp_path / "half", dtype="fp16")
    full, half = (tmp_path / "full" / WEIGHTS_NAME).stat().st_size, (tmp_path / "half" / WEIGHTS_NAME).stat().st_size
    assert 0.45 < half / full < 0.56
    assert read_config(tmp_path / "half" / CONFIG_NAME)["storage_dtype"] == "fp16"
    assert read_config(tmp_path / "full" / CONFIG_NAME)["storage_dtype"] == "fp32"

    loaded = imgzoo.load(tmp_path / "half")
    assert {t.dtype for t in loaded.parameters()} == {torch.float32}
    saved, restored = model.state_dict(), loaded.state_dict()
    parameters = {name for name, _ in model.named_parameters()}
    for name, tensor in saved.items():
        if name in parameters:  # rounding to fp16's 11 significant bits: at most half a unit in the last place
            bound = tensor.abs() * 2.0**-11 + 2.0**-25  # the second term: fp16's subnormal spacing, halved
            assert torch.all((restored[name] - tensor).abs() <= bound), name
        else:
            assert torch.equal(restored[name], tensor), name  # buffers are stored as they are
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.equal(loaded(x), model(x))  # the rounding is real
        torch.testing.assert_close(loaded(x), model(x), rtol=0.05, atol=0.05)


def test_the_file_stores_parameters_in_fp16_and_buffers_in_their_own_dtype(tmp_path):
    model = _model()
    imgzoo.save(model, tmp_path / "half", dtype="fp16")
    parameters = {name for name, _ in model.named_parameters()}
    with safe_open(str(tmp_path / "half" / WEIGHTS_NAME), framework="pt") as f:
        dtypes = {name: f.get_tensor(name).dtype for name in f.keys()}  # noqa: SIM118 (not a dict)
    assert {dtypes[n] for n in parameters} == {torch.float16}
    assert dtypes["stem.1.running_var"] == torch.float32
    assert dtypes["stem.1.num_batches_tracked"] == torch.int64


def test_a_parameter_beyond_fp16s_range_and_an_unknown_dtype_are_refused_before_writing(tmp_path):
    model = _model()
    with torch.no_grad():
        model.get_classifier().weight[0, 0] = 1e6
    with pytest.raises(ValueError, match=r"classifier.weight holds 1e\+06, beyond fp16's range.*dtype='fp32'"):
        imgzoo.save(model, tmp_path / "half", dtype="fp16")
    with pytest.raises(ValueError, match=r"dtype must be one of \['fp32', 'fp16'\]"):
        imgzoo.save(model, tmp_path / "bf", dtype="bf16")
    assert not (tmp_path / "half").exists() and not (tmp_path / "bf").exists()
