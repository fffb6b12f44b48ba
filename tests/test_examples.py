"""Each example script runs end to end with ``--smoke`` on the data it generates, as a user would run it.

Every script runs in its own process, from a temporary working folder, importing this
checkout's imgzoo; the checks read what it printed and what it wrote.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import imgzoo
from imgzoo.hub.export import TOLERANCE, read_metadata

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
    model = imgzoo.load(tmp_path / "run")  # the run folder: its weights/, as imgzoo train writes them
    assert model.data_spec.class_names == tuple(str(d) for d in range(10))
    config = json.loads((tmp_path / "run" / "weights" / "config.json").read_text())
    assert config["metrics"]["val_acc"] == pytest.approx(top1, abs=1e-4)


def test_cifar10_study_compares_four_runs_in_a_table_and_a_figure(tmp_path):
    proc = run_example("cifar10_study.py", "--smoke", "--out", str(tmp_path / "study"), cwd=tmp_path)
    names = ["basic CNN", "basic CNN + augmentation", "ResNet-8", "ResNet-8 + strong augmentation"]
    assert [line[3:] for line in proc.stdout.splitlines() if line.startswith("== ")] == names
    table = (tmp_path / "study" / "comparison.md").read_text().splitlines()
    assert [row.split(" | ")[0].lstrip("| ") for row in table[2:]] == names
    assert all(re.search(r"\d+\.\d\d%", row) for row in table[2:])
    assert (tmp_path / "study" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetune_dogbreed_warms_up_then_unfreezes_the_last_stage(tmp_path):
    proc = run_example("finetune_dogbreed.py", "--smoke", "--out", str(tmp_path / "dogs"), cwd=tmp_path)
    out = proc.stdout
    assert "resnet18 starts from RANDOM weights (weights=None)" in out  # says that no ImageNet file stands behind it
    head = int(re.search(r"stage 1: head only \(([\d,]+) trainable", out).group(1).replace(",", ""))
    both = int(re.search(r"stage 2: \+ layer4 \(([\d,]+) trainable\), lr 0.01 / 0.001", out).group(1).replace(",", ""))
    layer4 = imgzoo.dogbreed_transfer(backbone="resnet18", weights=None).backbone.layer4
    assert head == 512 * 3 + 3  # the 3-breed linear head
    assert both == head + sum(p.numel() for p in layer4.parameters())
    assert len(re.findall(r"^epoch 1/1 \|", out, flags=re.M)) == 2
    model = imgzoo.load(tmp_path / "dogs" / "weights")
    assert model.data_spec.class_names == ("Chihuahua", "Japanese_spaniel", "Maltese_dog")
    assert not (tmp_path / "torch_home").exists()  # nothing was read from, or downloaded into, torch's cache


def _moved_parts(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> dict[str, set[str]]:
    """The parts whose weights or buffers changed since ``before``, with the names that changed in each.

    A part is a backbone stage (conv1, bn1, layer1 ... layer4) or the classifier.
    """
    moved: dict[str, set[str]] = {}
    for name, value in model.state_dict().items():
        if not torch.equal(value, before[name]):
            words = name.split(".")
            moved.setdefault(words[1] if words[0] == "backbone" else words[0], set()).add(name)
    return moved


def test_finetune_dogbreed_trains_the_head_alone_then_layer4_at_a_tenth_of_its_rate(tmp_path, monkeypatch):
    """The example's finetune(), in this process, with every call of imgzoo.fit watched.

    Each stage's fit records which weights and batch-norm statistics moved, and the optimizer
    that stage 2's callable built; weights=None means no ImageNet file is read or fetched.
    """
    monkeypatch.syspath_prepend(str(EXAMPLES))
    example = importlib.import_module("finetune_dogbreed")
    tiny_data = importlib.import_module("tiny_data")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("a download was attempted"))
    stages = []
    real_fit = imgzoo.fit

    def watched_fit(model, *args, **kwargs):
        built = []
        make = kwargs.get("optimizer")
        if callable(make):

            def recording(params):
                built.append(make(params))
                return built[-1]

            kwargs["optimizer"] = recording
        before = {k: v.clone() for k, v in model.state_dict().items()}
        history = real_fit(model, *args, **kwargs)
        stages.append((_moved_parts(model, before), built, model))
        return history

    monkeypatch.setattr(imgzoo, "fit", watched_fit)
    root = tiny_data.write_stanford_dogs(tmp_path / "dogs")
    folder = example.finetune(
        root, tmp_path / "run", backbone="resnet18", weights=None, epochs=(1, 1), batch_size=4, workers=0
    )

    (warm_up, _, model), (fine_tune, optimizers, same) = stages
    assert same is model
    assert set(warm_up) == {"classifier"}  # the frozen backbone: not a weight, not a running statistic
    assert set(fine_tune) == {"classifier", "layer4"}  # conv1, bn1 and layers 1-3 stay as they were
    layer4 = {f"backbone.layer4.{name}" for name, _ in model.backbone.layer4.named_parameters()}
    assert layer4 <= fine_tune["layer4"]  # every weight of the last stage trained

    (optimizer,) = optimizers
    head, body = optimizer.param_groups
    assert [id(p) for p in head["params"]] == [id(p) for p in model.classifier.parameters()]
    assert [id(p) for p in body["params"]] == [id(p) for p in model.backbone.layer4.parameters()]
    assert head["initial_lr"] == 0.01 and body["initial_lr"] == pytest.approx(0.001)  # before the schedule
    assert body["lr"] == pytest.approx(head["lr"] / 10)  # and after it: cosine scales both alike

    assert imgzoo.load(folder).data_spec.class_names == ("Chihuahua", "Japanese_spaniel", "Maltese_dog")
    assert not (tmp_path / "torch_home").exists()


def test_finetune_dogbreed_official_split_trains_on_the_train_list_and_validates_on_the_test_list(
    tmp_path, monkeypatch, capsys
):
    from scipy.io import savemat

    monkeypatch.syspath_prepend(str(EXAMPLES))
    example = importlib.import_module("finetune_dogbreed")
    root = importlib.import_module("tiny_data").write_stanford_dogs(tmp_path / "dogs")
    names = sorted(p.relative_to(root / "Images").as_posix() for p in (root / "Images").rglob("*.jpg"))
    for split, listed in (("train", names[:9]), ("test", names[9:])):
        savemat(root / f"{split}_list.mat", {"file_list": np.array(listed, dtype=object).reshape(-1, 1)})
    example.finetune(
        root, tmp_path / "run", backbone="resnet18", weights=None, epochs=(1, 1), batch_size=4, workers=0,
        official_split=True,
    )  # fmt: skip
    out = capsys.readouterr().out
    assert f"9 training and 3 validation images from {root}" in out
    assert f"{Path(names[9]).name} (" in out  # the prediction shown is of the test list's first image


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
