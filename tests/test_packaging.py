"""The package's promises to a fresh machine: metadata, ranges, the README Quickstart and CI agree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import imgzoo

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the checks below need no other reader

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def requirements(specs: list[str]) -> dict[str, Requirement]:
    return {Requirement(s).name.lower(): Requirement(s) for s in specs}


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_quickstart_is_two_commands_and_ci_runs_the_second():
    install_and_run, install_and_test = quickstart_commands()
    assert "\n" not in install_and_run and "\n" not in install_and_test
    assert "pip install -e" in install_and_run and install_and_run.endswith("imgzoo demo")
    assert 'pip install -e ".[dev]"' in install_and_test and "pytest" in install_and_test

    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    commands = [line.strip() for line in ci if line.strip() and not line.lstrip().startswith("#")]
    assert install_and_test in commands, f"CI does not run the README's test command:\n{commands}"


def test_project_metadata():
    assert PROJECT["name"] == "imgzoo"
    assert PROJECT["version"] == imgzoo.__version__
    assert PROJECT["scripts"]["imgzoo"] == "imgzoo.cli.main:main"
    python = Requirement(f"python{PROJECT['requires-python']}").specifier
    assert "3.10" in python and "3.9" not in python


def test_runtime_dependencies_are_ranges_that_admit_the_local_torch():
    deps = requirements(PROJECT["dependencies"])
    assert {"torch", "torchvision", "pillow", "huggingface-hub", "safetensors"} <= set(deps)
    pinned = [str(r) for r in deps.values() if any(s.operator in ("==", "===") for s in r.specifier)]
    assert pinned == [], "exact pins stop pip from using the wheels already on the machine"
    # The releases on this machine's disk; a range above them would download several GB.
    assert deps["torch"].specifier.contains("2.14.1")
    assert deps["torchvision"].specifier.contains("0.29.1")


def test_dev_extra_brings_the_test_tools():
    dev = requirements(PROJECT["optional-dependencies"]["dev"])
    assert {"pytest", "hypothesis", "ruff"} <= set(dev)


def test_typed_marker_and_license_ship():
    assert (ROOT / "imgzoo" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["imgzoo"]


def test_the_demo_samples_ship_in_the_package():
    assert "samples/**/*" in PYPROJECT["tool"]["setuptools"]["package-data"]["imgzoo"]
    for folder in ("mnist", "cifar10"):
        assert len(list((ROOT / "imgzoo" / "samples" / folder).iterdir())) == 30
    license_text = (ROOT / "LICENSE").read_text()
    assert "MIT License" in license_text or "Apache License" in license_text
