"""What a run leaves in its folder (weights, history, figures, metrics), and how a finished run's are read back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from imgzoo._atomic import atomic_write_text
from imgzoo._device import describe_machine
from imgzoo.eval.evaluation import evaluate, json_safe, plot_predictions
from imgzoo.eval.history import History
from imgzoo.hub.api import save
from imgzoo.hub.card import metrics_from_eval
from imgzoo.study.config import WEIGHTS


def write_outputs(model: nn.Module, val: Any, shown: Any, history: History, out: Path, recipe: dict, *,
                  tta: bool = True, log: Callable[[str], None] = print, progress: bool = False) -> dict:  # fmt: skip
    """Evaluate on ``val`` (and with the recipe's ``tta``) and write every output into ``out``, saying what each slow
    step does, with ``progress`` bars over the passes (one fp32 pass over 5,000 images took basic_cnn 14 s on a busy
    2-core Xeon, its flip+shift TTA 77 s); ``val`` None (a final fit): the weights, history and curves only."""
    if val is not None:
        log("measuring the final weights on the validation split (fp32)")
    result = evaluate(model, val, progress=progress) if val is not None else None
    mode = recipe.get("tta") if tta and val is not None else None
    if mode:
        log(f"measuring again with the recipe's test-time augmentation ({mode}; skip it with --no-tta)")
    tta_result = evaluate(model, val, tta=mode, progress=progress) if mode else None
    metrics = metrics_from_eval(result, tta_result) if result is not None else {}
    log(f"writing the weights, history and figures into {out}")
    # A folder of their own: save() replaces its folder whole, and the run folder holds checkpoints and reports.
    save(model, out / WEIGHTS, history, recipe={**recipe, "machine": describe_machine()}, metrics=metrics)
    history.to_csv(out / "history.csv")
    history.to_json(out / "history.json")
    history.plot(out / "curves.png")
    if result is None:
        return metrics
    plot_predictions(model, shown, n=len(shown), path=out / "samples.png")
    result.plot_confusion_matrix(out / "confusion.png")
    atomic_write_text(out / "metrics.json", json.dumps(json_safe(result.to_dict()), indent=1) + "\n")
    return metrics


def joined(out: Path, done_before: int, history: History) -> History:
    """Earlier trainings' epochs (from OUT/history.json) followed by this one's (fit numbers them on from them)."""
    rows = History.from_json(out / "history.json").to_dict() if done_before else History().to_dict()
    keep = [i for i, epoch in enumerate(rows["epoch"]) if epoch <= done_before]
    return History.from_dict({name: [old[i] for i in keep] + getattr(history, name) for name, old in rows.items()})


def read_outputs(out: Path) -> tuple[History, dict[str, float]]:
    """The history and metrics a finished run wrote (none for a final fit, which has no validation)."""
    history, path = History.from_json(out / "history.json"), out / "metrics.json"
    if not path.is_file():
        return history, {}
    summary = json.loads(path.read_text())
    return history, {"val_acc": summary["top1"], "val_loss": summary["loss"], "val_top5": summary["top5"]}
