"""callbacks.EMA: the analytic average, validation on the averaged weights, training untouched, exact resume."""

from __future__ import annotations

import pytest
import torch
from _fit_worker import FIT_OPTIONS, make_data, make_model
from torch import nn

from imgzoo.eval.evaluation import evaluate
from imgzoo.train.callbacks import EMA, Callback
from imgzoo.train.checkpoint import load_checkpoint
from imgzoo.train.fit import fit


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


@pytest.mark.parametrize("warmup", [False, True], ids=["constant", "warmup"])
def test_the_shadow_is_the_analytic_average_of_the_weights_it_saw(warmup):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(decay=0.9, warmup=warmup)
    _set(model, 1.0)
    ema.reset(model)
    expected = 1.0
    for t, value in enumerate([2.0, -1.0, 0.5, 4.0, 3.0]):
        _set(model, value)
        model[1].running_mean.fill_(value)
        model[1].num_batches_tracked.fill_(t + 1)
        ema.update(model)
        decay = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        expected = decay * expected + (1 - decay) * value  # float64 in Python
    shadow = ema.shadow
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        assert shadow[name].dtype == torch.float32
        torch.testing.assert_close(shadow[name], torch.full_like(shadow[name], expected), rtol=1e-6, atol=1e-6)
    running = 0.0  # running_mean started at zeros, not at the parameters' 1.0
    for t, value in enumerate([2.0, -1.0, 0.5, 4.0, 3.0]):
        decay = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
        running = decay * running + (1 - decay) * value
    torch.testing.assert_close(shadow["1.running_mean"], torch.full((2,), running), rtol=1e-6, atol=1e-6)
    assert int(shadow["1.num_batches_tracked"]) == 5  # integers are copied, not averaged


def test_every_n_steps_updates_after_every_nth_step_only():
    from types import SimpleNamespace

    model = nn.Linear(2, 2)
    ema = EMA(decay=0.5, every=3, warmup=False)
    ema.reset(model)
    state = SimpleNamespace(model=model)
    for _ in range(7):
        ema.on_batch_end(state, 0, torch.tensor(0.0))  # type: ignore[arg-type]
    assert (ema.steps, ema.updates) == (7, 2)


def test_bad_options_are_refused_saying_what_is_expected():
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        EMA(decay=1.5)
    with pytest.raises(ValueError, match=r"every must be an integer >= 1"):
        EMA(every=0)


def test_validation_in_fit_scores_the_averaged_weights_and_fit_ends_with_them(tmp_path):
    train, val = make_data()
    model = make_model()
    # fp32 in both: fit's amp="auto" validates in bf16 on a CPU with native bf16, evaluate's default is fp32.
    options = {**FIT_OPTIONS, "amp": "fp32"}
    history = fit(model, train, val, epochs=2, callbacks=[EMA(decay=0.9)], checkpoint_dir=tmp_path, **options)
    averaged = evaluate(model, val, batch_size=32, device="cpu")  # the model now holds the average
    assert averaged.loss == pytest.approx(history.val_loss[-1], rel=1e-6)
    trained = make_model(seed=1)
    trained.load_state_dict(load_checkpoint(tmp_path)["model"])  # last.pt keeps the trained weights
    assert evaluate(trained, val, batch_size=32, device="cpu").loss != pytest.approx(history.val_loss[-1], rel=1e-3)


def test_the_average_changes_nothing_in_training():
    train, val = make_data()
    plain, averaged = make_model(), make_model()
    expected = fit(plain, train, val, epochs=2, **FIT_OPTIONS)
    history = fit(averaged, train, val, epochs=2, callbacks=[EMA(decay=0.9, copy_to_model=False)], **FIT_OPTIONS)
    assert history.train_loss == expected.train_loss
    assert history.val_loss != expected.val_loss  # validation scored other weights
    plain_state = plain.state_dict()
    assert all(torch.equal(v, plain_state[k]) for k, v in averaged.state_dict().items())


class _StopAt(Callback):
    """Ctrl-C after the optimizer step of (epoch, step); step None: ask to stop at the epoch's end."""

    def __init__(self, epoch: int, step: int | None) -> None:
        self.epoch, self.step = epoch, step

    def on_batch_end(self, state, step, loss):
        if (state.epoch, step) == (self.epoch, self.step):
            raise KeyboardInterrupt

    def on_epoch_end(self, state):
        if self.step is None and state.epoch == self.epoch:
            state.should_stop = True


@pytest.mark.parametrize(("step", "resume_from"), [(2, "interrupted.pt"), (None, "last.pt")], ids=["mid", "end"])
def test_a_resumed_run_with_ema_matches_an_uninterrupted_one_bit_for_bit(tmp_path, step, resume_from):
    train, val = make_data()
    reference = make_model()
    expected = fit(reference, train, val, epochs=3, callbacks=[EMA(decay=0.8)], **FIT_OPTIONS)

    stops = [EMA(decay=0.8), _StopAt(2, step)]
    fit(make_model(), train, val, epochs=3, checkpoint_dir=tmp_path, callbacks=stops, **FIT_OPTIONS)
    resumed = make_model(seed=123)
    history = fit(resumed, train, val, epochs=3, resume=tmp_path / resume_from, callbacks=[EMA(0.8)], **FIT_OPTIONS)

    assert history.val_loss == expected.val_loss  # validation scored the same averages
    reference_state = reference.state_dict()
    assert all(torch.equal(v, reference_state[k]) for k, v in resumed.state_dict().items())
