"""The README.md model card: ModelCardData and EvalResult (the model-index) as YAML, then Markdown whose results
section, between two HTML comments, a push regenerates, keeping the author's text (timm skips an existing card)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from imgzoo.eval.evaluation import _borrowed
from imgzoo.models.registry import CIFAR10, MNIST

# huggingface_hub and yaml are imported where a card is built or read: half a second of every `import imgzoo`.
if TYPE_CHECKING:
    from huggingface_hub import ModelCard, ModelCardData

START = "<!-- imgzoo:results:start -->"
END = "<!-- imgzoo:results:end -->"
CURVES_NAME = "curves.png"

# Hub data set ids of the data sets imgzoo's specs are named after, and their classes in order.
HUB_DATASETS = {"cifar10": "uoft-cs/cifar10", "mnist": "ylecun/mnist"}
_CLASSES = {spec.name: list(spec.class_names or ()) for spec in (CIFAR10, MNIST)}
_SPLITS = (("train", "train"), ("val", "validation"), ("test", "test"))


def metrics_from_history(history: dict[str, list[Any]]) -> dict[str, Any]:
    """The last epoch's losses and accuracies, best val accuracy, wall time and speed of ``History.to_dict()``."""
    columns = ("train_loss", "train_acc", "val_loss", "val_acc", "time", "images_per_sec")
    numbers = {key: [float(v) for v in history.get(key) or [] if _is_number(v)] for key in columns}
    metrics: dict[str, Any] = {"epochs": int(history["epoch"][-1])} if history.get("epoch") else {}
    metrics |= {key: numbers[key][-1] for key in columns[:4] if numbers[key]}
    if numbers["val_acc"]:
        metrics["best_val_acc"] = max(numbers["val_acc"])
    if numbers["time"]:  # the epochs' wall time, validation included
        metrics["train_seconds"] = round(sum(numbers["time"]), 1)
    if numbers["images_per_sec"]:  # training throughput, the mean of the epochs'
        metrics["images_per_sec"] = round(sum(numbers["images_per_sec"]) / len(numbers["images_per_sec"]), 1)
    return metrics


def metrics_from_eval(result: Any, tta_result: Any = None, *, split: str = "val") -> dict[str, Any]:
    """The card's metrics from :func:`imgzoo.evaluate`'s results without and with (``tta_result``) TTA."""
    if split not in ("val", "test"):
        raise ValueError(f"metrics_from_eval: split must be 'val' or 'test', got {split!r}")
    metrics = {f"{split}_loss": result.loss, f"{split}_acc": result.top1, f"{split}_top5": result.top5}
    if tta_result is not None:
        metrics |= {f"{split}_acc_tta": tta_result.top1, f"{split}_top5_tta": tta_result.top5, "tta": tta_result.tta}
    return metrics


def count_macs(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> int | None:
    """MACs for one image of ``input_shape`` (default: the DataSpec's) in eval mode; None if unknown or refused."""
    from torch.utils.flop_counter import FlopCounterMode  # it imports sympy: half a second of `import imgzoo`

    spec = getattr(model, "data_spec", None)
    input_shape = input_shape or (spec.input_shape if spec is not None else None)
    if input_shape is None:
        return None
    first = next(model.parameters(), None)
    device, dtype = (first.device, first.dtype) if first is not None else (torch.device("cpu"), torch.float32)
    x = torch.zeros(1, *input_shape, device=device, dtype=dtype if dtype.is_floating_point else torch.float32)
    try:
        with _borrowed(model, device), FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    except (RuntimeError, ValueError, TypeError):  # the count is a note: such a model still saves
        return None
    return counter.get_total_flops() // 2  # FlopCounterMode counts a multiply-add as two


def render(config: dict[str, Any], *, repo_id: str | None = None, curves: str | None = None, license: str = "mit",
           tags: Iterable[str] = (), datasets: Iterable[str] | None = None,
           existing: str | None = None) -> str:  # fmt: skip
    """The card for ``config``; of an ``existing`` one, text outside the results and others' metadata are kept."""
    from huggingface_hub import ModelCard

    data = _metadata(config, repo_id, license, tags, datasets)
    section = _results_section(config, curves)
    if existing is None or not existing.strip():
        return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_fresh_body(config, repo_id, section)}"))
    card, body = _merge_into(existing, data)
    start, end = body.find(START), body.find(END)
    if 0 <= start < end:
        body = body[:start] + section + body[end + len(END) :]
    else:
        body = body.rstrip() + "\n\n" + section + "\n"
    card.text = "\n" + body
    return str(card)


