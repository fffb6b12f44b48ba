"""evaluate(tta=...): logits averaged over mirrors and one-pixel shifts, refused where a mirror changes labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import imgzoo
from imgzoo.eval.evaluation import TestTimeAugmented, evaluate

CLASSES = 3


def _linear_model() -> nn.Module:
    """Logits a fixed linear function of every pixel: any view of the image gives other logits."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, CLASSES))


def _data(n: int = 12) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 3, 6, 6, generator=g), torch.randint(0, CLASSES, (n,), generator=g))


def _shifted(x: torch.Tensor) -> list[torch.Tensor]:
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return [padded[..., :6, :6], padded[..., 2:, 2:]]


def _by_hand(model: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """airbench94's infer_mirror / infer_mirror_translate, written out."""

    def views(images):
        return 0.5 * (model(images) + model(images.flip(-1))) if "flip" in mode else model(images)

    logits = views(x)
    if "shift" in mode:
        a, b = _shifted(x)
        logits = 0.5 * logits + 0.5 * torch.stack([views(a), views(b)]).mean(0)
    return logits


@pytest.mark.parametrize("mode", ["flip", "shift", "flip+shift"])
def test_the_logits_are_averaged_over_the_views(mode):
    model, data = _linear_model(), _data()
    x, y = data.tensors
    with torch.no_grad():
        expected = _by_hand(model, x, mode)
        plain = model(x)
    assert not torch.allclose(expected, plain, atol=1e-3)  # the views do change the logits
    result = evaluate(model, data, tta=mode, device="cpu")
    assert result.tta == mode
    assert result.loss == pytest.approx(F.cross_entropy(expected, y).item(), rel=1e-5)
    assert result.top1 == pytest.approx((expected.argmax(1) == y).float().mean().item())
    assert evaluate(model, data, device="cpu").loss == pytest.approx(F.cross_entropy(plain, y).item(), rel=1e-5)


class _LeftBrighter(nn.Module):
    """Class 0 when the left half of the image is brighter than the right, else class 1."""

    def forward(self, x):
        half = x.shape[-1] // 2
        score = x[..., :half].mean((1, 2, 3)) - x[..., half:].mean((1, 2, 3))
        return torch.stack([score, -score], dim=1)


def test_a_mirror_cancels_a_left_right_asymmetry():
    x = torch.zeros(4, 3, 6, 6)
    x[:2, ..., :3] = 1.0  # left half bright: class 0
    x[2:, ..., 3:] = 1.0  # right half bright: class 1
    data = TensorDataset(x, torch.tensor([0, 0, 1, 1]))
    assert evaluate(_LeftBrighter(), data, device="cpu").top1 == 1.0
    flipped = evaluate(_LeftBrighter(), data, tta=True, device="cpu")
    assert flipped.tta == "flip"
    assert flipped.loss == pytest.approx(torch.log(torch.tensor(2.0)).item())  # equal logits: chance
    with torch.no_grad():
        assert torch.equal(TestTimeAugmented(_LeftBrighter(), "flip")(x), torch.zeros(4, 2))


def test_a_mirror_is_refused_for_digits_and_shifts_are_allowed():
    model = imgzoo.create_model("mnist_cnn").eval()
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(4, 1, 28, 28, generator=g), torch.tensor([0, 1, 2, 3]))
    for tta in (True, "flip", "flip+shift"):
        with pytest.raises(ValueError, match=r"mirror changes the label of a mnist image.*tta='shift'"):
            evaluate(model, data, tta=tta, device="cpu")
    assert evaluate(model, data, tta="shift", device="cpu").tta == "shift"


def test_an_unknown_tta_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"tta must be False, True"):
        evaluate(_linear_model(), _data(), tta="rotate", device="cpu")


def test_the_model_comes_back_in_its_mode():
    model = _linear_model().train()
    evaluate(model, _data(), tta="flip+shift", device="cpu")
    assert model.training


def test_progress_shows_a_bar_over_the_batches_and_changes_no_figure(capsys):
    model, data = _linear_model(), _data(n=40)
    quiet = evaluate(model, data, batch_size=8, tta="flip+shift")
    assert "evaluate" not in capsys.readouterr().err
    shown = evaluate(model, data, batch_size=8, tta="flip+shift", progress=True)
    bar = capsys.readouterr().err
    assert "evaluate (flip+shift TTA)" in bar and "0/5 [" in bar  # 40 images in batches of 8
    assert (shown.top1, shown.loss) == (quiet.top1, quiet.loss)
