"""How close each model runs to this machine's own limit: images/s as a fraction of the measured peak.

Each model's training and inference images/s (fp32 and bf16, NCHW and channels_last) over its FLOPs per image
(torch.utils.flop_counter) and the matmul peak probed between the timing windows; a ResNet-20 in plain PyTorch
runs beside resnet_cifar, so any overhead in imgzoo's model shows as a ratio. Configurations are interleaved so
that load from other processes hits all alike, and each is timed after a warm-up step.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import common
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import imgzoo

MODES = ("train", "infer")
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def calls_per_second(call: Callable[[], object], seconds: float, device: torch.device) -> float:
    """How often ``call`` runs a second, after one untimed call (thread pool, kernels, the pages first touched)."""
    call()
    common.sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        count += 1
    common.sync(device)
    return count / (time.perf_counter() - start)


def matmul_peak(device: torch.device = common.CPU, dtype: torch.dtype = torch.float32, n: int = 2048,
                seconds: float = 1.0) -> float:  # fmt: skip
    """FLOP/s of an n x n matmul: the ceiling any convolution network can approach on this machine."""
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    return 2 * n**3 * calls_per_second(lambda: a @ b, seconds, device)


# Larger than the 187 MiB of feature maps a ResNet-20 training step at batch 128 keeps for its backward pass
# (channels_last fp32): copied, it streams from memory as they do. On the 2-core Xeon with AMX a 32 MiB copy
# read 49.8 GB/s, partly from the caches, and 128, 256 and 512 MiB read 24.2 to 24.9 GB/s.
BANDWIDTH_MIB = 256


def memory_bandwidth(device: torch.device = common.CPU, mib: int = BANDWIDTH_MIB, seconds: float = 0.5) -> float:
    """Bytes/s of copying ``mib`` MiB, the bytes read and written both counted: the speed of batch norm, ReLU and a
    residual sum (under one FLOP per byte they move), at which a network runs between its convolutions."""
    source = torch.ones(mib * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    return 2 * source.nbytes * calls_per_second(lambda: target.copy_(source), seconds, device)


def peaks(device: torch.device, seconds: float = 1.0) -> dict:
    """The matmul peaks: fp32 at 2048 x 2048 on a CPU; on a GPU 8192 (2048 leaves it partly idle) in fp32 and bf16
    (tensor cores, far above fp32), with whether fp32 may use TF32 (by default not in matmuls, yes in cuDNN)."""
    if device.type != "cuda":
        return {"fp32": matmul_peak(device, seconds=seconds), "matmul_n": 2048}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TF32 flags' readers warn on some torch versions
        tf32 = {"tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    return {"fp32": matmul_peak(device, n=8192, seconds=seconds),
            "bf16": matmul_peak(device, torch.bfloat16, n=8192, seconds=seconds), "matmul_n": 8192, **tf32}  # fmt: skip


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
    """A ResNet-20 as a user writes it in plain PyTorch: resnet_cifar's overhead is measured against it."""

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


@dataclass
class Config:
    model: str
    mode: str  # "train" or "infer" (model(x) in eval mode)
    amp: str  # "fp32" or "bf16"
    channels_last: bool


@dataclass
class Result(Config):
    batch_size: int
    images_per_sec: float
    flops_per_image: float
    fraction_of_peak: float
    peak: str = "fp32"  # which matmul peak fraction_of_peak divides by: "fp32", or "bf16" for bf16 rows on a GPU
    windows: int = 0  # timing windows the row's median is taken over
    rates: list[float] = field(default_factory=list)  # images/s of each window, in the order they were timed


def build(name: str, device: torch.device = common.CPU) -> tuple[nn.Module, tuple[int, ...], int]:
    """The model (on the CPU), one image's shape and the batch size for ``device``."""
    if name == "plain_resnet20":
        return PlainResNet20(), (3, 32, 32), common.batch_size(32, device)
    kwargs = {"weights": None, "backbone": "resnet18"} if name == "dogbreed_transfer" else {}
    model = imgzoo.create_model(name, **kwargs)
    shape = model.data_spec.input_shape
    return model, shape, common.batch_size(shape[-1], device)


