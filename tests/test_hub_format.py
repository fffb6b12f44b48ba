"""imgzoo.save / imgzoo.load on local folders: the checkpoint format, loading rules and the model card."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pickle
import stat
import subprocess
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

import imgzoo
from imgzoo.hub import card as model_card
from imgzoo.hub.api import WeightsNotFoundError
from imgzoo.hub.format import (
    CheckpointError,
    ChecksumError,
    NewHeadWarning,
    sha256_of,
    strip_prefixes,
)
from imgzoo.hub.pretrained import REQUIRED_META, check_meta, entry_from_folder
from imgzoo.models.registry import MNIST, register_weights, unregister_weights

# The cheap architectures; dogbreed_transfer has its own test below with its smallest backbone.
SMALL = [("mnist_cnn", {}), ("basic_cnn", {}), ("resnet_cifar", {"depth": 8})]


def _history() -> object:
    data = {
        "epoch": [1, 2, 3],
        "train_loss": [1.9, 1.2, 0.8],
        "train_acc": [0.31, 0.55, 0.71],
        "val_loss": [1.7, 1.3, 1.0],
        "val_acc": [0.35, 0.52, 0.66],
        "lr": [0.1, 0.1, 0.01],
        "time": [1.0, 1.0, 1.0],
        "images_per_sec": [500.0, 510.0, 505.0],
    }
    history_cls = getattr(imgzoo, "History", None)
    return history_cls.from_dict(data) if history_cls is not None else data


def _batch(model: nn.Module, n: int = 3) -> torch.Tensor:
    return torch.randn(n, *model.data_spec.input_shape, generator=torch.Generator().manual_seed(0))


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def _trained(arch: str, **kwargs) -> nn.Module:
    """A model whose weights differ from a fresh build, so a load that silently did nothing fails."""
    torch.manual_seed(1)
    model = imgzoo.create_model(arch, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.add_(0.1)
    return model.eval()


@pytest.mark.parametrize(("arch", "kwargs"), SMALL)
def test_save_then_load_gives_equal_outputs(tmp_path, arch, kwargs):
    model = _trained(arch, **kwargs)
    folder = imgzoo.save(model, tmp_path / "ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    loaded = imgzoo.load(str(folder))
    x = _batch(model)
    assert torch.equal(_outputs(model, x), _outputs(loaded, x))
    assert not loaded.training
    assert loaded.imgzoo_kwargs == model.imgzoo_kwargs
    assert loaded.data_spec == model.data_spec


def test_saving_the_same_weights_twice_writes_the_same_bytes(tmp_path):
    # A weights entry pins the sha256 of model.safetensors, so saving must be byte-reproducible.
    model = _trained("mnist_cnn")
    digests = {sha256_of(imgzoo.save(model, tmp_path / str(i)) / "model.safetensors") for i in range(8)}
    assert len(digests) == 1


def test_saved_files_get_the_usual_permissions_not_owner_only(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    folder = imgzoo.save(_trained("mnist_cnn"), tmp_path / "shared")
    for name in ("model.safetensors", "config.json", "README.md"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o666 & ~umask, name


def test_config_records_what_rebuilds_the_model(tmp_path):
    model = _trained("resnet_cifar", depth=8, num_classes=10)
    imgzoo.save(model, tmp_path, recipe={"epochs": 3, "lr": 0.1}, metrics={"test_acc": 0.61})
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"] == "resnet_cifar"
    assert config["kwargs"]["depth"] == 8
    assert config["imgzoo_version"] == imgzoo.__version__
    assert config["num_classes"] == 10
    assert config["class_names"] == list(model.data_spec.class_names)
    assert config["data_spec"] == json.loads(json.dumps(model.data_spec.to_dict()))
    assert config["num_params"] == sum(p.numel() for p in model.parameters())
    assert config["recipe"] == {"epochs": 3, "lr": 0.1}
    assert config["metrics"] == {"test_acc": 0.61}


def test_loaded_model_has_class_names_and_its_preprocessing_from_for_model(tmp_path):
    model = _trained("mnist_cnn")
    imgzoo.save(model, tmp_path)
    loaded = imgzoo.load(tmp_path)
    assert loaded.data_spec.class_names == tuple(str(d) for d in range(10))
    image = torch.randint(0, 256, (28, 28), dtype=torch.uint8).numpy()
    x = imgzoo.data.transforms.for_model(loaded)(image)
    assert tuple(x.shape) == loaded.data_spec.input_shape
    assert _outputs(loaded, x.unsqueeze(0)).shape == (1, 10)


@pytest.mark.parametrize("wrap", ["dataparallel", "compile"])
def test_wrapped_models_save_clean_keys(tmp_path, wrap):
    model = _trained("mnist_cnn")
    wrapped = nn.DataParallel(model) if wrap == "dataparallel" else torch.compile(model)
    imgzoo.save(wrapped, tmp_path)
    keys = load_file(tmp_path / "model.safetensors").keys()
    assert not [k for k in keys if k.startswith(("module.", "_orig_mod."))]
    x = _batch(model)
    assert torch.equal(_outputs(model, x), _outputs(imgzoo.load(tmp_path), x))


def test_prefixed_keys_written_by_other_tools_are_stripped(tmp_path):
    model = _trained("mnist_cnn")
    imgzoo.save(model, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file({f"module._orig_mod.{k}": v for k, v in state.items()}, tmp_path / "model.safetensors")
    x = _batch(model)
    assert torch.equal(_outputs(model, x), _outputs(imgzoo.load(tmp_path), x))


@given(
    keys=st.lists(st.text(alphabet="ab.", min_size=1, max_size=8), min_size=1, max_size=6),
    prefixes=st.lists(st.sampled_from(["module.", "_orig_mod."]), max_size=3),
)
def test_strip_prefixes_undoes_any_nesting_of_wrappers(keys, prefixes):
    state = {k: torch.zeros(1) for k in keys}
    prefix = "".join(prefixes)
    assert list(strip_prefixes({prefix + k: v for k, v in state.items()})) == [k for k in strip_prefixes(state)]


def test_a_submodule_named_module_is_not_stripped():
    state = {"module.weight": torch.zeros(1), "head.weight": torch.zeros(1)}
    assert list(strip_prefixes(state)) == ["module.weight", "head.weight"]


def test_new_num_classes_loads_all_but_the_classifier_and_says_so(tmp_path):
    model = _trained("resnet_cifar", depth=8)
    imgzoo.save(model, tmp_path)
    with pytest.warns(NewHeadWarning, match="NOT the classifier.*10 classes.*model 3") as caught:
        loaded = imgzoo.load(tmp_path, num_classes=3, class_names=["a", "b", "c"])
    assert caught[0].filename == __file__
    assert loaded.classifier.out_features == 3
    assert loaded.data_spec.class_names == ("a", "b", "c")
    assert loaded.data_spec.mean == model.data_spec.mean
    saved, got = model.state_dict(), loaded.state_dict()
    body = [k for k in saved if not k.startswith("classifier.")]
    assert body and all(torch.equal(saved[k], got[k]) for k in body)


def test_same_num_classes_loads_strictly_without_warning(tmp_path):
    imgzoo.save(_trained("mnist_cnn"), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imgzoo.load(tmp_path, num_classes=10)


@pytest.mark.parametrize("bad", [0, -1, "3", 2.0, True])
def test_a_new_num_classes_must_be_a_positive_integer(tmp_path, bad):
    imgzoo.save(_trained("mnist_cnn"), tmp_path)
    with pytest.raises(ValueError, match=rf"num_classes must be a positive integer.*got {bad!r}"):
        imgzoo.load(tmp_path, num_classes=bad)


def test_shape_changing_override_is_refused_with_the_differing_keys(tmp_path):
    imgzoo.save(_trained("mnist_cnn", hidden=64), tmp_path)
    with pytest.raises(CheckpointError, match=r"do not fit mnist_cnn.*different shapes.*head\.2\.weight"):
        imgzoo.load(tmp_path, hidden=32)


def test_shape_neutral_override_is_allowed(tmp_path):
    model = _trained("mnist_cnn", dropout=0.25)
    imgzoo.save(model, tmp_path)
    loaded = imgzoo.load(tmp_path, dropout=0.5)
    assert loaded.imgzoo_kwargs["dropout"] == 0.5
    x = _batch(model)
    assert torch.equal(_outputs(model, x), _outputs(loaded, x))  # dropout is off in eval mode


def test_missing_tensor_is_refused(tmp_path):
    imgzoo.save(_trained("mnist_cnn"), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["features.0.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"1 missing \(features\.0\.weight\)"):
        imgzoo.load(tmp_path)


def test_config_of_another_architecture_is_refused(tmp_path):
    imgzoo.save(_trained("mnist_cnn"), tmp_path)
    with pytest.raises(CheckpointError, match="holds a 'mnist_cnn' checkpoint, not 'basic_cnn'"):
        imgzoo.load(tmp_path, architecture="basic_cnn")


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="only pickle checkpoints.*pytorch_model.bin.*arbitrary code"):
        imgzoo.load(folder)
    assert not marker.exists()


def test_missing_folder_and_missing_config_are_clear(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no folder"):
        imgzoo.load(tmp_path / "absent")
    imgzoo.save(_trained("mnist_cnn"), tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        imgzoo.load(tmp_path)
    (tmp_path / "config.json").write_text('{"architecture": "mnist_cnn"}')
    with pytest.raises(CheckpointError, match="not an imgzoo config"):
        imgzoo.load(tmp_path)


def test_failed_save_leaves_the_folder_as_it_was(tmp_path):
    imgzoo.save(_trained("mnist_cnn"), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    model = _trained("basic_cnn")
    model.imgzoo_kwargs = {**model.imgzoo_kwargs, "activation": nn.ReLU()}  # not JSON
    with pytest.raises(TypeError, match="plain JSON"):
        imgzoo.save(model, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_save_refuses_a_model_not_built_by_imgzoo(tmp_path):
    with pytest.raises(TypeError, match="built by imgzoo"):
        imgzoo.save(nn.Linear(2, 2), tmp_path)
    assert not list(tmp_path.iterdir())


def test_load_gives_the_same_kind_of_object_as_create_model(tmp_path):
    model = imgzoo.create_model("resnet_cifar", depth=8)
    imgzoo.save(model, tmp_path)
    loaded = imgzoo.load(tmp_path)
    assert type(loaded) is type(model)
    assert [name for name, _ in loaded.named_modules()] == [name for name, _ in model.named_modules()]
    assert set(vars(loaded)) == set(vars(model))


def test_a_run_folder_loads_its_weights_and_an_architecture_name_its_default_weights(tmp_path, monkeypatch):
    model = imgzoo.create_model("resnet_cifar", depth=8)
    imgzoo.save(model, tmp_path / "run" / "weights")  # as `imgzoo train --out run` leaves it
    loaded = imgzoo.load(tmp_path / "run")
    assert all(
        torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    with pytest.raises(WeightsNotFoundError, match="has no model.safetensors \\(nor weights/model.safetensors\\)"):
        imgzoo.load(tmp_path)
    by_arch, by_name = imgzoo.load("resnet_cifar"), imgzoo.load("resnet_cifar.cifar10")  # its default=True entry
    assert all(
        torch.equal(a, b) for a, b in zip(by_arch.state_dict().values(), by_name.state_dict().values(), strict=True)
    )
    monkeypatch.chdir(tmp_path)
    imgzoo.save(model, tmp_path / "resnet_cifar")  # a folder of that name: the folder is meant
    assert imgzoo.load("resnet_cifar").state_dict().keys() == model.state_dict().keys()  # depth 8, not 20


# --- saving is atomic as a whole -----------------------------------------------------------------


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_save_that_fails_between_files_leaves_the_complete_old_version(tmp_path, monkeypatch):
    folder = imgzoo.save(_trained("mnist_cnn"), tmp_path / "ckpt", metrics={"val_acc": 0.5})
    before, siblings = _contents(folder), sorted(p.name for p in tmp_path.iterdir())

    def crash(path, text):  # the card is written after the weights and the config
        raise OSError("disk full")

    monkeypatch.setattr(imgzoo.hub.api, "atomic_write_text", crash)
    with pytest.raises(OSError, match="disk full"):
        imgzoo.save(_trained("resnet_cifar", depth=8), folder, metrics={"val_acc": 0.9})
    assert _contents(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # the half-written copy is gone
    with pytest.raises(OSError, match="disk full"):
        imgzoo.save(_trained("mnist_cnn"), tmp_path / "new")
    assert not (tmp_path / "new").exists()


_CRASH_BETWEEN_FILES = """
import os, sys, imgzoo, imgzoo.hub.format as fmt
fmt.atomic_write_text = lambda path, text: os._exit(3)  # dies after model.safetensors, before config.json
imgzoo.save(imgzoo.create_model("resnet_cifar", depth=8), sys.argv[1])
"""


def test_a_process_killed_between_files_leaves_the_complete_old_version(tmp_path):
    folder = imgzoo.save(_trained("mnist_cnn"), tmp_path / "ckpt")
    before = _contents(folder)
    for target in (folder, tmp_path / "new"):
        done = subprocess.run([sys.executable, "-c", _CRASH_BETWEEN_FILES, str(target)], capture_output=True)
        assert done.returncode == 3, done.stderr.decode()[-2000:]
    assert _contents(folder) == before
    assert imgzoo.load(folder).imgzoo_arch == "mnist_cnn"
    assert not (tmp_path / "new").exists()


def test_save_replaces_an_older_checkpoint_but_not_a_folder_holding_other_files(tmp_path):
    folder = imgzoo.save(_trained("mnist_cnn"), tmp_path / "ckpt", _history())
    assert (folder / "curves.png").is_file()
    imgzoo.save(_trained("basic_cnn"), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.ckpt").write_bytes(b"training state")
    with pytest.raises(FileExistsError, match=r"holds other files \(last.ckpt\).*folder of its own"):
        imgzoo.save(_trained("mnist_cnn"), tmp_path / "run")
    assert _contents(tmp_path / "run") == {"last.ckpt": b"training state"}


# --- a user's model: the model contract and the registering module -------------------------------

_USER_MODULE = """
from torch import nn

