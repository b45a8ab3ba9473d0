"""Validation: fixed inputs every epoch, and the scores a generator gets on them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from contract import hints as H
from training.config import TrainConfig
from training.metrics import psnr_uint8
from training.variants import Variant


def validation_batches(dataset, variant: Variant, cfg: TrainConfig, batch_size: int = 32):
    """The same validation inputs every epoch: fixed pairs and fixed hints (val_hints points placed
    the way people place them, on coloured regions)."""
    rng = np.random.default_rng(12345)
    chosen = spread(len(dataset), cfg.max_val)  # every source of a mixed split, not only the first
    for start in range(0, len(chosen), batch_size):
        inputs, targets = [], []
        for i in chosen[start : start + batch_size]:
            sketch, color = dataset[i]
            points = H.region_points(color, sketch, cfg.val_hints, rng) if variant.hint is H.HintKind.POINTS else ()
            inputs.append(H.encode(variant.hint, sketch, color=color, points=points))
            targets.append(color)
        yield torch.from_numpy(np.stack(inputs)), np.stack(targets)


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, k)).round()}) if n else []


@torch.no_grad()
def evaluate(generator: nn.Module, batches, device: torch.device) -> dict:
    """Mean L1 (on [-1, 1]) and PSNR (uint8 RGB, peak 255) over the batches, generator in eval mode."""
    was_training = generator.training
    generator.eval()
    l1s, psnrs = [], []
    for inputs, targets in batches:
        out = generator(inputs.to(device)).float().cpu().numpy()
        out_u8 = H.from_unit(out).transpose(0, 2, 3, 1)
        l1s += list(np.abs(out - H.to_unit(targets).transpose(0, 3, 1, 2)).mean(axis=(1, 2, 3)))
        psnrs += [psnr_uint8(o, t) for o, t in zip(out_u8, targets)]
    generator.train(was_training)
    return {"val_l1": float(np.mean(l1s)), "val_psnr": float(np.mean(psnrs))}
