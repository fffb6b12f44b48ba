"""Study files: read and checked whole before anything trains; the report's table."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_factories import write_mnist

from imgzoo.eval.history import History
from imgzoo.study.compare import RUN_KEYS, STUDY_KEYS, Comparison, load_study

ROOT = Path(__file__).resolve().parent.parent


def test_the_example_study_is_the_original_notebooks_four_runs():
    study = load_study(ROOT / "examples" / "study.toml")
    assert list(study.runs) == ["basic-cnn", "basic-cnn-augmented", "resnet20", "resnet20-strong"]
    assert [c.model for c in study.runs.values()] == ["basic_cnn", "basic_cnn", "resnet_cifar", "resnet_cifar"]
    assert [c.fit.augment for c in study.runs.values()] == ["none", "standard", "none", "strong"]
    assert study.data == "cifar10" and all(c.data == "cifar10" for c in study.runs.values())
    assert study.runs["resnet20"].kwargs == {"depth": 20}
    quick = load_study(ROOT / "examples" / "study.toml", epochs=2, limit=2000)
    assert all((c.fit.epochs, c.limit) == (2, 2000) for c in quick.runs.values())


def write_study(tmp_path: Path, text: str) -> Path:
    write_mnist(tmp_path / "data", n_per_class=2)
    (tmp_path / "studies").mkdir(exist_ok=True)
    path = tmp_path / "studies" / "s.toml"
    path.write_text('data = "../data"\n' + text)
    return path


def test_data_is_relative_to_the_study_file_and_top_level_options_are_defaults(tmp_path):
    path = write_study(tmp_path, 'epochs = 4\nlabel_smoothing = 0.1\n[[run]]\nmodel = "mnist_cnn"\nepochs = 2\n')
    study = load_study(path)
    config = study.runs["mnist_cnn"]  # a run without a name is called after its model
    assert config.data == str((tmp_path / "data").resolve())
    assert config.fit.epochs == 2 and config.fit.label_smoothing == 0.1  # the file's, over the recipe's


def test_data_given_replaces_the_files_own_relative_to_the_working_directory(tmp_path, monkeypatch):
    write_mnist(tmp_path / "elsewhere", n_per_class=2)
    monkeypatch.chdir(tmp_path)
    study = load_study(ROOT / "examples" / "study.toml", data="elsewhere")  # the file says "cifar10": a download
    assert study.data == str((tmp_path / "elsewhere").resolve())
    assert all(config.data == study.data for config in study.runs.values())
    with pytest.raises(FileNotFoundError, match="'nowhere' is neither a folder nor a known data set"):
        load_study(ROOT / "examples" / "study.toml", data="nowhere")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('epochz = 3\n[[run]]\nmodel = "mnist_cnn"\n', "unknown key\\(s\\) epochz; known keys: title, data, run"),
        ('[[run]]\nmodel = "mnist_cnn"\nagument = "none"\n', "run 1: unknown key\\(s\\) agument; known keys: name"),
        ('[[run]]\nname = "a"\n', "run 1 names no model"),
        ('[[run]]\nmodel = "mnist_cnn"\n[[run]]\nmodel = "mnist_cnn"\n', "run 2: the name 'mnist_cnn' is used"),
        (
            '[[run]]\nmodel = "resnet_cifar"\nkwargs = { deep = 20 }\n',
            "run 1: unknown kwarg\\(s\\) deep; resnet_cifar takes depth",
        ),
        ('[[run]]\nmodel = "mnist_cnn"\nschedule = "triangle"\n', "run 1: fit: schedule must be"),
        ('[[run]]\nmodel = "mnist_cnn"\naugment = "heavy"\n', "run 1: fit: augment must be one of"),
        ('[[run]]\nmodel = "mnist_cnn"\ncheckpoint_dir = "x"\n', "unknown key\\(s\\) checkpoint_dir"),
        ("", "has no runs"),
        ("[[run]\n", "is not valid TOML"),
    ],
    ids=["top", "run", "no-model", "same-name", "kwargs", "fit-value", "augment", "runner-owned", "empty", "toml"],
)
def test_a_mistake_anywhere_in_a_study_is_refused_before_training(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_study(write_study(tmp_path, text))


def test_every_run_key_but_name_model_and_kwargs_may_be_a_study_default():
    assert set(RUN_KEYS) - set(STUDY_KEYS) == {"name", "model", "kwargs"}
    assert {"optimizer", "weight_decay", "max_time", "epochs", "augment", "limit"} <= set(STUDY_KEYS)


def test_the_report_table_adds_epochs_wall_time_and_images_per_second():
    history = History()
    for epoch, speed in ((1, 100.0), (2, 300.0)):
        row = {"train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.2, "val_acc": 0.4, "lr": 0.1, "time": 2.5}
        history.append(epoch=epoch, images_per_sec=speed, **row)
    table = Comparison({"run-a": history}).to_markdown(timing=True).splitlines()
    assert table[0].endswith("| Val loss | Epochs | Wall time | Images/s |")
    assert table[2] == "| run-a | 50.00% | 40.00% | 1.0000 | 1.2000 | 2 | 5.0 s | 200 |"
