"""push_to_hub / load / download against a local Hub-compatible server, with the stock huggingface_hub client.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE into ``huggingface_hub.constants``
when it is imported, so in-process tests patch those constants; subprocesses get the
environment variables instead, as users would set them.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from hub_server import HubServer
from huggingface_hub import CommitInfo, HfApi, ModelCard, constants, hf_hub_download
from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

import imgzoo
from imgzoo.cli import main as cli
from imgzoo.hub.api import HubAuthError, HubUnreachableError, WeightsNotFoundError
from imgzoo.hub.format import CheckpointError, ChecksumError
from imgzoo.hub.pretrained import entry_from_folder
from imgzoo.models.registry import register_weights, unregister_weights

TOKEN = "hf_imgzooTestToken0123456789abcdef"
WRONG_TOKEN = "hf_wrongToken9876543210fedcba"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer(TOKEN, lifetime=300) as server:
        cache, home = tmp_path / "hf-cache", tmp_path / "hf-home"
        url_template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        for name, value in {
            "ENDPOINT": server.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": url_template,
            "HF_HUB_CACHE": str(cache),
            "HF_HUB_OFFLINE": False,
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        }.items():
            monkeypatch.setattr(constants, name, value)
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        for var, value in {"HF_ENDPOINT": server.endpoint, "HF_HUB_CACHE": cache, "HF_HOME": home}.items():
            monkeypatch.setenv(var, str(value))
        api = HfApi(endpoint=server.endpoint, token=TOKEN)
        yield SimpleNamespace(endpoint=server.endpoint, state=server.state, cache=cache, api=api)


def _trained(arch: str = "mnist_cnn", **kwargs) -> torch.nn.Module:
    torch.manual_seed(2)
    model = imgzoo.create_model(arch, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(2, *a.data_spec.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


# --- the server speaks the client's protocol -----------------------------------------------------


def test_server_maps_errors_to_the_clients_exceptions(hub):
    hub.api.create_repo("org/empty")
    info = hub.api.model_info("org/empty")
    assert info.id == "org/empty" and info.last_modified.year == 2026 and len(info.sha) == 40
    with pytest.raises(RepositoryNotFoundError):
        hub.api.model_info("org/absent")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("org/empty", "model.safetensors")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/empty", ".gitattributes", revision="v9")
    with pytest.raises(ValueError, match="Invalid metadata"):
        hub.api.upload_file(path_or_fileobj=b"---\n[unclosed\n---\n", path_in_repo="README.md", repo_id="org/empty")


# --- push and load -------------------------------------------------------------------------------


def test_push_then_load_by_branch_tag_and_sha(hub):
    model = _trained("resnet_cifar", depth=8)
    commit = imgzoo.push_to_hub(model, "org/resnet8", token=TOKEN, commit_message="first weights")
    # What the annotation says: huggingface_hub's CommitInfo, the sha to pin and the commit's page.
    assert isinstance(commit, CommitInfo)
    assert commit.oid == hub.api.model_info("org/resnet8").sha
    assert commit.commit_url.endswith(f"/org/resnet8/commit/{commit.oid}")
    hub.api.create_tag("org/resnet8", tag="v1.0")
    files = {s.rfilename for s in hub.api.model_info("org/resnet8", revision="v1.0").siblings}
    assert {"config.json", "model.safetensors", "README.md"} <= files
    for source in ("hf-hub:org/resnet8", "hf-hub:org/resnet8@v1.0", f"hf-hub:org/resnet8@{commit.oid}"):
        loaded = imgzoo.load(source)
        assert _same_outputs(model, loaded), source
        assert loaded.data_spec.class_names == model.data_spec.class_names
    assert imgzoo.load("hf-hub:org/resnet8", revision="v1.0").imgzoo_kwargs["depth"] == 8


def test_push_to_a_new_branch_creates_it_from_main_and_leaves_main_alone(hub):
    first, second = _trained("resnet_cifar", depth=8), _trained("mnist_cnn")
    main_commit = imgzoo.push_to_hub(first, "org/branches", token=TOKEN)
    branch_commit = imgzoo.push_to_hub(second, "org/branches", token=TOKEN, revision="experiment")
    assert branch_commit.oid != main_commit.oid
    assert hub.api.model_info("org/branches").sha == main_commit.oid
    assert _same_outputs(first, imgzoo.load("hf-hub:org/branches"))
    assert _same_outputs(second, imgzoo.load("hf-hub:org/branches@experiment"))
    # Pushing to the branch again appends to it rather than failing on an existing branch.
    again = imgzoo.push_to_hub(second, "org/branches", token=TOKEN, revision="experiment")
    assert hub.api.model_info("org/branches", revision="experiment").sha == again.oid


def test_push_regenerates_results_and_keeps_the_authors_text(hub):
    model = _trained()
    imgzoo.push_to_hub(model, "org/digits", token=TOKEN, metrics={"val_acc": 0.5})
    card = Path(hf_hub_download("org/digits", "README.md")).read_text()
    edited = card.replace("## Use", "Fine-tuned on my own scans.\n\n## Use")
    hub.api.upload_file(path_or_fileobj=edited.encode(), path_in_repo="README.md", repo_id="org/digits")
    imgzoo.push_to_hub(model, "org/digits", token=TOKEN, metrics={"val_acc": 0.75})
    card = ModelCard.load(hf_hub_download("org/digits", "README.md"))
    meta, body = card.data.to_dict(), card.text
    assert "Fine-tuned on my own scans." in body
    assert "75.00%" in body and "50.00%" not in body
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.75


def test_private_is_passed_through_and_needs_the_token(hub):
    model = _trained()
    imgzoo.push_to_hub(model, "org/secret", private=True, token=TOKEN)
    assert hub.state.repos["org/secret"].private
    with pytest.raises(WeightsNotFoundError, match="private and no valid token"):
        imgzoo.load("hf-hub:org/secret")
    assert _same_outputs(model, imgzoo.load("hf-hub:org/secret", token=TOKEN))
    imgzoo.push_to_hub(model, "org/secret", private=False, token=TOKEN)  # an existing repo keeps its visibility
    assert hub.state.repos["org/secret"].private


def test_wrong_token_is_a_clear_error_that_never_shows_the_token(hub):
    model = _trained()
    with pytest.raises(HubAuthError, match=r"refused the token \(401\) to push to org/x") as push_error:
        imgzoo.push_to_hub(model, "org/x", token=WRONG_TOKEN)
    assert "org/x" not in hub.state.repos
    imgzoo.push_to_hub(model, "org/x", token=TOKEN)
    with pytest.raises(HubAuthError, match=r"refused the token \(401\) to download from org/x") as load_error:
        imgzoo.load("hf-hub:org/x", token=WRONG_TOKEN)
    for error in (push_error.value, load_error.value):
        assert WRONG_TOKEN not in "".join(traceback.format_exception(error))


def test_token_is_never_logged_printed_or_written(hub, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    model = _trained()
    imgzoo.push_to_hub(model, "org/clean", token=TOKEN)
    imgzoo.load("hf-hub:org/clean", token=TOKEN)
    folder = imgzoo.download("hf-hub:org/clean", token=TOKEN)
    out = capsys.readouterr()
    assert TOKEN not in caplog.text + out.out + out.err
    written = [c for commit in hub.state.repos["org/clean"].commits.values() for c in commit.values()]
    written += [p.read_bytes() for p in Path(hub.cache).rglob("*") if p.is_file()]
    assert written and not [w for w in written if TOKEN.encode() in w]
    assert (folder / "config.json").is_file()


def test_missing_repo_revision_and_file_are_clear(hub):
    with pytest.raises(WeightsNotFoundError, match="no repository org/nothing"):
        imgzoo.load("hf-hub:org/nothing")
    hub.api.create_repo("org/notes")
    hub.api.upload_file(path_or_fileobj=b"# notes\n", path_in_repo="README.md", repo_id="org/notes")
    with pytest.raises(WeightsNotFoundError, match="org/notes at revision main has no config.json"):
        imgzoo.load("hf-hub:org/notes")
    with pytest.raises(WeightsNotFoundError, match="org/notes has no revision 'v2'"):
        imgzoo.load("hf-hub:org/notes@v2")
    with pytest.raises(ValueError, match="looks like 'org/name'"):
        imgzoo.load("hf-hub:just-a-name")


def test_pickle_only_repo_is_refused_and_nothing_is_unpickled(hub, tmp_path):
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    hub.api.create_repo("org/pickled")
    hub.api.upload_file(
        path_or_fileobj=pickle.dumps(Payload()), path_in_repo="pytorch_model.bin", repo_id="org/pickled"
    )
    with pytest.raises(CheckpointError, match=r"only pickle checkpoints \(pytorch_model.bin\)"):
        imgzoo.load("hf-hub:org/pickled")
    assert not marker.exists()
    assert not list(Path(hub.cache).rglob("pytorch_model.bin"))


def test_offline_miss_names_repo_file_revision_and_how_to_fetch(hub, monkeypatch):
    commit = imgzoo.push_to_hub(_trained(), "org/later", token=TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    name = f"hf-hub:org/later@{commit.oid}"
    with pytest.raises(WeightsNotFoundError) as error:
        imgzoo.load(name)
    message = str(error.value)
    for needed in ("config.json", "org/later", commit.oid, "HF_HUB_OFFLINE", f"imgzoo download {name}", "hf download"):
        assert needed in message


# --- a registered weights entry on the Hub -------------------------------------------------------


@pytest.fixture
def hub_entry(hub, tmp_path):
    model = _trained()
    commit = imgzoo.push_to_hub(model, "imgzoo/mnist-cnn-test", token=TOKEN, recipe={"epochs": 1})
    folder = imgzoo.save(model, tmp_path / "same-files", recipe={"epochs": 1})
    entry = entry_from_folder("mnist_cnn.hub_test", folder, repo_id="imgzoo/mnist-cnn-test", revision=commit.oid)
    register_weights(entry)
    yield SimpleNamespace(name=entry.name, model=model, commit=commit)
    unregister_weights(entry.name)


def test_weights_entry_downloads_once_then_loads_offline(hub, hub_entry, monkeypatch):
    first = imgzoo.load(hub_entry.name)
    second = imgzoo.create_model("mnist_cnn", pretrained=hub_entry.name)
    assert _same_outputs(hub_entry.model, first) and _same_outputs(hub_entry.model, second)
    assert hub.state.count("GET", "/model.safetensors") == 1

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.state.requests)
    offline = imgzoo.load(hub_entry.name)
    assert len(hub.state.requests) == before
    assert _same_outputs(hub_entry.model, offline)


def test_a_cached_entry_pinned_to_a_commit_is_read_from_the_cache_without_a_request(hub, hub_entry, monkeypatch):
    first = imgzoo.load(hub_entry.name)
    by_branch = imgzoo.load("hf-hub:imgzoo/mnist-cnn-test")  # online: asks the Hub, and caches refs/main
    before = len(hub.state.requests)
    fail = lambda *a, **k: pytest.fail("the Hub was asked about a cached snapshot")  # noqa: E731
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", fail)
    again = imgzoo.load(hub_entry.name)
    assert len(hub.state.requests) == before and _same_outputs(first, again)
    with pytest.raises(pytest.fail.Exception, match="the Hub was asked"):
        imgzoo.load("hf-hub:imgzoo/mnist-cnn-test")  # online, a branch may have moved: the Hub is asked
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    offline = imgzoo.load("hf-hub:imgzoo/mnist-cnn-test")  # offline: the cached refs/main names the snapshot
    assert len(hub.state.requests) == before and _same_outputs(by_branch, offline)


def test_weights_entry_with_a_new_head(hub, hub_entry):
    with pytest.warns(UserWarning, match="NOT the classifier") as caught:
        model = imgzoo.create_model("mnist_cnn", pretrained=hub_entry.name, num_classes=4)
    assert caught[0].filename == __file__  # blames the caller's line, not imgzoo's
    assert model.classifier.out_features == 4 and not model.training


def test_corrupted_download_fails_the_sha256_check_and_download_force_repairs_it(hub, hub_entry, capsys):
    assert cli.main(["download", hub_entry.name]) == 0
    folder = Path(capsys.readouterr().out.strip())
    blob = (folder / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"sha256 mismatch for {hub_entry.name}.*imgzoo download .* --force"):
        imgzoo.load(hub_entry.name)
    assert cli.main(["download", hub_entry.name]) == 2  # still corrupt: download checks too
    assert "sha256 mismatch" in capsys.readouterr().err
    assert cli.main(["download", hub_entry.name, "--force"]) == 0
    assert _same_outputs(hub_entry.model, imgzoo.load(hub_entry.name))


_LOAD_AND_PRINT = """
import sys, torch, imgzoo
torch.set_num_threads(1)
model = imgzoo.load(sys.argv[1])
with torch.no_grad():
    print(model(torch.ones(1, 1, 28, 28)).sum().item())
