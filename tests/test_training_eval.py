"""evaluate, predict and compare; each measuring call hands the model back as it came in."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from _fit_worker import CLASSES, FIT_OPTIONS, make_data, make_model
from data_factories import CIFAR10_CLASSES, write_cifar10, write_image_folder
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import imgzoo
from imgzoo import datasets, transforms
from imgzoo.data.datasets import CorruptFileError, TensorImages
from imgzoo.data.loaders import FastLoader
from imgzoo.eval.evaluation import evaluate, plot_predictions, predict
from imgzoo.models.registry import DataSpec
from imgzoo.study.compare import compare
from imgzoo.train.fit import fit


@pytest.fixture(scope="module")
def trained():
    train, val = make_data()
    model = make_model()
    fit(model, train, val, epochs=3, **FIT_OPTIONS)
    return model, val


def test_evaluate_metrics_agree_with_each_other(trained):
    model, val = trained
    result = evaluate(model, val)
    x, y = val.tensors
    with torch.no_grad():
        model.eval()
        expected_top1 = (model(x).argmax(1) == y).double().mean().item()
    assert result.num_samples == len(val)
    assert result.top1 == pytest.approx(expected_top1)
    assert result.top5 == 1.0  # 4 classes: the true one is always among the top 5
    cm = result.confusion_matrix
    assert cm.shape == (CLASSES, CLASSES) and int(cm.sum()) == len(val)
    assert cm.sum(dim=1).tolist() == torch.bincount(y, minlength=CLASSES).tolist()
    assert result.top1 == pytest.approx(cm.diag().sum().item() / len(val))
    assert result.per_class_accuracy == pytest.approx((cm.diag() / cm.sum(dim=1)).tolist())
    assert result.class_names == ["0", "1", "2", "3"]
    assert "top-1" in str(result)


def test_predict_returns_class_names_and_probabilities(trained):
    model, val = trained
    x, y = val.tensors
    one = predict(model, x[0], topk=3)
    assert len(one) == 3 and [name for name, _ in one][0] in {"0", "1", "2", "3"}
    probs = [p for _, p in one]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    many = predict(model, x[:5])
    assert len(many) == 5 and all(len(r) == CLASSES for r in many)
    assert sum(p for _, p in many[0]) == pytest.approx(1.0, abs=1e-5)


def test_predict_applies_the_models_eval_transform_to_pil_images_and_paths(tmp_path):
    pytest.importorskip("imgzoo.data.transforms")
    from PIL import Image

    from imgzoo.models import mnist_cnn

    model = mnist_cnn()
    image = Image.new("L", (40, 40), color=200)  # another size: the transform must resize
    image.save(tmp_path / "digit.png")
    from_pil, from_path = predict(model, [image, tmp_path / "digit.png"], topk=2)
    assert [n for n, _ in from_pil] == [n for n, _ in from_path]
    assert all(name in [str(d) for d in range(10)] for name, _ in from_pil)
    assert [p for _, p in from_pil] == pytest.approx([p for _, p in from_path])


def test_compare_builds_the_notebooks_table():
    train, val = make_data(n=64)
    result = compare({"small": make_model(0), "other": make_model(1)}, train, val, epochs=1, **FIT_OPTIONS)
    lines = result.to_markdown().splitlines()
    assert lines[0] == "| Model | Train accuracy | Val accuracy | Train loss | Val loss |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| small", "| other"]
    last = result.histories["small"].last()
    assert f"{100 * last['val_acc']:.2f}%" in lines[2] and f"{last['train_loss']:.4f}" in lines[2]


def test_compare_gives_every_model_the_same_batches_from_a_shared_fast_loader():
    train, val = make_data(n=96)
    to_uint8 = lambda ds: ((ds.tensors[0].clamp(-3, 3) + 3) * 42).to(torch.uint8)  # noqa: E731
    spec = DataSpec("tiny", 3, (8, 8), (0.5,) * 3, (0.25,) * 3, CLASSES)
    classes = [str(c) for c in range(CLASSES)]
    images = TensorImages(to_uint8(train), train.tensors[1], classes, spec=spec)
    loader = FastLoader(images, 16, train=True, device="cpu", seed=3)
    result = compare({"first": make_model(0), "twin": make_model(0)}, loader, epochs=2, **FIT_OPTIONS)
    # Identical models on identical batches end identical; a loader that went on shuffling would not.
    assert result.histories["first"].train_loss == result.histories["twin"].train_loss


def test_compare_needs_models():
    train, val = make_data(n=64)
    with pytest.raises(ValueError, match="at least one model"):
        compare({}, train, val, epochs=1)


# ---- the model comes back as it came in ----


def _modes(model):
    return [m.training for m in model.modules()]


def _measure(name, model, val, device):
    """Run one of the measuring calls on ``model``."""
    x, _ = val.tensors
    if name == "evaluate":
        evaluate(model, val, device=device)
    elif name == "predict":
        predict(model, x[:3], device=device)
    else:
        pytest.importorskip("matplotlib")
        plot_predictions(model, val, n=4, device=device)


MEASURING = ["evaluate", "predict", "plot_predictions"]


@pytest.mark.parametrize("name", MEASURING)
def test_measuring_leaves_a_training_model_in_train_mode_with_its_frozen_parts_frozen(name):
    _, val = make_data(n=64)
    model = make_model().train()
    model[1].eval()  # a batch norm kept in eval mode on purpose, as a frozen backbone's is
    before = _modes(model)
    assert before.count(False) == 1
    _measure(name, model, val, "cpu")
    assert _modes(model) == before


@pytest.mark.parametrize("name", MEASURING)
def test_measuring_leaves_an_eval_model_in_eval_mode(name):
    _, val = make_data(n=64)
    model = make_model().eval()
    _measure(name, model, val, "cpu")
    assert not any(_modes(model))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="moving a model between devices needs a GPU")
@pytest.mark.parametrize("name", MEASURING)
def test_measuring_on_the_gpu_hands_a_cpu_model_back_on_the_cpu(name):
    _, val = make_data(n=64)
    model = make_model().train()
    _measure(name, model, val, "cuda")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {b.device.type for b in model.buffers()} == {"cpu"}
    assert model.training


# ---- evaluate takes what a user has at hand ----


def _same_result(a, b):
    assert a.num_samples == b.num_samples and a.class_names == b.class_names
    assert torch.equal(a.confusion_matrix, b.confusion_matrix)
    assert a.loss == pytest.approx(b.loss, rel=1e-4) and a.top1 == b.top1 and a.top5 == b.top5


def test_evaluate_takes_raw_data_sets_fast_loaders_and_folders(tmp_path):
    model = imgzoo.create_model("resnet_cifar", depth=8)
    raw = datasets.cifar10(write_cifar10(tmp_path / "cifar", n_per_class=3))  # uint8 images, no transform
    expected = evaluate(model, datasets.cifar10(tmp_path / "cifar", transform=transforms.for_model(model)))
    assert expected.num_samples == 30 and expected.class_names == list(CIFAR10_CLASSES)
    _same_result(evaluate(model, raw), expected)
    _same_result(evaluate(model, FastLoader(raw, 8, device="cpu")), expected)
    _same_result(evaluate(model, datasets.train_val_split(raw, val_count=10)[1]), evaluate(model, _val_of(raw, model)))

    root = write_image_folder(tmp_path / "tree", classes=("cat", "dog"), n_per_class=3)
    cats_dogs = imgzoo.create_model("mnist_cnn", class_names=["cat", "dog"])
    from_path = evaluate(cats_dogs, root)
    _same_result(from_path, evaluate(cats_dogs, datasets.image_folder(root, transform=transforms.for_model(cats_dogs))))
    assert from_path.confusion_matrix.sum(dim=1).tolist() == [3, 3]


def _val_of(raw, model):
    """The same validation split, preprocessed by the user."""
    _, val = datasets.train_val_split(raw, val_count=10)
    return val.with_transform(transforms.for_model(model))


def test_evaluate_says_what_is_wrong_with_empty_data_and_foreign_labels(tmp_path):
    model = make_model()
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.int64)), batch_size=4)
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, empty)
    too_few = DataLoader(TensorDataset(torch.zeros(3, 3, 8, 8), torch.zeros(3, dtype=torch.int64)), 4, drop_last=True)
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, too_few)
    labels = torch.tensor([0, 3, 7, 1])  # a 4-class model has no output for 7
    with pytest.raises(ValueError, match=r"label 7.*4 outputs.*0\.\.3"):
        evaluate(model, TensorDataset(torch.zeros(4, 3, 8, 8), labels), batch_size=2)
    with pytest.raises(ValueError, match=r"label -1.*0\.\.3"):
        evaluate(model, TensorDataset(torch.zeros(2, 3, 8, 8), torch.tensor([0, -1])))
    with pytest.raises(TypeError, match="carries no data_spec"):
        evaluate(model, datasets.cifar10(write_cifar10(tmp_path)))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        evaluate(model, tmp_path / "missing")


@pytest.mark.parametrize("topk", [0, -1, 2.5, "3", True, None])
def test_predict_refuses_a_topk_that_is_not_a_positive_integer(topk):
    model = imgzoo.create_model("mnist_cnn")
    with pytest.raises(ValueError, match=rf"topk must be a positive integer.*got {re.escape(repr(topk))}"):
        imgzoo.predict(model, torch.zeros(1, 28, 28, dtype=torch.uint8), topk=topk)


def test_predict_lists_every_class_when_topk_exceeds_them():
    model = imgzoo.create_model("mnist_cnn")
    ranked = imgzoo.predict(model, torch.zeros(1, 28, 28, dtype=torch.uint8), topk=50)
    assert sorted(name for name, _ in ranked) == [str(d) for d in range(10)]


def test_predict_fetches_no_url_and_names_folders_and_broken_files(tmp_path, monkeypatch):
    model = imgzoo.create_model("mnist_cnn")
    with pytest.raises(ValueError, match="fetches nothing; got the URL 'https://example.org/7.png'"):
        imgzoo.predict(model, "https://example.org/7.png")
    with pytest.raises(IsADirectoryError, match=rf"{re.escape(str(tmp_path))} is a folder"):
        imgzoo.predict(model, tmp_path)
    truncated = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match=rf"cannot decode image {re.escape(str(truncated))}"):
        imgzoo.predict(model, truncated)
    bomb = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(CorruptFileError, match=rf"refusing to decode image {re.escape(str(bomb))}"):
        imgzoo.predict(model, bomb)


# ---------------------------------------------------------------------------- one class check, any batches


def _swapped_folders(tmp_path):
    """Two image trees with the same class names, the second with its labels' meaning swapped."""
    root = write_image_folder(tmp_path / "tree", classes=("cat", "dog"), n_per_class=2, size=(28, 28))
    swapped = datasets.image_folder(root)
    swapped.classes = ["dog", "cat"]
    return root, swapped


