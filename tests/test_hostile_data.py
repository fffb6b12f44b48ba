"""Hostile and malformed data files: nothing imgzoo reads runs code or reaches outside its folder.

Every malformed input ends in an imgzoo error that names the file (or argument),
what was expected and what came; a refused call leaves data and caches as they were.
"""

import gzip
import os
import pickle
import socket
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from data_factories import (
    CIFAR10_CLASSES,
    idx_bytes,
    make_images,
    truncate,
    write_cifar10,
    write_image_folder,
    write_kaggle_dogs,
    write_mnist,
)
from PIL import Image
from safetensors.torch import save_file

from imgzoo import datasets
from imgzoo.data import loaders
from imgzoo.models.registry import CIFAR10

# --- 1. CIFAR-10 batches are unpickled with an allow-list ----------------------


class RunsACommand:
    """A pickle payload: unpickling it calls os.system, which would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvaluatesCode:
    """A payload through builtins.exec instead of os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def write_batch(root: Path, name: str, batch: object) -> Path:
    """A full CIFAR-10 folder whose batch ``name`` is replaced by ``batch``, pickled as Python 3 does."""
    write_cifar10(root)
    path = root / "cifar-10-batches-py" / name
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return path


@pytest.mark.parametrize(
    ("payload", "forbidden"),
    [
        (lambda marker: RunsACommand(marker), "system"),
        (lambda marker: EvaluatesCode(marker), ".exec"),  # __builtin__.exec at protocol 2
        (lambda marker: {"data": RunsACommand(marker), "labels": []}, "system"),
        # Hidden inside a numpy object array, whose elements are pickled one by one.
        (lambda marker: {"data": np.array([RunsACommand(marker)], dtype=object), "labels": [0]}, "system"),
    ],
    ids=["os.system", "exec", "inside the dict", "inside an object array"],
)
def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path, payload, forbidden):
    marker = tmp_path / "pwned"
    write_batch(tmp_path / "data", "data_batch_1", payload(marker))
    with pytest.raises(datasets.CorruptFileError) as info:
        datasets.cifar10(tmp_path / "data")
    assert not marker.exists()
    message = str(info.value)
    assert "data_batch_1" in message and forbidden in message and "download=True" in message


def test_the_payload_does_run_under_plain_pickle(tmp_path):
    """The control: the same file does create the marker when unpickled without the allow-list."""
    marker = tmp_path / "pwned"
    path = write_batch(tmp_path / "data", "data_batch_1", RunsACommand(marker))
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("python2", [True, False], ids=["as in the real archive", "as Python 3 writes"])
def test_cifar_batches_of_both_pickle_flavours_read_the_same(tmp_path, python2):
    write_cifar10(tmp_path / "a", python2=python2)
    write_cifar10(tmp_path / "b", python2=not python2)
    a, b = datasets.cifar10(tmp_path / "a"), datasets.cifar10(tmp_path / "b")
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert a.images.float().std() > 0  # real pixel data, not zeros


