"""The model and weights registry: lookup, listing, errors, and what every built model carries."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import torch
from torch import nn

import imgzoo
from imgzoo.hub import api as hub
from imgzoo.hub import pretrained
from imgzoo.hub.format import CheckpointError
from imgzoo.models import registry
from imgzoo.models.registry import CIFAR10, CIFAR10_CLASSES, MNIST, DataSpec, WeightsEntry

MODELS = imgzoo.list_models()
SMALL = {"dogbreed_transfer": {"backbone": "resnet18"}}  # resnet50 builds 3x slower; same code path


def _private_registry(monkeypatch):
    """Swap in copies of the registry's tables; monkeypatch puts the originals back."""
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_WEIGHTS", dict(registry._WEIGHTS))
    return registry


@pytest.fixture
def scratch_registry(monkeypatch):
    """A private copy of the registry, so throwaway entries vanish after the test."""
    return _private_registry(monkeypatch)


class Tiny(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(28 * 28, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.flatten(1))


def tiny_builder(*, num_classes: int = 10) -> nn.Module:
    """A one-layer model for registry tests."""
    return Tiny(num_classes)


def test_list_models_is_sorted_and_matches_fnmatch_patterns():
    assert sorted(MODELS) == MODELS
    assert {"basic_cnn", "dogbreed_transfer", "mnist_cnn", "resnet_cifar"} <= set(MODELS)
    assert imgzoo.list_models("resnet*") == [n for n in MODELS if n.startswith("resnet")]
    assert "resnet_cifar" in imgzoo.list_models("resnet*")
    assert imgzoo.list_models("*cnn") == [n for n in MODELS if n.endswith("cnn")]
    assert imgzoo.list_models("no_such_*") == []


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="Did you mean 'resnet_cifar'") as info:
        imgzoo.create_model("resnet_cfar")
    assert "unknown model 'resnet_cfar'" in str(info.value)


def test_unknown_name_with_no_close_match_lists_every_model():
    with pytest.raises(ValueError) as info:
        imgzoo.create_model("vit_huge")
    assert "Did you mean" not in str(info.value)
    assert all(name in str(info.value) for name in MODELS)


def test_registering_a_name_twice_is_an_error(scratch_registry):
    scratch_registry.register_model("zz_tiny", default_spec=MNIST)(tiny_builder)
    with pytest.raises(ValueError, match="already registered"):
        scratch_registry.register_model("zz_tiny", default_spec=MNIST)(tiny_builder)
    with pytest.raises(ValueError, match="already registered"):
        scratch_registry.register_model("mnist_cnn", default_spec=MNIST)(tiny_builder)
    assert "zz_tiny" in scratch_registry.list_models()


def test_scratch_registrations_do_not_leak(monkeypatch):
    # Undo the swap by hand, as pytest does after each test, so the check does not hang on test order.
    _private_registry(monkeypatch).register_model("zz_leak", default_spec=MNIST)(tiny_builder)
    assert "zz_leak" in imgzoo.list_models()
    monkeypatch.undo()
    assert "zz_leak" not in imgzoo.list_models()


def test_builders_must_be_keyword_only(scratch_registry):
    def positional(num_classes: int = 10) -> nn.Module:
        return nn.Linear(2, num_classes)

    with pytest.raises(TypeError, match="keyword-only"):
        scratch_registry.register_model("zz_positional", default_spec=MNIST)(positional)
    assert "zz_positional" not in scratch_registry.list_models()


@pytest.mark.parametrize("name", MODELS)
def test_registered_builders_are_the_public_keyword_only_functions(name):
    entry = registry.get_model_entry(name)
    kinds = {p.kind for p in inspect.signature(entry.builder).parameters.values()}
    assert kinds <= {inspect.Parameter.KEYWORD_ONLY}
    if hasattr(imgzoo, name):
        assert getattr(imgzoo, name) is entry.builder
    with pytest.raises(TypeError, match="positional"):
        entry.builder(10)


def test_unknown_keyword_names_the_accepted_ones():
    with pytest.raises(TypeError, match="depth") as info:
        imgzoo.create_model("resnet_cifar", dpeth=56)
    assert "dpeth" in str(info.value)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_carries_arch_kwargs_and_data_spec(name):
    given = {**SMALL.get(name, {}), "num_classes": 3}
    model = imgzoo.create_model(name, **given)
    entry = registry.get_model_entry(name)

    assert model.imgzoo_arch == name
    assert model.imgzoo_kwargs == {**entry.default_kwargs, **given}
    assert isinstance(model.data_spec, DataSpec)
    assert model.data_spec.input_shape == entry.default_spec.input_shape
    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier.out_features == model.data_spec.num_classes == 3

    # The kwargs are what a checkpoint stores: they must survive JSON and rebuild the same network.
    rebuilt = imgzoo.create_model(name, **json.loads(json.dumps(model.imgzoo_kwargs)))
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(rebuilt) == shapes(model)


