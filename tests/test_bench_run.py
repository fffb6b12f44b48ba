"""The benchmark suite without timing anything: the page renders from the committed results, the ratios are
computed as documented, each run is told its device and batches, and a quick run writes the page where asked.

The CUDA branches are driven with torch.cuda.is_available patched and with made-up results; no GPU is touched.
"""

from __future__ import annotations

import importlib
import json
import statistics
import subprocess
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench"
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def bench(monkeypatch):
    """The bench modules, imported as bench/run.py imports them."""
    monkeypatch.syspath_prepend(str(BENCH))
    names = ("common", "run", "bench_models", "bench_fit", "bench_memory", "bench_time_to_accuracy")
    return {name: importlib.import_module(name) for name in names}


def test_auto_is_the_cpu_without_cuda_and_the_gpu_with_it(bench, monkeypatch):
    choose = bench["common"].resolve
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose("auto") == CPU and choose("cpu") == CPU
    with pytest.raises(ValueError, match="--device cuda was asked for.*available: cpu"):
        choose("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose("auto") == CUDA and choose("cpu") == CPU  # asked for, even where a GPU is present


def test_an_unavailable_device_stops_the_command_with_status_2_before_measuring(bench, monkeypatch, capsys):
    run = bench["run"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(run, "sections", lambda *a: pytest.fail("measured although the device was refused"))
    for argv in (["--quick", "--device", "cuda"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as stopped:
            run.main(argv)
        assert stopped.value.code == 2
    assert "--device cuda was asked for" in capsys.readouterr().err


def test_batch_sizes_are_the_cpus_small_ones_and_a_gpus_larger_ones(bench):
    batch_size, build = bench["common"].batch_size, bench["bench_models"].build
    assert [batch_size(32, CPU), batch_size(224, CPU), batch_size(28, CUDA), batch_size(224, CUDA)] == [
        128,
        16,
        512,
        64,
    ]
    for name in ("resnet_cifar", "plain_resnet20"):
        assert build(name, CPU)[2] == 128 and build(name, CUDA)[2] == 512


def test_each_kind_of_machine_has_its_own_results_file(bench):
    kind = bench["common"].kind
    assert kind({"device": "cpu", "cpu_capability": "AVX2", "native_bf16": False}) == "cpu-avx2"
    assert kind({"device": "cpu", "cpu_capability": "AVX512", "native_bf16": True}) == "cpu-avx512-bf16"
    assert kind({"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"}) == "gpu-nvidia-h100-80gb-hbm3"
    committed = sorted(p.name for p in BENCH.glob("results*.json") if not p.name.startswith("results-quick"))
    assert committed == ["results-cpu-avx2.json", "results-cpu-avx512-bf16.json"]  # at most one per kind


def test_the_page_renders_from_the_committed_results_between_its_markers(bench, tmp_path):
    run = bench["run"]
    out = tmp_path / "benchmarks.md"
    run.main(["--render", "--out", str(out)])
    page = out.read_text()
    assert page == run.PAGE.read_text()  # the committed page is what its results render to
    assert page.count(run.BEGIN) == page.count(run.END) == 1 and "## What the benchmarks found" in page
    results = page.split(run.BEGIN)[1].split(run.END)[0]
    assert "| figure | goal | cpu-avx2 | cpu-avx512-bf16 |" in results
    assert "| fit / minimal loop | >= 0.90 | 0.98 | 1.02 |" in results
    assert "| resnet_cifar training bf16 / fp32, channels_last | >= 1.5x where bf16 is native | 0.09x (bf16 " in results
    assert "| fp32 matmul peak / memory bandwidth |  | - | 12.9 FLOP per byte" in results  # measured on one only
    assert "since removed from the library" in results  # the removed malloc setting and fused copy are said
    out.write_text("# a page without markers\n")
    with pytest.raises(SystemExit, match="lacks the markers"):
        run.main(["--render", "--out", str(out)])


def _results(device: str) -> dict:
    """A run's results as run.main writes them, on the CPU or on a GPU, with made-up figures."""
    gpu = device == "cuda"
    machine = {"cpu": "Some CPU", "cores": 16, "cpu_capability": "AVX512", "native_bf16": True, "torch": "2.11",
               "threads": 16, "device": device}  # fmt: skip
    if gpu:
        machine.update(gpu="NVIDIA H200", gpu_memory_gib=139.8, cuda="13.0")
    peaks = {"fp32": 5e13, "bf16": 8e14, "matmul_n": 8192, "tf32_matmul": False, "tf32_cudnn": True}
    row = {"model": "resnet_cifar", "mode": "train", "amp": "bf16", "channels_last": True, "batch_size": 512,
           "images_per_sec": 1e5, "flops_per_image": 6.4e9, "fraction_of_peak": 0.8}  # fmt: skip
    row["peak"] = "bf16" if gpu else "fp32"
    results = {
        "command": "python bench/run.py",
        "date": "2026-12-01",
        "quick": False,
        "machine": machine,
        "models": {"peaks": peaks if gpu else {"fp32": 1e11, "matmul_n": 2048}, "rows": [row]},
        "fit": {"fit_over_minimal": 0.95, "defaults_over_fp32": 1.2, "bf16_over_fp32": 1.5},
        "memory_mb": {"baseline": 600.0, "resnet_cifar train": 1500.0},
        "startup": {"import torch, torchvision": 2.0, "import imgzoo": 2.1, "load shipped": 0.02},
    }
    if gpu:
        results["cuda_memory_mb"] = {"baseline": None, "resnet_cifar train": 700.0}
        results["time_to_accuracy_cifar10"] = {
            "seconds": 6.58, "epoch": 9, "val_acc": 0.941, "recipe": "basic_cnn", "target": 0.94, "device": "cuda",
            "airbench94": {"seconds": 3.29}, "ratio_to_airbench94": 2.0,
        }  # fmt: skip
    return results


def test_a_gpu_column_names_the_gpu_its_bf16_peak_its_cuda_memory_and_airbench94(bench):
    page = bench["run"].markdown([_results("cpu"), _results("cuda")])
    assert "| figure | goal | cpu-avx512-bf16 | gpu-nvidia-h200 |" in page
    assert "| measured on | cpu | cuda (NVIDIA H200, 139.8 GiB, CUDA 13.0) |" in page
    assert (
        "| resnet_cifar train | 1,500 MB | 1,500 MB (CUDA 700 MB) |" in page
        and "| baseline | 600 MB | 600 MB |" in page
    )
    assert "TF32 not allowed in matmuls" in page and "(80% of bf16)" in page
    assert (
        "| basic_cnn to 94% on CIFAR-10 / airbench94 on an A100 |  | - | 2.0 (6.6 s against its published 3.29 s) |"
        in page
    )
    assert "| load('mnist_cnn.mnist') | <= 100 ms | 20 ms | 20 ms |" in page
    assert "airbench94" not in bench["run"].markdown([_results("cpu")])


def test_quick_measures_its_sections_and_writes_its_json_and_the_page_where_asked(bench, monkeypatch, tmp_path):
    run = bench["run"]
    measured = _results("cpu")
    fake = {name: (lambda key=key: {key: measured[key]}) for name, key in
            [("models", "models"), ("fit", "fit"), ("memory", "memory_mb"), ("startup", "startup")]}  # fmt: skip
    fake["races"] = dict  # nothing measured (no data): no date, no results
    monkeypatch.setattr(run, "sections", lambda args, device: fake)
    monkeypatch.setattr(run.common, "describe", lambda device: measured["machine"])
    out, path = tmp_path / "page.md", tmp_path / "quick.json"
    run.main(["--quick", "--device", "cpu", "--out", str(out), "--json", str(path), "--mnist", "/x/mnist"])
    saved = json.loads(path.read_text())
    assert saved["quick"] and saved["command"] == "python bench/run.py --quick --device cpu --out " + str(out) + (
        f" --json {path} --mnist DIR"
    )  # the data folder as a placeholder, not this machine's path
    assert set(saved["dates"]) == {"models", "fit", "memory", "startup"} and saved["fit"] == measured["fit"]
    page = out.read_text()
    # This run replaces its kind's column (the Xeon's); the other kind's committed run stays beside it.
    assert "| figure | goal | cpu-avx2 | cpu-avx512-bf16 |" in page and "(--quick: resnet_cifar only)" in page
    assert "| fit / minimal loop | >= 0.90 | 0.98 | 0.95 |" in page and "What the benchmarks found" in page
    # --only merges a section into the existing results, dated, and keeps the rest.
    monkeypatch.setattr(run.time, "strftime", lambda fmt: "2026-12-24")
    run.main(["--only", "fit", "--device", "cpu", "--out", str(out), "--json", str(path)])
    merged = json.loads(path.read_text())
    assert merged["dates"]["fit"] == "2026-12-24" and merged["date"] == saved["date"] and "startup" in merged
    assert "`--only fit` on 2026-12-24" in out.read_text()


def test_results_json_keeps_a_table_row_on_one_line_and_six_digits(bench):
    dumps = bench["run"].dumps
    value = {"rows": [{"model": "resnet_cifar", "rates": [1 / 3, 2.0]}] * 30, "seconds": 1234.56789}
    text = dumps(value)
    assert json.loads(text) == {"rows": [{"model": "resnet_cifar", "rates": [0.333333, 2.0]}] * 30, "seconds": 1234.57}
    assert '  {"model": "resnet_cifar", "rates": [0.333333, 2.0]},' in text.splitlines()


def test_each_row_is_a_fraction_of_the_probes_on_either_side_of_its_window(bench, monkeypatch):
    """A machine whose speed halves and recovers as the run goes: rows and probes move together, so each row
    keeps its share of the peak, where the run's highest probe would put the slow windows at half of it."""
    models = bench["bench_models"]
    speeds = [1.0, 1.0, 0.5, 0.5, 0.8, 1.0, 0.6] * 10  # the machine's speed at each probe
    taken = []

    def fake_peaks(device, seconds=1.0):
        taken.append(speeds[len(taken)])
        return {"fp32": 100e9 * taken[-1], "matmul_n": 2048}

    def fake_measure(cfg, seconds, device, flops):
        flops[(cfg.model, cfg.mode)] = 1e8  # 0.1 GFLOP an image
        share = 0.6 if cfg.mode == "train" else 0.7
        speed = max(speeds[len(taken) - 1], speeds[len(taken)])  # as fast as the faster of its neighbours
        return 128, share * 100e9 * speed / 1e8  # images/s: that share of the moment's peak

    monkeypatch.setattr(models, "peaks", fake_peaks)
    monkeypatch.setattr(models, "measure", fake_measure)
    rows, found = models.run(["resnet_cifar"], reps=3, seconds=0.5, amps=["fp32"], timed_layouts=(True,))
    assert [(r.mode, r.channels_last) for r in rows] == [("train", True), ("infer", True)]
    assert [r.fraction_of_peak for r in rows] == [pytest.approx(0.6), pytest.approx(0.7)]
    assert found["probes"] == 3 * len(rows) + 1 and found["fp32_highest"] == pytest.approx(100e9)
    assert 50e9 <= found["fp32"] < 100e9  # the median probe: the heading reports it, no row divides by it


def test_the_rows_a_goal_names_get_more_windows_interleaved_among_themselves(bench, monkeypatch):
    models = bench["bench_models"]
    timed = []

    def fake_measure(cfg, seconds, device, flops):
        flops[(cfg.model, cfg.mode)] = 1e8
        timed.append(cfg)
        return 128, 100.0 + len(timed)

    monkeypatch.setattr(models, "peaks", lambda device, seconds=1.0: {"fp32": 100e9, "matmul_n": 2048})
    monkeypatch.setattr(models, "measure", fake_measure)
    monkeypatch.setattr(models.common, "native_bf16", lambda device: False)  # emulated bf16 names no goal
    rows, _ = models.run(["resnet_cifar", "mnist_cnn", "plain_resnet20"], 2, 0.5, ["fp32", "bf16"], goal_reps=5)
    goals = [r for r in rows if r.windows == 5]
    assert {(r.model, r.amp, r.channels_last) for r in goals} == {
        ("resnet_cifar", "fp32", True),
        ("plain_resnet20", "fp32", True),
    }
    assert all(r.windows == 2 for r in rows if r not in goals) and len(timed) == 2 * len(rows) + 3 * len(goals)
    extra = timed[2 * len(rows) :]  # after the shared repetitions, the two models' matching rows back to back
    assert {extra[0].model, extra[1].model} == {"resnet_cifar", "plain_resnet20"}
    monkeypatch.setattr(models.common, "native_bf16", lambda device: True)  # native bf16 carries the 1.5x goal
    native, _ = models.run(["resnet_cifar"], 1, 0.5, ["fp32", "bf16"], goal_reps=3)
    assert {(r.amp, r.windows) for r in native if r.channels_last} == {("fp32", 3), ("bf16", 3)}


def test_overhead_is_the_median_of_back_to_back_window_ratios_not_the_ratio_of_medians(bench):
    models = bench["bench_models"]

    def row(model, rates):
        return models.Result(model, "train", "fp32", True, 128, statistics.median(rates), 1e8, 0.5, rates=rates)

    speeds = [1.0, 0.5, 0.8, 0.45, 0.9]  # the machine halves its speed and recovers; each pair shares the moment
    ours = row("resnet_cifar", [300 * 0.97 * s for s in speeds])
    plain = row("plain_resnet20", [300 * s * (1.1 if k == 2 else 1.0) for k, s in enumerate(speeds)])
    assert models.overhead_ratio([ours, plain]) == {"train fp32 channels_last": pytest.approx(0.97)}
    assert ours.images_per_sec / plain.images_per_sec == pytest.approx(0.97 / 1.1)  # what the medians would say
    old = [models.Result(**{**vars(r), "rates": []}) for r in (ours, plain)]  # no per-window rates: the medians
    assert models.overhead_ratio(old)["train fp32 channels_last"] == pytest.approx(0.97 / 1.1)


def test_bf16_is_set_against_fp32_per_model_mode_and_layout_and_the_table_shows_both(bench):
    models = bench["bench_models"]

    def row(amp, rate, channels_last=True, batch=128):
        return models.Result("resnet_cifar", "train", amp, channels_last, batch, rate, 2.42e8, rate / 1000)

    rows = [row("fp32", 600), row("bf16", 960), row("fp32", 500, False), row("bf16", 40, False, batch=16)]
    assert models.precision_ratios(rows) == {
        "resnet_cifar train channels_last": pytest.approx(1.6),
        "resnet_cifar train NCHW": pytest.approx(0.08),
    }
    table = models.markdown(rows, {"fp32": 1e11, "matmul_n": 2048})
    assert "| resnet_cifar | train | channels_last | 0.242 | 600 (60%) | 960 (96%) | 1.60x |" in table
    assert "| resnet_cifar | train | NCHW | 0.242 | 500 (50%) | 40 (4%, batch 16) | 0.08x |" in table


def test_fits_ratios_pair_the_runs_of_each_repetition_and_fall_back_to_medians_when_they_cannot(bench):
    # The machine slowed between repetitions 1 and 2, for the fit run only: the medians read 0.6, the pairs 0.99.
    rates = {"minimal loop": [100.0, 200.0, 210.0], "fit, same settings": [99.0, 120.0, 207.9]}
    rates |= {"fit defaults": [198.0, 240.0, 415.8], "fit bf16": [190.0]}
    found = bench["bench_fit"].ratios(rates)
    assert found["fit_over_minimal"] == pytest.approx(0.99)
    assert found["defaults_over_minimal"] == pytest.approx(1.98)
    assert found["defaults_over_fp32"] == pytest.approx(2.0)
    assert found["bf16_over_fp32"] == pytest.approx(190.0 / 120.0)  # one emulated run: the medians


def test_fit_benchmark_times_each_row_once_per_repetition_with_native_bf16_in_the_rotation(bench, monkeypatch):
    fit = bench["bench_fit"]
    monkeypatch.setattr(fit, "timed_rate", lambda *a: 100.0)
    monkeypatch.setattr(fit, "minimal_loop", lambda *a: None)
    for native, counts in ((True, [2, 2, 2, 2]), (False, [2, 2, 2, 1])):
        monkeypatch.setattr(fit.common, "native_bf16", lambda device, native=native: native)
        assert [len(r) for r in fit.measure(images=128, epochs=1, reps=2)["runs"].values()] == counts


def test_the_bandwidth_probe_counts_the_bytes_read_and_the_bytes_written(bench, monkeypatch):
    models = bench["bench_models"]
    clock = iter(0.25 * i for i in range(100))  # every reading a quarter second after the last
    monkeypatch.setattr(models.time, "perf_counter", lambda: next(clock))
    # Readings: the start at 0, copies at 0.25, 0.5 and 0.75, the loop ends at 1.0, the end read at 1.25.
    assert models.memory_bandwidth(CPU, mib=1, seconds=1.0) == pytest.approx(2 * 2**20 * 3 / 1.25)


def test_memory_runs_are_told_the_device_and_its_batches(bench, monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=json.dumps({"rss": 900.0, "cuda": 300.0}) + "\n")

    monkeypatch.setattr(bench["bench_memory"].subprocess, "run", fake_run)
    assert bench["bench_memory"].peak_mb("resnet_cifar", 5, "train", CUDA) == {"rss": 900.0, "cuda": 300.0}
    bench["bench_memory"].peak_mb("resnet_cifar", 5, "train", CPU)
    assert calls[0][-4:-1] == ["train", "cuda", "512,64"] and calls[1][-4:-1] == ["train", "cpu", "128,16"]
    assert calls[0][-1] == str(BENCH)  # where the child finds common.py, the one place the loader is built


def test_the_cifar10_race_is_set_against_airbench94_on_a_gpu_only(bench, monkeypatch):
    races = bench["bench_time_to_accuracy"]
    targets = []

    def fake_time_to(target, data, recipe, device=CPU):
        targets.append(target)
        return {"seconds": 6.58, "epoch": 9, "val_acc": target, "recipe": recipe}

    monkeypatch.setattr(races, "imgzoo_time_to", fake_time_to)
    monkeypatch.setattr(races.datasets, "cifar10", lambda root, train: None)
    monkeypatch.setattr(races.common, "warm_up", lambda device: None)
    on_gpu, on_cpu = races.basic_cnn_race("cifar", CUDA), races.basic_cnn_race("cifar", CPU)
    assert targets == [0.94, 0.90]
    assert on_gpu["ratio_to_airbench94"] == pytest.approx(2.0) and "2404.00498" in on_gpu["airbench94"]["source"]
    assert "airbench94" not in on_cpu and "ratio_to_airbench94" not in on_cpu
