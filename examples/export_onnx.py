"""Export a model to ONNX and classify an image with ONNX Runtime alone, preprocessing from the file's metadata.

imgzoo.hub.export.export_model writes the file only after ONNX Runtime has reproduced PyTorch's
logits on a sample batch, and returns the largest difference. The second half is what a
deployment without PyTorch does: read the class names, mean and std the file carries,
preprocess an image with PIL and NumPy, and run the graph; the answer is compared with
imgzoo.predict's. Needs the export extra: pip install "imgzoo[export]".

    python examples/export_onnx.py resnet_cifar.cifar10 --out resnet20.onnx
    python examples/export_onnx.py runs/mnist --out mnist.onnx   # a run folder (its weights/), or an imgzoo.save folder
    python examples/export_onnx.py --smoke        # mnist_cnn.mnist into a temporary folder
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

import imgzoo
from imgzoo.hub.export import export_model

SAMPLES = Path(imgzoo.__file__).parent / "samples"


def preprocess(path: Path, meta: dict[str, str]) -> np.ndarray:
    """imgzoo's eval transform in PIL and NumPy: resize (and centre crop), scale to [0, 1], normalise."""
    channels, height, width = json.loads(meta["input_shape"])
    mean, std = (np.array(json.loads(meta[k]), np.float32) for k in ("mean", "std"))
    resize = json.loads(meta["resize"])  # None for the small-image data sets
    image = Image.open(path).convert("L" if channels == 1 else "RGB")
    if resize is not None:  # ImageNet-style: the shorter side to `resize`, then the centre crop
        scale = resize / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image = image.crop((left, top, left + width, top + height))
    elif image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    x = np.asarray(image, np.float32).reshape(height, width, channels) / 255.0
    return ((x - mean) / std).transpose(2, 0, 1)[None]  # (1, C, H, W)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="resnet_cifar.cifar10", help="weights name or saved folder")
    parser.add_argument("--out", type=Path, help="the .onnx file to write (default: <model>.onnx here)")
    parser.add_argument("--smoke", action="store_true", help="export mnist_cnn.mnist into a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgzoo-smoke-") as tmp:
        name = "mnist_cnn.mnist" if args.smoke else args.model
        out = args.out or (Path(tmp) if args.smoke else Path.cwd()) / f"{Path(name).name}.onnx"

        model = imgzoo.load(name)
        difference = export_model(model, out, format="onnx")
        print(f"wrote {out}; ONNX Runtime vs PyTorch, max abs difference {difference:.2e}")

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map  # JSON strings, written by export_model
        class_names, architecture = json.loads(meta["class_names"]), json.loads(meta["architecture"])
        print(f"metadata: {architecture}, mean {meta['mean']}, std {meta['std']}, {len(class_names)} classes")
        folder = SAMPLES / ("mnist" if model.data_spec.channels == 1 else "cifar10")
        for path in sorted(folder.iterdir())[::10]:
            (logits,) = session.run(["logits"], {"images": preprocess(path, meta)})
            answer = class_names[int(logits.argmax())]
            reference = imgzoo.predict(model, path, topk=1)[0][0]
            print(f"  {path.name:22s} onnxruntime: {answer:10s} imgzoo.predict: {reference}")


if __name__ == "__main__":
    main()
