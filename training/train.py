"""Train one generator variant: ``python -m training.train --variant guided --epochs 20``.

Every batch is a pure function of (seed, epoch, step): the order of the pairs, the flips and the
sampled hints. With the model, both optimisers and the step in the checkpoint, a resumed run is
the same run. ``torchrun --nproc-per-node N -m training.train ...`` trains on N processes
(DistributedDataParallel; each rank takes every N-th pair of the epoch's order).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import hints as H
from training.data import load_split
from training.metrics import psnr_uint8
from training.networks import PatchDiscriminator, StudyDiscriminator, UNet, UNetConfig
from training.plots import plot_history, save_sample_grid
from training.variants import VARIANTS, Variant


@dataclass(frozen=True)
class TrainConfig:
    variant: str = "guided"
    data: str = "openmoji"
    out_dir: str = "runs/guided"
    width: int = 16  # generator width; 64 is the study's
    d_width: int = 0  # discriminator width; 0 = same as the generator
    epochs: int = 20
    batch_size: int = 8
    lr: float = 2e-4
    beta1: float = 0.5
    seed: int = 0
    flip: bool = True  # horizontal flips; safe for every hint kind since hints are drawn after
    max_steps: int = 0  # stop after this many steps in all (0 = run all epochs)
    checkpoint_every: int = 200  # steps between mid-epoch checkpoints
    sample_every: int = 1  # epochs between sample grids
    val_hints: int = 10  # point hints given to the guided variant during validation
    max_val: int = 256  # validation pairs scored each epoch
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    threads: int = 0  # torch CPU threads (0 = torch's default)
    dry_run: bool = False

    def generator_config(self) -> UNetConfig:
        return UNetConfig(in_channels=VARIANTS[self.variant].hint.channels, width=self.width)


@dataclass
class History:
    """What the plots are drawn from; saved in the checkpoint so a resumed run keeps its curves."""

    train: list[dict] = field(default_factory=list)  # one row per logged step
    val: list[dict] = field(default_factory=list)  # one row per epoch
    wall_time_s: float = 0.0  # training time over all sessions of the run, validation included


def build_models(cfg: TrainConfig) -> tuple[UNet, nn.Module | None]:
    variant = VARIANTS[cfg.variant]
    gcfg = cfg.generator_config()
    generator = UNet(gcfg)
    d_width = cfg.d_width or cfg.width
    if variant.discriminator == "study":
        return generator, StudyDiscriminator(replace(gcfg, width=d_width))
    if variant.discriminator == "patch":
        return generator, PatchDiscriminator(gcfg.in_channels, width=d_width)
    return generator, None


def make_batch(
    dataset, indices: np.ndarray, variant: Variant, rng: np.random.Generator, flip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (B, C, 128, 128), targets (B, 3, 128, 128)), both in [-1, 1]."""
    inputs, targets = [], []
    for i in indices:
        sketch, color = dataset[int(i)]
        if flip and rng.random() < 0.5:
            sketch, color = sketch[:, ::-1], color[:, ::-1]
        color = np.ascontiguousarray(color)
        points = H.sample_training_points(color, rng) if variant.hint is H.HintKind.POINTS else ()
        inputs.append(H.encode(variant.hint, np.ascontiguousarray(sketch), color=color, points=points))
        targets.append(H.to_unit(color).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets))


def validation_batches(dataset, variant: Variant, cfg: TrainConfig, batch_size: int = 32):
    """The same validation inputs every epoch: fixed pairs and fixed hints (val_hints points)."""
    rng = np.random.default_rng(12345)
    n = min(len(dataset), cfg.max_val)
    for start in range(0, n, batch_size):
        inputs, targets = [], []
        for i in range(start, min(start + batch_size, n)):
            sketch, color = dataset[i]
            points = H.random_points(color, cfg.val_hints, rng) if variant.hint is H.HintKind.POINTS else ()
            inputs.append(H.encode(variant.hint, sketch, color=color, points=points))
            targets.append(color)
        yield torch.from_numpy(np.stack(inputs)), np.stack(targets)


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


def save_checkpoint(path: Path, cfg: TrainConfig, generator, discriminator, opt_g, opt_d, step, epoch, history):
    """Everything needed to rebuild the generator (export) or continue the run exactly (resume)."""
    ckpt = {
        "config": asdict(cfg),
        "generator_config": asdict(cfg.generator_config()),
        "variant": asdict(VARIANTS[cfg.variant]),
        "G": _unwrap(generator).state_dict(),
        "D": _unwrap(discriminator).state_dict() if discriminator is not None else None,
        "opt_G": opt_g.state_dict(),
        "opt_D": opt_d.state_dict() if opt_d is not None else None,
        "step": step,
        "epoch": epoch,
        "history": asdict(history),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)  # atomic: a stop mid-save never leaves a broken checkpoint


