"""imgzoo.data.datasets on tiny files in the real formats: labels match images, class order is stable."""

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from data_factories import (
    CIFAR10_CLASSES,
    label_of,
    truncate,
    write_cifar10,
    write_image_folder,
    write_kaggle_dogs,
    write_mnist,
    write_stanford_dogs,
    zero_byte,
)
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from imgzoo import datasets, transforms
from imgzoo.models.registry import CIFAR10, MNIST


def assert_labels_match(dataset):
    for i in range(len(dataset)):
        image, label = dataset[i]
        array = np.asarray(image) if not isinstance(image, torch.Tensor) else image.numpy()
        assert label_of(array) == label, f"item {i}"


# --- CIFAR-10 ------------------------------------------------------------------


def test_cifar10_reads_the_pickle_batches(tmp_path):
    write_cifar10(tmp_path, n_per_class=2)
    train = datasets.cifar10(tmp_path)
    assert isinstance(train, datasets.ImageDataset) and train.files is None
    assert train.classes == list(CIFAR10_CLASSES) and train.spec == CIFAR10
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert sorted(train.targets.tolist()) == sorted(list(range(10)) * 2)
    assert_labels_match(train)
    test = datasets.cifar10(tmp_path / "cifar-10-batches-py", train=False)  # the batch folder itself works too
    assert len(test) == 20
    assert not torch.equal(test.images, train.images)


def test_cifar10_applies_a_transform(tmp_path):
    write_cifar10(tmp_path)
    x, _ = datasets.cifar10(tmp_path, transform=transforms.for_model("resnet_cifar"))[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)


def test_cifar10_reads_an_image_tree(tmp_path):
    write_image_folder(tmp_path / "train", classes=CIFAR10_CLASSES, n_per_class=1, ext="png")
    train = datasets.cifar10(tmp_path)
    assert isinstance(train, datasets.ImageDataset) and train.files is not None
    assert train.classes == list(CIFAR10_CLASSES) and train.spec == CIFAR10
    assert_labels_match(train)
    with pytest.raises(FileNotFoundError, match="download=True"):
        datasets.cifar10(tmp_path, train=False)


def test_cifar10_image_tree_must_hold_the_cifar_classes(tmp_path):
    write_image_folder(tmp_path / "train", classes=("cat", "dog"))
    with pytest.raises(ValueError, match="ten CIFAR-10 class folders"):
        datasets.cifar10(tmp_path)


