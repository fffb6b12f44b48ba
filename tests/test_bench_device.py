"""The benchmark suite's device plumbing, checked without a GPU: which device each option picks, the refusal
of --device cuda where there is none, the per-device batch sizes and output files, and what the report says.

The CUDA branches are driven here with torch.cuda.is_available patched and with recorded results; nothing
is timed and no GPU is touched.
"""

from __future__ import annotations

import importlib
import json
import statistics
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from imgzoo.models.resnet_cifar import subsample

BENCH = Path(__file__).resolve().parent.parent / "bench"
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def bench(monkeypatch):
    """The bench modules, imported as bench/run.py imports them."""
    monkeypatch.syspath_prepend(str(BENCH))
    names = ("device_choice", "run", "bench_models", "bench_memory", "bench_time_to_accuracy")
    return {name: importlib.import_module(name) for name in names}


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_is_the_cpu_without_cuda_and_the_gpu_with_it(bench, monkeypatch):
    choose = bench["device_choice"].resolve
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose("auto") == CPU
    assert choose("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose("auto") == CUDA
    assert choose("cpu") == CPU  # asked for, even where a GPU is present


def test_cuda_without_cuda_is_refused_naming_what_was_asked_and_what_is_there(bench, no_cuda):
    with pytest.raises(ValueError, match="--device cuda was asked for") as caught:
        bench["device_choice"].resolve("cuda")
    assert "available: cpu" in str(caught.value)


def test_the_command_stops_with_status_2_before_measuring(bench, no_cuda, monkeypatch, capsys):
    run = bench["run"]
    monkeypatch.setattr(run, "collect", lambda *a: pytest.fail("measured although the device was refused"))
    with pytest.raises(SystemExit) as stopped:
        run.main(["--quick", "--device", "cuda"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--device cuda was asked for" in err and "available: cpu" in err
    with pytest.raises(SystemExit) as stopped:
        run.main(["--device", "tpu"])
    assert stopped.value.code == 2


def test_batch_sizes_are_the_cpus_small_ones_and_a_gpus_larger_ones(bench):
    batch_size, build = bench["device_choice"].batch_size, bench["bench_models"].build
    assert [batch_size(32, CPU), batch_size(224, CPU)] == [128, 16]
    assert [batch_size(32, CUDA), batch_size(224, CUDA)] == [512, 64]
    assert batch_size(28, CUDA) == 512  # MNIST's 28 px count as small images
    for name in ("resnet_cifar", "plain_resnet20"):
        assert build(name, CPU)[2] == 128
        assert build(name, CUDA)[2] == 512
    assert bench["run"].fit_images(False, CPU) == 1024
    assert bench["run"].fit_images(False, CUDA) // batch_size(32, CUDA) >= 8  # steps an epoch, as on the CPU


def test_bf16_rows_are_measured_against_the_bf16_peak_only_where_one_was_taken(bench):
    models = bench["bench_models"]
    bf16, fp32 = (
        models.Config("resnet_cifar", "train", "bf16", True),
        models.Config("resnet_cifar", "train", "fp32", True),
    )
    gpu_peaks = {"fp32": 5e13, "bf16": 8e14, "matmul_n": 8192, "tf32_matmul": False, "tf32_cudnn": True}
    assert models.peak_name(bf16, CUDA, gpu_peaks) == "bf16"
    assert models.peak_name(fp32, CUDA, gpu_peaks) == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # amp="bf16" on a CPU without native bf16 warns that it is slow
        assert models.peak_name(bf16, CPU, {"fp32": 1e11, "matmul_n": 2048}) == "fp32"


def test_a_gpu_run_and_a_native_bf16_cpu_run_write_their_own_files_beside_the_avx2_cpus(bench):
    cpu_json, cpu_md = bench["run"].outputs(CPU, native_bf16=False)
    gpu_json, gpu_md = bench["run"].outputs(CUDA)
    bf16_json, bf16_md = bench["run"].outputs(CPU, native_bf16=True)
    assert (cpu_json.name, cpu_md.name) == ("results.json", "benchmarks.md")
    assert (gpu_json.name, gpu_md.name) == ("results-gpu.json", "benchmarks-gpu.md")
    assert (bf16_json.name, bf16_md.name) == ("results-native-bf16.json", "benchmarks-native-bf16.md")
    assert gpu_md.parent == cpu_md.parent == bf16_md.parent
    assert bench["run"].outputs(CUDA, native_bf16=True)[1].name == "benchmarks-gpu.md"  # the GPU's whatever the CPU
    quick_json, quick_md = bench["run"].outputs(CPU, quick=True, native_bf16=False)
    assert quick_json.name == "results-quick.json" and quick_md == cpu_md  # the page only with --write
    assert bench["run"].outputs(CUDA, quick=True)[0].name == "results-quick-gpu.json"


def test_memory_runs_are_told_the_device_and_its_batches(bench, monkeypatch):
    calls = []

    def fake_run(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=json.dumps({"rss": 900.0, "cuda": 300.0}) + "\n")

    monkeypatch.setattr(bench["bench_memory"].subprocess, "run", fake_run)
    assert bench["bench_memory"].peak_mb("resnet_cifar", 5, "train", CUDA) == {"rss": 900.0, "cuda": 300.0}
    bench["bench_memory"].peak_mb("resnet_cifar", 5, "train", CPU)
    assert calls[0][-3:] == ["train", "cuda", "512,64"]
    assert calls[1][-3:] == ["train", "cpu", "128,16"]


def test_the_cifar10_race_is_set_against_airbench94_on_a_gpu_only(bench, monkeypatch):
    races = bench["bench_time_to_accuracy"]
    targets = []

    def fake_time_to(target, data, recipe, init_seed=0, device=CPU):
        targets.append(target)
        return {"seconds": 6.58, "epoch": 9, "val_acc": target, "recipe": recipe}

    monkeypatch.setattr(races, "imgzoo_time_to", fake_time_to)
    monkeypatch.setattr(races.datasets, "cifar10", lambda root, train: None)
    monkeypatch.setattr(races.device_choice, "warm_up", lambda device: None)
    on_gpu, on_cpu = races.basic_cnn_race("cifar", CUDA), races.basic_cnn_race("cifar", CPU)
    assert targets == [0.94, 0.90]
    assert on_gpu["ratio_to_airbench94"] == pytest.approx(2.0)
    assert on_gpu["airbench94"]["seconds"] == 3.29 and "2404.00498" in on_gpu["airbench94"]["source"]
    assert "airbench94" not in on_cpu and "ratio_to_airbench94" not in on_cpu


def test_the_report_names_the_device_and_labels_the_gpus_columns(bench):
    markdown = bench["run"].markdown
    cpu = markdown(_results("cpu"), "python bench/run.py")
    assert "| measured on | cpu |" in cpu and "| GPU | none |" in cpu
    assert "| run | peak RSS |" in cpu and "CUDA" not in cpu and "airbench94" not in cpu
    assert "fp32 matmul peak (2048 x 2048): 100.0 GFLOP/s" in cpu
    gpu = markdown(_results("cuda"), "python bench/run.py --device cuda")
    assert "| measured on | cuda |" in gpu
    assert "| GPU | NVIDIA H200, 139.8 GiB, CUDA 13.0 |" in gpu
    assert "| run | peak host RSS | peak CUDA memory allocated |" in gpu
    assert "| resnet_cifar train | 1,500 MB | 700 MB |" in gpu and "| baseline | 600 MB | - |" in gpu
    assert "TF32 not allowed in matmuls" in gpu and "80% of bf16" in gpu
    assert "| basic_cnn to 94% on CIFAR-10 / airbench94 on an A100 | 2.0 (6.6 s against its published 3.29 s) |" in gpu
    assert "airbench94's own published number, not measured side by side" in gpu


def test_the_fixes_table_says_whose_figures_it_holds_on_each_kind_of_machine(bench):
    intro = bench["run"].fixes_intro
    avx2 = " ".join(intro({"device": "cpu", "native_bf16": False}))
    bf16 = " ".join(intro({"device": "cpu", "native_bf16": True}))
    gpu = " ".join(intro({"device": "cuda", "native_bf16": True}))
    assert "this kind of machine" in avx2 and "benchmarks.md" not in avx2  # its own page
    assert "no native bf16" in bf16 and "benchmarks.md" in bf16 and "this kind of machine" not in bf16
    assert "not from this GPU run" in gpu and "benchmarks.md" in gpu
    # A fix measured elsewhere (the fused inference copy, on a Xeon with AMX) names its machine in its row.
    assert all("unless the row names another" in text for text in (avx2, bf16, gpu))
    machine_named = [row for row in bench["run"].FIXES if "inference as evaluate runs it" in row[0]]
    assert machine_named and "Xeon" in machine_named[0][1]


def _results(device: str) -> dict:
    """A run's results.json as run.collect writes it, on the CPU or on a GPU, with made-up figures."""
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
        "machine": machine,
        "models": {
            "peak_flops": peaks["fp32"] if gpu else 1e11,
            "peaks": peaks if gpu else {"fp32": 1e11, "matmul_n": 2048},
            "rows": [row],
            "resnet_cifar_over_plain": {"train fp32 NCHW": 1.0},
        },
        "fit": {"fit_over_minimal": 0.95, "bf16_over_fp32": 1.5},
        "data": {"ratio": 20.0},
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


@pytest.mark.parametrize("name", ["resnet_cifar", "plain_resnet20"])
def test_evaluate_rows_time_both_resnets_with_batch_norm_folded(bench, name):
    """imgzoo's model as evaluate folds it, the plain one as torch.fx folds it: like against like, same logits."""
    models = bench["bench_models"]
    torch.manual_seed(0)
    model, shape, _ = models.build(name)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 2.0)
            module.running_mean.normal_()
    model.eval()
    folded = models.folded(name, model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model itself is untouched
    x = torch.randn(4, *shape)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


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
        # A window runs at the higher of its neighbours' speeds: it starts as the machine speeds up or ends
        # as it slows down.
        speed = max(speeds[len(taken) - 1], speeds[len(taken)])
        return 128, share * 100e9 * speed / 1e8  # images/s: that share of the moment's peak

    monkeypatch.setattr(models, "peaks", fake_peaks)
    monkeypatch.setattr(models, "measure", fake_measure)
    rows, found = models.run(["resnet_cifar"], reps=3, seconds=0.5, amps=["fp32"], timed_layouts=models.layouts(True))
    assert len(rows) == len(models.MODES) and all(row.channels_last for row in rows)
    for row in rows:
        assert row.fraction_of_peak == pytest.approx(0.6 if row.mode == "train" else 0.7)
    assert found["probes"] == 3 * len(rows) + 1 and found["paired"]
    assert found["fp32_highest"] == pytest.approx(100e9)
    assert 50e9 <= found["fp32"] < 100e9
    heading = models.peak_lines(found)[0]
    assert "higher of the probes taken just before and just after" in heading and "highest 100.0" in heading


def test_the_rows_a_goal_names_get_more_windows_interleaved_among_themselves(bench, monkeypatch):
    models = bench["bench_models"]
    timed = []

    def fake_measure(cfg, seconds, device, flops):
        flops[(cfg.model, cfg.mode)] = 1e8
        timed.append(cfg)
        return 128, 100.0 + len(timed)  # every window a different rate: the median shows which were counted

    monkeypatch.setattr(models, "peaks", lambda device, seconds=1.0: {"fp32": 100e9, "matmul_n": 2048})
    monkeypatch.setattr(models, "measure", fake_measure)
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)  # bf16 emulated: its rows name no goal
    rows, found = models.run(
        ["resnet_cifar", "mnist_cnn", "plain_resnet20"], reps=2, seconds=0.5, amps=["fp32", "bf16"], goal_reps=5
    )
    goals = [r for r in rows if models.goal_row(r)]
    assert {(r.model, r.amp, r.channels_last) for r in goals} == {
        ("resnet_cifar", "fp32", True),
        ("plain_resnet20", "fp32", True),
    }
    assert all(r.windows == 5 for r in goals) and all(r.windows == 2 for r in rows if r not in goals)
    assert len(timed) == 2 * len(rows) + 3 * len(goals) and found["probes"] == len(timed) + 1
    # After the shared repetitions only goal rows run, the two models' matching rows back to back.
    extra = timed[2 * len(rows) :]
    assert all(models.goal_row(c) for c in extra)
    assert [c.model for c in extra[:2]] in (["resnet_cifar", "plain_resnet20"], ["plain_resnet20", "resnet_cifar"])
    table = models.markdown(rows, found)
    assert "| windows |" in table and table.count(" 5 |") >= len(goals)
    # Where bf16 is native its rows carry the bf16 >= 1.5x goal, and get as many windows as fp32's.
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    native_rows, _ = models.run(["resnet_cifar"], reps=1, seconds=0.5, amps=["fp32", "bf16"], goal_reps=3)
    assert {(r.amp, r.windows) for r in native_rows if r.channels_last} == {("fp32", 3), ("bf16", 3)}
    assert all(r.windows == 1 for r in native_rows if not r.channels_last)
    # A results file written before windows were counted renders as it did.
    old = [models.Result(**{**vars(r), "windows": 0}) for r in rows]
    assert "windows" not in models.markdown(old, found)


def test_overhead_is_the_median_of_back_to_back_window_ratios_not_the_ratio_of_medians(bench):
    models = bench["bench_models"]

    def row(model, rates, amp="fp32"):
        return models.Result(model, "train", amp, True, 128, statistics.median(rates), 1e8, 0.5, rates=rates)

    # The machine halves its speed in the second repetition and recovers; each pair shares the moment.
    speeds = [1.0, 0.5, 0.8, 0.45, 0.9]
    ours = row("resnet_cifar", [300 * 0.97 * s for s in speeds])
    plain = row("plain_resnet20", [300 * s * (1.1 if k == 2 else 1.0) for k, s in enumerate(speeds)])
    ratios = models.overhead_ratio([ours, plain])
    assert ratios == {"train fp32 channels_last": pytest.approx(0.97)}
    assert ours.images_per_sec / plain.images_per_sec == pytest.approx(0.97 / 1.1)  # what the medians would say
    # Rows from a results file without per-window rates: the ratio of their medians.
    old = [models.Result(**{**vars(r), "rates": []}) for r in (ours, plain)]
    assert models.overhead_ratio(old)["train fp32 channels_last"] == pytest.approx(0.97 / 1.1)


def test_a_probe_is_half_a_window_long_and_at_most_a_second(bench):
    probe_seconds = bench["bench_models"].probe_seconds
    assert probe_seconds(0.5) == 0.25 and probe_seconds(2.0) == 1.0 and probe_seconds(10.0) == 1.0


def test_quick_times_channels_last_only_and_the_full_run_both_layouts(bench):
    assert bench["bench_models"].layouts(quick=True) == (True,)
    assert bench["bench_models"].layouts(quick=False) == (False, True)


def test_quick_leaves_out_the_whole_interpreter_import_times_and_says_nothing_of_them(bench):
    start = {"import imgzoo after torch": 0.05, "load shipped": 0.015}
    names = [name for name, _ in bench["run"].startup_rows(start)]
    assert names == ["import imgzoo after torch, torchvision", "load('mnist_cnn.mnist')"]
    full = {**start, "import imgzoo": 3.2, "import torch, torchvision": 3.0}
    assert bench["run"].startup_rows(full)[0] == ("import imgzoo - import torch, torchvision", "200 ms")


def test_bf16_and_auto_are_set_against_fp32_per_model_mode_and_layout(bench):
    models = bench["bench_models"]

    def row(model, amp, rate, channels_last=True, mode="train"):
        return models.Result(model, mode, amp, channels_last, 128, rate, 1e8, 0.5)

    rows = [
        row("resnet_cifar", "fp32", 600), row("resnet_cifar", "bf16", 960), row("resnet_cifar", "auto", 900),
        row("resnet_cifar", "fp32", 500, channels_last=False), row("resnet_cifar", "bf16", 400, channels_last=False),
        row("basic_cnn", "auto", 100, mode="infer"),  # no fp32 row to set it against: left out
    ]  # fmt: skip
    ratios = models.precision_ratios(rows)
    assert ratios == {
        "resnet_cifar train channels_last": {"bf16 / fp32": pytest.approx(1.6), "auto / fp32": pytest.approx(1.5)},
        "resnet_cifar train NCHW": {"bf16 / fp32": pytest.approx(0.8)},
    }
    lines = models.precision_lines(rows)
    assert "| resnet_cifar train channels_last | 1.60x | 1.50x |" in lines
    assert "| resnet_cifar train NCHW | 0.80x |  |" in lines
    machine = {"cpu": "Some CPU", "cores": 2, "cpu_capability": "AVX512", "native_bf16": True, "torch": "2.14"}
    page = models.page(rows, {"fp32": 1e11, "matmul_n": 2048}, machine, "python bench/bench_models.py --reps 3")
    assert "`python bench/bench_models.py --reps 3`" in page and "| native bf16 | yes |" in page
    assert "| resnet_cifar train channels_last | 1.60x | 1.50x |" in page


def test_the_summary_reads_bf16_and_the_lowest_auto_against_fp32(bench):
    results = _results("cpu")
    fp32 = {**results["models"]["rows"][0], "amp": "fp32", "images_per_sec": 5e4}
    auto = {**results["models"]["rows"][0], "amp": "auto", "images_per_sec": 4.9e4, "channels_last": False}
    auto_fp32 = {**fp32, "channels_last": False}
    results["models"]["rows"] += [fp32, auto, auto_fp32]
    page = bench["run"].markdown(results, "python bench/run.py")
    assert "| resnet_cifar training bf16 / fp32, channels_last | 2.00x (bf16 native here) | >= 1.5x" in page
    assert (
        "| amp='auto' / fp32, the lowest over every row | 0.98x (resnet_cifar train NCHW; the highest 0.98x) |" in page
    )
    results["machine"]["native_bf16"] = False
    page = bench["run"].markdown(results, "python bench/run.py")
    assert "auto runs fp32's own code here, so the spread is the noise" in page
    assert "### bf16 and amp='auto' against fp32" in page


def test_the_step_profile_finds_the_convolutions_and_splits_the_step_between_them_and_the_rest(bench, monkeypatch):
    bench_step_profile = importlib.import_module("bench_step_profile")
    monkeypatch.setattr(bench_step_profile.bench_models, "matmul_peak", lambda *a, **k: 1e11)
    monkeypatch.setattr(bench_step_profile.bench_models, "memory_bandwidth", lambda *a, **k: 2e10)
    found = bench_step_profile.breakdown("mnist_cnn", "fp32", channels_last=True, steps=1)
    # The profiler's names for oneDNN's convolutions are the ones looked for: a rename would leave 0% here.
    assert 0.05 < found["conv_share"] < 1
    rest = sum(ms for _, ms in found["rest"])
    assert found["conv_ms"] + rest == pytest.approx(found["step_ms"], rel=1e-6)
    assert found["conv_of_peak"] == pytest.approx(found["of_peak"] / found["conv_share"], rel=1e-6)
    assert not any(name in bench_step_profile.CONVOLUTION_OPS for name, _ in found["rest"])
    assert "would reach" in bench_step_profile.report(found, top=3)
    # The other operators' traffic as passes over the maps the step saved, and as time at the bandwidth.
    assert found["saved_mib"] > 0 and found["traffic_gb"] > 0
    line = bench_step_profile.traffic_line({**found, "traffic_gb": 2.0}, 200.0)
    assert "at least 2.00 GB" in line and f"({2e9 / 2**20 / found['saved_mib']:.1f} passes over the" in line
    assert "take 100 ms at the 20.0 GB/s of a 256 MiB copy" in line and "the peak is 5.0 FLOP per byte" in line
    assert "at 0.50x the copy's rate or more" in line


def test_the_traffic_counter_counts_what_operators_read_and_write_and_nothing_for_views_or_convolutions():
    bench_step_profile = importlib.import_module("bench_step_profile")
    x, column = torch.randn(4, 4), torch.randn(4, 1)  # 64 and 16 bytes
    image, kernel = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3)

    def step():
        y = x + column  # reads 64 + 16, writes 64
        y.relu_()  # reads and writes 64
        y.view(16)  # a view: nothing moves
        x * column.expand(4, 4)  # the expanded argument is its 16 bytes, not 64
        F.conv2d(image, kernel)  # a convolution: the profile's other half

    assert bench_step_profile.traffic_bytes(step) == 144 + 128 + 144


def test_the_step_profile_counts_each_saved_storage_once():
    bench_step_profile = importlib.import_module("bench_step_profile")
    x = torch.randn(4, 4, requires_grad=True)  # 64 bytes
    # mul keeps x twice (one storage), relu keeps its own output: 128 bytes, not 192.
    assert bench_step_profile.saved_bytes(lambda t: (t * t).relu(), x) == 128
    with torch.no_grad():
        assert bench_step_profile.saved_bytes(lambda t: (t * t).relu(), x) == 0


def test_the_bandwidth_probe_counts_the_bytes_read_and_the_bytes_written(bench, monkeypatch):
    models = bench["bench_models"]
    clock = iter(0.25 * i for i in range(100))  # every reading a quarter second after the last
    monkeypatch.setattr(models.time, "perf_counter", lambda: next(clock))
    # Readings: the start at 0, copies at 0.25, 0.5 and 0.75, the loop ends at 1.0, the end read at 1.25.
    assert models.memory_bandwidth(CPU, mib=1, seconds=1.0) == pytest.approx(2 * 2**20 * 3 / 1.25)


def test_the_page_sets_the_peak_against_the_memory_bandwidth_where_the_run_took_it(bench):
    run, results = bench["run"], _results("cpu")
    older = run.markdown(results, "python bench/run.py")  # results from before the probe render as before
    assert "| fp32 matmul peak / memory bandwidth |" not in older and "Memory bandwidth (" not in older
    results["models"]["peaks"].update(bandwidth=2e10, bandwidth_mib=256)
    page = run.markdown(results, "python bench/run.py")
    assert "| fp32 matmul peak / memory bandwidth | 5.0 FLOP per byte (100 GFLOP/s over 20.0 GB/s) |" in page
    assert "Memory bandwidth (256 MiB copied, the bytes read and written both counted): 20.0 GB/s" in page


def test_a_race_run_apart_joins_the_page_marked_with_its_date_and_a_file_without_one_is_refused(bench, tmp_path):
    run = bench["run"]
    race = {"seconds": 1723.4, "epoch": 35, "val_acc": 0.9026, "target": 0.9, "started": "2026-11-30 02:09"}
    (tmp_path / "tta.json").write_text(json.dumps({"machine": {}, "basic_cnn_race": race}))
    results = run.with_race_from({"date": "2026-12-01"}, str(tmp_path / "tta.json"))
    assert results["time_to_accuracy_cifar10"]["seconds"] == 1723.4
    opening = " ".join(run.measured_by(results, "python bench/run.py"))
    assert "on 2026-12-01; the `--long` CIFAR-10 race in a run of its own on 2026-11-30" in opening
    assert "Every other figure" in opening

    same_run = {"date": "2026-12-01", "time_to_accuracy_cifar10": race}
    assert "Every figure is a ratio" in " ".join(run.measured_by(same_run, "python bench/run.py --long"))

    (tmp_path / "models.json").write_text(json.dumps({"machine": {}, "models": {}}))
    with pytest.raises(SystemExit, match="expected a CIFAR-10 race.*found keys \\['machine', 'models'\\]"):
        run.with_race_from({}, str(tmp_path / "models.json"))


def test_fits_ratios_pair_the_runs_of_each_repetition_and_fall_back_to_medians_when_they_cannot(bench, monkeypatch):
    bench_fit = importlib.import_module("bench_fit")
    # The machine slowed between repetitions 1 and 2, for the fit run only: the medians read 0.6, the pairs 0.99.
    rates = {"minimal loop": [100.0, 200.0, 210.0], "fit, same settings": [99.0, 120.0, 207.9]}
    rates |= {"fit defaults": [200.0, 400.0, 420.0], "fit bf16": [190.0]}
    found = bench_fit.ratios(rates)
    assert found["fit_over_minimal"] == pytest.approx(0.99)
    assert found["defaults_over_minimal"] == pytest.approx(2.0)
    assert found["bf16_over_fp32"] == pytest.approx(190.0 / 120.0)  # one emulated run: the medians


def test_fit_benchmark_times_each_row_once_per_repetition_with_native_bf16_in_the_rotation(bench, monkeypatch):
    bench_fit = importlib.import_module("bench_fit")
    monkeypatch.setattr(bench_fit, "timed_rate", lambda *a: 100.0)
    monkeypatch.setattr(bench_fit, "minimal_loop", lambda *a: None)
    monkeypatch.setattr(bench_fit, "cpu_has_native_bf16", lambda: True)
    found = bench_fit.measure(images=128, epochs=1, reps=2)
    assert [len(r) for r in found["runs"].values()] == [2, 2, 2, 2]
    monkeypatch.setattr(bench_fit, "cpu_has_native_bf16", lambda: False)
    found = bench_fit.measure(images=128, epochs=1, reps=2)
    assert [len(r) for r in found["runs"].values()] == [2, 2, 2, 1]


def test_the_layout_benchmark_times_the_same_gradient_three_ways(bench):
    bench_layouts = importlib.import_module("bench_layouts")
    x = torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    residual = torch.randn(2, 8, 3, 3).contiguous(memory_format=torch.channels_last)
    upstream = torch.randn_like(residual)
    grads = []
    for subsampled in (lambda t: t[:, :, ::2, ::2], lambda t: F.avg_pool2d(t, 1, 2), lambda t: subsample(t, 2)):
        torch.manual_seed(0)  # the same gradient from the residual branch for each
        grads.append(bench_layouts.shortcut_step(x, residual, upstream, subsampled)())
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])
    assert grads[2].is_contiguous(memory_format=torch.channels_last)


def test_a_page_rendered_again_from_an_older_results_file_does_not_take_todays_date(bench):
    opening = " ".join(bench["run"].measured_by({"machine": {}}, "python bench/run.py"))
    assert "on a date its results file does not record" in opening


def test_the_step_profile_splits_inference_as_built_against_the_inference_goal(bench, monkeypatch):
    bench_step_profile = importlib.import_module("bench_step_profile")
    monkeypatch.setattr(bench_step_profile.bench_models, "matmul_peak", lambda *a, **k: 1e11)
    monkeypatch.setattr(bench_step_profile.bench_models, "memory_bandwidth", lambda *a, **k: 2e10)
    found = bench_step_profile.breakdown("mnist_cnn", "fp32", channels_last=True, steps=1, mode="infer")
    assert found["mode"] == "infer" and 0.05 < found["conv_share"] < 1
    assert not any("backward" in name for name, _ in found["rest"])  # no gradient was computed
    assert "inference as built" in bench_step_profile.report(found, top=3)
    assert "at 65% (the goal)" in bench_step_profile.report(found, top=3)
    assert found["saved_mib"] == 0 and found["traffic_gb"] > 0
    assert "passes over" not in bench_step_profile.report(found, top=3)
