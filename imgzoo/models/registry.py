"""Every architecture registers here with its input (a :class:`DataSpec`), every pretrained checkpoint with a
:class:`WeightsEntry`; building with weights is :func:`imgzoo.hub.api.create_model`, one layer up."""

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

__all__ = ["CIFAR10", "CIFAR10_CLASSES", "IMAGENET", "MNIST", "DataSpec", "ModelEntry", "WeightsEntry",
           "default_weights", "get_model_entry", "get_weights_entry", "list_models", "list_pretrained",
           "register_model", "register_weights"]  # fmt: skip


@dataclass(frozen=True)
class DataSpec:
    """What a model is fed and what its outputs mean; transforms are built from it, checkpoints store it."""

    name: str  # the data set it was designed for, e.g. "cifar10"
    channels: int
    size: tuple[int, int]  # (height, width) of the tensor the model receives
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    class_names: tuple[str, ...] | None = None
    resize: int | None = None  # eval: shorter side to this, then centre crop to `size`; None: straight to `size`

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"DataSpec.channels must be 1 or 3, got {self.channels}")
        if self.num_classes < 1:
            raise ValueError(f"DataSpec.num_classes must be >= 1, got {self.num_classes}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"DataSpec {self.name!r}: mean and std need one value per channel "
                             f"({self.channels}), got mean={self.mean} std={self.std}")  # fmt: skip
        names = self.class_names
        if names is not None and len(names) != self.num_classes:
            raise ValueError(f"DataSpec {self.name!r}: {len(names)} class names for {self.num_classes} classes")
        if names is not None and len(set(names)) != len(names):  # predict answers with names: no ambiguity
            repeated = sorted({c for c in names if names.count(c) > 1})
            raise ValueError(f"DataSpec {self.name!r}: class names must be distinct; {repeated} appear more than once")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        return (self.channels, *self.size)

    def with_classes(self, num_classes: int, class_names: tuple[str, ...] | list[str] | None = None) -> DataSpec:
        """The same preprocessing for another label set; old class names survive only if the count matches."""
        if class_names is None:
            class_names = self.class_names if num_classes == self.num_classes else None
        names = tuple(class_names) if class_names is not None else None
        return dataclasses.replace(self, num_classes=num_classes, class_names=names)

    def with_channels(self, channels: int) -> DataSpec:
        """The statistics for 1 or 3 input channels: averaged onto one (timm's rule for grey input), or repeated."""
        if channels == self.channels:
            return self
        mean, std = (sum(self.mean) / self.channels,) * channels, (sum(self.std) / self.channels,) * channels
        return dataclasses.replace(self, channels=channels, mean=mean, std=std)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(data) - known:
            raise ValueError(f"unknown DataSpec fields {sorted(unknown)}; expected {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The 50,000 training images' per-channel std; the (0.2023, 0.1994, 0.2010) copied across many repositories
# is the mean of per-image stds (kuangliu/pytorch-cifar#16).
CIFAR10 = DataSpec("cifar10", 3, (32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 10, CIFAR10_CLASSES)
# PyTorch's MNIST example's constants, from the 60,000 training digits.
MNIST = DataSpec("mnist", 1, (28, 28), (0.1307,), (0.3081,), 10, tuple(str(d) for d in range(10)))
# The torchvision backbones' ImageNet statistics; 120 classes: the Stanford Dogs breeds, named by the data set.
IMAGENET = DataSpec("imagenet", 3, (224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 120, resize=256)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]  # the registered (attribute-attaching) builder
    default_spec: DataSpec
    description: str
    default_kwargs: dict[str, Any]  # the builder's keyword arguments and their defaults


@dataclass(frozen=True)
class WeightsEntry:
    """A checkpoint named ``arch.tag``: a Hub repository pinned to a revision, or a folder in the package;
    ``sha256`` (of ``model.safetensors``) is checked before anything loads."""

    name: str
    sha256: str
    repo_id: str | None = None
    revision: str | None = None
    package_dir: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # dataset, metrics, recipe, num_params
    default: bool = False  # what pretrained=True loads, explicit as torchvision's DEFAULT: sorting order is no choice
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

# Every imgzoo-built model carries these attributes.
ARCH_ATTR = "imgzoo_arch"  # registered name, e.g. "resnet_cifar"
KWARGS_ATTR = "imgzoo_kwargs"  # the builder's full keyword arguments (JSON-able)
SPEC_ATTR = "data_spec"  # the DataSpec: input shape, normalisation, class names

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


def register_model(name: str, *, default_spec: DataSpec) -> Callable[[Builder], Builder]:
    """Register a keyword-only builder; its models carry their architecture name, kwargs and :class:`DataSpec`."""

    def decorate(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        params = inspect.signature(builder).parameters.values()
        if positional := [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]:
            raise TypeError(f"builder {name!r} must take keyword-only arguments, got {positional}")
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

        @functools.wraps(builder)
        def build(*, class_names: Sequence[str] | None = None, **kwargs: Any) -> nn.Module:
            if unknown := set(kwargs) - {p.name for p in params}:
                raise TypeError(
                    f"{name}() got unexpected arguments {sorted(unknown)}; it takes {sorted(p.name for p in params)}"
                    " and class_names"
                )
            if class_names is not None:  # they size the head and travel with the model into predict's answers
                class_names = tuple(str(c) for c in class_names)
                if kwargs.get("num_classes", len(class_names)) != len(class_names):
                    raise ValueError(f"{name}: {len(class_names)} class_names but num_classes={kwargs['num_classes']}; "
                                     "give one of them, or make them agree")  # fmt: skip
                kwargs["num_classes"] = len(class_names)
            full_kwargs = {**defaults, **kwargs}
            model = builder(**kwargs)
            setattr(model, ARCH_ATTR, name)
            setattr(model, KWARGS_ATTR, full_kwargs)
            spec = getattr(model, SPEC_ATTR, None) or default_spec  # a builder may set its own, e.g. per backbone
            spec = spec.with_classes(full_kwargs.get("num_classes", default_spec.num_classes), class_names)
            setattr(model, SPEC_ATTR, spec.with_channels(full_kwargs.get("in_chans", spec.channels)))
            return model

        summary = (inspect.getdoc(builder) or "").split("\n", 1)[0]
        _MODELS[name] = ModelEntry(name, build, default_spec, summary, defaults)
        return build  # type: ignore[return-value]

    return decorate


def _lookup(table: dict[str, Any], kind: str, name: str) -> Any:
    if name in table:
        return table[name]
    known = sorted(table)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known) or 'none'}.")


def get_model_entry(name: str) -> ModelEntry:
    return _lookup(_MODELS, "model", name)


def list_models(pattern: str | None = None, *, pretrained: bool = False) -> list[str]:
    """Registered model names, sorted; ``pattern``: fnmatch's (``"resnet*"``); ``pretrained=True``: with weights."""
    names = sorted(_MODELS.keys() & {e.arch for e in _WEIGHTS.values()} if pretrained else _MODELS)
    return fnmatch.filter(names, pattern) if pattern else names


def register_weights(entry: WeightsEntry, *, overwrite: bool = False) -> WeightsEntry:
    """Add a pretrained checkpoint; a name registered twice is an error, as is a second default for one architecture."""
    get_model_entry(entry.arch)  # the architecture must exist
    if entry.name in _WEIGHTS and not overwrite:
        raise ValueError(f"weights {entry.name!r} are already registered")
    others = [e.name for e in _WEIGHTS.values() if e.arch == entry.arch and e.default and e.name != entry.name]
    if entry.default and others:
        raise ValueError(f"{entry.name!r} is marked default=True but {others[0]!r} already is the default for "
                         f"{entry.arch!r}; an architecture has at most one default: unmark one of them")  # fmt: skip
    _WEIGHTS[entry.name] = entry
    return entry


def unregister_weights(name: str) -> None:
    _WEIGHTS.pop(name, None)


def get_weights_entry(name: str) -> WeightsEntry:
    return _lookup(_WEIGHTS, "pretrained weights", name)


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Registered weights names (``arch.tag``), sorted; ``pattern`` as in :func:`list_models`."""
    return fnmatch.filter(sorted(_WEIGHTS), pattern) if pattern else sorted(_WEIGHTS)


def default_weights(arch: str, **builder_kwargs: Any) -> str:
    """The weights ``pretrained=True`` means for ``arch``: among entries trained with ``builder_kwargs`` (all if none
    are; ``num_classes`` never chooses), the one marked ``default=True``, else the only one, else an error."""
    get_model_entry(arch)
    candidates = [e for e in _WEIGHTS.values() if e.arch == arch]
    if not candidates:
        raise ValueError(f"no pretrained weights are registered for {arch!r}; architectures with weights: "
                         f"{', '.join(list_models(pretrained=True)) or 'none'}. Build it without pretrained=, "
                         "or register a WeightsEntry for it")  # fmt: skip
    wanted = {k: json.dumps(v, default=repr) for k, v in builder_kwargs.items() if k != "num_classes"}

    def trained_with_wanted(entry: WeightsEntry) -> bool:
        recorded = entry.meta.get("kwargs") or {}
        return all(json.dumps(v, default=repr) == wanted[k] for k, v in recorded.items() if k in wanted)

    candidates = [e for e in candidates if trained_with_wanted(e)] or candidates
    if marked := [e.name for e in candidates if e.default]:
        return marked[0]
    if len(candidates) == 1:
        return candidates[0].name
    names = sorted(e.name for e in candidates)
    raise ValueError(
        f"{arch!r} has {len(names)} weights entries and none is marked default=True: {', '.join(names)}. "
        f"Name one, e.g. create_model({arch!r}, pretrained={names[0]!r}), or mark one default=True"
    )
