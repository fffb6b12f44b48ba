"""A refused call changes nothing: the model's weights and mode, the checkpoint folder and the cache stay as they were.

Each case makes one public call that imgzoo must refuse, and compares a byte-level snapshot of
everything the call could have touched before and after it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _fit_worker import FIT_OPTIONS, make_data, make_model
from torch.utils.data import TensorDataset

import imgzoo
from imgzoo.train.fit import fit


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def model_state(model: torch.nn.Module) -> tuple[dict[str, bytes], bool, list[bool]]:
    tensors = {k: v.detach().cpu().numpy().tobytes() for k, v in model.state_dict().items()}
    return tensors, model.training, [m.training for m in model.modules()]


@pytest.fixture
def checkpointed(tmp_path):
    """A checkpoint folder with one finished epoch, and a model that trained into it."""
    train, val = make_data(n=64)
    model = make_model()
    fit(model, train, val, epochs=1, checkpoint_dir=tmp_path / "ck", **FIT_OPTIONS)
    return model, train, val, tmp_path / "ck"


def _resume_another_architecture(model, train, val, ck):
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    return other, lambda: fit(other, train, val, epochs=2, resume=ck, **FIT_OPTIONS)


def _resume_another_optimizer(model, train, val, ck):
    return model, lambda: fit(model, train, val, epochs=1, resume=ck, **{**FIT_OPTIONS, "optimizer": "adamw"})


def _validation_labels_out_of_range(model, train, val, ck):
    bad_val = TensorDataset(val.tensors[0], val.tensors[1] + 10)
    return model, lambda: fit(model, train, bad_val, epochs=2, checkpoint_dir=ck, **FIT_OPTIONS)


def _evaluate_out_of_range(model, train, val, ck):
    bad = TensorDataset(val.tensors[0], val.tensors[1] + 10)
    return model, lambda: imgzoo.evaluate(model, bad)


def _predict_bad_topk(model, train, val, ck):
    return model, lambda: imgzoo.predict(model, val.tensors[0][:2], topk=0)


REFUSALS = [
    _resume_another_architecture,
    _resume_another_optimizer,
    _validation_labels_out_of_range,
    _evaluate_out_of_range,
    _predict_bad_topk,
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda f: f.__name__.strip("_"))
def test_a_refused_call_leaves_the_model_and_the_checkpoint_folder_as_they_were(checkpointed, refusal):
    model, train, val, ck = checkpointed
    target, call = refusal(model, train, val, ck)
    target.train()  # a mode the call must not change either
    before_model, before_folder = model_state(target), folder_bytes(ck)
    with pytest.raises((ValueError, TypeError)):
        call()
    assert model_state(target) == before_model
    assert folder_bytes(ck) == before_folder


def test_a_refused_load_leaves_the_saved_folder_as_it_was(tmp_path):
    folder = imgzoo.save(imgzoo.mnist_cnn(hidden=8), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["kwargs"]["hidden"] = 16  # no longer the shape of the weights in the file
    (folder / "config.json").write_text(json.dumps(config))
    before = folder_bytes(folder)
    with pytest.raises(ValueError, match="hidden|shape"):
        imgzoo.load(folder)
    assert folder_bytes(folder) == before


def test_a_refused_save_leaves_the_folder_as_it_was(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    before = folder_bytes(tmp_path)
    with pytest.raises(FileExistsError):
        imgzoo.save(imgzoo.mnist_cnn(hidden=8), tmp_path)
    assert folder_bytes(tmp_path) == before


def test_a_refused_revision_touches_no_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(ValueError, match="revision"):
        imgzoo.load("hf-hub:org/repo@../../../x")
    assert folder_bytes(cache) == {} and list(cache.iterdir()) == []
