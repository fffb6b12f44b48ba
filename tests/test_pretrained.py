"""imgzoo's own weights entries: each loads, verifies, and documents itself truthfully."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch

import imgzoo
from imgzoo.hub.format import CONFIG_NAME, WEIGHTS_NAME, read_config, sha256_of
from imgzoo.hub.pretrained import PRETRAINED, REQUIRED_META

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = [e for e in PRETRAINED if e.package_dir is not None]


def test_there_are_builtin_entries_and_every_one_is_listed():
    assert PRETRAINED, "imgzoo ships at least one pretrained checkpoint"
    assert {e.name for e in PRETRAINED} <= set(imgzoo.list_pretrained())


@pytest.mark.parametrize("entry", PRETRAINED, ids=lambda e: e.name)
def test_entry_loads_and_its_meta_matches_the_model(entry):
    assert set(REQUIRED_META) <= set(entry.meta)
    model = imgzoo.load(entry.name)  # verifies the sha256 before reading a tensor
    assert not model.training
    assert model.imgzoo_arch == entry.arch
    assert entry.meta["num_params"] == sum(p.numel() for p in model.parameters())
    assert list(entry.meta["categories"]) == list(model.data_spec.class_names)
    assert entry.meta["dataset"] == model.data_spec.name
    assert 0.0 < entry.meta["metrics"]["val_acc"] <= 1.0
    x = torch.zeros(2, *model.data_spec.input_shape)
    with torch.no_grad():
        assert model(x).shape == (2, model.data_spec.num_classes)


@pytest.mark.parametrize("entry", PACKAGED, ids=lambda e: e.name)
def test_packaged_files_are_in_the_package_and_agree_with_the_entry(entry):
    folder = ROOT / "imgzoo" / "hub" / "weights" / entry.package_dir
    assert sha256_of(folder / WEIGHTS_NAME) == entry.sha256
    # config.json sets class names and preprocessing: a shipped entry pins it as well as the weights.
    assert entry.config_sha256 == sha256_of(folder / CONFIG_NAME)
    config = read_config(folder / CONFIG_NAME)
    assert config["architecture"] == entry.arch
    assert config["metrics"]["val_acc"] == entry.meta["metrics"]["val_acc"]
    # setuptools ships the folder only if package-data covers it.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["imgzoo.hub"]
    relative = (folder / WEIGHTS_NAME).relative_to(ROOT / "imgzoo" / "hub")
    assert any(fnmatch(relative.as_posix(), g) for g in globs)


def test_pretrained_true_loads_the_entry_marked_default():
    (default,) = [e.name for e in PRETRAINED if e.arch == "mnist_cnn" and e.default]
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(imgzoo.create_model("mnist_cnn", pretrained=True)(x), imgzoo.load(default)(x))


def test_every_shipped_architecture_marks_exactly_one_default():
    # Explicit, as torchvision's DEFAULT: a later entry with a better-sorting tag must not take over.
    for arch in {e.arch for e in PRETRAINED}:
        assert [e.default for e in PRETRAINED if e.arch == arch].count(True) == 1, arch


@pytest.mark.parametrize("entry", [e for e in PRETRAINED if e.repo_id is not None], ids=lambda e: e.name)
def test_hub_entries_pin_a_commit_sha(entry):
    # A branch or tag can move under a published sha256; a commit cannot.
    assert len(entry.revision) == 40 and all(c in "0123456789abcdef" for c in entry.revision)
