"""``import imgzoo`` loads nothing that a prediction does not need.

The Hub client and its HTTP stack, YAML, matplotlib and the FLOP counter each load inside the
function that uses them: together they cost over half a second of every start-up (bench/bench_startup.py
measures the time; these tests check, in a fresh interpreter, which modules were imported).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Imported only by the functions that save, push, download, draw or count MACs.
LAZY = (
    "huggingface_hub",
    "httpx",
    "httpx2",
    "requests",
    "yaml",
    "matplotlib",
    "torch.utils.flop_counter",
    "timm",  # imgzoo registers with timm when the user imports it, never imports it itself
)


def loaded_after(code: str) -> list[str]:
    """The modules of LAZY that are in sys.modules after running ``code`` in a fresh interpreter."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    report = f"import json, sys; print(json.dumps([m for m in {LAZY!r} if m in sys.modules]))"
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_imgzoo_leaves_the_hub_client_and_plotting_unimported():
    assert loaded_after("import imgzoo") == []


def test_loading_shipped_weights_needs_no_hub_client():
    code = "import imgzoo\nmodel = imgzoo.load('mnist_cnn.mnist')\nassert not model.training"
    assert loaded_after(code) == []


def test_public_names_still_resolve():
    code = "import imgzoo\nassert callable(imgzoo.push_to_hub) and callable(imgzoo.download) and callable(imgzoo.save)"
    assert loaded_after(code) == []
