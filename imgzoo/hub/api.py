"""Save, load, push and build models by name: the only module that talks to the Hub, through huggingface_hub (so
its HF_* variables work), imported where used: its half second of import is never paid by ``import imgzoo``."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from imgzoo._atomic import atomic_directory, atomic_write_text
from imgzoo._version import __version__
from imgzoo.hub.card import CURVES_NAME, metrics_from_history, render
from imgzoo.hub.format import (
    CONFIG_NAME,
    PICKLE_NAMES,
    WEIGHTS_NAME,
    CheckpointError,
    _first_five,
    build_config,
    load_checkpoint,
    read_config,
    storage_state,
    verify_sha256,
    write_checkpoint,
)
from imgzoo.models.registry import (
    WeightsEntry,
    default_weights,
    get_model_entry,
    get_weights_entry,
    list_models,
    list_pretrained,
)

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo
    from huggingface_hub.errors import HfHubHTTPError

HF_PREFIX = "hf-hub:"
CARD_NAME = "README.md"
RUN_WEIGHTS = "weights"  # where `imgzoo train` saves a run's weights in its folder (imgzoo.study.config.WEIGHTS)
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# What `git check-ref-format` refuses; a revision becomes a cache path (refs/<revision>), so none may reach it.
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^/|/$|^@$|\.$|(^|/)\.|\.lock(/|$)")
# Files save() itself writes; a folder holding anything else is not replaced whole.
_CHECKPOINT_FILES = frozenset({WEIGHTS_NAME, CONFIG_NAME, CARD_NAME, CURVES_NAME})
_CLIENT = {"library_name": "imgzoo", "library_version": __version__}


class WeightsNotFoundError(FileNotFoundError):
    """The repository, revision or file is not on the Hub, or not in the cache while offline."""


class HubAuthError(PermissionError):
    """The Hub refused the token (401/403). The token itself is never part of the message."""


class HubUnreachableError(ConnectionError):
    """The Hub could not be reached (no network, a wrong HF_ENDPOINT, or HF_HUB_OFFLINE=1) for a push."""


@functools.cache
def _network_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub's HTTP stack raises when no connection is made (httpx2 from 2.0, httpx, requests)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]  # and huggingface_hub's OfflineModeIsEnabled
    names = ("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")
    for module, name in (*names, ("requests", "Timeout")):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(importlib.import_module(module), name))
    return tuple(found)


def create_model(name: str, *, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with builder ``kwargs``. ``pretrained=True`` loads the default weights,
    or those trained with the given kwargs (``depth=56``); ``"resnet_cifar.cifar10"`` (timm's ``arch.tag``) with
    ``pretrained=True``, or ``pretrained="resnet_cifar.cifar10"``, names them. Another ``num_classes`` loads all but
    the classifier, as timm does. Pretrained comes back in eval mode."""
    if not isinstance(pretrained, (bool, str)):
        raise TypeError(f"pretrained= takes True, False or a weights name ('resnet_cifar.cifar10'); got {pretrained!r}")
    arch, _, tag = name.partition(".")
    entry = get_model_entry(arch)  # an unknown name fails here, whatever pretrained says
    if tag:
        get_weights_entry(name)  # as does an unknown tag, with the close matches
        if isinstance(pretrained, str) and pretrained != name:
            raise ValueError(f"create_model({name!r}, pretrained={pretrained!r}) names two weights; give one")
    if not pretrained:
        return entry.builder(**kwargs)
    weights_name = name if tag else pretrained if isinstance(pretrained, str) else default_weights(arch, **kwargs)
    try:  # the architecture is passed on, so weights of another model are refused rather than returned
        return load(weights_name, architecture=arch, **kwargs)
    except CheckpointError as exc:
        if pretrained is not True or tag or not kwargs:
            raise
        described = []
        for entry_name in list_pretrained(f"{arch}.*"):
            recorded = get_weights_entry(entry_name).meta.get("kwargs") or {}
            shown = ", ".join(f"{k}={recorded[k]!r}" for k in kwargs if k in recorded)
            described.append(f"{entry_name} ({shown})" if shown else entry_name)
        raise CheckpointError(
            f"{exc} No {arch!r} weights were trained with these arguments; the registered ones: "
            f"{'; '.join(described)}. Drop the arguments, or build it without pretrained= and train it."
        ) from exc


