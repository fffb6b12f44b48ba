"""Register and list models and their pretrained weights.

This module is the map of imgzoo: every architecture registers itself here with the
input it expects (a :class:`DataSpec`), and every pretrained checkpoint registers a
:class:`WeightsEntry`. It imports no other imgzoo module, not even inside a function,
so every other module can depend on it without cycles; building a model with
pretrained weights needs the Hub client, and lives one floor up in
:func:`imgzoo.hub.api.create_model`. imgzoo's own architectures are registered when
``imgzoo`` is imported, since its ``__init__`` imports ``imgzoo.models``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "CIFAR10",
    "CIFAR10_CLASSES",
    "IMAGENET",
    "MNIST",
    "DataSpec",
    "ModelEntry",
    "WeightsEntry",
    "default_weights",
    "get_model_entry",
    "get_weights_entry",
    "list_models",
    "list_pretrained",
    "register_model",
    "register_weights",
]


@dataclass(frozen=True)
class DataSpec:
    """What a model expects to be fed, and what its outputs mean.

    The preprocessing travels with the model through this object: transforms are
    built from it, and checkpoints store it, so a user never looks up a mean or std.
    """

    name: str  # the data set it was designed for, e.g. "cifar10"
    channels: int
    size: tuple[int, int]  # (height, width) of the tensor the model receives
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    class_names: tuple[str, ...] | None = None
    # Eval-time resize of the shorter side before the centre crop to `size`.
    # None means "resize straight to `size`" (the small-image data sets).
    resize: int | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"DataSpec.channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"DataSpec {self.name!r}: mean and std need one value per channel "
                f"({self.channels}), got mean={self.mean} std={self.std}"
            )
        if self.num_classes < 1:
            raise ValueError(f"DataSpec.num_classes must be >= 1, got {self.num_classes}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"DataSpec {self.name!r}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            # predict answers with names: two classes sharing one would make its answers ambiguous.
            repeated = sorted({c for c in self.class_names if self.class_names.count(c) > 1})
            raise ValueError(
                f"DataSpec {self.name!r}: class names must be distinct; {repeated} appear more than once. "
                "Give each class its own name."
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        return (self.channels, *self.size)

    def with_classes(self, num_classes: int, class_names: tuple[str, ...] | list[str] | None = None) -> DataSpec:
        """The same preprocessing for a different label set.

        Class names survive only if the count still matches; otherwise they are
        dropped rather than silently misattributed.
        """
        if class_names is not None:
            names: tuple[str, ...] | None = tuple(class_names)
        elif num_classes == self.num_classes:
            names = self.class_names
        else:
            names = None
        return dataclasses.replace(self, num_classes=num_classes, class_names=names)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DataSpec fields {sorted(unknown)}; expected {sorted(known)}")
        values = dict(data)
        for key in ("size", "mean", "std", "class_names"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

# Per-channel statistics of the 50,000 CIFAR-10 training images. The std
# (0.2023, 0.1994, 0.2010) copied across many repositories is the mean of
# per-image stds, not the data set's std (kuangliu/pytorch-cifar#16).
CIFAR10 = DataSpec(
    name="cifar10",
    channels=3,
    size=(32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    num_classes=10,
    class_names=CIFAR10_CLASSES,
)

# The constants of PyTorch's MNIST example, computed on the 60,000 training digits.
MNIST = DataSpec(
    name="mnist",
    channels=1,
    size=(28, 28),
    mean=(0.1307,),
    std=(0.3081,),
    num_classes=10,
    class_names=tuple(str(d) for d in range(10)),
)

# ImageNet statistics, which the torchvision backbones were trained with; the
# 120 classes are the Stanford Dogs breeds (the names come from the data set).
IMAGENET = DataSpec(
    name="imagenet",
    channels=3,
    size=(224, 224),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    num_classes=120,
    resize=256,
)


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture."""

    name: str
    builder: Callable[..., nn.Module]  # the registered (attribute-attaching) builder
    default_spec: DataSpec
    description: str
    default_kwargs: dict[str, Any]  # the builder's keyword arguments and their defaults