def test_changing_num_classes_resets_class_names():
    assert imgzoo.resnet_cifar().data_spec.class_names == CIFAR10_CLASSES
    assert imgzoo.resnet_cifar(num_classes=10).data_spec.class_names == CIFAR10_CLASSES
    spec = imgzoo.resnet_cifar(num_classes=100).data_spec
    assert spec.num_classes == 100
    assert spec.class_names is None  # never the ten CIFAR names on 100 outputs
    assert (spec.mean, spec.std, spec.size) == (CIFAR10.mean, CIFAR10.std, CIFAR10.size)


def test_class_names_size_the_head_and_travel_with_the_model():
    breeds = ["Chihuahua", "Maltese_dog", "Papillon"]
    model = imgzoo.create_model("resnet_cifar", depth=8, class_names=breeds)
    assert model.classifier.out_features == 3
    assert model.data_spec.class_names == tuple(breeds) and model.data_spec.num_classes == 3
    assert model.imgzoo_kwargs["num_classes"] == 3 and "class_names" not in model.imgzoo_kwargs
    assert imgzoo.mnist_cnn(class_names=list("abcd"), num_classes=4).data_spec.class_names == tuple("abcd")
    with pytest.raises(ValueError, match="3 class_names but num_classes=4"):
        imgzoo.create_model("resnet_cifar", depth=8, class_names=breeds, num_classes=4)