def test_cifar10_missing_root_names_the_path_and_the_remedy(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        datasets.cifar10(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value) and "download=True" in str(info.value)


def test_cifar10_damaged_batch_names_the_file(tmp_path):
    write_cifar10(tmp_path)
    truncate(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(datasets.CorruptFileError, match="data_batch_3"):
        datasets.cifar10(tmp_path)


def test_cifar10_download_goes_through_torchvision_only_when_files_are_missing(tmp_path, monkeypatch):
    calls = []

    def fake_cifar10(root, train, download):
        calls.append((root, train, download))
        write_cifar10(root)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    assert len(datasets.cifar10(tmp_path, download=True)) == 20
    assert calls == [(str(tmp_path), True, True)]
    datasets.cifar10(tmp_path, download=True)  # present now: no second fetch
    assert len(calls) == 1


# --- MNIST ---------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("subdir", ["MNIST/raw", "."])
def test_mnist_reads_idx_files_gzipped_or_raw(tmp_path, compressed, subdir):
    write_mnist(tmp_path, n_per_class=2, compressed=compressed, subdir=subdir)
    train = datasets.mnist(tmp_path)
    assert train.images.shape == (20, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.classes == [str(d) for d in range(10)] and train.spec == MNIST
    assert_labels_match(train)
    assert len(datasets.mnist(tmp_path, train=False)) == 20


def test_mnist_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        datasets.mnist(tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message and "download=True" in message


def test_mnist_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    def fake_mnist(root, train, download):
        calls.append(download)
        write_mnist(root, compressed=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    assert len(datasets.mnist(tmp_path, download=True)) == 20 and calls == [True]


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_damaged_idx_file_is_named(tmp_path, damage):
    write_mnist(tmp_path, compressed=False, subdir=".")
    path = tmp_path / "train-images-idx3-ubyte"
    if damage == "truncate":
        truncate(path, keep=0.9)
    elif damage == "empty":
        zero_byte(path)
    else:
        path.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(datasets.CorruptFileError, match="train-images-idx3-ubyte"):
        datasets.mnist(tmp_path)


# --- dog breeds and image folders ----------------------------------------------


def test_stanford_dogs_cleans_names_and_keeps_wnid_order(tmp_path):
    write_stanford_dogs(tmp_path, n_per_class=2)
    dogs = datasets.stanford_dogs(tmp_path)
    assert dogs.classes == ["Chihuahua", "Japanese_spaniel", "Maltese_dog"]
    assert dogs.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert_labels_match(dogs)
    assert datasets.stanford_dogs(tmp_path / "Images").samples == dogs.samples


def write_dog_lists(root: Path, lists: dict[str, list[str]]) -> None:
    """``{split}_list.mat`` as lists.tar holds it: a MATLAB cell column ``file_list`` of paths under Images/."""
    from scipy.io import savemat

    for split, names in lists.items():
        savemat(root / f"{split}_list.mat", {"file_list": np.array(names, dtype=object).reshape(-1, 1)})


def test_stanford_dogs_official_split_keeps_the_listed_images_in_list_order(tmp_path):
    write_stanford_dogs(tmp_path, n_per_class=3)
    every = datasets.stanford_dogs(tmp_path)
    names = [Path(path).relative_to(tmp_path / "Images").as_posix() for path, _ in every.samples]
    (tmp_path / "lists").mkdir()
    train_names = [n for n in names if not n.endswith("_2.jpg")][::-1]  # another order than the folder scan's
    write_dog_lists(tmp_path / "lists", {"train": train_names, "test": [n for n in names if n.endswith("_2.jpg")]})
    train = datasets.stanford_dogs(tmp_path, split="train")
    test = datasets.stanford_dogs(tmp_path / "Images", split="test")
    assert [Path(p).relative_to(tmp_path / "Images").as_posix() for p, _ in train.samples] == train_names
    assert train.targets.tolist() == [2, 2, 1, 1, 0, 0] and test.targets.tolist() == [0, 1, 2]
    assert train.classes == test.classes == every.classes
    assert sorted(train.samples + test.samples) == sorted(every.samples)
    assert_labels_match(train)


def test_stanford_dogs_official_split_says_what_is_missing(tmp_path, monkeypatch):
    write_stanford_dogs(tmp_path, n_per_class=1)
    with pytest.raises(FileNotFoundError, match=r"train_list\.mat.*lists\.tar"):
        datasets.stanford_dogs(tmp_path, split="train")
    with pytest.raises(ValueError, match="split must be one of .*got 'val'"):
        datasets.stanford_dogs(tmp_path, split="val")
    write_dog_lists(tmp_path, {"test": ["n02085620-Chihuahua/n02085620_0.jpg", "n02085620-Chihuahua/gone.jpg"]})
    with pytest.raises(FileNotFoundError, match="1 image.*not found.*gone.jpg"):
        datasets.stanford_dogs(tmp_path, split="test")
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # as if scipy were not installed
    with pytest.raises(ImportError, match=r"imgzoo\[dogs\]"):
        datasets.stanford_dogs(tmp_path, split="test")


def test_stanford_dogs_rejects_folders_without_a_wnid(tmp_path):
    write_image_folder(tmp_path / "Images", classes=("beagle",))
    with pytest.raises(ValueError, match="n02085620-Chihuahua"):
        datasets.stanford_dogs(tmp_path)


def test_kaggle_layout_labels_follow_the_csv(tmp_path):
    write_kaggle_dogs(tmp_path, n_per_class=2)
    dogs = datasets.kaggle_dogs(tmp_path)
    assert dogs.classes == ["chihuahua", "japanese_spaniel", "maltese_dog"]
    assert len(dogs) == 6
    assert_labels_match(dogs)


def test_kaggle_breed_order_comes_from_sample_submission(tmp_path):
    write_kaggle_dogs(tmp_path, sample_submission=True)
    (tmp_path / "sample_submission.csv").write_text("id,maltese_dog,chihuahua,japanese_spaniel\n")
    dogs = datasets.kaggle_dogs(tmp_path)
    assert dogs.classes == ["maltese_dog", "chihuahua", "japanese_spaniel"]
    written_order = ["chihuahua", "japanese_spaniel", "maltese_dog"]  # the factory's label numbering
    for path, label in dogs.samples:  # every file keeps its own breed under the new numbering
        assert written_order[label_of(np.asarray(Image.open(path)))] == dogs.classes[label]


@pytest.mark.parametrize(
    ("edit", "error", "words"),
    [
        ("unknown breed", ValueError, "'poodle' is not one of"),
        ("missing file", FileNotFoundError, "does not exist"),
        ("duplicate id", ValueError, "appears twice"),
        ("bad header", ValueError, "columns id,breed"),
        ("no rows", ValueError, "no rows"),
    ],
)
def test_kaggle_bad_rows_are_errors_not_wrong_labels(tmp_path, edit, error, words):
    write_kaggle_dogs(tmp_path, sample_submission=True)
    csv_path = tmp_path / "labels.csv"
    lines = csv_path.read_text().splitlines()
    if edit == "unknown breed":
        lines.append(lines[1].split(",")[0] + "x,poodle")
    elif edit == "missing file":
        lines.append("ffffffff,chihuahua")
    elif edit == "duplicate id":
        lines.append(lines[1])
    elif edit == "bad header":
        lines[0] = "image,label"
    else:
        lines = lines[:1]
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(error) as info:
        datasets.kaggle_dogs(tmp_path)
    assert words in str(info.value) and "labels.csv" in str(info.value)


def test_dog_breeds_detects_the_layout(tmp_path):
    assert datasets.dog_breeds(write_kaggle_dogs(tmp_path / "k")).classes[0] == "chihuahua"
    assert datasets.dog_breeds(write_stanford_dogs(tmp_path / "s")).classes[0] == "Chihuahua"
    assert datasets.dog_breeds(write_image_folder(tmp_path / "f", classes=("pug", "akita"))).classes == ["akita", "pug"]


def test_image_folder_empty_class_is_an_error(tmp_path):
    write_image_folder(tmp_path, classes=("cat", "dog"))
    (tmp_path / "emu").mkdir()
    with pytest.raises(ValueError, match="emu"):
        datasets.image_folder(tmp_path)


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "dogs"))):
        datasets.image_folder(tmp_path / "dogs")


def test_zero_byte_image_fails_at_construction_naming_the_file(tmp_path):
    write_image_folder(tmp_path)
    empty = zero_byte(tmp_path / "dog" / "0001.jpg")
    with pytest.raises(datasets.CorruptFileError, match=re.escape(str(empty))):
        datasets.image_folder(tmp_path)


def test_truncated_or_foreign_image_fails_on_access_naming_the_file(tmp_path):
    write_image_folder(tmp_path)
    folder = datasets.image_folder(tmp_path)
    for index, damage in ((0, truncate), (1, lambda p: Path(p).write_bytes(b"<html>not found</html>"))):
        path = folder.samples[index][0]
        damage(path)
        with pytest.raises(datasets.CorruptFileError, match=re.escape(path)):
            folder[index]


def test_skip_warns_and_counts_unreadable_files(tmp_path):
    write_image_folder(tmp_path, n_per_class=3)
    zero_byte(tmp_path / "cat" / "0000.jpg")
    truncate(tmp_path / "dog" / "0001.jpg")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        folder = datasets.image_folder(tmp_path, on_error="skip")
    assert len(folder) == 4 and len(folder.skipped) == 2
    assert_labels_match(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(datasets.image_folder(write_image_folder(tmp_path / "clean"), on_error="skip")) == 4


# --- the stratified split ------------------------------------------------------


class Labels(torch.utils.data.Dataset):
    def __init__(self, targets):
        self.targets, self.classes = list(targets), [str(c) for c in range(max(targets) + 1)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return i, self.targets[i]


@given(
    counts=st.lists(st.integers(2, 40), min_size=1, max_size=6),
    fraction=st.floats(0.05, 0.5),
    seed=st.integers(0, 100),
)
def test_split_is_stratified_disjoint_and_complete(counts, fraction, seed):
    targets = [label for label, n in enumerate(counts) for _ in range(n)]
    train, val = datasets.train_val_split(Labels(targets), val_fraction=fraction, seed=seed)
    assert sorted(train.indices + val.indices) == list(range(len(targets)))
    for label, n in enumerate(counts):
        n_val = int((val.targets == label).sum())
        assert n_val == min(max(round(n * fraction), 1), n - 1)  # never a class missing from either side
    assert val.targets.tolist() == [targets[i] for i in val.indices]


def test_split_is_seeded_and_keeps_classes(tmp_path):
    data = datasets.cifar10(write_cifar10(tmp_path, n_per_class=10))
    train, val = datasets.train_val_split(data, val_fraction=0.1, seed=0)
    again, _ = datasets.train_val_split(data, val_fraction=0.1, seed=0)
    other, _ = datasets.train_val_split(data, val_fraction=0.1, seed=1)
    assert torch.equal(train.images, again.images) and not torch.equal(train.images, other.images)
    assert len(val) == 10 and sorted(val.targets.tolist()) == list(range(10))
    assert train.classes == list(CIFAR10_CLASSES) and train.spec == CIFAR10
    assert_labels_match(val)
    with pytest.raises(ValueError, match="val_fraction"):
        datasets.train_val_split(data, val_fraction=1.0)
