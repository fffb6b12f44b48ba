"""Every benchmark in one command: a JSON file and a Markdown table headed by the machine.

    python bench/run.py [--quick] [--long] [--device auto|cpu|cuda]
                        [--cifar10 ../cifar10-jpeg] [--mnist ../shared/data/mnist]

writes bench/results.json and docs/benchmarks.md (a GPU run: bench/results-gpu.json and
docs/benchmarks-gpu.md; a CPU with native bf16: bench/results-native-bf16.json and
docs/benchmarks-native-bf16.md; so that none replaces another; --quick: bench/results-quick.json). Each
figure is a ratio of two things measured side by side in this one run, because shared machines are
noisy and only ratios carry over:

1. model speed: images/s of every model, training and inference (as built, and as evaluate runs
   it: batch norm folded, and on a CPU activations and residual sums fused into the convolutions),
   fp32/bf16/auto, NCHW and channels_last, as a fraction of this machine's matmul peak
   (bench_models.py);
2. no hidden overhead: resnet_cifar against a plain ResNet-20 written in the benchmark;
3. the training loop: fit against a minimal hand-written loop (bench_fit.py);
4. the data path: FastLoader's augmented images/s against resnet_cifar's training images/s (bench_data.py);
5. peak memory of training and inference runs: resident (host) memory, and on a GPU the peak
   CUDA memory allocated beside it (bench_memory.py);
6. time to accuracy on real data: mnist_cnn to 99% against PyTorch's MNIST example's first epoch;
   with --long, basic_cnn on CIFAR-10 to 90% on a CPU, to 94% on a GPU, set against airbench94's
   published 3.29 s on an A100 (bench_time_to_accuracy.py);
7. start-up: import, loading shipped weights, loading a cached Hub entry (bench_startup.py).

--quick (under two minutes on a CPU) measures resnet_cifar and the plain ResNet-20 only, in
channels_last, one repetition; it skips time to accuracy, the memory of inference and of the other
models, and the two whole-interpreter import times (the goal is read from import imgzoo timed inside
an interpreter that has torch); and it does not rewrite the Markdown page unless --write is given.
bench/results*.json is rewritten after each section, so a run stopped part-way keeps what it measured.

On a 2-core CPU the CIFAR-10 race alone takes half an hour, so it may run apart and join the page after:

    python bench/bench_time_to_accuracy.py --cifar10 PATH/TO/cifar10-jpeg --json race.json
    python bench/run.py --render --race-from race.json

``--render`` measures nothing: it writes the Markdown page again from this machine's results JSON (after a
row of the fixes table changed, say), and the page says on which date the race ran apart from the rest.

On a GPU. ``--device auto`` (the default) measures on the GPU wherever PyTorch sees one;
``--device cuda`` insists and stops at once, naming what is there, where it sees none; ``--device
cpu`` measures the CPU on any machine. On the GPU the models run at batch 512 (64 for
dogbreed_transfer's 224 px images) rather than the CPU's 128 and 16, the matmul peaks are taken at
8192 x 8192 in fp32 (stating whether TF32 was allowed) and in bf16, and every timer drains the
GPU's queue before it reads the clock. The races run on the GPU too, each after a warm-up that
loads CUDA's libraries. The full suite with the CIFAR-10 race, from the repository's root on a
machine that holds the data (the MNIST idx files, and the CIFAR-10 tree extracted from
train.tar.gz):

    PYTHONPATH=$PWD python bench/run.py --long --device cuda --cifar10 PATH/TO/cifar10-jpeg --mnist PATH/TO/mnist

It needs about seven to nine minutes on one recent data-centre GPU: most of it is the host's work
(decoding 50,000 JPEGs once, start-up and memory runs in fresh interpreters), and the CIFAR-10
race itself under a minute. ``--quick --device cuda`` checks the whole path first in two or three.
When committing docs/benchmarks-gpu.md, add it to mkdocs.yml's nav beside benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_data  # noqa: E402
import bench_fit  # noqa: E402
import bench_memory  # noqa: E402
import bench_models  # noqa: E402
import bench_startup  # noqa: E402
import bench_time_to_accuracy  # noqa: E402
import device_choice  # noqa: E402

from imgzoo._device import cpu_has_native_bf16, describe_machine  # noqa: E402

# fit against the minimal loop, median of this many interleaved runs of 8 s each: with 3, one full run read
# 0.87 where bench_fit.py alone, minutes later, read 1.05 (each row swings 250-365 images/s on a shared 2-core CPU).
FIT_REPS = 5

GOALS = {
    "resnet_cifar training, channels_last, fp32": ">= 55% of peak",
    "resnet_cifar inference, channels_last, fp32": ">= 65% of peak",
    "resnet_cifar inference as evaluate runs it, channels_last, fp32": ">= 65% of peak",
    "resnet_cifar / plain ResNet-20": ">= 0.98",
    "resnet_cifar training bf16 / fp32, channels_last": ">= 1.5x where bf16 is native",
    "amp='auto' / fp32, the lowest over every row": ">= 1.0 (within a few % of noise)",
    "fit / minimal loop": ">= 0.90",
    "loader / training": ">= 5",
    "mnist_cnn to 99% / example's first epoch": "<= 1.0",
    "resnet_cifar training peak RSS": "<= 2048 MB",
    # Two fresh interpreters, each importing torch for about 5 s here, differ by up to 0.8 s from run to run
    # (measured 2026-11-28, 2-core AMD EPYC); the in-process row below is the one the goal is read from.
    "import imgzoo - import torch, torchvision": "(noisy; the goal is read from the next row)",
    "import imgzoo after torch, torchvision": "<= 300 ms",
    "load('mnist_cnn.mnist')": "<= 100 ms",
    "load a cached Hub entry": "<= 200 ms + file read",
}


# (figure, before, cause, fix) for every goal a run of these benchmarks missed and the library fixed.
FIXES = (
    (
        "import imgzoo - import torch, torchvision",
        "597 ms in one interpreter (802 ms as the difference of two)",
        "hub.py and model_card.py imported huggingface_hub and yaml, and probed the HTTP library's errors, at import",
        "each is imported inside the functions that use it; tests/test_import_cost.py keeps them out of import imgzoo",
    ),
    (
        "load a cached Hub entry",
        "76-95 ms, then 276-383 ms once the client's import moved out of import imgzoo",
        "every Hub load imported the client, and asked it for files a pinned commit already fixes",
        "an entry pinned to a commit is read from the cache's snapshot folder without the client; sha256 still checked",
    ),
    (
        "resnet_cifar / plain ResNet-20",
        "0.81 (train fp32 NCHW)",
        "the timer reported the untimed warm-up step when one step outlasted --quick's 0.5 s window, and the first "
        "model measured paid the process's kernel set-up",
        "only steps after the warm-up are timed, and the two models' matching settings alternate; profiles showed "
        "the same operators in the same time, so resnet_cifar itself was unchanged",
    ),
    (
        "resnet_cifar inference, channels_last, fp32",
        "60% of peak (2026-11-28), then 62% (2026-11-29), each against the highest probe of its run: the model "
        "as built, model(x) in eval mode",
        "each eval-mode batch norm is a fixed per-channel affine map, yet ran as a pass of its own over every "
        "feature map; and evaluate ran NCHW, which the infer rows show 1.1-1.5x slower than channels_last here",
        "evaluate runs a copy with each batch norm folded into its convolution (imgzoo.fold_batchnorm), in "
        "channels_last where fit trains in it: the 'inference as evaluate runs it' row; the model is untouched",
    ),
    (
        "resnet_cifar inference as evaluate runs it, channels_last, fp32",
        "62% of peak (2026-11-29, 2-core Xeon with AMX), batch norm folded",
        "once batch norm was folded, each ReLU and each residual block's sum was still a pass of its own over a "
        "feature map the convolution had just written",
        "on a CPU evaluate's copy computes each convolution with its ReLU or GELU, and a block's last convolution "
        "with the sum and ReLU, in one oneDNN call (imgzoo.fuse_for_inference); bench/bench_fusion.py, same "
        "machine: 62% folded, 66% fused in fp32 (bitwise the same logits), 1.37x under bf16",
    ),
    (
        "resnet_cifar training, channels_last, fp32",
        "52% of peak (2026-11-29); basic_cnn at batch 1024: 15% of its CPU time in the kernel",
        "glibc's malloc maps every block above 32 MiB afresh and unmaps it on free, so each step's activations "
        "faulted in again (690,000 page faults a step for basic_cnn at batch 1024; 3% of the CPU time at batch 128)",
        "fit and evaluate keep freed blocks up to 1 GiB on the CPU and hand them back when they return "
        "(imgzoo/train/_allocator.py); this run's rows are timed under the same setting, and the allocator table above "
        "sets it against glibc as shipped",
    ),
    (
        "resnet_cifar training, channels_last, fp32",
        "42% of peak (2026-11-30, 2-core Xeon with AMX)",
        "option A's shortcut subsampled by slicing, whose backward hands back an NCHW gradient: its sum with the "
        "residual branch's channels_last gradient, and the ReLU backward after that, mixed layouts (torch.profiler; "
        "bench/bench_layouts.py: that ReLU backward took 4.95 ms with the NCHW gradient against 0.48 ms with a "
        "channels_last one). Beyond that, the batch norms, ReLUs and sums are passes over memory: "
        "bench/bench_step_profile.py, same machine, put them at 40% of a step (68 of 169 ms) while the convolutions "
        "ran at 79% of peak; 55% leaves them 45 ms. Re-run with the memory bandwidth (a 256 MiB copy, 26.9 GB/s): "
        "71 of 176 ms, reading and writing at least 1.33 GB, 6.8 passes over the 187 MiB of feature maps a step "
        "keeps, which take 49 ms at the copy's rate, all of what 55% leaves them (49 ms), though batch norm reads "
        "its input twice and is counted once",
        "channels_last input that carries a gradient is subsampled by a 1x1 average pool, the same pixels, whose "
        "backward keeps the layout: "
        "resnet_cifar / the plain ResNet-20 (which slices) went from 1.03 to 1.06 in fp32 and from 0.97 to 1.04 in "
        "bf16, two runs back to back. The passes between convolutions remain; fit(compile=True) merges them into "
        "fewer generated kernels: bench/bench_compile.py, same machine, 45% eager and 49% compiled in fp32 (1.09x), "
        "1.18x in bf16, and 47% and 51% in a later run (1.09x, 1.18x), so on this CPU the goal is out of reach of "
        "both",
    ),
    (
        "fit bf16 / fit fp32 with the defaults",
        "0.09 (the README recommended amp='bf16')",
        "bf16 is emulated on a CPU without AVX512-BF16 or AMX",
        "amp='auto' is fit's default: bf16 only where the device computes it natively; an explicit bf16 warns there",
    ),
)


def collect(args: argparse.Namespace, device: torch.device, save: Callable[[dict], None]) -> dict:
    """Every section on ``device``; ``save`` gets the results after each, so a run stopped part-way keeps them."""
    quick = args.quick
    models = ["resnet_cifar"] if quick else __import__("imgzoo").list_models()
    results: dict = {"machine": machine(device), "quick": quick}
    sections = [
        lambda: speed(models, quick, device),
        lambda: {
            "fit": bench_fit.measure(
                images=fit_images(quick, device), epochs=1 if quick else 2, reps=1 if quick else FIT_REPS, device=device
            )
        },
        lambda: {"data": bench_data.measure(args.cifar10, seconds=2 if quick else 10, device=device)},
        lambda: memory(models, quick, device),
        lambda: races(args, device),
        # host only: last, the least a GPU run adds
        lambda: {"startup": bench_startup.run(1 if quick else 5, wall_times=not quick)},
    ]
    for section in sections:
        start = time.perf_counter()
        found = section()
        results.update(found)
        if found:  # a section with nothing to measure (the races under --quick) records no time
            results.setdefault("section_seconds", {})[", ".join(found)] = round(time.perf_counter() - start, 1)
        save(results)
    return results


def machine(device: torch.device) -> dict:
    """What the figures were measured on: describe_machine's, the threads, the device, and the GPU's memory."""
    info = {**describe_machine(device), "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    elif torch.cuda.is_available():  # --device cpu on a machine with a GPU: the table must not say "none"
        info["gpu"] = f"{torch.cuda.get_device_name()} (not used: --device cpu)"
    return info


def fit_images(quick: bool, device: torch.device) -> int:
    """Synthetic images for bench_fit: at a GPU's batch of 512, the CPU's 1,024 would be two steps an epoch."""
    return (256 if quick else 1024) * (8 if device.type == "cuda" else 1)


def speed(models: list[str], quick: bool, device: torch.device) -> dict:
    """Every model's rows against the peaks (bench_models.run), and the memory bandwidth on either side of them."""
    bandwidth = bench_models.memory_bandwidth(device)
    rows, found = bench_models.run([*models, "plain_resnet20"], 1 if quick else 3, bench_models.window(quick, device),
                                   ["fp32", "bf16", "auto"], device, bench_models.layouts(quick),
                                   0 if quick else bench_models.GOAL_REPS)  # fmt: skip
    found["bandwidth"] = max(bandwidth, bench_models.memory_bandwidth(device))
    found["bandwidth_mib"] = bench_models.BANDWIDTH_MIB
    return {"models": {"peak_flops": found["fp32"], "peaks": found, "rows": [vars(r) for r in rows],
                       "resnet_cifar_over_plain": bench_models.overhead_ratio(rows)}}  # fmt: skip


