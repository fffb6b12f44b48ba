"""The shipped weights still do what their cards claim, on real held-out digits, offline and repeatably."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import imgzoo
from imgzoo import datasets
from imgzoo.data.loaders import FastLoader
from imgzoo.hub.pretrained import PRETRAINED

FIXTURE = Path(__file__).parent / "fixtures" / "mnist-val-500"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_mnist_weights_classify_500_validation_digits(offline):
    """500 real digits from the validation split the card reports on (99.53% over all 5,999)."""
    model = imgzoo.load("mnist_cnn.mnist")
    digits = datasets.mnist(FIXTURE, train=True)
    assert len(digits) == 500 and len(set(digits.targets.tolist())) == 10
    result = imgzoo.evaluate(model, FastLoader(digits, 250, spec=model.data_spec))
    assert result.num_samples == 500
    assert result.top1 >= 0.99


@pytest.mark.parametrize("entry", PRETRAINED, ids=lambda e: e.name)
def test_shipped_entries_load_offline_and_answer_deterministically(offline, entry):
    x = torch.randn(4, *imgzoo.load(entry.name).data_spec.input_shape, generator=torch.Generator().manual_seed(0))
    first, second = imgzoo.load(entry.name), imgzoo.load(entry.name)
    with torch.no_grad():
        a, b, again = first(x), second(x), first(x)
    assert torch.equal(a, b) and torch.equal(a, again)
    assert not first.training
