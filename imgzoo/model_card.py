"""The README.md model card of a checkpoint: YAML metadata for the Hub, then Markdown for people.

The metadata carries ``library_name: imgzoo``, tags, datasets, the license and the
metrics as a ``model-index`` (the Hub's format for evaluation results). The results
section sits between two HTML comments so that every push regenerates it while
keeping whatever the author wrote around it: timm and huggingface_hub's mixin skip
the card when one exists, so metrics from later training runs never reach it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import yaml

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
    """(metadata, body) of a Markdown file that may start with a ``---`` YAML block."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            meta = yaml.safe_load(text[4:end]) or {}
            if isinstance(meta, dict):
                return meta, text[end + 4 :].lstrip("\n")
    return {}, text


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
    section and its metadata keys that imgzoo does not set are kept.
    """
    meta = _metadata(config, repo_id=repo_id, license=license, tags=tags, datasets=datasets)
    section = _results_section(config, curves)
    if existing is None:
        body = _fresh_body(config, repo_id, section)
    else:
        old_meta, old_body = split_front_matter(existing)
        meta = {**old_meta, **meta, "tags": _unique([*(old_meta.get("tags") or []), *meta["tags"]])}
        start, end = old_body.find(START), old_body.find(END)
        if 0 <= start < end:
            body = old_body[:start] + section + old_body[end + len(END) :]
        else:
            body = old_body.rstrip() + "\n\n" + section + "\n"
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{front}---\n\n{body}"


def _metadata(
    config: dict[str, Any],
    *,
    repo_id: str | None,
    license: str,
    tags: Iterable[str],
    datasets: Iterable[str] | None,
) -> dict[str, Any]:
    arch = config["architecture"]
    spec_name = config["data_spec"]["name"]
    if datasets is None:
        datasets = [HUB_DATASETS.get(spec_name, spec_name)]
    meta: dict[str, Any] = {
        "library_name": "imgzoo",
        "license": license,
        "pipeline_tag": "image-classification",
        "tags": _unique(["imgzoo", "image-classification", "pytorch", "safetensors", arch, *tags]),
        "datasets": list(datasets),
    }
    results = _model_index_metrics(config.get("metrics") or {})
    if results:
        dataset_id = meta["datasets"][0] if meta["datasets"] else spec_name
        meta["model-index"] = [
            {
                "name": repo_id.split("/")[-1] if repo_id else arch,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image Classification"},
                        "dataset": {"name": spec_name, "type": dataset_id, "split": split},
                        "metrics": metrics,
                    }
                    for split, metrics in results
                ],
            }
        ]
    return meta


def _model_index_metrics(metrics: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Evaluation results per split (validation and test; training numbers are not results)."""
    out = []
    for prefix, split in _SPLITS[1:]:
        rows = []
        for kind, label in (("acc", "accuracy"), ("loss", "loss")):
            value = metrics.get(f"{prefix}_{kind}")
            if _is_number(value):
                rows.append({"type": label, "value": round(float(value), 6), "name": f"{split} {label}"})
        if rows:
            out.append((split, rows))
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
        f'model = imgzoo.load("{source}")  # eval mode, class names and preprocessing attached\n'
        "x = model.eval_transform(image).unsqueeze(0)  # a PIL image, array or uint8 tensor\n"
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
