"""Each example script runs end to end with ``--smoke`` on the data it generates, as a user would run it.

Every script runs in its own process, from a temporary working folder, importing this
checkout's imgzoo; the checks read what it printed and what it wrote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import imgzoo
from imgzoo.export import TOLERANCE, read_metadata

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",  # every example's smoke run works without a network
        "TORCH_HOME": str(cwd / "torch_home"),  # never the user's cache, whatever a script writes
        # On a shared CI machine two OpenMP threads per process oversubscribe the cores and spin:
        # a one-epoch smoke fit took 13.6 s with two threads and 0.6 s with one under load (measured).
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_train_mnist_trains_evaluates_and_saves_a_loadable_model(tmp_path):
    proc = run_example("train_mnist.py", "--smoke", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert "wrote 60 generated digits as MNIST idx files" in proc.stdout
    train, val = map(int, re.search(r"(\d+) training and (\d+) validation digits", proc.stdout).groups())
    assert train + val == 60 and val == 10  # 10%, at least one of each digit
    assert re.search(r"epoch 1/1 \| train loss \d", proc.stdout)
    top1 = float(re.search(r"validation top-1 ([\d.]+)", proc.stdout).group(1))
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    model = imgzoo.load(tmp_path / "run" / "model")
    assert model.data_spec.class_names == tuple(str(d) for d in range(10))
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["metrics"]["val_acc"] == pytest.approx(top1, abs=1e-4)


def test_cifar10_study_compares_four_runs_in_a_table_and_a_figure(tmp_path):
    proc = run_example("cifar10_study.py", "--smoke", "--out", str(tmp_path / "study"), cwd=tmp_path)
    names = ["basic CNN", "basic CNN + augmentation", "ResNet-8 + augmentation", "ResNet-8 + strong augmentation"]
    assert [line[3:] for line in proc.stdout.splitlines() if line.startswith("== ")] == names
    table = (tmp_path / "study" / "comparison.md").read_text().splitlines()
    assert [row.split(" | ")[0].lstrip("| ") for row in table[2:]] == names
    assert all(re.search(r"\d+\.\d\d%", row) for row in table[2:])
    assert (tmp_path / "study" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetune_dogbreed_warms_up_then_unfreezes_the_last_stage(tmp_path):
    proc = run_example("finetune_dogbreed.py", "--smoke", "--out", str(tmp_path / "dogs"), cwd=tmp_path)
    out = proc.stdout
    assert "RANDOM resnet18 weights" in out and "hub/checkpoints/resnet18-" in out  # says what stands in
    head = int(re.search(r"stage 1: head only \(([\d,]+) trainable", out).group(1).replace(",", ""))
    both = int(re.search(r"stage 2: \+ layer4 \(([\d,]+) trainable\), lr 0.01 / 0.001", out).group(1).replace(",", ""))
    layer4 = imgzoo.dogbreed_transfer(backbone="resnet18", weights=None).backbone.layer4
    assert head == 512 * 3 + 3  # the 3-breed linear head
    assert both == head + sum(p.numel() for p in layer4.parameters())
    assert len(re.findall(r"^epoch 1/1 \|", out, flags=re.M)) == 2
    model = imgzoo.load(tmp_path / "dogs" / "model")
    assert model.data_spec.class_names == ("Chihuahua", "Japanese_spaniel", "Maltese_dog")
    assert not (tmp_path / "torch_home").exists()  # the smoke run wrote its stand-in into its own temporary folder


def test_load_pretrained_classifies_the_bundled_samples_and_builds_a_new_head(tmp_path):
    proc = run_example("load_pretrained.py", "--smoke", cwd=tmp_path)
    for weights in ("mnist_cnn.mnist", "resnet_cifar.cifar10"):
        section = proc.stdout.split(f"{weights} on 3 images", 1)[1].split("right", 1)[0]
        answers = [line for line in section.splitlines() if re.match(r"\s+\S+\.(png|jpg)\s", line)]
        right = int(re.search(r"(\d)/3 $", section).group(1))
        assert len(answers) == 3 and right == sum("<- wrong" not in line for line in answers)
    assert "new 5-way head: output (1, 5)" in proc.stdout
    assert "NewHeadWarning" in proc.stderr and "NOT the classifier" in proc.stderr


def test_export_onnx_writes_a_checked_file_that_onnxruntime_answers_like_predict(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "mnist.onnx"
    proc = run_example("export_onnx.py", "--smoke", "--out", str(out), cwd=tmp_path)
    difference = float(re.search(r"max abs difference ([\d.e+-]+)", proc.stdout).group(1))
    assert 0 <= difference <= TOLERANCE
    pairs = re.findall(r"onnxruntime: (\S+)\s+imgzoo.predict: (\S+)", proc.stdout)
    assert len(pairs) == 3 and all(a == b for a, b in pairs)
    assert read_metadata(out)["architecture"] == "mnist_cnn"
