"""imgzoo.data.transforms: the right constants per model, any input to a fixed shape, deterministic eval."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, TiffImagePlugin
from torchvision.transforms import v2

import imgzoo
from imgzoo import transforms
from imgzoo.models.registry import CIFAR10, IMAGENET, MNIST, DataSpec

SPECS = {"cifar10": CIFAR10, "mnist": MNIST, "imagenet": IMAGENET}
PIL_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"]


def value_range(spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel bounds of a normalised image: the images of 0.0 and 1.0."""
    mean, std = torch.tensor(spec.mean).view(-1, 1, 1), torch.tensor(spec.std).view(-1, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


def check_output(x: torch.Tensor, spec: DataSpec) -> None:
    assert type(x) is torch.Tensor  # a plain tensor, not a tv_tensors.Image subclass
    assert x.dtype == torch.float32
    assert tuple(x.shape) == spec.input_shape
    low, high = value_range(spec)
    assert bool((x >= low - 1e-4).all()) and bool((x <= high + 1e-4).all())


def random_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    """Random colours in ``mode``; float images hold 0..1, as imgzoo expects of mode F."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if mode == "F":  # PIL's convert("F") keeps 0..255
        return Image.fromarray(np.asarray(Image.fromarray(pixels).convert("F")) / np.float32(255))
    return Image.fromarray(pixels).convert(mode)


random_pil = st.builds(
    random_image,
    st.sampled_from(PIL_MODES),
    st.integers(1, 300),
    st.integers(1, 300),
    st.integers(0, 2**16),
)
setting = st.tuples(st.sampled_from(sorted(SPECS)), st.booleans(), st.sampled_from(transforms.AUGMENTS))


@given(image=random_pil, setting=setting)
def test_any_pil_image_gives_the_spec_shape_dtype_and_range(image, setting):
    name, train, augment = setting
    spec = SPECS[name]
    check_output(transforms.build_transform(spec, train, augment)(image), spec)


@st.composite
def arrays(draw):
    """uint8 or float images as (H, W) / (C, H, W) tensors or (H, W) / (H, W, C) numpy arrays."""
    h, w = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    as_numpy = draw(st.booleans())
    shape = (h, w) if channels is None else ((h, w, channels) if as_numpy else (channels, h, w))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    else:
        x = torch.rand(shape, generator=generator)
    return x.numpy() if as_numpy else x


@given(image=arrays(), setting=setting)
def test_any_tensor_or_array_gives_the_spec_shape_dtype_and_range(image, setting):
    name, train, augment = setting
    spec = SPECS[name]
    check_output(transforms.build_transform(spec, train, augment)(image), spec)


@given(image=random_pil, name=st.sampled_from(sorted(SPECS)), augment=st.sampled_from(transforms.AUGMENTS))
def test_eval_transforms_are_deterministic_whatever_the_augment_preset(image, name, augment):
    spec = SPECS[name]
    first = transforms.build_transform(spec, train=False, augment=augment)(image)
    torch.manual_seed(1234)  # a changed random state must not matter either
    second = transforms.build_transform(spec, train=False, augment="none")(image)
    assert torch.equal(first, second)


@pytest.mark.parametrize(
    ("model", "mean", "std"),
    [
        ("resnet_cifar", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ("basic_cnn", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        ("mnist_cnn", (0.1307,), (0.3081,)),
        ("dogbreed_transfer", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ],
)
def test_for_model_normalises_with_the_models_constants(model, mean, std):
    spec = transforms.spec_of(model)
    level = 200
    image = Image.new("RGB", (spec.size[1], spec.size[0]), (level, level, level))
    x = transforms.for_model(model)(image)
    expected = (level / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-5)


def test_for_model_takes_a_model_and_its_output_feeds_it():
    model = imgzoo.create_model("mnist_cnn").eval()
    x = transforms.for_model(model)(Image.new("RGB", (50, 40), (10, 200, 30)))
    assert x.shape == (1, 28, 28)
    assert model(x.unsqueeze(0)).shape == (1, 10)


def test_imagenet_eval_resizes_the_short_side_to_256_then_centre_crops_224():
    # 300x600 (H x W) -> 256x512 -> centre 224 columns 144..367; the black/white edge
    # at column 256 of the resized image lands at column 112 of the crop.
    image = np.zeros((300, 600, 3), dtype=np.uint8)
    image[:, 300:] = 255
    x = transforms.build_transform(IMAGENET, train=False)(Image.fromarray(image))
    low, high = value_range(IMAGENET)
    assert x.shape == (3, 224, 224)
    assert torch.allclose(x[:, :, :110], low.expand(3, 224, 110), atol=1e-4)
    assert torch.allclose(x[:, :, 114:], high.expand(3, 224, 110), atol=1e-4)


def test_grayscale_becomes_rgb_and_colour_becomes_luma():
    grey = transforms.ToImage(3)(Image.new("L", (4, 4), 77))
    assert grey.shape == (3, 4, 4) and bool((grey == 77).all())
    red = transforms.ToImage(1)(torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 4, 4))
    assert red.shape == (1, 4, 4) and int(red[0, 0, 0]) == 76  # ITU-R 601-2: 0.299 * 255
    rgba = transforms.ToImage(3)(np.full((4, 4, 4), 9, dtype=np.uint8))
    assert rgba.shape == (3, 4, 4)


def test_training_transforms_are_random():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    transform = transforms.for_model("resnet_cifar", train=True)
    torch.manual_seed(0)
    outputs = [transform(image) for _ in range(8)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])


def test_digits_are_never_mirrored():
    for augment in transforms.AUGMENTS:
        steps = transforms.build_transform(MNIST, train=True, augment=augment).transforms
        assert not any(isinstance(step, v2.RandomHorizontalFlip) for step in steps)
    steps = transforms.build_transform(CIFAR10, train=True).transforms
    assert any(isinstance(step, v2.RandomHorizontalFlip) for step in steps)


@pytest.mark.parametrize(
    ("image", "error", "words"),
    [
        ("not an image", TypeError, "PIL image"),
        (torch.zeros(3, 8, 8, dtype=torch.int32), TypeError, "uint8"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), ValueError, "(C, H, W)"),
        (torch.zeros(5, 8, 8, dtype=torch.uint8), ValueError, "C in 1, 3, 4"),
        (np.zeros((8, 8, 2), dtype=np.uint8), ValueError, "(H, W, C)"),
    ],
)
def test_bad_input_says_what_was_expected(image, error, words):
    with pytest.raises(error) as info:
        transforms.for_model("resnet_cifar")(image)
    assert words in str(info.value)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="augment must be one of"):
        transforms.build_transform(CIFAR10, train=True, augment="heavy")
    with pytest.raises(TypeError, match="DataSpec"):
        transforms.build_transform("cifar10", train=True)
    with pytest.raises(TypeError, match="imgzoo model"):
        transforms.for_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown model"):
        transforms.for_model("resnet_cifr")


# --- every PIL mode, with its real range -----------------------------------------

# Specs that leave values as they are (mean 0, std 1), so the output is the 0..1 image itself.
UNIT_RGB = dataclasses.replace(CIFAR10, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
UNIT_GREY = dataclasses.replace(MNIST, size=(32, 32), mean=(0.0,), std=(1.0,))


def two_halves(mode: str, left, right) -> Image.Image:
    """A 32x32 image of ``mode``: the left half ``left``, the right half ``right``."""
    image = Image.new(mode, (32, 32), left)
    image.paste(right, (16, 0, 32, 32))
    return image


def palette_image(transparent: bool) -> Image.Image:
    """Red on the left, blue on the right; the blue entry is the transparent one when ``transparent``."""
    image = Image.new("P", (32, 32), 0)
    image.putpalette([255, 0, 0, 0, 0, 255])
    image.paste(1, (16, 0, 32, 32))
    if transparent:
        image.info["transparency"] = 1
    return image


# mode -> (image, expected (min, max, mean) of the RGB output, expected (min, max, mean) of the grey output).
# Values are on the 0..1 scale; grey follows ITU-R 601-2 luma (red 76/255, blue 29/255).
MODES = {
    "1": (two_halves("1", 0, 1), (0, 1, 0.5), (0, 1, 0.5)),
    "L": (two_halves("L", 50, 200), (50 / 255, 200 / 255, 125 / 255), (50 / 255, 200 / 255, 125 / 255)),
    "LA": (two_halves("LA", (80, 255), (160, 0)), (80 / 255, 160 / 255, 120 / 255), (80 / 255, 160 / 255, 120 / 255)),
    "P": (palette_image(False), (0, 1, 1 / 3), (29 / 255, 76 / 255, 52.5 / 255)),
    "P with transparency": (palette_image(True), (0, 1, 1 / 3), (29 / 255, 76 / 255, 52.5 / 255)),
    "RGB": (two_halves("RGB", (255, 0, 0), (0, 0, 255)), (0, 1, 1 / 3), (29 / 255, 76 / 255, 52.5 / 255)),
    "RGBA": (two_halves("RGBA", (255, 0, 0, 255), (0, 0, 255, 0)), (0, 1, 1 / 3), (29 / 255, 76 / 255, 52.5 / 255)),
    "CMYK": (two_halves("CMYK", (0, 0, 0, 0), (0, 0, 0, 255)), (0, 1, 0.5), (0, 1, 0.5)),
    "YCbCr": (two_halves("YCbCr", (64, 128, 128), (192, 128, 128)), (0.251, 0.753, 0.502), (0.251, 0.753, 0.502)),
    "I;16": (two_halves("I;16", 1000, 65535), (1000 / 65535, 1, 33267.5 / 65535), (1000 / 65535, 1, 33267.5 / 65535)),
    "I": (two_halves("I", 0, 40000), (0, 40000 / 65535, 0.3052), (0, 40000 / 65535, 0.3052)),
    "F": (two_halves("F", 0.25, 0.75), (0.25, 0.75, 0.5), (0.25, 0.75, 0.5)),
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("spec", [UNIT_RGB, UNIT_GREY], ids=["rgb", "grey"])
def test_every_pil_mode_keeps_its_real_range(mode, spec):
    image, rgb, grey = MODES[mode]
    low, high, mean = rgb if spec.channels == 3 else grey
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL warns about palette transparency when converted the wrong way
        x = transforms.build_transform(spec, train=False)(image)
        assert x.shape == spec.input_shape
        assert float(x.min()) == pytest.approx(low, abs=2e-3)
        assert float(x.max()) == pytest.approx(high, abs=2e-3)
        assert float(x.mean()) == pytest.approx(mean, abs=2e-3)
        # Training crops and flips move pixels but never change their values.
        y = transforms.build_transform(spec, train=True, augment="standard")(image)
        assert float(y.min()) == pytest.approx(low, abs=2e-3) and float(y.max()) == pytest.approx(high, abs=2e-3)


def test_sixteen_bit_png_files_are_scaled_by_65535_not_clipped(tmp_path):
    levels = np.array([[0, 255, 256, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        x = transforms.ToImage(1)(image)
    assert x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.tensor([0, 255, 256, 65535]) / 65535.0)


def test_a_tiff_that_declares_its_range_is_scaled_from_it(tmp_path):
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[340], info[341] = 0.0, 40.0  # SMinSampleValue, SMaxSampleValue
    Image.fromarray(np.array([[0, 10], [20, 40]], dtype=np.float32)).save(tmp_path / "range.tif", tiffinfo=info)
    with Image.open(tmp_path / "range.tif") as image:
        x = transforms.ToImage(1)(image)
    assert torch.allclose(x[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (two_halves("F", 0.0, 255.0), "values in 0..1; got 0..255"),
        (two_halves("F", -0.5, 0.5), "got -0.5..0.5"),
        (Image.fromarray(np.array([[0.5, np.nan]], dtype=np.float32)), "and NaN"),
        (two_halves("I", 0, 70000), "values in 0..65535; got 0..70000"),
    ],
    ids=["F in 0..255", "F negative", "F NaN", "I past 16 bits"],
)
def test_values_outside_the_modes_range_are_an_error_not_clipped(image, words):
    with pytest.raises(ValueError) as info:
        transforms.for_model("resnet_cifar")(image)
    assert words in str(info.value) and f"mode {image.mode}" in str(info.value) and "does not clip" in str(info.value)


@pytest.mark.parametrize(
    ("weights", "arch"), [("resnet_cifar.cifar10", "resnet_cifar"), ("mnist_cnn.mnist", "mnist_cnn")]
)
def test_for_model_takes_a_weights_name_as_well_as_a_model_name(weights, arch):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8))
    from_weights, from_arch = transforms.for_model(weights)(image), transforms.for_model(arch)(image)
    assert from_weights.shape == transforms.spec_of(arch).input_shape and torch.equal(from_weights, from_arch)
    entry = imgzoo.models.registry.get_weights_entry(weights)
    assert list(transforms.spec_of(weights).class_names) == entry.meta["categories"]


def test_a_weights_names_spec_carries_that_entrys_classes():
    entry = imgzoo.models.registry.WeightsEntry(
        name="mnist_cnn.letters", sha256="0" * 64, package_dir="nowhere", meta={"categories": ["a", "b", "c"]}
    )
    imgzoo.models.registry.register_weights(entry)
    try:
        spec = transforms.spec_of("mnist_cnn.letters")
    finally:
        imgzoo.models.registry.unregister_weights("mnist_cnn.letters")
    assert spec == dataclasses.replace(MNIST, num_classes=3, class_names=("a", "b", "c"))


def test_for_model_refuses_unknown_weights_and_points_hub_names_to_load():
    with pytest.raises(ValueError, match="unknown pretrained weights 'resnet_cifar.imagenet'"):
        transforms.for_model("resnet_cifar.imagenet")
    with pytest.raises(ValueError, match=r"for_model\(imgzoo.load\('org/repo'\)\)"):
        transforms.for_model("org/repo")
