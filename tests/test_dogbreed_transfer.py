"""Transfer learning offline: torchvision's real ImageNet loading path, freezing and learning-rate groups.

No test here touches the network. The ImageNet file is a state dict saved into a
temporary TORCH_HOME under torchvision's own file name, which is exactly where
``torchvision.models.resnet18(weights=...)`` looks before downloading; a download is
either refused by a monkeypatched ``torch.hub.download_url_to_file`` or sent to a
proxy on 127.0.0.1 that refuses it.
"""

from __future__ import annotations

import importlib
import os
import socket
import socketserver
import threading
import urllib.error
from urllib.parse import urlparse

import pytest
import torch
import torch.nn.functional as F
import torchvision

import imgzoo

dogbreed = importlib.import_module("imgzoo.models.dogbreed_transfer")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for variable in dogbreed.OFFLINE_VARIABLES:  # a developer's own offline switch must not change the tests
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


@pytest.fixture
def offline(monkeypatch):
    """Make any connection attempt or download fail loudly, as on a machine without internet."""

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)


@pytest.fixture
def failing_download(monkeypatch):
    """torch.hub's download failing the way urllib fails without a network; records what was asked for."""
    attempts = []

    def fail(url, dst, *args, **kwargs):
        attempts.append((url, dst))
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return attempts


@pytest.fixture
def refusing_proxy(monkeypatch):
    """An HTTPS proxy on 127.0.0.1 that answers every CONNECT with 403; yields the request lines it saw."""
    seen: list[str] = []

    class Refuse(socketserver.StreamRequestHandler):
        def handle(self):
            seen.append(self.rfile.readline().decode("latin-1").strip())
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    server = socketserver.TCPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"http://127.0.0.1:{server.server_address[1]}"
    for variable in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(variable, address)
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    yield seen
    server.shutdown()
    server.server_close()


def torchvision_file_name(backbone: str) -> str:
    return os.path.basename(urlparse(torchvision.models.get_model_weights(backbone).DEFAULT.url).path)


def test_weights_path_is_torchvision_cache_file(torch_home):
    for backbone in ("resnet18", "resnet34", "resnet50"):
        expected = torch_home / "hub" / "checkpoints" / torchvision_file_name(backbone)
        assert dogbreed.imagenet_weights_path(backbone) == str(expected)


