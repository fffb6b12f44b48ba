"""FastLoader's cutout (DeVries and Taylor 2017; airbench96): one square of ``cutout`` pixels a side, wholly
inside each training image, set to the data's mean; nothing else changes, evaluation never blanks, and a
recipe carries it to the run's loader."""

from __future__ import annotations

import pytest
import torch

import imgzoo
from imgzoo.data.datasets import TensorImages
from imgzoo.data.loaders import FastLoader
from imgzoo.models.registry import DataSpec
from imgzoo.study import config as run_config
from imgzoo.study import run as runs
from imgzoo.train.config import FitConfig, loader_differences
from imgzoo.train.recipes import get_recipe

# Every stored pixel is 1..255, so a 0 after normalisation (mean 0, std 1/255) can only be a blanked pixel.
_SPEC = DataSpec(name="tiny", channels=3, size=(10, 10), mean=(0.0,) * 3, std=(1 / 255,) * 3, num_classes=2)


def _data(n: int = 16) -> TensorImages:
    x = torch.randint(1, 256, (n, 3, 10, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return TensorImages(x, torch.arange(n) % 2, ["a", "b"], spec=_SPEC)


def _loader(data: TensorImages, **options) -> FastLoader:
    # Alternating flips draw from a generator of their own: with and without cutout, the images flip alike.
    options = {"train": True, "translate": 0, "alternate_flips": True, "shuffle": False, "seed": 5, **options}
    return FastLoader(data, 8, spec=_SPEC, **options)


@pytest.mark.parametrize("side", [1, 4, 9])  # 10, the whole image, is refused: it would blank every one
def test_each_training_image_loses_one_square_of_the_side_asked_and_nothing_else(side):
    data = _data()
    plain = torch.cat([x for x, _ in _loader(data)])
    cut = torch.cat([x for x, _ in _loader(data, cutout=side)])  # same seed: the same flips, then the squares
    assert plain.ne(0).all()
    blank = cut.eq(0)
    assert torch.equal(blank, blank[:, :1].expand_as(blank))  # every channel of a blanked pixel
    for image, mask, original in zip(cut, blank[:, 0], plain, strict=True):
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) == len(cols) == side and int(mask.sum()) == side * side  # one whole square, inside
        assert rows.diff().eq(1).all() and cols.diff().eq(1).all()  # contiguous
        assert torch.equal(image[:, ~mask], original[:, ~mask])  # the rest is the image as it was


def test_the_squares_move_from_image_to_image_and_repeat_with_the_seed():
    data = _data(32)
    first = torch.cat([x for x, _ in _loader(data, cutout=3)]).eq(0)[:, 0]
    again = torch.cat([x for x, _ in _loader(data, cutout=3)]).eq(0)[:, 0]
    other = torch.cat([x for x, _ in _loader(data, cutout=3, seed=6)]).eq(0)[:, 0]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert len({tuple(mask.nonzero()[0].tolist()) for mask in first}) > 4  # top-left corners vary


def test_evaluation_and_augment_none_never_blank_and_bad_sides_are_refused():
    data = _data()
    assert FastLoader(data, 8, spec=_SPEC, train=False, cutout=4).cutout == 0
    assert torch.cat([x for x, _ in FastLoader(data, 8, spec=_SPEC, train=False, cutout=4)]).ne(0).all()
    assert _loader(data, augment="none", cutout=4).cutout == 0
    for bad in (-1, 2.5, True, 10, 99):  # 10, the whole side, or more would blank every image
        with pytest.raises(ValueError, match=f"cutout is the side of the square blanked out.*got {bad!r}"):
            _loader(data, cutout=bad)


def test_a_recipe_carries_cutout_to_the_run_and_its_loader(tmp_path):
    recipe = get_recipe("basic_cnn.cutout").config
    assert recipe.cutout == 12 and recipe.loader_options()["cutout"] == 12
    assert get_recipe("basic_cnn.airbench").config.loader_options()["cutout"] == 0  # the loader's default
    config = run_config.make_config("basic_cnn", str(tmp_path), recipe="basic_cnn.cutout")
    assert config.fit.cutout == 12 and config.fit.translate == 4
    assert config.augmentation() == "standard (4-pixel crops, alternating flips, 12-pixel cutout)"
    unaugmented = run_config.make_config("basic_cnn", str(tmp_path), recipe="basic_cnn.cutout", augment="none")
    assert unaugmented.augmentation() == "none"
    assert run_config.make_config("basic_cnn", str(tmp_path), recipe="basic_cnn.airbench").fit.cutout == 0
    model = imgzoo.basic_cnn(widths=(4,), num_classes=2)
    model.data_spec = _SPEC
    train = runs.train_data(model, _data(), "standard", 1024, 0, translate=4, alternate_flips=True, cutout=6)
    assert isinstance(train, FastLoader) and train.cutout == 6
    assert loader_differences(train, recipe) == ["cutout=6 (the recipe's is 12)"]
    assert loader_differences(train, get_recipe("basic_cnn.altflip").config) == [
        "translate=4 (the recipe's is 2)",
        "cutout=6 (the recipe's is 0)",
    ]
    with pytest.raises(ValueError, match="cutout must be an integer >= 0"):
        FitConfig(epochs=1, cutout=-3)