@dataclass(frozen=True)
class WeightsEntry:
    """A pretrained checkpoint, named ``arch.tag`` (e.g. ``mnist_cnn.mnist``).

    The files are either a Hub repository pinned to a revision (``repo_id`` and
    ``revision``) or a folder shipped inside the package (``package_dir``). The
    sha256 of ``model.safetensors`` is checked before anything is loaded.
    """

    name: str
    sha256: str
    repo_id: str | None = None
    revision: str | None = None
    package_dir: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # dataset, metrics, recipe, num_params
    # What create_model(arch, pretrained=True) loads, marked as torchvision marks DEFAULT:
    # an explicit choice survives a new, better-sorting tag being registered beside it.
    default: bool = False
    config_sha256: str | None = None  # of config.json, which sets class names and preprocessing

    def __post_init__(self) -> None:
        if "." not in self.name:
            raise ValueError(f"weights names look like 'arch.tag', got {self.name!r}")
        if (self.repo_id is None) == (self.package_dir is None):
            raise ValueError(f"weights {self.name!r}: give exactly one of repo_id and package_dir")
        if self.repo_id is not None and not self.revision:
            raise ValueError(f"weights {self.name!r}: a Hub entry must pin a revision")
        if len(self.sha256) != 64:
            raise ValueError(f"weights {self.name!r}: sha256 must be 64 hex digits")

    @property
    def arch(self) -> str:
        return self.name.split(".", 1)[0]


_MODELS: dict[str, ModelEntry] = {}
_WEIGHTS: dict[str, WeightsEntry] = {}

# Attribute names that every imgzoo-built model carries.
ARCH_ATTR = "imgzoo_arch"  # registered name, e.g. "resnet_cifar"
KWARGS_ATTR = "imgzoo_kwargs"  # the builder's full keyword arguments (JSON-able)
SPEC_ATTR = "data_spec"  # the DataSpec: input shape, normalisation, class names

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


