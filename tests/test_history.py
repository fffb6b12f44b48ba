"""History: what fit recorded, and its round trips through dict, JSON and CSV."""

from __future__ import annotations

import csv
import io
import math

import pytest
from _fit_worker import FIT_OPTIONS, make_data, make_model

from imgzoo.eval.history import COLUMNS, History
from imgzoo.train.fit import fit


@pytest.fixture(scope="module")
def history():
    train, val = make_data(n=128)
    return fit(make_model(), train, val, epochs=3, **FIT_OPTIONS)


def test_history_records_every_epoch(history):
    data = history.to_dict()
    assert list(data) == list(COLUMNS)
    assert all(len(values) == 3 for values in data.values())
    assert data["epoch"] == [1, 2, 3]
    for key in ("train_acc", "val_acc"):
        assert all(0.0 <= v <= 1.0 for v in data[key])
    for key in ("train_loss", "val_loss", "lr", "time", "images_per_sec"):
        assert all(v > 0 and math.isfinite(v) for v in data[key]), key


def test_without_a_val_set_the_val_columns_hold_none():
    train, _ = make_data(n=64)
    history = fit(make_model(), train, epochs=1, **FIT_OPTIONS)
    assert history.val_loss == [None] and history.val_acc == [None]
    assert History.from_json(history.to_json()).val_acc == [None]


def test_json_round_trip(history, tmp_path):
    path = tmp_path / "history.json"
    text = history.to_json(path)
    assert path.read_text() == text
    assert History.from_json(path) == history
    assert History.from_dict(history.to_dict()) == history


def test_csv_has_a_header_and_a_row_per_epoch(history, tmp_path):
    path = tmp_path / "history.csv"
    history.to_csv(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [int(r["epoch"]) for r in rows] == history.epoch
    assert [float(r["val_acc"]) for r in rows] == pytest.approx(history.val_acc)


def test_to_dict_is_a_copy(history):
    history.to_dict()["epoch"].append(99)
    assert history.epoch == [1, 2, 3]


def test_malformed_histories_are_refused():
    with pytest.raises(ValueError, match="equal lengths"):
        History.from_dict({"epoch": [1, 2], "train_loss": [0.5]})
    with pytest.raises(ValueError, match="unknown History columns"):
        History.from_dict({"epochs": [1]})
    with pytest.raises(ValueError, match="needs exactly"):
        History().append(epoch=1)
    with pytest.raises(IndexError, match="empty"):
        History().last()