def memory(models: list[str], quick: bool, device: torch.device) -> dict:
    """Peak host RSS of each run; on a GPU, beside it, the peak CUDA memory allocated."""
    runs = [("baseline", "baseline", 0, "train")]
    modes = ("train",) if quick else ("train", "infer")  # --quick: the run the goal names (each is a fresh process)
    runs += [(f"{name} {mode}", name, 5 if quick else 30, mode) for name in models for mode in modes]
    rss, cuda = {}, {}
    for key, name, steps, mode in runs:
        found = bench_memory.peak_mb(name, steps, mode, device)
        rss[key], cuda[key] = found["rss"], found["cuda"]
    return {"memory_mb": rss, "cuda_memory_mb": cuda} if device.type == "cuda" else {"memory_mb": rss}


def races(args: argparse.Namespace, device: torch.device) -> dict:
    """The MNIST race (not with --quick), and with --long the CIFAR-10 one: 94% on a GPU, 90% on a CPU."""
    found = {}
    if not args.quick and Path(args.mnist).exists():
        found["time_to_accuracy"] = bench_time_to_accuracy.compare_mnist(args.mnist, device=device)
    if args.long and args.cifar10:
        found["time_to_accuracy_cifar10"] = bench_time_to_accuracy.basic_cnn_race(args.cifar10, device)
    return found


