"""Start-up costs a user pays before the first prediction, each in a fresh interpreter.

- ``import imgzoo`` against ``import torch, torchvision`` (goal: at most 0.3 s more), as the difference
  of two interpreters' wall times and, far less noisy on a busy machine, as the time ``import imgzoo``
  takes in an interpreter that has imported torch and torchvision already;
- ``imgzoo.load("mnist_cnn.mnist")`` from the file shipped in the package (goal: <= 100 ms);
- loading a Hub entry from a filled cache with HF_HUB_OFFLINE=1 (goal: <= 200 ms plus the file read),
  pushed first to the loopback Hub-compatible server the test suite uses.

The runs are interleaved and the median of each is reported. imgzoo's modules are compiled to
bytecode first, as ``pip install`` does: with PYTHONDONTWRITEBYTECODE set and no ``__pycache__``, every
run would compile them from source again (0.1 to 0.2 s on a 2-core machine) and count that as import time.
"""

from __future__ import annotations

import compileall
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMPORT_BASE = "import torch, torchvision"
IMPORT_IMGZOO = "import imgzoo"
# Timed inside the process: what imgzoo adds to torch and torchvision, without their seconds of noise.
IMPORT_EXTRA = """
import time, json, torch, torchvision
start = time.perf_counter()
import imgzoo
print(json.dumps(time.perf_counter() - start))
"""
# Timed inside the process, after the import: only the load itself.
LOAD_TIMED = """
import time, json, imgzoo
start = time.perf_counter()
imgzoo.load({name!r})
print(json.dumps(time.perf_counter() - start))
"""


def wall_time(code: str, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - start


def timed_inside(code: str, env: dict[str, str] | None = None) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def hub_cache(tmp: Path) -> tuple[str, dict[str, str]]:
    """Push mnist_cnn.mnist's weights to a loopback Hub, download them once; return the name and offline env."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hub_server import HubServer  # the test suite's loopback Hub-compatible server

    server = HubServer("bench-token", lifetime=300).start()  # a daemon thread: it ends with this process
    env = {**os.environ, "HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp / "hf"), "HF_TOKEN": "bench-token"}
    push = (
        "import imgzoo; m = imgzoo.load('mnist_cnn.mnist'); "
        "c = imgzoo.push_to_hub(m, 'bench/mnist', token='bench-token'); "
        "imgzoo.load('hf-hub:bench/mnist')"
    )
    subprocess.run([sys.executable, "-c", push], check=True, env=env, capture_output=True)
    return "hf-hub:bench/mnist", {**env, "HF_HUB_OFFLINE": "1"}


def compile_package() -> None:
    """Write imgzoo's bytecode where it is imported from, as an installed package has it."""
    spec = importlib.util.find_spec("imgzoo")
    if spec is not None and spec.origin is not None:
        compileall.compile_dir(Path(spec.origin).parent, quiet=1)  # a read-only install is left as it is


def run(reps: int, wall_times: bool = True) -> dict[str, float]:
    """The median seconds of each start-up figure over ``reps`` interleaved runs.

    ``wall_times=False`` leaves out the two whole-interpreter import times, whose difference swings
    by a second on a busy machine (bench/run.py --quick): the goal is read from "import imgzoo after torch".
    """
    compile_package()
    names = ["import torch, torchvision", "import imgzoo"] if wall_times else []
    samples: dict[str, list[float]] = {name: [] for name in [*names, "import imgzoo after torch", "load shipped"]}
    with tempfile.TemporaryDirectory() as tmp:
        hub_name, hub_env = None, None
        try:
            hub_name, hub_env = hub_cache(Path(tmp))
            samples["load cached Hub entry"] = []
        except Exception as error:  # the server lives in tests/; a missing piece skips this row only
            print(f"(cached Hub entry not measured: {error!r})")
        for _ in range(reps):
            if wall_times:
                samples["import torch, torchvision"].append(wall_time(IMPORT_BASE))
                samples["import imgzoo"].append(wall_time(IMPORT_IMGZOO))
            samples["import imgzoo after torch"].append(timed_inside(IMPORT_EXTRA))
            samples["load shipped"].append(timed_inside(LOAD_TIMED.format(name="mnist_cnn.mnist")))
            if hub_name is not None:
                samples["load cached Hub entry"].append(timed_inside(LOAD_TIMED.format(name=hub_name), hub_env))
    return {name: statistics.median(values) for name, values in samples.items()}
