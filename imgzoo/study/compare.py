"""Train several models the same way and compare them (the notebooks' table and plot), by hand or from a study file."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, Dataset

import imgzoo.study.config as run_config
from imgzoo._atomic import atomic_write_text, check_output
from imgzoo.data.loaders import own_generator
from imgzoo.eval.evaluation import json_safe
from imgzoo.eval.history import History
from imgzoo.eval.plots import plot_histories
from imgzoo.study.run import RunResult, train_run
from imgzoo.train.fit import fit

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, published separately before 3.11
    import tomli as tomllib

__all__ = ["Comparison", "Study", "StudyReport", "compare", "load_study", "run_study"]


@dataclass
class Comparison:
    """Histories of several models trained the same way, with the notebooks' table and plot."""

    histories: dict[str, History] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """Final-epoch metrics per model, as the original notebooks reported them, with the epochs and timing."""
        rows = []
        for name, history in self.histories.items():
            last = history.last()
            speeds = [v for v in history.images_per_sec if v is not None and math.isfinite(v)]
            rows.append({"model": name, **{k: last[k] for k in ("train_acc", "val_acc", "train_loss", "val_loss")}})
            rows[-1] |= {"epochs": len(history), "wall_time": float(sum(history.time))}
            rows[-1]["images_per_sec"] = sum(speeds) / max(len(speeds), 1)
        return rows

    def to_markdown(self, *, timing: bool = False) -> str:
        """The notebooks' table; ``timing`` adds the epochs, the wall time and the training images/s."""
        header = ["Model", "Train accuracy", "Val accuracy", "Train loss", "Val loss"]
        header += ["Epochs", "Wall time", "Images/s"] if timing else []
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        specs = {"train_acc": ".2%", "val_acc": ".2%", "train_loss": ".4f", "val_loss": ".4f"}
        for r in self.rows():
            cells = [r["model"], *("n/a" if r[k] is None else format(r[k], spec) for k, spec in specs.items())]
            cells += [str(r["epochs"]), f"{r['wall_time']:.1f} s", f"{r['images_per_sec']:.0f}"] if timing else []
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def plot(self, path: str | os.PathLike[str] | None = None):
        """Accuracy and loss curves of every model on one figure (solid: train, dashed: val)."""
        return plot_histories(self.histories, path)


def compare(models: Mapping[str, nn.Module], train: Dataset | DataLoader | Mapping[str, Dataset | DataLoader],
            val: Dataset | DataLoader | None = None, *, epochs: int, **fit_options: Any) -> Comparison:  # fmt: skip
    """Train every model alike: same options, seed and batches (a shared loader rewound); or ``train`` by name."""
    if not models:
        raise ValueError("compare needs at least one model: compare({'name': model, ...}, train, val, epochs=...)")
    result = Comparison()
    loaders = list(train.values()) if isinstance(train, Mapping) else [train]
    generators = [g for g in map(own_generator, [*loaders, val]) if g is not None]  # a FastLoader's own
    start_states = [g.get_state() for g in generators]
    for name, model in models.items():
        for generator, state in zip(generators, start_states, strict=True):
            generator.set_state(state)
        options = dict(fit_options)
        if options.get("checkpoint_dir") is not None:  # one folder per model, never shared
            options["checkpoint_dir"] = Path(options["checkpoint_dir"]) / name
        if options.get("verbose", 1):
            print(f"== {name}")
        data = train[name] if isinstance(train, Mapping) else train
        result.histories[name] = fit(model, data, val, epochs=epochs, **options)
    return result


@dataclass
class Study:
    """A study file, read and checked: the data, and one RunConfig per run, by run name."""

    path: Path
    title: str
    data: str
    runs: dict[str, run_config.RunConfig]


# What a [[run]] table may set, and the top of a study file: its title and data, the runs, and run options as defaults.
RUN_KEYS = ["name", "model", "kwargs", "limit", *run_config.run_options()]
STUDY_KEYS = ["title", "data", "run", *RUN_KEYS[3:]]
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a folder name on every system


