"""imgzoo models are timm models: timm's attributes on every family, ``arch.tag`` names, imgzoo's architectures in
timm's registry, and repositories that timm and imgzoo both read, pushed to the loopback Hub server.

timm is a development extra: the tests that call it skip without it, the rest run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_hub_remote import TOKEN, hub  # noqa: F401  (the loopback Hub fixture)

import imgzoo
from imgzoo.hub.format import CheckpointError, NewHeadWarning

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = [  # dogbreed_transfer with random weights: no ImageNet file needed
    ("resnet_cifar", {}),
    ("basic_cnn", {}),
    ("mnist_cnn", {}),
    ("dogbreed_transfer", {"backbone": "resnet18"}),
    ("dogbreed_transfer", {"backbone": "efficientnet_lite0"}),
]
IDS = [f"{name}-{kwargs.get('backbone', '')}".rstrip("-") for name, kwargs in FAMILIES]


def _x(model: torch.nn.Module, n: int = 2) -> torch.Tensor:
    return torch.randn(n, *model.data_spec.input_shape, generator=torch.Generator().manual_seed(0))


def _same_logits(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = _x(b, 4)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


# --- the model contract: timm's attributes on every family -----------------------------------------


@pytest.mark.parametrize(("name", "kwargs"), FAMILIES, ids=IDS)
def test_every_family_has_timms_attributes(name, kwargs):
    model = imgzoo.create_model(name, **kwargs).eval()
    spec = model.data_spec
    assert model.num_classes == spec.num_classes == model.get_classifier().out_features
    assert model.head_hidden_size == model.get_classifier().in_features
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == spec.input_shape and cfg["mean"] == spec.mean and cfg["std"] == spec.std
    assert cfg["num_classes"] == spec.num_classes and cfg["label_names"] == spec.class_names
    assert cfg["architecture"] == name
    final, stages = model.forward_intermediates(_x(model))
    assert len(stages) == len(model.feature_info) >= 2
    height = spec.size[0]
    for info, out in zip(model.feature_info, stages, strict=True):
        assert out.shape[1] == info["num_chs"] and out.shape[2] == height // info["reduction"], info
    assert torch.equal(final, model.forward_features(_x(model)))
    assert final.shape[1] == model.num_features == model.feature_info[-1]["num_chs"]
    last = model.forward_intermediates(_x(model), indices=1, intermediates_only=True)
    assert len(last) == 1 and torch.equal(last[0], stages[-1])


@pytest.mark.parametrize(("name", "kwargs"), FAMILIES, ids=IDS)
def test_in_chans_builds_a_grey_model_with_averaged_statistics(name, kwargs):
    model = imgzoo.create_model(name, in_chans=1, **kwargs).eval()
    spec = model.data_spec
    assert spec.channels == 1 and model.pretrained_cfg["input_size"][0] == 1
    colour = imgzoo.create_model(name, in_chans=3, **kwargs).data_spec
    assert spec.mean == pytest.approx((sum(colour.mean) / 3,)) and spec.std == pytest.approx((sum(colour.std) / 3,))
    assert model(_x(model)).shape == (2, spec.num_classes)
    with pytest.raises(ValueError, match="in_chans must be one of"):
        imgzoo.create_model(name, in_chans=4, **kwargs)


def test_an_mnist_shaped_resnet_trains_on_digits():
    model = imgzoo.create_model("resnet_cifar", in_chans=1, num_classes=10)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)  # 28 is a multiple of 4
    with pytest.raises(ValueError, match=r"1-channel images"):
        model(torch.randn(2, 3, 28, 28))


def test_reset_classifier_takes_timms_global_pool():
    model = imgzoo.create_model("basic_cnn").eval()
    assert isinstance(model.pool, torch.nn.AdaptiveMaxPool2d)
    model.reset_classifier(4, global_pool="avg")
    assert isinstance(model.pool, torch.nn.AdaptiveAvgPool2d) and model.num_classes == 4
    assert model(_x(model)).shape == (2, 4)
    with pytest.raises(ValueError, match="global_pool must be None or one of"):
        model.reset_classifier(4, global_pool="token")
    with pytest.raises(ValueError, match="on a model with a global pool"):
        imgzoo.create_model("mnist_cnn").reset_classifier(4, global_pool="avg")  # an MLP head, no pool


# --- timm's arch.tag names in imgzoo.create_model --------------------------------------------------


def test_create_model_takes_arch_tag_and_a_new_class_count():
    reference = imgzoo.load("resnet_cifar.d56_cifar10")
    assert _same_logits(imgzoo.create_model("resnet_cifar.d56_cifar10", pretrained=True), reference)
    with pytest.warns(NewHeadWarning, match="NOT the classifier"):
        model = imgzoo.create_model("resnet_cifar.d56_cifar10", pretrained=True, num_classes=5)
    assert model.num_classes == 5 and model.data_spec.num_classes == 5
    assert torch.equal(model.stem[0].weight, reference.stem[0].weight)
    random = imgzoo.create_model("resnet_cifar.cifar10")  # no pretrained=: the architecture only, as timm
    assert not torch.equal(random.stem[0].weight, imgzoo.load("resnet_cifar.cifar10").stem[0].weight)


def test_create_model_names_an_unknown_tag_and_two_weights():
    with pytest.raises(ValueError, match=r"unknown pretrained weights 'resnet_cifar.cifar1'.*resnet_cifar.cifar10"):
        imgzoo.create_model("resnet_cifar.cifar1", pretrained=True)
    with pytest.raises(ValueError, match="names two weights"):
        imgzoo.create_model("resnet_cifar.cifar10", pretrained="resnet_cifar.d56_cifar10")


# --- config.json: timm's format beside imgzoo's ----------------------------------------------------


def test_config_holds_timms_fields_and_configs_without_them_still_load(tmp_path):
    model = imgzoo.create_model("mnist_cnn", class_names=list("abcdefghij")).eval()
    imgzoo.save(model, tmp_path / "new")
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    assert config["model_args"] == config["kwargs"] and config["num_features"] == 64
    cfg = config["pretrained_cfg"]
    assert cfg["input_size"] == [1, 28, 28] and cfg["label_names"] == list("abcdefghij") and cfg["crop_pct"] == 1.0
    # A config written before the timm fields (the shipped ones are such) loads as it did.
    for key in ("model_args", "num_features", "pretrained_cfg"):
        del config[key]
    (tmp_path / "new" / "config.json").write_text(json.dumps(config))
    assert _same_logits(imgzoo.load(tmp_path / "new"), model)
    shipped = json.loads((ROOT / "imgzoo/hub/weights/mnist_cnn-mnist/config.json").read_text())
    assert "pretrained_cfg" not in shipped and "model_args" not in shipped


def test_a_timm_config_is_named_as_such(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet18", "pretrained_cfg": {}}))
    with pytest.raises(CheckpointError, match=r"timm checkpoint \(architecture 'resnet18'\).*timm.create_model"):
        imgzoo.load(tmp_path)


# --- timm's registry ------------------------------------------------------------------------------


def _fresh(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_import_imgzoo_leaves_timm_unimported_and_registers_when_it_is():
    pytest.importorskip("timm")
    after = "import imgzoo, sys\nprint('timm' in sys.modules)\nimport timm\nprint(timm.list_models(module='_timm'))"
    assert _fresh(after) == "['basic_cnn', 'dogbreed_transfer', 'mnist_cnn', 'resnet_cifar']"
    before = "import timm, imgzoo\nprint(timm.list_pretrained('resnet_cifar*'))"
    assert _fresh(before) == "['resnet_cifar.cifar10', 'resnet_cifar.d56_cifar10']"
    assert _fresh("import imgzoo, sys\nprint('timm' in sys.modules)") == "False"


def test_timm_builds_imgzoo_architectures():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet_cifar", num_classes=100)
    assert isinstance(model, imgzoo.models.ResNetCifar) and model.num_classes == 100
    assert timm.create_model("resnet_cifar", depth=56).imgzoo_kwargs["depth"] == 56
    assert set(timm.list_models(pretrained=True)) >= set(imgzoo.list_pretrained())
    assert timm.models.get_pretrained_cfg("mnist_cnn.mnist").input_size == (1, 28, 28)


@pytest.mark.parametrize("name", imgzoo.list_pretrained())
def test_every_shipped_entry_through_timm_gives_imgzoos_logits(name):
    timm = pytest.importorskip("timm")
    model = timm.create_model(name, pretrained=True)
    assert not model.training and _same_logits(model, imgzoo.load(name))  # max abs difference 0


def test_timm_pretrained_without_a_tag_loads_imgzoos_default_and_a_new_head():
    timm = pytest.importorskip("timm")
    assert _same_logits(timm.create_model("resnet_cifar", pretrained=True), imgzoo.load("resnet_cifar.cifar10"))
    with pytest.warns(NewHeadWarning):
        model = timm.create_model("mnist_cnn.mnist", pretrained=True, num_classes=3)
    assert model.num_classes == 3 and model.data_spec.num_classes == 3


def test_timms_data_config_is_imgzoos_preprocessing():
    timm = pytest.importorskip("timm")
    from PIL import Image

    for name, kwargs in FAMILIES:
        model = imgzoo.create_model(name, **kwargs)
        config = timm.data.resolve_data_config({}, model=model)
        spec = model.data_spec
        assert config["input_size"] == spec.input_shape and config["mean"] == spec.mean and config["std"] == spec.std
        # An image already at the model's size goes through both pipelines to the same tensor.
        pixels = torch.randint(0, 256, (spec.size[0], spec.size[1], 3), generator=torch.Generator().manual_seed(1))
        image = Image.fromarray(pixels.to(torch.uint8).numpy()).convert("L" if spec.channels == 1 else "RGB")
        if spec.resize:  # dog breeds: imgzoo resizes to 256 and crops 224; so does timm's crop_pct 0.875
            image = image.resize((spec.resize, spec.resize))
        ours = imgzoo.transforms.for_model(model)(image)
        theirs = timm.data.create_transform(**config)(image)
        assert theirs.shape == ours.shape == spec.input_shape
        assert torch.allclose(theirs, ours, atol=1e-5), name


# --- the Hub: pushed by one, loaded by the other ---------------------------------------------------


@pytest.mark.usefixtures("hub")
def test_pushed_by_imgzoo_loaded_by_timm():
    timm = pytest.importorskip("timm")
    model = imgzoo.create_model("resnet_cifar", depth=8, class_names=list("abc")).eval()
    imgzoo.push_to_hub(model, "org/r8", token=TOKEN)
    loaded = timm.create_model("hf-hub:org/r8", pretrained=True)
    assert _same_logits(loaded, model) and loaded.pretrained_cfg["label_names"] == ("a", "b", "c")
    assert timm.data.resolve_data_config({}, model=loaded)["mean"] == model.data_spec.mean
    fresh = timm.create_model("hf-hub:org/r8")  # the architecture from model_args, random weights
    assert fresh.imgzoo_kwargs == model.imgzoo_kwargs and not _same_logits(fresh, model)
    with pytest.warns(NewHeadWarning):
        assert timm.create_model("hf-hub:org/r8", pretrained=True, num_classes=7).num_classes == 7
    assert _same_logits(imgzoo.load("hf-hub:org/r8"), model)  # and imgzoo reads it as before


def test_saved_by_imgzoo_loaded_by_timm_from_a_folder(tmp_path):
    timm = pytest.importorskip("timm")
    model = imgzoo.create_model("basic_cnn", widths=[8, 16]).eval()
    imgzoo.save(model, tmp_path / "cnn")
    assert _same_logits(timm.create_model(f"local-dir:{tmp_path / 'cnn'}", pretrained=True), model)


@pytest.mark.usefixtures("hub")
def test_pushed_by_timm_named_by_imgzoo():
    timm = pytest.importorskip("timm")
    model = timm.create_model("test_resnet", num_classes=3)
    timm.models.push_to_hf_hub(model, "org/timm-net", token=TOKEN, safe_serialization=True)
    assert timm.create_model("hf-hub:org/timm-net", pretrained=True).num_classes == 3  # the server serves timm
    with pytest.raises(CheckpointError, match=r"timm checkpoint \(architecture 'test_resnet'\)"):
        imgzoo.load("hf-hub:org/timm-net")
