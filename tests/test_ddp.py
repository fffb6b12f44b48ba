"""fit under torchrun: 2 CPU processes on gloo train like one, and write exactly one checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from _fit_worker import FIT_OPTIONS, make_data, make_model

from imgzoo.eval.history import History
from imgzoo.train.checkpoint import LOCK_NAME
from imgzoo.train.fit import fit

WORKER = Path(__file__).with_name("_fit_worker.py")


def test_two_gloo_processes_match_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run([*cmd, str(WORKER), "ddp", str(tmp_path)], capture_output=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]

    # Only rank 0 writes: one checkpoint, no temp files.
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [LOCK_NAME, "last.pt"]
    # DDP keeps the replicas identical.
    w0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    for name, value in w0.items():
        if name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # each process keeps batch-norm statistics of its own shard, as DDP documents
        assert torch.equal(value, w1[name]), name

    ddp = History.from_json(tmp_path / "history.json")
    train, val = make_data()
    single = fit(make_model(), train, val, epochs=4, **FIT_OPTIONS)
    assert ddp.epoch == single.epoch == [1, 2, 3, 4]
    assert single.val_acc[-1] >= 0.85
    # Same data, each process half the steps with a global batch twice as large: the same accuracy within noise.
    assert abs(ddp.val_acc[-1] - single.val_acc[-1]) <= 0.1

    # fit can be called again in the same torchrun processes (here through compare): the group
    # the first call started stays open for the next, and every process gets the same metrics.
    more = [json.loads((tmp_path / f"more_fits_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert more[0]["group_kept"] and more[1]["group_kept"]
    # fit let go of its DistributedDataParallel wrapper: none is left for the interpreter's teardown, where
    # the gloo work it holds could abort a process whose training had ended well.
    assert more[0]["wrappers_alive_after_fit"] == more[1]["wrappers_alive_after_fit"] == 0
    assert sorted(more[0]["histories"]) == sorted(more[1]["histories"]) == ["a", "b"]
    for name, history in more[0]["histories"].items():
        assert history["epoch"] == [1]
        for column in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):  # summed over processes
            assert history[column] == more[1]["histories"][name][column], (name, column)

    # A run stopped after epoch 2 and resumed in the same processes ends with the weights of an
    # uninterrupted run: each process restored its own random generators, not rank 0's.
    for rank, report in enumerate(more):
        resumed_loss, expected_loss = report["resume_train_loss"]
        assert resumed_loss == expected_loss, rank
        # The checkpoint holds rank 0's batch-norm statistics; other processes keep their own (see docs).
        allowed = () if rank == 0 else ("1.running_mean", "1.running_var")
        assert [name for name in report["resume_differs"] if name not in allowed] == [], rank