def test_imagenet_weights_load_from_the_torch_hub_cache(torch_home, offline):
    torch.manual_seed(0)
    saved = torchvision.models.resnet18().state_dict()
    path = torch_home / "hub" / "checkpoints" / torchvision_file_name("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(saved, path)

    model = imgzoo.dogbreed_transfer(backbone="resnet18", weights="imagenet", num_classes=5)
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(saved) - {"fc.weight", "fc.bias"}  # the ImageNet head is replaced
    mismatched = [k for k in loaded if not torch.equal(loaded[k], saved[k])]
    assert mismatched == []
    assert model.classifier.out_features == 5
    assert model.imgzoo_kwargs["weights"] == "imagenet"


def test_a_failed_download_names_the_file_to_fetch(torch_home, failing_download):
    expected = str(torch_home / "hub" / "checkpoints" / torchvision_file_name("resnet50"))
    with pytest.raises(RuntimeError) as info:
        imgzoo.dogbreed_transfer(weights="imagenet")
    message = str(info.value)
    assert [dst for _, dst in failing_download] == [expected]  # torch.hub was asked, once, for that file
    assert expected in message and "Network is unreachable" in message
    assert "TORCH_HOME" in message and "weights=None" in message
    assert not os.path.exists(expected)


@pytest.mark.parametrize("variable", ["IMGZOO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_switch_fails_at_once_without_trying_the_network(torch_home, offline, monkeypatch, variable):
    monkeypatch.setenv(variable, "1")
    expected = str(torch_home / "hub" / "checkpoints" / torchvision_file_name("resnet18"))
    with pytest.raises(RuntimeError) as info:  # `offline` turns any attempt into an AssertionError instead
        imgzoo.dogbreed_transfer(backbone="resnet18", weights="imagenet")
    assert expected in str(info.value) and f"{variable}=1" in str(info.value)


def test_offline_switch_still_reads_the_cached_file(torch_home, offline, monkeypatch):
    monkeypatch.setenv("IMGZOO_OFFLINE", "1")
    path = torch_home / "hub" / "checkpoints" / torchvision_file_name("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    assert imgzoo.dogbreed_transfer(backbone="resnet18", weights="imagenet", num_classes=2).classifier.out_features == 2


def test_the_download_goes_through_the_proxy_in_the_environment(torch_home, refusing_proxy):
    host = urlparse(torchvision.models.get_model_weights("resnet18").DEFAULT.url).hostname
    with pytest.raises(RuntimeError) as info:
        imgzoo.dogbreed_transfer(backbone="resnet18", weights="imagenet")
    assert refusing_proxy and refusing_proxy[0].startswith(f"CONNECT {host}:443 ")
    assert "403" in str(info.value) and torchvision_file_name("resnet18") in str(info.value)


def test_backbone_is_frozen_by_default_and_only_the_head_learns():
    model = imgzoo.dogbreed_transfer(backbone="resnet18", num_classes=3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}

    F.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 2])).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.classifier.weight.grad.abs().sum() > 0


def test_frozen_batchnorm_keeps_its_statistics_in_train_mode():
    model = imgzoo.dogbreed_transfer(backbone="resnet18", num_classes=3).train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    after = model.backbone.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert model.training and model.classifier.training and not model.backbone.bn1.training

    model.unfreeze(last=1)  # layer4 trains, and its BatchNorm layers learn statistics again
    assert model.backbone.layer4[0].bn1.training and not model.backbone.layer3[0].bn1.training
    model(torch.randn(4, 3, 64, 64) * 3 + 1)
    changed = {
        k for k, v in model.backbone.state_dict().items() if "running_mean" in k and not torch.equal(v, before[k])
    }
    assert changed and all(k.startswith("layer4.") for k in changed)
    assert not model.eval().backbone.layer4[0].bn1.training


def stages_trainable(model) -> dict[str, bool]:
    """Whether each backbone stage trains; a stage must be wholly frozen or wholly trainable."""
    out = {}
    for stage in ("conv1", "layer1", "layer2", "layer3", "layer4"):
        flags = {p.requires_grad for p in getattr(model.backbone, stage).parameters()}
        assert len(flags) == 1, f"{stage} is partly frozen"
        out[stage] = flags.pop()
    return out


def test_unfreeze_last_n_stages_then_everything():
    model = imgzoo.dogbreed_transfer(backbone="resnet18")
    model.unfreeze(last=0)
    assert not any(stages_trainable(model).values())
    model.unfreeze(last=1)
    assert stages_trainable(model) == dict(conv1=False, layer1=False, layer2=False, layer3=False, layer4=True)
    model.unfreeze(last=2)
    assert stages_trainable(model) == dict(conv1=False, layer1=False, layer2=False, layer3=True, layer4=True)
    model.unfreeze()
    assert all(p.requires_grad for p in model.parameters())
    model.freeze_backbone()
    assert not any(stages_trainable(model).values()) and model.classifier.weight.requires_grad


@pytest.mark.parametrize("last", [-1, 5, 1.5])
def test_unfreeze_rejects_impossible_stage_counts(last):
    with pytest.raises(ValueError, match="0-4"):
        imgzoo.dogbreed_transfer(backbone="resnet18").unfreeze(last=last)


def test_param_groups_give_the_backbone_a_scaled_learning_rate():
    model = imgzoo.dogbreed_transfer(backbone="resnet18", num_classes=4)
    groups = model.param_groups(lr=0.1, backbone_lr_scale=0.01)
    assert len(groups) == 1 and groups[0]["lr"] == 0.1  # frozen backbone: the head only

    model.unfreeze(last=1)
    head, body = model.param_groups(lr=0.1, backbone_lr_scale=0.01)
    assert head["lr"] == 0.1 and body["lr"] == pytest.approx(0.001)
    assert {id(p) for p in head["params"]} == {id(p) for p in model.classifier.parameters()}
    assert {id(p) for p in body["params"]} == {id(p) for p in model.backbone.layer4.parameters()}

    # One optimizer step moves the head and layer4 and leaves the frozen stages alone.
    layer3, layer4 = model.backbone.layer3[0].conv1.weight.clone(), model.backbone.layer4[0].conv1.weight.clone()
    optimizer = torch.optim.SGD([head, body], momentum=0.9)
    F.cross_entropy(model.train()(torch.randn(2, 3, 64, 64)), torch.tensor([1, 3])).backward()
    optimizer.step()
    assert torch.equal(model.backbone.layer3[0].conv1.weight, layer3)
    assert not torch.equal(model.backbone.layer4[0].conv1.weight, layer4)


@pytest.mark.parametrize(("backbone", "features"), [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_every_backbone_gets_a_new_head(backbone, features):
    model = imgzoo.dogbreed_transfer(backbone=backbone)
    assert model.classifier.in_features == features
    assert model.classifier.out_features == 120 == model.data_spec.num_classes
    assert isinstance(model.backbone.fc, torch.nn.Identity)
