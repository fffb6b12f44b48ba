"""Every Python block in the docs runs, so that the docs cannot drift from the code.

Each page (``docs/*.md`` and ``README.md``) is one test: its ```python blocks run in order in
one namespace, in an empty temporary working directory that holds tiny data sets at the paths
the snippets use (``data/`` with CIFAR-10 and MNIST, ``dogs/``, ``cat.png``), with a
Hub-compatible server on 127.0.0.1 in place of the Hugging Face Hub and every other connection
refused. Tracebacks name the page and the line in it.

A page may assume a few names its prose introduces ("a trained model", "an image"): ``GIVEN``
defines them, as code, before the page's first block. A block that cannot run here is preceded
by the comment ``<!-- docs: skip REASON -->``; the reason shows in pytest's summary. Keep both few.

The site itself is checked too: ``mkdocs build --strict`` fails on a broken link, a missing
page in the nav, or a docstring mkdocstrings cannot render.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision
from data_factories import (
    CIFAR10_CLASSES,
    make_images,
    write_cifar10,
    write_image_folder,
    write_mnist,
    write_stanford_dogs,
)
from hub_server import HubServer
from huggingface_hub import constants
from PIL import Image

import imgzoo
from imgzoo.models import registry
from imgzoo.train.fit import FitConfig

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
TOKEN = "hf_imgzooDocsToken0123456789abcdef"
DOCS_MAX_EPOCHS = 1

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
SKIP = re.compile(r"^<!--\s*docs:\s*skip\b\s*(?P<reason>.*?)\s*-->$")

# What a page's prose hands the reader before its first block, as code run in the page's
# namespace. Tiny on purpose: one epoch on a few images.
_TINY_RUN = """
import imgzoo
from imgzoo import datasets, transforms
model = imgzoo.create_model("resnet_cifar", depth=20)
data = datasets.cifar10("data/", transform=transforms.for_model(model))
train, val = datasets.train_val_split(data, val_count=10, seed=0)
history = imgzoo.fit(model, train, val, epochs=1, batch_size=8, verbose=0)
"""
GIVEN = {
    "training.md": """
import torch
from imgzoo.models.registry import CIFAR10 as spec
images = torch.randn(4, 3, 32, 32)  # a normalised batch, its labels and a model's answers
true_labels, predicted, class_names = [0, 1, 2, 3], [0, 1, 5, 3], spec.class_names
""",
    "models.md": """
import torch
from imgzoo.models._contract import LinearHeadMixin
class MyNet(LinearHeadMixin, torch.nn.Module):  # your own network
    def __init__(self, num_classes):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1))
        self.classifier = torch.nn.Linear(8, num_classes)
    def forward_features(self, x):
        return self.features(x)
    def forward_head(self, x, pre_logits=False):
        x = x.flatten(1)
        return x if pre_logits else self.classifier(x)
    def forward(self, x):
        return self.forward_head(self.forward_features(x))
""",
    "hub.md": _TINY_RUN
    + """
from PIL import Image
image = Image.open("cat.png")
recipe, metrics = {"epochs": 1, "lr": 0.1}, {"val_acc": 0.5}
""",
}


@dataclass(frozen=True)
class Block:
    line: int  # of the first line of code, 1-based, in the Markdown file
    code: str
    skip: str | None  # the reason, when the page marks the block as not runnable here


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a Markdown text, with where they start and any skip marker before them."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, ticks = opening["indent"], opening["ticks"]
        end = i + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(ticks) and lines[end].strip().strip(ticks[0]) == ""
        ):
            end += 1
        if opening["info"].split()[:1] == ["python"]:
            body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : end]]
            before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            marker = SKIP.match(before)
            blocks.append(
                Block(i + 2, "\n".join(body) + "\n", marker["reason"] or "no reason given" if marker else None)
            )
        i = end + 1
    return blocks


def test_python_blocks_finds_code_lines_and_skip_reasons():
    text = "\n".join(
        ["# Page", "", "```python", "a = 1", "```", "", "<!-- docs: skip needs a GPU -->", "```python", "b = 2", "```"]
        + ["", "```bash", "ls", "```", ""]
    )
    blocks = python_blocks(text)
    assert [(b.line, b.code, b.skip) for b in blocks] == [(4, "a = 1\n", None), (9, "b = 2\n", "needs a GPU")]


def _refuse_remote_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback only: a snippet that reaches for the network fails instead of downloading."""
    create_connection = socket.create_connection

    def loopback_only(address, *args, **kwargs):
        host = address[0]
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise OSError(f"the docs run offline; a snippet tried to connect to {host}")
        return create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", loopback_only)