def _unwrap(module):
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def train(cfg: TrainConfig, resume: bool = True) -> dict:
    """Run (or continue) a training run; returns the last validation metrics."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(cfg.device, local_rank)
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    is_main = rank == 0
    out = Path(cfg.out_dir)
    if is_main:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    variant = VARIANTS[cfg.variant]
    torch.manual_seed(cfg.seed)
    generator, discriminator = build_models(cfg)
    generator.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = None
    if discriminator is not None:
        discriminator.to(device)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))

    step, history = 0, History()
    ckpt_path = out / "last.pt"
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ckpt["config"]["variant"] != cfg.variant:
            raise SystemExit(f"{ckpt_path} holds variant {ckpt['config']['variant']}, not {cfg.variant}")
        generator.load_state_dict(ckpt["G"])
        opt_g.load_state_dict(ckpt["opt_G"])
        if discriminator is not None:
            discriminator.load_state_dict(ckpt["D"])
            opt_d.load_state_dict(ckpt["opt_D"])
        step, history = ckpt["step"], History(**ckpt["history"])
        if is_main:
            print(f"resumed {ckpt_path} at step {step}", file=sys.stderr)

    if world > 1:
        generator = nn.parallel.DistributedDataParallel(generator)
        if discriminator is not None:
            discriminator = nn.parallel.DistributedDataParallel(discriminator)

    train_set = load_split("synthetic" if cfg.dry_run else cfg.data, "train")
    val_set = load_split("synthetic" if cfg.dry_run else cfg.data, "val")
    steps_per_epoch = len(train_set) // (cfg.batch_size * world)
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train_set)} training pairs cannot fill one batch of {cfg.batch_size} x {world}")
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    use_amp = cfg.amp and device.type == "cuda"
    metrics = history.val[-1] if history.val else {}

    from tqdm import tqdm

    bar = tqdm(total=total_steps, initial=step, unit="step", disable=not is_main, dynamic_ncols=True)
    generator.train()
    last_time, last_step = time.perf_counter(), step
    tick = last_time
    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_set))
        batch_idx = order[(in_epoch * world + rank) * cfg.batch_size :][: cfg.batch_size]
        rng = np.random.default_rng([cfg.seed, step, rank, 1])
        inputs, targets = make_batch(train_set, batch_idx, variant, rng, cfg.flip)
        inputs, targets = inputs.to(device), targets.to(device)  # (B, C, 128, 128), (B, 3, 128, 128)

        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            fake = generator(inputs)  # (B, 3, 128, 128) in [-1, 1]
        fake = fake.float()
        losses = {}

        # Discriminator update: real pairs -> 1, generated pairs -> 0.
        if discriminator is not None and step % variant.d_every == 0:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                d_real = discriminator(inputs, targets).float()
                d_fake = discriminator(inputs, fake.detach()).float()
            loss_D_real = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            loss_D_fake = F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            ((loss_D_real + loss_D_fake) * 0.5).backward()
            opt_d.step()
            losses.update(loss_D_real=loss_D_real.item(), loss_D_fake=loss_D_fake.item())

        # Generator update: L1 to the target, plus fooling the discriminator for GAN variants.
        loss_G_L1 = F.l1_loss(fake, targets)
        loss_G = loss_G_L1
        if discriminator is not None:
            discriminator.requires_grad_(False)  # D is a fixed judge during the G step
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                d_fake = discriminator(inputs, fake).float()
            loss_G_adv = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
            loss_G = variant.l1_weight * loss_G_L1 + loss_G_adv
            losses["loss_G_adv"] = loss_G_adv.item()
        opt_g.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_g.step()
        if discriminator is not None:
            discriminator.requires_grad_(True)
        losses["loss_G_L1"] = loss_G_L1.item()
        step += 1

        if is_main:
            history.train.append({"step": step, **losses})
            now = time.perf_counter()
            if now - last_time > 2 or step == total_steps:
                img_s = (step - last_step) * cfg.batch_size * world / (now - last_time)
                bar.set_postfix(
                    {k.removeprefix("loss_"): f"{v:.3f}" for k, v in losses.items()} | {"img/s": f"{img_s:.0f}"}
                )
                last_time, last_step = now, step
            bar.update(1)

        epoch_done = step % steps_per_epoch == 0
        if is_main and (epoch_done or step == total_steps):
            metrics = evaluate(_unwrap(generator), validation_batches(val_set, variant, cfg), device)
            metrics.update(epoch=step / steps_per_epoch, step=step)
            history.val.append(metrics)
            bar.write(
                f"epoch {metrics['epoch']:.2f}: val L1 {metrics['val_l1']:.4f}  PSNR {metrics['val_psnr']:.2f} dB"
            )
            plot_history(history, out / "loss_curves.png", title=cfg.variant)
            n_epoch = math.ceil(step / steps_per_epoch)
            if n_epoch % cfg.sample_every == 0 or step == total_steps:
                save_sample_grid(
                    _unwrap(generator), val_set, variant, cfg, device, out / "samples" / f"epoch_{n_epoch:03d}.png"
                )
        history.wall_time_s += time.perf_counter() - tick
        tick = time.perf_counter()
        if is_main and (epoch_done or step == total_steps or step % cfg.checkpoint_every == 0):
            save_checkpoint(
                ckpt_path, cfg, generator, discriminator, opt_g, opt_d, step, step / steps_per_epoch, history
            )
    bar.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return metrics


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = TrainConfig()
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=defaults.variant)
    parser.add_argument("--data", default=defaults.data, help="openmoji | kaggle:DIR | folder:DIR | synthetic")
    parser.add_argument("--out-dir", help="default: runs/<variant>")
    for name in ("width", "d_width", "epochs", "batch_size", "seed", "max_steps", "checkpoint_every",
                 "sample_every", "val_hints", "max_val", "threads"):  # fmt: skip
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--beta1", type=float, default=defaults.beta1)
    parser.add_argument("--device", default=defaults.device, help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--no-flip", dest="flip", action="store_false")
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--no-resume", dest="resume", action="store_false", help="ignore an existing last.pt")
    parser.add_argument("--dry-run", action="store_true", help="a few steps on generated pairs, tiny network")
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    args["out_dir"] = args["out_dir"] or f"runs/{args['variant']}"
    if args["dry_run"]:
        args.update(width=min(args["width"], 4), epochs=1, max_steps=args["max_steps"] or 3, batch_size=4, max_val=8)
    return TrainConfig(**args), resume


def main(argv: list[str] | None = None) -> None:
    cfg, resume = parse_args(argv)
    metrics = train(cfg, resume=resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics))


if __name__ == "__main__":
    main()
