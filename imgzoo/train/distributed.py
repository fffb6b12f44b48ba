"""What fit needs under ``torchrun --nproc_per_node=N``: the process group, sums and agreement over processes."""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    enabled = property(lambda self: self.world_size > 1)
    is_main = property(lambda self: self.rank == 0)


def setup(device: torch.device) -> DistContext:
    """Join torchrun's process group (a no-op outside torchrun); one started here stays open for later fits."""
    if not (dist.is_available() and dist.is_initialized()):
        if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
            return DistContext()
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_destroy_at_exit, dist.group.WORLD)
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def _destroy_at_exit(group: object) -> None:
    """End the group fit started if it is still the default one (never a group the user made since)."""
    if dist.is_initialized() and dist.group.WORLD is group:
        gc.collect()  # anything else still holding the group's work goes first, while the interpreter is whole
        dist.destroy_process_group()


def all_reduce_sums(ctx: DistContext, *values: float, device: torch.device) -> list[float]:
    if not ctx.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (under torchrun only)."""
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def any_process(ctx: DistContext, flag: bool, *, device: torch.device) -> bool:
    """True on every process if it is True on any: decisions to stop must agree, or the others hang."""
    return all_reduce_sums(ctx, float(flag), device=device)[0] > 0
