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

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.latency import machine_description
from training.networks import UNet, UNetConfig, count_parameters

IMAGE_SIZE = 128


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
    out: Path = Path("results/train_throughput")

    @staticmethod
    def quick(**overrides) -> ThroughputConfig:
        base = dict(widths=(4, 8), batch=8, warmup_steps=1, steps=2, seconds=0.5, conv=ConvShape(4, 64, 32, 5))
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
    torch.manual_seed(0)
    generator = UNet(UNetConfig(in_channels=cfg.in_channels, width=width)).train()
    opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x = torch.rand(cfg.batch, cfg.in_channels, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1  # (B, C, 128, 128) in [-1, 1]
    y = torch.rand(cfg.batch, 3, IMAGE_SIZE, IMAGE_SIZE) * 2 - 1
    flops = generator_step_flops(generator, x, y)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_G_L1 = F.l1_loss(generator(x), y)
        loss_G_L1.backward()
        opt.step()

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


def measure_conv(shape: ConvShape, warmup: int, steps: int, seconds: float) -> tuple[Measured, int]:
    """The plain conv's forward + backward; -> (measurement, FLOPs torch's counter sees, as a check)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(shape.channels, shape.channels, shape.kernel, padding=shape.kernel // 2, bias=False)
    x = torch.randn(shape.batch, shape.channels, shape.size, shape.size, requires_grad=True)

    def step() -> None:
        conv.weight.grad = x.grad = None
        conv(x).sum().backward()

    with FlopCounterMode(display=False) as counter:
        step()
    steps_run, per_step = timed(step, warmup, steps, seconds)
    flops = shape.step_flops()
    name = f"Conv2d {shape.channels}->{shape.channels} {shape.kernel}x{shape.kernel} on {shape.batch}x{shape.size}²"
    measured = Measured(
        name, count_parameters(conv), flops, steps_run, per_step, float("nan"), flops / per_step / 1e9, 1.0
    )
    return measured, counter.get_total_flops()


def run(cfg: ThroughputConfig, argv: list[str] | None = None) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    machine = machine_description()
    conv, conv_counted = measure_conv(cfg.conv, cfg.warmup_steps, cfg.steps, cfg.seconds)
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
        f"{IMAGE_SIZE}x{IMAGE_SIZE}, float32, train mode; {cfg['warmup_steps']} warm-up steps, then at least "
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
    ]
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
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="widths 4 and 8, batch 8, a few steps")
    args = parser.parse_args(argv)
    cfg = ThroughputConfig.quick() if args.quick else d
    overrides = {k: v for k, v in vars(args).items() if k != "quick" and v is not None}
    if "widths" in overrides:
        overrides["widths"] = tuple(overrides["widths"])
    cfg = replace(cfg, **overrides)
    result = run(cfg, argv)
    print(render_report(result).split("## Results", 1)[1].strip())
    return result


if __name__ == "__main__":
    main()
