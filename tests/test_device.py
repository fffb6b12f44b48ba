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
