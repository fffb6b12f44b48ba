"""imgzoo's architectures and weights entries in timm's registry, so that ``import imgzoo`` is all a timm user adds:
``timm.create_model("resnet_cifar.cifar10", pretrained=True)``, ``timm.list_models("resnet_cifar*")``, and
``timm.create_model("hf-hub:org/repo", pretrained=True)`` for a repository imgzoo pushed. Every build goes through
imgzoo's own :func:`create_model` / :func:`load` (sha256 pins, safetensors, the new-head rule). Registered once timm
is imported, before or after imgzoo: ``import imgzoo`` never imports timm itself (1.0 s after torch, 2-core Xeon)."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from collections import deque
from pathlib import Path
from typing import Any

from imgzoo.hub.api import create_model, load
from imgzoo.models._contract import pretrained_cfg
from imgzoo.models.registry import get_model_entry, get_weights_entry, list_models, list_pretrained

default_cfgs: dict[str, Any] = {}  # timm's register_model reads each architecture's tags and cfgs here


def _entrypoint(arch: str) -> Any:
    """timm's model function for ``arch``: called with a weights tag, or with the config.json timm read."""

    def build(
        pretrained: bool = False,
        pretrained_cfg: Any = None,
        pretrained_cfg_overlay: Any = None,
        cache_dir: Any = None,
        pretrained_model_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        if pretrained_cfg_overlay:
            raise TypeError(f"{arch}: imgzoo models take their preprocessing from data_spec, not an overlay")
        cfg = pretrained_cfg.to_dict() if hasattr(pretrained_cfg, "to_dict") else pretrained_cfg
        if isinstance(cfg, dict) and cfg.get("source") in ("hf-hub", "local-dir"):
            saved = pretrained_model_args or {}  # the config's model_args, which timm also merged into kwargs
            kwargs = {k: v for k, v in kwargs.items() if k not in saved or saved[k] != v}  # the caller's own
            if not pretrained:
                return create_model(arch, **{**saved, **kwargs})
            where = f"hf-hub:{cfg['hf_hub_id']}" if cfg["source"] == "hf-hub" else Path(cfg["file"])
            return load(where, cache_dir=cache_dir, architecture=arch, **kwargs)
        tag = cfg if isinstance(cfg, str) else (cfg or {}).get("tag")
        return create_model(f"{arch}.{tag}" if tag else arch, pretrained=pretrained, **kwargs)

    build.__name__ = build.__qualname__ = arch
    build.__doc__ = get_model_entry(arch).description
    return build


def _cfgs(arch: str) -> dict[str, dict[str, Any]]:
    """timm's cfg of each weights entry, the default first: the architecture's preprocessing (a model built from
    one carries its own checkpoint's) and where the weights are."""
    base = pretrained_cfg(get_model_entry(arch).default_spec, arch)
    entries = sorted(map(get_weights_entry, list_pretrained(f"{arch}.*")), key=lambda e: not e.default)
    here = Path(__file__).parent / "weights"
    where = [{"hf_hub_id": f"{e.repo_id}@{e.revision}"} if e.repo_id else {"file": str(here / str(e.package_dir))}
             for e in entries]  # fmt: skip
    return {e.name.split(".", 1)[1]: {**base, **w} for e, w in zip(entries, where, strict=True)} or {"": base}


def register() -> None:
    """Add every imgzoo architecture and weights entry to timm's registry (timm's ``register_model``); a timm whose
    registry changed gets a warning, and still imports."""
    try:
        from timm.models._pretrained import DefaultCfg, PretrainedCfg
        from timm.models._registry import register_model

        for arch in list_models():
            cfgs = {tag: PretrainedCfg(**cfg) for tag, cfg in _cfgs(arch).items()}
            default_cfgs[arch] = DefaultCfg(tags=deque(cfgs), cfgs=cfgs)
            setattr(sys.modules[__name__], arch, register_model(_entrypoint(arch)))  # as timm's own modules hold them
    except Exception as exc:
        warnings.warn(f"imgzoo could not register its models with timm: {type(exc).__name__}: {exc}", stacklevel=2)


class _AfterTimm:
    """On ``import timm``: the other finders find it, and once its module has run, imgzoo registers."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module
            spec.loader.exec_module = lambda module: (run(module), register())  # type: ignore[method-assign]
        return spec


def register_with_timm() -> None:
    """Register now if timm is imported, else when it is."""
    if sys.modules.get("timm") is not None:
        register()
    elif not any(isinstance(finder, _AfterTimm) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimm())
