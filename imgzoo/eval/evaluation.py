"""Measure a trained model (evaluate), use it (predict), look at its answers (plot_predictions); never train. The
model comes back in the mode, on the device and in the layout it came in: evaluating mid-training changes nothing."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import imgzoo.data.datasets as datasets
from imgzoo._device import amp_dtype, autocast, resolve_device, use_channels_last
from imgzoo.data.loaders import Transformed, batches, is_batches, root_of
from imgzoo.data.transforms import flip_preserves_label, for_model
from imgzoo.eval.plots import plot_confusion_matrix, plot_samples

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["TTA_MODES", "EvalResult", "TestTimeAugmented", "evaluate", "plot_predictions", "predict", "resolve_device"]


@contextlib.contextmanager
def _borrowed(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``model`` in eval mode on ``device`` for the block; afterwards every submodule's mode (a frozen backbone's
    batch norm stays in eval) and the device (its first parameter's or buffer's) are as they came in."""
    modes = [(module, module.training) for module in model.modules()]
    home = next((t.device for t in itertools.chain(model.parameters(), model.buffers())), None)
    model.to(device).eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
        if home is not None:
            model.to(home)


@torch.no_grad()
def eval_sums(model: nn.Module, loader: Iterable, *, device: torch.device, amp_dtype: torch.dtype | None = None,
              channels_last: bool = False, num_classes: int | None = None) -> dict[str, Any]:  # fmt: skip
    """One pass in eval mode: loss_sum, correct (top-1), correct5, n and with ``num_classes`` a (true, predicted)
    confusion matrix; sums, not means, so that processes can add theirs up."""
    model.eval()
    loss_sum, correct, correct5 = (
        torch.zeros((), dtype=t, device=device) for t in (torch.float64, torch.int64, torch.int64)
    )
    confusion = torch.zeros((num_classes or 0) ** 2, dtype=torch.int64, device=device)
    layout = torch.channels_last if channels_last else torch.preserve_format
    n = 0
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=layout)
        y = y.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        correct += hits[:, 0].sum()
        correct5 += hits.any(dim=1).sum()
        if num_classes is not None:
            confusion += torch.bincount(y * num_classes + top[:, 0], minlength=num_classes * num_classes)
        n += len(y)
    result = {"loss_sum": loss_sum.item(), "correct": correct.item(), "correct5": correct5.item(), "n": n}
    if num_classes is not None:
        result["confusion"] = confusion.view(num_classes, num_classes).cpu()
    return result


@dataclass
class EvalResult:
    """Metrics of one pass over a data set. Accuracies are fractions in [0, 1]."""

    loss: float
    top1: float
    top5: float
    per_class_accuracy: list[float]  # NaN for classes absent from the data
    confusion_matrix: torch.Tensor  # [true, predicted] counts, int64
    class_names: list[str]
    num_samples: int
    tta: str = "none"  # the test-time augmentation the figures were measured with (TTA_MODES)

    def __str__(self) -> str:
        top = f"top-1 {100 * self.top1:.2f}% | top-5 {100 * self.top5:.2f}%"
        tta = f" | TTA {self.tta}" if self.tta != "none" else ""
        return f"loss {self.loss:.4f} | {top} | {self.num_samples} images{tta}"

    def to_dict(self) -> dict[str, Any]:
        """Every field but class_names, in JSON types: per-class accuracy keyed by class name."""
        out = {**vars(self), "per_class_accuracy": dict(zip(self.class_names, self.per_class_accuracy, strict=True))}
        del out["class_names"]
        return {**out, "confusion_matrix": self.confusion_matrix.tolist()}

    def plot_confusion_matrix(self, path: str | os.PathLike[str] | None = None, normalize: bool = True) -> Figure:
        """Rows are true classes, columns predictions; drawn by :func:`imgzoo.eval.plots.plot_confusion_matrix`."""
        title = f"Confusion matrix: {self.num_samples} images, top-1 {self.top1:.2%}"
        return plot_confusion_matrix(self.confusion_matrix, self.class_names, path, normalize=normalize, title=title)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinity as null (a class absent from the data, overflowed logits): JSON has none."""
    return json.loads(json.dumps(value), parse_constant=lambda _: None)


def _checked(model: nn.Module, data: Any, caller: str) -> Any:
    """``data``, a path to an image tree ``root/<class>/<image>`` read as its ``image_folder``; refused if its
    class names or order differ from the model's: every figure would be wrong."""
    if isinstance(data, (str, os.PathLike)):
        if not Path(data).is_dir():
            raise FileNotFoundError(
                f"{caller} takes a folder of class folders (root/<class>/<image>), a Dataset or a loader; "
                f"got the path {str(data)!r}, which is not a folder"
            )
        data = datasets.image_folder(data)
    ours, theirs = datasets.model_classes(model), datasets.classes_of(data)
    advice = "Evaluate it on data with the classes it was trained on, in the same order."
    datasets.check_classes(ours, theirs, expected_by="the model", found_in="the data", advice=advice)
    return data


