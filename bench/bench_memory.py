"""Peak resident memory of training and inference runs, each in a fresh process.

The CIFAR-sized models train through the path a user takes: the whole 50,000-image training set
held as uint8 (150 MB, as the decoded cache holds it), a FastLoader at batch 128 (512 on a GPU), and ``fit``
with validation. Peak memory is reached within the first steps and the first validation pass, so
each run stops after ``--steps`` batches, the way Ctrl-C stops fit. The goal for resnet_cifar is
<= 2 GB (airbench94's own script peaked at 5.9 GB on this kind of machine, holding floats).
The baseline is a process that has imported imgzoo and built nothing.

On a GPU (``--device cuda``, or ``auto`` where there is one) the runs train there, and each also
reports torch.cuda.max_memory_allocated: the host's RSS no longer holds the activations.

    python bench/bench_memory.py [--steps 30] [--models resnet_cifar basic_cnn] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import device_choice
import torch

CHILD = r"""
import json, resource, sys
import torch
import imgzoo
from imgzoo import datasets
from imgzoo.train import callbacks
from imgzoo.data.loaders import FastLoader

name, steps, mode, device = sys.argv[1], int(sys.argv[2]), sys.argv[3], torch.device(sys.argv[4])
small_batch, large_batch = (int(b) for b in sys.argv[5].split(","))  # for 32 px and for larger images
def peak_mb():
    # VmHWM: this process image's peak. ru_maxrss would not do: Linux keeps it across exec, so a
    # child of a large parent reports the parent's size.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB; not Linux

def peaks():
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return json.dumps({"rss": peak_mb(), "cuda": cuda})

if name == "baseline":
    print(json.dumps({"rss": peak_mb(), "cuda": None})); sys.exit()
kwargs = {"weights": None, "backbone": "resnet18"} if name == "dogbreed_transfer" else {}
model = imgzoo.create_model(name, **kwargs)
spec = model.data_spec
count = 50_000 if spec.size[0] <= 32 else 1_000  # the full CIFAR-10/MNIST training set; 224 px: 1,000
batch = small_batch if spec.size[0] <= 32 else large_batch
g = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (count, spec.channels, *spec.size), dtype=torch.uint8, generator=g)
labels = torch.randint(0, spec.num_classes, (count,), generator=g)
data = datasets.TensorImages(images, labels, classes=[str(i) for i in range(spec.num_classes)])
train_part, val_part = datasets.train_val_split(data, 0.1, seed=0)
if mode == "infer":
    imgzoo.evaluate(model, FastLoader(val_part, 2 * batch, spec=spec, device=device), device=device)
else:
    class StopAfter(callbacks.Callback):
        def on_batch_end(self, state, step, loss):
            if step + 1 >= steps:
                raise KeyboardInterrupt  # fit stops here as on Ctrl-C and returns its History
    val = FastLoader(val_part, 2 * batch, spec=spec, device=device)
    train = FastLoader(train_part, batch, spec=spec, train=True, device=device)
    imgzoo.fit(model, train, val, epochs=1, callbacks=[StopAfter()], verbose=0, device=device)
    imgzoo.evaluate(model, val, device=device)
print(peaks())
"""

CPU = torch.device("cpu")


def peak_mb(name: str, steps: int, mode: str, device: torch.device = CPU) -> dict[str, float | None]:
    """Peak host RSS ("rss") and, on a GPU, peak CUDA memory allocated ("cuda", else None) of one run, in MiB.

    Host RSS alone would miss a GPU run's main cost: its activations live in the GPU's memory.
    """
    batches = f"{device_choice.batch_size(32, device)},{device_choice.batch_size(224, device)}"
    argv = [name, str(steps), mode, str(device), batches]
    out = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{name} {mode} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--json", help="also write the results here")
    device_choice.add_option(parser)
    args = parser.parse_args()
    device = device_choice.from_args(parser, args)
    import imgzoo

    models = args.models or imgzoo.list_models()
    results = {"baseline (import imgzoo)": peak_mb("baseline", 0, "train", device)}
    for name in models:
        for mode in ("train", "infer"):
            results[f"{name} {mode}"] = peak_mb(name, args.steps, mode, device)
    for key, mb in results.items():
        cuda = f"   peak CUDA allocated {mb['cuda']:8.0f} MB" if mb["cuda"] is not None else ""
        print(f"{key:<32} peak host RSS {mb['rss']:8.0f} MB{cuda}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
