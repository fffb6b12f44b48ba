"""Build imgzoo's models through the registry and look at what each one carries.

    python examples/build_models.py

Prints (1) every registered model with its input, output and parameter count,
(2) the CIFAR ResNets against the parameter counts in He et al. 2016, table 6,
(3) why those ResNets train deeper: the gradient reaching the first layer at
initialisation, with and without shortcuts, and (4) the fine-tuning controls of
the transfer-learning model. Runs in under half a minute on a CPU; needs no downloads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import imgzoo


def count(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def show_registry() -> None:
    print("registered models:", ", ".join(imgzoo.list_models()))
    for name in imgzoo.list_models():
        model = imgzoo.create_model(name).eval()
        spec = model.data_spec  # what preprocessing and checkpoints are built from
        with torch.no_grad():
            out = model(torch.zeros(2, *spec.input_shape))
        print(
            f"  {name:18s} {count(model) / 1e6:6.2f}M params  "
            f"in (N, {', '.join(map(str, spec.input_shape))}) -> out (N, {out.shape[1]})  "
            f"mean {spec.mean} std {spec.std}"
        )


def show_paper_counts() -> None:
    paper = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}  # millions, He et al. 2016, table 6
    print("\nresnet_cifar vs the paper (shortcut A):")
    for depth, millions in paper.items():
        params = count(imgzoo.resnet_cifar(depth=depth)) / 1e6
        print(f"  ResNet-{depth:<3d} {params:.3f}M (paper {millions}M, {100 * (params / millions - 1):+.1f}%)")


def gradient_ratio(depth: int, shortcut: str) -> float:
    """First-layer over last-layer gradient norm at initialisation, one random batch."""
    torch.manual_seed(0)
    model = imgzoo.resnet_cifar(depth=depth, shortcut=shortcut)
    F.cross_entropy(model(torch.randn(16, 3, 32, 32)), torch.randint(0, 10, (16,))).backward()
    return (model.stem[0].weight.grad.norm() / model.classifier.weight.grad.norm()).item()


def show_gradients() -> None:
    print("\nfirst/last-layer gradient norm at init (1 is well scaled):")
    for depth in (20, 56, 110):
        residual, plain = gradient_ratio(depth, "A"), gradient_ratio(depth, "none")
        print(f"  depth {depth:3d}: with shortcuts {residual:8.2g}   plain stack {plain:8.2g}")


def show_transfer() -> None:
    # weights=None: random init, so this runs offline; weights="imagenet" loads
    # torchvision's checkpoint from $TORCH_HOME/hub/checkpoints/.
    model = imgzoo.dogbreed_transfer(backbone="resnet18", weights=None, num_classes=120)
    print("\ndogbreed_transfer (resnet18):")
    print(f"  frozen backbone: {count(model, True):,} of {count(model):,} parameters train")
    model.unfreeze(last=1)
    print(f"  unfreeze(last=1): {count(model, True):,} train (head + layer4)")
    groups = model.param_groups(lr=0.01, backbone_lr_scale=0.1)
    print("  param_groups lr:", [g["lr"] for g in groups])


if __name__ == "__main__":
    show_registry()
    show_paper_counts()
    show_gradients()
    show_transfer()
