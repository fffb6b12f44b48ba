"""FastLoader's alternating flips (airbench's derandomized flip): each image is mirrored in every other
epoch, from one seeded toss per image, and fit keeps the alternation exact across a resume."""

from __future__ import annotations

import pytest
import torch
from test_ema import _StopAt

import imgzoo
from imgzoo.data.datasets import TensorImages
from imgzoo.data.loaders import FastLoader
from imgzoo.models.registry import DataSpec
from imgzoo.study import config as run_config
from imgzoo.study import run as runs
from imgzoo.train.config import FitConfig, loader_differences
from imgzoo.train.fit import fit
from imgzoo.train.recipes import get_recipe


def _images(n: int = 12, mirrorable: bool = True) -> tuple[TensorImages, DataSpec]:
    name = "tiny" if mirrorable else "mnist"  # MNIST is never flipped: a mirrored digit is another digit
    spec = DataSpec(name=name, channels=3, size=(8, 8), mean=(0.0,) * 3, std=(1 / 255,) * 3, num_classes=2)
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n) % 2
    return TensorImages(x, labels, ["a", "b"], spec=spec), spec


def _orientations(loader: FastLoader, data: TensorImages) -> list[bool]:
    """For one pass (translate=0, no shuffle): whether each image came out mirrored."""
    found = []
    for x, _ in loader:
        for out in x:
            matches = [i for i, image in enumerate(data.images) if torch.equal(out, image.float())]
            mirrors = [i for i, image in enumerate(data.images) if torch.equal(out, image.float().flip(-1))]
            assert len(matches) + len(mirrors) == 1  # the image itself or its mirror, never a mix
            found.append(bool(mirrors))
    return found


def _loader(data, spec, **options) -> FastLoader:
    return FastLoader(data, 5, spec=spec, train=True, translate=0, shuffle=False, seed=3, **options)


def test_every_image_flips_over_from_one_epoch_to_the_next():
    data, spec = _images()
    loader = _loader(data, spec, alternate_flips=True)
    epochs = [_orientations(loader, data) for _ in range(4)]
    assert any(epochs[0]) and not all(epochs[0])  # the first epoch's tosses differ between images
    assert epochs[1] == [not m for m in epochs[0]]  # each image shows its other side in the next epoch
    assert epochs[2] == epochs[0] and epochs[3] == epochs[1]
    assert loader.epoch == 4  # full passes counted


def test_random_flips_do_not_alternate():
    data, spec = _images(n=40)
    loader = _loader(data, spec)
    first, second = _orientations(loader, data), _orientations(loader, data)
    assert second != [not m for m in first]  # a coin per image and epoch: 2^-40 odds of looking alternated


def test_set_epoch_decides_the_flips_and_a_look_at_one_batch_counts_no_epoch():
    data, spec = _images()
    counted = _loader(data, spec, alternate_flips=True)
    next(iter(counted))  # fit's checks look at a first batch: not a pass
    assert counted.epoch == 0
    _orientations(counted, data)
    one = _orientations(counted, data)
    told = _loader(data, spec, alternate_flips=True)
    told.set_epoch(5)
    assert _orientations(told, data) == one  # odd epochs agree
    told.set_epoch(0)
    assert _orientations(told, data) == [not m for m in one]
    other_seed = FastLoader(data, 5, spec=spec, train=True, translate=0, shuffle=False, seed=4, alternate_flips=True)
    assert _orientations(other_seed, data) != _orientations(told, data)  # the tosses come from the seed


def test_alternating_flips_leave_unflippable_data_alone():
    data, spec = _images(mirrorable=False)
    loader = _loader(data, spec, alternate_flips=True)
    assert [_orientations(loader, data) for _ in range(2)] == [[False] * 12] * 2


def _fit_setup():
    data, spec = _images(n=24)
    val = FastLoader(data, 8, spec=spec)

    def model():
        torch.manual_seed(0)
        m = imgzoo.basic_cnn(widths=(4,), num_classes=2)
        m.data_spec = spec
        return m

    def loader():
        return FastLoader(data, 8, spec=spec, train=True, alternate_flips=True, seed=1)

    return model, loader, val


def test_fit_tells_the_loader_its_epoch():
    model, loader, val = _fit_setup()
    train = loader()
    told = []
    original = train.set_epoch
    train.set_epoch = lambda epoch: (told.append(epoch), original(epoch))
    fit(model(), train, val, epochs=3, verbose=0, lr=0.05)
    assert told == [0, 1, 2]


@pytest.mark.parametrize(("step", "resume_from"), [(1, "interrupted.pt"), (None, "last.pt")], ids=["mid", "end"])
def test_a_resumed_run_flips_as_the_uninterrupted_one(tmp_path, step, resume_from):
    model, loader, val = _fit_setup()
    reference = model()
    expected = fit(reference, loader(), val, epochs=3, verbose=0, lr=0.05)
    fit(model(), loader(), val, epochs=3, verbose=0, lr=0.05, checkpoint_dir=tmp_path, callbacks=[_StopAt(2, step)])
    resumed = model()
    history = fit(resumed, loader(), val, epochs=3, verbose=0, lr=0.05, resume=tmp_path / resume_from)
    assert history.val_loss == expected.val_loss
    state = reference.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in resumed.state_dict().items())


def test_a_recipe_carries_alternating_flips_to_the_loader(tmp_path):
    recipe = get_recipe("basic_cnn.altflip").config
    assert recipe.alternate_flips and recipe.loader_options()["alternate_flips"] is True
    assert get_recipe("basic_cnn.airbench").config.loader_options()["alternate_flips"] is False  # the default
    config = run_config.make_config("basic_cnn", str(tmp_path), recipe="basic_cnn.altflip").fit
    assert config.alternate_flips is True
    assert run_config.make_config("basic_cnn", str(tmp_path), recipe="basic_cnn.airbench").fit.alternate_flips is False
    # the architecture's default recipe
    assert run_config.make_config("basic_cnn", str(tmp_path)).fit.alternate_flips is True
    data, spec = _images(8)
    model = imgzoo.basic_cnn(widths=(4,), num_classes=2)
    model.data_spec = spec
    # The airbench recipes' batch and crop, so that only the flips can differ.
    train = runs.train_data(model, data, "standard", 1024, 0, translate=2, alternate_flips=config.alternate_flips)
    assert isinstance(train, FastLoader) and train.alternate_flips
    differences = loader_differences(train, get_recipe("basic_cnn.airbench").config)
    assert differences == ["alternate_flips=True (the recipe's is False)"]
    assert loader_differences(train, recipe) == []
    with pytest.raises(ValueError, match="alternate_flips must be True or False"):
        FitConfig(epochs=1, alternate_flips="yes")
