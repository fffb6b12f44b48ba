"""The figures are written as real, non-empty PNG files (matplotlib's Agg, no display needed).

imgzoo.eval.plots draws what it is given; the figures that need a model (plot_predictions,
EvalResult.plot_confusion_matrix) predict in imgzoo.eval.evaluation and call down to it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fit_worker import FIT_OPTIONS, make_data, make_model
from data_factories import CIFAR10_CLASSES, write_cifar10, write_image_folder, write_mnist

import imgzoo
from imgzoo import datasets, transforms
from imgzoo.data.loaders import FastLoader
from imgzoo.eval.evaluation import evaluate, plot_predictions
from imgzoo.eval.plots import plot_confusion_matrix, plot_histories, plot_history, plot_samples
from imgzoo.study.compare import compare
from imgzoo.train.fit import fit

pytest.importorskip("matplotlib")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, path
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def trained():
    train, val = make_data(n=128)
    model = make_model()
    history = fit(model, train, val, epochs=2, **FIT_OPTIONS)
    return model, history, val


def test_history_plot(trained, tmp_path):
    _, history, _ = trained
    fig = history.plot(tmp_path / "curves.png")
    assert len(fig.axes) == 2
    assert_png(tmp_path / "curves.png")


def test_predicted_samples_grid(trained, tmp_path):
    model, _, val = trained
    fig = plot_predictions(model, val, n=10, path=tmp_path / "samples.png")
    assert sum(ax.get_title() != "" for ax in fig.axes) == 10
    assert_png(tmp_path / "samples.png")


def test_predicted_samples_grid_titles_say_true_then_predicted_and_redden_mistakes(tmp_path):
    images = torch.zeros(3, 1, 4, 4)
    fig = plot_samples(images, [0, 1, 2], [0, 2, 2], ["cat", "dog", "fox"], mean=[0.5], std=[0.25])
    titles = [(ax.get_title(), ax.title.get_color()) for ax in fig.axes]
    assert titles == [("cat\n-> cat", "black"), ("dog\n-> fox", "red"), ("fox\n-> fox", "black")]
    unnamed = plot_samples(images[:2], [3, 0], [3, 1], path=tmp_path / "unnamed.png")
    assert [ax.get_title() for ax in unnamed.axes] == ["3\n-> 3", "0\n-> 1"]
    assert_png(tmp_path / "unnamed.png")


@pytest.mark.parametrize(
    ("images", "true", "predicted", "names", "match"),
    [
        (torch.zeros(2, 4, 4), [0, 1], [0, 1], None, r"\(N, C, H, W\)"),
        (torch.zeros(2, 1, 4, 4), [0], [0, 1], None, "2 images, 1 true labels, 2 predictions"),
        (torch.zeros(1, 1, 4, 4), [0], [5], ["a", "b"], "class index 5 but 2 class names"),
    ],
)
def test_samples_grid_rejects_inconsistent_input(images, true, predicted, names, match):
    with pytest.raises(ValueError, match=match):
        plot_samples(images, true, predicted, names)


def test_curves_take_any_object_with_the_columns(tmp_path):
    class Columns:  # not a History: the plot needs only the numbers
        epoch, train_acc, train_loss, val_acc, val_loss = [1, 2], [0.5, 0.7], [1.0, 0.6], [None, 0.6], [None, 0.8]

    fig = plot_history(Columns(), tmp_path / "columns.png")
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["train", "val"]
    assert_png(tmp_path / "columns.png")


def test_confusion_matrix(trained, tmp_path):
    model, _, val = trained
    result = evaluate(model, val)
    result.plot_confusion_matrix(tmp_path / "confusion.png")
    assert_png(tmp_path / "confusion.png")
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(torch.zeros(2, 3))
    ax = result.plot_confusion_matrix().axes[0]  # titled, normalised on a fixed 0-1 scale: runs compare by colour
    assert ax.get_title() == f"Confusion matrix: {result.num_samples} images, top-1 {result.top1:.2%}\n" + (
        "each row (true class) sums to 1"
    )
    assert ax.images[0].get_clim() == (0, 1)
    counts = plot_confusion_matrix(torch.tensor([[3, 1], [0, 4]]), normalize=False).axes[0]
    assert counts.get_title() == "Confusion matrix: image counts" and counts.images[0].get_clim() == (0, 4)


def test_loss_is_on_a_log_scale_and_the_study_legend_lies_outside_the_data():
    single = plot_history(_ThreeEpochs()).axes
    assert [a.get_yscale() for a in single] == ["linear", "log"]  # a first val loss of 43 flattens nothing
    accuracy, loss = plot_histories({"a": _ThreeEpochs(), "b": _ThreeEpochs()}).axes[:2]
    assert accuracy.get_legend() is None and loss.get_legend().get_bbox_to_anchor().x0 > loss.bbox.x1


def test_compare_plot(tmp_path):
    train, val = make_data(n=64)
    result = compare({"a": make_model(0), "b": make_model(1)}, train, val, epochs=1, **FIT_OPTIONS)
    result.plot(tmp_path / "compare.png")
    assert_png(tmp_path / "compare.png")


class _OneEpoch:
    epoch, train_acc, train_loss, val_acc, val_loss = [1], [0.5], [1.2], [0.4], [1.4]


class _ThreeEpochs:
    epoch, train_acc, train_loss = [1, 2, 3], [0.5, 0.6, 0.7], [1.2, 1.0, 0.9]
    val_acc, val_loss = [0.4, 0.5, 0.55], [1.4, 1.2, 1.1]


@pytest.mark.parametrize("draw", ["history", "histories"])
def test_a_single_epoch_shows_as_points_and_epoch_ticks_are_whole_numbers(draw, tmp_path):
    # A one-point line has no length: without markers a 1-epoch run draws an empty axes.
    if draw == "history":
        figures = [plot_history(_OneEpoch()), plot_history(_ThreeEpochs(), tmp_path / "curves.png")]
    else:
        figures = [plot_histories({"a": _OneEpoch(), "b": _ThreeEpochs()}, tmp_path / "curves.png")]
    for fig in figures:
        for ax in fig.axes:
            lines = ax.get_lines()
            assert len(lines) >= 2 and all(line.get_marker() not in (None, "", "None", " ") for line in lines)
            low, high = ax.get_xlim()
            shown = [t for t in ax.get_xticks() if low <= t <= high]
            assert shown and all(float(t).is_integer() for t in shown), shown
    assert_png(tmp_path / "curves.png")


# ---- plot_predictions: which samples, and from what ----


def _grid(fig):
    """(true name, predicted name, title colour, pixels) of each drawn cell of a samples grid."""
    cells = []
    for ax in fig.axes:
        if ax.get_title():
            true, predicted = ax.get_title().split("\n-> ")
            cells.append((true, predicted, ax.title.get_color(), ax.get_images()[0].get_array().data))
    return cells


def _trues(fig):
    return [true for true, *_ in _grid(fig)]


@pytest.fixture(scope="module")
def letters(tmp_path_factory):
    """A class-sorted image tree (every 'a' file before every 'b'), as image_folder lists any folder."""
    root = write_image_folder(tmp_path_factory.mktemp("letters"), classes=("a", "b", "c", "d"), n_per_class=6)
    model = imgzoo.create_model("mnist_cnn", class_names=["a", "b", "c", "d"])
    return root, model


def test_predicted_samples_are_a_seeded_class_balanced_sample(letters):
    root, model = letters
    folder = datasets.image_folder(root, transform=transforms.for_model(model))
    _, val = datasets.train_val_split(folder, val_fraction=0.5)  # sorted indices: still class-sorted
    assert [folder.classes[t] for t in val.targets[:8]] == ["a"] * 3 + ["b"] * 3 + ["c"] * 2
    first = plot_predictions(model, val, n=8)
    assert _trues(first) == ["a", "b", "c", "d"] * 2
    again, other = plot_predictions(model, val, n=8), plot_predictions(model, val, n=8, seed=1)
    pixels = [[cell[3] for cell in _grid(fig)] for fig in (first, again, other)]
    assert all(np.array_equal(a, b) for a, b in zip(pixels[0], pixels[1], strict=True))  # same seed, same images
    assert not all(np.array_equal(a, b) for a, b in zip(pixels[0], pixels[2], strict=True))  # another seed, others
    for true, predicted, colour, _ in _grid(first):
        assert colour == ("black" if true == predicted else "red")


def test_predicted_samples_take_raw_data_sets_folders_and_fast_loaders(tmp_path):
    model = imgzoo.create_model("resnet_cifar", depth=8)
    raw = datasets.cifar10(write_cifar10(tmp_path / "cifar", n_per_class=3))  # uint8 images, no transform
    preprocessed = datasets.cifar10(tmp_path / "cifar", transform=transforms.for_model(model))
    loader = FastLoader(raw, 8, train=True, device="cpu")  # augments its batches; the grid must not
    figures = [plot_predictions(model, data, n=12) for data in (preprocessed, raw, loader)]
    expected = _grid(figures[0])
    assert [t for t, *_ in expected] == [*CIFAR10_CLASSES, *CIFAR10_CLASSES[:2]]
    for fig in figures[1:]:
        cells = _grid(fig)
        assert [c[:3] for c in cells] == [c[:3] for c in expected]
        assert all(np.allclose(a[3], b[3], atol=1e-4) for a, b in zip(cells, expected, strict=True))

    root = write_image_folder(tmp_path / "tree", classes=("cat", "dog"), n_per_class=3)
    cats_dogs = imgzoo.create_model("mnist_cnn", class_names=["cat", "dog"])
    from_path = plot_predictions(cats_dogs, root, n=4)
    from_dataset = plot_predictions(
        cats_dogs, datasets.image_folder(root, transform=transforms.for_model(cats_dogs)), n=4
    )
    assert [c[:3] for c in _grid(from_path)] == [c[:3] for c in _grid(from_dataset)]
    assert _trues(from_path) == ["cat", "dog", "cat", "dog"]


def test_predicted_samples_refuse_what_they_cannot_show(tmp_path):
    model = imgzoo.create_model("mnist_cnn")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        plot_predictions(model, tmp_path / "missing")
    with pytest.raises(ValueError, match="n >= 1"):
        plot_predictions(model, datasets.mnist(write_mnist(tmp_path)), n=0)
    raw = datasets.mnist(tmp_path)
    with pytest.raises(TypeError, match="carries no data_spec"):
        plot_predictions(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), raw, n=2)