def save(model: nn.Module, directory: str | os.PathLike[str], history: Any = None, *,
         recipe: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None, license: str = "mit",
         tags: tuple[str, ...] | list[str] = (), datasets: list[str] | None = None, repo_id: str | None = None,
         existing_card: str | None = None, dtype: str = "fp32") -> Path:  # fmt: skip
    """Write model.safetensors, config.json and a README.md card into ``directory`` atomically. ``history`` (or its
    ``to_dict()``) adds the last epoch's metrics, which ``metrics`` override, and curves.png. ``dtype="fp16"`` halves
    the file: :func:`load` gives back fp32 weights within fp16's rounding (a relative 2**-11)."""
    directory = Path(directory)
    _check_replaceable(directory)
    state = storage_state(model, dtype)  # a bad dtype or an fp16 overflow stops here, before any write
    from imgzoo.eval.history import History

    if isinstance(history, dict) and all(isinstance(v, (list, tuple)) for v in history.values()):
        history = History.from_dict(history)
    elif history is not None and not isinstance(history, History):
        raise TypeError(f"history must be an imgzoo.History or its to_dict(); got {type(history).__name__}")
    merged = {**(metrics_from_history(history.to_dict()) if history is not None else {}), **(metrics or {})}
    config = build_config(model, recipe=recipe, metrics=merged or None, storage_dtype=dtype)
    card_args = {"repo_id": repo_id, "license": license, "tags": tags, "datasets": datasets, "existing": existing_card}
    render(config, curves=None, **card_args)  # fail on a bad card before anything is written
    with atomic_directory(directory) as tmp:
        curves = None
        if history is not None:
            try:  # accuracy and loss per epoch, beside the card
                history.plot(tmp / CURVES_NAME)
                curves = CURVES_NAME
            except ImportError as exc:  # matplotlib is an optional extra
                warnings.warn(f"no curves in the model card: {exc}", stacklevel=2)
        write_checkpoint(tmp, config, state)
        atomic_write_text(tmp / CARD_NAME, render(config, curves=curves, **card_args))
    return directory


def _check_replaceable(directory: Path) -> None:
    """save() replaces the folder whole, so it must not hold files that are not the checkpoint's."""
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save() writes a folder, but {directory} is a file; pass a folder path")
    stray = sorted(f.name for f in directory.iterdir() if f.name not in _CHECKPOINT_FILES) if directory.exists() else []
    if stray:
        raise FileExistsError(
            f"save() replaces {directory} whole (so a crash never mixes two checkpoints), and it holds other files "
            f"({_first_five(stray)}) that would be lost; save into a folder of its own, e.g. {directory / 'weights'}."
        )


def push_to_hub(model: nn.Module, repo_id: str, history: Any = None, *, private: bool = False, token: str | None = None,
                commit_message: str = "Upload imgzoo model", revision: str | None = None,
                **save_kwargs: Any) -> CommitInfo:  # fmt: skip
    """:func:`save` to a temporary folder, then upload it to ``repo_id`` (created if new, as is the ``revision``
    branch) in one commit; returns the ``CommitInfo`` (``.oid``: the sha to pin). A card keeps all but its results."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    _check_repo_id(repo_id)
    check_revision(revision)
    if constants.is_offline_mode():
        raise HubUnreachableError(
            f"cannot push to {repo_id}: offline mode is on (HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE before Python "
            f"starts, or imgzoo.save(model, folder) now and push later."
        )
    api = HfApi(**_CLIENT)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
        existing = _existing_card(repo_id, revision, token)
        with tempfile.TemporaryDirectory(prefix="imgzoo-push-") as tmp:
            folder = Path(tmp) / "checkpoint"
            save(model, folder, history, repo_id=repo_id, existing_card=existing, **save_kwargs)
            return api.upload_folder(
                repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=revision, token=token
            )
    except HfHubHTTPError as exc:
        raise _translate(exc, repo_id, revision, action="push to") from exc
    except _network_errors() as exc:
        raise HubUnreachableError(
            f"could not reach the Hub at {constants.ENDPOINT} to push to {repo_id} ({type(exc).__name__}: {exc}); "
            f"no commit was made. Check the network, a proxy (HTTPS_PROXY) or HF_ENDPOINT, then push again."
        ) from None


def _existing_card(repo_id: str, revision: str | None, token: str | None) -> str | None:
    """The README.md at ``revision``, or None where the repository or the file does not exist yet."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    with tempfile.TemporaryDirectory(prefix="imgzoo-card-") as tmp:  # not the user's cache: a card is not weights
        try:
            path = hf_hub_download(repo_id, CARD_NAME, revision=revision, token=token, cache_dir=tmp)
        except (EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError):
            return None
        return Path(path).read_text(encoding="utf-8")


