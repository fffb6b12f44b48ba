"""The model card states top-1 and top-5 with and without TTA, parameters and MACs, time, speed, machine, recipe."""

from __future__ import annotations

import json

import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from torch import nn
from torch.utils.data import TensorDataset

import imgzoo
from imgzoo._device import describe_machine
from imgzoo.eval.evaluation import evaluate
from imgzoo.hub import card as model_card
from imgzoo.train.recipes import get_recipe


def test_count_macs_is_half_the_flops_of_one_image():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 32 * 32, 10)).train()
    conv, linear = 8 * 3 * 3 * 3 * 32 * 32, 8 * 32 * 32 * 10
    assert model_card.count_macs(model, (3, 32, 32)) == conv + linear
    assert model.training  # the count borrowed eval mode and gave it back
    assert model_card.count_macs(model) is None  # no DataSpec, no shape given


def test_metrics_from_history_add_wall_time_and_speed():
    history = {"epoch": [1, 2], "time": [10.0, 12.5], "images_per_sec": [400.0, 500.0], "val_acc": [0.5, 0.6]}
    metrics = model_card.metrics_from_history(history)
    assert (metrics["train_seconds"], metrics["images_per_sec"], metrics["best_val_acc"]) == (22.5, 450.0, 0.6)


def _evaluated(model):
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(20, 3, 32, 32, generator=g), torch.randint(0, 10, (20,), generator=g))
    return evaluate(model, data, device="cpu"), evaluate(model, data, tta="flip", device="cpu")


def test_the_card_states_every_figure_it_is_given(tmp_path):
    torch.manual_seed(0)
    model = imgzoo.create_model("resnet_cifar", depth=8).eval()
    plain, tta = _evaluated(model)
    machine = describe_machine(torch.device("cpu"))
    command = "python examples/train.py resnet_cifar data --epochs 3"
    recipe = {**get_recipe("resnet_cifar").to_meta(), "command": command, "machine": machine}
    history = {
        "epoch": [1, 2],
        "train_loss": [2.0, 1.5],
        "train_acc": [0.2, 0.3],
        "val_loss": [2.1, 1.9],
        "val_acc": [0.1, 0.2],
        "lr": [0.1, 0.05],
        "time": [30.0, 30.0],
        "images_per_sec": [300.0, 310.0],
    }
    imgzoo.save(
        model,
        tmp_path,
        imgzoo.History.from_dict(history),
        metrics=model_card.metrics_from_eval(plain, tta),
        recipe=recipe,
    )
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["macs"] == model_card.count_macs(model) > 0
    card = ModelCard.load(tmp_path / "README.md")
    text = card.text
    assert f"| accuracy | 30.00% | {100 * plain.top1:.2f}% |  |" in text  # train from the History
    assert f"| top-5 accuracy |  | {100 * plain.top5:.2f}% |  |" in text
    assert "The train column is what fit records: a running mean over the last epoch's augmented batches" in text
    assert f"| accuracy with TTA (flip) |  | {100 * tta.top1:.2f}% |  |" in text
    assert f"| parameters | {config['num_params']:,} |" in text
    assert f"| multiply-accumulates per image | {config['macs'] / 1e6:,.1f}M |" in text
    assert "| training wall time | 1.0 min (60 s) |" in text
    assert "| training images per second | 305 |" in text
    assert f"cpu {machine['cpu']}" in text
    assert f"```bash\n{command}\n```" in text
    given = get_recipe("resnet_cifar")
    assert f"| label_smoothing | {given.config.label_smoothing} |" in text and f"| tta | {given.tta} |" in text
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    named = {r.metric_name: r.metric_value for r in results}
    assert named["validation top-5 accuracy"] == round(plain.top5, 6)
    assert named["validation accuracy (TTA flip)"] == round(tta.top1, 6)
    assert named["validation accuracy"] == round(plain.top1, 6)


def test_a_card_without_train_figures_says_nothing_of_them(tmp_path):
    model = imgzoo.create_model("resnet_cifar", depth=8).eval()
    plain, _ = _evaluated(model)
    imgzoo.save(model, tmp_path, metrics=model_card.metrics_from_eval(plain))
    text = (tmp_path / "README.md").read_text()
    assert f"| accuracy |  | {100 * plain.top1:.2f}% |  |" in text
    assert "The train column" not in text


def test_a_final_fit_shipped_with_its_validation_runs_figures_says_whose_they_are(tmp_path):
    model = imgzoo.create_model("resnet_cifar", depth=8).eval()
    whose = "the figures are the validation run's (10% held out); these weights were refit on every image"
    recipe = {"epochs": 2, "val_fraction": 0.0, "validation": whose}
    imgzoo.save(model, tmp_path / "shipped", metrics={"val_acc": 0.5}, recipe=recipe)
    text = (tmp_path / "shipped" / "README.md").read_text()
    assert f"The validation column: {whose} (a final fit, `--val 0`)." in text
    assert "nothing was held out" not in text
    imgzoo.save(model, tmp_path / "refit", recipe={"epochs": 2, "val_fraction": 0.0})  # no validation run named
    assert "nothing was held out to measure it on" in (tmp_path / "refit" / "README.md").read_text()