@pytest.mark.parametrize(
    ("batch", "words"),
    [
        ([1, 2, 3], "got a list"),
        ({"labels": [0]}, "'data' and 'labels'"),
        ({"data": np.zeros((2, 3072), dtype=np.float32), "labels": [0, 1]}, "float32 (2, 3072)"),
        ({"data": np.zeros((2, 1024), dtype=np.uint8), "labels": [0, 1]}, "uint8 (2, 1024)"),
        ({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0]}, "1 labels"),
        ({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": np.array([0, 1])}, "a ndarray"),
        ({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 10]}, "10"),
        ({"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, "cat"]}, "'cat'"),
    ],
    ids=["not a dict", "no data", "float data", "wrong width", "too few labels", "labels array", "label 10", "str"],
)
def test_a_cifar_batch_of_the_wrong_types_names_the_file_and_what_came(tmp_path, batch, words):
    write_batch(tmp_path, "data_batch_4", batch)
    with pytest.raises(datasets.CorruptFileError) as info:
        datasets.cifar10(tmp_path)
    assert "data_batch_4" in str(info.value) and words in str(info.value)


# --- 2. labels.csv ids stay inside the dataset ---------------------------------


def kaggle_with_row(root: Path, image_id: str) -> Path:
    """The Kaggle layout with one extra labels.csv row for ``image_id``, on line 8."""
    write_kaggle_dogs(root, n_per_class=2)
    with open(root / "labels.csv", "a") as f:
        f.write(f"{image_id},chihuahua\n")
    return root


@pytest.mark.parametrize("how", ["absolute", "dot-dot", "dot-dot inside", "backslash"])
def test_a_labels_csv_id_that_is_a_path_is_refused(tmp_path, how):
    outside = tmp_path / "elsewhere" / "secret.jpg"
    outside.parent.mkdir()
    Image.new("RGB", (8, 8)).save(outside)
    image_id = {
        "absolute": str(outside.with_suffix("")),
        "dot-dot": "../../elsewhere/secret",
        "dot-dot inside": "sub/../../../elsewhere/secret",
        "backslash": "..\\..\\elsewhere\\secret",
    }[how]
    root = kaggle_with_row(tmp_path / "dogs", image_id)
    with pytest.raises(ValueError) as info:
        datasets.kaggle_dogs(root)
    message = str(info.value)
    assert "line 8" in message and repr(image_id) in message and "not a file name" in message


def test_a_labels_csv_id_linked_outside_the_train_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere" / "secret.jpg"
    outside.parent.mkdir()
    Image.new("RGB", (8, 8)).save(outside)
    root = kaggle_with_row(tmp_path / "dogs", "linked")
    (root / "train" / "linked.jpg").symlink_to(outside)
    with pytest.raises(ValueError) as info:
        datasets.kaggle_dogs(root)
    assert "line 8" in str(info.value) and "'linked'" in str(info.value) and "outside" in str(info.value)


def test_a_train_folder_that_is_itself_a_link_still_loads(tmp_path):
    """Linking the whole train folder to a bigger disk is a normal setup, not an escape."""
    real = write_kaggle_dogs(tmp_path / "real", n_per_class=2)
    root = tmp_path / "dogs"
    root.mkdir()
    (root / "labels.csv").write_bytes((real / "labels.csv").read_bytes())
    (root / "train").symlink_to(real / "train", target_is_directory=True)
    assert len(datasets.kaggle_dogs(root)) == 6


# --- 3. MNIST idx files of the wrong size or type ------------------------------


def mnist_files(root: Path) -> tuple[Path, Path]:
    write_mnist(root, n_per_class=2, compressed=False, subdir=".")
    return root / "train-images-idx3-ubyte", root / "train-labels-idx1-ubyte"


def test_idx_damage_is_a_corrupt_file_error_naming_the_file_and_what_was_expected(tmp_path):
    cases = {
        "bad magic": (0, lambda b: b"\x01\x02" + b[2:], "not an idx file"),
        "unknown type code": (0, lambda b: b[:2] + b"\x07" + b[3:], "type one of 08"),
        "float images": (0, lambda b: idx_bytes(np.zeros((20, 28, 28)), 0x0D), "uint8 images of shape (N, 28, 28)"),
        "wrong image size": (0, lambda b: idx_bytes(np.zeros((20, 32, 32))), "got torch.uint8 (20, 32, 32)"),
        "2-d labels": (1, lambda b: idx_bytes(np.zeros((20, 1))), "shape (N,)"),
        "dims larger than the data": (0, lambda b: b[:4] + (30).to_bytes(4, "big") + b[8:], "truncated or corrupt"),
        "bytes past the data": (0, lambda b: b + b"\x00" * 5, "got more"),
        "header cut short": (0, lambda b: b[:9], "ends inside its header"),
        "count mismatch": (1, lambda b: idx_bytes(np.zeros(19)), "20 images but"),
        "label 12": (1, lambda b: idx_bytes(np.full(20, 12)), "label 12"),
    }
    for name, (which, damage, words) in cases.items():
        paths = mnist_files(tmp_path / name)
        paths[which].write_bytes(damage(paths[which].read_bytes()))
        with pytest.raises(datasets.CorruptFileError) as info:
            datasets.mnist(tmp_path / name)
        assert paths[which].name in str(info.value) and words in str(info.value), name


@pytest.mark.parametrize("keep", [0.3, 0.95])
def test_a_truncated_gzip_idx_file_is_named(tmp_path, keep):
    write_mnist(tmp_path, compressed=True, subdir=".")
    truncate(tmp_path / "train-images-idx3-ubyte.gz", keep=keep)
    with pytest.raises(datasets.CorruptFileError, match="train-images-idx3-ubyte.gz"):
        datasets.mnist(tmp_path)


def test_a_gzip_idx_file_that_inflates_past_its_header_is_refused(tmp_path):
    """A small .gz can inflate to gigabytes; reading stops one byte past what the header declares."""
    write_mnist(tmp_path, compressed=True, subdir=".")
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    inflated = gzip.decompress(path.read_bytes()) + bytes(50_000_000)
    path.write_bytes(gzip.compress(inflated, compresslevel=9))
    assert path.stat().st_size < 200_000
    with pytest.raises(datasets.CorruptFileError, match="got more"):
        datasets.mnist(tmp_path)


# --- 4. labels.csv rows and encodings ------------------------------------------


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("0000beef", "expected 2 columns (id,breed); got 1"),
        ("0000beef,chihuahua,extra", "got 3"),
        (",chihuahua", "the id is empty"),
        ("0000beef,poodle", "'poodle' is not one of"),
        ("0000\x00beef,chihuahua", "is not a file name"),
    ],
    ids=["missing column", "extra column", "empty id", "unknown breed", "NUL byte"],
)
def test_every_malformed_row_names_its_line(tmp_path, row, words):
    write_kaggle_dogs(tmp_path, n_per_class=2, sample_submission=True)  # the breeds are known beforehand
    with open(tmp_path / "labels.csv", "a", newline="") as f:
        f.write(row + "\n")
    with pytest.raises(ValueError) as info:
        datasets.kaggle_dogs(tmp_path)
    assert "labels.csv" in str(info.value) and "line 8" in str(info.value) and words in str(info.value)


