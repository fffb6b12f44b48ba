"""Every benchmark in one command: a results file for this kind of machine, and the page that sets them side by side.

A run writes bench/results-KIND.json (results-quick-KIND.json with --quick, not kept in git) and renders the results
part of docs/benchmarks.md from every kind's file, a column each; the page says what each section measures and how.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

import imgzoo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_data  # noqa: E402
import bench_fit  # noqa: E402
import bench_memory  # noqa: E402
import bench_models  # noqa: E402
import bench_startup  # noqa: E402
import bench_time_to_accuracy  # noqa: E402
import common  # noqa: E402

PAGE = HERE.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- results: written by bench/run.py from bench/results-*.json -->", "<!-- end of results -->"
# fit against the minimal loop: median of this many interleaved runs of 8 s each (with 3, one run read 0.87
# where bench_fit alone, minutes later, read 1.05: each row swings 250-365 images/s on a shared 2-core CPU).
FIT_REPS = 5
GOALS = {
    "resnet_cifar training, channels_last, fp32": ">= 55% of peak",
    "resnet_cifar inference, channels_last, fp32": ">= 65% of peak",
    "resnet_cifar training bf16 / fp32, channels_last": ">= 1.5x where bf16 is native",
    "resnet_cifar / plain ResNet-20": ">= 0.98",
    "fit / minimal loop": ">= 0.90",
    "fit defaults (amp, layout 'auto') / fit fp32 NCHW": ">= 1.0",
    "loader / training": ">= 5",
    "mnist_cnn to 99% / example's first epoch": "<= 1.0",
    "resnet_cifar training peak RSS": "<= 2048 MB",
    "import imgzoo after torch, torchvision": "<= 300 ms",
    "load('mnist_cnn.mnist')": "<= 100 ms",
    "load a cached Hub entry": "<= 200 ms + file read",
}


def sections(args: argparse.Namespace, device: torch.device) -> dict:
    """Each section by name: a function measuring it on ``device`` and returning its part of the results."""
    quick = args.quick
    models = ["resnet_cifar"] if quick else imgzoo.list_models()
    images = (256 if quick else 1024) * (8 if device.type == "cuda" else 1)  # at a GPU's batch, 8 steps an epoch
    return {
        "models": lambda: speed(models, quick, device),
        "fit": lambda: {"fit": bench_fit.measure(images, 1 if quick else 2, 1 if quick else FIT_REPS, device)},
        "data": lambda: {"data": bench_data.measure(args.cifar10, 2 if quick else 10, device)},
        "memory": lambda: memory(models, quick, device),
        "races": lambda: races(args, device),
        "startup": lambda: {"startup": bench_startup.run(1 if quick else 5)},  # host only
    }


def speed(models: list[str], quick: bool, device: torch.device) -> dict:
    """Every model's rows against the peaks, and the memory bandwidth on either side of them."""
    bandwidth = bench_models.memory_bandwidth(device)
    window = 0.5 if quick or device.type == "cuda" else 2.0  # a GPU step takes milliseconds, a CPU's up to a second
    layouts = (True,) if quick else (False, True)  # channels_last only: the layout fit trains in on a CPU
    rows, found = bench_models.run([*models, "plain_resnet20"], 1 if quick else 3, window, ["fp32", "bf16"], device,
                                   layouts, 0 if quick else bench_models.GOAL_REPS)  # fmt: skip
    found["bandwidth"] = max(bandwidth, bench_models.memory_bandwidth(device))
    found["bandwidth_mib"] = bench_models.BANDWIDTH_MIB
    return {"models": {"peaks": found, "rows": [vars(r) for r in rows]}}


def memory(models: list[str], quick: bool, device: torch.device) -> dict:
    """Peak host RSS of each run; on a GPU, beside it, the peak CUDA memory allocated."""
    runs = [("baseline", "baseline", 0, "train")]
    modes = ("train",) if quick else ("train", "infer")  # --quick: the run the goal names (each is a fresh process)
    runs += [(f"{name} {mode}", name, 5 if quick else 30, mode) for name in models for mode in modes]
    found = {key: bench_memory.peak_mb(name, steps, mode, device) for key, name, steps, mode in runs}
    return {"memory_mb": {key: f["rss"] for key, f in found.items()}} | (
        {"cuda_memory_mb": {key: f["cuda"] for key, f in found.items()}} if device.type == "cuda" else {}
    )


