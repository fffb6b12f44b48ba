"""Transfer learning's first step: a new head trained alone on a frozen backbone's pooled features, which are
computed once. A random head's first gradients, sent back through an unfrozen backbone, would wreck the features
it came for (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features", arXiv:2202.10054: linear probing
then fine-tuning beats fine-tuning alone); on cached features the head's epochs cost next to nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from imgzoo._device import autocast

__all__ = ["pooled_features", "warm_up_head"]

HEAD_LR = 1e-3  # AdamW's default: SGD at 0.1 overshot a new head on frozen features
HEAD_BATCH = 256


def pooled_features(
    model: nn.Module, batches: Iterable, device: torch.device, dtype: torch.dtype | None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of every batch: ``forward_head(..., pre_logits=True)`` in eval mode, as float32."""
    from tqdm.auto import tqdm

    model.eval()
    features, labels = [], []
    with torch.no_grad(), autocast(device, dtype):
        for x, y in tqdm(batches, desc="backbone features (once)", leave=False, disable=not progress):
            features.append(model.forward_head(model.forward_features(x.to(device)), pre_logits=True).float())
            labels.append(y.to(device))
    return torch.cat(features), torch.cat(labels)


def warm_up_head(
    model: nn.Module,
    batches: Iterable,
    epochs: int,
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
    label_smoothing: float = 0.0,
    seed: int = 0,
    say: Callable[[str], None] | None = print,
    progress: bool = False,
) -> float:
    """Train ``model.get_classifier()`` alone for ``epochs`` passes over the features of ``batches`` (un-augmented
    training images), with AdamW on a cosine schedule; returns its training accuracy. The backbone is not touched.
    ``say`` gets the result line; ``progress`` shows a bar while the features are computed."""
    head = model.get_classifier()
    x, y = pooled_features(model, batches, device, dtype, progress=progress)
    optimizer = torch.optim.AdamW(head.parameters(), lr=HEAD_LR)
    steps = epochs * -(-len(y) // HEAD_BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    loss_fn, generator = nn.CrossEntropyLoss(label_smoothing=label_smoothing), torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=generator).split(HEAD_BATCH):
            idx = idx.to(y.device)
            loss = loss_fn(head(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        accuracy = (head(x).argmax(1) == y).float().mean().item()
    if say is not None:
        say(f"head: {epochs} epochs on the frozen backbone's features of {len(y)} images, train top-1 {accuracy:.2%}")
    return accuracy
