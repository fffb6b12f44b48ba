"""fit's options: typed keywords, a FitConfig with overrides applied on a copy, clear refusals; and the
rule that keeps the package readable (no function longer than 60 lines)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
from _fit_worker import FIT_OPTIONS, make_data, make_model

import imgzoo
from imgzoo.train.config import FitConfig, FitOptions, resolve_config
from imgzoo.train.fit import fit


def _annotation_text(annotation) -> str:
    return getattr(annotation, "__forward_arg__", annotation)  # TypedDict keeps strings as ForwardRefs


def test_fit_options_mirror_every_fit_config_field_and_its_type():
    fields = {f.name: f.type for f in dataclasses.fields(FitConfig)}
    options = {name: _annotation_text(t) for name, t in FitOptions.__annotations__.items()}
    assert options == fields
    assert FitOptions.__total__ is False  # every option may be left out


def test_fit_signature_names_config_and_typed_overrides():
    parameters = inspect.signature(fit).parameters
    assert list(parameters) == ["model", "train", "val", "config", "overrides"]
    assert parameters["config"].kind is inspect.Parameter.KEYWORD_ONLY and parameters["config"].default is None
    assert parameters["overrides"].kind is inspect.Parameter.VAR_KEYWORD
    assert parameters["overrides"].annotation == "Unpack[FitOptions]"


def test_overrides_apply_to_a_copy_of_the_config():
    config = FitConfig(epochs=2, lr=0.1, schedule=None)
    resolved = resolve_config(config, {"lr": 0.05, "epochs": 1})
    assert (resolved.lr, resolved.epochs, resolved.schedule) == (0.05, 1, None)
    assert (config.lr, config.epochs) == (0.1, 2)
    assert resolved is not config


def test_fit_takes_a_config_and_overrides_without_changing_the_config():
    train, _ = make_data(n=64)
    options = {k: v for k, v in FIT_OPTIONS.items() if k != "lr"}
    config = FitConfig(epochs=2, lr=0.1, schedule=None, **options)
    history = fit(make_model(), train, config=config, lr=0.05)
    assert history.lr == [0.05, 0.05]
    assert config.lr == 0.1


def test_fit_with_keywords_only_still_works():
    train, _ = make_data(n=64)
    history = fit(make_model(), train, epochs=1, **{**FIT_OPTIONS, "schedule": None})
    assert history.lr == [FIT_OPTIONS["lr"]]


def test_an_override_that_is_no_option_is_refused_with_the_list_of_options():
    with pytest.raises(TypeError, match=r"unknown options \['learning_rate'\]; it takes \[.*'batch_size'.*'lr'"):
        resolve_config(FitConfig(epochs=1), {"learning_rate": 0.1})


def test_epochs_missing_everywhere_is_refused_clearly():
    train, _ = make_data(n=64)
    with pytest.raises(TypeError, match=r"fit\(\) needs epochs: pass .*epochs=N.*config=FitConfig\(epochs=N\)"):
        fit(make_model(), train, lr=0.1)


def test_a_config_of_another_type_is_refused():
    with pytest.raises(TypeError, match="config must be an imgzoo.train.fit.FitConfig, got dict"):
        resolve_config({"epochs": 1}, {})  # type: ignore[arg-type]


def test_an_override_with_a_bad_value_is_refused_like_the_config_itself():
    with pytest.raises(ValueError, match="lr must be > 0, got -1"):
        resolve_config(FitConfig(epochs=1), {"lr": -1})


MAX_FUNCTION_LINES = 60


def test_no_function_in_the_package_is_longer_than_60_lines():
    package = Path(imgzoo.__file__).parent
    too_long = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(package.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert too_long == []
