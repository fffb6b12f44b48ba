"""Peak resident memory of training and inference runs, each in a fresh process.

The path a user takes: 50,000 uint8 training images (150 MB; 1,000 at 224 px), the library's loader, and ``fit``
with validation, stopped after a few batches as by Ctrl-C (the peak comes within the first steps and validation
pass). The goal for resnet_cifar is <= 2 GB (airbench94's own script peaked at 5.9 GB on a 2-core CPU). The
baseline has imported imgzoo and built nothing. On a GPU, torch.cuda.max_memory_allocated too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import common
import torch

CHILD = r"""
import json, sys
name, steps, mode, device, batches, bench = sys.argv[1:7]
sys.path.insert(0, bench)
import torch, imgzoo, common
from imgzoo import datasets
from imgzoo.train.callbacks import Callback

device, steps = torch.device(device), int(steps)
def peaks():
    # VmHWM: this process image's peak. ru_maxrss would not do: Linux keeps it across exec, so a
    # child of a large parent reports the parent's size.
    rss = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return json.dumps({"rss": rss, "cuda": cuda})

if name == "baseline":
    print(peaks()); sys.exit()
import bench_models  # after the baseline, which imports imgzoo only
model = bench_models.build(name)[0]  # the model the speed rows time
spec = model.data_spec
small = spec.size[0] <= 32
count, batch = (50_000, int(batches.split(",")[0])) if small else (1_000, int(batches.split(",")[1]))
g = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (count, spec.channels, *spec.size), dtype=torch.uint8, generator=g)
labels = torch.randint(0, spec.num_classes, (count,), generator=g)
data = datasets.TensorImages(images, labels, classes=[str(i) for i in range(spec.num_classes)])
train_part, val_part = datasets.train_val_split(data, 0.1, seed=0)
val = common.loader(val_part, 2 * batch, device, spec=spec)
if mode == "train":
    class StopAfter(Callback):
        def on_batch_end(self, state, step, loss):
            if step + 1 >= steps:
                raise KeyboardInterrupt  # fit stops here as on Ctrl-C and returns its History
    train = common.loader(train_part, batch, device, spec=spec, train=True)
    imgzoo.fit(model, train, val, epochs=1, callbacks=[StopAfter()], verbose=0, device=device)
imgzoo.evaluate(model, val, device=device)
print(peaks())
"""


def peak_mb(name: str, steps: int, mode: str, device: torch.device) -> dict[str, float | None]:
    """Peak host RSS ("rss") and, on a GPU, peak CUDA memory allocated ("cuda", else None) of one run, in MiB."""
    batches = f"{common.batch_size(32, device)},{common.batch_size(224, device)}"
    argv = [name, str(steps), mode, str(device), batches, str(Path(__file__).resolve().parent)]
    out = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{name} {mode} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
