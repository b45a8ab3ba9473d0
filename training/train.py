"""Train one generator variant: ``python -m training.train --variant guided --epochs 20``.

Every batch is a pure function of (seed, epoch, step): the order of the pairs, the flips and the
sampled hints, all drawn on the training device (`training.batches`). With the model, both
optimisers and the step in the checkpoint, a resumed run is the same run.
``torchrun --nproc-per-node N -m training.train ...`` trains on N processes (DistributedDataParallel;
each rank takes every N-th batch of the epoch's order, on its own ``cuda:LOCAL_RANK`` with ``--device cuda``).
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

from training.batches import Batch, BatchMaker, batch_generator
from training.calibrate import calibrate_batchnorm
from training.checkpoint import read_checkpoint
from training.config import TrainConfig
from training.data import load_split
from training.evaluation import evaluate, validation_batches
from training.networks import PatchDiscriminator, StudyDiscriminator, UNet
from training.plots import plot_history, save_sample_grid
from training.variants import VARIANTS, Variant


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


def save_checkpoint(path: Path, cfg: TrainConfig, models: Models, step: int, epoch: float, history: History) -> None:
    """Everything needed to rebuild the generator (export) or continue the run exactly (resume)."""
    ckpt = {
        "config": asdict(cfg),
        "generator_config": asdict(cfg.generator_config()),
        "variant": {
            **asdict(VARIANTS[cfg.variant]),
            "hint": VARIANTS[cfg.variant].hint.value,
        },  # plain, not a pickled enum
        "G": _unwrap(models.generator).state_dict(),
        "G_eval": models.eval_state,  # what export takes: see training.calibrate
        "D": _unwrap(models.discriminator).state_dict() if models.discriminator is not None else None,
        "opt_G": models.opt_g.state_dict(),
        "opt_D": models.opt_d.state_dict() if models.opt_d is not None else None,
        "step": step,
        "epoch": epoch,
        "history": asdict(history),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)  # atomic: a stop mid-save never leaves a broken checkpoint


def _unwrap(module):
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto | cpu | cuda | cuda:N`` -> a device; a CUDA device always gets an index (torch.cuda.set_device
    needs one), and a bare ``cuda`` under torchrun means each rank's own GPU, ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


@dataclass(frozen=True)
class Process:
    """Where this process stands: its rank among `world` (torchrun's environment) and its device."""

    world: int
    rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_process(cfg: TrainConfig) -> Process:
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return Process(world, rank, device)


@dataclass
class Models:
    generator: nn.Module
    discriminator: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    eval_state: dict | None = None  # the generator with calibrated batch-norm statistics, at the last evaluation


def build_training(cfg: TrainConfig, device: torch.device) -> Models:
    torch.manual_seed(cfg.seed)
    generator, discriminator = build_models(cfg)
    # channels_last is what the GPU's tensor cores want, and oneDNN's CPU convolutions too.
    memory_format = torch.channels_last
    generator.to(device, memory_format=memory_format)
    head = [p for n, p in generator.named_parameters() if n.startswith("refine.")]
    body = [p for n, p in generator.named_parameters() if not n.startswith("refine.")]
    groups = [{"params": body}] + ([{"params": head, "lr": cfg.refine_lr or cfg.lr}] if head else [])
    opt_g = torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = None
    if discriminator is not None:
        discriminator.to(device, memory_format=memory_format)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    return Models(generator, discriminator, opt_g, opt_d)


def load_checkpoint(path: Path, cfg: TrainConfig, models: Models, device: torch.device) -> tuple[int, History]:
    ckpt = read_checkpoint(path, device)
    if ckpt["config"]["variant"] != cfg.variant:
        raise SystemExit(f"{path} holds variant {ckpt['config']['variant']}, not {cfg.variant}")
    models.generator.load_state_dict(ckpt["G"])
    models.opt_g.load_state_dict(ckpt["opt_G"])
    if models.discriminator is not None:
        models.discriminator.load_state_dict(ckpt["D"])
        models.opt_d.load_state_dict(ckpt["opt_D"])
    models.eval_state = ckpt.get("G_eval")
    return ckpt["step"], History(**ckpt["history"])


def load_initial(generator: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Fine-tuning's start: every weight of `state`; only a new refinement head may be missing."""
    try:
        missing, unexpected = generator.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape (another width or input)
        raise SystemExit(f"the initial weights do not fit this generator: {e}") from None
    missing = [k for k in missing if not k.startswith("refine.")]
    if missing or unexpected:
        raise SystemExit(f"the initial weights do not fit this generator: missing {missing}, unexpected {unexpected}")


def initial_weights(path: str) -> dict[str, torch.Tensor]:
    """A generator state dict from a training checkpoint or an exported program (fine-tuning)."""
    if path.endswith(".pt2"):
        return {k: v.float() for k, v in torch.export.load(path).state_dict.items()}
    return read_checkpoint(path)["G"]


def gan_step(models: Models, variant: Variant, batch: Batch, step: int, use_amp: bool) -> dict[str, float]:
    """One training step: the discriminator's update (on its iterations), then the generator's."""
    G, D = models.generator, models.discriminator
    inputs, targets = batch.inputs, batch.targets  # (B, C, 128, 128), (B, 3, 128, 128) in [-1, 1]
    device_type = inputs.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_amp):
        fake = G(inputs)  # (B, 3, 128, 128) in [-1, 1]
    fake = fake.float()
    losses = {}

    # Discriminator update: real pairs -> 1, generated pairs -> 0.
    if D is not None and step % variant.d_every == 0:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_amp):
            d_real = D(inputs, targets).float()
            d_fake = D(inputs, fake.detach()).float()
        loss_D_real = F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
        loss_D_fake = F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        models.opt_d.zero_grad(set_to_none=True)
        ((loss_D_real + loss_D_fake) * 0.5).backward()
        models.opt_d.step()
        losses.update(loss_D_real=loss_D_real.item(), loss_D_fake=loss_D_fake.item())

    # Generator update: L1 to the target, plus fooling the discriminator for GAN variants.
    loss_G_L1 = F.l1_loss(fake, targets)
    loss_G = loss_G_L1
    if D is not None:
        D.requires_grad_(False)  # D is a fixed judge during the G step
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_amp):
            d_fake = D(inputs, fake).float()
        loss_G_adv = F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))
        loss_G = variant.l1_weight * loss_G_L1 + loss_G_adv
        losses["loss_G_adv"] = loss_G_adv.item()
    models.opt_g.zero_grad(set_to_none=True)
    loss_G.backward()
    models.opt_g.step()
    if D is not None:
        D.requires_grad_(True)
    losses["loss_G_L1"] = loss_G_L1.item()  # .item() waits for the device: step timings are real
    return losses


