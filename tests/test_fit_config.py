"""fit's options: one FitConfig, keywords laid over it on a copy, clear refusals; and the
rule that keeps the package readable (no function longer than 60 lines)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from _fit_worker import FIT_OPTIONS, make_data, make_model

import imgzoo
from imgzoo.train.callbacks import EMA, Lookahead
from imgzoo.train.config import CHOICES, FitConfig, averaging_callbacks
from imgzoo.train.fit import fit
from imgzoo.train.recipes import resolve_config


def test_fit_signature_names_config_and_takes_every_field_as_a_keyword():
    parameters = inspect.signature(fit).parameters
    assert list(parameters) == ["model", "train", "val", "config", "options"]
    assert parameters["config"].kind is inspect.Parameter.KEYWORD_ONLY and parameters["config"].default is None
    assert parameters["options"].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("augment", "heavy", "augment must be one of 'none', 'standard'"),
        ("translate", -1, "translate must be an integer >= 0 or None"),
        ("cutout", 2.5, "cutout must be an integer >= 0"),
        ("alternate_flips", "yes", "alternate_flips must be True or False"),
        ("ema_decay", 1.0, r"ema_decay must be in \(0, 1\)"),
        ("schedule", "triangle", "schedule must be one of 'onecycle'"),
        ("amp", "float16", "amp must be one of"),
        ("verbose", True, "verbose must be 0, 1 or 2"),
    ],
)
def test_every_option_is_checked_once_in_the_config(option, value, message):
    with pytest.raises(ValueError, match=message):
        FitConfig(epochs=1, **{option: value})


def test_ema_and_lookahead_are_one_or_the_other_and_become_callbacks():
    with pytest.raises(ValueError, match="ema_decay and lookahead_decay both rewrite the weights"):
        FitConfig(epochs=1, ema_decay=0.9, lookahead_decay=0.5)
    (ema,) = averaging_callbacks(FitConfig(epochs=1, ema_decay=0.9))
    assert isinstance(ema, EMA) and ema.decay == 0.9
    (lookahead,) = averaging_callbacks(FitConfig(epochs=1, lookahead_decay=0.5))
    assert isinstance(lookahead, Lookahead) and lookahead.decay == 0.5
    own = EMA(decay=0.5)  # one given by the user is the run's average; none is added beside it
    assert averaging_callbacks(FitConfig(epochs=1, ema_decay=0.9, callbacks=[own])) == []
    assert set(CHOICES) <= {f.name for f in dataclasses.fields(FitConfig)}


def test_fit_trains_with_the_ema_its_config_asks_for():
    train, _ = make_data(n=64)
    plain, averaged = make_model(), make_model()
    fit(plain, train, epochs=1, schedule=None, **FIT_OPTIONS)
    fit(averaged, train, epochs=1, schedule=None, ema_decay=0.5, **FIT_OPTIONS)
    weights = averaged.state_dict()
    assert any(not torch.equal(v, weights[k]) for k, v in plain.state_dict().items() if v.is_floating_point())


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