def headline(results: dict) -> list[tuple[str, str, str]]:
    """(figure, measured, goal) rows for the summary table."""
    rows = []

    def add(name: str, value: str) -> None:
        rows.append((name, value, GOALS.get(name, "")))

    speed = {(r["model"], r["mode"], r["amp"], r["channels_last"]): r for r in results["models"]["rows"]}
    for mode, word in (("train", "training"), ("infer", "inference"), ("evaluate", "inference as evaluate runs it")):
        row = speed.get(("resnet_cifar", mode, "fp32", True))
        if row:
            add(f"resnet_cifar {word}, channels_last, fp32", f"{100 * row['fraction_of_peak']:.0f}% of peak")
    peaks = results["models"].get("peaks", {})
    if "bandwidth" in peaks:  # results from before the bandwidth probe lack it
        # Read beside the rows above: the passes between convolutions run at the bandwidth, not at the peak.
        add("fp32 matmul peak / memory bandwidth", f"{peaks['fp32'] / peaks['bandwidth']:.1f} FLOP per byte "
            f"({peaks['fp32'] / 1e9:.0f} GFLOP/s over {peaks['bandwidth'] / 1e9:.1f} GB/s)")  # fmt: skip
    rows_found = [bench_models.Result(**r) for r in results["models"]["rows"]]
    precision = bench_models.precision_ratios(rows_found)
    bf16 = precision.get("resnet_cifar train channels_last", {}).get("bf16 / fp32")
    if bf16:
        native = "native" if results["machine"].get("native_bf16") else "emulated"
        add("resnet_cifar training bf16 / fp32, channels_last", f"{bf16:.2f}x (bf16 {native} here)")
    auto = {key: found["auto / fp32"] for key, found in precision.items() if "auto / fp32" in found}
    if auto:
        lowest, highest = min(auto, key=auto.get), max(auto, key=auto.get)
        value = f"{auto[lowest]:.2f}x ({lowest}; the highest {auto[highest]:.2f}x)"
        if not results["machine"].get("native_bf16") and results["machine"].get("device", "cpu") == "cpu":
            value += "; auto runs fp32's own code here, so the spread is the noise of windows not timed side by side"
        add("amp='auto' / fp32, the lowest over every row", value)
    # Emulated bf16 rows time a single small batch: too noisy to judge overhead by.
    ratios = {k: v for k, v in results["models"]["resnet_cifar_over_plain"].items() if "bf16" not in k}
    if ratios:
        # One setting's ratio swung by +-0.07 between runs here as a ratio of medians: where amp="auto" is fp32,
        # "auto" and "fp32" run the same code and measured 0.94 against 1.01. Each is now the median of back-to-back
        # window pairs (bench_models.overhead_ratio); the mean over the settings is the figure, the range the noise.
        mean = math.prod(ratios.values()) ** (1 / len(ratios))
        low, high = min(ratios, key=ratios.get), max(ratios, key=ratios.get)
        add(
            "resnet_cifar / plain ResNet-20",
            f"{mean:.2f} (geometric mean of {len(ratios)} fp32/auto training and inference settings of the model as "
            f"built; {ratios[low]:.2f} {low} to "
            f"{ratios[high]:.2f} {high})",
        )
    add("fit / minimal loop", f"{results['fit']['fit_over_minimal']:.2f}")
    add("fit bf16 / fit fp32", f"{results['fit']['bf16_over_fp32']:.2f}")
    add("loader / training", f"{results['data']['ratio']:.0f}x")
    if "strong_ratio" in results["data"]:  # results from before the strong loader lack it
        add("strong-augment loader / training", f"{results['data']['strong_ratio']:.1f}x")
    tta = results.get("time_to_accuracy")
    if tta:
        ours = tta["mnist_cnn_to_99"]
        missed = f"99% not reached by recipe {ours.get('recipe')} (last epoch {100 * ours['val_acc']:.2f}%)"
        add("mnist_cnn to 99% / example's first epoch", missed if tta["ratio"] is None else f"{tta['ratio']:.2f}")
    race = results.get("time_to_accuracy_cifar10")
    if race:
        add(*race_row(race))
    mem = results["memory_mb"].get("resnet_cifar train")
    if mem:
        add("resnet_cifar training peak RSS", f"{mem:.0f} MB")
    if "startup" in results:  # the last section: a run stopped part-way may lack it, and still render
        rows += [(name, value, GOALS.get(name, "")) for name, value in startup_rows(results["startup"])]
    return rows