@dataclass(frozen=True)
class _Files:
    config: Path
    weights: Path
    label: str  # how messages name the checkpoint
    entry: WeightsEntry | None = None


@dataclass(frozen=True)
class _Fetch:  # the caller's choices, the same for every file of one load
    revision: str | None
    token: str | None
    cache_dir: str | os.PathLike[str] | None
    local_files_only: bool
    force: bool


def load(path_or_name: str | os.PathLike[str], *, num_classes: int | None = None,
         class_names: list[str] | tuple[str, ...] | None = None, revision: str | None = None, token: str | None = None,
         cache_dir: str | os.PathLike[str] | None = None, local_files_only: bool = False,
         architecture: str | None = None, **builder_kwargs: Any) -> nn.Module:  # fmt: skip
    """Rebuild a checkpoint in eval mode, with its ``data_spec``. Another ``num_classes`` loads all but the head (a
    ``NewHeadWarning``); ``architecture`` asserts the model; ``builder_kwargs`` override those keeping shapes."""
    files = _resolve(path_or_name, _Fetch(revision, token, cache_dir, local_files_only, force=False))
    config = read_config(files.config)
    expected = architecture or (files.entry.arch if files.entry else None)
    if expected is not None and config["architecture"] != expected:
        raise CheckpointError(
            f"{files.label} holds a {config['architecture']!r} checkpoint, not {expected!r} "
            f"({files.config}); pick weights of {expected!r} (imgzoo.list_pretrained('{expected}.*'))."
        )
    return load_checkpoint(
        config, files.weights, source=files.label, num_classes=num_classes, class_names=class_names, **builder_kwargs
    ).eval()