def races(args: argparse.Namespace, device: torch.device) -> dict:
    """The MNIST race (not with --quick), and with --long the CIFAR-10 one."""
    found = {}
    if not args.quick and Path(args.mnist).exists():
        found["time_to_accuracy"] = bench_time_to_accuracy.compare_mnist(args.mnist, device)
    if args.long and args.cifar10:
        found["time_to_accuracy_cifar10"] = bench_time_to_accuracy.basic_cnn_race(args.cifar10, device)
    return found


def share(row: dict | None) -> str | None:
    return None if row is None else f"{100 * row['fraction_of_peak']:.0f}% of peak"


def ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{1000 * seconds:.0f} ms"


def headline(results: dict) -> dict[str, str | None]:
    """The summary's figures of one results file by name (GOALS' names where a goal is set), in the same order
    for every file; None where the run did not measure one."""
    rows = [bench_models.Result(**r) for r in results.get("models", {}).get("rows", [])]
    by_key = {(r.model, r.mode, r.amp, r.channels_last): vars(r) for r in rows}
    peaks = results.get("models", {}).get("peaks", {})
    bf16 = bench_models.precision_ratios(rows).get("resnet_cifar train channels_last")
    native = "native" if results["machine"]["native_bf16"] else "emulated"
    fit, data, start = results.get("fit"), results.get("data"), results.get("startup", {})
    rss = results.get("memory_mb", {}).get("resnet_cifar train")
    out = {
        "resnet_cifar training, channels_last, fp32": share(by_key.get(("resnet_cifar", "train", "fp32", True))),
        "resnet_cifar inference, channels_last, fp32": share(by_key.get(("resnet_cifar", "infer", "fp32", True))),
        # The passes between convolutions run at the bandwidth, not at the peak: the machine's balance.
        "fp32 matmul peak / memory bandwidth": balance(peaks) if "bandwidth" in peaks else None,
        "resnet_cifar training bf16 / fp32, channels_last": f"{bf16:.2f}x (bf16 {native})" if bf16 else None,
        "resnet_cifar / plain ResNet-20": overhead(rows),
        "fit / minimal loop": f"{fit['fit_over_minimal']:.2f}" if fit else None,
        "fit defaults (amp, layout 'auto') / fit fp32 NCHW": f"{fit['defaults_over_fp32']:.2f}" if fit else None,
        "fit bf16 / fit fp32": f"{fit['bf16_over_fp32']:.2f}" if fit else None,
        "loader / training": f"{data['ratio']:.0f}x" if data else None,
        "strong-augment loader / training": f"{data['strong_ratio']:.1f}x" if data else None,
        "mnist_cnn to 99% / example's first epoch": mnist_race(results.get("time_to_accuracy")),
        "basic_cnn to 90% on CIFAR-10": None,
        "basic_cnn to 94% on CIFAR-10 / airbench94 on an A100": None,
        "resnet_cifar training peak RSS": f"{rss:,.0f} MB" if rss is not None else None,
        "import imgzoo after torch, torchvision": ms(start.get("import imgzoo after torch")),
        "load('mnist_cnn.mnist')": ms(start.get("load shipped")),
        "load a cached Hub entry": ms(start.get("load cached Hub entry")),
    }
    if race := results.get("time_to_accuracy_cifar10"):
        out.update([race_row(race)])
    return out


def balance(peaks: dict) -> str:
    ratio, flops, bandwidth = peaks["fp32"] / peaks["bandwidth"], peaks["fp32"] / 1e9, peaks["bandwidth"] / 1e9
    return f"{ratio:.1f} FLOP per byte ({flops:.0f} GFLOP/s over {bandwidth:.1f} GB/s)"


def overhead(rows: list[bench_models.Result]) -> str | None:
    """resnet_cifar / the plain ResNet-20 over the fp32 settings: one setting's ratio swings by +-0.07 between
    runs, so the geometric mean is the figure and the range its noise."""
    ratios = {k: v for k, v in bench_models.overhead_ratio(rows).items() if "bf16" not in k}
    if not ratios:
        return None
    low, high = min(ratios, key=ratios.get), max(ratios, key=ratios.get)
    mean = math.prod(ratios.values()) ** (1 / len(ratios))
    spread = f"{ratios[low]:.2f} {low} to {ratios[high]:.2f} {high}"
    return f"{mean:.2f} (geometric mean of {len(ratios)} fp32 settings; {spread})"