def load_study(
    path: str | os.PathLike[str], *, epochs: int | None = None, limit: int | None = None, data: str | None = None
) -> Study:
    """Read a study file and check every run before the first trains; ``epochs`` and ``limit`` replace every run's,
    ``data`` (a folder, relative to the working directory, or a known name) the file's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file {path} does not exist; examples/study.toml is one to start from")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    _refuse_unknown(table, STUDY_KEYS, str(path))
    given, data = data, table.get("data")
    if not isinstance(data, str) or not data:
        raise ValueError(f'{path}: data must name a folder (relative to the study file) or "cifar10"; got {data!r}')
    folder = path.parent / Path(data).expanduser()
    data = data if data in run_config.KNOWN_DATA and not folder.is_dir() else folder
    data = run_config.resolve_data(data if given is None else given)  # where the file's is a download, or elsewhere
    entries = table.get("run")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f'{path} has no runs: add one [[run]] table per run, each with model = "..."')
    shared = {k: v for k, v in table.items() if k not in ("title", "data", "run")}
    override = {k: v for k, v in (("epochs", epochs), ("limit", limit)) if v is not None}
    runs: dict[str, run_config.RunConfig] = {}
    for number, entry in enumerate(entries, 1):
        where = f"{path}, run {number}"
        _refuse_unknown(entry, RUN_KEYS, where)
        if "model" not in entry:
            raise ValueError(f'{where} names no model: add model = "resnet_cifar" (imgzoo models lists them)')
        name = str(entry.get("name", entry["model"]))
        if not _RUN_NAME.match(name) or name in runs:
            why = "is used by an earlier run" if name in runs else "must be letters, digits, '-', '_' or '.'"
            raise ValueError(f'{where}: the name {name!r} {why}; give each run its own name = "..."')
        options = {k: v for k, v in {**shared, **entry, **override}.items() if k not in ("name", "model")}
        if isinstance(options.get("kwargs"), dict):  # TOML has no null: a builder's None is written "none"
            options["kwargs"] = {k: None if v == "none" else v for k, v in options["kwargs"].items()}
        try:
            runs[name] = run_config.make_config(entry["model"], data, **options)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    return Study(path, str(table.get("title", path.stem)), data, runs)


def _refuse_unknown(table: Mapping[str, Any], known: list[str], where: str) -> None:
    if unknown := sorted(set(table) - set(known)):
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")


@dataclass
class StudyReport:
    """Every run's result and the comparison drawn from them."""

    study: Study
    results: dict[str, RunResult]
    comparison: Comparison

    def to_dict(self) -> dict[str, Any]:
        rows = {row.pop("model"): row for row in self.comparison.rows()}
        runs = [{"name": name, **{k: v for k, v in result.config.to_dict().items() if k != "data"}}
                | {"folder": f"runs/{name}", "samples": f"runs/{name}/samples.png", "finished": result.finished}
                | rows[name]
                | {"val_top5": result.metrics["val_top5"]}
                for name, result in self.results.items()]  # fmt: skip
        about = {"title": self.study.title, "study": str(self.study.path), "data": self.study.data}
        return json_safe({**about, "runs": runs})

    def to_markdown(self) -> str:
        lines = [f"# {self.study.title}", ""]
        shares = {f"{result.config.val_fraction:.0%}" for result in self.results.values()}
        split = f"the same seeded {shares.pop()} split" if len(shares) == 1 else "a seeded split"
        lines += [f"Study file `{self.study.path}`, data `{self.study.data}`; every run is validated on {split} of"]
        lines += ["the training images. Wall time counts training and validation.", ""]
        lines += [self.comparison.to_markdown(timing=True), "", "| Run | Model | Settings |", "|---|---|---|"]
        for name, result in self.results.items():
            config = result.config
            parts = [f"augment {config.augmentation()}", f"{config.fit.epochs} epochs"]
            parts += [f"limit {config.limit}"] if config.limit else []
            changed = run_config.recipe_differences(config)[0]  # what sets the run apart from its recipe
            shown = {**config.kwargs, **{k: v for k, v in changed.items() if k not in ("epochs", "augment")}}
            parts += [f"{k}={v}" for k, v in shown.items()]
            lines.append(f"| {name} | {config.model} | {', '.join(parts)} |")
        lines += ["", "![accuracy and loss of every run](curves.png)", "", "## Predicted samples", ""]
        for name in self.results:
            lines += [f"### {name}", "", f"![{name}: predicted validation samples](runs/{name}/samples.png)", ""]
        return "\n".join(lines)


def run_study(
    study: Study,
    out: str | os.PathLike[str],
    *,
    verbose: int = 1,
    log: Callable[[str], None] = print,
    tta: bool = True,
) -> StudyReport:
    """Train every run into ``out/runs/<name>`` (or resume, extend, reuse it); write report.md, .json, curves.png.
    ``tta=False`` skips each recipe's test-time augmentation at the end of its run."""
    out = check_output(out, folder_of="runs")  # a folder an earlier compare made, or a new or empty one
    results: dict[str, RunResult] = {}
    for name, config in study.runs.items():
        log(f"== {name}")
        folder = out / "runs" / name
        resume = run_config.read_run(folder) is not None
        try:
            results[name] = train_run(folder, config, resume=resume, verbose=verbose, log=log, tta=tta)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"run {name} stopped; run the same compare command again to go on") from None
    comparison = Comparison({name: result.history for name, result in results.items()})
    comparison.plot(out / "curves.png")
    report = StudyReport(study, results, comparison)
    atomic_write_text(out / "report.md", report.to_markdown())
    atomic_write_text(out / "report.json", json.dumps(report.to_dict(), indent=1) + "\n")
    return report