def _eval_transform(model: nn.Module, image: Any, caller: str) -> Any:
    """The model's eval transform, for items that are PIL images, uint8 tensors or arrays."""
    if getattr(model, "data_spec", None) is None:
        raise TypeError(f"{caller} got {type(image).__name__} images, which need the model's eval transform, but "
                        f"{type(model).__name__} carries no data_spec to build it from. Build the model with "
                        f"imgzoo.create_model(), or give float tensors preprocessed as the model expects.")  # fmt: skip
    return for_model(model, train=False)


def _stacked(model: nn.Module, images: list[Any], caller: str) -> torch.Tensor:
    """``images`` as one batch: float tensors as they are (what model(x) takes), the rest through the eval transform."""
    transform, tensors = None, []
    for image in images:
        if not (isinstance(image, torch.Tensor) and image.is_floating_point()):
            transform = transform or _eval_transform(model, image, caller)
            image = transform(_read_image_file(image) if isinstance(image, (str, os.PathLike)) else image)
        tensors.append(image)
    return torch.stack(tensors)


def _as_loader(model: nn.Module, data: Any, batch_size: int, num_workers: int, device: torch.device) -> Any:
    """A loader of preprocessed batches: loaders as they are, data sets batched and transformed if raw."""
    if isinstance(data, DataLoader) or is_batches(data):
        return data
    if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
        raise TypeError(
            f"evaluate takes a Dataset of (image, label) pairs, a DataLoader, an iterable of (x, y) batches or a "
            f"folder path; got {type(data).__name__}"
        )
    if len(data) == 0:  # type: ignore[arg-type]
        raise ValueError("evaluate got an empty data set; pass a Dataset or DataLoader with at least one sample")
    first_image = data[0][0]
    # A generator of its own: a DataLoader draws its workers' base seed from the global one every pass, so a
    # measurement mid-training would shift training's dropout and augmentation (tests/test_training.py).
    if isinstance(first_image, torch.Tensor) and first_image.is_floating_point():  # preprocessed, as predict takes it
        return DataLoader(data, batch_size, shuffle=False, num_workers=num_workers, generator=torch.Generator())
    transform = _eval_transform(model, first_image, "evaluate")
    base = root_of(data)[0]
    if isinstance(base, datasets.ImageDataset) and base.files is None:  # decoded images: the whole-batch path
        return batches(data, batch_size, train=False, spec=model.data_spec, device=device)
    # Files are read as they are, never written to a cache by a measurement.
    return DataLoader(Transformed(data, transform), batch_size, num_workers=num_workers, generator=torch.Generator())