def markdown(results: dict, command: str) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        *measured_by(results, command),
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {m['cpu']}, {m['cores']} cores, {m['threads']} threads |",
        f"| vector capability | {m['cpu_capability']} |",
        f"| native bf16 | {'yes' if m['native_bf16'] else 'no'} |",
        f"| torch | {m['torch']} |",
        *device_rows(m),
        "",
        "## Summary",
        "",
        "| figure | measured | goal |",
        "|---|---|---|",
        *[f"| {name} | {value} | {goal} |" for name, value, goal in headline(results)],
        "",
        "## Model speed against the machine's peak",
        "",
        bench_models.markdown(
            [bench_models.Result(**r) for r in results["models"]["rows"]],
            results["models"].get("peaks", results["models"]["peak_flops"]),
        ),
        "",
        "### bf16 and amp='auto' against fp32",
        "",
        *bench_models.precision_lines([bench_models.Result(**r) for r in results["models"]["rows"]]),
        "",
        *time_to_accuracy_lines(results),
        *race_lines(results),
        *memory_lines(results),
        "## Goals missed, their causes and the fixes",
        "",
        *fixes_intro(m),
        "",
        "| figure | before | cause | fix |",
        "|---|---|---|---|",
        *[f"| {figure} | {before} | {cause} | {fix} |" for figure, before, cause, fix in FIXES],
        "",
    ]
    return "\n".join(lines)


