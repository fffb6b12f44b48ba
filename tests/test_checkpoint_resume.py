"""A run killed with SIGKILL at any point and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _fit_worker import FIT_OPTIONS, Batches, NoisyImages, make_data, make_model
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from imgzoo.models import resnet_cifar
from imgzoo.train.callbacks import Callback
from imgzoo.train.checkpoint import LOCK_NAME, CheckpointError, check_stop_resumable, load_checkpoint, resume_point
from imgzoo.train.fit import fit

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
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "epoch", "history", "seed", "kwargs"):
        assert key in state
    assert state["optimizer_class"] == "torch.optim.SGD"  # a resume with another optimizer is refused
    assert state["partial"] is None and state["world_size"] == 1  # the end of an epoch, one process
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "last.pt"]  # no temp files left behind


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
    sized_for_saved = {"schedule": schedule, "epochs": 2, "initial_epoch": 0, "steps_per_epoch": 2}
    assert load_checkpoint(tmp_path)["schedule_sized_for"] == sized_for_saved
    message = (
        rf"was made with schedule='{schedule}' sized for {sized_for}, not 3 epochs"
        r".*resume with epochs=2.*new run.*without resume="
    )
    _refused(tmp_path, train, val, 3, message, schedule=schedule)


def test_resuming_a_one_cycle_with_other_steps_per_epoch_is_refused(tmp_path):
    train, val = _checkpointed(tmp_path)
    _refused(tmp_path, train, val, 2, "sized for 2 epochs of 2 steps, not 2 epochs of 3 steps", batch_size=16)


def test_changing_the_schedule_on_resume_is_refused(tmp_path):
    train, val = _checkpointed(tmp_path)  # one-cycle, the default
    _refused(tmp_path, train, val, 2, "made with schedule='onecycle'.*asks for schedule=None", schedule=None)


def test_a_run_without_a_sized_schedule_resumes_with_more_epochs(tmp_path):
    train, val = _checkpointed(tmp_path, schedule=None)
    history = fit(make_model(seed=123), train, val, epochs=3, resume=tmp_path, **{**FIT_OPTIONS, "schedule": None})
    assert history.epoch == [1, 2, 3]
    assert history.lr == [FIT_OPTIONS["lr"]] * 3
    assert load_checkpoint(tmp_path)["epoch"] == 3


def test_initial_epoch_numbers_the_epochs_on_over_a_schedule_of_their_own(tmp_path):
    """Keras's initial_epoch: 2 more epochs after 2 are numbered 3 and 4 everywhere (history, checkpoint, callbacks)
    with a schedule sized for those 2; a Ctrl-C in them resumes exactly, and another numbering is refused."""
    train, val = make_data()
    alone = fit(make_model(), train, val, epochs=2, **FIT_OPTIONS)
    seen: list[int] = []

    class _Epochs(Callback):
        def on_epoch_end(self, state):
            seen.append(state.epoch)

    reference = make_model()
    more = fit(reference, train, val, epochs=4, initial_epoch=2, callbacks=[_Epochs()], **FIT_OPTIONS)
    assert more.epoch == seen == [3, 4]
    assert more.lr == alone.lr  # one-cycle over the 2 epochs this call trains, not 4
    stopped = make_model()
    fit(stopped, train, val, epochs=4, initial_epoch=2, checkpoint_dir=tmp_path, callbacks=[_InterruptAt(4, 1)],
        **FIT_OPTIONS)  # fmt: skip
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3
    with pytest.raises(ValueError, match="made with initial_epoch=2, and this call asks for initial_epoch=0"):
        fit(make_model(seed=123), train, val, epochs=4, resume=tmp_path / "interrupted.pt", **FIT_OPTIONS)
    resumed = make_model(seed=123)
    history = fit(resumed, train, val, epochs=4, initial_epoch=2, resume=tmp_path / "interrupted.pt", **FIT_OPTIONS)
    assert history.epoch == [3, 4] and history.train_loss == more.train_loss
    assert _same_weights(reference, resumed)
    with pytest.raises(ValueError, match="initial_epoch must be below epochs"):
        fit(make_model(), train, val, epochs=2, initial_epoch=2, **FIT_OPTIONS)


# ---------------------------------------------------------------------------- interrupted.pt: exact continuation


class _InterruptAt(Callback):
    """Raise KeyboardInterrupt after the optimizer step of (epoch, step), as a Ctrl-C there would."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step = epoch, step

    def on_batch_end(self, state, step, loss):
        if (state.epoch, step) == (self.epoch, self.step):
            raise KeyboardInterrupt


