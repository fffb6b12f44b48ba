"""Every registered model, parametrized over the registry: shapes, gradients, train/eval behaviour, bad input.

A model added to the registry is picked up here with its default arguments and the
input size of its DataSpec; ``SMALL`` only shrinks the ones too slow to build and
run on two CPU cores.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import imgzoo
from imgzoo.models.registry import get_model_entry

# dogbreed_transfer: ResNet-18 with random weights (no ImageNet file needed) and the
# backbone trainable, so that the gradient test reaches every layer.
SMALL = {"dogbreed_transfer": {"backbone": "resnet18", "weights": None, "freeze_backbone": False}}
# Any input of at least 32 pixels works for the torchvision trunk; 64x64 keeps it cheap.
INPUT_SIZE = {"dogbreed_transfer": (64, 64)}
ODD_CLASSES = 7  # odd, and unlike every default, so a hard-coded head size shows up

MODELS = imgzoo.list_models()
WITH_DROPOUT = [name for name in MODELS if "dropout" in get_model_entry(name).default_kwargs]


def build(name: str, **overrides) -> nn.Module:
    return imgzoo.create_model(name, **{**SMALL.get(name, {}), **overrides})


def images(model: nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    spec = model.data_spec
    size = INPUT_SIZE.get(model.imgzoo_arch, spec.size)
    return torch.randn(batch, spec.channels, *size, generator=torch.Generator().manual_seed(seed))


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_registry_lists_the_four_families():
    assert set(MODELS) >= {"basic_cnn", "dogbreed_transfer", "mnist_cnn", "resnet_cifar"}


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_reaches_every_trainable_parameter(name):
    torch.manual_seed(0)
    model = build(name, num_classes=ODD_CLASSES).train()
    x = images(model, batch=4)
    out = model(x)
    assert out.shape == (4, ODD_CLASSES)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, torch.arange(4) % ODD_CLASSES).backward()

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, f"{name} has no trainable parameters"
    no_grad = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == [], f"{name}: no gradient reached {no_grad}"
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic_and_independent_of_the_batch(name):
    torch.manual_seed(0)
    model = build(name).eval()
    x = images(model, batch=3)
    with torch.no_grad():
        first, second = model(x), model(x)
        alone = model(x[:1])
    assert torch.equal(first, second)
    # Eval-mode BatchNorm uses running statistics, so a sample's output cannot
    # depend on which other images share its batch.
    torch.testing.assert_close(alone, first[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_train_mode_uses_batch_statistics_and_eval_mode_does_not(name):
    model = build(name)
    bns = batchnorms(model)
    if not bns:
        pytest.skip(f"{name} has no BatchNorm")
    x = images(model, batch=4)

    model.train()
    assert all(m.training for m in model.modules())
    before = [bn.running_mean.clone() for bn in bns]
    with torch.no_grad():
        in_batch, alone = model(x)[:1], model(x[:1])
    assert any(not torch.equal(b, bn.running_mean) for b, bn in zip(before, bns, strict=True)), (
        "train() did not update stats"
    )
    assert not torch.allclose(in_batch, alone, atol=1e-4), "train-mode output ignores the batch statistics"

    model.eval()
    assert not any(m.training for m in model.modules())
    frozen = [bn.running_mean.clone() for bn in bns]
    with torch.no_grad():
        model(x)
    assert all(torch.equal(f, bn.running_mean) for f, bn in zip(frozen, bns, strict=True)), (
        "eval() changed running stats"
    )


@pytest.mark.parametrize("name", WITH_DROPOUT)
def test_dropout_is_active_in_train_mode_only(name):
    torch.manual_seed(0)
    model = build(name, dropout=0.5)
    x = images(model, batch=4)
    with torch.no_grad():
        model.train()
        # Same batch twice: BatchNorm gives the same result, so any difference is dropout.
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", MODELS)
@settings(max_examples=10)  # per model; each example builds a network
@given(batch=st.integers(1, 5), num_classes=st.integers(1, 300))
def test_output_shape_is_batch_by_num_classes(name, batch, num_classes):
    model = build(name, num_classes=num_classes).eval()
    with torch.no_grad():
        out = model(images(model, batch))
    assert out.shape == (batch, num_classes)
    assert model.classifier.out_features == num_classes == model.data_spec.num_classes


@given(
    depth=st.sampled_from([8, 14, 20]),
    shortcut=st.sampled_from(["A", "B", "none"]),
    height=st.integers(1, 12).map(lambda k: 4 * k),
    width=st.integers(1, 12).map(lambda k: 4 * k),
    batch=st.integers(1, 3),
    num_classes=st.integers(1, 120),
)
def test_resnet_cifar_accepts_any_depth_and_multiple_of_4_input(depth, shortcut, height, width, batch, num_classes):
    model = imgzoo.resnet_cifar(depth=depth, shortcut=shortcut, num_classes=num_classes).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 3, height, width))
    assert out.shape == (batch, num_classes)


# He et al. 2016, table 6 (CIFAR-10), with shortcut option A.
PAPER_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_resnet_cifar_parameter_count_matches_the_paper(depth):
    params = sum(p.numel() for p in imgzoo.resnet_cifar(depth=depth).parameters())
    assert abs(params - PAPER_PARAMS[depth]) / PAPER_PARAMS[depth] < 0.02, params


def test_width_multiplier_scales_convolutions_quadratically():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    base, wide = count(imgzoo.resnet_cifar(depth=20)), count(imgzoo.resnet_cifar(depth=20, width=2))
    # Conv weights dominate and grow 4x; BatchNorm and the classifier only 2x.
    assert 3.5 * base < wide < 4 * base


def test_mnist_cnn_is_well_under_pytorch_example_net():
    # pytorch/examples mnist/main.py Net: 1,199,882 parameters.
    assert sum(p.numel() for p in imgzoo.mnist_cnn().parameters()) < 1_199_882 / 2


def test_basic_cnn_has_airbench_size():
    # airbench94 (arXiv:2404.00498) is a ~2M-parameter 3-block CNN.
    assert 1.5e6 < sum(p.numel() for p in imgzoo.basic_cnn().parameters()) < 2.5e6


def test_basic_cnn_has_no_skip_connections_and_configurable_widths():
    model = imgzoo.basic_cnn(widths=(8, 16), stem_width=4, num_classes=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 8, 16, 16]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


# ---- bad input: a sentence naming the model, what it expected and what came ----


@pytest.mark.parametrize("name", MODELS)
def test_wrong_rank_input_names_model_and_shapes(name):
    model = build(name).eval()
    single = images(model, batch=1)[0]  # a (C, H, W) image without the batch dimension
    message = refusal(model, single, match="unsqueeze")
    assert f"(N, {model.data_spec.channels}," in message


@pytest.mark.parametrize("name", MODELS)
def test_wrong_channel_count_names_model_and_shapes(name):
    model = build(name).eval()
    x = images(model, batch=2)
    wrong = torch.randn(2, 4 - x.shape[1] if x.shape[1] != 4 else 3, *x.shape[2:])
    message = refusal(model, wrong)
    assert f"{model.data_spec.channels}-channel" in message


def refusal(model: torch.nn.Module, bad: torch.Tensor, match: str | None = None) -> str:
    """The ValueError a model raises for ``bad``; it must name the model and the shape received."""
    with pytest.raises(ValueError, match=match) as info:
        model(bad)
    message = str(info.value)
    assert model.imgzoo_arch in message
    assert str(tuple(bad.shape)) in message
    return message


@pytest.mark.parametrize("name", MODELS)
def test_integer_images_are_refused_with_a_hint(name):
    model = build(name).eval()
    with pytest.raises(TypeError, match="for_model"):
        model((images(model, batch=1) * 50).to(torch.uint8))


@pytest.mark.parametrize(
    ("name", "shape"),
    [("mnist_cnn", (2, 1, 32, 32)), ("resnet_cifar", (2, 3, 30, 30)), ("basic_cnn", (2, 3, 4, 4))],
)
def test_wrong_spatial_size_is_refused(name, shape):
    with pytest.raises(ValueError) as info:
        imgzoo.create_model(name)(torch.randn(*shape))
    assert str(info.value).startswith(f"{name} expects")
    assert f"got {shape}" in str(info.value)


@pytest.mark.parametrize("name", MODELS)
def test_num_classes_zero_is_refused(name):
    with pytest.raises(ValueError, match="num_classes"):
        build(name, num_classes=0)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("resnet_cifar", {"depth": 21}, "6n\\+2"),
        ("resnet_cifar", {"depth": 2}, "depth must be from 8 to 1202"),
        ("resnet_cifar", {"shortcut": "C"}, "shortcut"),
        ("resnet_cifar", {"width": 0}, "width"),
        ("basic_cnn", {"dropout": 1.0}, "dropout"),
        ("mnist_cnn", {"hidden": 0}, "hidden"),
        ("dogbreed_transfer", {"backbone": "vgg16"}, "resnet18"),
        ("dogbreed_transfer", {"weights": "imagenet21k"}, "weights"),
    ],
)
def test_invalid_constructor_arguments_get_a_clear_value_error(name, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        imgzoo.create_model(name, **kwargs)
    assert name in str(info.value)


# A value of the wrong type names the argument, what was expected and the type that came.
WRONG_TYPES = [
    ("resnet_cifar", "depth", "20", "an int"),  # a number read from a config file or argv, not converted
    ("resnet_cifar", "depth", 20.0, "an int"),
    ("resnet_cifar", "width", "2", "an int"),
    ("resnet_cifar", "zero_init_residual", "yes", "True or False"),
    ("resnet_cifar", "zero_init_residual", 1, "True or False"),
    ("resnet_cifar", "num_classes", True, "an int"),
    ("mnist_cnn", "num_classes", 10.0, "an int"),
    ("mnist_cnn", "hidden", "128", "an int"),
    ("mnist_cnn", "dropout", "0.5", "a number"),
    ("basic_cnn", "widths", 64, "tuple or list"),
    ("basic_cnn", "widths", "64", "tuple or list"),
    ("basic_cnn", "stem_width", 32.0, "an int"),
    ("dogbreed_transfer", "freeze_backbone", "no", "True or False"),
    ("dogbreed_transfer", "dropout", None, "a number"),
]


@pytest.mark.parametrize(("name", "argument", "value", "expected"), WRONG_TYPES)
def test_arguments_of_the_wrong_type_are_refused_naming_argument_and_type(name, argument, value, expected):
    with pytest.raises(TypeError) as info:
        build(name, **{argument: value})
    message = str(info.value)
    assert message.startswith(f"{name}: {argument}")
    assert expected in message and repr(value) in message


def test_a_width_of_the_wrong_type_is_named_by_its_position():
    with pytest.raises(TypeError, match=r"^basic_cnn: widths\[1\] must be an int .* got '256' \(str\)"):
        imgzoo.basic_cnn(widths=(64, "256"))


@pytest.fixture
def no_layers(monkeypatch):
    """Fail the test if any module is constructed: an oversized network must be refused before that."""

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} was constructed")

    monkeypatch.setattr(nn.Module, "__init__", refuse)


HUGE = [
    ("resnet_cifar", {"depth": 10**9}, "depth must be from 8 to 1202"),
    ("resnet_cifar", {"width": 10**7}, "width must be from 1 to 16"),
    ("resnet_cifar", {"depth": 1202, "width": 16}, "4,9\\d\\d,\\d{3},\\d{3} parameters"),  # each in bounds, not both
    ("basic_cnn", {"widths": (64, 10**7)}, "widths\\[1\\] must be from 1 to 4096"),
    ("basic_cnn", {"widths": (64,) * 30}, "1 to 8 ints"),
    ("basic_cnn", {"widths": (4096,) * 8}, "parameters"),
    ("mnist_cnn", {"hidden": 10**7}, "hidden must be from 1 to 8192"),
    ("mnist_cnn", {"hidden": 8192, "num_classes": 100_000}, "parameters"),
    ("dogbreed_transfer", {"num_classes": 10**9}, "num_classes must be from 1 to 100000"),
]


@pytest.mark.parametrize(("name", "kwargs", "match"), HUGE)
def test_huge_sizes_are_refused_before_anything_is_allocated(name, kwargs, match, no_layers):
    with pytest.raises((ValueError, TypeError), match=match) as info:
        imgzoo.create_model(name, **kwargs)
    assert str(info.value).startswith(name)


# ---- input dtypes: the weights' dtype, or any floating dtype under autocast ----


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_a_float_batch_of_another_dtype_than_the_weights_is_refused(name, dtype):
    model = build(name).eval()
    with pytest.raises(TypeError) as info:
        model(images(model, batch=1).to(dtype))
    message = str(info.value)
    assert message.startswith(name) and str(dtype) in message
    assert "x.to(torch.float32)" in message and "autocast" in message


@pytest.mark.parametrize("name", ["mnist_cnn", "resnet_cifar"])
def test_a_model_converted_to_float64_takes_float64_batches(name):
    model = build(name).eval()
    x = images(model, batch=2)
    with torch.no_grad():
        single = model(x)
        double = model.double()(x.double())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), single, rtol=1e-4, atol=1e-4)


def test_autocast_accepts_a_batch_of_another_float_dtype():
    model = build("resnet_cifar").eval()
    x = images(model, batch=2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x.to(torch.bfloat16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_the_docs_model_table_agrees_with_the_models_and_their_weights():
    """docs/models.md's table: each row's parameter count is the built model's, each accuracy its entry's."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    table = text[text.index("| model | input |") :].split("\n\n", 1)[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", table, flags=re.M)}
    builtin = {n for n in imgzoo.list_models() if get_model_entry(n).builder.__module__.startswith("imgzoo.models.")}
    assert set(rows) == builtin  # other tests may have registered models of their own
    for name, row in rows.items():
        model = imgzoo.create_model(name, **({"weights": None} if name == "dogbreed_transfer" else {}))
        assert f"{sum(p.numel() for p in model.parameters()):,}" in row
        for weights, percent in re.findall(r"`(\w+\.\w+)`: ([\d.]+)%", row):
            entry = imgzoo.models.registry.get_weights_entry(weights)
            assert f"{100 * entry.meta['metrics']['val_acc']:.2f}" == percent
