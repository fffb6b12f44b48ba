"""Recipes: one per shipped entry and per architecture, applied by fit, and true to the shipped files."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from _fit_worker import make_data, make_model
from torch.utils.data import DataLoader

import imgzoo
from imgzoo.hub.format import CONFIG_NAME, read_config
from imgzoo.hub.pretrained import PRETRAINED
from imgzoo.models.registry import get_model_entry
from imgzoo.train.config import FitConfig, loader_differences
from imgzoo.train.fit import fit
from imgzoo.train.recipes import RECIPES, Recipe, get_recipe, list_recipes, resolve_config

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"verbose": 0, "num_workers": 0, "amp": False, "channels_last": False}


def test_every_shipped_entry_and_every_architecture_has_a_recipe():
    names = set(list_recipes())
    assert {entry.name for entry in PRETRAINED} <= names
    # imgzoo's own architectures; other tests register models of their own, which have no recipe.
    builtin = {n for n in imgzoo.list_models() if get_model_entry(n).builder.__module__.startswith("imgzoo.models.")}
    assert {"basic_cnn", "mnist_cnn", "resnet_cifar"} <= builtin
    assert builtin <= names


@pytest.mark.parametrize("entry", PRETRAINED, ids=lambda e: e.name)
def test_an_entrys_meta_recipe_agrees_with_its_recipe(entry):
    recipe = get_recipe(entry.name)
    assert Recipe.from_meta(entry.name, entry.meta["recipe"]).to_meta() == recipe.to_meta()
    assert {k: entry.meta["recipe"][k] for k in recipe.to_meta()} == recipe.to_meta()


@pytest.mark.parametrize("entry", [e for e in PRETRAINED if e.package_dir], ids=lambda e: e.name)
def test_a_shipped_recipe_agrees_with_what_the_config_json_of_its_weights_recorded(entry):
    # config.json was written by the run that trained the weights; the Recipe was written afterwards.
    recorded = read_config(ROOT / "imgzoo" / "hub" / "weights" / entry.package_dir / CONFIG_NAME)["recipe"]
    from_files, recipe = Recipe.from_meta(entry.name, recorded).to_meta(), get_recipe(entry.name).to_meta()
    compared = recorded.keys() & set(recipe)
    assert {"epochs", "lr", "batch_size", "augment", "label_smoothing", "model_kwargs", "tta"} <= compared
    assert {key: from_files[key] for key in compared} == {key: recipe[key] for key in compared}
    assert recipe["amp"] == recorded.get("amp", "fp32")  # a run without an amp entry trained in fp32


def test_config_json_written_by_0_1_is_still_read():
    old = {"epochs": 3, "optimizer": "sgd-nesterov", "augment": "standard (reflect pad 4, crop, flip)", "seed": 0}
    recipe = Recipe.from_meta("old", {**old, "kwargs": {"depth": 20}, "machine": {"cpu": "x"}})
    assert (recipe.config.optimizer, recipe.config.augment, recipe.model_kwargs) == ("sgd", "standard", {"depth": 20})
    with pytest.raises(ValueError, match="has no 'epochs'"):
        Recipe.from_meta("old", {"lr": 0.1})


def test_an_unknown_name_is_refused_with_close_matches():
    with pytest.raises(ValueError, match=r"'resnet_cifar'.*Recipes exist for"):
        get_recipe("resnet_cifr")


def test_a_bad_recipe_value_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"Recipe 'x': tta must be one of"):
        Recipe("x", FitConfig(epochs=1), tta="rotate")
    with pytest.raises(ValueError, match=r"fit: cutout must be an integer >= 0"):
        Recipe("x", FitConfig(epochs=1, cutout=-3))  # the config's own check: there is no second one


def test_fit_with_a_recipe_trains_with_its_options_and_keywords_win():
    cfg = resolve_config(None, {"recipe": "basic_cnn", "epochs": 2})
    expected = get_recipe("basic_cnn").config
    assert (cfg.epochs, cfg.label_smoothing, cfg.batch_size, cfg.lr) == (2, 0.2, expected.batch_size, expected.lr)
    assert (cfg.recipe, cfg.lookahead_decay, cfg.cutout) == ("basic_cnn", expected.lookahead_decay, 12)
    assert resolve_config(None, {"recipe": "mnist_cnn.mnist"}).epochs == get_recipe("mnist_cnn.mnist").config.epochs


def test_config_and_recipe_together_are_refused():
    with pytest.raises(TypeError, match=r"both config= and recipe="):
        resolve_config(FitConfig(epochs=1), {"recipe": "mnist_cnn"})


def test_a_recipe_run_equals_the_same_options_passed_by_hand():
    train, val = make_data(n=64)
    config = FitConfig(epochs=2, lr=0.05, batch_size=16, label_smoothing=0.1, schedule="cosine", ema_decay=0.9)
    recipe = Recipe("small", config)
    by_recipe, by_hand = make_model(), make_model()
    history = fit(by_recipe, train, val, recipe=recipe, **QUIET)
    expected = fit(by_hand, train, val, config=config, **QUIET)
    assert history.train_loss == expected.train_loss and history.val_loss == expected.val_loss
    expected_weights = by_hand.state_dict()
    assert all(torch.equal(v, expected_weights[k]) for k, v in by_recipe.state_dict().items())


def test_fit_warns_when_the_loader_given_is_not_the_recipes():
    train, val = make_data(n=64)
    recipe = Recipe("batch16", FitConfig(epochs=1, batch_size=16))
    with pytest.warns(UserWarning, match=r"batch_size=32 \(the recipe's is 16\)"):
        fit(make_model(), DataLoader(train, batch_size=32), val, recipe=recipe, **QUIET)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(make_model(), DataLoader(train, batch_size=16), val, recipe=recipe, **QUIET)


def test_loader_options_build_the_recipes_fastloader():
    from imgzoo.data.datasets import TensorImages
    from imgzoo.data.loaders import FastLoader

    config = RECIPES["mnist_cnn.mnist"].config
    spec = imgzoo.create_model("basic_cnn").data_spec
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = TensorImages(images, torch.arange(8) % 10, spec.class_names, spec=spec)
    loader = FastLoader(data, **config.loader_options(), spec=spec, train=True)
    assert loader_differences(loader, config) == []
    assert loader_differences(FastLoader(data, 128, spec=spec, train=False), config) == [
        "batch_size=128 (the recipe's is 64)",
        "augment='none' (the recipe's is 'standard')",
    ]


def test_a_renamed_recipe_is_found_by_its_old_name_so_recorded_runs_still_resume():
    assert get_recipe("resnet_cifar.d56") is get_recipe("resnet_cifar.d56_e40")
    assert "resnet_cifar.d56" not in list_recipes()  # listed once, by its name today
