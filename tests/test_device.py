"""The one device and precision rule: amp="auto" never picks a precision the machine computes slowly."""

from __future__ import annotations

import warnings

import pytest
import torch

from imgzoo import _device

CPU = torch.device("cpu")


@pytest.fixture
def no_native_bf16(monkeypatch):
    monkeypatch.setattr(_device, "cpu_has_native_bf16", lambda: False)
    _device._warn_slow_bf16.cache_clear()
    yield
    _device._warn_slow_bf16.cache_clear()


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(_device, "cpu_has_native_bf16", lambda: True)


@pytest.mark.parametrize("amp", ["auto", True])
def test_auto_is_fp32_on_a_cpu_without_native_bf16(no_native_bf16, amp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto must not warn: it made the safe choice
        assert _device.amp_dtype(amp, CPU) is None


@pytest.mark.parametrize("amp", ["auto", True, "bf16"])
def test_bf16_on_a_cpu_with_native_bf16(native_bf16, amp):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _device.amp_dtype(amp, CPU) is torch.bfloat16


def test_explicit_bf16_without_native_support_warns_once(no_native_bf16):
    with pytest.warns(RuntimeWarning, match="without native bf16") as record:
        assert _device.amp_dtype("bf16", CPU) is torch.bfloat16
        assert _device.amp_dtype("bf16", CPU) is torch.bfloat16
    assert len([w for w in record if "native bf16" in str(w.message)]) == 1


@pytest.mark.parametrize("amp", [False, "fp32"])
def test_full_precision_choices(amp):
    assert _device.amp_dtype(amp, CPU) is None


def test_fp16_on_cpu_is_refused_with_advice():
    with pytest.raises(ValueError, match="needs a GPU.*amp='auto'"):
        _device.amp_dtype("fp16", CPU)


@pytest.mark.parametrize("amp", ["float16", "yes", 1.0, None])
def test_unknown_amp_is_refused_with_the_choices(amp):
    with pytest.raises(ValueError, match="amp must be one of"):
        _device.amp_dtype(amp, CPU)


def test_native_bf16_detection_agrees_with_cpuinfo():
    """Where /proc/cpuinfo exists it is the ground truth for the two flags torch also reads."""
    flags = _device._cpuinfo_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo on this platform")
    _device.cpu_has_native_bf16.cache_clear()
    assert _device.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_describe_machine_names_what_a_figure_depends_on():
    info = _device.describe_machine(CPU)
    assert set(info) >= {"cpu", "cores", "cpu_capability", "native_bf16", "torch"}
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch"] == torch.__version__
    assert isinstance(info["native_bf16"], bool)


def test_resolve_device_names_pass_through():
    assert _device.resolve_device("cpu") == CPU
    assert _device.resolve_device(CPU) is CPU
    if not torch.cuda.is_available():
        assert _device.resolve_device("auto").type in ("cpu", "mps")


@pytest.mark.parametrize(
    ("choice", "device", "dtype", "expected"),
    [
        ("auto", "cpu", None, True),
        ("auto", "cuda", torch.bfloat16, True),
        ("auto", "cuda", None, False),
        ("auto", "mps", None, False),
        (False, "cpu", None, False),
        (True, "cuda", None, True),
    ],
)
def test_channels_last_auto_is_on_for_cpus_and_mixed_precision_gpus(choice, device, dtype, expected):
    assert _device.use_channels_last(choice, torch.device(device), dtype) is expected


def _dtype_fit_trained_in(monkeypatch, native: bool, **options) -> torch.dtype:
    """Train a tiny conv net with fit's defaults; return the dtype its conv produced during training."""
    from torch import nn
    from torch.utils.data import TensorDataset

    import imgzoo

    monkeypatch.setattr(_device, "cpu_has_native_bf16", lambda: native)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    seen = []
    model[0].register_forward_hook(lambda m, i, out: seen.append(out.dtype) if m.training else None)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 2, (8,), generator=g))
    imgzoo.fit(model, data, epochs=1, batch_size=4, verbose=0, device="cpu", **options)
    assert model[0].weight.is_contiguous()  # channels_last was fit's own choice: handed back in the default layout
    return seen[-1]


def test_fit_trains_in_fp32_by_default_on_a_cpu_without_native_bf16(monkeypatch):
    assert _dtype_fit_trained_in(monkeypatch, native=False) is torch.float32


def test_fit_trains_in_bf16_by_default_on_a_cpu_with_native_bf16(monkeypatch):
    assert _dtype_fit_trained_in(monkeypatch, native=True) is torch.bfloat16


def test_fit_refuses_an_unknown_amp_or_layout():
    from imgzoo.train.config import FitConfig

    assert FitConfig(epochs=1).amp == "auto" and FitConfig(epochs=1).channels_last == "auto"
    with pytest.raises(ValueError, match="amp must be one of"):
        FitConfig(epochs=1, amp="float16")
    with pytest.raises(ValueError, match="channels_last must be True, False or 'auto'"):
        FitConfig(epochs=1, channels_last="yes")
