"""The whole path a user takes, through the public API only: files -> dataset -> transforms -> model ->
fit -> History -> save -> load -> predict. Each step is tested on its own elsewhere; this checks that
what one step hands over is what the next one needs (class names above all)."""

from __future__ import annotations

import torch
from data_factories import DOG_BREEDS, write_mnist, write_stanford_dogs

import imgzoo
from imgzoo import datasets, transforms
from imgzoo.data.loaders import FastLoader


def test_dog_breed_folders_to_a_saved_fine_tuned_model_that_names_breeds(tmp_path):
    root = write_stanford_dogs(tmp_path / "dogs", n_per_class=4)
    breeds = datasets.dog_breeds(root).classes
    assert breeds == [DOG_BREEDS[w] for w in sorted(DOG_BREEDS)]

    model = imgzoo.create_model("dogbreed_transfer", backbone="resnet18", weights=None, class_names=breeds)
    train = datasets.dog_breeds(root, transform=transforms.for_model(model, train=True))
    history = imgzoo.fit(model, train, epochs=1, batch_size=6, seed=0, verbose=0, num_workers=0)
    assert history.epoch == [1] and history.train_loss[0] > 0

    folder = imgzoo.save(model, tmp_path / "weights", history)
    loaded = imgzoo.load(folder)
    assert loaded.data_spec.class_names == tuple(breeds)

    image = next((root / "Images").rglob("*.jpg"))
    ranked = imgzoo.predict(loaded, image, topk=3)
    assert sorted(name for name, _ in ranked) == sorted(breeds)
    assert ranked == imgzoo.predict(model, image, topk=3)


def test_mnist_files_to_a_fast_loader_fit_and_back(tmp_path):
    root = write_mnist(tmp_path / "mnist", n_per_class=12)
    data = datasets.mnist(root)
    train, val = datasets.train_val_split(data, 0.25, seed=0)
    model = imgzoo.create_model("mnist_cnn")
    history = imgzoo.fit(
        model,
        FastLoader(train, 30, spec=model.data_spec, train=True, device="cpu"),
        FastLoader(val, 60, spec=model.data_spec, device="cpu"),
        epochs=3,
        lr=0.05,
        seed=0,
        verbose=0,
    )
    assert len(history) == 3 and history.val_acc[-1] is not None

    loaded = imgzoo.load(imgzoo.save(model, tmp_path / "weights", history))
    result = imgzoo.evaluate(loaded, FastLoader(val, 60, spec=loaded.data_spec, device="cpu"))
    assert result.top1 == history.val_acc[-1]
    digits = data.images[:4]  # uint8 (4, 1, 28, 28): predict applies the eval transform itself
    eval_tf = transforms.for_model(loaded)
    with torch.no_grad():
        expected = loaded(torch.stack([eval_tf(d) for d in digits])).argmax(1)
    assert [ranked[0][0] for ranked in imgzoo.predict(loaded, list(digits))] == [str(int(i)) for i in expected]


def test_a_run_goes_on_only_with_the_classes_it_trained_on(tmp_path):
    """imgzoo train --resume / more epochs: a data folder whose classes changed is refused before any work."""
    import pytest
    from data_factories import write_image_folder

    from imgzoo.study import config as run_config
    from imgzoo.study import run as runs

    root = write_image_folder(tmp_path / "data", classes=("ant", "bee"), n_per_class=6, size=(28, 28))
    config = run_config.make_config("mnist_cnn", str(root), epochs=1, batch_size=4)
    runs.train_run(tmp_path / "out", config, verbose=0, log=lambda _: None)
    (root / "bee").rename(root / "ape")  # now (ape, ant): label 0 would mean another class
    before = sorted((tmp_path / "out").rglob("*"))
    more = run_config.make_config("mnist_cnn", str(root), epochs=2, batch_size=4)
    with pytest.raises(
        ValueError, match=r"has 2 classes \(ant, ape\) but the run in .* predicts 2 classes \(ant, bee\)"
    ):
        runs.train_run(tmp_path / "out", more, resume=True, verbose=0, log=lambda _: None)
    assert sorted((tmp_path / "out").rglob("*")) == before