"""


def test_four_processes_loading_at_once_with_an_empty_cache_all_succeed(hub, tmp_path):
    model = _trained()
    commit = imgzoo.push_to_hub(model, "org/shared", token=TOKEN)
    assert not hub.cache.exists()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    name = f"hf-hub:org/shared@{commit.oid}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOAD_AND_PRINT, name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in results]
    with torch.no_grad():
        expected = model(torch.ones(1, 1, 28, 28)).sum().item()
    assert [float(out) for out, _ in results] == pytest.approx([expected] * 4, rel=1e-5)
    blobs = [p for p in hub.cache.rglob("blobs/*") if p.is_file()]
    assert len(blobs) == 2  # config.json and model.safetensors, each stored once


# --- untrusted names, no network, tokens and the cache -------------------------------------------

_WALKING_REVISIONS = ["../../../x", "..", "refs/../../x", "/etc/passwd", "a\\b", "main/", "a b", "v1.lock", ".hidden"]


@pytest.mark.parametrize("bad", _WALKING_REVISIONS)
def test_revisions_that_could_leave_the_cache_are_refused_before_any_request(hub, tmp_path, bad):
    before = len(hub.state.requests)
    with pytest.raises(ValueError, match="is not a branch, tag or commit sha"):
        imgzoo.load(f"hf-hub:org/repo@{bad}")
    with pytest.raises(ValueError, match="is not a branch, tag or commit sha"):
        imgzoo.download("hf-hub:org/repo", revision=bad)
    with pytest.raises(ValueError, match="is not a branch, tag or commit sha"):
        imgzoo.push_to_hub(_trained(), "org/repo", token=TOKEN, revision=bad)
    assert len(hub.state.requests) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no cache, nothing beside it


@pytest.mark.parametrize("repo", ["../..", "org/..", "org--x/y", "a/b/c", "org/" + "x" * 100])
def test_repository_ids_outside_the_hubs_rules_are_refused_before_any_request(hub, repo):
    with pytest.raises(ValueError, match="looks like 'org/name'"):
        imgzoo.load(f"hf-hub:{repo}")
    with pytest.raises(ValueError, match="looks like 'org/name'"):
        imgzoo.push_to_hub(_trained(), repo, token=TOKEN)
    assert hub.state.requests == []


@pytest.mark.parametrize("good", ["main", "v1.0", "refs/pr/1", "feature/x-y_z", "0" * 40])
def test_branch_tag_and_sha_revisions_are_accepted(good):
    imgzoo.hub.api.check_revision(good)  # raises on a refused name


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once closed


def test_without_a_network_push_and_download_fail_at_once_saying_what_to_do(hub, monkeypatch):
    dead = _closed_port()
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}")
    backoffs = []
    monkeypatch.setattr(time, "sleep", backoffs.append)  # huggingface_hub waits between retries with time.sleep
    with pytest.raises(WeightsNotFoundError, match=rf"the Hub at {dead} could not be reached .*Check the network"):
        imgzoo.download("hf-hub:org/x")
    with pytest.raises(HubUnreachableError, match=rf"could not reach the Hub at {dead} to push to org/x.*no commit"):
        imgzoo.push_to_hub(_trained(), "org/x", token=TOKEN)
    assert backoffs == []  # one attempt each, no retries


def test_offline_mode_refuses_a_push_and_a_download_with_what_to_do(hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachableError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\). Unset HF_HUB_OFFLINE"):
        imgzoo.push_to_hub(_trained(), "org/x", token=TOKEN)
    with pytest.raises(WeightsNotFoundError, match=r"HF_HUB_OFFLINE=1.*imgzoo download hf-hub:org/x"):
        imgzoo.download("hf-hub:org/x")
    assert hub.state.requests == []


def test_a_wrong_token_is_not_checked_when_the_files_are_cached(hub):
    # Documented in docs/security.md: a token guards the Hub, not the local cache.
    model = _trained()
    commit = imgzoo.push_to_hub(model, "org/cached", private=True, token=TOKEN)
    imgzoo.load(f"hf-hub:org/cached@{commit.oid}", token=TOKEN)
    before = len(hub.state.requests)
    assert _same_outputs(model, imgzoo.load(f"hf-hub:org/cached@{commit.oid}", token=WRONG_TOKEN))
    assert len(hub.state.requests) == before  # a pinned sha in the cache needs no request at all
    imgzoo.load("hf-hub:org/cached", token=TOKEN)  # caches the branch's ref too
    assert _same_outputs(model, imgzoo.load("hf-hub:org/cached", token=WRONG_TOKEN))
    assert [status for *_, status in hub.state.requests[-2:]] == [401, 401]  # refused, then the cache answered