def end_of_epoch(
    cfg: TrainConfig,
    models: Models,
    make_batch: BatchMaker,
    val_set,
    history: History,
    step: int,
    steps_per_epoch: int,
    device: torch.device,
    last: bool,
) -> dict:
    """Validation metrics, the loss curves and (every sample_every epochs) a sample grid, all from a
    copy of the generator with batch-norm statistics measured over many batches (`training.calibrate`)."""
    variant, out = VARIANTS[cfg.variant], Path(cfg.out_dir)
    generator = calibrate_batchnorm(_unwrap(models.generator), make_batch, cfg.bn_batches, cfg.batch_size, cfg.seed)
    models.eval_state = generator.state_dict()
    metrics = evaluate(generator, validation_batches(val_set, variant, cfg), device)
    metrics.update(epoch=step / steps_per_epoch, step=step)
    history.val.append(metrics)
    plot_history(history, out / "loss_curves.png", title=cfg.variant)
    n_epoch = math.ceil(step / steps_per_epoch)
    if n_epoch % cfg.sample_every == 0 or last:
        save_sample_grid(generator, val_set, variant, cfg, device, out / "samples" / f"epoch_{n_epoch:03d}.png")
    return metrics


def bf16_ok(device: torch.device) -> bool:
    """Whether bfloat16 autocast is fast here: any CUDA device, or a CPU with AVX-512 BF16 / AMX
    (elsewhere oneDNN emulates bfloat16, slower than float32)."""
    return device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cfg_total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    total = cfg.epochs * steps_per_epoch
    return min(total, cfg.max_steps) if cfg.max_steps else total


def epoch_indices(cfg: TrainConfig, n: int, step: int, steps_per_epoch: int, proc: Process) -> np.ndarray:
    """This rank's pairs for `step`: the epoch's fixed permutation, every world-th batch-sized slice."""
    epoch, in_epoch = divmod(step, steps_per_epoch)
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    return order[(in_epoch * proc.world + proc.rank) * cfg.batch_size :][: cfg.batch_size]


