"""A run killed with SIGKILL at any point and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _fit_worker import FIT_OPTIONS, make_data, make_model

from imgzoo.checkpoint import load_checkpoint
from imgzoo.training import fit

WORKER = Path(__file__).with_name("_fit_worker.py")
EPOCHS = 4


@pytest.fixture(scope="module")
def uninterrupted():
    train, val = make_data()
    model = make_model()
    history = fit(model, train, val, epochs=EPOCHS, **FIT_OPTIONS)
    return model, history


@pytest.mark.parametrize(
    ("args", "finished_epochs"),
    [
        (["kill", "3", "2"], 2),  # mid-batch loop of epoch 3: epochs 1-2 are checkpointed
        (["kill-rename", "2"], 1),  # epoch 2's checkpoint written to a temp file, not yet renamed
    ],
    ids=["mid-epoch", "mid-checkpoint-write"],
)
def test_resume_after_sigkill_matches_uninterrupted(tmp_path, uninterrupted, args, finished_epochs):
    reference, reference_history = uninterrupted
    out = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, str(WORKER), args[0], str(out), *args[1:]], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]

    state = load_checkpoint(out)  # the last complete checkpoint survived the kill
    assert state["epoch"] == finished_epochs
    assert state["history"]["epoch"] == list(range(1, finished_epochs + 1))

    train, val = make_data()
    resumed = make_model(seed=123)  # other initial weights: everything must come from the checkpoint
    history = fit(resumed, train, val, epochs=EPOCHS, resume=out, checkpoint_dir=out, **FIT_OPTIONS)

    assert history.epoch == list(range(1, EPOCHS + 1))
    assert history.train_loss == reference_history.train_loss
    assert history.val_acc == reference_history.val_acc
    ref_state, new_state = reference.state_dict(), resumed.state_dict()
    assert ref_state.keys() == new_state.keys()
    for name in ref_state:
        assert torch.equal(ref_state[name], new_state[name]), name
    assert load_checkpoint(out)["epoch"] == EPOCHS


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    train, val = make_data(n=64)
    model = make_model()
    fit(model, train, val, epochs=1, checkpoint_dir=tmp_path, **FIT_OPTIONS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = fit(model, train, val, epochs=1, resume=tmp_path, **FIT_OPTIONS)
    assert len(history) == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_resume_from_a_missing_checkpoint_is_refused(tmp_path):
    train, _ = make_data(n=64)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(make_model(), train, epochs=1, resume=tmp_path / "nowhere", **FIT_OPTIONS)


def test_checkpoint_holds_everything_needed_to_resume(tmp_path):
    train, val = make_data(n=64)
    fit(make_model(), train, val, epochs=2, checkpoint_dir=tmp_path, **FIT_OPTIONS)
    state = load_checkpoint(tmp_path / "last.pt")
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "history", "seed"):
        assert key in state
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp files left behind


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not an imgzoo training checkpoint"):
        load_checkpoint(path)
