"""The ``imgzoo`` command as a user runs it: ``python -m imgzoo ...`` in a subprocess, on tiny data in real formats.

Each test checks the exit status, what was printed and the files written. One tiny MNIST run
is trained once for the module, then evaluated and predicted with. Every subprocess pays for
importing torch, so the finer cases (refusals, resuming, extending) are tested in-process in
test_cli.py, test_cli_runs.py and test_study.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_factories import write_image_folder, write_mnist
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def imgzoo_env(tmp: Path, **extra: str) -> dict[str, str]:
    """This checkout's imgzoo, a private decode cache, no Hub, and matplotlib without a display."""
    env = {**os.environ, "IMGZOO_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("IMGZOO_DEBUG", None)
    return {**env, **extra}


def imgzoo(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imgzoo", *args],
        cwd=cwd,
        env=env or imgzoo_env(cwd),
        capture_output=True,
        text=True,
        timeout=300,
    )


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is a {image.format}, not a PNG"
        return image.size


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch mnist_cnn run on 60 tiny MNIST digits (6 per class), trained by `imgzoo train`."""
    tmp = tmp_path_factory.mktemp("train")
    write_mnist(tmp / "mnist", n_per_class=6)
    done = imgzoo("train", "mnist_cnn", "mnist", "--out", "run", "--epochs", "1", "--amp", "fp32", cwd=tmp)
    return tmp, done


def test_train_writes_weights_history_and_figures_and_says_how_to_go_on(trained):
    tmp, done = trained
    assert done.returncode == 0, done.stderr
    run = tmp / "run"
    for name in (
        "weights/model.safetensors",
        "weights/config.json",
        "history.csv",
        "history.json",
        "checkpoints/last.pt",
    ):
        assert (run / name).is_file(), name
    for name in ("curves.png", "samples.png", "confusion.png"):
        width, height = png_size(run / name)
        assert width >= 300 and height >= 150, (name, width, height)
    assert png_size(run / "samples.png")[1] > 300  # all 10 validation digits: two rows of the grid
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1]
    assert (run / "history.csv").read_text().splitlines()[0].startswith("epoch,train_loss,train_acc")
    # 60 digits, 6 per class: 10% of each class, rounded to one image, goes to validation.
    assert "50 training / 10 validation images" in done.stdout
    resume = f"imgzoo train mnist_cnn {tmp / 'mnist'} --out run --resume"
    assert resume in done.stdout
    # Every file the closing line names is where it says: the weights inside their own folder.
    wrote = next(line for line in done.stdout.splitlines() if line.startswith("wrote "))
    assert "weights/ (model.safetensors, config.json, README.md)" in wrote
    assert (run / "weights" / "README.md").is_file() and (run / "metrics.json").is_file()
    assert f"imgzoo train mnist_cnn {tmp / 'mnist'} --out run --epochs 2 --resume" in done.stdout
    record = json.loads((run / "run.json").read_text())
    assert record["finished"] is True and record["config"]["amp"] == "fp32"


def test_evaluate_json_reports_the_runs_validation_metrics(trained):
    tmp, _ = trained
    done = imgzoo("evaluate", "run", "mnist", "--json", "--out", "eval", cwd=tmp)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    saved = json.loads((tmp / "run" / "metrics.json").read_text())  # what train measured on the same split
    assert result["num_samples"] == 10 and result["split"] == "val"
    assert result["top1"] == pytest.approx(saved["top1"]) and result["loss"] == pytest.approx(saved["loss"])
    assert list(result["per_class_accuracy"]) == [str(d) for d in range(10)]
    assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
    assert png_size(tmp / "eval" / "confusion.png")[0] >= 300


def test_evaluate_split_train_measures_the_images_the_run_trained_on(trained):
    tmp, _ = trained
    done = imgzoo("evaluate", "run", "mnist", "--split", "train", "--json", "--out", "eval", cwd=tmp)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    whole = json.loads(imgzoo("evaluate", "run", "mnist", "--split", "all", "--json", "--out", "eval", cwd=tmp).stdout)
    assert result["split"] == "train" and result["num_samples"] == whole["num_samples"] - 10  # all but the 10 val
    before = set(tmp.iterdir())
    text = imgzoo("evaluate", "run", "mnist", "--split", "train", cwd=tmp).stdout
    assert "the training split (90%, seed 0), without augmentation" in text
    assert set(tmp.iterdir()) == before  # without --out nothing is written where it ran (no stray confusion.png)


def test_predict_takes_folders_and_globs_and_prints_json(trained):
    tmp, _ = trained
    write_image_folder(tmp / "digits", ("a", "b"), n_per_class=2, size=(28, 28), ext="png")
    done = imgzoo("predict", "run", "digits/a", "digits/b/*.png", "--topk", "2", "--json", cwd=tmp)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert [Path(a["path"]).parent.name for a in answers] == ["a", "a", "b", "b"]
    for answer in answers:
        assert len(answer["top"]) == 2 and answer["top"][0]["probability"] >= answer["top"][1]["probability"]
        assert {t["class"] for t in answer["top"]} <= {str(d) for d in range(10)}


def test_compare_trains_every_run_of_a_study_and_writes_the_report(tmp_path):
    write_mnist(tmp_path / "data" / "mnist", n_per_class=6)  # 50 training images, limited to 20
    study = tmp_path / "studies" / "tiny.toml"
    study.parent.mkdir()
    study.write_text(
        'title = "tiny"\ndata = "../data/mnist"\namp = "fp32"\nepochs = 3\n'
        '[[run]]\nname = "plain"\nmodel = "mnist_cnn"\naugment = "none"\n'
        '[[run]]\nname = "strong"\nmodel = "mnist_cnn"\naugment = "strong"\nnum_workers = 0\n'
    )
    done = imgzoo("compare", "studies/tiny.toml", "--out", "out", "--epochs", "1", "--limit", "20", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["name"] for r in report["runs"]] == ["plain", "strong"]
    assert [r["augment"] for r in report["runs"]] == ["none", "strong"]
    assert all(r["epochs"] == 1 and r["limit"] == 20 for r in report["runs"])
    table = (tmp_path / "out" / "report.md").read_text()
    assert "| Model | Train accuracy | Val accuracy | Train loss | Val loss | Epochs | Wall time | Images/s |" in table
    assert "every run is validated on the same seeded 10% split of the training images" in table.replace("\n", " ")
    for run in report["runs"]:
        assert f"| {run['name']} | {100 * run['train_acc']:.2f}% | {100 * run['val_acc']:.2f}% |" in table
        assert png_size(tmp_path / "out" / run["samples"])[0] >= 300
    assert done.stdout.count("20 training / 10 validation images") == 2
    assert png_size(tmp_path / "out" / "curves.png")[0] >= 300


def test_demo_classifies_the_shipped_samples_offline(tmp_path):
    # A socket that is opened at all is recorded, and refused: the demo must not try the network.
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(
        "import os, socket\n"
        "def _refuse(*args, **kwargs):\n"
        "    open(os.environ['NETWORK_LOG'], 'a').write(repr(args) + '\\n')\n"
        "    raise OSError('network used')\n"
        "socket.socket.connect = _refuse\nsocket.create_connection = _refuse\nsocket.getaddrinfo = _refuse\n"
    )
    env = imgzoo_env(tmp_path, NETWORK_LOG=str(tmp_path / "network.log"))
    env["PYTHONPATH"] = os.pathsep.join([str(guard), env["PYTHONPATH"]])
    done = imgzoo("demo", "--out", "grids", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "network.log").exists()
    for weights, folder, count in (("mnist_cnn.mnist", "mnist", 30), ("resnet_cifar.cifar10", "cifar10", 30)):
        assert f"{weights} on {count} {folder} validation images" in done.stdout
        width, height = png_size(tmp_path / "grids" / f"demo-{folder}.png")
        assert width > height >= 300  # four rows of eight
    rows = [line for line in done.stdout.splitlines() if line.startswith("7_00123.png")]
    assert len(rows) == 1 and len(rows[0].split()) == 3 + 2 * 5  # file, true, ok, then five (class, p) pairs
    right = [int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("top-1:")]
    assert len(right) == 2 and right[0] >= 27  # the shipped MNIST weights are 99.5% accurate


def test_user_errors_are_one_line_with_status_2_and_no_traceback(tmp_path):
    done = imgzoo("train", "mnist_cnn", "no-such-folder", "--out", "run", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("imgzoo: error: data 'no-such-folder'")
    nothing = imgzoo("models", "nope*", cwd=tmp_path)
    assert nothing.returncode == 1 and "no model matches 'nope*'" in nothing.stderr and nothing.stdout == ""