def test_evaluate_and_fit_refuse_data_whose_classes_differ_from_the_models(tmp_path):
    root, swapped = _swapped_folders(tmp_path)
    model = imgzoo.create_model("mnist_cnn", class_names=["cat", "dog"])
    with pytest.raises(
        ValueError, match=r"the data has 2 classes \(dog, cat\) but the model predicts 2 classes \(cat, dog\)"
    ):
        evaluate(model, swapped)
    with pytest.raises(ValueError, match=r"same names in another order.*class_names=data.classes"):
        fit(model, swapped.with_transform(transforms.for_model(model)), epochs=1, verbose=0)
    assert evaluate(model, root).num_samples == 4  # the right order passes


def test_resume_refuses_a_checkpoint_made_for_other_classes(tmp_path):
    root, swapped = _swapped_folders(tmp_path)
    model = imgzoo.create_model("mnist_cnn", class_names=["cat", "dog"])
    data = datasets.image_folder(root)
    fit(model, data.with_transform(transforms.for_model(model)), epochs=1, verbose=0, checkpoint_dir=tmp_path / "c")
    other = imgzoo.create_model("mnist_cnn", class_names=["dog", "cat"])
    flipped = swapped.with_transform(transforms.for_model(other))
    with pytest.raises(ValueError, match=r"the checkpoint .*predicts 2 classes \(cat, dog\).*Resume on the data"):
        fit(other, flipped, epochs=2, verbose=0, resume=tmp_path / "c")