def measured_by(results: dict, command: str) -> list[str]:
    """The page's opening: the command, its date, and a CIFAR-10 race that ran in a run of its own."""
    date = results.get("date", "a date its results file does not record")  # written before runs kept their date
    race = results.get("time_to_accuracy_cifar10") or {}
    apart = (
        f"; the `--long` CIFAR-10 race in a run of its own on {race['measured_apart']}"
        if "measured_apart" in race
        else ""
    )
    return [
        f"Measured by `{command}` on {date}{apart}. Every other figure is a ratio of two things measured"
        if apart
        else f"Measured by `{command}` on {date}. Every figure is a ratio of two things measured",
        "side by side in that one run; absolute speeds differ from machine to machine and from hour to hour.",
    ]


def with_race_from(results: dict, path: str) -> dict:
    """``results`` with the CIFAR-10 race of another file, marked as measured apart on the date it was run.

    The race takes half an hour on a 2-core CPU; this lets it run apart from the rest of the suite and still
    appear on the same page. The file is a results JSON of this script, one of
    ``bench/bench_time_to_accuracy.py --cifar10 ... --json`` (its ``basic_cnn_race``), or the race alone.
    """
    other = json.loads(Path(path).read_text())
    race = other.get("time_to_accuracy_cifar10") or other.get("basic_cnn_race") or other
    if not isinstance(race, dict) or not {"seconds", "target"} <= race.keys():
        raise SystemExit(
            f"--race-from {path}: expected a CIFAR-10 race (time_to_accuracy_cifar10 of bench/run.py's JSON, "
            f"basic_cnn_race of bench_time_to_accuracy.py's, or the race itself); found keys {sorted(other)[:8]}"
        )
    date = race.get("measured_apart") or other.get("date") or race.get("started", "")[:10] or "an earlier date"
    return {**results, "time_to_accuracy_cifar10": {**race, "measured_apart": date}}


