"""Training throughput of the U-Net generator beside the FLOP rate torch reaches on a plain conv.

``python -m benchmarks.train_throughput [--widths 16 32 64] [--batch 32] [--threads N]``

For each width: the generator (3 input channels) in train mode, batch 32, one step = forward,
L1 loss, backward, Adam step. A couple of warm-up steps, then timed steps for ``--seconds`` (at
least ``--steps``). The generator's FLOPs per step come from ``torch.utils.flop_counter`` on one
forward + backward (convolutions and matmuls only: batch-norm, activations and Adam are not
counted, so the achieved rate is a lower bound on the arithmetic done).

The reference is a plain 5x5 ``Conv2d`` (the generator's kernel) forward + backward at a size with
high arithmetic intensity, its FLOPs counted analytically (forward 2*B*C_out*H*W*C_in*k*k;
backward twice that: the input and the weight gradients). The ratio generator FLOP/s / conv
FLOP/s says how much of the machine's attainable conv rate the training step uses.

The training loop (``--loop-variant``, default ``guided``; ``--loop-widths``): the same variant's
whole `training.train.gan_step` (generator and discriminator, bf16 autocast and channels_last on
CUDA) timed two ways on ``--device``: *bare*, on one batch already on the device, and *full*, with
`training.batches.BatchMaker` making every batch from the training split (``--data``) as training
does. Their steps alternate one by one, so a busy machine slows both alike; full / bare (of
median step rates) is how much of the device the batch pipeline leaves to training.

Writes ``<out>/report.md`` and ``results.json``. ``--quick`` (widths 4 and 8, batch 8, few steps)
is what the tests run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.latency_report import machine_description
from contract.hints import MODEL_SIZE
from training.batches import BatchMaker, batch_generator
from training.config import TrainConfig
from training.data import load_split
from training.networks import UNet, UNetConfig, count_parameters
from training.train import bf16_ok, build_training, gan_step, resolve_device
from training.variants import VARIANTS


@dataclass(frozen=True)
class ConvShape:
    """The reference convolution: (batch, channels, size, size) -> same, kernel x kernel, stride 1."""

    batch: int = 16
    channels: int = 128
    size: int = 32
    kernel: int = 5

    def forward_flops(self) -> int:
        return 2 * self.batch * self.channels * self.size * self.size * self.channels * self.kernel**2

    def step_flops(self) -> int:
        """Forward + backward (grad input + grad weight), each as many FLOPs as the forward."""
        return 3 * self.forward_flops()


@dataclass(frozen=True)
class ThroughputConfig:
    widths: tuple[int, ...] = (16, 32, 64)
    batch: int = 32
    in_channels: int = 3
    warmup_steps: int = 2
    steps: int = 3  # at least this many timed steps ...
    seconds: float = 10.0  # ... and at least this long
    conv: ConvShape = ConvShape()
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    device: str = "cpu"
    loop_variant: str = "guided"
    loop_widths: tuple[int, ...] = (16,)
    loop_steps: int = 12  # timed steps of each kind (bare, full, batches only), interleaved
    data: str = "openmoji"  # the training split the full loop draws from ("synthetic" if not prepared)
    out: Path = Path("results/train_throughput")

    @staticmethod
    def quick(**overrides) -> ThroughputConfig:
        base = dict(
            widths=(4, 8),
            batch=8,
            warmup_steps=1,
            steps=2,
            seconds=0.5,
            conv=ConvShape(4, 64, 32, 5),
            loop_widths=(4,),
            loop_steps=2,
            data="synthetic",
        )
        return ThroughputConfig(**{**base, **overrides})


@dataclass
class Measured:
    name: str
    parameters: int
    flops_per_step: float  # counted: FlopCounterMode for the generator, analytic for the conv
    steps: int
    seconds_per_step: float
    images_per_s: float  # nan for the conv
    gflops_per_s: float
    fraction_of_conv: float = float("nan")


def timed(step, warmup: int, steps: int, seconds: float) -> tuple[int, float]:
    """Run step() warmup times, then until both `steps` runs and `seconds` have passed: -> (runs, s/run)."""
    for _ in range(warmup):
        step()
    runs, start = 0, time.perf_counter()
    while runs < steps or time.perf_counter() - start < seconds:
        step()
        runs += 1
    return runs, (time.perf_counter() - start) / runs


def generator_step_flops(generator: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """FLOPs of one forward + backward, as torch's FLOP counter sees them."""
    with FlopCounterMode(display=False) as counter:
        F.l1_loss(generator(x), y).backward()
    generator.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure_generator(cfg: ThroughputConfig, width: int) -> Measured:
    device = resolve_device(cfg.device)
    torch.manual_seed(0)
    generator = UNet(UNetConfig(in_channels=cfg.in_channels, width=width)).train().to(device)
    opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x = torch.rand(cfg.batch, cfg.in_channels, MODEL_SIZE, MODEL_SIZE, device=device) * 2 - 1  # (B, C, 128, 128)
    y = torch.rand(cfg.batch, 3, MODEL_SIZE, MODEL_SIZE, device=device) * 2 - 1
    flops = generator_step_flops(generator, x, y)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_G_L1 = F.l1_loss(generator(x), y)
        loss_G_L1.backward()
        opt.step()
        synchronize(device)

    steps, per_step = timed(step, cfg.warmup_steps, cfg.steps, cfg.seconds)
    return Measured(
        f"U-Net width {width}",
        count_parameters(generator),
        flops,
        steps,
        per_step,
        cfg.batch / per_step,
        flops / per_step / 1e9,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_conv(
    shape: ConvShape, warmup: int, steps: int, seconds: float, device: torch.device
) -> tuple[Measured, int]:
    """The plain conv's forward + backward; -> (measurement, FLOPs torch's counter sees, as a check)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(shape.channels, shape.channels, shape.kernel, padding=shape.kernel // 2, bias=False).to(device)
    x = torch.randn(shape.batch, shape.channels, shape.size, shape.size, device=device, requires_grad=True)

    def step() -> None:
        conv.weight.grad = x.grad = None
        conv(x).sum().backward()
        synchronize(device)

    with FlopCounterMode(display=False) as counter:
        step()
    steps_run, per_step = timed(step, warmup, steps, seconds)
    flops = shape.step_flops()
    name = f"Conv2d {shape.channels}->{shape.channels} {shape.kernel}x{shape.kernel} on {shape.batch}x{shape.size}²"
    measured = Measured(
        name, count_parameters(conv), flops, steps_run, per_step, float("nan"), flops / per_step / 1e9, 1.0
    )
    return measured, counter.get_total_flops()


def measure_loop(cfg: ThroughputConfig, width: int) -> dict:
    """img/s of the variant's training step, bare (a fixed batch) and full (BatchMaker + step), and
    of the BatchMaker alone; rounds alternate so both see the same machine."""
    device = resolve_device(cfg.device)
    variant = VARIANTS[cfg.loop_variant]
    tcfg = TrainConfig(variant=variant.name, width=width, batch_size=cfg.batch, device=str(device))
    models = build_training(tcfg, device)
    data = cfg.data
    try:
        train_set = load_split(data, "train")
    except FileNotFoundError:
        data, train_set = "synthetic", load_split("synthetic", "train")
    make_batch = BatchMaker(train_set, variant, device)
    rng = np.random.default_rng(0)
    step = [0]
    use_amp = bf16_ok(device)
    fixed = make_batch(rng.integers(len(make_batch), size=cfg.batch), batch_generator(0, 0, 0, device))

    def draw():
        step[0] += 1
        return make_batch(rng.integers(len(make_batch), size=cfg.batch), batch_generator(0, step[0], 0, device))

    def bare() -> None:
        step[0] += 1
        gan_step(models, variant, fixed, step[0], use_amp)  # .item() inside waits for the device

    def bare_fp32() -> None:  # the same step in float32: what bfloat16 autocast buys
        step[0] += 1
        gan_step(models, variant, fixed, step[0], False)

    def full() -> None:
        gan_step(models, variant, draw(), step[0], use_amp)

    def data_only() -> None:
        draw()
        synchronize(device)

    for fn in (bare, full):
        for _ in range(cfg.warmup_steps):
            fn()
    # Step by step, alternating: a burst of load from elsewhere hits both kinds alike, and the
    # median of each kind's step times shrugs it off.
    times = {"bare": [], "full": [], "data": [], "fp32": []}
    for _ in range(max(cfg.loop_steps, 1)):
        for name, fn in (("bare", bare), ("full", full), ("data", data_only), ("fp32", bare_fp32)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    rates = {k: [cfg.batch / t for t in v] for k, v in times.items()}
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return {
        "variant": variant.name,
        "width": width,
        "batch": cfg.batch,
        "device": str(device),
        "data": data,
        "bare_img_s": med["bare"],
        "full_img_s": med["full"],
        "data_img_s": med["data"],
        "full_over_bare": med["full"] / med["bare"],
        "bf16": use_amp,
        "bare_fp32_img_s": med["fp32"],
        "steps": rates,
    }


def run(cfg: ThroughputConfig, argv: list[str] | None = None) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    machine = machine_description()
    device = resolve_device(cfg.device)
    loops = []
    for width in cfg.loop_widths:
        loop = measure_loop(cfg, width)
        print(
            f"{loop['variant']} w{width} on {loop['device']}: bare {loop['bare_img_s']:.1f} img/s, full "
            f"{loop['full_img_s']:.1f} img/s ({loop['full_over_bare']:.0%})",
            file=sys.stderr,
        )
        loops.append(loop)
    conv, conv_counted = measure_conv(cfg.conv, cfg.warmup_steps, cfg.steps, cfg.seconds, device)
    print(f"{conv.name}: {conv.gflops_per_s:.1f} GFLOP/s", file=sys.stderr)
    rows = []
    for width in cfg.widths:
        m = measure_generator(cfg, width)
        m.fraction_of_conv = m.gflops_per_s / conv.gflops_per_s
        print(
            f"{m.name}: {m.images_per_s:.1f} img/s, {m.gflops_per_s:.1f} GFLOP/s "
            f"({100 * m.fraction_of_conv:.0f}% of the conv)",
            file=sys.stderr,
        )
        rows.append(m)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config["command"] = " ".join(["python -m benchmarks.train_throughput", *(argv or [])])
    result = {
        "config": config,
        "machine": machine,
        "conv": asdict(conv),
        "conv_flops_counted": conv_counted,
        "generator": [asdict(m) for m in rows],
        "loop": loops,
    }
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (cfg.out / "report.md").write_text(render_report(result))
    return result


def render_report(result: dict) -> str:
    cfg, conv = result["config"], result["conv"]
    lines = [
        "# Training throughput: U-Net generator vs a plain conv",
        "",
        f"`{cfg['command']}`",
        "",
        f"One step: forward, L1 loss, backward, Adam; batch {cfg['batch']}, {cfg['in_channels']} input channels, "
        f"{MODEL_SIZE}x{MODEL_SIZE}, float32, train mode; {cfg['warmup_steps']} warm-up steps, then at least "
        f"{cfg['steps']} steps and {cfg['seconds']:g} s timed. Generator FLOPs: torch's FlopCounterMode on one "
        "forward + backward (convolutions only; batch-norm, activations and Adam uncounted).",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in result["machine"].items()),
        "",
        "## Results",
        "",
        "| model | parameters | GFLOP / step | ms / step | images/s | GFLOP/s | of conv rate |",
        "|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in [conv, *result["generator"]]:
        images = "-" if math.isnan(m["images_per_s"]) else f"{m['images_per_s']:.1f}"
        cells = [
            m["name"],
            f"{m['parameters']:,}",
            f"{m['flops_per_step'] / 1e9:.2f}",
            f"{1e3 * m['seconds_per_step']:.0f}",
            images,
            f"{m['gflops_per_s']:.1f}",
            f"{100 * m['fraction_of_conv']:.0f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    check = result["conv_flops_counted"] / conv["flops_per_step"]
    lines += [
        "",
        f"The conv's FLOPs are counted analytically; torch's counter sees {check:.2f}x that number on the same "
        "step (a check that both count the same way).",
        "",
        "## The training loop: bare step vs batches made as training makes them",
        "",
        f"The variant's whole GAN step (`training.train.gan_step`) on `{cfg['device']}`, batch {cfg['batch']}: "
        "*bare* on one batch already on the device, *full* with `BatchMaker` drawing, flipping, sampling "
        "hints and encoding every batch from the training split; *batches only* is the BatchMaker alone. "
        f"Medians over {cfg['loop_steps']} steps of each kind, interleaved step by step. Models in channels_last; "
        "the step in bfloat16 autocast where `training.train.bf16_ok` (CUDA, or a CPU with AVX-512 BF16/AMX), "
        "and the bare step once more in float32 beside it.",
        "",
        "| variant | width | data | bf16 | bare step img/s | bare float32 img/s | full loop img/s | full / bare "
        "| batches only img/s |",
        "|:---|---:|:---|:---|---:|---:|---:|---:|---:|",
    ]
    for loop in result.get("loop", []):
        lines.append(
            f"| {loop['variant']} | {loop['width']} | {loop['data']} | {'yes' if loop['bf16'] else 'no'} | "
            f"{loop['bare_img_s']:.1f} | {loop['bare_fp32_img_s']:.1f} | {loop['full_img_s']:.1f} | "
            f"{loop['full_over_bare']:.0%} | {loop['data_img_s']:.0f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = ThroughputConfig()
    parser.add_argument("--widths", type=int, nargs="+", help=f"default {' '.join(map(str, d.widths))}")
    parser.add_argument("--batch", type=int, help=f"default {d.batch}")
    parser.add_argument("--steps", type=int, help=f"minimum timed steps (default {d.steps})")
    parser.add_argument("--seconds", type=float, help=f"minimum timed seconds per model (default {d.seconds:g})")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N | auto (default cpu)")
    parser.add_argument("--loop-variant", choices=sorted(VARIANTS), help="default guided")
    parser.add_argument("--loop-widths", type=int, nargs="+", help="default 16")
    parser.add_argument("--loop-steps", type=int, help="timed steps of each kind in the loop comparison")
    parser.add_argument("--data", help="training split the full loop draws from (default openmoji)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="widths 4 and 8, batch 8, a few steps")
    args = parser.parse_args(argv)
    cfg = ThroughputConfig.quick() if args.quick else d
    overrides = {k: v for k, v in vars(args).items() if k != "quick" and v is not None}
    for key in ("widths", "loop_widths"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    cfg = replace(cfg, **overrides)
    result = run(cfg, argv)
    print(render_report(result).split("## Results", 1)[1].strip())
    return result


if __name__ == "__main__":
    main()