def _dataset(train):
    return train


def _shuffling_dataloader(train):
    return DataLoader(train, batch_size=32, shuffle=True)  # its shuffle draws from the global generator


def _own_generator_loader(train):
    return Batches(train)


def _augmenting_dataset(train):
    return NoisyImages(train)  # augmentation and dropout draw from the same global generator


def _augmenting_workers(train):
    return DataLoader(NoisyImages(train), batch_size=32, shuffle=True, num_workers=2)  # worker seeds


DATA_KINDS = [_dataset, _shuffling_dataloader, _own_generator_loader, _augmenting_dataset, _augmenting_workers]


def _same_weights(a, b) -> bool:
    b_state = b.state_dict()
    return all(torch.equal(v, b_state[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("kind", DATA_KINDS, ids=lambda kind: kind.__name__.strip("_"))
def test_resume_from_interrupted_continues_exactly_where_the_epoch_stopped(tmp_path, kind):
    train, val = make_data()
    reference = make_model()
    expected = fit(reference, kind(train), val, epochs=3, **FIT_OPTIONS)

    history = fit(
        make_model(), kind(train), val, epochs=3, checkpoint_dir=tmp_path, callbacks=[_InterruptAt(2, 2)], **FIT_OPTIONS
    )
    assert history.epoch == [1]
    partial = load_checkpoint(tmp_path / "interrupted.pt")["partial"]
    assert (partial["epoch"], partial["steps_done"], partial["exact"]) == (2, 3, True)

    resumed = make_model(seed=123)
    history = fit(resumed, kind(train), val, epochs=3, resume=tmp_path / "interrupted.pt", **FIT_OPTIONS)
    assert history.epoch == [1, 2, 3]
    assert history.train_loss == expected.train_loss
    assert history.train_acc == expected.train_acc
    assert history.val_loss == expected.val_loss
    assert _same_weights(reference, resumed)
    # The next epoch's last.pt supersedes interrupted.pt, which fit then removes.
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "last.pt"]


@pytest.mark.parametrize(
    "stops", [[(2, 5)], [(1, 0), (1, 4)], [(2, 1), (2, 3)]], ids=["last-step", "twice-in-epoch-1", "twice-in-epoch-2"]
)
def test_interrupted_again_after_a_resume_still_continues_exactly(tmp_path, stops):
    train, val = make_data()
    reference = make_model()
    fit(reference, train, val, epochs=2, **FIT_OPTIONS)
    resume = None
    for epoch, step in stops:
        model = make_model(seed=0 if resume is None else 123)  # a resumed run's weights come from the checkpoint
        fit(
            model,
            train,
            val,
            epochs=2,
            checkpoint_dir=tmp_path,
            resume=resume,
            callbacks=[_InterruptAt(epoch, step)],
            **FIT_OPTIONS,
        )
        resume = tmp_path / "interrupted.pt"
    resumed = make_model(seed=123)
    fit(resumed, train, val, epochs=2, resume=resume, **FIT_OPTIONS)
    assert _same_weights(reference, resumed)


class _SigintInForward:
    """A forward hook that sends this process SIGINT during the n-th training forward pass, `times` times."""

    def __init__(self, n: int, times: int) -> None:
        self.n, self.times, self.calls = n, times, 0

    def __call__(self, module, inputs, output):
        if module.training:
            self.calls += 1
            if self.calls == self.n:
                for _ in range(self.times):
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(0.05)  # let Python run the handler before the next signal


def test_ctrl_c_in_the_middle_of_a_step_waits_for_its_end_and_resumes_exactly(tmp_path, capsys):
    train, val = make_data()
    reference = make_model()
    fit(reference, train, val, epochs=2, **FIT_OPTIONS)

    model = make_model()
    model.register_forward_hook(_SigintInForward(n=9, times=1))  # epoch 2, step 2 (6 steps per epoch)
    history = fit(model, train, val, epochs=2, checkpoint_dir=tmp_path, **{**FIT_OPTIONS, "verbose": 2})
    assert history.epoch == [1]
    out = capsys.readouterr().out
    assert "stopping after the step or validation under way" in out
    path = tmp_path / "interrupted.pt"
    assert f"after 3 of its 6 steps; saved {path}" in out and f"fit(..., resume='{path}')" in out
    assert resume_point(tmp_path) == path

    resumed = make_model(seed=123)
    fit(resumed, train, val, epochs=2, resume=resume_point(tmp_path), **FIT_OPTIONS)
    assert _same_weights(reference, resumed)


def test_ctrl_c_during_the_last_validation_saves_the_finished_run_and_stops_its_caller(tmp_path, capsys):
    train, val = make_data()
    model = make_model()

    seen = {"training": False, "sent": False}

    def interrupt_validation(module, inputs, output):  # fit's checks before training also run forward passes
        if module.training:
            seen["training"] = True
        elif seen["training"] and not seen["sent"]:
            seen["sent"] = True
            os.kill(os.getpid(), signal.SIGINT)

    model.register_forward_hook(interrupt_validation)
    with pytest.raises(KeyboardInterrupt, match="after the last step of epoch 1: the training is done and saved"):
        fit(model, train, val, epochs=1, checkpoint_dir=tmp_path, **{**FIT_OPTIONS, "verbose": 2})
    assert "stopping after the step or validation under way" in capsys.readouterr().out
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1
    assert not (tmp_path / "interrupted.pt").exists()


def test_a_second_ctrl_c_stops_mid_step_and_that_checkpoint_is_refused_naming_last_pt(tmp_path, capsys):
    train, val = make_data()
    model = make_model()
    model.register_forward_hook(_SigintInForward(n=9, times=2))
    fit(model, train, val, epochs=2, checkpoint_dir=tmp_path, **{**FIT_OPTIONS, "verbose": 2})
    assert f"resume from {tmp_path / 'last.pt'} (the end of epoch 1)" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "interrupted.pt")["partial"]["exact"] is False
    assert resume_point(tmp_path) == tmp_path / "last.pt"

    resumed = make_model(seed=123)
    before = {k: v.clone() for k, v in resumed.state_dict().items()}
    message = rf"cannot continue exactly from .*interrupted.pt: .*middle of a step.*Resume from {tmp_path / 'last.pt'}"
    with pytest.raises(CheckpointError, match=message):
        fit(resumed, train, val, epochs=2, resume=tmp_path / "interrupted.pt", **FIT_OPTIONS)
    assert all(torch.equal(before[k], v) for k, v in resumed.state_dict().items())


def test_an_epoch_of_persistent_workers_cannot_continue_exactly_and_is_refused_naming_last_pt(tmp_path, capsys):
    train, val = make_data(n=128)
    loader = DataLoader(NoisyImages(train), batch_size=32, shuffle=True, num_workers=1, persistent_workers=True)
    options = {**FIT_OPTIONS, "verbose": 2}
    fit(make_model(), loader, val, epochs=2, checkpoint_dir=tmp_path, callbacks=[_InterruptAt(2, 1)], **options)
    assert "persistent_workers=True" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match=r"persistent_workers=True.*Resume from .*last.pt.*end of epoch 1"):
        fit(make_model(), loader, val, epochs=2, resume=tmp_path / "interrupted.pt", **FIT_OPTIONS)
    assert resume_point(tmp_path) == tmp_path / "last.pt"


