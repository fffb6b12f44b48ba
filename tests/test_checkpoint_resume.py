"""A run killed with SIGKILL at any point and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _fit_worker import FIT_OPTIONS, make_data, make_model

from imgzoo.callbacks import Callback
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


# ---------------------------------------------------------------------------- resuming with other options


class _CtrlCAtEpoch2(Callback):
    def on_epoch_start(self, state):
        if state.epoch == 2:
            raise KeyboardInterrupt


def _checkpointed(tmp_path, **options):
    """A 2-epoch run (2 steps per epoch) stopped after epoch 1, checkpointed in tmp_path; returns the data."""
    train, val = make_data(n=64)
    options = {**FIT_OPTIONS, **options}
    fit(make_model(), train, val, epochs=2, checkpoint_dir=tmp_path, callbacks=[_CtrlCAtEpoch2()], **options)
    assert load_checkpoint(tmp_path)["epoch"] == 1
    return train, val


def _refused(tmp_path, train, val, epochs, message, **options):
    model = make_model(seed=123)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    saved = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=message):
        fit(model, train, val, epochs=epochs, resume=tmp_path, **{**FIT_OPTIONS, **options})
    # Refused before any work: the model is untouched and the checkpoint is not rewritten.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert (tmp_path / "last.pt").read_bytes() == saved


@pytest.mark.parametrize(
    ("schedule", "sized_for"),
    [("onecycle", "2 epochs of 2 steps"), ("cosine", "2 epochs of 2 steps"), ("step", "2 epochs")],
)
def test_resuming_a_sized_schedule_with_other_epochs_is_refused_before_any_work(tmp_path, schedule, sized_for):
    train, val = _checkpointed(tmp_path, schedule=schedule)
    assert load_checkpoint(tmp_path)["schedule_sized_for"] == {"schedule": schedule, "epochs": 2, "steps_per_epoch": 2}
    message = (
        rf"was made with schedule='{schedule}' sized for {sized_for}.*this call asks for 3 epochs"
        r".*resume with epochs=2.*new run.*without resume="
    )
    _refused(tmp_path, train, val, 3, message, schedule=schedule)


def test_resuming_a_one_cycle_with_other_steps_per_epoch_is_refused(tmp_path):
    train, val = _checkpointed(tmp_path)
    _refused(tmp_path, train, val, 2, "sized for 2 epochs of 2 steps.*asks for 2 epochs of 3 steps", batch_size=16)


def test_changing_the_schedule_on_resume_is_refused(tmp_path):
    train, val = _checkpointed(tmp_path)  # one-cycle, the default
    _refused(tmp_path, train, val, 2, "made with schedule='onecycle'.*asks for schedule=None", schedule=None)


def test_a_run_without_a_sized_schedule_resumes_with_more_epochs(tmp_path):
    train, val = _checkpointed(tmp_path, schedule=None)
    history = fit(make_model(seed=123), train, val, epochs=3, resume=tmp_path, **{**FIT_OPTIONS, "schedule": None})
    assert history.epoch == [1, 2, 3]
    assert history.lr == [FIT_OPTIONS["lr"]] * 3
    assert load_checkpoint(tmp_path)["epoch"] == 3
