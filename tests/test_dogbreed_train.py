"""``imgzoo train dogbreed_transfer DATA`` on the two dog-breed layouts, offline, through the command itself.

The command asks for ImageNet weights (the dogbreed_transfer recipe: ``weights="imagenet"``). No test can
download them, so each one saves a randomly initialised torchvision state dict where torchvision
looks for the ImageNet file ($TORCH_HOME/hub/checkpoints/, under its own file name) and sets
IMGZOO_OFFLINE=1, so that a download is never even tried. The backbone is ResNet-18 rather than
the default ResNet-50 (the same code path in a quarter of the time): the one change made to the
command's defaults.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
import torchvision
from data_factories import write_kaggle_dogs, write_stanford_dogs

import imgzoo
from imgzoo.cli.main import main
from imgzoo.models.dogbreed_transfer import imagenet_weights_path
from imgzoo.train.recipes import RECIPES

RUN_FILES = {"run.json", "history.csv", "history.json", "metrics.json", "curves.png", "samples.png", "confusion.png"}
# The first bytes of a MATLAB 5 file, as Stanford Dogs' lists.tar holds (file_list.mat, train_list.mat, ...).
MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: GLNX86, Created on: Thu Oct 13 2011".ljust(116) + bytes(8) + b"\x00\x01IM"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An offline machine: IMGZOO_OFFLINE=1, an empty torch cache of its own, and no download possible."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("IMGZOO_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("a download was attempted"))
    recipe = RECIPES["dogbreed_transfer"]
    # The recipe's path (a head warm-up, then fit) on a small ResNet-18 at 64 px with its backbone frozen whole.
    kwargs = {"backbone": "resnet18", "weights": "imagenet", "image_size": 64}
    config = dataclasses.replace(recipe.config, head_epochs=1)
    resnet18 = dataclasses.replace(recipe, config=config, model_kwargs=kwargs)
    monkeypatch.setitem(RECIPES, "dogbreed_transfer", resnet18)


@pytest.fixture
def imagenet(offline) -> dict[str, torch.Tensor]:
    """A stand-in for ImageNet's ResNet-18 state dict, saved where torchvision reads the real one from."""
    torch.manual_seed(1)
    saved = torchvision.models.resnet18().state_dict()
    path = Path(imagenet_weights_path("resnet18"))
    path.parent.mkdir(parents=True)
    torch.save(saved, path)
    return saved


def train(data: Path, out: Path, capsys) -> str:
    """``imgzoo train dogbreed_transfer DATA --out OUT`` for one epoch; what it printed."""
    code = main(["train", "dogbreed_transfer", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "4"])
    said = capsys.readouterr()
    assert code == 0, said.err
    return said.out


def check_run_folder(out: Path, classes: list[str], imagenet: dict[str, torch.Tensor]) -> None:
    """The run's files and record, and its model: the data's classes over the untouched ImageNet backbone."""
    assert {p.name for p in out.iterdir()} >= RUN_FILES
    assert (out / "weights" / "model.safetensors").is_file() and (out / "checkpoints" / "last.pt").is_file()
    record = json.loads((out / "run.json").read_text())
    kwargs = {"backbone": "resnet18", "weights": "imagenet", "image_size": 64}
    assert record["finished"] and record["config"]["kwargs"] == kwargs
    assert json.loads((out / "history.json").read_text())["epoch"] == [1]
    assert list(json.loads((out / "metrics.json").read_text())["per_class_accuracy"]) == classes
    model = imgzoo.load(out / "weights")
    assert list(model.data_spec.class_names) == classes and model.classifier.out_features == len(classes)
    # weights="imagenet" read the cached file, and the frozen backbone (batch-norm statistics included) kept it.
    trunk = model.backbone.state_dict()
    assert set(trunk) == set(imagenet) - {"fc.weight", "fc.bias"}
    assert [name for name in trunk if not torch.equal(trunk[name], imagenet[name])] == []


def test_stanford_dogs_trains_with_the_breeds_of_its_folder_names(tmp_path, imagenet, capsys):
    data = write_stanford_dogs(tmp_path / "stanford", n_per_class=3)
    # The rest of the download beside Images/: annotation.tar's boxes and lists.tar's .mat files.
    (data / "Annotation" / "n02085620-Chihuahua").mkdir(parents=True)
    (data / "Annotation" / "n02085620-Chihuahua" / "n02085620_0").write_text("<annotation></annotation>\n")
    for name in ("file_list.mat", "train_list.mat", "test_list.mat"):
        (data / name).write_bytes(MAT_HEADER)

    said = train(data, tmp_path / "run", capsys)
    # The .mat lists are not read: imgzoo splits all of Images/ itself, 10% (stratified, seeded) for validation.
    assert re.search(r"\b6 training / 3 validation images", said)
    check_run_folder(tmp_path / "run", ["Chihuahua", "Japanese_spaniel", "Maltese_dog"], imagenet)


def test_kaggle_dog_breeds_trains_with_the_breeds_of_labels_csv(tmp_path, imagenet, capsys):
    breeds = ("whippet", "affenpinscher", "boston_bull")
    data = write_kaggle_dogs(tmp_path / "kaggle", n_per_class=3, breeds=breeds, sample_submission=True)
    (data / "test").mkdir()  # the competition's unlabelled images: not training data
    (data / "test" / "0042.jpg").write_bytes(next((data / "train").iterdir()).read_bytes())

    said = train(data, tmp_path / "run", capsys)
    assert re.search(r"\b6 training / 3 validation images", said)
    check_run_folder(tmp_path / "run", sorted(breeds), imagenet)


def test_offline_without_the_imagenet_file_names_it_and_writes_nothing(tmp_path, offline, capsys):
    data = write_kaggle_dogs(tmp_path / "kaggle")
    code = main(["train", "dogbreed_transfer", str(data), "--out", str(tmp_path / "run"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert imagenet_weights_path("resnet18") in err and "IMGZOO_OFFLINE=1 forbids downloading" in err
    assert "TORCH_HOME" in err and "download.pytorch.org/models/resnet18-" in err  # where to put it, where to get it
    assert not (tmp_path / "run").exists()
