"""The original notebooks' figures: training curves, labelled samples, a confusion matrix. matplotlib (extra
``plot``) loads only when drawing; a ``Figure``, not pyplot, needs no display; ``path=`` saves a PNG atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch

from imgzoo._atomic import atomic_open

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_confusion_matrix", "plot_histories", "plot_history", "plot_samples"]


class History(Protocol):  # what a curve reads of imgzoo's History, which imports this module
    epoch: list[int]
    train_loss: list[float]
    val_loss: list[float | None]


def _new_figure(**kwargs: Any) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'imgzoo[plot]'") from None
    return Figure(**kwargs)


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100)
    return fig


def _curves(axes: Sequence[Any], history: History, label: str = "", legend: bool = True) -> None:
    """Accuracy left, loss right on a log scale (a first-epoch val loss of 43 would flatten the rest on a linear
    one); solid train, dashed validation; markers, so a one-epoch run shows a point."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    prefix = f"{label} " if label else ""
    for ax, metric, scale, ylabel in zip(axes, ("acc", "loss"), (100, 1), ("accuracy (%)", "loss"), strict=True):
        train = [scale * v for v in getattr(history, f"train_{metric}")]
        (line,) = ax.plot(history.epoch, train, "o-", markersize=4, label=f"{prefix}train")
        val = [(scale * v if v is not None else float("nan")) for v in getattr(history, f"val_{metric}")]
        if any(v == v for v in val):  # not all NaN
            ax.plot(history.epoch, val, "s--", markersize=4, label=f"{prefix}val", color=line.get_color())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set(xlabel="epoch", ylabel=ylabel, title="Accuracy" if metric == "acc" else "Loss (log scale)")
        ax.set_yscale("log" if metric == "loss" else "linear")
        # "0.5" and "2", not "5 x 10^-1"; minor ticks labelled where they round to 2 or 5 (one digit): a few labels
        # over a wide range (a first val loss of 43), every tick over a narrow one (1.8 to 2.4)
        if metric == "loss":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
        ax.grid(alpha=0.3, which="both")
        if legend:
            ax.legend(fontsize="small")


def plot_history(history: History, path: str | os.PathLike[str] | None = None) -> Figure:
    """Accuracy and loss per epoch, train against validation, as the original notebooks drew them."""
    fig = _new_figure(figsize=(10, 4))
    _curves(fig.subplots(1, 2), history)
    return _finish(fig, path)


def plot_histories(histories: Mapping[str, History], path: str | os.PathLike[str] | None = None) -> Figure:
    """Several models' curves on one figure, one colour per model (what ``compare`` draws), the legend beside them."""
    fig = _new_figure(figsize=(13, 4.5))
    axes = fig.subplots(1, 2)
    for name, history in histories.items():
        _curves(axes, history, label=name, legend=False)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", borderaxespad=0)
    return _finish(fig, path)


def _show_image(ax: Any, image: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    """Undo the normalisation so the picture looks like the photo, not like z-scores."""
    image = image.detach().float().cpu()
    if mean is not None and std is not None:
        image = image * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:  # unknown normalisation: stretch to [0, 1]
        image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    ax.imshow(image.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)  # cmap: 1 channel
    ax.set(xticks=[], yticks=[])


def plot_samples(images: torch.Tensor, true_labels: Sequence[int], predicted: Sequence[int],
                 class_names: Sequence[str] | None = None, *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, path: str | os.PathLike[str] | None = None) -> Figure:  # fmt: skip
    """A grid titled "true -> predicted", red where wrong, of an (N, C, H, W) batch normalised with ``mean`` and
    ``std`` (undone if given; else each image is stretched to [0, 1])."""
    images = torch.as_tensor(images)
    true_labels, predicted = [int(t) for t in true_labels], [int(p) for p in predicted]
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"plot_samples takes a non-empty (N, C, H, W) batch of images; got {tuple(images.shape)}")
    if not len(images) == len(true_labels) == len(predicted):
        raise ValueError(f"plot_samples needs one true label and one prediction per image; got {len(images)} images, "
                         f"{len(true_labels)} true labels, {len(predicted)} predictions")  # fmt: skip
    count = len(images)
    top = max(*true_labels, *predicted)
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(top + 1)]
    if top >= len(names):
        raise ValueError(f"plot_samples got class index {top} but {len(names)} class names; pass one name per class")
    cols = min(count, 8)
    rows = -(-count // cols)
    fig = _new_figure(figsize=(1.6 * cols, 1.9 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, image, true, pred in zip(axes, images, true_labels, predicted, strict=False):
        _show_image(ax, image, mean, std)
        ax.set_title(f"{names[true]}\n-> {names[pred]}", fontsize=8, color="black" if true == pred else "red")
    for ax in axes[count:]:
        ax.axis("off")
    return _finish(fig, path)


def plot_confusion_matrix(
    matrix: torch.Tensor,
    class_names: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
    *,
    normalize: bool = True,
    title: str = "",
) -> Figure:
    """Rows are true classes, columns predictions; ``normalize`` shows each row as fractions on a fixed 0-1 scale, so
    that two runs' matrices compare by colour; ``title`` heads it (how it was normalised is added)."""
    matrix = torch.as_tensor(matrix).double()
    k = matrix.shape[0]
    if matrix.dim() != 2 or matrix.shape[1] != k:
        raise ValueError(f"a confusion matrix is square (classes x classes); got shape {tuple(matrix.shape)}")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    values = matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1) if normalize else matrix
    size = max(4.0, 0.45 * k + 2)
    fig = _new_figure(figsize=(size + 1, size))
    ax = fig.subplots()
    im = ax.imshow(values.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), names, rotation=90 if k > 6 else 0, fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    how = "each row (true class) sums to 1" if normalize else "image counts"
    ax.set(xlabel="predicted", ylabel="true", title=f"{title}\n{how}" if title else f"Confusion matrix: {how}")
    if k <= 20:  # numbers stay legible up to about 20 classes
        peak = 1.0 if normalize else float(values.max()) or 1.0
        for i in range(k):
            for j in range(k):
                v = float(values[i, j])
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if v > peak / 2 else "black")
    return _finish(fig, path)
