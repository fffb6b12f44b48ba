"""imgzoo.data.loaders: the batch path agrees with the per-image transforms, and decoding is cached."""

import dataclasses

import numpy as np
import pytest
import torch
from data_factories import CIFAR10_CLASSES, write_cifar10, write_image_folder, write_mnist
from PIL import Image

from imgzoo import datasets, transforms
from imgzoo.data import loaders
from imgzoo.models.registry import CIFAR10, MNIST


def normalised_crops(image: torch.Tensor, spec, flip: bool) -> torch.Tensor:
    """Every output the standard augmentation may give for one uint8 (C, H, W) image: (K, C, H, W)."""
    pad = round(transforms.PAD_FRACTION * min(spec.size))
    padded = torch.nn.functional.pad(image.unsqueeze(0), (pad,) * 4, mode="reflect")[0]
    height, width = spec.size
    crops = [padded[:, y : y + height, x : x + width] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
    if flip:
        crops += [c.flip(-1) for c in crops]
    x = torch.stack(crops).float() / 255
    return (x - torch.tensor(spec.mean).view(1, -1, 1, 1)) / torch.tensor(spec.std).view(1, -1, 1, 1)


def test_eval_batches_equal_the_per_image_eval_transform(tmp_path):
    data = datasets.cifar10(write_cifar10(tmp_path, n_per_class=2))
    loader = loaders.FastLoader(data, batch_size=8, device="cpu")
    x, y = zip(*loader, strict=True)
    x, y = torch.cat(x), torch.cat(y)
    assert len(loader) == 3 and x.shape == (20, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(y, data.targets)  # eval keeps the order
    eval_transform = transforms.for_model("resnet_cifar")
    expected = torch.stack([eval_transform(image) for image in data.images])
    assert torch.allclose(x, expected, atol=1e-5)


@pytest.mark.parametrize(("spec", "flip"), [(CIFAR10, True), (MNIST, False)])
def test_train_batches_are_pad_crops_and_flips_of_their_images(tmp_path, spec, flip):
    write = write_cifar10 if spec is CIFAR10 else write_mnist
    data = (datasets.cifar10 if spec is CIFAR10 else datasets.mnist)(write(tmp_path, n_per_class=3))
    loader = loaders.FastLoader(data, batch_size=7, train=True, device="cpu", seed=3)
    seen, flipped = [], 0
    for x, y in loader:
        assert x.shape[1:] == spec.input_shape
        for image, label in zip(x, y, strict=True):
            # Find which image this is: its label narrows it down; the crops identify it.
            matches = []
            for i in torch.nonzero(data.targets == label).flatten().tolist():
                candidates = normalised_crops(data.images[i], spec, flip=True)
                hits = torch.nonzero((candidates - image).abs().amax(dim=(1, 2, 3)) < 1e-4).flatten()
                if len(hits):
                    matches.append(i)
                    flipped += int(hits.min()) >= len(candidates) // 2
            assert len(matches) >= 1
            seen.append(matches[0])
    assert sorted(seen) == list(range(len(data)))  # every image once per epoch
    assert seen != list(range(len(data)))  # shuffled
    assert (flipped > 0) == flip  # CIFAR images get mirrored, digits never


def test_batches_repeat_with_the_seed_and_change_between_epochs(tmp_path):
    data = datasets.cifar10(write_cifar10(tmp_path, n_per_class=2))

    def epoch(loader):
        return torch.cat([x for x, _ in loader])

    a = loaders.FastLoader(data, 8, train=True, device="cpu", seed=0)
    b = loaders.FastLoader(data, 8, train=True, device="cpu", seed=0)
    first = epoch(a)
    assert torch.equal(first, epoch(b))
    assert not torch.equal(first, epoch(a))


def test_split_drop_last_and_conversion_to_the_spec(tmp_path):
    data = datasets.mnist(write_mnist(tmp_path, n_per_class=3))
    train, val = datasets.train_val_split(data, val_fraction=0.34)
    loader = loaders.FastLoader(val, batch_size=4, spec=CIFAR10, drop_last=True, device="cpu")
    assert len(val) == 10 and len(loader) == 2
    batches = list(loader)
    assert len(batches) == 2 and batches[0][0].shape == (4, 3, 32, 32)
    assert set(torch.cat([y for _, y in batches]).tolist()) <= set(val.targets.tolist())


def test_decode_caches_by_checksum(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "data", classes=CIFAR10_CLASSES[:3], n_per_class=2, size=(40, 36))
    folder = datasets.image_folder(root)
    cache = tmp_path / "cache"
    first = loaders.decode(folder, CIFAR10, cache_dir=cache)
    assert first.images.shape == (6, 3, 32, 32) and first.images.dtype == torch.uint8
    assert torch.equal(first.targets, folder.targets)
    assert len(list(cache.glob("*.safetensors"))) == 1

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the cache holds it")

    monkeypatch.setattr(loaders, "_open_image", no_decoding)
    second = loaders.decode(datasets.image_folder(root), CIFAR10, cache_dir=cache)
    assert torch.equal(first.images, second.images)
    monkeypatch.undo()

    # A changed file is a new key, decoded again rather than served stale.
    image = np.asarray(Image.open(folder.samples[0][0])).copy()
    image[:] = 255 - image
    Image.fromarray(image).save(folder.samples[0][0], format="JPEG")
    third = loaders.decode(datasets.image_folder(root), CIFAR10, cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 2
    assert not torch.equal(third.images[0], first.images[0]) and torch.equal(third.images[1:], first.images[1:])


def test_fast_loader_decodes_image_files_with_a_spec(tmp_path):
    folder = datasets.image_folder(write_image_folder(tmp_path / "data", n_per_class=2))
    with pytest.raises(ValueError, match="spec="):
        loaders.FastLoader(folder)
    loader = loaders.FastLoader(folder, 2, spec=MNIST, device="cpu", cache_dir=tmp_path / "cache")
    assert [tuple(x.shape) for x, _ in loader] == [(2, 1, 28, 28)] * 2


def test_bad_arguments_are_refused(tmp_path):
    data = datasets.cifar10(write_cifar10(tmp_path))
    with pytest.raises(ValueError, match="one of .*'strong'.*got 'heavy'"):
        loaders.FastLoader(data, train=True, augment="heavy")
    with pytest.raises(ValueError, match="batch_size"):
        loaders.FastLoader(data, batch_size=0)
    with pytest.raises(TypeError, match="DataLoader"):
        loaders.FastLoader(torch.utils.data.TensorDataset(torch.zeros(2, 3, 32, 32)), spec=CIFAR10)


def test_decode_keeps_the_range_of_sixteen_bit_images(tmp_path):
    """16-bit PNGs reach the uint8 cache scaled by 65535, not clipped to 255 (which would make them all white)."""
    for name, level in (("a_dark", 16448), ("b_bright", 49344)):  # 0.251 and 0.753 of 65535
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        Image.fromarray(np.full((32, 32), level, dtype=np.uint16)).save(folder / "0.png")
    data = loaders.decode(datasets.image_folder(tmp_path / "data"), MNIST, cache_dir=tmp_path / "cache")
    assert data.images.dtype == torch.uint8
    assert data.images[0].unique().tolist() == [64] and data.images[1].unique().tolist() == [192]


def test_fast_loader_takes_the_spec_a_data_set_carries(tmp_path):
    """A CIFAR-10 image tree carries the CIFAR-10 spec, so decoding it needs no spec=."""
    write_image_folder(tmp_path / "data" / "train", classes=CIFAR10_CLASSES, n_per_class=1, size=(40, 36))
    folder = datasets.cifar10(tmp_path / "data")
    loader = loaders.FastLoader(folder, 4, device="cpu", cache_dir=tmp_path / "cache")
    assert loader.spec == CIFAR10
    x, y = zip(*loader, strict=True)
    assert torch.cat(x).shape == (10, 3, 32, 32) and torch.equal(torch.cat(y), folder.targets)


def test_fast_loader_takes_a_split_of_a_split_and_any_subset(tmp_path):
    data = datasets.cifar10(write_cifar10(tmp_path, n_per_class=4))
    eval_transform = transforms.for_model("resnet_cifar")
    train, _ = datasets.train_val_split(data, val_fraction=0.25)
    _, inner_val = datasets.train_val_split(train, val_fraction=0.34)
    subset = torch.utils.data.Subset(data, [7, 2, 31])
    nested = torch.utils.data.Subset(torch.utils.data.Subset(data, [7, 2, 31, 5]), [3, 0])  # inner[outer]
    for part, images, labels in (
        (inner_val, inner_val.images, inner_val.targets),
        (subset, data.images[[7, 2, 31]], data.targets[[7, 2, 31]]),
        (nested, data.images[[5, 7]], data.targets[[5, 7]]),
    ):
        loader = loaders.FastLoader(part, batch_size=64, device="cpu")
        (x, y), *rest = list(loader)
        assert not rest and torch.equal(y, labels)
        expected = torch.stack([eval_transform(image) for image in images])
        assert torch.allclose(x, expected, atol=1e-5)


def test_eval_batch_shows_chosen_images_unaugmented_even_from_a_training_loader(tmp_path):
    data = datasets.cifar10(write_cifar10(tmp_path, n_per_class=2))
    loader = loaders.FastLoader(data, 8, train=True, device="cpu", seed=1)
    twin = loaders.FastLoader(data, 8, train=True, device="cpu", seed=1)
    x, y = loader.eval_batch([3, 0, 11])
    expected = torch.stack([transforms.for_model("resnet_cifar")(data.images[i]) for i in (3, 0, 11)])
    assert torch.allclose(x, expected, atol=1e-5) and y.tolist() == data.targets[[3, 0, 11]].tolist()
    # Looking at samples leaves the epochs to come as they would have been.
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(loader, twin, strict=True))
    with pytest.raises(IndexError, match="0..19"):
        loader.eval_batch([20])


# ---------------------------------------------------------------------------- the "strong" preset


def first_batch(data, augment, seed=5, uint8_ops=None, float_ops=None):
    """The first batch; ``uint8_ops`` / ``float_ops`` replace the ops augmentation() gave the loader."""
    loader = loaders.FastLoader(data, 20, train=True, augment=augment, device="cpu", seed=seed)
    loader.uint8_ops = loader.uint8_ops if uint8_ops is None else uint8_ops
    loader.float_ops = loader.float_ops if float_ops is None else float_ops
    return next(iter(loader))[0]


def test_strong_crops_and_flips_first_then_applies_the_policy_per_image(tmp_path):
    """With the policy and erasing made identities, a strong batch is the standard batch of the same seed:
    the crop and flip come first, from the same draws, and the policy sees the cropped uint8 image."""
    data = datasets.cifar10(write_cifar10(tmp_path, n_per_class=2))
    seen = []

    def policy(image):
        seen.append((image.dtype, tuple(image.shape)))
        return image

    loader = loaders.FastLoader(data, 20, train=True, augment="strong", device="cpu")
    assert [type(op).__name__ for op in loader.uint8_ops + loader.float_ops] == ["TrivialAugmentWide", "RandomErasing"]
    strong = first_batch(data, "strong", uint8_ops=[policy], float_ops=[lambda image: image])
    assert torch.equal(strong, first_batch(data, "standard"))
    assert seen == [(torch.uint8, (3, 32, 32))] * 20


def test_strong_batches_differ_from_standard_ones_and_some_are_erased(tmp_path):
    data = datasets.cifar10(write_cifar10(tmp_path, n_per_class=4))
    strong, standard = first_batch(data, "strong"), first_batch(data, "standard")
    changed = (strong - standard).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert changed.sum() >= 10  # most images got an operation (identity is 1 of TrivialAugmentWide's 14)
    # An erased image holds a rectangle of exact zeros in every channel; real pixels normalise to 0 almost never.
    zero_pixels = (strong == 0).all(dim=1).sum(dim=(1, 2))
    assert (zero_pixels >= 4).any()


def test_strong_batches_repeat_with_the_seed_whatever_the_global_random_state(tmp_path):
    data = datasets.mnist(write_mnist(tmp_path, n_per_class=2))
    torch.manual_seed(1)
    a = first_batch(data, "strong")
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = first_batch(data, "strong")
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone
    assert torch.equal(a, b)
    assert not torch.equal(a, first_batch(data, "strong", seed=6))
    assert a.shape == (20, 1, 28, 28)


def test_a_strong_run_resumes_exactly(tmp_path):
    """fit restores the loader's generator, which now also drives the per-image policy: 1 + 1 epochs == 2."""
    from imgzoo import create_model, fit

    data = datasets.mnist(write_mnist(tmp_path / "data", n_per_class=3))

    def run(epochs, **resume):
        torch.manual_seed(0)
        model = create_model("mnist_cnn", hidden=16)
        loader = loaders.FastLoader(data, 8, train=True, augment="strong", device="cpu", seed=1)
        fit(model, loader, epochs=epochs, schedule=None, verbose=0, checkpoint_dir=tmp_path / "ckpt", **resume)
        return model

    straight = run(2)
    for stale in (tmp_path / "ckpt").glob("*.pt"):
        stale.unlink()
    run(1)
    resumed = run(2, resume=tmp_path / "ckpt")
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_runs_train_small_images_with_strong_augmentation_from_a_fast_loader(tmp_path):
    from imgzoo import create_model
    from imgzoo.study import run as runs

    data = datasets.mnist(write_mnist(tmp_path, n_per_class=2))
    loader = runs.train_data(create_model("mnist_cnn"), data, "strong", 4, seed=0)
    assert isinstance(loader, loaders.FastLoader) and loader.augment == "strong" and loader.translate == 4


# ---------------------------------------------------------------------------- the "affine" preset


def test_affine_without_distortion_is_the_standard_batch(tmp_path):
    """A rotation of 0 degrees at scale 1 leaves every image as the standard preset cropped it (same seed)."""
    data = datasets.mnist(write_mnist(tmp_path, n_per_class=2))
    identity = transforms.v2.RandomAffine(degrees=0, scale=(1, 1))
    assert torch.equal(first_batch(data, "affine", uint8_ops=[identity]), first_batch(data, "standard"))


def test_affine_batches_rotate_and_scale_each_digit_and_erase_nothing(tmp_path):
    data = datasets.mnist(write_mnist(tmp_path, n_per_class=4))
    affine, standard = first_batch(data, "affine"), first_batch(data, "standard")
    changed = (affine - standard).abs().amax(dim=(1, 2, 3)) > 1e-4
    # Every image gets its own rotation and scale; a draw within a degree or two of the identity can leave
    # a 28-pixel image's nearest-neighbour resampling unchanged.
    assert changed.sum() >= 14
    # Each is still the same digit's ink moved around, not a new image: overlap with the standard crop.
    ink, ink_std = affine > 0, standard > 0
    overlap = (ink & ink_std).sum(dim=(1, 2, 3)).float() / ink_std.sum(dim=(1, 2, 3)).clamp(min=1)
    assert overlap.median() > 0.3
    torch.manual_seed(3)
    assert torch.equal(affine, first_batch(data, "affine"))  # the loader's seed decides, not the global one


def test_build_transform_applies_the_same_affine_policy():
    steps = transforms.build_transform(MNIST, train=True, augment="affine").transforms
    affine = [t for t in steps if isinstance(t, transforms.v2.RandomAffine)]
    assert len(affine) == 1 and affine[0].degrees == [-10.0, 10.0] and affine[0].scale == (0.9, 1.1)
    assert not any(isinstance(t, transforms.v2.RandomErasing) for t in steps)
    evaluation = transforms.build_transform(MNIST, train=False, augment="affine").transforms
    assert not any(isinstance(t, transforms.v2.RandomAffine) for t in evaluation)


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_affine_rotates_the_way_torchvision_does(tmp_path, degrees):
    """A fixed quarter or half turn: the batched rotation gives exactly torchvision's RandomAffine on each image."""
    data = datasets.cifar10(write_cifar10(tmp_path, n_per_class=2))
    fixed = transforms.v2.RandomAffine(degrees=(degrees, degrees), scale=(1, 1))
    loader = loaders.FastLoader(data, 20, train=True, augment="affine", device="cpu", seed=5)
    rotated = first_batch(data, "affine", uint8_ops=[fixed])
    standard = first_batch(data, "standard")
    uint8 = ((standard - loader.shift) / loader.scale).round().to(torch.uint8)
    expected = torch.stack([fixed(image) for image in uint8]).float().mul_(loader.scale).add_(loader.shift)
    torch.testing.assert_close(rotated, expected)


def test_fast_loader_refuses_tensors_without_a_spec_and_says_what_to_pass():
    images = datasets.TensorImages(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ["a"])
    with pytest.raises(ValueError, match=r"FastLoader needs spec= .* for ImageDataset .*: it carries no spec"):
        loaders.FastLoader(images, 2)


# ---------------------------------------------------------------------------- one definition, one builder


def test_both_paths_take_their_ops_from_one_augmentation():
    """build_transform composes augmentation()'s ops; FastLoader's are the same types with the same settings."""
    before, after = transforms.augmentation(CIFAR10, "strong", translate=2, cutout=8)
    steps = transforms.build_transform(CIFAR10, train=True, augment="strong", translate=2, cutout=8).transforms
    kinds = [type(op) for op in steps]
    assert all(type(op) in kinds for op in before + after)
    crop = next(op for op in steps if isinstance(op, transforms.v2.RandomCrop))
    assert crop.padding == [2, 2, 2, 2] and crop.padding_mode == "reflect"
    assert [type(op).__name__ for op in after] == ["RandomErasing", "Cutout"]
    assert transforms.augmentation(MNIST, "standard")[0][-1].__class__.__name__ == "RandomCrop"  # digits: no flip


def test_per_image_cutout_blanks_one_square_of_the_given_side():
    image = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    x = transforms.build_transform(CIFAR10, train=True, augment="standard", translate=0, cutout=6)(image)
    blank = (x == 0).all(dim=0)
    rows, cols = blank.any(dim=1).nonzero().flatten(), blank.any(dim=0).nonzero().flatten()
    assert blank.sum() == 36 and len(rows) == 6 and len(cols) == 6


def test_batches_takes_the_whole_batch_path_for_small_images_and_a_dataloader_otherwise(tmp_path):
    data = datasets.cifar10(write_cifar10(tmp_path, n_per_class=2))
    fast = loaders.batches(data, 8, train=True, translate=2, cutout=4, seed=3, device="cpu")
    assert isinstance(fast, loaders.FastLoader) and fast.translate == 2 and fast.cutout == 4
    big = dataclasses.replace(CIFAR10, name="big", size=(40, 40), resize=48)
    loader = loaders.batches(data, 8, train=False, spec=big, num_workers=0)
    assert isinstance(loader, torch.utils.data.DataLoader)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 40, 40) and x.dtype == torch.float32 and torch.equal(y, data.targets[:8])
    with pytest.raises(ValueError, match="alternate_flips needs the whole-batch path"):
        loaders.batches(data, 8, train=True, spec=big, alternate_flips=True)