def _checked_labels(loader: Iterable, num_classes: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches, refusing a label the model has no output for: cross entropy would fail with an index
    error on a CPU, and a device-side assert that spoils the CUDA context on a GPU, neither naming the cause."""
    for x, y in loader:
        y = torch.as_tensor(y)
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise ValueError(
                f"evaluate got label {bad}, but the model has {num_classes} outputs, so labels must lie in 0.."
                f"{num_classes - 1}. Check that the data's classes are the model's, or build it with their number."
            )
        yield x, y


def _class_names(model: nn.Module, data: Any, num_classes: int) -> list[str]:
    """The model's class names, else the data's, else the class indices as text."""
    for names in (datasets.model_classes(model), datasets.classes_of(data)):
        if names and len(names) == num_classes:
            return [str(c) for c in names]
    return [str(i) for i in range(num_classes)]


TTA_MODES = ("none", "flip", "shift", "flip+shift")


class TestTimeAugmented(nn.Module):
    """``model``'s logits averaged over the image's mirror and/or copies shifted one pixel up-left and down-right
    (reflect padding), as airbench94 does (without it: -0.8% on CIFAR-10); ``"flip+shift"`` is its level 2."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, model: nn.Module, mode: str) -> None:
        super().__init__()
        if mode not in TTA_MODES[1:]:
            raise ValueError(f"TestTimeAugmented: mode must be one of {TTA_MODES[1:]}, got {mode!r}")
        self.model, self.mode = model, mode

    def _views(self, x: torch.Tensor) -> torch.Tensor:  # the image and, with "flip", its mirror, averaged
        if "flip" not in self.mode:
            return self.model(x)
        return 0.5 * self.model(x) + 0.5 * self.model(x.flip(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self._views(x)
        if "shift" not in self.mode:
            return logits
        height, width = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :height, :width], padded[..., 2 : height + 2, 2 : width + 2]]
        return 0.5 * logits + 0.25 * (self._views(shifted[0]) + self._views(shifted[1]))


def tta_mode(tta: bool | str, model: nn.Module, data: Any) -> str:
    """The TTA_MODES name of ``tta``; a mirror is refused for data whose labels it changes (digits)."""
    mode = ("flip" if tta else "none") if isinstance(tta, bool) or tta is None else tta
    if mode not in TTA_MODES:
        raise ValueError(f"evaluate: tta must be False, True (= 'flip') or one of {TTA_MODES}; got {tta!r}")
    spec = getattr(data, "spec", None) or getattr(model, "data_spec", None)
    if "flip" in mode and spec is not None and not flip_preserves_label(spec):
        raise ValueError(
            f"evaluate: tta={tta!r} mirrors the images, but a mirror changes the label of a {spec.name} image "
            "(a mirrored digit is another digit, or none). Use tta='shift' (one-pixel shifts only), or tta=False."
        )
    return mode


def _inference_copy(model: nn.Module, device: torch.device, dtype: torch.dtype | None) -> tuple[nn.Module, bool]:
    """The network evaluate runs, and whether its inputs go channels_last. Where fit would train channels_last
    (oneDNN's native layout on a CPU), it runs on channels_last copies of the 4-D tensors, so the caller's model
    keeps its layout: 1.3x (ResNet-20) and 1.4x (mnist_cnn) NCHW's images/s on a 2-core Xeon at batch 256."""
    if not use_channels_last("auto", device, dtype):
        return model, False
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    weights = {name: t.to(memory_format=torch.channels_last) for name, t in tensors if t.dim() == 4}
    net = nn.Module()  # a module, so that eval_sums and TestTimeAugmented take it as they take the model
    net.forward = functools.partial(torch.func.functional_call, model, weights)
    return net, True


def evaluate(model: nn.Module, data: Dataset | DataLoader, *,
             batch_size: int = 256,  # no gradients are kept, so twice fit's default fits in the same memory
             device: str | torch.device = "auto", num_workers: int = 0, amp: bool | str = False,
             tta: bool | str = False, progress: bool = False) -> EvalResult:  # fmt: skip
    """Loss, top-1, top-5, per-class accuracy and confusion matrix of ``model`` on ``data``: a Dataset of (image,
    class index) pairs, a DataLoader, any iterable of (x, y) batches or an image tree ``root/<class>/<image>``, with
    the model's classes in its order. Float tensors are taken as preprocessed, other images get ``for_model(model)``.
    ``tta`` (:class:`TestTimeAugmented`): ``True`` / ``"flip"``, ``"shift"``, ``"flip+shift"``; no mirror for MNIST.
    ``progress``: a tqdm bar over the batches (a flip+shift pass over 5,000 images took 77 s on a busy 2-core Xeon).
    """
    mode = tta_mode(tta, model, data)
    device = resolve_device(device)
    data = _checked(model, data, "evaluate")
    loader = _as_loader(model, data, batch_size, num_workers, device)
    first = next(iter(loader), None)
    if first is None:
        raise ValueError(
            f"evaluate got a {type(loader).__name__} with no batches (an empty data set, or drop_last with "
            f"fewer samples than one batch); pass at least one (image, label) sample"
        )
    dtype = amp_dtype(amp, device)
    with _borrowed(model, device), torch.no_grad():
        net, channels_last = _inference_copy(model, device, dtype)
        num_classes = net(first[0][:1].to(device)).shape[1]
        net = net if mode == "none" else TestTimeAugmented(net, mode)
        labelled = _checked_labels(loader, num_classes)
        if progress:
            from tqdm.auto import tqdm

            total = len(loader) if hasattr(loader, "__len__") else None
            labelled = tqdm(labelled, total=total, desc=f"evaluate{'' if mode == 'none' else f' ({mode} TTA)'}",
                            unit="batch", leave=False)  # fmt: skip
        sums = eval_sums(
            net, labelled, device=device, amp_dtype=dtype, channels_last=channels_last, num_classes=num_classes
        )
    confusion, n = sums["confusion"], sums["n"]
    per_class = (confusion.diag().double() / confusion.sum(dim=1).double()).tolist()  # 0/0 -> NaN: class absent
    means = {"loss": sums["loss_sum"] / n, "top1": sums["correct"] / n, "top5": sums["correct5"] / n}
    names = _class_names(model, data, num_classes)
    return EvalResult(**means, per_class_accuracy=per_class, confusion_matrix=confusion, class_names=names,
                      num_samples=n, tta=mode)  # fmt: skip


def _read_image_file(path: str | os.PathLike[str]) -> Any:
    """A decoded PIL image from a local file; URLs, folders and unreadable files get an error naming them."""
    text = str(path)
    if "://" in text:
        raise ValueError(f"predict reads local files and fetches nothing; got the URL {text!r}. Download it first.")
    if Path(path).is_dir():
        raise IsADirectoryError(
            f"predict takes image files, and {text} is a folder. Pass its files, e.g. "
            f"sorted(Path({text!r}).glob('*.png')), or run `imgzoo predict MODEL {text}` to classify all of them."
        )
    if not Path(path).is_file():
        raise FileNotFoundError(f"predict: no image file at {text}")
    return datasets._open_image(text, advice="pass another image")


@torch.no_grad()
def predict(
    model: nn.Module, images: Any, topk: int = 5, *, device: str | torch.device = "auto"
) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
    """The ``topk`` most likely classes, as (class name, probability) pairs, most likely first, of one image (a list
    of pairs) or a list (a list of lists): PIL images, file paths, uint8 tensors and arrays go through the model's
    eval transform, float tensors are taken as preprocessed (a 4-D one is a batch). URLs and folders are refused."""
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:  # before any image is read
        raise ValueError(f"predict: topk must be a positive integer (the number of classes to list); got {topk!r}")
    device = resolve_device(device)
    single = not isinstance(images, (list, tuple)) and not (isinstance(images, torch.Tensor) and images.dim() == 4)
    items = [images] if single else list(images)
    if not items:
        raise ValueError("predict got no images; pass a PIL image, a path, a tensor, or a list of them")
    batch = _stacked(model, items, "predict")
    with _borrowed(model, device):
        probs = model(batch.to(device)).float().softmax(dim=1).cpu()
    names = _class_names(model, None, probs.shape[1])
    values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
    results = [list(zip([names[i] for i in idx.tolist()], val.tolist(), strict=True))
               for idx, val in zip(indices, values, strict=True)]  # fmt: skip
    return results[0] if single else results


def _balanced_sample(labels: torch.Tensor, n: int, seed: int = 0) -> list[int]:
    """Positions of ``n`` samples dealt round-robin over the classes present, each class in seeded order
    (the first ``n`` of a class-sorted data set would all be one class)."""
    generator = torch.Generator().manual_seed(seed)
    classes = [torch.nonzero(labels == label).flatten() for label in torch.unique(labels).tolist()]
    queues = [members[torch.randperm(len(members), generator=generator)].tolist() for members in classes]
    return [i for rank in itertools.zip_longest(*queues) for i in rank if i is not None][:n]


@torch.no_grad()
def plot_predictions(model: nn.Module, data: Any, n: int = 16, *, seed: int = 0,
                     path: str | os.PathLike[str] | None = None,
                     device: str | torch.device = "auto") -> Figure:  # fmt: skip
    """``n`` images, a seeded class-balanced sample of ``data`` (what :func:`evaluate` takes), with their true and
    predicted labels (a wrong one in red); :func:`imgzoo.eval.plots.plot_samples` draws."""
    data = _checked(model, data, "plot_predictions")
    data = data.dataset if isinstance(data, DataLoader) else data
    if is_batches(data) and not hasattr(data, "eval_batch"):
        raise TypeError(f"plot_predictions takes a Dataset, a DataLoader, a FastLoader or a folder path; got "
                        f"{type(data).__name__}, a loader it cannot pick samples from")  # fmt: skip
    labels = datasets.labels_of(data).long().cpu()
    if not isinstance(n, int) or n < 1 or len(labels) == 0:
        raise ValueError(f"plot_predictions needs n >= 1 and a data set with at least one (image, label) sample; "
                         f"got n={n!r} and {len(labels)} samples")  # fmt: skip
    picked = _balanced_sample(labels, n, seed)
    if hasattr(data, "eval_batch"):  # a FastLoader: its images unaugmented, normalised with its own spec
        images, true_labels = data.eval_batch(picked)
        images, true_labels, spec = images.cpu(), true_labels.tolist(), data.spec
    else:
        samples = [data[i] for i in picked]
        images = _stacked(model, [image for image, _ in samples], "plot_predictions")
        true_labels, spec = [int(label) for _, label in samples], getattr(model, "data_spec", None)
    device = resolve_device(device)
    with _borrowed(model, device):
        logits = model(images.to(device)).float().cpu()
    return plot_samples(images, true_labels, logits.argmax(1).tolist(), _class_names(model, data, logits.shape[1]),
                        mean=spec and spec.mean, std=spec and spec.std, path=path)  # fmt: skip
