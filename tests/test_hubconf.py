"""hubconf.py: torch.hub.load(<clone>, name, source="local") builds every registered architecture."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import torch

import imgzoo
from imgzoo.models.registry import get_model_entry, list_models

REPO = Path(__file__).resolve().parents[1]


def _hubconf():
    """The module as torch.hub imports it: by file path, not as part of a package."""
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_documented_entry_point_per_registered_architecture():
    module = _hubconf()
    # torch.hub.list offers every public callable, so the file must hold no other.
    entry_points = sorted(n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_"))
    # imgzoo's own architectures; tests elsewhere in the session may have registered user models too.
    builtin = [n for n in list_models() if get_model_entry(n).builder.__module__.startswith("imgzoo.models.")]
    assert entry_points == builtin
    for name in entry_points:
        function = getattr(module, name)
        assert inspect.getdoc(function), f"{name} needs a docstring: torch.hub.help shows it"
        assert list(inspect.signature(function).parameters)[0] == "pretrained"
    assert {"torch", "torchvision"} <= set(module.dependencies)
    assert all(importlib.util.find_spec(package) for package in module.dependencies)


@pytest.mark.parametrize("name", list_models(pretrained=True))
def test_pretrained_models_load_from_a_clone(name):
    model = torch.hub.load(str(REPO), name, source="local", pretrained=True)
    expected = imgzoo.create_model(name, pretrained=True)
    assert model.imgzoo_arch == name and model.data_spec == expected.data_spec and not model.training
    state, expected_state = model.state_dict(), expected.state_dict()
    assert state.keys() == expected_state.keys()
    assert all(torch.equal(state[k], expected_state[k]) for k in state)


def test_keyword_arguments_reach_the_builder():
    cnn = torch.hub.load(str(REPO), "basic_cnn", source="local", num_classes=5, widths=[8, 16, 16])
    assert cnn.imgzoo_arch == "basic_cnn" and cnn(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    dogs = torch.hub.load(str(REPO), "dogbreed_transfer", source="local", weights=None, backbone="resnet18")
    assert dogs.imgzoo_kwargs["backbone"] == "resnet18" and dogs.get_classifier().out_features == 120
    shipped = torch.hub.load(str(REPO), "basic_cnn", source="local", pretrained=True)  # basic_cnn.cifar10
    assert shipped.whiten is True and sum(p.numel() for p in shipped.parameters()) == 1_972_778
    with pytest.raises(Exception, match="No 'dogbreed_transfer' weights were trained with these arguments"):
        torch.hub.load(str(REPO), "dogbreed_transfer", source="local", pretrained=True, backbone="resnet18")
