"""The ``imgzoo`` command, run in-process."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import imgzoo
from imgzoo.cli.main import main
from imgzoo.hub.pretrained import entry_from_folder
from imgzoo.models.registry import get_model_entry, register_weights, unregister_weights


def rows(output: str) -> dict[str, list[str]]:
    """Table rows keyed by model name (the header and the rule line dropped)."""
    lines = output.strip().split("\n\n")[0].splitlines()  # the models table; the weights table follows
    assert lines[0].split()[:3] == ["name", "params", "trainable"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    return {line.split()[0]: line.split() for line in lines[2:]}


def millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def test_models_prints_one_row_per_model_with_parameter_counts(capsys):
    assert main(["models"]) == 0
    table = rows(capsys.readouterr().out)
    assert list(table) == imgzoo.list_models()
    for name, cells in table.items():
        model = imgzoo.create_model(name)
        spec = get_model_entry(name).default_spec
        assert cells[1] == millions(sum(p.numel() for p in model.parameters()))
        assert cells[2] == millions(sum(p.numel() for p in model.parameters() if p.requires_grad))
        line = " ".join(cells)
        assert str(tuple(spec.input_shape)) in line and "(2, " not in line  # one image's shapes, not the probe's
        assert str((spec.num_classes,)) in line
        assert "`" not in line  # a docstring's ``code`` and :func:`roles` are shown as plain text


def test_models_also_lists_the_pretrained_weights(capsys):
    assert main(["models"]) == 0
    weights_table = capsys.readouterr().out.strip().split("\n\n")[1].splitlines()
    assert weights_table[0].split()[0] == "name"
    assert [line.split()[0] for line in weights_table[2:]] == imgzoo.list_pretrained()


def test_models_pattern_filters_rows(capsys):
    assert main(["models", "*cnn"]) == 0
    assert list(rows(capsys.readouterr().out)) == imgzoo.list_models("*cnn")
    assert main(["models", "mnist*"]) == 0  # the weights table lists only the weights the pattern matches
    assert [line.split()[0] for line in capsys.readouterr().out.split("\n\n")[1].splitlines()[2:]] == [
        "mnist_cnn.mnist"
    ]


def test_frozen_backbone_shows_fewer_trainable_parameters(capsys):
    assert main(["models", "dogbreed_transfer"]) == 0
    cells = rows(capsys.readouterr().out)["dogbreed_transfer"]
    assert float(cells[2].rstrip("M")) < float(cells[1].rstrip("M"))


def test_no_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: imgzoo" in capsys.readouterr().err


@pytest.fixture
def shipped_digits(tmp_path):
    """A saved mnist_cnn registered as a packaged weights entry, the way imgzoo's own entries are."""
    torch.manual_seed(0)
    model = imgzoo.create_model("mnist_cnn").eval()
    folder = imgzoo.save(model, tmp_path / "weights", metrics={"val_acc": 0.9912}, recipe={"epochs": 1})
    entry = register_weights(entry_from_folder("mnist_cnn.cli_test", folder, package_dir=str(folder)))
    yield model, entry
    unregister_weights(entry.name)