def download(name: str, *, revision: str | None = None, token: str | None = None,
             cache_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Path:  # fmt: skip
    """Fetch a weights entry (sha256-checked) or ``hf-hub:`` repo into the HF cache ahead of time; returns its
    folder. ``force`` downloads again even when the cache has the files (the cure for a corrupted cache)."""
    return _resolve(name, _Fetch(revision, token, cache_dir, local_files_only=False, force=force)).weights.parent


def _resolve(source: str | os.PathLike[str], fetch: _Fetch) -> _Files:
    if isinstance(source, os.PathLike):
        return _local(Path(source), str(source))
    if not isinstance(source, str) or not source:
        raise TypeError(f"expected a weights name, 'hf-hub:org/repo[@revision]' or a folder; got {source!r}")
    check_revision(fetch.revision)
    if source.startswith(HF_PREFIX):
        repo_id, at, pinned = source[len(HF_PREFIX) :].partition("@")
        check_revision(pinned if at else None)  # "org/repo@" names no revision: refused, not taken as main
        if pinned and fetch.revision and pinned != fetch.revision:
            raise ValueError(f"{source!r} pins revision {pinned!r} but revision={fetch.revision!r} was also given")
        _check_repo_id(repo_id)
        return _from_hub(repo_id, source, replace(fetch, revision=pinned or fetch.revision))
    if source not in list_pretrained():
        if source in list_models() and not Path(source).exists():  # "resnet_cifar": its default weights
            source = default_weights(source)
        elif source.startswith((".", "~", "/")) or os.sep in source or "/" in source or Path(source).exists():
            return _local(Path(source).expanduser(), source)
    try:
        entry = get_weights_entry(source)  # the registry's error lists close matches
    except ValueError as exc:
        raise ValueError(f"{exc} Pass a registered name (imgzoo.list_pretrained()), 'hf-hub:org/repo[@revision]', or a "
                         f"folder written by imgzoo.save().") from None  # fmt: skip
    return _from_entry(entry, fetch)


def _from_entry(entry: WeightsEntry, fetch: _Fetch) -> _Files:
    """The files of a registered entry, checked against its pins before anything reads them."""
    if entry.repo_id is not None:
        if fetch.revision is not None and fetch.revision != entry.revision:
            raise ValueError(f"{entry.name} is pinned to revision {entry.revision!r}; got revision={fetch.revision!r}")
        check_revision(entry.revision)
        files = _from_hub(entry.repo_id, entry.name, replace(fetch, revision=entry.revision))
        refetch = f"imgzoo download {entry.name} --force"
    else:
        if fetch.revision is not None:
            raise ValueError(f"{entry.name} is shipped inside the imgzoo package and has no revisions; drop revision=")
        folder = Path(entry.package_dir or "")
        shipped = folder if folder.is_absolute() else Path(str(resources.files("imgzoo.hub") / "weights" / folder))
        files = _local(shipped, entry.name)
        refetch = "pip install --force-reinstall imgzoo"
    verify_sha256(files.weights, entry.sha256, name=entry.name, refetch=refetch)
    if entry.config_sha256:  # the config decides class names and preprocessing, so it is pinned too
        verify_sha256(files.config, entry.config_sha256, name=f"{entry.name} ({CONFIG_NAME})", refetch=refetch)
    return _Files(files.config, files.weights, entry.name, entry)


def check_revision(revision: str | None) -> None:
    """Refuse, before any request, a revision git would refuse: in the cache's ``refs/<revision>``, ``../x`` escapes."""
    if revision is None:
        return
    if not isinstance(revision, str):
        raise TypeError(f"revision must be a string (a branch, tag or commit sha); got {type(revision).__name__}")
    if not 0 < len(revision) <= 255 or _BAD_REF.search(revision):
        raise ValueError(
            f"revision {revision!r} is not a branch, tag or commit sha (git refuses it: 1 to 255 characters, no "
            f"space, control character or ~ ^ : ? * [ \\ .. @{{, no empty or '.'-led part, no '.lock' or '.' end); "
            f"pass e.g. 'main', 'v1.0', 'refs/pr/1' or a commit sha."
        )


def _check_repo_id(repo_id: str) -> None:
    """'org/name' in the Hub's own rules (huggingface_hub's validate_repo_id), checked before any request."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    with contextlib.suppress(HFValidationError):
        validate_repo_id(repo_id)
        if repo_id.count("/") == 1:
            return
    raise ValueError(
        f"a Hub repository id looks like 'org/name' (letters, digits, '-', '_', '.'; no '..' or '--'; at most "
        f"96 characters each); got {repo_id!r}"
    )


def _local(directory: Path, label: str) -> _Files:
    if not (directory / WEIGHTS_NAME).is_file() and (directory / RUN_WEIGHTS / WEIGHTS_NAME).is_file():
        directory = directory / RUN_WEIGHTS  # a folder `imgzoo train` wrote: its weights are imgzoo.save's folder
    if not directory.is_dir():
        raise WeightsNotFoundError(
            f"no folder {directory} (from {label!r}); expected a folder written by imgzoo.save(), a registered "
            f"weights name (imgzoo.list_pretrained()) or 'hf-hub:org/repo[@revision]'"
        )
    weights, config = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    if not weights.is_file():
        _refuse_pickles(str(directory), [n for n in PICKLE_NAMES if (directory / n).is_file()])
        raise WeightsNotFoundError(
            f"{directory} has no {WEIGHTS_NAME} (nor {RUN_WEIGHTS}/{WEIGHTS_NAME}); expected a folder written by "
            "imgzoo.save() or imgzoo train"
        )
    if not config.is_file():
        raise CheckpointError(f"{directory} has {WEIGHTS_NAME} but no {CONFIG_NAME}; re-save it with imgzoo.save()")
    return _Files(config, weights, label)


def _from_hub(repo_id: str, label: str, fetch: _Fetch) -> _Files:
    from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    offline = fetch.local_files_only or constants.is_offline_mode()
    names = (CONFIG_NAME, WEIGHTS_NAME)
    cached = [try_to_load_from_cache(repo_id, n, cache_dir=fetch.cache_dir, revision=fetch.revision) for n in names]
    in_cache = not fetch.force and all(isinstance(path, str) for path in cached)
    # A commit's snapshot never changes, and offline the cache is all there is; online a branch may have moved.
    if in_cache and (offline or _COMMIT_SHA.fullmatch(fetch.revision or "")):
        return _Files(Path(cached[0]), Path(cached[1]), label)
    if not in_cache and not offline:
        _probe(repo_id, label, fetch)
    paths = {}
    options = dict(revision=fetch.revision, token=fetch.token, cache_dir=fetch.cache_dir, **_CLIENT)
    for filename in names:
        try:
            paths[filename] = hf_hub_download(
                repo_id, filename, local_files_only=offline and not fetch.force, force_download=fetch.force, **options
            )
        except EntryNotFoundError as exc:
            if isinstance(exc, LocalEntryNotFoundError):
                raise _offline_miss(repo_id, filename, label, fetch) from exc
            info = HfApi(**_CLIENT).model_info(repo_id, revision=fetch.revision, token=fetch.token)
            _refuse_pickles(f"{repo_id}@{fetch.revision or 'main'}", [s.rfilename for s in info.siblings or []])
            raise WeightsNotFoundError(
                f"{repo_id} at revision {fetch.revision or 'main'} has no {filename}; an imgzoo checkpoint holds "
                f"{CONFIG_NAME} and {WEIGHTS_NAME} (published with imgzoo.push_to_hub())."
            ) from None
        except HfHubHTTPError as exc:
            raise _translate(exc, repo_id, fetch.revision, action="download from") from None
    return _Files(Path(paths[CONFIG_NAME]), Path(paths[WEIGHTS_NAME]), label)


def _probe(repo_id: str, label: str, fetch: _Fetch) -> None:
    """One request without retries: hf_hub_download retries a refused connection 5 times (1+2+4+8+8 s)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    url = hf_hub_url(repo_id, CONFIG_NAME, revision=fetch.revision)
    try:
        get_hf_file_metadata(url, token=fetch.token, timeout=constants.HF_HUB_ETAG_TIMEOUT, **_CLIENT)
    except HfHubHTTPError:
        return  # the Hub answered; hf_hub_download meets the same answer and it is reported there
    except _network_errors() as exc:
        reason = f"the Hub at {constants.ENDPOINT} could not be reached ({type(exc).__name__}: {exc})"
        raise _offline_miss(repo_id, CONFIG_NAME, label, fetch, reason=reason) from None


def _refuse_pickles(where: str, files: list[str]) -> None:
    """Raise where ``files`` (a checkpoint without model.safetensors) hold pickles: unpickling can run code."""
    pickles = [n for n in PICKLE_NAMES if n in files]
    if pickles:
        raise CheckpointError(
            f"{where} holds only pickle checkpoints ({', '.join(pickles)}), which imgzoo refuses: unpickling a "
            f"downloaded file can run arbitrary code. Ask the author for {WEIGHTS_NAME}, or, if you trust the "
            f"file, convert it yourself: torch.load(path, weights_only=True) then imgzoo.save(model, folder)."
        )


def _offline_miss(repo_id: str, filename: str, label: str, fetch: _Fetch, reason: str = "") -> WeightsNotFoundError:
    from huggingface_hub import constants

    rev = fetch.revision or "main"
    if constants.is_offline_mode():
        reason = "offline mode is on (HF_HUB_OFFLINE=1)"
    elif fetch.local_files_only:
        reason = "local_files_only=True"
    reason = reason or f"the Hub at {constants.ENDPOINT} could not be reached"
    return WeightsNotFoundError(
        f"{filename} of {repo_id} at revision {rev} is not in the Hugging Face cache "
        f"({fetch.cache_dir or constants.HF_HUB_CACHE}) and {reason}. Check the network, a proxy (HTTPS_PROXY) or "
        f"HF_ENDPOINT, or fetch it ahead of time while online with `imgzoo download {label}` or "
        f"`hf download {repo_id} {CONFIG_NAME} {WEIGHTS_NAME} --revision {rev}`."
    )


def _translate(exc: HfHubHTTPError, repo_id: str, revision: str | None, *, action: str) -> Exception:
    """A Hub HTTP error as a sentence saying what failed and what to do; never with the token."""
    from huggingface_hub import constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    status = exc.response.status_code if exc.response is not None else None
    if isinstance(exc, RevisionNotFoundError):
        return WeightsNotFoundError(f"{repo_id} has no revision {revision!r} (a branch, tag or commit sha)")
    if isinstance(exc, RepositoryNotFoundError):
        return WeightsNotFoundError(
            f"no repository {repo_id} at {constants.ENDPOINT}, or it is private and no valid token was given; "
            f"check the name, then log in (`hf auth login`), set HF_TOKEN or pass token="
        )
    if status in (401, 403):
        return HubAuthError(
            f"the Hub at {constants.ENDPOINT} refused the token ({status}) to {action} {repo_id}: invalid, expired or "
            f"without {'write' if action == 'push to' else 'read'} access. Run `hf auth login`, set HF_TOKEN or pass "
            "token= (not shown here)."
        )
    return exc