def test_data_spec_with_classes_and_round_trip():
    spec = CIFAR10.with_classes(2, ["cat", "dog"])
    assert spec.class_names == ("cat", "dog") and spec.num_classes == 2
    assert DataSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="unknown DataSpec fields"):
        DataSpec.from_dict({**spec.to_dict(), "colour": "rgb"})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"channels": 2}, "channels"),
        ({"mean": (0.5,)}, "one value per channel"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 3}, "3 classes"),  # ten CIFAR names for three classes
    ],
)
def test_data_spec_rejects_inconsistent_fields(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(CIFAR10, **change)


# ---- pretrained weights ----


@pytest.fixture
def fake_hub_load(monkeypatch):
    """imgzoo.hub.api.load replaced by a recorder that answers with the weights name it was asked for."""
    calls = []

    def load(name, **kwargs):
        calls.append((name, kwargs))
        return name

    monkeypatch.setattr(hub, "load", load)
    return calls


def test_pretrained_goes_through_the_hub_loader(fake_hub_load):
    assert (
        imgzoo.create_model("resnet_cifar", pretrained="resnet_cifar.cifar10", num_classes=5) == "resnet_cifar.cifar10"
    )
    # The architecture is passed on, so weights of another model are refused rather than returned.
    assert fake_hub_load == [("resnet_cifar.cifar10", {"architecture": "resnet_cifar", "num_classes": 5})]


def test_create_model_is_the_factorys_and_refuses_a_non_bool_pretrained():
    assert imgzoo.create_model is hub.create_model
    assert not hasattr(registry, "create_model")  # the registry builds no pretrained model: that needs the Hub
    with pytest.raises(TypeError, match="True, False or a weights name"):
        imgzoo.create_model("mnist_cnn", pretrained=1)


def _weights(name: str, *, default: bool = False) -> WeightsEntry:
    return WeightsEntry(name, sha256="0" * 64, package_dir="zz", default=default)


@pytest.fixture
def zz_tiny(scratch_registry):
    """A private registry holding one weightless architecture, zz_tiny."""
    scratch_registry.register_model("zz_tiny", default_spec=MNIST)(tiny_builder)
    return scratch_registry


def test_pretrained_true_without_weights_says_which_architectures_have_some(zz_tiny, fake_hub_load):
    with pytest.raises(ValueError, match="no pretrained weights are registered for 'zz_tiny'") as info:
        imgzoo.create_model("zz_tiny", pretrained=True)
    assert "mnist_cnn" in str(info.value) and "without pretrained=" in str(info.value)
    assert fake_hub_load == []


def test_pretrained_true_takes_the_only_entry_when_none_is_marked(zz_tiny, fake_hub_load):
    zz_tiny.register_weights(_weights("zz_tiny.only"))
    assert imgzoo.create_model("zz_tiny", pretrained=True) == "zz_tiny.only"


def test_pretrained_true_takes_the_marked_default_not_the_first_in_sorted_order(zz_tiny, fake_hub_load):
    for name, default in (("zz_tiny.a", False), ("zz_tiny.b", True), ("zz_tiny.c", False)):
        zz_tiny.register_weights(_weights(name, default=default))
    assert zz_tiny.default_weights("zz_tiny") == "zz_tiny.b"
    assert imgzoo.create_model("zz_tiny", pretrained=True) == "zz_tiny.b"


def test_several_unmarked_entries_are_an_error_that_lists_them_and_says_how_to_choose(zz_tiny, fake_hub_load):
    for tag in ("b", "a"):
        zz_tiny.register_weights(_weights(f"zz_tiny.{tag}"))
    with pytest.raises(ValueError, match="none is marked default=True: zz_tiny.a, zz_tiny.b") as info:
        imgzoo.create_model("zz_tiny", pretrained=True)
    assert "pretrained='zz_tiny.a'" in str(info.value)
    assert fake_hub_load == []


def _trained(name: str, default: bool = False, **kwargs) -> WeightsEntry:
    return WeightsEntry(name, sha256="0" * 64, package_dir="zz", default=default, meta={"kwargs": kwargs})


def test_pretrained_true_with_builder_arguments_takes_the_entry_trained_with_them(zz_tiny, fake_hub_load):
    zz_tiny.register_weights(_trained("zz_tiny.d20", default=True, depth=20, widths=[16, 32], num_classes=10))
    zz_tiny.register_weights(_trained("zz_tiny.d56", depth=56, widths=[16, 32], num_classes=10))
    assert imgzoo.create_model("zz_tiny", pretrained=True, depth=56) == "zz_tiny.d56"
    assert fake_hub_load[-1] == ("zz_tiny.d56", {"architecture": "zz_tiny", "depth": 56})
    assert imgzoo.create_model("zz_tiny", pretrained=True) == "zz_tiny.d20"
    assert imgzoo.create_model("zz_tiny", pretrained=True, depth=20) == "zz_tiny.d20"
    # Recorded as JSON: a tuple agrees with the list it was saved as.
    assert zz_tiny.default_weights("zz_tiny", depth=56, widths=(16, 32)) == "zz_tiny.d56"
    # num_classes asks for a new head, not for other weights; an argument no entry records chooses nothing.
    assert zz_tiny.default_weights("zz_tiny", depth=56, num_classes=3) == "zz_tiny.d56"
    assert zz_tiny.default_weights("zz_tiny", dropout=0.0) == "zz_tiny.d20"
    # No entry trained with them: the default, whose loader accepts or refuses the arguments.
    assert zz_tiny.default_weights("zz_tiny", depth=110) == "zz_tiny.d20"


def test_several_entries_trained_with_the_arguments_choose_by_default_or_refuse(zz_tiny):
    zz_tiny.register_weights(_trained("zz_tiny.d20", depth=20))
    zz_tiny.register_weights(_trained("zz_tiny.d56_a", depth=56))
    zz_tiny.register_weights(_trained("zz_tiny.d56_b", depth=56))
    with pytest.raises(
        ValueError, match="2 weights entries and none is marked default=True: zz_tiny.d56_a, zz_tiny.d56_b"
    ):
        zz_tiny.default_weights("zz_tiny", depth=56)
    assert zz_tiny.default_weights("zz_tiny", depth=20) == "zz_tiny.d20"


def test_pretrained_true_loads_real_weights_of_another_depth_by_its_arguments(tmp_path):
    torch.manual_seed(0)
    deep = imgzoo.create_model("resnet_cifar", depth=8)
    folder = imgzoo.save(deep, tmp_path / "d8", metrics={"val_acc": 0.5}, recipe={"epochs": 1})
    entry = registry.register_weights(
        pretrained.entry_from_folder("resnet_cifar.zz_d8_test", folder, package_dir=str(folder))
    )
    try:
        loaded = imgzoo.create_model("resnet_cifar", depth=8, pretrained=True)
        x = torch.randn(2, 3, 32, 32)
        assert loaded.imgzoo_kwargs["depth"] == 8
        assert torch.equal(loaded(x), deep.eval()(x))
        # The shipped depth-20 entry is still what the defaults load.
        assert imgzoo.create_model("resnet_cifar", pretrained=True).imgzoo_kwargs["depth"] == 20
        with pytest.raises(CheckpointError, match=r"resnet_cifar.zz_d8_test \(depth=8\)") as info:
            imgzoo.create_model("resnet_cifar", depth=14, pretrained=True)
        assert "resnet_cifar.cifar10 (depth=20)" in str(info.value) and "without pretrained=" in str(info.value)
    finally:
        registry.unregister_weights(entry.name)


def test_the_shipped_resnet56_loads_by_its_depth_and_the_defaults_keep_resnet20():
    by_depth = imgzoo.create_model("resnet_cifar", depth=56, pretrained=True).eval()
    by_name = imgzoo.load("resnet_cifar.d56_cifar10")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert by_depth.imgzoo_kwargs["depth"] == 56
    assert torch.equal(by_depth(x), by_name(x))
    assert imgzoo.create_model("resnet_cifar", pretrained=True).imgzoo_kwargs["depth"] == 20
    assert registry.default_weights("resnet_cifar", depth=56) == "resnet_cifar.d56_cifar10"


def test_a_second_default_for_one_architecture_is_an_error_naming_both(zz_tiny):
    zz_tiny.register_weights(_weights("zz_tiny.first", default=True))
    with pytest.raises(ValueError, match="'zz_tiny.second' is marked default=True but 'zz_tiny.first'"):
        zz_tiny.register_weights(_weights("zz_tiny.second", default=True))
    assert zz_tiny.list_pretrained("zz_tiny.*") == ["zz_tiny.first"]
    # Replacing the default entry itself is not a second default.
    zz_tiny.register_weights(_weights("zz_tiny.first", default=True), overwrite=True)
    zz_tiny.register_weights(_weights("zz_tiny.other", default=False))
    assert zz_tiny.default_weights("zz_tiny") == "zz_tiny.first"


def test_every_shipped_architecture_with_weights_has_one_default():
    for arch in imgzoo.list_models(pretrained=True):
        marked = [n for n in imgzoo.list_pretrained(f"{arch}.*") if registry.get_weights_entry(n).default]
        assert len(marked) <= 1, marked
        assert registry.default_weights(arch) in imgzoo.list_pretrained(f"{arch}.*")


def test_list_models_pretrained_keeps_only_architectures_with_weights(zz_tiny):
    assert "zz_tiny" in zz_tiny.list_models() and "zz_tiny" not in zz_tiny.list_models(pretrained=True)
    with_weights = sorted({zz_tiny.get_weights_entry(n).arch for n in zz_tiny.list_pretrained()})
    assert zz_tiny.list_models(pretrained=True) == with_weights
    zz_tiny.register_weights(_weights("zz_tiny.a"))
    assert "zz_tiny" in zz_tiny.list_models(pretrained=True)
    assert zz_tiny.list_models("zz_*", pretrained=True) == ["zz_tiny"]


def test_weights_registry_errors(scratch_registry):
    entry = WeightsEntry("mnist_cnn.zz_test", sha256="0" * 64, package_dir="zz")
    scratch_registry.register_weights(entry)
    with pytest.raises(ValueError, match="already registered"):
        scratch_registry.register_weights(entry)
    with pytest.raises(ValueError, match="unknown model 'zz_nothing'"):
        scratch_registry.register_weights(WeightsEntry("zz_nothing.x", sha256="0" * 64, package_dir="zz"))
    with pytest.raises(ValueError, match="Did you mean 'mnist_cnn.zz_test'"):
        scratch_registry.get_weights_entry("mnist_cnn.zz_tset")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "mnist_cnn"}, "arch.tag"),
        ({"repo_id": "user/repo", "revision": "abc"}, "exactly one"),  # and package_dir
        ({"package_dir": None}, "exactly one"),
        ({"package_dir": None, "repo_id": "user/repo"}, "revision"),
        ({"sha256": "abc"}, "sha256"),
    ],
)
def test_weights_entry_validation(kwargs, match):
    base = {"name": "mnist_cnn.mnist", "sha256": "0" * 64, "package_dir": "zz"}
    with pytest.raises(ValueError, match=match):
        WeightsEntry(**{**base, **kwargs})


def test_registered_tiny_model_gets_the_same_attributes(scratch_registry):
    build = scratch_registry.register_model("zz_tiny", default_spec=MNIST)(tiny_builder)
    model = build(num_classes=4)
    assert (model.imgzoo_arch, model.imgzoo_kwargs) == ("zz_tiny", {"num_classes": 4})
    assert model.data_spec == MNIST.with_classes(4)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 4)
    assert scratch_registry.get_model_entry("zz_tiny").description == "A one-layer model for registry tests."


def test_duplicate_class_names_are_refused_with_the_repeated_names():
    with pytest.raises(ValueError, match=r"distinct; \['cat'\] appear more than once"):
        imgzoo.create_model("resnet_cifar", class_names=["cat", "dog", "cat"])