def test_pretrained_lists_each_entry_with_its_metrics_and_files(capsys, shipped_digits):
    _, entry = shipped_digits
    assert main(["pretrained", "*.cli_test"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["name", "dataset", "metrics", "params", "files"]
    assert len(lines) == 3
    assert lines[2].split()[:2] == ["mnist_cnn.cli_test", "mnist"]
    assert "val_acc 0.9912" in lines[2] and f"package:{entry.package_dir}" in lines[2]


def test_predict_prints_the_models_top_classes_for_each_file(capsys, tmp_path, shipped_digits):
    model, entry = shipped_digits
    paths = []
    for i, value in enumerate((0, 255)):
        path = tmp_path / f"digit{i}.png"
        Image.new("RGB", (40, 30), (value, value // 2, 0)).save(path)  # any size and mode: the eval transform copes
        paths.append(str(path))
    assert main(["predict", entry.name, *paths, "--topk", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for path, line in zip(paths, lines, strict=True):
        expected = imgzoo.predict(model, path, topk=2)
        assert line == f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in expected)


def test_predict_with_an_unknown_name_is_a_clear_error(capsys, tmp_path):
    assert main(["predict", "mnist_cnn.nope", str(tmp_path / "x.png")]) == 2
    assert "imgzoo: error:" in capsys.readouterr().err


def test_models_and_pretrained_say_when_nothing_matches(capsys):
    assert main(["models", "nope*"]) == 1
    assert main(["pretrained", "nope*"]) == 1
    err = capsys.readouterr().err
    assert "no model matches 'nope*'" in err and "no weights name matches 'nope*'" in err


def test_user_errors_exit_2_and_failures_of_the_work_exit_1():
    from imgzoo.cli.main import exit_status
    from imgzoo.hub.api import HubAuthError, WeightsNotFoundError

    for error in (ValueError(), FileNotFoundError(), WeightsNotFoundError(), HubAuthError(), ImportError()):
        assert exit_status(error) == 2, error
    for error in (FloatingPointError(), RuntimeError(), ConnectionError(), MemoryError()):
        assert exit_status(error) == 1, error


def test_debug_shows_the_error_itself_instead_of_one_line(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="x.png does not exist"):
        main(["predict", "--debug", "mnist_cnn.mnist", str(tmp_path / "x.png")])
    assert main(["predict", "mnist_cnn.mnist", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_predict_expands_folders_recursively_and_globs_in_order(tmp_path):
    from imgzoo.cli.main import image_paths

    for name in ("b/2.png", "b/deeper/3.jpg", "a.png", "c.PNG"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(tmp_path / name, format="PNG" if name.lower().endswith("png") else "JPEG")
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    found = image_paths([str(tmp_path / "b"), str(tmp_path / "*.png"), str(tmp_path / "c.PNG")])
    assert [p.removeprefix(str(tmp_path) + "/") for p in found] == ["b/2.png", "b/deeper/3.jpg", "a.png", "c.PNG"]
    with pytest.raises(FileNotFoundError, match="names no image files"):
        image_paths([str(tmp_path / "*.gif")])


def test_evaluate_tta_alone_measures_with_the_mode_the_weights_were_published_with(tmp_path, capsys):
    import json

    from data_factories import write_mnist

    from imgzoo.study.config import recorded_tta

    # Each shipped entry's card states its figures with its recipe's mode: digits are never mirrored.
    assert recorded_tta("mnist_cnn.mnist") == "shift"
    assert recorded_tta("resnet_cifar.cifar10") == "flip+shift"
    write_mnist(tmp_path / "mnist", n_per_class=3)
    command = ["evaluate", "mnist_cnn.mnist", str(tmp_path / "mnist"), "--json", "--out", str(tmp_path / "fig")]
    assert main([*command, "--tta"]) == 0
    assert json.loads(capsys.readouterr().out)["tta"] == "shift"
    assert main(command) == 0
    assert json.loads(capsys.readouterr().out)["tta"] == "none"


def test_evaluate_tta_on_weights_that_record_none_asks_for_a_mode(tmp_path, capsys):
    imgzoo.save(imgzoo.create_model("mnist_cnn"), tmp_path / "w")  # saved without a recipe
    assert main(["evaluate", str(tmp_path / "w"), str(tmp_path), "--tta"]) == 2
    err = capsys.readouterr().err
    assert "records no test-time augmentation" in err and "--tta flip+shift" in err


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"imgzoo {imgzoo.__version__}"


def test_evaluate_refuses_data_whose_classes_the_model_does_not_predict(capsys, tmp_path):
    from data_factories import write_image_folder

    write_image_folder(tmp_path / "pets", ("cat", "dog"), n_per_class=3)
    assert main(["evaluate", "mnist_cnn.mnist", str(tmp_path / "pets"), "--out", str(tmp_path / "fig")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"imgzoo: error: {tmp_path / 'pets'} has 2 classes (cat, dog) but the model predicts 10")
    assert not (tmp_path / "confusion.png").exists()


def test_a_limit_or_topk_below_one_is_refused_before_anything_is_written(tmp_path, capsys):
    from data_factories import write_mnist

    write_mnist(tmp_path / "mnist", n_per_class=2)
    out = tmp_path / "run"
    assert main(["train", "mnist_cnn", str(tmp_path / "mnist"), "--out", str(out), "--limit", "0"]) == 2
    assert "limit must be a positive integer; got 0" in capsys.readouterr().err and not out.exists()
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    assert main(["predict", "mnist_cnn.mnist", str(tmp_path / "x.png"), "--topk", "0"]) == 2
    assert "topk must be a positive integer" in capsys.readouterr().err