def flops_per_image(model: nn.Module, shape: tuple[int, ...], train: bool) -> float:
    x = torch.randn(2, *shape)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        if train:
            out.sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def step_function(model: nn.Module, cfg: Config, batch: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    device, dtype = batch.device, DTYPES[cfg.amp]
    precision = torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
    if cfg.mode == "infer":
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), precision:
                model(batch)

        return infer
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def train() -> None:
        with precision:
            loss = F.cross_entropy(model(batch), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return train


def time_steps(step: Callable[[], None], seconds: float, *, warmup_may_count: bool = False,
               device: torch.device = common.CPU) -> float:  # fmt: skip
    """Seconds per step: a warm-up step (it allocates gradients, optimizer state and oneDNN's kernels), then as many
    as fit in ``seconds``, at least one; with ``warmup_may_count`` (emulated bf16) the warm-up if it outlasts them."""
    start = time.perf_counter()
    step()
    common.sync(device)
    first = time.perf_counter() - start
    if warmup_may_count and first > seconds:
        return first
    count, start = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - start < seconds:
        step()
        count += 1
    common.sync(device)
    return (time.perf_counter() - start) / count


def schedule(configs: list[Config], rep: int) -> list[int]:
    """The order to time ``configs`` in: the models' matching configurations back to back, which model goes
    first alternating from one setting to the next and one rep to the next, so drift falls on all alike."""
    settings = list(dict.fromkeys((c.mode, c.amp, c.channels_last) for c in configs))
    order = []
    for j, setting in enumerate(settings):
        group = [i for i, c in enumerate(configs) if (c.mode, c.amp, c.channels_last) == setting]
        order += group[::-1] if (j + rep) % 2 else group
    return order


def measure(cfg: Config, seconds: float, device: torch.device, flops: dict) -> tuple[int, float]:
    """(batch size, images/s) of one configuration on ``device``; fills ``flops`` for its model and mode."""
    model, shape, batch_size = build(cfg.model, device)
    emulated = cfg.amp == "bf16" and not common.native_bf16(device)
    if emulated:  # a tenth of fp32's speed or less: a small batch keeps the row short
        batch_size = min(batch_size, 16)
    if (cfg.model, cfg.mode) not in flops:  # counted on the CPU: the same FLOPs
        flops[(cfg.model, cfg.mode)] = flops_per_image(model, shape, cfg.mode == "train")
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    batch = torch.randn(batch_size, *shape, device=device).contiguous(memory_format=fmt)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    step = step_function(model, cfg, batch, labels)
    return batch_size, batch_size / time_steps(step, seconds, warmup_may_count=emulated, device=device)


# The models and settings the goals name (resnet_cifar >= 55% / 65% of peak in channels_last, the plain
# ResNet-20 as the overhead baseline); bf16 where it is native, for bf16 >= 1.5x over fp32 (one full run read
# 1.44x from bf16's 3 windows where auto, the same code on that CPU, read 1.63x from 9).
GOAL_MODELS = ("resnet_cifar", "plain_resnet20")
GOAL_REPS = 9  # two full runs on a 2-core AMD EPYC put inference at 69% and 62% with 3 windows each, unchanged code


def run(models: list[str], reps: int, seconds: float, amps: list[str], device: torch.device = common.CPU,
        timed_layouts: tuple[bool, ...] = (False, True), goal_reps: int = 0) -> tuple[list[Result], dict]:  # fmt: skip
    """Every model x mode x amp x layout on ``device``, interleaved; the results and the peaks. The rows a goal is
    read from (GOAL_MODELS, channels_last, fp32 or native bf16) get ``goal_reps`` repetitions, the extra ones after.

    Each window's images/s is a fraction of the higher of the matmul probes either side of it, and a row reports
    the median of those: the speed moves by half from minute to minute (one run's probes read 90.9, 124.5 and 152.9
    GFLOP/s on a 2-core EPYC); with the probes' mean basic_cnn came to 101% of "peak".
    """
    configs = [Config(m, mode, amp, cl) for m in models for mode in MODES for amp in amps for cl in timed_layouts]
    windows: dict[int, list[tuple[float, int]]] = {i: [] for i in range(len(configs))}  # (rate, probe before)
    sizes: dict[int, int] = {}
    # Each probe runs half a window, at most a second: a 2048 x 2048 fp32 matmul takes about 0.1 s on 2 AVX2
    # cores, so even --quick's 0.25 s holds two or three.
    probe = min(1.0, seconds / 2)
    probes = [peaks(device, probe)]
    flops: dict[tuple[str, str], float] = {}
    native = common.native_bf16(device)
    goals = [i for i, c in enumerate(configs) if c.model in GOAL_MODELS and c.channels_last]
    goals = [i for i in goals if configs[i].amp == "fp32" or native]
    for rep in range(max(reps, goal_reps)):
        timed = range(len(configs)) if rep < reps else goals
        for j in schedule([configs[i] for i in timed], rep):
            i = timed[j]
            sizes[i], rate = measure(configs[i], seconds, device, flops)
            windows[i].append((rate, len(probes) - 1))
            probes.append(peaks(device, probe))
    found = dict(probes[0], probes=len(probes), paired=True)
    for key in ("fp32", "bf16") if "bf16" in found else ("fp32",):
        found[key] = statistics.median(p[key] for p in probes)
        found[f"{key}_highest"] = max(p[key] for p in probes)
    results = []
    for i, cfg in enumerate(configs):
        per_image = flops[(cfg.model, cfg.mode)]
        which = "bf16" if "bf16" in found and cfg.amp == "bf16" else "fp32"  # a bf16 peak is taken on a GPU only
        fraction = statistics.median(r * per_image / max(probes[k][which], probes[k + 1][which]) for r, k in windows[i])
        rates = [r for r, _ in windows[i]]
        results.append(Result(**asdict(cfg), batch_size=sizes[i], images_per_sec=statistics.median(rates),
                              flops_per_image=per_image, fraction_of_peak=fraction, peak=which,
                              windows=len(rates), rates=rates))  # fmt: skip
    return results, found


def overhead_ratio(results: list[Result]) -> dict[str, float]:
    """resnet_cifar over the plain ResNet-20 per matching configuration: the median ratio of the windows timed back
    to back, not the ratio of medians, which one run on a 2-core EPYC read from 0.93 to 1.22 over twelve settings
    of unchanged code; rows without per-window rates (older results files) fall back to it."""
    plain = {(r.mode, r.amp, r.channels_last): r for r in results if r.model == "plain_resnet20"}
    ratios = {}
    for r in results:
        other = plain.get((r.mode, r.amp, r.channels_last))
        if r.model != "resnet_cifar" or other is None:
            continue
        ratio = common.paired_ratio(r.rates or [r.images_per_sec], other.rates or [other.images_per_sec])
        ratios[f"{r.mode} {r.amp} {layout_name(r.channels_last)}"] = ratio
    return ratios


def layout_name(channels_last: bool) -> str:
    return "channels_last" if channels_last else "NCHW"


def precision_ratios(results: list[Result]) -> dict[str, float]:
    """bf16's images/s over fp32's per model, mode and layout (the goal: >= 1.5x where bf16 is native). A ratio
    of the rows' medians: the two are not timed back to back, so a drifting machine moves it by a few percent."""
    fp32 = {(r.model, r.mode, r.channels_last): r.images_per_sec for r in results if r.amp == "fp32"}
    return {
        f"{r.model} {r.mode} {layout_name(r.channels_last)}": r.images_per_sec
        / fp32[(r.model, r.mode, r.channels_last)]
        for r in results
        if r.amp == "bf16" and (r.model, r.mode, r.channels_last) in fp32
    }


def peak_lines(found: dict) -> list[str]:
    """The peaks as the table's heading states them, and the memory bandwidth where the run measured it."""
    n = found["matmul_n"]
    if "bf16" in found:
        allowed = {True: "allowed", False: "not allowed"}
        text = (f"fp32 matmul peak ({n} x {n}, TF32 {allowed[found['tf32_matmul']]} in matmuls): "
                f"{found['fp32'] / 1e12:.1f} TFLOP/s; bf16 matmul peak: {found['bf16'] / 1e12:.1f} TFLOP/s. Rows "
                "computing in bf16 are fractions of the bf16 peak, the others of the fp32 one.")  # fmt: skip
    else:
        text = f"fp32 matmul peak ({n} x {n}): median {found['fp32'] / 1e9:.1f} GFLOP/s"
        if "fp32_highest" in found:
            text += f", highest {found['fp32_highest'] / 1e9:.1f}, over {found['probes']} probes."
    text += " Each row is the median over its windows of a fraction of the higher of the probes either side of one."
    if "bandwidth" not in found:
        return [text]
    return [text, "", f"Memory bandwidth ({found['bandwidth_mib']} MiB copied, the bytes read and written both "
            f"counted): {found['bandwidth'] / 1e9:.1f} GB/s; the fp32 peak is {found['fp32'] / found['bandwidth']:.1f} "
            "FLOP per byte of it (see the findings below)."]  # fmt: skip


def cell(r: Result | None, batch_size: int) -> str:
    """A row's images/s and share of its peak, and its batch where it is not the line's (emulated bf16's 16)."""
    if r is None:
        return ""
    of = "" if r.peak == "fp32" else " of bf16"
    batch = "" if r.batch_size == batch_size else f", batch {r.batch_size}"
    return f"{r.images_per_sec:,.0f} ({100 * r.fraction_of_peak:.0f}%{of}{batch})"


def markdown(results: list[Result], found: dict) -> str:
    """One line per model, mode and layout: fp32's and bf16's images/s and shares of the peak, and their ratio."""
    ratios, by_key = precision_ratios(results), {(r.model, r.mode, r.channels_last, r.amp): r for r in results}
    lines = [*peak_lines(found), "", "| model | mode | layout | GFLOP/image | fp32: images/s (of peak) | "
             "bf16: images/s (of peak) | bf16 / fp32 |", "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for model, mode, channels_last in dict.fromkeys((r.model, r.mode, r.channels_last) for r in results):
        fp32, bf16 = (by_key.get((model, mode, channels_last, amp)) for amp in ("fp32", "bf16"))
        first, layout = fp32 or bf16, layout_name(channels_last)
        ratio = ratios.get(f"{model} {mode} {layout}")
        cells = [cell(fp32, first.batch_size), cell(bf16, first.batch_size), f"{ratio:.2f}x" if ratio else ""]
        lines.append(f"| {model} | {mode} | {layout} | {first.flops_per_image / 1e9:.3f} | {' | '.join(cells)} |")
    return "\n".join(lines)
