"""The parts of a training step on their own: the optimizer step, the metric sums, the NaN guard, the
progress text and the Ctrl-C that waits for the end of a step."""

from __future__ import annotations

import math
import os
import signal
import time

import pytest
import torch
from torch import nn

from imgzoo.train.steps import (
    MetricSums,
    NonFiniteLoss,
    OptimizerStep,
    ProgressBar,
    StepBoundaryInterrupt,
    check_finite_loss,
    non_finite_tensors,
)


def _weighted_loss(w: nn.Parameter, scale: float = 1.0) -> torch.Tensor:
    """A loss whose gradient with respect to w is scale * (3, 4): norm 5 * scale."""
    return scale * (w * torch.tensor([3.0, 4.0])).sum()


def test_optimizer_step_without_scaler_clips_and_steps():
    w = nn.Parameter(torch.tensor([1.0, 1.0]))
    step = OptimizerStep(torch.optim.SGD([w], lr=0.5), grad_clip=1.0)
    assert step(_weighted_loss(w)) == 0.5
    assert torch.allclose(w.grad, torch.tensor([0.6, 0.8]))  # (3, 4) clipped to norm 1
    assert torch.allclose(w.detach(), torch.tensor([1.0 - 0.3, 1.0 - 0.4]))


def test_optimizer_step_with_a_scaler_clips_the_unscaled_gradients():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    step = OptimizerStep(torch.optim.SGD([w], lr=1.0), scaler=scaler, grad_clip=1.0)
    step(_weighted_loss(w))
    # Clipping the scaled gradients (5 * 1024) would leave an update 1024 times too small.
    assert torch.allclose(w.grad, torch.tensor([0.6, 0.8]))
    assert torch.allclose(w.detach(), torch.tensor([2.4, 3.2]))
    assert scaler.get_scale() == 1024.0


def test_optimizer_step_with_a_scaler_skips_infinite_gradients_and_lowers_the_scale():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    step = OptimizerStep(torch.optim.SGD([w], lr=1.0), scaler=scaler)
    step(_weighted_loss(w, scale=math.inf))
    assert torch.equal(w.detach(), torch.tensor([3.0, 4.0]))
    assert scaler.get_scale() == 512.0


def test_optimizer_step_steps_a_per_step_schedule_and_reports_the_rate_it_used():
    w = nn.Parameter(torch.tensor([0.0, 0.0]))
    optimizer = torch.optim.SGD([w], lr=1.0)
    halve = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    step = OptimizerStep(optimizer, scheduler=halve)
    assert [step(_weighted_loss(w)) for _ in range(3)] == [1.0, 0.5, 0.25]
    assert optimizer.param_groups[0]["lr"] == 0.125


def test_metric_sums_add_up_known_batches():
    sums = MetricSums()
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])  # predicts 0, 1, 0
    sums.add(torch.tensor(2.0), logits, torch.tensor([0, 1, 1]))  # 2 of 3 right
    sums.add(torch.tensor(0.5), logits[:2], torch.tensor([1, 1]))  # 1 of 2 right
    assert sums.read() == (2.0 * 3 + 0.5 * 2, 3, 5)


def test_metric_sums_survive_a_checkpoint():
    sums = MetricSums()
    sums.add(torch.tensor(1.25), torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    again = MetricSums()
    again.load_state_dict(sums.state_dict())
    again.add(torch.tensor(0.75), torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    assert again.read() == (2.0, 1, 2)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_nan_guard_raises_on_a_non_finite_loss(value):
    with pytest.raises(NonFiniteLoss) as info:
        check_finite_loss(value, epoch=3, step=7)
    assert (info.value.epoch, info.value.step) == (3, 7)
    assert str(info.value.value) == str(value)


def test_nan_guard_lets_a_finite_loss_pass():
    check_finite_loss(1e30, epoch=1, step=0)


def test_non_finite_tensors_names_parameters_and_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].bias[1] = math.nan
        model[1].running_var[0] = math.inf
    assert non_finite_tensors(model, torch.device("cpu")) == ["parameter '0.bias'", "buffer '1.running_var'"]


def test_the_progress_bar_shows_means_and_speed():
    bar = ProgressBar(True, "epoch 1", total=4, seen_before=2, world_size=2)
    bar.start -= 2.0  # (4 - 2) images this call x 2 processes in 2 s (and the little this test takes)
    bar.show(loss_sum=1.5, correct=3, seen=4)
    bar.close()
    assert bar.bar.postfix == "loss 0.375 acc 75.0% 2 img/s"


def _send_sigint(interrupts: StepBoundaryInterrupt | None = None) -> None:
    """SIGINT to this process; Python runs the handler at its next check, which the loop waits for."""
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
        if interrupts is not None and interrupts.requested:
            return
        time.sleep(0.001)


def test_the_first_ctrl_c_waits_for_the_step_boundary_and_the_second_stops_at_once():
    said = []
    with StepBoundaryInterrupt(enabled=True, say=said.append) as interrupts:
        _send_sigint(interrupts)  # no KeyboardInterrupt here: the step goes on
        assert interrupts.requested and "after the step or validation under way" in said[0]
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_if_requested()
        with pytest.raises(KeyboardInterrupt):
            _send_sigint()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_disabled_step_boundary_interrupt_leaves_ctrl_c_alone():
    with StepBoundaryInterrupt(enabled=False) as interrupts, pytest.raises(KeyboardInterrupt):
        _send_sigint()
    assert not interrupts.requested