def _merge_into(existing: str, data: ModelCardData) -> tuple[ModelCard, str]:
    """The existing card with imgzoo's metadata keys set from ``data`` (tags merged), and its body."""
    import yaml
    from huggingface_hub import ModelCard

    if not existing.startswith("---"):
        return ModelCard(f"---\n{data.to_yaml()}\n---\n"), existing
    try:
        card = ModelCard(existing, ignore_metadata_errors=True)
    except (yaml.YAMLError, ValueError) as exc:
        raise ValueError(
            f"the existing model card's metadata (the YAML between the --- lines at its top) cannot be read "
            f"({exc}); fix or remove it, then save or push again"
        ) from exc
    old_tags = list(card.data.get("tags") or [])
    for key, value in vars(data).items():
        if value is not None:
            card.data[key] = value
    card.data.tags = list(dict.fromkeys([*old_tags, *data.tags]))
    return card, card.text.lstrip("\n")


def _metadata(config: dict[str, Any], repo_id: str | None, license: str, tags, datasets) -> ModelCardData:
    """The YAML: validation and test figures become the model-index (training numbers are not results)."""
    from huggingface_hub import EvalResult, ModelCardData

    arch, metrics = config["architecture"], config.get("metrics") or {}
    spec_name, hub_id = trained_on(config)
    datasets = list(datasets) if datasets is not None else [hub_id] if hub_id else None
    tta = f" (TTA {metrics['tta']})" if isinstance(metrics.get("tta"), str) else " (TTA)"
    results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=datasets[0] if datasets else "imagefolder",
            dataset_name=spec_name,
            dataset_split=split,
            metric_type=metric,
            metric_value=round(float(value), 6),
            metric_name=f"{split} {label.replace(' with TTA', '')}" + (tta if suffix.endswith("tta") else ""),
        )
        for prefix, split in _SPLITS[1:]
        for suffix, metric, label in _MEASURES
        if _is_number(value := metrics.get(f"{prefix}_{suffix}"))
    ]  # fmt: skip
    tags = list(dict.fromkeys(["imgzoo", "image-classification", "pytorch", "safetensors", arch, *tags]))
    name = (repo_id.split("/")[-1] if repo_id else arch) if results else None
    return ModelCardData(library_name="imgzoo", license=license, pipeline_tag="image-classification", tags=tags,
                         datasets=datasets, model_name=name, eval_results=results or None)  # fmt: skip


# The card's measured figures: (metrics key suffix, model-index metric type, the table's label).
_MEASURES = (("acc", "accuracy", "accuracy"), ("top5", "top_5_accuracy", "top-5 accuracy"),
             ("acc_tta", "accuracy", "accuracy with TTA"), ("top5_tta", "top_5_accuracy", "top-5 accuracy with TTA"),
             ("loss", "loss", "loss"))  # fmt: skip


def trained_on(config: dict[str, Any]) -> tuple[str, str | None]:
    """The data the weights learnt, in words, and its Hub data set id only where it is that data set: the spec's
    own classes in their order (resnet_cifar fitted on a 3-class folder has CIFAR-10's spec, not its data)."""
    spec, data = config["data_spec"], (config.get("recipe") or {}).get("data")
    names = list(config.get("class_names") or spec.get("class_names") or [])
    if names == _CLASSES.get(spec["name"]):
        return spec["name"], HUB_DATASETS[spec["name"]]
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    where = f"{PurePath(str(data)).name} " if data else ""  # a run's folder (imgzoo train records it)
    return f"{where}({len(names) or spec['num_classes']} classes{': ' + shown if shown else ''})", None


def _fresh_body(config: dict[str, Any], repo_id: str | None, section: str) -> str:
    arch, spec = config["architecture"], config["data_spec"]
    c, (h, w) = spec["channels"], spec["size"]
    source = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    kwargs = ", ".join(f"{k}={v!r}" for k, v in config["kwargs"].items())
    return (
        f"# {arch} for {trained_on(config)[0]}\n\n"
        f"An [imgzoo](https://pypi.org/project/imgzoo/) `{arch}({kwargs})` model: "
        f"{config.get('num_params', 0) / 1e6:.2f}M parameters, {c}x{h}x{w} input, "
        f"{config.get('num_classes', spec['num_classes'])} classes. Weights are in safetensors.\n\n"
        "## Use\n\n```python\nimport imgzoo\n\n"
        f'model = imgzoo.load("{source}")  # eval mode, with its class names and preprocessing\n'
        "preprocess = imgzoo.data.transforms.for_model(model)\n"
        "x = preprocess(image).unsqueeze(0)  # a PIL image, array or uint8 tensor\n"
        "label = model.data_spec.class_names[model(x).argmax(1).item()]\n"
        f"```\n\n{section}\n\n## Input\n\n"
        "| size | mean | std | classes |\n|---|---|---|---|\n"
        f"| {c}x{h}x{w} | ({', '.join(f'{v:.4f}' for v in spec['mean'])}) | "
        f"({', '.join(f'{v:.4f}' for v in spec['std'])}) | "
        f"{', '.join(config.get('class_names') or []) or spec['num_classes']} |\n"
    )