def train(cfg: TrainConfig, resume: bool = True) -> dict:
    """Run (or continue) a training run; returns the last validation metrics."""
    proc = setup_process(cfg)
    out = Path(cfg.out_dir)
    if proc.is_main:
        (out / "samples").mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    variant = VARIANTS[cfg.variant]
    models = build_training(cfg, proc.device)
    step, history, ckpt_path = 0, History(), out / "last.pt"
    if resume and ckpt_path.exists():
        step, history = load_checkpoint(ckpt_path, cfg, models, proc.device)
        if proc.is_main:
            print(f"resumed {ckpt_path} at step {step}", file=sys.stderr)
    elif cfg.init_from:
        load_initial(models.generator, initial_weights(cfg.init_from))
    if proc.world > 1:
        models.generator = nn.parallel.DistributedDataParallel(models.generator)
        if models.discriminator is not None:
            models.discriminator = nn.parallel.DistributedDataParallel(models.discriminator)

    source = "synthetic" if cfg.dry_run else cfg.data
    make_batch = BatchMaker(load_split(source, "train"), variant, proc.device, flip=cfg.flip, recolour=cfg.recolour)
    val_set = load_split(source, "val")
    steps_per_epoch = len(make_batch) // (cfg.batch_size * proc.world)
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(make_batch)} training pairs cannot fill one batch of {cfg.batch_size} x {proc.world}")
    total_steps = cfg_total_steps(cfg, steps_per_epoch)
    use_amp = cfg.amp and bf16_ok(proc.device)
    metrics = history.val[-1] if history.val else {}
    bar = Progress(total_steps, step, cfg.batch_size * proc.world, enabled=proc.is_main)
    models.generator.train()
    deadline = time.perf_counter() + 60 * cfg.max_minutes if cfg.max_minutes else float("inf")
    while step < total_steps and time.perf_counter() < deadline:
        t0 = time.perf_counter()
        indices = epoch_indices(cfg, len(make_batch), step, steps_per_epoch, proc)
        batch = make_batch(indices, batch_generator(cfg.seed, step, proc.rank, proc.device))
        if proc.device.type == "cuda":
            torch.cuda.synchronize()  # so the data time is the batch's, not queued behind the last step
        t1 = time.perf_counter()
        losses = gan_step(models, variant, batch, step, use_amp)
        t2 = time.perf_counter()
        step += 1
        if proc.is_main:
            history.train.append({"step": step, **losses, "data_s": t1 - t0, "step_s": t2 - t1})
            bar.update(history.train[-1])

        epoch_done = step % steps_per_epoch == 0
        last = step == total_steps or time.perf_counter() >= deadline
        if proc.is_main and (epoch_done or last):
            metrics = end_of_epoch(cfg, models, make_batch, val_set, history, step, steps_per_epoch, proc.device, last)
            bar.write(f"epoch {metrics['epoch']:.2f}: val L1 {metrics['val_l1']:.4f} PSNR {metrics['val_psnr']:.2f} dB")
        history.wall_time_s += time.perf_counter() - t0
        if proc.is_main and (epoch_done or last or step % cfg.checkpoint_every == 0):
            save_checkpoint(ckpt_path, cfg, models, step, step / steps_per_epoch, history)
    bar.close()
    if proc.world > 1:
        # Every rank waits for the main one's last validation and checkpoint: a rank that tore its
        # process group down while another still held it aborted now and then at exit (gloo).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return metrics


class Progress:
    """A tqdm bar that shows the losses, img/s and the share of time spent making batches."""

    def __init__(self, total: int, initial: int, images_per_step: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True)
        self.images_per_step, self.rows, self.last = images_per_step, [], time.perf_counter()

    def update(self, row: dict) -> None:
        self.rows.append(row)
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last > 2 or self.bar.n == self.bar.total:
            data, busy = (sum(r[k] for r in self.rows) for k in ("data_s", "step_s"))
            losses = {k.removeprefix("loss_"): f"{v:.3f}" for k, v in row.items() if k.startswith("loss_")}
            rate = len(self.rows) * self.images_per_step / (now - self.last)
            self.bar.set_postfix(losses | {"img/s": f"{rate:.0f}", "data": f"{data / (data + busy):.0%}"})
            self.rows, self.last = [], now

    def write(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> None:
        self.bar.close()


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = TrainConfig()
    parser.add_argument("--variant", choices=sorted(VARIANTS), default=defaults.variant)
    parser.add_argument(
        "--data", default=defaults.data, help="mix | openmoji | illustrations | kaggle:DIR | folder:DIR | synthetic"
    )
    parser.add_argument("--out-dir", help="default: runs/<variant>")
    for name in (
        "width",
        "refine",
        "d_width",
        "epochs",
        "batch_size",
        "seed",
        "max_steps",
        "checkpoint_every",
        "sample_every",
        "val_hints",
        "max_val",
        "threads",
        "bn_batches",
    ):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--refine-lr", type=float, default=defaults.refine_lr)
    parser.add_argument(
        "--recolour",
        type=float,
        default=defaults.recolour,
        help="share of hinted images whose first hint's region is repainted (0 = off)",
    )
    parser.add_argument("--max-minutes", type=float, default=0.0, help="stop (resumably) after this many minutes")
    parser.add_argument("--beta1", type=float, default=defaults.beta1)
    parser.add_argument("--device", default=defaults.device, help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--init-from", default="", help="start a new run's generator from a last.pt or .pt2")
    parser.add_argument("--no-flip", dest="flip", action="store_false")
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--no-resume", dest="resume", action="store_false", help="ignore an existing last.pt")
    parser.add_argument("--dry-run", action="store_true", help="a few steps on generated pairs, tiny network")
    args = vars(parser.parse_args(argv))
    resume = args.pop("resume")
    args["out_dir"] = args["out_dir"] or f"runs/{args['variant']}"
    if args["dry_run"]:
        args.update(
            width=min(args["width"], 4),
            epochs=1,
            max_steps=args["max_steps"] or 3,
            batch_size=4,
            max_val=8,
            bn_batches=2,
        )
    return TrainConfig(**args), resume


def main(argv: list[str] | None = None) -> None:
    cfg, resume = parse_args(argv)
    metrics = train(cfg, resume=resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(metrics))


if __name__ == "__main__":
    main()
