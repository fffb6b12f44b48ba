"""basic_cnn(whiten=True): airbench94's frozen patch-whitening stem, set from data by init_whitening."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import imgzoo
from imgzoo.models.basic_cnn import WHITEN_WIDTH, _normalised, _patch_second_moment, init_whitening


def _smooth_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """uint8 images whose neighbouring pixels and channels correlate strongly, as photographs' do."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 8, 8, generator=g) + 0.3 * torch.rand(n, 3, 8, 8, generator=g)
    fine = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    fine = fine + 0.05 * torch.rand(n, 3, 32, 32, generator=g)
    return (255 * fine / fine.max()).to(torch.uint8)


def _whitened_second_moment(model, images: torch.Tensor) -> torch.Tensor:
    """E[z z^T] over every position of the first 12 channels of the whitening layer's output."""
    spec = model.data_spec
    x = (images.float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        z = model.stem[0](x)[:, : WHITEN_WIDTH // 2].double()
    flat = z.permute(0, 2, 3, 1).reshape(-1, WHITEN_WIDTH // 2)
    return flat.T @ flat / len(flat)


def test_after_init_the_patches_of_the_images_are_white():
    model = imgzoo.create_model("basic_cnn", whiten=True)
    images = _smooth_images()
    init_whitening(model, images, eps=1e-12)
    moment = _whitened_second_moment(model, images)
    torch.testing.assert_close(moment, torch.eye(WHITEN_WIDTH // 2, dtype=torch.float64), atol=2e-3, rtol=0)
    weight = model.stem[0].weight
    assert torch.equal(weight[WHITEN_WIDTH // 2 :], -weight[: WHITEN_WIDTH // 2])  # the negatives


def test_eps_damps_the_directions_the_data_barely_varies_in():
    model = imgzoo.create_model("basic_cnn", whiten=True)
    images = _smooth_images()
    init_whitening(model, images)  # airbench's eps 5e-4
    diagonal = _whitened_second_moment(model, images).diagonal()
    assert diagonal[0] == pytest.approx(1.0, abs=1e-3)  # the strongest direction is untouched
    assert diagonal[-1] < 0.9  # the weakest is damped: eigenvalue / (eigenvalue + eps)
    assert torch.all(diagonal[:-1] >= diagonal[1:] - 1e-6)  # largest eigenvalue first


def test_the_whitening_layer_is_frozen_and_fit_leaves_it_alone():
    model = imgzoo.create_model("basic_cnn", widths=(8, 8), whiten=True)
    assert [p.requires_grad for p in model.stem.parameters()] == [False]
    init_whitening(model, _smooth_images(16))
    before = model.stem[0].weight.clone()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.TensorDataset(x, torch.arange(8) % 10)
    imgzoo.fit(model, data, epochs=1, batch_size=4, verbose=0, num_workers=0, amp=False)
    assert torch.equal(model.stem[0].weight, before)


def test_the_model_saves_and_rebuilds_with_its_whitening(tmp_path):
    model = init_whitening(imgzoo.create_model("basic_cnn", widths=(8, 8), whiten=True), _smooth_images(16)).eval()
    assert model.imgzoo_kwargs["whiten"] is True
    imgzoo.save(model, tmp_path / "whitened")
    loaded = imgzoo.load(tmp_path / "whitened")
    assert loaded.whiten and not loaded.stem[0].weight.requires_grad
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_init_whitening_refuses_a_model_without_the_layer_and_bad_images():
    with pytest.raises(ValueError, match=r"built with whiten=False"):
        init_whitening(imgzoo.create_model("basic_cnn"), _smooth_images(4))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        init_whitening(imgzoo.create_model("basic_cnn", whiten=True), torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"stem_width=16 would have no effect"):
        imgzoo.create_model("basic_cnn", whiten=True, stem_width=16)


def test_the_whitened_model_meets_the_model_contract_and_scripts():
    torch.manual_seed(0)
    model = init_whitening(imgzoo.create_model("basic_cnn", whiten=True), _smooth_images(16)).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        features = model.forward_features(x)
        assert features.dim() == 4 and features.shape[2] > 1 and features.shape[3] > 1
        assert torch.equal(out, model.forward_head(features))
        embedding = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(model.get_classifier()(embedding), out)
        torch.testing.assert_close(torch.jit.script(model)(x), out)
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(x).shape == (2, 7)


def test_the_statistics_are_gathered_on_the_device_the_images_are_on():
    # The data loaders hand over images on the GPU where there is one; a mean or an accumulator left
    # on the CPU beside them stopped basic_cnn's init there. The meta device stands in for a GPU.
    model = imgzoo.create_model("basic_cnn", whiten=True)
    images = torch.empty(4, 3, 32, 32, dtype=torch.uint8, device="meta")
    assert _patch_second_moment(_normalised(model, images)).device.type == "meta"


def test_init_from_data_is_the_generic_hook_for_the_whitening_stem():
    images = _smooth_images(16)
    whitened = imgzoo.create_model("basic_cnn", widths=(8, 8), whiten=True)
    assert whitened.needs_init_from_data is True
    assert whitened.init_from_data(images) is whitened
    expected = init_whitening(imgzoo.create_model("basic_cnn", widths=(8, 8), whiten=True), images)
    assert torch.equal(whitened.stem[0].weight, expected.stem[0].weight)
    plain = imgzoo.create_model("basic_cnn", widths=(8, 8))
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    assert plain.needs_init_from_data is False and plain.init_from_data(images) is plain
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in before.items())