def test_an_interrupted_pt_without_a_record_of_where_it_stopped_is_refused(tmp_path):
    train, val = make_data(n=128)
    fit(make_model(), train, val, epochs=2, checkpoint_dir=tmp_path, callbacks=[_InterruptAt(2, 1)], **FIT_OPTIONS)
    state = load_checkpoint(tmp_path / "interrupted.pt")
    del state["partial"]  # as an earlier imgzoo wrote it: mid-epoch weights, labelled as the end of epoch 1
    torch.save(state, tmp_path / "interrupted.pt")
    with pytest.raises(CheckpointError, match=r"earlier imgzoo.*Resume from .*last.pt.*end of epoch 1"):
        fit(make_model(), train, val, epochs=2, resume=tmp_path / "interrupted.pt", **FIT_OPTIONS)


def test_a_mid_epoch_checkpoint_is_refused_under_several_processes(tmp_path):
    train, val = make_data(n=128)
    fit(make_model(), train, val, epochs=2, checkpoint_dir=tmp_path, callbacks=[_InterruptAt(2, 1)], **FIT_OPTIONS)
    path = tmp_path / "interrupted.pt"
    with pytest.raises(CheckpointError, match="torchrun continues only from the end of an epoch"):
        check_stop_resumable(load_checkpoint(path), path, world_size=2)
    check_stop_resumable(load_checkpoint(path), path, world_size=1)  # one process: exact


