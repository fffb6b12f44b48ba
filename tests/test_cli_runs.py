"""One run from files (imgzoo.study.run) and the data-folder detection beneath ``imgzoo train``, run in-process."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex

import pytest
import torch
from data_factories import (
    CIFAR10_CLASSES,
    write_cifar10,
    write_image_folder,
    write_kaggle_dogs,
    write_mnist,
    write_stanford_dogs,
)
from safetensors.torch import load_file

import imgzoo
from imgzoo import datasets
from imgzoo.models.basic_cnn import init_whitening
from imgzoo.study import config as run_config
from imgzoo.study import run as runs
from imgzoo.train.config import fitted_to_data
from imgzoo.train.recipes import get_recipe


@pytest.mark.parametrize(
    ("write", "expected", "classes"),
    [
        (lambda root: write_cifar10(root), "cifar10", list(CIFAR10_CLASSES)),
        (lambda root: write_image_folder(root / "train", CIFAR10_CLASSES), "cifar10", list(CIFAR10_CLASSES)),
        (lambda root: write_mnist(root), "mnist", [str(d) for d in range(10)]),
        (lambda root: write_kaggle_dogs(root), "kaggle_dogs", ["chihuahua", "japanese_spaniel", "maltese_dog"]),
        (lambda root: write_stanford_dogs(root), "stanford_dogs", ["Chihuahua", "Japanese_spaniel", "Maltese_dog"]),
        (lambda root: write_image_folder(root, ("cat", "dog")), "image_folder", ["cat", "dog"]),
        (lambda root: write_image_folder(root / "train", ("ant", "bee")), "image_folder", ["ant", "bee"]),
    ],
    ids=["cifar-batches", "cifar-jpeg-tree", "mnist-idx", "kaggle", "stanford", "class-folders", "train-split-tree"],
)
def test_a_folder_is_opened_in_whatever_layout_it_holds(tmp_path, write, expected, classes):
    write(tmp_path)
    if expected == "image_folder" and (tmp_path / "train").is_dir():
        write_image_folder(tmp_path / "test", ("ant", "bee"), seed=1)  # a test split beside it is left alone
    assert datasets.detect_format(tmp_path) == expected
    data = datasets.open_folder(tmp_path)
    assert [str(c) for c in data.classes] == classes
    assert len(data) == len(classes) * 2  # the factories write two images per class (training split only)


def test_a_folder_with_no_data_set_is_refused_naming_the_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="holds no data set imgzoo can read.*CIFAR-10.*MNIST"):
        datasets.detect_format(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.detect_format(tmp_path / "missing")


def test_limit_is_a_seeded_stratified_draw_of_the_training_split_only(tmp_path):
    data = datasets.open_folder(write_mnist(tmp_path, n_per_class=10))
    full_train, full_val = runs.split_data(data, seed=3)
    train, val = runs.split_data(data, seed=3, limit=30)
    assert val.indices == full_val.indices  # validation stays whole, so figures compare across limits
    assert len(train) == 30 and set(train.indices) <= set(full_train.indices)
    assert torch.bincount(train.targets, minlength=10).tolist() == [3] * 10
    assert runs.split_data(data, seed=3, limit=30)[0].indices == train.indices
    assert runs.split_data(data, seed=4, limit=30)[0].indices != train.indices
    with pytest.raises(ValueError, match="limit=5 is fewer than the 10 classes"):
        runs.split_data(data, seed=3, limit=5)


def test_a_models_defaults_come_from_one_table_and_the_command_line_overrides_them(tmp_path):
    folder = str(write_mnist(tmp_path))
    config = run_config.make_config("resnet_cifar", folder)
    assert config.fit == dataclasses.replace(get_recipe("resnet_cifar").config, recipe="resnet_cifar")
    assert run_config.make_config("resnet_cifar", folder, epochs=3, augment="none").fit.epochs == 3
    transfer = run_config.make_config("dogbreed_transfer", folder)
    assert transfer.kwargs["weights"] == "imagenet" and transfer.fit.head_epochs == 10
    assert run_config.make_config("mnist_cnn", folder, recipe=None).fit.recipe == "mnist_cnn"  # its own recipe
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        run_config.make_config("resnet", folder)
    with pytest.raises(ValueError, match="augment must be one of 'none', 'standard', 'strong' or 'affine'"):
        run_config.make_config("mnist_cnn", folder, augment="heavy")
    with pytest.raises(ValueError, match="unknown fit option\\(s\\) verbose"):
        run_config.make_config("mnist_cnn", folder, verbose=0)  # the runner's own


def _config(folder: str, **options) -> run_config.RunConfig:
    return run_config.make_config("mnist_cnn", folder, epochs=2, amp="fp32", batch_size=16, **options)


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_weights_of_an_unbroken_one(tmp_path):
    folder = str(write_mnist(tmp_path / "mnist", n_per_class=4))
    whole = runs.train_run(tmp_path / "whole", _config(folder), verbose=0, log=lambda _: None)
    # max_time this short stops the run after its first epoch: a stop that leaves a resumable folder.
    stopped = runs.train_run(tmp_path / "cut", _config(folder, max_time=1e-3), verbose=0, log=lambda _: None)
    assert whole.finished and not stopped.finished and len(stopped.history) == 1
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["finished"] is False
    resumed = runs.train_run(
        tmp_path / "cut",
        run_config.resume_config(tmp_path / "cut", "mnist_cnn", folder),
        resume=True,
        verbose=0,
        log=lambda _: None,
    )
    assert resumed.action == "resume" and resumed.finished and resumed.history.epoch == [1, 2]
    assert resumed.history.train_loss == pytest.approx(whole.history.train_loss)
    cut = load_file(tmp_path / "cut" / "weights" / "model.safetensors")
    unbroken = load_file(tmp_path / "whole" / "weights" / "model.safetensors")
    assert all(torch.equal(cut[name], unbroken[name]) for name in unbroken)


def test_more_epochs_extend_a_finished_run_from_its_weights_and_number_on(tmp_path, capsys):
    folder = str(write_mnist(tmp_path / "mnist", n_per_class=2))
    out, quiet = tmp_path / "run", {"verbose": 0, "log": lambda _: None}
    first = runs.train_run(out, run_config.make_config("mnist_cnn", folder, epochs=1, amp="fp32"), **quiet)
    said: list[str] = []
    longer = run_config.resume_config(out, "mnist_cnn", folder, epochs=3)
    capsys.readouterr()
    extended = runs.train_run(out, longer, resume=True, verbose=2, log=said.append)
    assert extended.action == "extend" and extended.finished
    assert "extending mnist_cnn from its 1 finished epochs to 3" in said[0]
    assert "fresh onecycle schedule over epochs 2-3" in said[0]
    printed = [line.split(" |")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert printed == ["epoch 2/3", "epoch 3/3"]  # as history.csv records them
    assert extended.history.epoch == [1, 2, 3]
    assert extended.history.train_loss[0] == first.history.train_loss[0]  # the first epoch kept, not retrained
    assert json.loads((out / "history.json").read_text())["epoch"] == [1, 2, 3]
    again = runs.train_run(out, run_config.resume_config(out, "mnist_cnn", folder), resume=True, **quiet)
    assert again.action == "done" and again.history.epoch == [1, 2, 3]


def test_a_run_folder_is_never_trained_over_by_another_run(tmp_path):
    folder = str(write_mnist(tmp_path / "mnist", n_per_class=2))
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run_config.plan_run(out, _config(folder), resume=True)
    run_config.RunRecord(_config(folder)).write(out.mkdir() or out)  # an unfinished run of 2 epochs
    # Killed before its first checkpoint: nothing to go on from, so a new start (a corrected command) may replace it.
    assert run_config.plan_run(out, _config(folder), resume=False).action == "start"
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "last.pt").write_bytes(b"one epoch")
    with pytest.raises(FileExistsError, match="already holds a run of mnist_cnn"):
        run_config.plan_run(out, _config(folder), resume=False)
    other = run_config.make_config("mnist_cnn", folder, epochs=2, amp="fp32", batch_size=32)
    with pytest.raises(ValueError, match="batch_size 16 -> 32"):
        run_config.plan_run(out, other, resume=True)
    longer = run_config.make_config("mnist_cnn", folder, epochs=5, amp="fp32", batch_size=16)
    with pytest.raises(ValueError, match="finish it first"):
        run_config.plan_run(out, longer, resume=True)
    assert run_config.plan_run(out, _config(folder), resume=True).action == "resume"


def test_the_samples_grid_spreads_over_the_split_without_repeats():
    assert runs.spread(range(10), 16) == list(range(10))
    picked = runs.spread(range(100), 16)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 99


# ---------------------------------------------------------------------------- recipes


def test_a_run_starts_from_its_models_recipe_and_the_command_line_wins(tmp_path):
    folder = str(write_mnist(tmp_path))
    basic = run_config.make_config("basic_cnn", folder)
    recipe = get_recipe("basic_cnn")
    assert basic.fit.recipe == "basic_cnn" and basic.kwargs == recipe.model_kwargs and basic.kwargs["whiten"] is True
    assert (basic.fit.epochs, basic.fit.batch_size, basic.fit.lr) == (36, 1024, recipe.config.lr)
    assert basic.fit.label_smoothing == recipe.config.label_smoothing == 0.2
    assert run_config.make_config("basic_cnn", folder, epochs=3, lr=0.05).fit.lr == 0.05
    old = run_config.make_config("resnet_cifar", folder, recipe="resnet_cifar.e60")
    assert old.fit.amp == "auto"  # a recipe's precision (bf16) was its machine's; a run takes auto unless told
    named = run_config.make_config("resnet_cifar", folder, recipe="resnet_cifar.cifar10")
    assert named.fit.recipe == "resnet_cifar.cifar10" and named.fit.epochs == 90
    with pytest.raises(ValueError, match="recipe 'resnet_cifar.cifar10' trains resnet_cifar, not mnist_cnn"):
        run_config.make_config("mnist_cnn", folder, recipe="resnet_cifar.cifar10")
    with pytest.raises(ValueError, match="no recipe named 'mnist_cnn.fastest'"):
        run_config.make_config("mnist_cnn", folder, recipe="mnist_cnn.fastest")


def test_a_recipes_batch_too_big_for_the_data_is_cut_with_a_warning_and_tta_can_be_skipped(tmp_path):
    basic = dataclasses.replace(get_recipe("basic_cnn").config, recipe="basic_cnn")  # batch 1024, lr 1.5
    cut, warning = fitted_to_data(basic, 2000)
    assert (cut.batch_size, cut.lr) == (64, pytest.approx(1.5 * 64 / 1024))
    assert warning.startswith("warning: basic_cnn recipe's batch 1024 gives 2 step(s) an epoch on 2000 images")
    assert fitted_to_data(basic, 45000) == (basic, "")  # the data it was made for
    resnet = get_recipe("resnet_cifar").config  # batch 128: 16 steps an epoch on 2,000 images, enough
    assert fitted_to_data(resnet, 2000) == (resnet, "") and fitted_to_data(resnet, 1000)[0].batch_size == 32
    folder = str(write_mnist(tmp_path / "mnist", n_per_class=4))  # 30 training images, the recipe's batch 64
    out, said = tmp_path / "run", []
    config = run_config.make_config("mnist_cnn", folder, epochs=1, amp="fp32")
    runs.train_run(out, config, verbose=0, log=said.append, tta=False)
    assert any(
        "recipe's batch 64 gives 1 step(s) an epoch on 30 images, too few to learn from; training at batch 16" in s
        for s in said
    )
    saved = json.loads((out / "weights" / "config.json").read_text())
    assert saved["recipe"]["batch_size"] == 16 and "--batch-size 16" in saved["recipe"]["command"]
    assert "tta" not in saved["metrics"] and not any("test-time" in s for s in said)  # skipped, though the recipe's
    assert saved["recipe"]["tta"] == "shift"  # is still recorded for `imgzoo evaluate RUN DATA --tta`
    assert json.loads((out / "run.json").read_text())["config"]["batch_size"] == 64  # cut alike when resumed
    given = run_config.make_config("mnist_cnn", folder, epochs=1, amp="fp32", batch_size=32)  # asked for: kept
    assert runs.train_run(tmp_path / "given", given, verbose=0, log=said.append).config.fit.batch_size == 32


def test_a_whitened_run_sets_its_stem_from_its_training_images_and_reports_tta(tmp_path):
    folder = str(write_cifar10(tmp_path / "cifar", n_per_class=6))
    config = run_config.make_config("basic_cnn", folder, epochs=1, batch_size=16, amp="fp32", kwargs={"widths": [8, 8]})
    out = tmp_path / "run"
    runs.train_run(out, config, verbose=0, log=lambda _: None)
    trained = imgzoo.load(out / "weights")
    train_part = runs.split_data(runs.open_data(folder), config.fit.seed)[0]
    fresh = imgzoo.create_model("basic_cnn", widths=(8, 8), whiten=True)
    init_whitening(fresh, runs.whitening_images(fresh, train_part, config.fit.seed))
    stem = trained.stem[0].weight
    assert stem.abs().sum() > 0 and torch.allclose(stem, fresh.stem[0].weight, atol=1e-6)  # frozen after its init
    saved = json.loads((out / "weights" / "config.json").read_text())
    assert saved["metrics"]["tta"] == "flip+shift" and 0 <= saved["metrics"]["val_acc_tta"] <= 1
    assert saved["recipe"]["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert saved["recipe"]["command"].startswith(f"imgzoo train basic_cnn {folder} --out {out}")
    assert "--epochs 1" in saved["recipe"]["command"] and "--recipe" not in saved["recipe"]["command"]
    # The run records its TTA, so `imgzoo evaluate RUN DATA --tta` measures with the same mode.
    from imgzoo.study.config import recorded_tta

    assert saved["recipe"]["tta"] == "flip+shift" == recorded_tta(run_config.weights_of(str(out)))


def test_translate_and_cutout_from_the_command_line_reach_the_run_and_its_recorded_command(tmp_path):
    from imgzoo.cli.main import build_parser

    folder = str(write_cifar10(tmp_path / "cifar", n_per_class=2))
    args = build_parser().parse_args(["train", "basic_cnn", folder, "--out", "o", "--cutout", "8", "--translate", "2"])
    assert (args.cutout, args.translate) == (8, 2)
    config = run_config.make_config("basic_cnn", folder, recipe="basic_cnn.cifar10", cutout=args.cutout)
    assert (config.fit.cutout, config.fit.translate) == (8, get_recipe("basic_cnn.cifar10").config.translate)
    command = run_config.train_command(config, tmp_path / "o")
    assert "--cutout 8" in command and "--translate" not in command  # only what differs from the recipe
    assert "--cutout" not in run_config.train_command(run_config.make_config("basic_cnn", folder), tmp_path / "o")
    from imgzoo.cli.train import _fit_value

    assert _fit_value("cutout")("0") == 0 and _fit_value("lr")("none") is None
    for bad, said in (("-1", "cutout must be an integer >= 0"), ("two", "expected int; got 'two'")):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(said)):
            _fit_value("cutout")(bad)
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "basic_cnn", folder, "--out", "o", "--cutout", bad])


def test_alternate_flips_from_the_command_line_reach_the_run_and_its_recorded_command(tmp_path):
    from imgzoo.cli.main import build_parser

    folder = str(write_cifar10(tmp_path / "cifar", n_per_class=2))
    parse = build_parser().parse_args
    assert parse(["train", "basic_cnn", folder, "--out", "o"]).alternate_flips is None  # the recipe decides
    assert parse(["train", "resnet_cifar", folder, "--out", "o", "--no-alternate-flips"]).alternate_flips is False
    assert get_recipe("resnet_cifar.cifar10").config.alternate_flips
    assert not get_recipe("resnet_cifar.e60").config.alternate_flips
    for recipe, flag in (("resnet_cifar.cifar10", "--no-alternate-flips"), ("resnet_cifar.e60", "--alternate-flips")):
        args = parse(["train", "resnet_cifar", folder, "--out", "o", "--recipe", recipe, flag])
        config = run_config.make_config("resnet_cifar", folder, recipe=recipe, alternate_flips=args.alternate_flips)
        assert config.fit.alternate_flips is (flag == "--alternate-flips")
        command = run_config.train_command(config, tmp_path / "o")
        assert command.split()[-1] == flag  # spelt out, as it differs from the recipe
        again = parse(shlex.split(command)[1:])  # the recorded command reproduces the run's flips
        assert again.alternate_flips is config.fit.alternate_flips and again.recipe == recipe
    same = run_config.make_config("resnet_cifar", folder, recipe="resnet_cifar.cifar10")
    words = shlex.split(run_config.train_command(same, tmp_path / "o"))
    assert not [w for w in words if w.endswith("alternate-flips")]  # only what differs from the recipe


def test_compile_is_a_speed_choice_a_run_records_and_may_change_when_it_resumes(tmp_path):
    from imgzoo.cli.main import build_parser

    folder = str(write_mnist(tmp_path / "mnist", n_per_class=2))
    parse = build_parser().parse_args
    assert parse(["train", "mnist_cnn", folder, "--out", "o"]).compile is None  # neither asked nor refused
    assert parse(["train", "mnist_cnn", folder, "--out", "o", "--no-compile"]).compile is False
    compiled = run_config.make_config("mnist_cnn", folder, compile=True)
    assert compiled.fit.compile is True  # what train_run hands to fit
    assert "--compile" in run_config.train_command(compiled, tmp_path / "o")
    assert "--compile" not in run_config.train_command(run_config.make_config("mnist_cnn", folder), tmp_path / "o")
    (tmp_path / "o").mkdir()
    run_config.RunRecord(compiled).write(tmp_path / "o")
    plain = run_config.resume_config(tmp_path / "o", "mnist_cnn", folder, compile=False, device="cpu")
    assert plain.fit.compile is False and plain.fit.label_smoothing == compiled.fit.label_smoothing == 0.1
    assert run_config.plan_run(tmp_path / "o", plain, resume=True).action == "resume"  # how it runs may change
    smoother = run_config.resume_config(tmp_path / "o", "mnist_cnn", folder, label_smoothing=0.3)
    with pytest.raises(ValueError, match=r"other settings \(label_smoothing 0.1 -> 0.3\)"):
        run_config.plan_run(tmp_path / "o", smoother, resume=True)  # what the run learns may not change


def test_model_kwargs_reach_the_builder_and_the_recorded_command(tmp_path):
    from imgzoo.cli.train import model_kwarg

    assert model_kwarg("depth=56") == ("depth", 56)
    assert model_kwarg("widths=[32,64,128]") == ("widths", [32, 64, 128])
    assert model_kwarg("whiten=true") == ("whiten", True) and model_kwarg("weights=None") == ("weights", None)
    assert model_kwarg("weights=imagenet") == ("weights", "imagenet")  # not a literal: a string
    for bad in ("depth", "=3", "2x=3"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
            model_kwarg(bad)
    folder = str(write_cifar10(tmp_path / "cifar", n_per_class=6))
    config = run_config.make_config("basic_cnn", folder, epochs=1, batch_size=16, amp="fp32", kwargs={"widths": [8, 8]})
    assert config.kwargs == {**get_recipe("basic_cnn").model_kwargs, "widths": [8, 8]}  # laid over the recipe's
    with pytest.raises(ValueError, match="unknown kwarg\\(s\\) deep; basic_cnn takes"):  # before any data is read
        run_config.make_config("basic_cnn", folder, kwargs={"deep": 1})
    command = run_config.train_command(config, tmp_path / "run")
    assert command.endswith("--model-kwargs 'widths=[8,8]'")  # the recipe's whiten=True is not repeated
    words = shlex.split(command)
    assert dict(model_kwarg(w) for w in words[words.index("--model-kwargs") + 1 :]) == {"widths": [8, 8]}


def test_resuming_with_other_model_kwargs_is_refused(tmp_path):
    folder = str(write_cifar10(tmp_path / "cifar", n_per_class=6))
    config = run_config.make_config("basic_cnn", folder, epochs=1, batch_size=16, amp="fp32", kwargs={"widths": [8, 8]})
    out = tmp_path / "run"
    runs.train_run(out, config, verbose=0, log=lambda _: None)
    again = run_config.resume_config(out, "basic_cnn", folder, epochs=2, kwargs={"widths": [8, 8]})
    assert again.kwargs == config.kwargs  # the same options given again change nothing
    other = run_config.resume_config(out, "basic_cnn", folder, epochs=2, kwargs={"widths": [8, 16]})
    with pytest.raises(ValueError, match="kwargs"):
        runs.train_run(out, other, resume=True, verbose=0, log=lambda _: None)


def test_a_run_json_written_by_0_1_is_still_read_and_keeps_its_recipes_averaging(tmp_path):
    old = {"model": "basic_cnn", "data": str(tmp_path), "epochs": 3, "augment": "standard", "amp": "auto"}
    old |= {"limit": 40, "seed": 1, "batch_size": 1024, "lr": 1.5, "kwargs": {"whiten": True}, "translate": 2}
    old |= {"fit_options": {"label_smoothing": 0.2, "schedule": "linear"}, "recipe": "basic_cnn.airbench"}
    record = {"format": "imgzoo-run-v1", "config": old, "done_before": 0, "finished": True}
    (tmp_path / "run.json").write_text(json.dumps(record))
    config = run_config.read_run(tmp_path).config
    assert (config.limit, config.kwargs, config.fit.seed, config.fit.translate) == (40, {"whiten": True}, 1, 2)
    assert config.fit.schedule == "linear" and config.fit.lookahead_decay == pytest.approx(0.95**5)
    run_config.RunRecord(config).write(tmp_path)  # written again, it reads back the same
    assert run_config.read_run(tmp_path).config == config


def test_the_train_flags_are_fitconfigs_fields_each_checked_by_it(tmp_path, capsys):
    from imgzoo.cli.main import build_parser
    from imgzoo.cli.train import FLAG_HELP

    assert list(FLAG_HELP) == run_config.run_options()  # one help line per fit option a run takes
    parse = build_parser().parse_args
    args = parse(["train", "mnist_cnn", "d", "--out", "o", "--ema-decay", "0.99", "--schedule", "cosine"])
    assert (args.ema_decay, args.schedule, args.label_smoothing) == (0.99, "cosine", None)
    with pytest.raises(SystemExit):
        parse(["train", "mnist_cnn", "d", "--out", "o", "--ema-decay", "1.5"])
    assert "ema_decay must be in (0, 1) or None, got 1.5" in capsys.readouterr().err
    folder = str(write_mnist(tmp_path, n_per_class=2))
    config = run_config.make_config("mnist_cnn", folder, ema_decay=args.ema_decay, schedule=args.schedule)
    command = run_config.train_command(config, tmp_path / "o")
    assert command.endswith("--schedule cosine --ema-decay 0.99")  # what differs from the recipe, in field order
    assert parse(shlex.split(command)[1:]).ema_decay == 0.99


def test_val_0_is_a_final_fit_on_every_image_recorded_and_refused_a_validation_split(tmp_path, capsys):
    from imgzoo.cli.main import main

    folder = str(write_mnist(tmp_path / "mnist", n_per_class=3))
    out = tmp_path / "final"
    flags = ["--epochs", "1", "--amp", "fp32", "--batch-size", "8"]
    assert main(["train", "mnist_cnn", folder, "--out", str(out), "--val", "0", *flags]) == 0
    printed = capsys.readouterr().out
    assert "trained on every image" in printed
    record = run_config.read_run(out)
    assert record.config.val_fraction == 0 and "--val 0" in run_config.train_command(record.config, out)
    assert json.loads((out / "weights" / "config.json").read_text())["recipe"]["val_fraction"] == 0
    assert "nothing was held out" in (out / "weights" / "README.md").read_text()  # the card says so, not "no metrics"
    assert not (out / "metrics.json").exists()  # nothing held out: no figure that would be measured on training images
    history = json.loads((out / "history.json").read_text())
    assert history["epoch"] == [1] and len(history["train_loss"]) == 1
    train, val = runs.split_data(runs.open_data(folder), seed=0, val_fraction=0)
    assert val is None and len(train) == 30  # 10 classes x 3 images, every one of them
    assert main(["evaluate", str(out), folder]) == 2  # refused: the run has no validation split
    assert "trained on every image" in capsys.readouterr().err
    with pytest.raises(ValueError, match="val_fraction must be a number from 0"):
        run_config.make_config("mnist_cnn", folder, val_fraction=1.0)
    # The same folder resumed keeps its fraction; the run refuses another one.
    with pytest.raises(ValueError, match="val_fraction 0"):
        run_config.plan_run(out, run_config.make_config("mnist_cnn", folder, epochs=2, amp="fp32", batch_size=8), True)


def test_a_choice_spelt_like_a_word_stays_that_choice():
    from imgzoo.cli.train import _fit_value

    assert _fit_value("augment")("none") == "none"  # --augment none: no augmentation, not the recipe's
    assert _fit_value("ema_decay")("none") is None  # elsewhere "none" is Python's None
