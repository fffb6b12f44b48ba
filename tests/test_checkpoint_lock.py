"""One fit per checkpoint folder: a second is refused naming the first; a lock left by a dead process is taken over."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from _fit_worker import FIT_OPTIONS, make_data, make_model

from imgzoo.train.callbacks import Callback
from imgzoo.train.checkpoint import LOCK_NAME, CheckpointDirError, load_checkpoint, lock_checkpoint_dir
from imgzoo.train.fit import fit


def test_a_second_fit_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path):
    train, _ = make_data(n=64)
    with lock_checkpoint_dir(tmp_path):  # as a running fit holds it
        holder = f"process {os.getpid()} on {socket.gethostname()}"
        with pytest.raises(CheckpointDirError, match=rf"{tmp_path} is in use by another fit \({holder}.*another"):
            fit(make_model(), train, epochs=1, checkpoint_dir=tmp_path, **FIT_OPTIONS)
    assert not (tmp_path / "last.pt").exists()


class _TryAnotherFit(Callback):
    """From inside a running fit, start a second one on the same folder and keep its error."""

    def __init__(self, folder) -> None:
        self.folder, self.error = folder, None

    def on_epoch_end(self, state):
        train, _ = make_data(n=64)
        try:
            fit(make_model(), train, epochs=1, checkpoint_dir=self.folder, **FIT_OPTIONS)
        except CheckpointDirError as e:
            self.error = e


def test_a_running_fit_holds_its_folder_and_releases_it_when_done(tmp_path):
    train, _ = make_data(n=64)
    other = _TryAnotherFit(tmp_path)
    fit(make_model(), train, epochs=1, checkpoint_dir=tmp_path, callbacks=[other], **FIT_OPTIONS)
    assert other.error is not None and f"process {os.getpid()}" in str(other.error)
    fit(make_model(), train, epochs=1, checkpoint_dir=tmp_path, **FIT_OPTIONS)  # free again


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(f"999999999 {socket.gethostname()}\n")  # no such process
    train, _ = make_data(n=64)
    history = fit(make_model(), train, epochs=1, checkpoint_dir=tmp_path, **FIT_OPTIONS)
    assert history.epoch == [1] and load_checkpoint(tmp_path)["epoch"] == 1


def test_the_lock_is_released_when_fit_fails(tmp_path):
    train, _ = make_data(n=64)

    class Fail(Callback):
        def on_epoch_end(self, state):
            raise RuntimeError("broken callback")

    with pytest.raises(RuntimeError, match="broken callback"):
        fit(make_model(), train, epochs=1, checkpoint_dir=tmp_path, callbacks=[Fail()], **FIT_OPTIONS)
    with lock_checkpoint_dir(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())


def test_a_lock_held_by_another_process_is_refused_and_freed_when_it_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        refused = rf"in use by another fit \(process {holder.pid} on "
        with pytest.raises(CheckpointDirError, match=refused), lock_checkpoint_dir(tmp_path):
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    with lock_checkpoint_dir(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())


HOLD = """
import sys, time
from imgzoo.train.checkpoint import lock_checkpoint_dir
with lock_checkpoint_dir(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""
