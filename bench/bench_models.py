"""How close each model runs to this machine's own limit: images/s as a fraction of the measured peak.

For every registered model: training (forward, backward, SGD step) and inference images/s, in
fp32, bf16 and amp="auto", in NCHW and channels_last. Inference is timed twice: "infer" runs
the model as built, "evaluate" the inference copy with batch norm folded into the convolutions
(imgzoo.fold_batchnorm).
Each is turned into a fraction of the machine's fp32 peak, measured in the same run by large matmul
probes taken between the timing windows, using the model's FLOPs per image counted by
torch.utils.flop_counter. A minimal ResNet-20 written in plain PyTorch in this file runs beside
imgzoo's resnet_cifar, so any overhead in imgzoo's model shows as a ratio.

Runs are interleaved (every configuration once, then again) so that load from other processes
hits all alike; the median is reported. The models' matching configurations run back to back, the
first of them alternating, and each is timed after a warm-up step. Only ratios measured in one run
are comparable.

On a GPU (``--device cuda``, or ``auto`` where there is one) the same rows run there: batches of
512 (64 at 224 px), the peaks measured at 8192 x 8192 in fp32 and bf16, the clock read after
the GPU's queue is drained.

    python bench/bench_models.py [--quick] [--device auto|cpu|cuda] [--models resnet_cifar basic_cnn] [--json out.json]
                                 [--page docs/page.md]

The bf16 and amp="auto" rows are also set against fp32 (precision_ratios): on a CPU with native bf16
the goal is bf16 >= 1.5x, and auto is never to be slower than fp32 anywhere. ``--page`` writes this
benchmark alone as a Markdown page headed by the machine (docs/benchmarks-native-bf16.md came from it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import device_choice
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.optimization import fuse as fx_fuse
from torch.utils.flop_counter import FlopCounterMode

import imgzoo
from imgzoo._device import amp_dtype, autocast, cpu_has_native_bf16, describe_machine

CPU = torch.device("cpu")
MODES = ("train", "infer", "evaluate")


def layouts(quick: bool) -> tuple[bool, ...]:
    """The layouts timed, as channels_last False/True. --quick times channels_last only: the layout fit trains
    in on a CPU (and on a GPU under bf16/fp16), and the one the goals name. NCHW doubles the windows, from 18
    to 36: about 25 s of --quick's two minutes on a 2-core AMD EPYC (AVX2)."""
    return (True,) if quick else (False, True)


def matmul_peak(device: torch.device = CPU, dtype: torch.dtype = torch.float32, n: int = 2048,
                seconds: float = 1.0) -> float:  # fmt: skip
    """FLOP/s of an n x n matmul: the ceiling any convolution network can approach on this machine.

    A GPU runs ahead of the clock, so its queue is drained before the clock is read at both ends.
    """
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b  # warm-up: thread pool, kernels
    device_choice.sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    device_choice.sync(device)
    return 2 * n**3 * count / (time.perf_counter() - start)


# Larger than the 187 MiB of feature maps a ResNet-20 training step at batch 128 keeps for its backward pass
# (channels_last fp32; bench_step_profile.saved_bytes): copied, it streams from memory as they do. On the 2-core
# Xeon with AMX, memory_bandwidth(mib=32) read 49.8 GB/s, partly from the caches, and 128, 256 and 512 MiB read
# 24.2 to 24.9 GB/s.
BANDWIDTH_MIB = 256


