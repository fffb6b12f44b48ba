"""airbench94's recipe in imgzoo's terms: the network options, lookahead, the linear schedule,
the faster batch-norm shifts, the 2-pixel crops, and the recipe that puts them together."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from _fit_worker import FIT_OPTIONS, make_data, make_model
from test_ema import _StopAt
from torch import nn
from torch.utils.data import TensorDataset

import imgzoo
from imgzoo.data.datasets import TensorImages
from imgzoo.data.loaders import FastLoader
from imgzoo.models.registry import DataSpec
from imgzoo.study import config as run_config
from imgzoo.study import run as runs
from imgzoo.train.callbacks import EMA, Lookahead
from imgzoo.train.checkpoint import load_checkpoint
from imgzoo.train.config import FitConfig, averaging_callbacks, build_optimizer, build_schedule
from imgzoo.train.fit import fit
from imgzoo.train.recipes import get_recipe, resolve_config

AIRBENCH = get_recipe("basic_cnn.airbench")


# ---------------------------------------------------------------- the network's options


def test_logit_scale_multiplies_the_logits_of_the_same_weights():
    torch.manual_seed(0)
    plain = imgzoo.basic_cnn(widths=(8, 16)).eval()
    scaled = imgzoo.basic_cnn(widths=(8, 16), logit_scale=1 / 9).eval()
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(scaled(x), plain(x) / 9)
    torch.testing.assert_close(
        scaled.forward_head(scaled.forward_features(x), pre_logits=True),
        plain.forward_head(plain.forward_features(x), pre_logits=True),
    )  # the features are not scaled


def test_dirac_init_makes_each_convolution_the_identity_on_its_first_channels():
    model = imgzoo.basic_cnn(widths=(8, 16), dirac_init=True)
    conv = model.blocks[1][4]  # the 16 -> 16 convolution of the second block
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(conv(x), x)
    widening = model.blocks[1][0]  # 8 -> 16: the first 8 filters pass the input through, the rest are random
    out = widening(torch.randn(2, 8, 6, 6))
    assert widening.weight[8:].abs().sum() > 0
    assert out.shape == (2, 16, 6, 6)
    plain = imgzoo.basic_cnn(widths=(8, 16))
    assert not torch.equal(plain.blocks[1][4](x), x)


def test_bn_scale_false_keeps_every_batch_norm_scale_at_one_through_training():
    model = imgzoo.basic_cnn(widths=(8, 16), bn_momentum=0.4, bn_scale=False, num_classes=4)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.4 and not m.weight.requires_grad for m in norms)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 4, (64,))
    fit(model, TensorDataset(x, y), epochs=1, batch_size=32, verbose=0, num_workers=0)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in norms)
    assert any(not torch.equal(m.bias, torch.zeros_like(m.bias)) for m in norms)  # the shifts did learn


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bn_momentum": 0.0}, "bn_momentum must be a number in \\(0, 1\\]"),
        ({"logit_scale": 2.0}, "logit_scale must be a number in \\(0, 1\\]"),
        ({"bn_scale": "no"}, "bn_scale"),
        ({"dirac_init": 1}, "dirac_init"),
    ],
)
def test_bad_network_options_are_refused_with_what_was_expected(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        imgzoo.basic_cnn(**kwargs)


def test_the_options_survive_save_and_load(tmp_path):
    model = imgzoo.create_model("basic_cnn", widths=[8, 16], logit_scale=0.5, bn_momentum=0.4, bn_scale=False)
    imgzoo.save(model, tmp_path / "w")
    loaded = imgzoo.load(tmp_path / "w").eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    assert loaded.logit_scale == 0.5 and not loaded.blocks[0][2].weight.requires_grad


# ---------------------------------------------------------------- the optimizer and the schedule


def test_norm_bias_lr_scale_puts_the_norm_shifts_in_their_own_group():
    model = imgzoo.basic_cnn(widths=(8, 16), bn_scale=False)
    shifts = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    groups = build_optimizer(model, FitConfig(epochs=1, lr=0.2, norm_bias_lr_scale=64.0)).param_groups
    assert [len(g["params"]) for g in groups] == [6, 1, 5]  # 5 convolutions and the classifier; its bias; 5 shifts
    assert {id(p) for p in groups[2]["params"]} == shifts
    assert (groups[0]["lr"], groups[1]["lr"], groups[2]["lr"]) == (0.2, 0.2, pytest.approx(12.8))
    assert groups[2]["weight_decay"] == 0.0
    default = build_optimizer(model, FitConfig(epochs=1, lr=0.2)).param_groups
    assert len(default) == 2 and all(g["lr"] == 0.2 for g in default)  # unchanged: older checkpoints still fit


def test_the_linear_schedule_rises_to_the_peak_at_23_percent_then_falls_to_7_percent():
    model = nn.Linear(2, 2)
    cfg = FitConfig(epochs=10, lr=1.0, momentum=0.85, schedule="linear")
    optimizer = build_optimizer(model, cfg)
    scheduler, interval = build_schedule(optimizer, cfg, steps_per_epoch=20)
    assert interval == "step"
    rates, momenta = [], []
    for _ in range(200):
        rates.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.2)
    peak = max(range(200), key=rates.__getitem__)
    assert abs(peak - 0.23 * 200) <= 1 and rates[peak] == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(0.07, abs=0.01)
    rise = [b - a for a, b in zip(rates[:peak], rates[1 : peak + 1], strict=True)]
    assert max(rise) - min(rise) < 1e-9  # linear
    assert set(momenta) == {0.85}  # held, not cycled


def test_a_linear_schedule_run_resumed_with_other_epochs_is_refused(tmp_path):
    train, val = make_data()
    fit(make_model(), train, val, epochs=2, schedule="linear", checkpoint_dir=tmp_path, **FIT_OPTIONS)
    with pytest.raises(ValueError, match="schedule='linear' sized for 2 epochs"):
        fit(make_model(), train, val, epochs=3, schedule="linear", resume=tmp_path, **FIT_OPTIONS)


# ---------------------------------------------------------------- lookahead


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_lookahead_pulls_the_slow_weights_and_hands_them_to_the_model():
    model = nn.Linear(2, 1)
    look = Lookahead(decay=0.5, every=2, ramp=0.0)  # ramp 0: the full decay from the start
    _set(model, 1.0)
    state = SimpleNamespace(model=model, epochs=1, initial_epoch=0, steps_per_epoch=4)
    look.on_fit_start(state)  # type: ignore[arg-type]
    _set(model, 3.0)
    look.on_batch_end(state, 0, torch.tensor(0.0))  # type: ignore[arg-type]
    assert torch.equal(model.weight, torch.full_like(model.weight, 3.0))  # not the 2nd step yet
    look.on_batch_end(state, 1, torch.tensor(0.0))  # type: ignore[arg-type]
    assert torch.equal(model.weight, torch.full_like(model.weight, 2.0))  # 0.5 * 1 + 0.5 * 3
    _set(model, 4.0)
    look.on_batch_end(state, 2, torch.tensor(0.0))  # type: ignore[arg-type]
    look.on_batch_end(state, 3, torch.tensor(0.0))  # type: ignore[arg-type]
    assert torch.equal(model.weight, torch.full_like(model.weight, 3.0))  # 0.5 * 2 + 0.5 * 4


def test_lookahead_ramps_its_decay_in_with_the_cube_of_progress():
    look = Lookahead(decay=0.8, every=5, ramp=3.0)
    look.total = 100
    for steps, expected in ((0, 0.0), (50, 0.8 * 0.125), (100, 0.8), (150, 0.8)):
        look.steps = steps
        assert look.current_decay() == pytest.approx(expected)


def test_lookahead_options_are_checked():
    for kwargs, message in (
        ({"decay": 1.0}, "decay must be in"),
        ({"every": 0}, "every must be"),
        ({"ramp": -1}, "ramp"),
    ):
        with pytest.raises(ValueError, match=message):
            Lookahead(**kwargs)


def test_fit_validates_a_lookahead_run_on_the_slow_weights_it_hands_back_and_trains_on_its_own(tmp_path):
    train, val = make_data()
    # 12 steps an epoch: the last pull of each epoch is 2 steps before its end, so the two weights differ there.
    # fp32 in both: fit's amp="auto" validates in bf16 on a CPU with native bf16, evaluate's default is fp32.
    options = {**FIT_OPTIONS, "batch_size": 16, "amp": "fp32"}
    model = make_model()
    history = fit(model, train, val, epochs=2, callbacks=[Lookahead(every=5)], checkpoint_dir=tmp_path, **options)
    slow = imgzoo.evaluate(model, val, batch_size=32, device="cpu")  # the model now holds the slow weights
    assert slow.loss == pytest.approx(history.val_loss[-1], rel=1e-6)
    trained = make_model(seed=1)
    trained.load_state_dict(load_checkpoint(tmp_path)["model"])  # last.pt keeps the trained weights
    assert imgzoo.evaluate(trained, val, batch_size=32, device="cpu").loss != pytest.approx(slow.loss, rel=1e-3)
    on_trained = make_model()  # the same run validated on the trained weights: nothing swapped in
    expected = fit(on_trained, train, val, epochs=2, callbacks=[_ValidatedOnTrained(every=5)], **options)
    assert history.train_loss == expected.train_loss and history.val_loss != expected.val_loss
    kept = on_trained.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())  # validating changed no step


class _ValidatedOnTrained(Lookahead):
    def _average(self, model):
        return {}


@pytest.mark.parametrize(("step", "resume_from"), [(2, "interrupted.pt"), (None, "last.pt")], ids=["mid", "end"])
def test_a_resumed_run_with_lookahead_matches_an_uninterrupted_one_bit_for_bit(tmp_path, step, resume_from):
    train, val = make_data()
    options = {**FIT_OPTIONS, "batch_size": 16}  # 12 steps an epoch: pulls fall inside epochs, not at their ends
    reference = make_model()
    expected = fit(reference, train, val, epochs=3, callbacks=[Lookahead(every=5)], **options)
    fit(
        make_model(),
        train,
        val,
        epochs=3,
        checkpoint_dir=tmp_path,
        callbacks=[Lookahead(every=5), _StopAt(2, step)],
        **options,
    )
    resumed = make_model(seed=123)
    history = fit(
        resumed, train, val, epochs=3, resume=tmp_path / resume_from, callbacks=[Lookahead(every=5)], **options
    )
    assert history.val_loss == expected.val_loss
    reference_state = reference.state_dict()
    assert all(torch.equal(v, reference_state[k]) for k, v in resumed.state_dict().items())
    plain = make_model()
    fit(plain, train, val, epochs=3, **options)
    assert not torch.equal(plain[0].weight, reference[0].weight)  # lookahead changed the training


# ---------------------------------------------------------------- the loader's translate


def _images(n: int = 6) -> tuple[TensorImages, DataSpec]:
    spec = DataSpec(name="tiny", channels=3, size=(8, 8), mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3, num_classes=2)
    x = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return TensorImages(x, torch.zeros(n, dtype=torch.int64), ["a", "b"], spec=spec), spec


def _crops(image: torch.Tensor, pad: int) -> list[torch.Tensor]:
    padded = torch.nn.functional.pad(image.float().unsqueeze(0), (pad,) * 4, mode="reflect")[0]
    found = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + 8, dx : dx + 8]
            found += [crop, crop.flip(-1)]
    return found


@pytest.mark.parametrize("translate", [0, 1, 2])
def test_translate_bounds_the_crop_shift(translate):
    data, spec = _images()
    loader = FastLoader(data, 6, spec=spec, train=True, translate=translate, shuffle=False, seed=1)
    assert loader.translate == translate
    for _ in range(3):
        x, _ = next(iter(loader))
        for image, out in zip(data.images, x, strict=True):
            assert any(torch.equal(out, crop) for crop in _crops(image, translate))
    flipped = [
        torch.equal(out, image.float().flip(-1)) for out, image in zip(next(iter(loader))[0], data.images, strict=True)
    ]
    if translate == 0:
        assert any(flipped)  # no shift, yet still mirrored


def test_translate_defaults_to_an_eighth_of_the_side_and_bad_values_are_refused():
    data, spec = _images()
    assert FastLoader(data, 2, spec=spec, train=True).translate == 1  # 8 / 8
    assert FastLoader(data, 2, spec=spec, train=False, translate=3).translate == 0  # evaluation never crops
    with pytest.raises(ValueError, match="translate must be a whole number of pixels >= 0"):
        FastLoader(data, 2, spec=spec, train=True, translate=-1)


# ---------------------------------------------------------------- the recipe


def test_the_airbench_recipe_reaches_fit_the_loader_and_the_model():
    cfg = resolve_config(None, {"recipe": "basic_cnn.airbench"})
    assert (cfg.batch_size, cfg.lr, cfg.momentum, cfg.schedule) == (1024, 1.5, 0.85, "linear")
    assert cfg.norm_bias_lr_scale == 64.0 and cfg.label_smoothing == 0.2
    (look,) = averaging_callbacks(cfg)
    assert isinstance(look, Lookahead) and look.decay == pytest.approx(0.95**5)
    # airbench94's decoupled decay: 0.0153 per 1024 images, 0.0020 of each weight per step at the peak lr
    assert cfg.lr * cfg.weight_decay == pytest.approx(0.0153 * 1024 / (1024 * (1 + 1 / 0.15)))
    assert AIRBENCH.config.loader_options() == {
        "batch_size": 1024,
        "augment": "standard",
        "translate": 2,
        "alternate_flips": False,
        "cutout": 0,
    }
    # `imgzoo train basic_cnn` is the shipped basic_cnn.cifar10: airbench94's optimizer, for longer.
    assert get_recipe("basic_cnn").config == get_recipe("basic_cnn.cifar10").config
    assert dataclasses.replace(get_recipe("basic_cnn.altflip").config, epochs=36, translate=4, cutout=12) == (
        get_recipe("basic_cnn").config
    )
    model = imgzoo.create_model("basic_cnn", **AIRBENCH.model_kwargs)
    assert model.logit_scale == pytest.approx(1 / 9) and model.whiten


def test_a_run_of_the_airbench_recipe_trains_with_its_loader_and_lookahead(tmp_path):
    config = run_config.make_config("basic_cnn", str(tmp_path), recipe="basic_cnn.airbench").fit
    assert config.translate == 2 and config.batch_size == 1024
    assert config.norm_bias_lr_scale == 64.0 and config.schedule == "linear"
    assert [type(cb) for cb in averaging_callbacks(config)] == [Lookahead]
    quick = run_config.make_config("mnist_cnn", str(tmp_path), recipe="mnist_cnn.quick").fit
    assert averaging_callbacks(quick)[0].decay == 0.98
    data, spec = _images(8)
    model = imgzoo.basic_cnn(widths=(4,), num_classes=2)
    model.data_spec = spec
    loader = runs.train_data(model, data, "standard", 4, 0, translate=config.translate)
    assert isinstance(loader, FastLoader) and loader.translate == 2


def test_the_recipe_is_checked():
    with pytest.raises(ValueError, match="ema_decay and lookahead_decay both rewrite the weights"):
        FitConfig(epochs=1, ema_decay=0.9, lookahead_decay=0.5)
    with pytest.raises(ValueError, match="translate must be an integer >= 0"):
        FitConfig(epochs=1, translate=-2)
    with pytest.raises(ValueError, match="schedule must be one of"):
        FitConfig(epochs=1, schedule="triangle")
    assert not any(isinstance(cb, EMA) for cb in averaging_callbacks(AIRBENCH.config))