def test_a_duplicate_id_names_both_its_line_and_the_id(tmp_path):
    write_kaggle_dogs(tmp_path, n_per_class=2)
    first_id = (tmp_path / "labels.csv").read_text().splitlines()[1].split(",")[0]
    with open(tmp_path / "labels.csv", "a") as f:
        f.write(f"{first_id},maltese_dog\n")
    with pytest.raises(ValueError, match=f"line 8: id '{first_id}' appears twice"):
        datasets.kaggle_dogs(tmp_path)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be-bom", "utf-32"])
def test_labels_csv_with_a_byte_order_mark_reads_like_plain_utf8(tmp_path, encoding):
    write_kaggle_dogs(tmp_path, n_per_class=2, sample_submission=True)
    plain = datasets.kaggle_dogs(tmp_path)
    for name in ("labels.csv", "sample_submission.csv"):
        text = (tmp_path / name).read_text()
        if encoding == "utf-16-be-bom":
            data = "\ufeff".encode("utf-16-be") + text.encode("utf-16-be")
        else:
            data = text.encode(encoding)
        (tmp_path / name).write_bytes(data)
    again = datasets.kaggle_dogs(tmp_path)
    assert again.samples == plain.samples and again.classes == plain.classes


def test_a_labels_csv_that_is_not_utf8_names_the_file_and_the_encoding(tmp_path):
    write_kaggle_dogs(tmp_path, n_per_class=2, breeds=("chihuahua", "japanese_spaniel", "maltese_dog"))
    text = (tmp_path / "labels.csv").read_text().replace("maltese_dog", "maltése_dog")
    (tmp_path / "labels.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(datasets.CorruptFileError) as info:
        datasets.kaggle_dogs(tmp_path)
    message = str(info.value)
    assert "labels.csv" in message and "not valid utf-8" in message and "byte e9" in message
    assert "save it as UTF-8" in message


# --- 5. train_val_split arguments ----------------------------------------------


class Labels(torch.utils.data.Dataset):
    def __init__(self, targets, classes=None):
        self.targets = list(targets)
        self.classes = classes or [str(c) for c in range(max(targets) + 1)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return i, self.targets[i]


@pytest.mark.parametrize("fraction", ["0.1", -0.1, 0, 0.0, 1, 1.0, 1.5, float("nan"), True, [0.1]])
def test_a_bad_val_fraction_says_what_is_expected(fraction):
    with pytest.raises(ValueError) as info:
        datasets.train_val_split(Labels([0, 0, 1, 1]), val_fraction=fraction)
    assert "between 0 and 1" in str(info.value) and repr(fraction) in str(info.value)


@pytest.mark.parametrize(
    ("count", "words"),
    [
        (0, "positive int"),
        (2.5, "positive int"),
        (True, "positive int"),
        (11, "val_count=11 does not fit 10 images in 2 classes"),
        (9, "must lie in 2..8"),
        (1, "must lie in 2..8"),
    ],
)
def test_a_bad_val_count_says_what_is_expected(count, words):
    with pytest.raises(ValueError, match=words):
        datasets.train_val_split(Labels([0] * 5 + [1] * 5), val_count=count)


def test_fraction_and_count_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        datasets.train_val_split(Labels([0, 0, 1, 1]), val_fraction=0.5, val_count=2)


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.9])
def test_a_class_with_one_image_is_named_with_its_count_and_what_to_do(fraction):
    data = Labels([0, 0, 0, 1, 2, 2], classes=["akita", "pug", "corgi"])
    with pytest.raises(ValueError) as info:
        datasets.train_val_split(data, val_fraction=fraction)
    message = str(info.value)
    assert "'pug'" in message and "1 image" in message and "at least 2" in message and "Add images" in message


