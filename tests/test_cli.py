"""The ``imgzoo models`` command, run in-process."""

from __future__ import annotations

import pytest

import imgzoo
from imgzoo.cli import main
from imgzoo.registry import get_model_entry


def rows(output: str) -> dict[str, list[str]]:
    """Table rows keyed by model name (the header and the rule line dropped)."""
    lines = output.strip().splitlines()
    assert lines[0].split()[:3] == ["name", "params", "trainable"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    return {line.split()[0]: line.split() for line in lines[2:]}


def millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def test_models_prints_one_row_per_model_with_parameter_counts(capsys):
    assert main(["models"]) == 0
    table = rows(capsys.readouterr().out)
    assert list(table) == imgzoo.list_models()
    for name, cells in table.items():
        model = imgzoo.create_model(name)
        spec = get_model_entry(name).default_spec
        assert cells[1] == millions(sum(p.numel() for p in model.parameters()))
        assert cells[2] == millions(sum(p.numel() for p in model.parameters() if p.requires_grad))
        line = " ".join(cells)
        assert str((2, *spec.input_shape)) in line
        assert str((2, spec.num_classes)) in line


def test_models_pattern_filters_rows(capsys):
    assert main(["models", "*cnn"]) == 0
    assert list(rows(capsys.readouterr().out)) == imgzoo.list_models("*cnn")


def test_frozen_backbone_shows_fewer_trainable_parameters(capsys):
    assert main(["models", "dogbreed_transfer"]) == 0
    cells = rows(capsys.readouterr().out)["dogbreed_transfer"]
    assert float(cells[2].rstrip("M")) < float(cells[1].rstrip("M"))


def test_no_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage: imgzoo" in capsys.readouterr().err