def test_fit_takes_a_list_of_batches_and_a_generators_result():
    x, y = make_data(64)[0].tensors
    model = make_model()
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)]
    history = fit(model, batches, epochs=2, **FIT_OPTIONS)
    assert len(history) == 2
    history = fit(model, ((x[i : i + 8], y[i : i + 8]) for i in (0, 8)), epochs=2, **FIT_OPTIONS)
    assert len(history) == 2 and all(loss == loss for loss in history.train_loss)


def test_fit_batches_raw_images_itself_for_the_models_spec(tmp_path):
    """An ImageDataset without a transform goes through batches() for the model's spec: augmented for training,
    plain for validation, and a run repeats exactly with the same seed."""
    from data_factories import write_mnist

    train, val = datasets.train_val_split(datasets.mnist(write_mnist(tmp_path, n_per_class=4)), 0.25, seed=0)

    def run():
        torch.manual_seed(0)
        model = imgzoo.create_model("mnist_cnn", hidden=8)
        return fit(model, train, val, epochs=2, batch_size=8, seed=3, verbose=0, schedule=None), model

    (first, model), (again, _) = run(), run()
    assert len(first) == 2 and first.train_loss == again.train_loss and first.val_acc == again.val_acc
    assert evaluate(model, val).num_samples == len(val)