def mnist_race(tta: dict | None) -> str | None:
    if not tta:
        return None
    ours, example = tta["mnist_cnn_to_99"], tta["example_first_epoch"]
    if tta["ratio"] is None:
        return f"99% not reached (last epoch {100 * ours['val_acc']:.2f}%)"
    return f"{tta['ratio']:.2f} ({ours['seconds']:.0f} s against {example['seconds']:.0f} s)"


def race_row(race: dict) -> tuple[str, str]:
    """The CIFAR-10 race in the summary: against airbench94's published A100 time where there is one."""
    target = f"{100 * race['target']:.0f}%"
    if race["seconds"] is None:
        tta = f"; {100 * race['tta_val_acc']:.2f}% with TTA {race['tta']}" if "tta_val_acc" in race else ""
        value = f"{target} not reached ({100 * race['val_acc']:.2f}% after the last epoch{tta})"
    elif "airbench94" in race:
        value = f"{race['ratio_to_airbench94']:.1f} ({race['seconds']:.1f} s against its published 3.29 s)"
    else:
        value = f"{race['seconds']:.0f} s (epoch {race['epoch']}, validation passes included)"
    return f"basic_cnn to {target} on CIFAR-10" + (" / airbench94 on an A100" if "airbench94" in race else ""), value


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(head)} |", "|" + "---|" * len(head), *[f"| {' | '.join(row)} |" for row in rows], ""]


def machine_rows(runs: list[dict]) -> list[list[str]]:
    """What each column was measured on, when and by which command, and what a reader must know of it."""
    m = [r["machine"] for r in runs]
    gpu = [f" ({x['gpu']}, {x['gpu_memory_gib']} GiB, CUDA {x['cuda']})" if "gpu_memory_gib" in x else "" for x in m]
    return [
        ["CPU", *[f"{x['cpu']}, {x['cores']} cores, {x['threads']} threads" for x in m]],
        ["vector capability", *[x["cpu_capability"] for x in m]],
        ["native bf16", *["yes" if x["native_bf16"] else "no" for x in m]],
        ["torch", *[x["torch"] for x in m]],
        ["measured on", *[x["device"] + g for x, g in zip(m, gpu, strict=True)]],
        ["when, how", *[when(r) for r in runs]],
        ["notes", *[" ".join(r.get("notes", [])) or "-" for r in runs]],
    ]


def when(results: dict) -> str:
    """The run's date and command, and the sections measured on another day by --only."""
    quick = " (--quick: resnet_cifar only)" if results["quick"] else ""
    apart = [f"`--only {name}` on {day}" for name, day in results.get("dates", {}).items() if day != results["date"]]
    return "; ".join([f"{results['date']} by `{results['command']}`{quick}", *apart])


def memory_cell(results: dict, name: str) -> str:
    if name not in results.get("memory_mb", {}):
        return "-"
    cuda = results.get("cuda_memory_mb", {}).get(name)
    return f"{results['memory_mb'][name]:,.0f} MB" + (f" (CUDA {cuda:,.0f} MB)" if cuda is not None else "")


def markdown(runs: list[dict]) -> str:
    """The results part of the page: a column per results file (per kind of machine)."""
    kinds = [common.kind(r["machine"]) for r in runs]
    found = [headline(r) for r in runs]
    names = [n for n in dict.fromkeys(n for f in found for n in f) if any(f.get(n) for f in found)]
    summary = [[n, GOALS.get(n, ""), *[f.get(n) or "-" for f in found]] for n in names]
    lines = ["## Machines", "", *table(["", *kinds], machine_rows(runs))]
    lines += ["## Summary", "", *table(["figure", "goal", *kinds], summary)]
    for kind, r in zip(kinds, runs, strict=True):
        if "models" in r:
            rows = [bench_models.Result(**row) for row in r["models"]["rows"]]
            lines += [f"## Model speed against the peak: {kind}", "", bench_models.markdown(rows, r["models"]["peaks"])]
            lines += [""]
    names = list(dict.fromkeys(name for r in runs for name in r.get("memory_mb", {})))
    lines += ["## Peak memory: host RSS (and the peak CUDA memory allocated, on a GPU)", ""]
    lines += table(["run", *kinds], [[name, *[memory_cell(r, name) for r in runs]] for name in names])
    return "\n".join(lines)