@pytest.mark.parametrize(("sizes", "count"), [((5, 5), 4), ((50, 10, 3), 9), ((2, 2, 2), 3), ((7, 100), 30)])
def test_val_count_gives_exactly_that_many_stratified(sizes, count):
    targets = [label for label, n in enumerate(sizes) for _ in range(n)]
    train, val = datasets.train_val_split(Labels(targets), val_count=count, seed=3)
    assert len(val) == count and len(train) == len(targets) - count
    for label, n in enumerate(sizes):
        n_val = int((val.targets == label).sum())
        assert 1 <= n_val <= n - 1
        assert abs(n_val - n * count / len(targets)) < 1 + 1e-9  # within one of its proportional share


# --- 7. a damaged decode cache is rebuilt, with one warning --------------------


def decode_with_warnings(root: Path, cache: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = loaders.decode(datasets.image_folder(root), CIFAR10, cache_dir=cache)
    return data, [str(w.message) for w in caught]


@pytest.mark.parametrize("damage", ["truncated", "wrong shape", "wrong labels", "not safetensors"])
def test_a_damaged_decode_cache_is_reported_once_and_rebuilt(tmp_path, damage):
    root = write_image_folder(tmp_path / "data", classes=CIFAR10_CLASSES[:3], n_per_class=2)
    cache = tmp_path / "cache"
    first, messages = decode_with_warnings(root, cache)
    assert messages == []
    (path,) = cache.glob("*.safetensors")
    if damage == "truncated":
        truncate(path, keep=0.6)
    elif damage == "wrong shape":
        save_file({"images": torch.zeros(6, 3, 8, 8, dtype=torch.uint8), "targets": first.targets}, path)
    elif damage == "wrong labels":
        save_file({"images": first.images, "targets": first.targets.flip(0)}, path)
    else:
        path.write_bytes(b"\x00" * 64)
    second, messages = decode_with_warnings(root, cache)
    assert len(messages) == 1 and str(path) in messages[0] and "rebuild" in messages[0]
    assert torch.equal(second.images, first.images) and torch.equal(second.targets, first.targets)
    third, messages = decode_with_warnings(root, cache)
    assert messages == [] and torch.equal(third.images, first.images)
    assert list(cache.glob("*")) == [path]  # repaired in place, no temporary files left


# --- 8. download=True without a network ----------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def no_proxy(monkeypatch):
    monkeypatch.setattr(urllib.request, "getproxies", dict)


@pytest.fixture
def listening_port():
    """A loopback port that accepts connections (and serves nothing)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_cifar_download_without_a_network_fails_at_once_saying_what_to_do(tmp_path, monkeypatch, no_proxy):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", f"http://127.0.0.1:{closed_port()}/c.tar.gz")

    def never(*args, **kwargs):
        raise AssertionError("torchvision was asked to download although the host is unreachable")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", never)
    with pytest.raises(ConnectionError) as info:
        datasets.cifar10(tmp_path, download=True)
    message = str(info.value)
    assert "127.0.0.1" in message and "cifar-10-python.tar.gz" in message
    assert f"{tmp_path}/cifar-10-batches-py/" in message and "data_batch_1" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["cifar10", "mnist"])
def test_a_failed_download_is_a_connection_error_with_the_files_to_place(
    tmp_path, monkeypatch, no_proxy, listening_port, which
):
    url = f"http://127.0.0.1:{listening_port}/"

    def no_route(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    if which == "cifar10":
        monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", url + "cifar-10-python.tar.gz")
        monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_route)
        files = "data_batch_1"
    else:
        monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
        monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", no_route)
        files = "train-images-idx3-ubyte.gz"
    with pytest.raises(ConnectionError) as info:
        getattr(datasets, which)(tmp_path, download=True)
    assert "no route to host" in str(info.value) and files in str(info.value) and str(tmp_path) in str(info.value)


# --- 9. decompression bombs and truncated images -------------------------------


def folder_with_one_big_image(root: Path, pixels: tuple[int, int]) -> Path:
    write_image_folder(root, classes=("cat", "dog"), n_per_class=1, size=(8, 8), ext="png")
    big = root / "dog" / "big.png"
    Image.fromarray(make_images([1], *pixels, 3)[0]).save(big)
    return big


@pytest.mark.parametrize("pixels", [(40, 40), (64, 64)], ids=["over the limit (PIL warns)", "over twice (PIL raises)"])
def test_an_image_over_the_pixel_limit_is_refused_naming_the_file(tmp_path, monkeypatch, pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a stand-in for PIL's 89 MP, so the test file stays small
    big = folder_with_one_big_image(tmp_path / "data", pixels)
    folder = datasets.image_folder(tmp_path / "data")
    index = [path for path, _ in folder.samples].index(str(big))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused outright, not decoded with a warning
        with pytest.raises(datasets.CorruptFileError) as info:
            folder[index]
        assert str(big) in str(info.value) and "MAX_IMAGE_PIXELS" in str(info.value)
        with pytest.raises(datasets.CorruptFileError, match="big.png"):
            loaders.decode(folder, CIFAR10, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert len(datasets.image_folder(tmp_path / "data", on_error="skip")) == 2


def test_a_truncated_image_in_decode_names_the_file(tmp_path):
    root = write_image_folder(tmp_path / "data", n_per_class=2, ext="png")
    folder = datasets.image_folder(root)
    damaged = truncate(folder.samples[2][0], keep=0.6)
    with pytest.raises(datasets.CorruptFileError, match=str(damaged)):
        loaders.decode(folder, CIFAR10, cache_dir=tmp_path / "cache")