def memory_bandwidth(device: torch.device = CPU, mib: int = BANDWIDTH_MIB, seconds: float = 0.5) -> float:
    """Bytes/s of copying ``mib`` MiB, the bytes read and the bytes written both counted.

    The speed of a pass over feature maps: batch norm, ReLU and a residual sum do under one FLOP per
    byte they move, so between its convolutions a network runs at this speed, whatever the matmul peak.
    """
    source = torch.ones(mib * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    target.copy_(source)  # warm-up: the pages of both buffers are touched once before the clock starts
    device_choice.sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        target.copy_(source)
        count += 1
    device_choice.sync(device)
    return 2 * source.nbytes * count / (time.perf_counter() - start)


def peaks(device: torch.device, seconds: float = 1.0) -> dict:
    """The matmul peaks the rows are fractions of, with what decides them.

    On a CPU: fp32 at 2048 x 2048, as before. On a GPU: 8192 x 8192, since 2048 leaves a large GPU
    partly idle; bf16 too, because bf16 rows there run on tensor cores far above the fp32 peak; and
    whether fp32 may use TF32 (PyTorch's defaults: not in matmuls, yes in cuDNN's convolutions).
    """
    if device.type != "cuda":
        return {"fp32": matmul_peak(device, seconds=seconds), "matmul_n": 2048}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TF32 flags' readers warn on some torch versions
        tf32 = {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    return {"fp32": matmul_peak(device, n=8192, seconds=seconds),
            "bf16": matmul_peak(device, torch.bfloat16, n=8192, seconds=seconds), "matmul_n": 8192, **tf32}  # fmt: skip


def probe_seconds(window: float) -> float:
    """How long each probe between timing windows runs: half a window, at most a second.

    A 2048 x 2048 fp32 matmul takes about 0.1 s on 2 AVX2 cores, so even --quick's 0.25 s holds two
    or three of them; the probes add half the windows' own time to the models section.
    """
    return min(1.0, window / 2)


def summarise(probes: list[dict]) -> dict:
    """The probes of a run in one dict: the median of each peak, the highest, and how many there were.

    Every row is a fraction of the probes taken on either side of its windows (see run), so these
    are what the table's heading reports, not what the rows divide by.
    """
    found = dict(probes[0])
    for key in ("fp32", "bf16"):
        if key in found:
            found[key] = statistics.median(p[key] for p in probes)
            found[f"{key}_highest"] = max(p[key] for p in probes)
    return {**found, "probes": len(probes), "paired": True}


# ------------------------------------------------------------------ a plain ResNet-20, as a user writes it


class PlainBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin  # option A: zero-pad the channels, subsample by striding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
        short = x if self.pad == 0 else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad // 2))
        return F.relu(out + short)


class PlainResNet20(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, cin = [], 16
        for cout in (16, 32, 64):
            for i in range(3):
                blocks.append(PlainBlock(cin, cout, 2 if cout != 16 and i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


# ------------------------------------------------------------------ measuring


@dataclass
class Config:
    model: str
    mode: str  # "train", "infer" (model(x) in eval mode) or "evaluate" (batch norm folded, as evaluate runs it)
    amp: str  # "fp32", "bf16" or "auto"
    channels_last: bool


@dataclass
class Result(Config):
    batch_size: int
    images_per_sec: float
    flops_per_image: float
    fraction_of_peak: float
    peak: str = "fp32"  # which matmul peak fraction_of_peak divides by: "fp32", or "bf16" for bf16 rows on a GPU
    windows: int = 0  # timing windows the row's median is taken over (0: a results file from before they were kept)
    rates: list[float] = field(default_factory=list)  # images/s of each window, in the order they were timed


def build(name: str, device: torch.device = CPU) -> tuple[nn.Module, tuple[int, ...], int]:
    """The model (on the CPU), one image's shape and the batch size for ``device`` (device_choice.BATCH)."""
    if name == "plain_resnet20":
        return PlainResNet20(), (3, 32, 32), device_choice.batch_size(32, device)
    kwargs = {"weights": None, "backbone": "resnet18"} if name == "dogbreed_transfer" else {}
    model = imgzoo.create_model(name, **kwargs)
    shape = model.data_spec.input_shape
    return model, shape, device_choice.batch_size(shape[-1], device)


def flops_per_image(model: nn.Module, shape: tuple[int, ...], train: bool) -> float:
    x = torch.randn(2, *shape)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        if train:
            out.sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def folded(name: str, model: nn.Module, device: torch.device = CPU) -> nn.Module:
    """The network inference runs in "evaluate" rows.

    imgzoo's models with batch norm folded (imgzoo.fold_batchnorm); the plain ResNet-20 as a user
    would fold it by hand, with torch.fx's fuse.
    """
    if name == "plain_resnet20":
        return fx_fuse(model.eval())
    return imgzoo.fold_batchnorm(model)


def step_function(model: nn.Module, cfg: Config, batch: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    device = batch.device
    dtype = amp_dtype(cfg.amp, device)
    if cfg.mode in ("infer", "evaluate"):
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), autocast(device, dtype):
                model(batch)

        return infer
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def train() -> None:
        with autocast(device, dtype):
            loss = F.cross_entropy(model(batch), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return train


def time_steps(
    step: Callable[[], None], seconds: float, *, warmup_may_count: bool = False, device: torch.device = CPU
) -> float:
    """Seconds per step: a warm-up step, then as many as fit in ``seconds`` (at least one).

    The warm-up step is never the measurement, except with ``warmup_may_count`` (emulated bf16: a
    tenth of fp32's speed, left out of the overhead ratios) when it alone outlasts the window. A
    first step allocates gradients and optimizer state, and the process's first one builds oneDNN's
    kernels as well, so a --quick run (0.5 s windows, about one ResNet-20 step at batch 128 on two
    cores) would report that step as the model's speed. On a GPU the queue is drained before each
    clock read: the steps are only launched when the loop moves on.
    """
    start = time.perf_counter()
    step()
    device_choice.sync(device)
    first = time.perf_counter() - start
    if warmup_may_count and first > seconds:
        return first
    count, start = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - start < seconds:
        step()
        count += 1
    device_choice.sync(device)
    return (time.perf_counter() - start) / count


def schedule(configs: list[Config], rep: int) -> list[int]:
    """The order to time ``configs`` in: the models' matching configurations back to back.

    Which model goes first alternates from one setting to the next and from one rep to the next,
    so that a drift in load from other processes falls on every model alike.
    """
    settings = list(dict.fromkeys((c.mode, c.amp, c.channels_last) for c in configs))
    order = []
    for j, setting in enumerate(settings):
        group = [i for i, c in enumerate(configs) if (c.mode, c.amp, c.channels_last) == setting]
        order += group[::-1] if (j + rep) % 2 else group
    return order


def measure(cfg: Config, seconds: float, device: torch.device, flops: dict) -> tuple[int, float]:
    """(batch size, images/s) of one configuration on ``device``; fills ``flops`` for its model and mode."""
    model, shape, batch_size = build(cfg.model, device)
    # Emulated bf16 (a CPU without native bf16) runs at a tenth of fp32's speed or less: a small batch
    # keeps the row short. A GPU computes bf16 natively.
    emulated = device.type == "cpu" and cfg.amp == "bf16" and not cpu_has_native_bf16()
    if emulated:
        batch_size = min(batch_size, 16)
    key = (cfg.model, cfg.mode)
    if key not in flops:  # "evaluate" counts the unfolded network's FLOPs: folding saves memory passes, not FLOPs
        flops[key] = flops_per_image(model, shape, cfg.mode == "train")  # counted on the CPU: same FLOPs
    if cfg.mode == "evaluate":
        model = folded(cfg.model, model, device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    batch = torch.randn(batch_size, *shape, device=device).contiguous(memory_format=fmt)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    step = step_function(model, cfg, batch, labels)
    return batch_size, batch_size / time_steps(step, seconds, warmup_may_count=emulated, device=device)


def peak_name(cfg: Config, device: torch.device, found: dict) -> str:
    """The peak a row is a fraction of: bf16 where it computes in bf16 and a bf16 peak was measured (a GPU)."""
    return "bf16" if "bf16" in found and amp_dtype(cfg.amp, device) is torch.bfloat16 else "fp32"


# The models and settings the goals name (resnet_cifar >= 55% / 65% of peak in channels_last, the plain
# ResNet-20 as the overhead baseline); fp32 and amp="auto", the precision a user gets on any machine; and bf16
# where it is native, for the goal bf16 >= 1.5x over fp32 (one full run read 1.44x from bf16's 3 windows where
# auto, the same code on that CPU, read 1.63x from 9: the ratio needs as many windows as the fp32 row under it).
GOAL_MODELS = ("resnet_cifar", "plain_resnet20")
GOAL_REPS = 9  # a full run's windows for those rows (see run); --quick gives every row one


def goal_row(cfg: Config, native_bf16: bool = False) -> bool:
    """Whether a goal of the benchmark is read from this row: it gets goal_reps windows rather than reps."""
    amps = ("fp32", "auto", "bf16") if native_bf16 else ("fp32", "auto")
    return cfg.model in GOAL_MODELS and cfg.channels_last and cfg.amp in amps


def run(
    models: list[str],
    reps: int,
    seconds: float,
    amps: list[str],
    device: torch.device = CPU,
    timed_layouts: tuple[bool, ...] = (False, True),
    goal_reps: int = 0,
) -> tuple[list[Result], dict]:
    """Every model x mode x amp x layout (channels_last False/True) on ``device``, interleaved; the results
    and the peaks (see summarise).

    The rows a goal is read from (goal_row) are timed ``goal_reps`` times where that is more than
    ``reps``, the extra repetitions interleaved among themselves after the others: two full runs on a
    2-core AMD EPYC (AVX2) put resnet_cifar's inference at 69% and 62% of peak with three windows each
    and unchanged code, a swing across its 65% goal. Nine windows narrow a median's spread by about
    sqrt(3) where the windows' noise is independent, for about four minutes more (12 rows x 6 windows of
    2 s, each with its probe and warm-up step); the first run with nine still read training 4 points
    below the run before it, so drift over minutes remains.

    A matmul probe runs between every two timing windows, and each window's images/s becomes a
    fraction of the higher of the probes on either side of it; a row reports the median of those
    fractions. On these shared machines the speed moves by half from one minute to the next (one run's
    probes read 90.9, 124.5 and 152.9 GFLOP/s on a 2-core EPYC): a row divided by a peak caught at
    another moment measures the machine's load, not the model. The higher neighbour, not the one
    before alone nor their mean: a single probe is as noisy as the window it serves (in one --quick run
    a 0.25 s probe read about 90 GFLOP/s where the run's median was 140, and put the next row at 100%),
    and with the mean basic_cnn's convolutions came to 101% of "peak"; the most the machine gave around
    a window is the honest ceiling for it.
    """
    configs = [Config(m, mode, amp, cl) for m in models for mode in MODES for amp in amps for cl in timed_layouts]
    windows: dict[int, list[tuple[float, int]]] = {i: [] for i in range(len(configs))}  # (rate, probe before)
    sizes: dict[int, int] = {}
    probes = [peaks(device, probe_seconds(seconds))]
    warnings.filterwarnings("ignore", message="amp='bf16' on a CPU without native bf16")  # measured, not news
    flops: dict[tuple[str, str], float] = {}
    native_bf16 = device.type == "cuda" or cpu_has_native_bf16()
    goals = [i for i, cfg in enumerate(configs) if goal_row(cfg, native_bf16)]
    for rep in range(max(reps, goal_reps)):
        timed = range(len(configs)) if rep < reps else goals
        for j in schedule([configs[i] for i in timed], rep):
            i = timed[j]
            sizes[i], rate = measure(configs[i], seconds, device, flops)
            windows[i].append((rate, len(probes) - 1))
            probes.append(peaks(device, probe_seconds(seconds)))
    found = summarise(probes)
    results = []
    for i, cfg in enumerate(configs):
        per_image, which = flops[(cfg.model, cfg.mode)], peak_name(cfg, device, found)
        rate = statistics.median(r for r, _ in windows[i])
        fraction = statistics.median(r * per_image / max(probes[k][which], probes[k + 1][which]) for r, k in windows[i])
        results.append(Result(**asdict(cfg), batch_size=sizes[i], images_per_sec=rate, flops_per_image=per_image,
                              fraction_of_peak=fraction, peak=which, windows=len(windows[i]),
                              rates=[r for r, _ in windows[i]]))  # fmt: skip
    return results, found


def peak_lines(found: dict | float) -> list[str]:
    """The peaks as the table's heading states them (a bare float: a results.json from a CPU-only version),
    and the memory bandwidth where the run measured it."""
    if not isinstance(found, dict):
        found = {"fp32": found, "matmul_n": 2048}
    lines = matmul_lines(found)
    return [*lines, "", bandwidth_line(found)] if "bandwidth" in found else lines


def bandwidth_line(found: dict) -> str:
    """The bandwidth, and the machine's balance: how many FLOPs the fp32 peak does in the time a byte moves."""
    bandwidth = found["bandwidth"]
    return (
        f"Memory bandwidth ({found['bandwidth_mib']} MiB copied, the bytes read and written both counted): "
        f"{bandwidth / 1e9:.1f} GB/s, the higher of a probe before the rows and one after them. The fp32 peak's "
        f"median is {found['fp32'] / bandwidth:.1f} FLOP per byte of it. Batch norm, ReLU and a residual sum do "
        "under one FLOP per byte they move, so they run at this speed, and the higher that balance, the smaller "
        "the share of the peak a training step reaches while those passes stay apart from the convolutions."
    )


def matmul_lines(found: dict) -> list[str]:
    n = found["matmul_n"]
    if "bf16" not in found:
        if found.get("paired"):
            return [
                f"fp32 matmul peak ({n} x {n}): median {found['fp32'] / 1e9:.1f} GFLOP/s, highest "
                f"{found['fp32_highest'] / 1e9:.1f}, over {found['probes']} probes. Each row is a fraction of the "
                "higher of the probes taken just before and just after its timing window (the median over its "
                "repetitions)."
            ]
        probes = f", the highest of {found['probes']} probes spread over the run" if "probes" in found else ""
        return [f"fp32 matmul peak ({n} x {n}{probes}): {found['fp32'] / 1e9:.1f} GFLOP/s"]
    tf32 = {True: "allowed", False: "not allowed"}
    return [
        f"fp32 matmul peak ({n} x {n}, TF32 {tf32[found['tf32_matmul']]} in matmuls): "
        f"{found['fp32'] / 1e12:.1f} TFLOP/s; bf16 matmul peak ({n} x {n}): {found['bf16'] / 1e12:.1f} TFLOP/s. "
        f"Rows computing in bf16 are fractions of the bf16 peak, the others of the fp32 one; cuDNN's fp32 "
        f"convolutions {'may' if found['tf32_cudnn'] else 'may not'} use TF32 (PyTorch's default: they may)."
        + (
            " Each row is a fraction of the higher of the probes on either side of its timing window."
            if found.get("paired")
            else ""
        ),
    ]


def markdown(results: list[Result], found: dict | float) -> str:
    counted = any(r.windows for r in results)  # results files from before the windows were kept have no count
    lines = [
        *peak_lines(found),
        "",
        "| model | mode | amp | layout | batch | images/s | GFLOP/image | of peak |"
        + (" windows |" if counted else ""),
        "|---|---|---|---|---:|---:|---:|---:|" + ("---:|" if counted else ""),
    ]
    for r in results:
        layout = "channels_last" if r.channels_last else "NCHW"
        which = "" if r.peak == "fp32" else f" of {r.peak}"
        lines.append(
            f"| {r.model} | {r.mode} | {r.amp} | {layout} | {r.batch_size} | {r.images_per_sec:,.0f} | "
            f"{r.flops_per_image / 1e9:.3f} | {100 * r.fraction_of_peak:.0f}%{which} |"
            + (f" {r.windows} |" if counted else "")
        )
    return "\n".join(lines)


def overhead_ratio(results: list[Result]) -> dict[str, float]:
    """imgzoo's resnet_cifar against the plain ResNet-20, per matching configuration (goal >= 0.98).

    Training and inference of the model as built: the "evaluate" rows run imgzoo's fused inference copy
    against the plain network folded by hand, which is a speed-up of evaluate's, not the model's overhead.

    The median of the ratios of the windows timed back to back (schedule runs the two models' matching
    rows next to each other in every repetition), not the ratio of the two medians: the machine's speed
    drifts over minutes, and a pair of neighbouring windows shares it where two medians need not. One
    full run on a 2-core AMD EPYC (AVX2) read the ratio of medians between 0.93 and 1.22 over twelve
    fp32/auto settings of unchanged code. Rows without per-window rates (older results) fall back to the
    ratio of medians.
    """
    plain = {(r.mode, r.amp, r.channels_last): r for r in results if r.model == "plain_resnet20"}
    ratios = {}
    for r in results:
        key = (r.mode, r.amp, r.channels_last)
        if r.model != "resnet_cifar" or key not in plain or r.mode == "evaluate":
            continue
        other = plain[key]
        paired = bool(r.rates) and len(r.rates) == len(other.rates)
        ratio = (
            statistics.median(a / b for a, b in zip(r.rates, other.rates, strict=True))
            if paired
            else r.images_per_sec / other.images_per_sec
        )
        ratios[f"{r.mode} {r.amp} {'channels_last' if r.channels_last else 'NCHW'}"] = ratio
    return ratios


def precision_ratios(results: list[Result]) -> dict[str, dict[str, float]]:
    """bf16 and amp="auto" against fp32, per model, mode and layout: images/s over fp32's images/s.

    The goals: bf16 >= 1.5x where the device computes bf16 natively (AVX512-BF16 or AMX on a CPU), and
    auto never below fp32 on any machine (it is bf16 only where bf16 is native). A ratio of the rows'
    medians: the three precisions of a row are not timed back to back, so a drifting machine moves
    these by a few percent.
    """
    by_key = {(r.model, r.mode, r.channels_last, r.amp): r.images_per_sec for r in results}
    ratios: dict[str, dict[str, float]] = {}
    for (model, mode, channels_last, amp), rate in by_key.items():
        fp32 = by_key.get((model, mode, channels_last, "fp32"))
        if amp == "fp32" or not fp32:
            continue
        key = f"{model} {mode} {'channels_last' if channels_last else 'NCHW'}"
        ratios.setdefault(key, {})[f"{amp} / fp32"] = rate / fp32
    return ratios


def precision_lines(results: list[Result]) -> list[str]:
    """The Markdown table of precision_ratios, one row per model, mode and layout."""
    ratios = precision_ratios(results)
    if not ratios:
        return []
    lines = ["| model, mode, layout | bf16 / fp32 | auto / fp32 |", "|---|---:|---:|"]
    for key, found in ratios.items():
        cells = [f"{found[name]:.2f}x" if name in found else "" for name in ("bf16 / fp32", "auto / fp32")]
        lines.append(f"| {key} | {' | '.join(cells)} |")
    return lines


def page(results: list[Result], found: dict | float, machine: dict, command: str) -> str:
    """A Markdown page of this benchmark alone, headed by the machine: for a machine the full suite did not run on."""
    ratios = overhead_ratio(results)
    return "\n".join(
        [
            "# Model speed on a CPU with native bf16",
            "",
            f"Measured by `{command}` on {time.strftime('%Y-%m-%d')}: the model-speed section of the full suite",
            "(docs/benchmarks.md) alone, on a machine whose CPU computes bf16 natively. Every figure is a ratio of",
            "two things measured side by side in that one run.",
            "",
            "| machine | |",
            "|---|---|",
            f"| CPU | {machine['cpu']}, {machine['cores']} cores, {torch.get_num_threads()} threads |",
            f"| vector capability | {machine['cpu_capability']} |",
            f"| native bf16 | {'yes' if machine['native_bf16'] else 'no'} |",
            f"| torch | {machine['torch']} |",
            "",
            "## bf16 and amp='auto' against fp32",
            "",
            "Goals: bf16 >= 1.5x over fp32 on a CPU with native bf16; auto never slower than fp32.",
            "",
            *precision_lines(results),
            "",
            "## resnet_cifar against the plain ResNet-20",
            "",
            "| setting | resnet_cifar / plain |",
            "|---|---:|",
            *[f"| {name} | {ratio:.3f} |" for name, ratio in ratios.items()],
            "",
            "## Images/s against the machine's peak",
            "",
            markdown(results, found),
            "",
        ]
    )


def window(quick: bool, device: torch.device) -> float:
    """Seconds each configuration is timed for. A GPU step takes milliseconds, so half a second holds
    hundreds of them and a longer window would add only minutes; a CPU step can take a second."""
    return 0.5 if quick or device.type == "cuda" else 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    parser.add_argument(
        "--quick", action="store_true", help="resnet_cifar and the plain ResNet-20 only, channels_last, one rep"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--goal-reps", type=int, default=GOAL_REPS, help="windows of the rows a goal names")
    parser.add_argument("--seconds", type=float, default=None, help="timing window (default: 2.0 on CPU, 0.5 on GPU)")
    parser.add_argument("--amp", nargs="*", default=["fp32", "bf16", "auto"])
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--page", help="also write a Markdown page of these results, headed by the machine, here")
    device_choice.add_option(parser)
    args = parser.parse_args()
    device = device_choice.from_args(parser, args)
    models = args.models or (["resnet_cifar"] if args.quick else imgzoo.list_models())
    models = [*models, "plain_resnet20"] if "resnet_cifar" in models else models
    reps = 1 if args.quick else args.reps
    seconds = args.seconds or window(args.quick, device)
    results, found = run(
        models, reps, seconds, args.amp, device, layouts(args.quick), 0 if args.quick else args.goal_reps
    )
    machine = describe_machine(device)
    print(f"machine: {machine}, {device}, {torch.get_num_threads()} threads, median of each row's interleaved windows")
    print(markdown(results, found))
    ratios = overhead_ratio(results)
    for name, ratio in ratios.items():
        print(f"resnet_cifar / plain ResNet-20, {name}: {ratio:.3f}  (goal >= 0.98)")
    print("\n".join(precision_lines(results)))
    if args.page:
        command = "python bench/bench_models.py " + " ".join(sys.argv[1:])
        with open(args.page, "w") as f:
            f.write(page(results, found, machine, command))
    if args.json:
        payload = {"machine": machine, "device": str(device), "peak_flops": found["fp32"], "peaks": found,
                   "results": [asdict(r) for r in results], "resnet_cifar_over_plain": ratios}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)


if __name__ == "__main__":
    main()
