"""The README.md model card of a checkpoint: YAML metadata for the Hub, then Markdown for people.

The card is a huggingface_hub ``ModelCard``: its metadata is a ``ModelCardData`` with
``library_name: imgzoo``, tags, datasets, the license and the metrics as ``EvalResult``
objects, which huggingface_hub turns into the ``model-index`` the Hub reads, so imgzoo
writes no YAML of its own. The results section sits between two HTML comments so that
every push regenerates it while keeping whatever the author wrote around it: timm and
huggingface_hub's mixin skip the card when one exists, so metrics from later training
runs never reach it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = ["CURVES_NAME", "END", "START", "metrics_from_history", "render", "split_front_matter"]

START = "<!-- imgzoo:results:start -->"
END = "<!-- imgzoo:results:end -->"
CURVES_NAME = "curves.png"

# Hub data set ids of the data sets imgzoo's specs are named after.
HUB_DATASETS = {"cifar10": "uoft-cs/cifar10", "mnist": "ylecun/mnist"}
_SPLITS = (("train", "train"), ("val", "validation"), ("test", "test"))


def metrics_from_history(history: dict[str, list[Any]]) -> dict[str, Any]:
    """The last epoch's losses and accuracies, the epoch count and the best validation accuracy.

    ``history`` is ``History.to_dict()``: equal-length lists, accuracies as fractions,
    ``None`` where an epoch had no validation set.
    """
    metrics: dict[str, Any] = {}
    epochs = history.get("epoch") or []
    if epochs:
        metrics["epochs"] = int(epochs[-1])
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        values = [v for v in history.get(key) or [] if _is_number(v)]
        if values:
            metrics[key] = float(values[-1])
    val_acc = [v for v in history.get("val_acc") or [] if _is_number(v)]
    if val_acc:
        metrics["best_val_acc"] = float(max(val_acc))
    return metrics


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(metadata, body) of a Markdown file that may start with a ``---`` YAML block, as the Hub parses it."""
    if not text.startswith("---"):
        return {}, text
    card = _parse(text)
    return card.data.to_dict(), card.text.lstrip("\n")


def _parse(text: str) -> ModelCard:
    """``ModelCard(text)``, with a YAML error as a ValueError that says where the bad metadata is."""
    try:
        return ModelCard(text, ignore_metadata_errors=True)
    except (yaml.YAMLError, ValueError) as exc:
        raise ValueError(
            f"the existing model card's metadata (the YAML between the --- lines at its top) cannot be read "
            f"({exc}); fix or remove it, then save or push again"
        ) from exc


def render(
    config: dict[str, Any],
    *,
    repo_id: str | None = None,
    curves: str | None = None,
    license: str = "mit",
    tags: Iterable[str] = (),
    datasets: Iterable[str] | None = None,
    existing: str | None = None,
) -> str:
    """The model card for ``config`` (see :func:`imgzoo.checkpoint_format.build_config`).

    ``curves`` is the file name of the accuracy and loss plot beside the card, if any.
    ``existing`` is the current card of the repository: its text outside the results
    section and its metadata keys that imgzoo does not set are kept, in their order.
    """
    data = _metadata(config, repo_id=repo_id, license=license, tags=tags, datasets=datasets)
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
    if not existing.startswith("---"):
        return ModelCard(f"---\n{data.to_yaml()}\n---\n"), existing
    card = _parse(existing)
    old_tags = list(card.data.get("tags") or [])
    for key, value in vars(data).items():
        if value is not None:
            card.data[key] = value
    card.data.tags = _unique([*old_tags, *data.tags])
    return card, card.text.lstrip("\n")


def _metadata(
    config: dict[str, Any],
    *,
    repo_id: str | None,
    license: str,
    tags: Iterable[str],
    datasets: Iterable[str] | None,
) -> ModelCardData:
    arch = config["architecture"]
    spec_name = config["data_spec"]["name"]
    datasets = list(datasets) if datasets is not None else [HUB_DATASETS.get(spec_name, spec_name)]
    dataset_id = datasets[0] if datasets else spec_name
    results = [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset_id,
            dataset_name=spec_name,
            dataset_split=split,
            metric_type=metric,
            metric_value=value,
            metric_name=f"{split} {metric}",
        )
        for split, metric, value in _eval_metrics(config.get("metrics") or {})
    ]
    return ModelCardData(
        library_name="imgzoo",
        license=license,
        pipeline_tag="image-classification",
        tags=_unique(["imgzoo", "image-classification", "pytorch", "safetensors", arch, *tags]),
        datasets=datasets,
        model_name=(repo_id.split("/")[-1] if repo_id else arch) if results else None,
        eval_results=results or None,
    )


def _eval_metrics(metrics: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(split, metric, value) for validation and test; training numbers are not results."""
    out = []
    for prefix, split in _SPLITS[1:]:
        for kind, label in (("acc", "accuracy"), ("loss", "loss")):
            value = metrics.get(f"{prefix}_{kind}")
            if _is_number(value):
                out.append((split, label, round(float(value), 6)))
    return out


def _fresh_body(config: dict[str, Any], repo_id: str | None, section: str) -> str:
    arch, spec = config["architecture"], config["data_spec"]
    c, (h, w) = spec["channels"], spec["size"]
    source = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    kwargs = ", ".join(f"{k}={v!r}" for k, v in config["kwargs"].items())
    return (
        f"# {arch} for {spec['name']}\n\n"
        f"An [imgzoo](https://pypi.org/project/imgzoo/) `{arch}({kwargs})` model: "
        f"{config.get('num_params', 0) / 1e6:.2f}M parameters, {c}x{h}x{w} input, "
        f"{config.get('num_classes', spec['num_classes'])} classes. Weights are in safetensors.\n\n"
        "## Use\n\n"
        "```python\n"
        "import imgzoo\n\n"
        f'model = imgzoo.load("{source}")  # eval mode, with its class names and preprocessing\n'
        "preprocess = imgzoo.transforms.for_model(model)\n"
        "x = preprocess(image).unsqueeze(0)  # a PIL image, array or uint8 tensor\n"
        "label = model.data_spec.class_names[model(x).argmax(1).item()]\n"
        "```\n\n"
        f"{section}\n\n"
        "## Input\n\n"
        "| size | mean | std | classes |\n|---|---|---|---|\n"
        f"| {c}x{h}x{w} | {_floats(spec['mean'])} | {_floats(spec['std'])} | "
        f"{', '.join(config.get('class_names') or []) or spec['num_classes']} |\n"
    )


def _results_section(config: dict[str, Any], curves: str | None) -> str:
    metrics = dict(config.get("metrics") or {})
    lines = [START, "## Results", ""]
    table = []
    for kind, label, fmt in (("acc", "accuracy", _percent), ("loss", "loss", "{:.4f}".format)):
        cells = [metrics.pop(f"{prefix}_{kind}", None) for prefix, _ in _SPLITS]
        if any(_is_number(v) for v in cells):
            table.append(f"| {label} | " + " | ".join(fmt(v) if _is_number(v) else "" for v in cells) + " |")
    if table:
        lines += ["| | train | validation | test |", "|---|---|---|---|", *table, ""]
    if metrics:
        lines += [f"- {k}: {_percent(v) if k.endswith('_acc') and _is_number(v) else v}" for k, v in metrics.items()]
        lines.append("")
    if not table and not metrics:
        lines += ["No metrics were recorded with these weights.", ""]
    if curves:
        lines += [f"![accuracy and loss per epoch]({curves})", ""]
    recipe = config.get("recipe")
    if recipe:
        lines += ["### Training recipe", "", "| setting | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in recipe.items()]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _floats(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