def page(runs: list[dict], template: str) -> str:
    """``template`` (the page) with its results part, between the BEGIN and END markers, written anew."""
    if BEGIN not in template or END not in template:
        raise SystemExit(f"the page lacks the markers {BEGIN!r} and {END!r}, between which the results go; "
                         "restore them from docs/benchmarks.md in git")  # fmt: skip
    head, rest = template.split(BEGIN, 1)
    return f"{head}{BEGIN}\n\n{markdown(runs)}\n{END}{rest.split(END, 1)[1]}"


def committed() -> list[dict]:
    """Every kind's last full run, as bench/results-KIND.json holds it."""
    files = sorted(p for p in HERE.glob("results-*.json") if not p.name.startswith("results-quick"))
    return [json.loads(p.read_text()) for p in files]


def dumps(value, indent: str = "") -> str:
    """JSON with six significant digits, and each part that fits in 400 characters on one line (a table row
    with its windows' rates), so that a results file reads and differs row by row."""
    if isinstance(value, float):
        return json.dumps(float(f"{value:.6g}"))
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        return json.dumps(value)
    keyed = isinstance(value, dict)
    parts = [(f"{json.dumps(k)}: " if keyed else "") + dumps(v, indent + " ") for k, v in items]
    brackets = "{}" if keyed else "[]"
    flat = brackets[0] + ", ".join(p.strip() for p in parts) + brackets[1]
    if len(flat) <= 400 and "\n" not in flat:
        return flat
    return brackets[0] + "\n" + ",\n".join(indent + " " + p for p in parts) + f"\n{indent}" + brackets[1]


def parse(argv: list[str]) -> tuple[argparse.Namespace, torch.device]:
    """The options and the device; an unavailable --device ends the command here, before anything runs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: resnet_cifar only, one repetition")
    parser.add_argument("--long", action="store_true", help="also basic_cnn on CIFAR-10 (needs --cifar10)")
    parser.add_argument("--only", nargs="+", choices=["models", "fit", "data", "memory", "races", "startup"],
                        help="measure these sections and merge them into this kind's results")  # fmt: skip
    parser.add_argument("--render", action="store_true", help="measure nothing: write the page from the results files")
    parser.add_argument("--json", type=Path, help="the results file (default: bench/results[-quick]-KIND.json)")
    parser.add_argument("--out", type=Path, default=PAGE, help="the page (default: docs/benchmarks.md)")
    parser.add_argument("--cifar10", default=None, help="CIFAR-10 train/<class>/*.jpg tree (synthetic if absent)")
    parser.add_argument("--mnist", default=str(HERE.parents[1] / "shared" / "data" / "mnist"), help="skipped if absent")
    parser.add_argument("--device", default="auto", choices=common.CHOICES, help="auto: cuda where torch sees one")
    args = parser.parse_args(argv)
    try:
        return args, common.resolve(args.device)
    except ValueError as error:
        parser.error(str(error))  # exits with status 2


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args, device = parse(argv)
    template = (args.out if args.out.exists() else PAGE).read_text()
    if args.render:
        args.out.write_text(page(committed(), template))
        return
    machine = common.describe(device)
    path = args.json or HERE / f"results{'-quick' if args.quick else ''}-{common.kind(machine)}.json"
    shown = [word if i == 0 or argv[i - 1] not in ("--cifar10", "--mnist") else "DIR" for i, word in enumerate(argv)]
    today = time.strftime("%Y-%m-%d")
    merged_into = json.loads(path.read_text()) if args.only and path.exists() else None
    command = " ".join(["python bench/run.py", *shown])
    results = merged_into or {"command": command, "date": today, "quick": args.quick, "notes": []}
    results["machine"] = machine
    for name, measure in sections(args, device).items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        found = measure()
        if not found:  # the races under --quick, or without data: nothing measured, nothing dated
            continue
        results.update(found)
        results.setdefault("dates", {})[name] = today
        results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - start, 1)
        path.write_text(dumps(results) + "\n")  # after each section, so a run stopped part-way keeps what it measured
    others = [r for r in committed() if common.kind(r["machine"]) != common.kind(machine)]
    args.out.write_text(page(sorted([*others, results], key=lambda r: common.kind(r["machine"])), template))
    print(f"{path} and {args.out} written; {sum(results['section_seconds'].values()):.0f} s of measuring")


if __name__ == "__main__":
    main()
