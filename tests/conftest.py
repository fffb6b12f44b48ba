"""Shared test settings: small, deterministic, and within the 2-core CPU budget."""

import os

import torch
from hypothesis import HealthCheck, settings

# Torch's own thread pool fights pytest-level parallelism and hypothesis timing on 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))

settings.register_profile(
    "imgzoo",
    deadline=None,  # model forward passes on a shared CPU have no stable latency
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("imgzoo")