# ---------------------------------------------------------------------------- refused before anything is loaded


def _state_bytes(model) -> dict[str, bytes]:
    return {k: v.numpy().tobytes() + str(v.dtype).encode() for k, v in model.state_dict().items()}


def _cifar_like(n: int = 16):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))


def test_resuming_into_another_architecture_is_refused_and_loads_nothing(tmp_path):
    data = _cifar_like()
    options = {**FIT_OPTIONS, "batch_size": 16}
    fit(resnet_cifar(depth=8), data, epochs=1, checkpoint_dir=tmp_path, **options)
    deeper = resnet_cifar(depth=14)
    before = _state_bytes(deeper)
    message = (
        r"made for another model \(depth=8 there, depth=14 here\); \d+ weights differ in name or shape \(.*\)\. "
        r"Nothing was loaded\. .*imgzoo.create_model\('resnet_cifar', depth=8, num_classes=10"
    )
    with pytest.raises(CheckpointError, match=message):
        fit(deeper, data, epochs=2, resume=tmp_path, **options)
    assert _state_bytes(deeper) == before


def test_a_checkpoint_from_before_a_builder_argument_existed_resumes_with_its_default(tmp_path):
    data = _cifar_like()
    options = {**FIT_OPTIONS, "batch_size": 16}
    fit(resnet_cifar(depth=8), data, epochs=2, checkpoint_dir=tmp_path, **options)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["kwargs"]["in_chans"] == 3
    del state["kwargs"]["in_chans"]  # as a checkpoint saved before resnet_cifar took in_chans
    torch.save(state, tmp_path / "last.pt")
    history = fit(resnet_cifar(depth=8), data, epochs=2, resume=tmp_path, **options)
    assert history.epoch == [1, 2]
    state["kwargs"]["in_chans"] = 1  # an argument that is there and differs still refuses
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"in_chans=1 there, in_chans=3 here"):
        fit(resnet_cifar(depth=8), data, epochs=2, resume=tmp_path, **options)


def _head_of(classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, classes))


def test_resuming_with_another_number_of_classes_is_refused_naming_the_shapes(tmp_path):
    train, _ = make_data(n=64)
    fit(_head_of(4), train, epochs=1, checkpoint_dir=tmp_path, **FIT_OPTIONS)
    wider = _head_of(5)
    before = _state_bytes(wider)
    with pytest.raises(CheckpointError, match=r"1.weight is \(4, 192\) in the checkpoint, \(5, 192\) here"):
        fit(wider, train, epochs=2, resume=tmp_path, **FIT_OPTIONS)
    assert _state_bytes(wider) == before


def test_resuming_with_another_optimizer_is_refused_naming_both(tmp_path):
    train, val = _checkpointed(tmp_path)  # SGD
    model = make_model(seed=123)
    before = _state_bytes(model)
    with pytest.raises(CheckpointError, match=r"trained with torch.optim.SGD, and this call builds torch.optim.AdamW"):
        fit(model, train, val, epochs=2, resume=tmp_path, **{**FIT_OPTIONS, "optimizer": "adamw"})
    assert _state_bytes(model) == before


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _random_bytes(path: Path) -> None:
    path.write_bytes(
        torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy().tobytes()
    )


def _another_pickle(path: Path) -> None:
    torch.save(argparse.Namespace(weights=torch.zeros(2)), path)  # loading it would need unpickling code


@pytest.mark.parametrize(
    "damage", [_truncated, _empty, _random_bytes, _another_pickle], ids=lambda d: d.__name__.strip("_")
)
def test_a_damaged_last_pt_is_a_checkpoint_error_that_says_what_to_do(tmp_path, damage):
    train, _ = make_data(n=64)
    fit(make_model(), train, epochs=1, checkpoint_dir=tmp_path, **FIT_OPTIONS)
    damage(tmp_path / "last.pt")
    with pytest.raises(CheckpointError) as info:
        fit(make_model(), train, epochs=2, resume=tmp_path, **FIT_OPTIONS)
    message = str(info.value)
    assert str(tmp_path / "last.pt") in message and "start the run again without resume=" in message
    assert "weights_only" not in message and "pickle" not in message.lower()
    assert info.value.__cause__ is None and info.value.__suppress_context__