def startup_rows(start: dict) -> list[tuple[str, str]]:
    """The start-up figures for the summary (the time imgzoo adds to torch's import, and two loads)."""
    rows = []
    if "import imgzoo" in start:  # --quick leaves out the two whole-interpreter timings
        rows.append(("import imgzoo - import torch, torchvision",
                     f"{1000 * (start['import imgzoo'] - start['import torch, torchvision']):.0f} ms"))  # fmt: skip
    if "import imgzoo after torch" in start:  # results.json files written before this row have no such key
        rows.append(("import imgzoo after torch, torchvision", f"{1000 * start['import imgzoo after torch']:.0f} ms"))
    rows.append(("load('mnist_cnn.mnist')", f"{1000 * start['load shipped']:.0f} ms"))
    if "load cached Hub entry" in start:
        rows.append(("load a cached Hub entry", f"{1000 * start['load cached Hub entry']:.0f} ms"))
    return rows


def race_row(race: dict) -> tuple[str, str]:
    """The CIFAR-10 race in the summary: against airbench94's published A100 time where there is one."""
    target = f"{100 * race.get('target', 0.90):.0f}%"
    reached = race["seconds"] is not None
    tta = f"; {100 * race['tta_val_acc']:.2f}% with TTA {race['tta']}" if "tta_val_acc" in race else ""
    missed = f"{target} not reached ({100 * race['val_acc']:.2f}% after the last epoch{tta})"
    if not reached:
        value = missed
    elif "airbench94" in race:
        value = f"{race['ratio_to_airbench94']:.1f} ({race['seconds']:.1f} s against its published 3.29 s)"
    else:
        value = f"{race['seconds']:.0f} s (epoch {race['epoch']})"
    against = " / airbench94 on an A100" if "airbench94" in race else ""
    return f"basic_cnn to {target} on CIFAR-10{against}", value


