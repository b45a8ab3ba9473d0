"""Batch-norm statistics measured over many training batches, for evaluation and export.

Training keeps the study's batch-norm momentum (Keras 0.9): its running statistics are an
average over the last ~10 batches. On the mixed data (mostly-white emoji beside colourful
drawings) those few batches swing the statistics so far that the same weights scored 17.3 dB
on validation at one epoch's end and 9.4 dB a few hundred steps later. Evaluation, sample
grids and export therefore use a copy of the generator whose statistics are the exact average
over `BN_BATCHES` training batches (what torch does with ``momentum=None``); the training
generator itself is left alone, so a resumed run stays bit-identical.

``python -m training.calibrate runs/guided/last.pt`` does it for a finished checkpoint (stored
as ``G_eval``, which export prefers), prints the validation score before and after, and draws
``samples/calibrated.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.batches import BatchMaker, batch_generator
from training.checkpoint import read_checkpoint
from training.config import BN_BATCHES, TrainConfig
from training.data import load_split
from training.evaluation import evaluate, validation_batches
from training.export import load_generator
from training.plots import save_sample_grid
from training.variants import VARIANTS


@torch.no_grad()
def calibrate_batchnorm(
    generator: nn.Module, make_batch: BatchMaker, batches: int, batch_size: int, seed: int
) -> nn.Module:
    """A copy of `generator` in eval mode, its batch-norm statistics averaged over `batches` batches
    of the training distribution (drawn from a fixed stream: the same weights give the same copy)."""
    model = copy.deepcopy(generator)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average, not an exponential one
    model.train()
    rng = np.random.default_rng([seed, 271828])
    device = make_batch.sketches.device
    for i in range(batches):
        indices = rng.integers(len(make_batch), size=batch_size)
        model(make_batch(indices, batch_generator(seed, 10**9 + i, 0, device)).inputs)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="+")
    parser.add_argument("--batches", type=int, default=BN_BATCHES)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for path in args.checkpoint:
        ckpt = read_checkpoint(path)
        cfg = TrainConfig(**ckpt["config"])
        variant = VARIANTS[cfg.variant]
        generator, _ = load_generator(path, use_eval_state=False)
        make_batch = BatchMaker(load_split(cfg.data, "train"), variant, torch.device("cpu"), flip=cfg.flip)
        val = load_split(cfg.data, "val")
        before = evaluate(generator, validation_batches(val, variant, cfg), torch.device("cpu"))
        calibrated = calibrate_batchnorm(generator, make_batch, args.batches, cfg.batch_size, cfg.seed)
        after = evaluate(calibrated, validation_batches(val, variant, cfg), torch.device("cpu"))
        ckpt["G_eval"] = calibrated.state_dict()
        samples = Path(path).parent / "samples" / "calibrated.png"
        samples.parent.mkdir(parents=True, exist_ok=True)
        save_sample_grid(calibrated, val, variant, cfg, torch.device("cpu"), samples)
        ckpt["history"]["val"].append({**after, "epoch": ckpt["epoch"], "step": ckpt["step"], "calibrated": True})
        tmp = f"{path}.tmp"
        torch.save(ckpt, tmp)
        Path(tmp).replace(path)  # atomic, as training's own checkpoints
        scores = {"val_psnr_before": before["val_psnr"], "val_psnr_after": after["val_psnr"]}
        print(json.dumps({"checkpoint": path, **scores}))


if __name__ == "__main__":
    main()