def register_model(name: str, *, default_spec: DataSpec) -> Callable[[Builder], Builder]:
    """Register a keyword-only builder under ``name``.

    The decorated builder stays a plain, importable function; every model it
    returns carries its architecture name, its keyword arguments and its
    :class:`DataSpec`, which is what transforms and checkpoints are built from.
    """

    def decorate(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        params = inspect.signature(builder).parameters.values()
        positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        if positional:
            raise TypeError(f"builder {name!r} must take keyword-only arguments, got {positional}")
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

        @functools.wraps(builder)
        def build(*, class_names: Sequence[str] | None = None, **kwargs: Any) -> nn.Module:
            unknown = set(kwargs) - {p.name for p in params}
            if unknown:
                raise TypeError(
                    f"{name}() got unexpected arguments {sorted(unknown)}; it takes {sorted(p.name for p in params)}"
                    " and class_names"
                )
            if class_names is not None:
                # A data set's class names (e.g. dog breeds) size the head and travel with the model,
                # into its checkpoint and into predict's answers.
                class_names = tuple(str(c) for c in class_names)
                if kwargs.get("num_classes", len(class_names)) != len(class_names):
                    raise ValueError(
                        f"{name}: {len(class_names)} class_names but num_classes={kwargs['num_classes']}; "
                        "give one of them, or make them agree"
                    )
                kwargs["num_classes"] = len(class_names)
            full_kwargs = {**defaults, **kwargs}
            model = builder(**kwargs)
            num_classes = full_kwargs.get("num_classes", default_spec.num_classes)
            setattr(model, ARCH_ATTR, name)
            setattr(model, KWARGS_ATTR, full_kwargs)
            setattr(model, SPEC_ATTR, default_spec.with_classes(num_classes, class_names))
            return model

        doc = inspect.getdoc(builder) or ""
        _MODELS[name] = ModelEntry(name, build, default_spec, doc.split("\n", 1)[0], defaults)
        return build  # type: ignore[return-value]

    return decorate


def _unknown(kind: str, name: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known) or 'none'}.")


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; a ValueError with close matches if unknown."""
    if name not in _MODELS:
        raise _unknown("model", name, sorted(_MODELS))
    return _MODELS[name]


def list_models(pattern: str | None = None, *, pretrained: bool = False) -> list[str]:
    """Registered model names, sorted; ``pattern`` is an fnmatch pattern like ``"resnet*"``.

    ``pretrained=True`` keeps only architectures with at least one weights entry, as timm's
    ``list_models(pretrained=True)`` does, so a caller can offer exactly what loads.
    """
    names = sorted(_MODELS)
    if pretrained:
        with_weights = {entry.arch for entry in _WEIGHTS.values()}
        names = [n for n in names if n in with_weights]
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def register_weights(entry: WeightsEntry, *, overwrite: bool = False) -> WeightsEntry:
    """Add a pretrained checkpoint to the zoo.

    A name registered twice is an error, and so is a second ``default=True`` entry for one
    architecture: two defaults would leave ``pretrained=True`` to whichever came first.
    """
    get_model_entry(entry.arch)  # the architecture must exist
    if entry.name in _WEIGHTS and not overwrite:
        raise ValueError(f"weights {entry.name!r} are already registered")
    if entry.default:
        others = [e.name for e in _WEIGHTS.values() if e.arch == entry.arch and e.default and e.name != entry.name]
        if others:
            raise ValueError(
                f"{entry.name!r} is marked default=True but {others[0]!r} already is the default for "
                f"{entry.arch!r}; an architecture has at most one default: unmark one of them"
            )
    _WEIGHTS[entry.name] = entry
    return entry


def unregister_weights(name: str) -> None:
    """Remove a weights entry (used by tests and by users replacing an entry)."""
    _WEIGHTS.pop(name, None)


def get_weights_entry(name: str) -> WeightsEntry:
    if name not in _WEIGHTS:
        raise _unknown("pretrained weights", name, sorted(_WEIGHTS))
    return _WEIGHTS[name]


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Registered weights names (``arch.tag``), sorted; ``pattern`` as in :func:`list_models`."""
    names = sorted(_WEIGHTS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def default_weights(arch: str, **builder_kwargs: Any) -> str:
    """The weights name that ``pretrained=True`` means for ``arch`` built with ``builder_kwargs``.

    Without builder arguments: the entry marked ``default=True``; with none marked, the only
    entry. Several unmarked entries are an error rather than a guess, since sorting order says
    nothing about quality. With them, the same choice among the entries trained with those
    arguments (each entry's ``meta["kwargs"]``), so that ``create_model("resnet_cifar",
    depth=56, pretrained=True)`` loads depth-56 weights rather than failing on the depth-20 ones.
    ``num_classes`` never chooses: asking for another one fine-tunes a new head. When no entry
    agrees, the default stays the answer and the loader takes the arguments that leave the
    tensors' shapes alone (``dropout=0.0``) and refuses the others.
    """
    get_model_entry(arch)
    candidates = [e for e in _WEIGHTS.values() if e.arch == arch]
    if not candidates:
        raise ValueError(
            f"no pretrained weights are registered for {arch!r}; architectures with weights: "
            f"{', '.join(list_models(pretrained=True)) or 'none'}. Build it without pretrained=, "
            "or register a WeightsEntry for it"
        )
    wanted = {k: v for k, v in builder_kwargs.items() if k != "num_classes"}
    agreeing = [e for e in candidates if _trained_with(e, wanted)]
    if agreeing and len(agreeing) < len(candidates):
        candidates = agreeing
    marked = [e.name for e in candidates if e.default]
    if marked:
        return marked[0]
    if len(candidates) == 1:
        return candidates[0].name
    names = sorted(e.name for e in candidates)
    raise ValueError(
        f"{arch!r} has {len(names)} weights entries and none is marked default=True: {', '.join(names)}. "
        f"Name one, e.g. create_model({arch!r}, pretrained={names[0]!r}), or mark one default=True"
    )


def _trained_with(entry: WeightsEntry, wanted: dict[str, Any]) -> bool:
    """Whether ``entry`` was trained with every builder argument in ``wanted`` that its meta records.

    Compared as JSON, which is how the arguments are recorded: (64, 256) and [64, 256] agree; what JSON
    cannot hold is compared by its repr.
    """
    recorded = entry.meta.get("kwargs") or {}

    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, default=repr) == json.dumps(b, default=repr)

    return all(same(value, recorded[key]) for key, value in wanted.items() if key in recorded)
