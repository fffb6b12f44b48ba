"""The data side of fit: what it accepts, the checks before any work, and the loaders it builds.

The validation data is tried on the model too before anything is trained, seeded or written: a wrong shape or
label there would otherwise show only after a whole epoch. The training shuffle is a function of (seed, epoch),
which is what lets a checkpoint replay an epoch exactly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torch.utils.data.dataloader import default_collate

import imgzoo.data.loaders as loaders
import imgzoo.train.distributed as distributed
from imgzoo.data.datasets import ImageDataset, check_classes, classes_of, labels_of, model_classes
from imgzoo.data.loaders import own_generator  # fit's too
from imgzoo.data.transforms import build_transform
from imgzoo.models.registry import DataSpec
from imgzoo.train.config import FitConfig, warn_if_loader_differs

__all__ = ["accept", "check_data", "plain_batches", "check_labels", "own_generator", "train_loader", "val_loader"]


def accept(data: Any, model: nn.Module, cfg: FitConfig, seed: int, role: str, ctx: Any, device: torch.device) -> Any:
    """``data`` as fit uses it. Raw images (an ImageDataset, or Subset of one, without a transform) become
    batches for the model's spec: the whole-batch path in one process, else the same ops image by image,
    which a DistributedSampler can shard. An iterable of batches without a length (a generator's result) is
    read once into a list: fit passes over it every epoch and sizes its schedule by the batches in one."""
    root, spec = loaders.root_of(data)[0], getattr(model, "data_spec", None)
    if isinstance(root, ImageDataset) and root.transform is None and isinstance(spec, DataSpec):
        train = role == "training"
        options = {k: v for k, v in cfg.loader_options().items() if k != "batch_size"} if train else {}
        if not ctx.enabled and spec.resize is None:
            return loaders.batches(data, cfg.batch_size, train=train, spec=spec, seed=seed, device=device, **options)
        options.pop("alternate_flips", None)
        return loaders.Transformed(data, build_transform(spec, train, **options))
    if data is None or isinstance(data, (Dataset, DataLoader)) or hasattr(data, "__len__"):
        return data
    if not hasattr(data, "__iter__"):
        raise TypeError(
            f"fit takes a Dataset, a DataLoader or any iterable of (x, y) batches; got {type(data).__name__}"
        )
    return list(data)


def plain_batches(data: Any, model: nn.Module) -> Any:
    """Un-augmented batches of raw training images (an ImageDataset, or Subset of one), for ``head_epochs``."""
    root, spec = loaders.root_of(data)[0], getattr(model, "data_spec", None)
    if not (isinstance(root, ImageDataset) and root.transform is None and isinstance(spec, DataSpec)):
        raise ValueError(
            f"fit: head_epochs computes the backbone's features of the training images once, without augmentation, "
            f"so it needs them as an ImageDataset (imgzoo.data); got {type(data).__name__}. Pass the dataset, or "
            "head_epochs=0 and call imgzoo.train.steps.warm_up_head yourself."
        )
    return loaders.batches(data, 256, train=False, spec=spec)


def dataset_of(data: Dataset | DataLoader, role: str) -> Dataset:
    """The map-style data set behind ``data``; refused if it has no length or no samples."""
    dataset = data.dataset if isinstance(data, DataLoader) else data
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"fit: the {role} data must be a map-style Dataset (with __len__) or a DataLoader over one; "
                        f"got {type(dataset).__name__}") from None  # fmt: skip
    if size == 0:
        raise ValueError(f"fit: the {role} data set is empty; pass at least one (image, label) sample")
    return dataset


def labels_known(train: Any) -> bool:
    """Whether the training data lists its labels cheaply, so that they are checked before any step, not per batch."""
    return labels_of(train if loaders.is_batches(train) else dataset_of(train, "training"), read=False) is not None


def check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    """Refuse labels that are not 1-D class indices in [0, num_classes - 1], saying which and why."""
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or y.dim() != 1:
        raise ValueError(
            f"fit: labels must be a 1-D integer tensor of class indices; got dtype {y.dtype}, shape {tuple(y.shape)} "
            f"({where}). One-hot labels: pass y.argmax(1)."
        )
    low, high = (int(y.min()), int(y.max())) if len(y) else (0, 0)
    if low < 0 or high >= num_classes:
        fix = "fix the negative ones" if low < 0 else f"build the model with num_classes={high + 1} or fix the labels"
        raise ValueError(
            f"fit: labels must lie in [0, {num_classes - 1}] for a model with {num_classes} outputs; "
            f"found {low}..{high} ({where}). Labels are class indices from 0: {fix}."
        )


def _first_batch(data: Any, role: str) -> tuple[Any, Any]:
    """A small batch of ``data`` and the object that may expose its labels, drawing from no shared generator."""
    if not loaders.is_batches(data):
        dataset = dataset_of(data, role)
        collate = data.collate_fn if isinstance(data, DataLoader) else default_collate
        return collate([dataset[i] for i in range(min(2, len(dataset)))]), dataset  # type: ignore[arg-type]
    if len(data) == 0:
        raise ValueError(f"fit: the {role} {type(data).__name__} yields no batches")
    generator = own_generator(data)
    saved = generator.get_state() if generator is not None else None
    batch = next(iter(data))
    if generator is not None:
        generator.set_state(saved)  # the check must not shift the loader's shuffle
    return batch, data


def _probe(model: nn.Module, data: Any, role: str, device: torch.device, num_classes: int | None) -> int:
    """Feed a small batch of ``data`` through the model in eval mode without gradients (no weight or batch-norm
    statistic moves) and check its labels; return the number of outputs."""
    batch, labelled = _first_batch(data, role)
    if not isinstance(batch, (list, tuple)) or len(batch) != 2:
        raise ValueError(f"fit: the {role} data must yield (image_tensor, label) pairs")
    x, y = batch
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.to(device))
    except Exception as e:
        spec = getattr(model, "data_spec", None)
        expected = f" It expects {spec.input_shape} per image." if spec is not None else ""
        advice = "model, train=True" if role == "training" else "model"  # augmentation for training only
        raise ValueError(
            f"fit: the model could not take a batch of the {role} data (batch shape {tuple(x.shape)}).{expected} "
            f"Preprocess with imgzoo.data.transforms.for_model({advice}). The model said: {e}"
        ) from e
    finally:
        model.train(was_training)
    if out.dim() != 2:
        raise ValueError(f"fit: the model must return (N, num_classes) logits; got shape {tuple(out.shape)}")
    num_classes = out.shape[1] if num_classes is None else num_classes
    labels = labels_of(labelled, read=False)
    check_labels(labels if labels is not None else torch.as_tensor(y), num_classes, f"in the {role} data")
    return num_classes


def check_data(model: nn.Module, train: Any, val: Any, device: torch.device, saved: Any, path: Any) -> int:
    """Try the training and validation data on the model before seeding, and with a checkpoint ``saved`` compare
    its classes with the training data's; return the number of classes."""
    advice = "Build the model with create_model(name, class_names=data.classes), or pass data with its classes."
    for data, role in ((train, "training"), (val, "validation")):  # no data (None) has no classes to check
        found = classes_of(data)
        check_classes(model_classes(model), found, expected_by="the model", found_in=f"the {role} data", advice=advice)
    num_classes = _probe(model, train, "training", device, None)
    if val is not None:
        _probe(model, val, "validation", device, num_classes)
    if saved is not None:
        advice = "Resume on the data the run was trained on (the same class folders), or train afresh without resume."
        found, by = classes_of(train) or model_classes(model), f"the checkpoint {path}"
        check_classes(saved.get("classes"), found, expected_by=by, found_in="the training data", advice=advice)
    return num_classes


def train_loader(data: Dataset | DataLoader, cfg: FitConfig, seed: int, ctx: distributed.DistContext,
                 device: torch.device) -> tuple[Any, DistributedSampler | None, torch.Generator]:  # fmt: skip
    """The training loader, its sampler (None for a loader used as given: its shuffle draws from the global generator,
    which the checkpoint keeps) and the generator of its worker seeds; under torchrun, around a DistributedSampler."""
    generator = torch.Generator()  # draws the worker seeds; reseeded every epoch
    if loaders.is_batches(data) and ctx.enabled:
        raise ValueError(f"fit under torchrun cannot shard a {type(data).__name__}; pass the Dataset itself so that "
                         "each process gets its own part through a DistributedSampler")  # fmt: skip
    if isinstance(data, DataLoader) or loaders.is_batches(data):
        warn_if_loader_differs(data, cfg)  # a loader given is used as built, whatever the recipe says
        if not ctx.enabled:
            return data, None, generator
    dataset = dataset_of(data, "training")
    batch_size = data.batch_size if isinstance(data, DataLoader) and data.batch_size else cfg.batch_size
    workers = data.num_workers if isinstance(data, DataLoader) else cfg.num_workers
    # DistributedSampler with one replica is a plain seeded shuffle: one code path for 1 or N processes.
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    collate = data.collate_fn if isinstance(data, DataLoader) else None
    # Not persistent: workers seeded once could not replay an epoch's augmentation on resume.
    order = {"sampler": sampler, "collate_fn": collate, "generator": generator, "persistent_workers": False}
    return _loader(dataset, batch_size, workers, device, **order), sampler, generator


def val_loader(data: Dataset | DataLoader | None, cfg: FitConfig, ctx: distributed.DistContext,
               device: torch.device) -> Any:  # fmt: skip
    """The validation loader; under torchrun each process scores a disjoint slice of a Dataset (sums are added)."""
    if data is None or loaders.is_batches(data) or (isinstance(data, DataLoader) and not ctx.enabled):
        return data  # a loader under DDP: every process scores all of it; the means stay right
    dataset = dataset_of(data, "validation")
    if ctx.enabled:
        dataset = Subset(dataset, range(ctx.rank, len(dataset), ctx.world_size))  # type: ignore[arg-type]
    return _loader(dataset, cfg.batch_size, cfg.num_workers, device, shuffle=False, generator=torch.Generator())


def _loader(dataset: Dataset, batch_size: int, workers: int | None, device: torch.device, **order: Any) -> DataLoader:
    workers = loaders.default_workers(dataset) if workers is None else workers
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda", **order)