def race_lines(results: dict) -> list[str]:
    """The CIFAR-10 race in full, and what the A100 figure it is set against is and is not."""
    race = results.get("time_to_accuracy_cifar10")
    if not race:
        return []
    target = f"{100 * race.get('target', 0.90):.0f}%"
    if race["seconds"] is not None:
        result = f"{target} at epoch {race['epoch']}, after {race['seconds']:.1f} s (validation passes included)"
    else:
        result = f"{target} not reached; {100 * race['val_acc']:.2f}% after its last epoch"
    if "tta_val_acc" in race:
        result += f"; with TTA {race['tta']} after the last epoch: {100 * race['tta_val_acc']:.2f}%"
    lines = ["## Time to accuracy on CIFAR-10", "", "| run | result |", "|---|---|",
             f"| basic_cnn, recipe `{race['recipe']}`, on {race.get('device', 'cpu')} | {result} |"]  # fmt: skip
    if "airbench94" in race:
        lines += [
            "| airbench94 on an NVIDIA A100, its published figure | 94% in 3.29 s (Jordan 2024, arXiv:2404.00498) |",
            "",
            "The A100 figure is airbench94's own published number, not measured side by side here: it is "
            "another GPU, its 94% is on CIFAR-10's lossless test set, and its timer leaves out evaluation. This "
            "run validates on 10% of the JPEG training images (lossy, which costs accuracy), trains on the "
            "other 90%, and counts every epoch's validation pass, and the TTA evaluation where that was needed.",
        ]
    return [*lines, ""]


def memory_lines(results: dict) -> list[str]:
    """Peak memory: host RSS; on a GPU also the peak CUDA memory allocated, in its own column."""
    rss, cuda = results["memory_mb"], results.get("cuda_memory_mb")
    if cuda is None:
        rows = [f"| {name} | {mb:,.0f} MB |" for name, mb in rss.items()]
        return ["## Peak resident memory", "", "| run | peak RSS |", "|---|---:|", *rows, ""]
    shown = {name: "-" if cuda.get(name) is None else f"{cuda[name]:,.0f} MB" for name in rss}
    rows = [f"| {name} | {mb:,.0f} MB | {shown[name]} |" for name, mb in rss.items()]
    head = ["## Peak memory", "", "| run | peak host RSS | peak CUDA memory allocated |", "|---|---:|---:|"]
    return [*head, *rows, ""]


def fixes_intro(m: dict) -> list[str]:
    """Where the figures of the fixes table come from: CPU runs, also on a GPU run's page."""
    if m.get("device", "cpu") == "cpu" and not m.get("native_bf16"):
        return [
            "Figures before a fix come from earlier runs of the same benchmarks on this kind of machine "
            "(2-core AMD EPYC,",
            "AVX2, no native bf16) unless the row names another; the figures after it are in the tables above.",
        ]
    if m.get("device", "cpu") == "cpu":
        return [
            "Figures before a fix come from earlier runs of the same benchmarks on a 2-core AMD EPYC (AVX2, no native",
            "bf16; its figures after each fix are in benchmarks.md) unless the row names another machine; this page's",
            "tables show the same code here.",
        ]
    return [
        "Figures before and after each fix come from CPU runs, on a 2-core AMD EPYC (AVX2, no native bf16; see",
        "benchmarks.md) unless the row names another machine, not from this GPU run.",
    ]


def device_rows(m: dict) -> list[str]:
    """The machine table's device and GPU rows: which device the figures were measured on, and the GPU."""
    gpu = m.get("gpu", "none")
    if "gpu_memory_gib" in m:
        gpu = f"{gpu}, {m['gpu_memory_gib']} GiB, CUDA {m.get('cuda')}"
    return [f"| measured on | {m.get('device', 'cpu')} |", f"| GPU | {gpu} |"]


