"""The figures are written as real, non-empty PNG files (matplotlib's Agg, no display needed)."""

from __future__ import annotations

import pytest
import torch
from _fit_worker import FIT_OPTIONS, make_data, make_model

from imgzoo.evaluation import compare, evaluate
from imgzoo.plots import plot_confusion_matrix, plot_predictions
from imgzoo.training import fit

pytest.importorskip("matplotlib")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, path
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def trained():
    train, val = make_data(n=128)
    model = make_model()
    history = fit(model, train, val, epochs=2, **FIT_OPTIONS)
    return model, history, val


def test_history_plot(trained, tmp_path):
    _, history, _ = trained
    fig = history.plot(tmp_path / "curves.png")
    assert len(fig.axes) == 2
    assert_png(tmp_path / "curves.png")


def test_predicted_samples_grid(trained, tmp_path):
    model, _, val = trained
    fig = plot_predictions(model, val, n=10, path=tmp_path / "samples.png")
    assert sum(ax.get_title() != "" for ax in fig.axes) == 10
    assert_png(tmp_path / "samples.png")


def test_confusion_matrix(trained, tmp_path):
    model, _, val = trained
    result = evaluate(model, val)
    result.plot_confusion_matrix(tmp_path / "confusion.png")
    assert_png(tmp_path / "confusion.png")
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(torch.zeros(2, 3))


def test_compare_plot(tmp_path):
    train, val = make_data(n=64)
    result = compare({"a": make_model(0), "b": make_model(1)}, train, val, epochs=1, **FIT_OPTIONS)
    result.plot(tmp_path / "compare.png")
    assert_png(tmp_path / "compare.png")