def _cap_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every training run stops after ``DOCS_MAX_EPOCHS`` epochs (after its ``initial_epoch``), whatever the page shows.

    The pages give the epochs a real run needs (30, 100); a few images make an epoch cheap, but
    not cheap enough to run a page's dozen ``fit`` calls in full. All of them (``compare``
    included) build a ``FitConfig``, so the cap is applied there.
    """
    init = FitConfig.__init__

    def capped(self, *args, **kwargs):
        epochs = kwargs.get("epochs")
        if isinstance(epochs, int) and not isinstance(epochs, bool):
            kwargs["epochs"] = min(epochs, kwargs.get("initial_epoch", 0) + DOCS_MAX_EPOCHS)  # epochs after it
        init(self, *args, **kwargs)

    monkeypatch.setattr(FitConfig, "__init__", capped)


@pytest.fixture(scope="module")
def imagenet_home(tmp_path_factory) -> Path:
    """A TORCH_HOME holding a stand-in for torchvision's ResNet-50 ImageNet file, under its real name.

    ``dogbreed_transfer(weights="imagenet")`` goes through torchvision's own loading path, which
    reads this cache before it would download; random weights of the right shapes serve the docs.
    """
    home = tmp_path_factory.mktemp("torch-home")
    weights = torchvision.models.ResNet50_Weights.DEFAULT
    path = home / "hub" / "checkpoints" / Path(weights.url).name
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet50().state_dict(), path)
    return home


@pytest.fixture
def docs_workspace(tmp_path, monkeypatch, imagenet_home):
    """An empty working directory with tiny data where the snippets look for it, and a loopback Hub."""
    write_cifar10(tmp_path / "data", n_per_class=2)
    write_mnist(tmp_path / "data", n_per_class=2)
    write_image_folder(tmp_path / "data" / "cifar10-jpeg" / "train", classes=CIFAR10_CLASSES, n_per_class=2)
    write_stanford_dogs(tmp_path / "dogs", n_per_class=2)
    Image.fromarray(make_images([3], 32, 32, 3)[0]).save(tmp_path / "cat.png")
    (tmp_path / "path" / "to").mkdir(parents=True)
    (tmp_path / "path" / "to" / "imgzoo").symlink_to(ROOT)  # a clone of the repository, for torch.hub.load
    monkeypatch.chdir(tmp_path)
    # A page may register a model or weights entry; the registry is as it was for the next test.
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    monkeypatch.setattr(registry, "_WEIGHTS", dict(registry._WEIGHTS))
    monkeypatch.setenv("TORCH_HOME", str(imagenet_home))
    _cap_epochs(monkeypatch)
    # One core as far as imgzoo can tell: fit loads in-process instead of forking a loader worker
    # every epoch, which on a few images costs far more than the epoch itself.
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    _refuse_remote_connections(monkeypatch)
    with HubServer(TOKEN, lifetime=300) as server:
        home = tmp_path / "hf-home"
        for name, value in {
            "ENDPOINT": server.endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
            "HF_HUB_OFFLINE": False,
            "HF_TOKEN_PATH": str(home / "token"),
            "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        }.items():
            monkeypatch.setattr(constants, name, value)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        yield tmp_path


# Pages about an optional package run where it is installed (the dev extra brings it).
NEEDS = {"timm.md": "timm"}


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_page_code_runs(page: Path, docs_workspace: Path):
    if page.name in NEEDS:
        pytest.importorskip(NEEDS[page.name])
    blocks = python_blocks(page.read_text())
    runnable = [b for b in blocks if b.skip is None]
    if not runnable:
        pytest.skip(f"{page.name} has no Python block to run")
    namespace: dict = {"__name__": "__docs__"}
    given = GIVEN.get(page.name)
    if given:
        exec(compile(given, f"<GIVEN[{page.name!r}] in tests/test_docs.py>", "exec"), namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pages show warnings (NewHeadWarning) on purpose
        for block in runnable:
            # Padding with blank lines makes a traceback point at the Markdown line itself.
            exec(compile("\n" * (block.line - 1) + block.code, str(page), "exec"), namespace)


MARKED = [(page, block) for page in PAGES for block in python_blocks(page.read_text()) if block.skip is not None]


@pytest.mark.parametrize(
    ("page", "block"), MARKED, ids=[f"{p.relative_to(ROOT).as_posix()}:{b.line}" for p, b in MARKED] or None
)
def test_block_marked_not_runnable_says_why(page: Path, block: Block):
    assert block.skip != "no reason given", f"{page.name}:{block.line}: say why the block cannot run here"
    pytest.skip(f"{page.relative_to(ROOT).as_posix()}:{block.line}: {block.skip}")


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_python_fence_is_found(page: Path):
    text = page.read_text()
    fences = len(re.findall(r"^[ \t]*(`{3,}|~{3,})[ \t]*python\b", text, flags=re.M))
    assert len(python_blocks(text)) == fences


def test_api_reference_lists_every_top_level_name():
    index = (ROOT / "docs" / "api" / "index.md").read_text()
    missing = [name for name in imgzoo.__all__ if f"`{name}`" not in index and f", {name}" not in index]
    assert missing == [], f"docs/api/index.md does not list imgzoo.{', imgzoo.'.join(missing)}"


def test_strict_site_build_fetches_nothing(tmp_path):
    """``mkdocs build --strict``: every page in the nav, every link and anchor found, every docstring rendered."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]' to build the site")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)]
    done = subprocess.run(build, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    fit_page = (site / "api" / "training" / "index.html").read_text()
    assert 'id="imgzoo.fit"' in fit_page and 'id="imgzoo.train.fit.FitConfig"' in fit_page
    # Nothing the pages load comes from elsewhere: no web fonts, scripts, styles or images.
    remote = re.compile(r"""<(?:script|img|link)\b[^>]*\b(?:src|href)=["']?(?:https?:)?//""", re.I)
    loaded = {str(p.relative_to(site)) for p in site.rglob("*.html") if remote.search(p.read_text())}
    assert loaded == set(), f"pages loading remote assets: {sorted(loaded)}"


def test_dev_extra_brings_the_site_tools():
    """CI installs the dev extra; with the docs extra in it the strict build above runs there, never skips."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    included = {e for spec in extras["dev"] if spec.startswith("imgzoo[") for e in spec[7:-1].split(",")}
    assert "docs" in included
    names = {re.split(r"[<>=!~\[]", spec)[0] for spec in extras["docs"]}
    assert {"mkdocs", "mkdocs-material", "mkdocstrings-python"} <= names