from imgzoo.models.registry import MNIST, register_model


class Tiny(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))
{contract}

@register_model("{arch}", default_spec=MNIST)
def tiny(*, num_classes: int = 10) -> Tiny:
    return Tiny(num_classes)
"""
_CONTRACT = """
    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes):
        self.fc = nn.Linear(self.fc.in_features, num_classes)
"""


def _user_model(tmp_path: Path, monkeypatch, *, contract: bool = True) -> tuple[str, str]:
    """Write and import a module registering a model whose head is called ``fc``; (module, arch)."""
    tag = uuid.uuid4().hex[:8]
    module, arch = f"imgzoo_user_models_{tag}", f"user_tiny_{tag}"
    source = _USER_MODULE.format(arch=arch, contract=_CONTRACT if contract else "")
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(module)
    return module, arch


def test_a_new_head_goes_through_get_classifier_and_reset_classifier(tmp_path, monkeypatch):
    _, arch = _user_model(tmp_path, monkeypatch)
    model = _trained(arch)
    folder = imgzoo.save(model, tmp_path / "ckpt")
    with pytest.warns(NewHeadWarning, match="loaded 2 tensors but NOT the classifier.*10 classes.*model 4"):
        loaded = imgzoo.hub.api.load(folder, num_classes=4)
    assert loaded.fc.out_features == 4
    assert loaded.data_spec.num_classes == 4 and loaded.imgzoo_kwargs["num_classes"] == 4
    assert torch.equal(loaded.body[1].weight, model.body[1].weight)
    # It saves and reloads as the 4-class model it now is, without another warning.
    again = imgzoo.save(loaded, tmp_path / "again")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reloaded = imgzoo.hub.api.load(again)
    x = _batch(loaded)
    assert torch.equal(_outputs(loaded, x), _outputs(reloaded, x))


def test_a_model_without_the_head_contract_says_which_methods_to_add(tmp_path, monkeypatch):
    _, arch = _user_model(tmp_path, monkeypatch, contract=False)
    folder = imgzoo.save(_trained(arch), tmp_path / "ckpt")
    with pytest.raises(TypeError, match=r"get_classifier\(\) and reset_classifier\(num_classes\) on Tiny"):
        imgzoo.hub.api.load(folder, num_classes=4)
    assert imgzoo.hub.api.load(folder).fc.out_features == 10  # the same head needs no contract


_LOAD = "import sys, imgzoo\nprint(imgzoo.load(sys.argv[1]).imgzoo_arch)"


def test_a_new_process_is_told_which_module_registers_a_users_model(tmp_path, monkeypatch):
    module, arch = _user_model(tmp_path, monkeypatch)
    folder = imgzoo.save(_trained(arch), tmp_path / "ckpt")
    assert json.loads((folder / "config.json").read_text())["builder_module"] == module
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(imgzoo.__file__).parents[1]), str(tmp_path)])
    done = subprocess.run([sys.executable, "-c", _LOAD, str(folder)], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert f"CheckpointError: {folder} holds a '{arch}' checkpoint" in done.stderr
    assert f"`import {module}` first" in done.stderr
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}\n{_LOAD}", str(folder)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == arch


def test_dogbreed_checkpoint_does_not_fetch_imagenet_weights(tmp_path):
    model = _trained("dogbreed_transfer", backbone="resnet18", num_classes=5)
    # As if trained from ImageNet weights: loading must not reach for them again.
    model.imgzoo_kwargs = {**model.imgzoo_kwargs, "weights": "imagenet"}
    imgzoo.save(model, tmp_path)
    loaded = imgzoo.load(tmp_path)
    assert loaded.imgzoo_kwargs["weights"] is None
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(_outputs(model, x), _outputs(loaded, x))


# --- model card ----------------------------------------------------------------------------------


def test_model_card_metadata_and_curves(tmp_path):
    model = _trained("resnet_cifar", depth=8)
    imgzoo.save(model, tmp_path, _history(), recipe={"epochs": 3})
    card = ModelCard.load(tmp_path / "README.md")  # the Hub client's own parser
    meta = card.data.to_dict()
    assert meta["library_name"] == "imgzoo"
    assert meta["license"] == "mit"
    assert {"imgzoo", "resnet_cifar", "image-classification"} <= set(meta["tags"])
    assert meta["datasets"] == ["uoft-cs/cifar10"]
    _, results = model_index_to_eval_results(meta["model-index"])
    by_type = {r.metric_type: r.metric_value for r in results}
    assert by_type == {"accuracy": 0.66, "loss": 1.0}
    assert "| accuracy | 71.00% | 66.00% |" in card.text
    assert "![accuracy and loss per epoch](curves.png)" in card.text
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["metrics"]["best_val_acc"] == 0.66 and config["metrics"]["epochs"] == 3


def test_a_card_names_the_data_trained_on_and_links_a_hub_data_set_only_when_it_is_that_one(tmp_path):
    model = imgzoo.create_model("resnet_cifar", depth=8, class_names=["cat", "dog", "fox"])  # CIFAR-10's spec
    imgzoo.save(model, tmp_path, recipe={"epochs": 3, "data": "/home/me/pets"}, metrics={"val_acc": 0.5})
    card = ModelCard.load(tmp_path / "README.md")
    assert card.text.lstrip().startswith("# resnet_cifar for pets (3 classes: cat, dog, fox)")
    assert "datasets" not in card.data.to_dict() and "cifar10" not in str(card.data.to_dict()).lower()
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert results[0].dataset_name == "pets (3 classes: cat, dog, fox)" and results[0].dataset_type == "imagefolder"


def test_model_card_regenerates_results_and_keeps_the_authors_text(tmp_path):
    config = {
        "architecture": "mnist_cnn",
        "kwargs": {},
        "data_spec": MNIST.to_dict(),
        "metrics": {"val_acc": 0.5},
    }
    first = model_card.render(config, repo_id="org/digits")
    edited = first.replace("license: mit", "license: mit\nbase_model: org/base").replace(
        "## Use", "Trained on a laptop by hand.\n\n## Use"
    )
    second = model_card.render({**config, "metrics": {"val_acc": 0.75}}, repo_id="org/digits", existing=edited)
    card = ModelCard(second)  # as the Hub parses it
    meta, body = card.data.to_dict(), card.text
    assert meta["base_model"] == "org/base"
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.75
    assert "Trained on a laptop by hand." in body
    assert "75.00%" in body and "50.00%" not in body
    assert body.count(model_card.START) == 1


def test_model_card_appends_results_to_a_card_without_markers():
    config = {"architecture": "mnist_cnn", "kwargs": {}, "data_spec": MNIST.to_dict()}
    text = model_card.render(config, existing="# My digits model\n\nHand-written card.\n")
    body = ModelCard(text).text.lstrip()
    assert body.startswith("# My digits model")
    assert body.rstrip().endswith(model_card.END)


# --- weights entries -----------------------------------------------------------------------------


@pytest.fixture
def packaged_entry(tmp_path):
    model = _trained("mnist_cnn")
    folder = imgzoo.save(model, tmp_path / "shipped", metrics={"val_acc": 0.99}, recipe={"epochs": 1})
    entry = register_weights(entry_from_folder("mnist_cnn.unit_test", folder, package_dir=str(folder)))
    yield model, folder, entry
    unregister_weights(entry.name)


def test_weights_entry_loads_by_name_and_by_create_model(packaged_entry):
    model, _, entry = packaged_entry
    check_meta(entry)
    assert set(REQUIRED_META) <= set(entry.meta)
    assert entry.meta["num_params"] == sum(p.numel() for p in model.parameters())
    assert "mnist_cnn.unit_test" in imgzoo.list_pretrained()
    x = _batch(model)
    assert torch.equal(_outputs(model, x), _outputs(imgzoo.load("mnist_cnn.unit_test"), x))
    assert torch.equal(_outputs(model, x), _outputs(imgzoo.create_model("mnist_cnn", pretrained=entry.name), x))


def test_weights_entry_sha256_mismatch_is_refused(packaged_entry):
    _, folder, _ = packaged_entry
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="sha256 mismatch for mnist_cnn.unit_test.*nothing was loaded"):
        imgzoo.load("mnist_cnn.unit_test")


def test_weights_entry_of_another_architecture_is_refused(tmp_path):
    folder = imgzoo.save(_trained("mnist_cnn"), tmp_path)
    entry = entry_from_folder("mnist_cnn.x", folder, package_dir=str(folder))
    wrong = type(entry)(name="basic_cnn.x", sha256=entry.sha256, package_dir=str(folder), meta=entry.meta)
    register_weights(wrong)
    try:
        with pytest.raises(CheckpointError, match="holds a 'mnist_cnn' checkpoint, not 'basic_cnn'"):
            imgzoo.load("basic_cnn.x")
    finally:
        unregister_weights("basic_cnn.x")


def test_create_model_refuses_weights_of_another_architecture(packaged_entry):
    with pytest.raises(CheckpointError, match="holds a 'mnist_cnn' checkpoint, not 'resnet_cifar'"):
        imgzoo.create_model("resnet_cifar", pretrained="mnist_cnn.unit_test")


def test_a_packaged_entry_has_no_revisions(packaged_entry):
    with pytest.raises(ValueError, match="shipped inside the imgzoo package and has no revisions"):
        imgzoo.load("mnist_cnn.unit_test", revision="v2")


def test_unknown_name_suggests_close_matches(packaged_entry):
    with pytest.raises(ValueError, match=r"Did you mean 'mnist_cnn.unit_test'.*hf-hub:org/repo"):
        imgzoo.load("mnist_cnn.unit_tset")


# --- untrusted files: pins, config fields, sizes, fuzzing ----------------------------------------


def test_a_swapped_config_fails_the_entrys_config_pin(tmp_path):
    folder = imgzoo.save(_trained("mnist_cnn"), tmp_path / "shipped")
    entry = entry_from_folder("mnist_cnn.pinned_test", folder, package_dir=str(folder))
    register_weights(dataclasses.replace(entry, config_sha256=sha256_of(folder / "config.json")))
    try:
        assert imgzoo.load(entry.name).data_spec.class_names[0] == "0"
        config = json.loads((folder / "config.json").read_text())
        swapped = list(reversed(config["class_names"]))  # same weights, every label wrong
        config["class_names"], config["data_spec"]["class_names"] = swapped, swapped
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(ChecksumError, match=r"sha256 mismatch for mnist_cnn.pinned_test \(config.json\)"):
            imgzoo.load(entry.name)
    finally:
        unregister_weights(entry.name)


def _edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("hidden", "refusal"),
    [
        # Within the builder's own bound, so only the comparison with the file's shapes can catch it.
        (8000, r"head\.2\.weight: checkpoint \(128, 3136\) vs model \(8000, 3136\)"),
        # Past the builder's bound: the builder refuses on the meta device, still before any allocation.
        (300_000, r"could not be built on the meta device.*hidden must be from 1 to 8192"),
    ],
)
def test_a_config_asking_for_a_huge_model_is_refused_before_allocating_it(tmp_path, hidden, refusal):
    imgzoo.save(_trained("mnist_cnn"), tmp_path)
    _edit_config(tmp_path, lambda c: c["kwargs"].update(hidden=hidden))  # 100 MB or 3.8 GB layers for a 2 MB file
    allocated = []

    def record(module, name, param):
        if param is not None and param.device.type != "meta":
            allocated.append(param.numel())

    handle = nn.modules.module.register_module_parameter_registration_hook(record)
    try:
        with pytest.raises(CheckpointError, match=refusal):
            imgzoo.load(tmp_path)
    finally:
        handle.remove()
    assert allocated == []  # only the meta build ran: no real tensor was made for the hostile shapes


_DAMAGED_CONFIGS = [
    (lambda c: None, "null", "not an imgzoo config"),
    (lambda c: ["imgzoo"], "list", "not an imgzoo config"),
    (lambda c: c.update(format_version="1"), None, r"format_version must be a positive integer; got '1' \(str\)"),
    (lambda c: c.update(kwargs=None), None, r"kwargs must be an object of builder keyword arguments; got None"),
    (lambda c: c.update(kwargs=[1, 2]), None, r"kwargs must be an object.*got \[1, 2\] \(list\)"),
    (lambda c: c.update(data_spec="mnist"), None, r"data_spec must be an object.*got 'mnist' \(str\)"),
    (lambda c: c.update(architecture=7), None, r"architecture must be a registered model name.*got 7 \(int\)"),
    (lambda c: c["kwargs"].update(depth=20), None, r"kwargs \['depth'\] are not arguments of mnist_cnn"),
    (lambda c: c["data_spec"].update(channels=2), None, r"data_spec\.channels must be 1 or 3; got 2"),
    (lambda c: c["data_spec"].update(size=[0, 28]), None, r"data_spec\.size must be \[height, width\].*got \[0, 28\]"),
    (lambda c: c["data_spec"].update(std=[0]), None, r"data_spec\.std must be one positive number per channel"),
    (lambda c: c["data_spec"].update(mean=[0.1, 0.2]), None, r"data_spec\.mean must be one number per channel \(1\)"),
    (lambda c: c.update(num_classes=12), None, r"num_classes must be 10, as data_spec\.num_classes says; got 12"),
    (lambda c: c["kwargs"].update(dropout=2.0), None, r"mnist_cnn could not be built.*dropout must be .*in \[0, 1\)"),
]


@pytest.mark.parametrize(("edit", "whole", "message"), _DAMAGED_CONFIGS)
def test_damaged_config_fields_are_named_with_the_file_and_what_was_expected(tmp_path, edit, whole, message):
    imgzoo.save(_trained("mnist_cnn"), tmp_path)
    config_path = tmp_path / "config.json"
    if whole is not None:
        config_path.write_text(json.dumps(edit(None)))
    else:
        _edit_config(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message) as error:
        imgzoo.load(tmp_path)
    assert str(tmp_path) in str(error.value)  # the file or its folder


@pytest.fixture(scope="module")
def valid_checkpoint(tmp_path_factory) -> Path:
    # A folder rather than its bytes: hypothesis prints the test's arguments when an example fails.
    return imgzoo.save(_trained("mnist_cnn"), tmp_path_factory.mktemp("valid") / "ckpt")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(value, prefix=()):
    """Every place in a JSON tree: (path, ...) tuples of keys and indices."""
    yield prefix
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from _paths(child, (*prefix, key))


@st.composite
def _mutated_config(draw, original: bytes) -> bytes:
    config = json.loads(original)
    path = draw(st.sampled_from(list(_paths(config))[1:]))
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(_JSON)
    return json.dumps(config).encode()


@st.composite
def _mutated_header(draw, original: bytes) -> bytes:
    size = int.from_bytes(original[:8], "little")
    header = json.loads(original[8 : 8 + size])
    key = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    field = draw(st.sampled_from(["shape", "dtype", "data_offsets"]))
    header[key][field] = draw(
        st.lists(st.integers(-1, 2**40), max_size=4) if field != "dtype" else st.sampled_from(["F16", "I8", "C64", "X"])
    )
    text = json.dumps(header).encode()
    length = draw(st.sampled_from([len(text), len(text) + 1, 2**40]))
    return length.to_bytes(8, "little") + text + original[8 + size :]


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_fuzzed_checkpoints_raise_only_checkpoint_errors(valid_checkpoint, data):
    config = (valid_checkpoint / "config.json").read_bytes()
    weights = (valid_checkpoint / "model.safetensors").read_bytes()
    kind = data.draw(st.sampled_from(["config bytes", "weights bytes", "config field", "weights header"]))
    if kind == "config bytes":
        config = data.draw(st.binary(max_size=64))
    elif kind == "weights bytes":
        weights = data.draw(st.binary(max_size=64))
    elif kind == "config field":
        config = data.draw(_mutated_config(config))
    else:
        weights = data.draw(_mutated_header(weights))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_bytes(config)
        (Path(tmp) / "model.safetensors").write_bytes(weights)
        try:
            model = imgzoo.load(tmp)
        except CheckpointError:
            return  # the documented error; anything else (MemoryError included) fails the test
    assert model.data_spec.input_shape == (1, 28, 28)  # what loaded is still a working mnist_cnn