def time_to_accuracy_lines(results: dict) -> list[str]:
    """The MNIST race in full: the example's first epoch against mnist_cnn's epochs to 99%."""
    tta = results.get("time_to_accuracy")
    if not tta:
        return []
    example, ours = tta["example_first_epoch"], tta["mnist_cnn_to_99"]
    reached = (
        f"99% at epoch {ours['epoch']}, after {ours['seconds']:.1f} s (validation passes included)"
        if ours["seconds"] is not None
        else f"99% not reached; {100 * ours['val_acc']:.2f}% after its last epoch"
    )
    return [
        "## Time to accuracy on MNIST",
        "",
        "| run | result |",
        "|---|---|",
        f"| PyTorch's MNIST example, first epoch | {example['seconds']:.1f} s, {100 * example['val_acc']:.2f}% |",
        f"| mnist_cnn, recipe `{ours.get('recipe')}` | {reached} |",
        "",
    ]


def _shown(argv: list[str]) -> list[str]:
    """The command line as the Markdown shows it: data folders as placeholders, not this machine's paths."""
    shown, placeholder = [], {"--cifar10": "PATH/TO/cifar10-jpeg", "--mnist": "PATH/TO/mnist"}
    for i, word in enumerate(argv):
        shown.append(placeholder[argv[i - 1]] if i and argv[i - 1] in placeholder else word)
    return shown


def outputs(device: torch.device, quick: bool = False, native_bf16: bool | None = None) -> tuple[Path, Path]:
    """Where a run's JSON and Markdown go: a GPU run has its own pair, so it never replaces the CPU's page,
    and a --quick run's JSON is results-quick*.json (not kept in git), so it never replaces a full run's.

    A CPU with native bf16 (``native_bf16``; None: this machine's) has its own pair too
    (results-native-bf16.json, benchmarks-native-bf16.md): there bf16 runs 1.5x to 3x faster than fp32 and
    on an AVX2-only CPU ten times slower, so the two kinds of CPU answer the goals differently and each
    page stays the record of its kind.
    """
    if native_bf16 is None:
        native_bf16 = cpu_has_native_bf16()
    suffix = "-gpu" if device.type == "cuda" else "-native-bf16" if native_bf16 else ""
    json_name = f"results-quick{suffix}.json" if quick else f"results{suffix}.json"
    return HERE / json_name, HERE.parent / "docs" / f"benchmarks{suffix}.md"


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, torch.device]:
    """The options and the device; an unavailable --device ends the command here, before anything runs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="under two minutes: resnet_cifar only, one repetition")
    parser.add_argument(
        "--long", action="store_true", help="also basic_cnn on CIFAR-10, to 94%% on GPU, 90%% on CPU (needs --cifar10)"
    )
    parser.add_argument("--write", action="store_true", help="with --quick, still rewrite the Markdown page")
    parser.add_argument(
        "--render", action="store_true", help="measure nothing: write the Markdown page again from this machine's JSON"
    )
    parser.add_argument("--race-from", help="a results JSON whose CIFAR-10 race goes onto the page (run apart)")
    parser.add_argument("--cifar10", default=None, help="CIFAR-10 train/<class>/*.jpg tree (synthetic if absent)")
    parser.add_argument("--mnist", default=str(HERE.parents[1] / "shared" / "data" / "mnist"))
    device_choice.add_option(parser)
    args = parser.parse_args(argv)
    return args, device_choice.from_args(parser, args)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args, device = parse(argv)
    json_path, md_path = outputs(device, args.quick)

    def save(results: dict) -> None:
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")

    if args.render:  # the page again from the results of the last run: after a fix's row or the race was added
        results = json.loads(json_path.read_text())
        command = results.get("command", "python bench/run.py")
    else:
        start = time.perf_counter()
        results = collect(args, device, save)
        results["seconds"] = time.perf_counter() - start
        command = " ".join(["python bench/run.py", *_shown(argv)])
        results.update(command=command, date=time.strftime("%Y-%m-%d"))
    if args.race_from:
        results = with_race_from(results, args.race_from)
    save(results)
    text = markdown(results, command)
    if not args.quick or args.write:
        md_path.write_text(text)
    print(text)
    print(f"({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
