"""Peak resident memory of training and inference runs, each in a fresh process.

The CIFAR-sized models train through the path a user takes: the whole 50,000-image training set
held as uint8 (150 MB, as the decoded cache holds it), a FastLoader at batch 128, and ``fit``
with validation. Peak memory is reached within the first steps and the first validation pass, so
each run stops after ``--steps`` batches, the way Ctrl-C stops fit. The goal for resnet_cifar is
<= 2 GB (airbench94's own script peaked at 5.9 GB on this kind of machine, holding floats).
The baseline is a process that has imported imgzoo and built nothing.

    python bench/bench_memory.py [--steps 30] [--models resnet_cifar basic_cnn]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys
import torch
import imgzoo
from imgzoo import callbacks, datasets
from imgzoo.loaders import FastLoader

name, steps, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def peak_mb():
    # VmHWM: this process image's peak. ru_maxrss would not do: Linux keeps it across exec, so a
    # child of a large parent reports the parent's size.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB; not Linux

if name == "baseline":
    print(json.dumps(peak_mb())); sys.exit()
kwargs = {"weights": None, "backbone": "resnet18"} if name == "dogbreed_transfer" else {}
model = imgzoo.create_model(name, **kwargs)
spec = model.data_spec
count = 50_000 if spec.size[0] <= 32 else 1_000  # the full CIFAR-10/MNIST training set; 224 px: 1,000
g = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (count, spec.channels, *spec.size), dtype=torch.uint8, generator=g)
labels = torch.randint(0, spec.num_classes, (count,), generator=g)
data = datasets.TensorImages(images, labels, classes=[str(i) for i in range(spec.num_classes)])
train_part, val_part = datasets.train_val_split(data, 0.1, seed=0)
batch = 128 if spec.size[0] <= 32 else 16
if mode == "infer":
    imgzoo.evaluate(model, FastLoader(val_part, 2 * batch, spec=spec))
else:
    class StopAfter(callbacks.Callback):
        def on_batch_end(self, state, step, loss):
            if step + 1 >= steps:
                raise KeyboardInterrupt  # fit stops here as on Ctrl-C and returns its History
    val = FastLoader(val_part, 2 * batch, spec=spec)
    train = FastLoader(train_part, batch, spec=spec, train=True)
    imgzoo.fit(model, train, val, epochs=1, callbacks=[StopAfter()], verbose=0)
    imgzoo.evaluate(model, val)
print(json.dumps(peak_mb()))
"""


def peak_mb(name: str, steps: int, mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(steps), mode], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{name} {mode} failed:\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    import imgzoo

    models = args.models or imgzoo.list_models()
    results = {"baseline (import imgzoo)": peak_mb("baseline", 0, "train")}
    for name in models:
        for mode in ("train", "infer"):
            results[f"{name} {mode}"] = peak_mb(name, args.steps, mode)
    for key, mb in results.items():
        print(f"{key:<32} peak RSS {mb:8.0f} MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