_TRAIN_COLUMN = (
    "The train column is what fit records: a running mean over the last epoch's augmented batches, in training "
    "mode (batch statistics, any dropout, and any label smoothing in the loss). `imgzoo evaluate ... --split "
    "train` measures the training split the way the validation column is measured."
)


def _results_section(config: dict[str, Any], curves: str | None) -> str:
    metrics = dict(config.get("metrics") or {})
    lines = [START, "## Results", ""]
    from_fit = any(_is_number(metrics.get(key)) for key in ("train_acc", "train_loss"))  # before the table takes them
    table = _results_table(metrics)
    if table:
        lines += ["| | train | validation | test |", "|---|---|---|---|", *table, ""]
        if from_fit:
            lines += [_TRAIN_COLUMN, ""]
    cost = _cost_lines(config, metrics)
    if metrics:
        lines += [f"- {k}: {_percent(v) if k.endswith('_acc') and _is_number(v) else v}" for k, v in metrics.items()]
        lines.append("")
    recipe = config.get("recipe") or {}
    if recipe.get("val_fraction") == 0 and recipe.get("validation"):  # shipped with its validation run's figures
        lines += [f"The validation column: {recipe['validation']} (a final fit, `--val 0`).", ""]
    elif recipe.get("val_fraction") == 0:
        lines += ["Trained on every image (a final fit, `--val 0`): nothing was held out to measure it on.", ""]
    elif not table and not metrics:
        lines += ["No metrics were recorded with these weights.", ""]
    if curves:
        lines += [f"![accuracy and loss per epoch]({curves})", ""]
    return "\n".join([*lines, *cost, *_recipe_lines(dict(recipe)), END])


def _results_table(metrics: dict[str, Any]) -> list[str]:
    """One row per measured figure with a value for some split; the figures shown are taken out of ``metrics``."""
    tta = f" ({metrics.pop('tta')})" if isinstance(metrics.get("tta"), str) else ""
    rows = []
    for suffix, _, label in _MEASURES:
        cells = [metrics.pop(f"{prefix}_{suffix}", None) for prefix, _ in _SPLITS]
        if any(_is_number(v) for v in cells):
            fmt = "{:.4f}".format if suffix == "loss" else _percent
            label = label + tta if suffix.endswith("tta") else label
            rows.append(f"| {label} | " + " | ".join(fmt(v) if _is_number(v) else "" for v in cells) + " |")
    return rows


def _cost_lines(config: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """Parameters, MACs, training time and speed, and the machine, where recorded."""
    params, macs = config.get("num_params"), config.get("macs")
    seconds, speed = metrics.pop("train_seconds", None), metrics.pop("images_per_sec", None)
    machine = (config.get("recipe") or {}).get("machine")
    cells = {
        "parameters": f"{params:,}" if _is_number(params) else None,
        "multiply-accumulates per image": f"{macs / 1e6:,.1f}M" if _is_number(macs) else None,
        "training wall time": f"{seconds / 60:.1f} min ({seconds:,.0f} s)" if _is_number(seconds) else None,
        "training images per second": f"{speed:,.0f}" if _is_number(speed) else None,
        "machine": ", ".join(f"{k} {v}" for k, v in machine.items()) if isinstance(machine, dict) else machine,
    }
    rows = [f"| {label} | {value} |" for label, value in cells.items() if value]
    return ["### Cost", "", "| | |", "|---|---|", *rows, ""] if rows else []


def _recipe_lines(recipe: dict[str, Any]) -> list[str]:
    """The recipe as a table, and the command that ran it as a code block."""
    command = recipe.pop("command", None)
    recipe.pop("machine", None)  # in the cost table
    rows = [f"| {k} | {v} |" for k, v in recipe.items()]
    lines = ["### Training recipe", "", "| setting | value |", "|---|---|", *rows, ""] if rows else []
    return lines + (["Trained with:", "", "```bash", str(command), "```", ""] if command else [])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"
