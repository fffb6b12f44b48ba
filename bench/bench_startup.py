"""Start-up costs a user pays before the first prediction, each timed inside a fresh interpreter, interleaved.

``import imgzoo`` after torch and torchvision (timed as the difference of two whole interpreters it swung by up
to 0.8 s on a 2-core AMD EPYC); ``imgzoo.load("mnist_cnn.mnist")``; a Hub entry from a filled cache, offline,
pushed first to the test suite's loopback Hub. imgzoo is compiled to bytecode first, as ``pip install`` does:
otherwise every run would compile it again (0.1 to 0.2 s) and count that as import time.
"""

from __future__ import annotations

import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT = "import time, json, torch, torchvision\nstart = time.perf_counter()\nimport imgzoo\n"
LOAD = "import time, json, imgzoo\nstart = time.perf_counter()\nimgzoo.load({name!r})\n"
TOLD = "print(json.dumps(time.perf_counter() - start))"


def timed_inside(code: str, env: dict[str, str] | None = None) -> float:
    """Seconds ``code`` reports for itself from a fresh interpreter: only the part it times."""
    out = subprocess.run([sys.executable, "-c", code + TOLD], check=True, env=env, capture_output=True, text=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def hub_cache(tmp: Path) -> tuple[str, dict[str, str]]:
    """Push mnist_cnn.mnist's weights to a loopback Hub, download them once; return the name and offline env."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hub_server import HubServer  # the test suite's loopback Hub-compatible server

    server = HubServer("bench-token", lifetime=300).start()  # a daemon thread: it ends with this process
    env = {**os.environ, "HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp / "hf"), "HF_TOKEN": "bench-token"}
    push = (
        "import imgzoo; m = imgzoo.load('mnist_cnn.mnist'); "
        "imgzoo.push_to_hub(m, 'bench/mnist', token='bench-token'); imgzoo.load('hf-hub:bench/mnist')"
    )
    subprocess.run([sys.executable, "-c", push], check=True, env=env, capture_output=True)
    return "hf-hub:bench/mnist", {**env, "HF_HUB_OFFLINE": "1"}


def run(reps: int) -> dict[str, float]:
    """The median seconds of each start-up figure over ``reps`` interleaved runs."""
    import imgzoo  # bench/run.py has imported it already

    compileall.compile_dir(Path(imgzoo.__file__).parent, quiet=1)  # where it is imported from; read-only: left as is
    codes = {"import imgzoo after torch": (IMPORT, None), "load shipped": (LOAD.format(name="mnist_cnn.mnist"), None)}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            name, env = hub_cache(Path(tmp))
            codes["load cached Hub entry"] = (LOAD.format(name=name), env)
        except Exception as error:  # the server lives in tests/; a missing piece skips this row only
            print(f"(cached Hub entry not measured: {error!r})")
        samples = {key: [] for key in codes}
        for _ in range(reps):
            for key, (code, env) in codes.items():
                samples[key].append(timed_inside(code, env))
    return {key: statistics.median(values) for key, values in samples.items()}
