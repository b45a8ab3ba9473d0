"""Everything worth knowing about a GPU box in one command that finishes in under six minutes.

``python -m benchmarks.gpu_check [--out results/gpu] [--variant guided]``

Four parts, each in its own process under its own time limit, each writing ``<out>/<part>.json``
as soon as it has numbers (or ``<out>/<part>.error.txt``), so one part's crash, hang or missing
dependency costs only that part:

1. ``environment`` (20 s): the card, driver, torch/CUDA versions, what imports.
2. ``forward`` (70 s): in-process forward img/s at batch 1/32/256 in fp32/fp16/bf16, for the
   shipped export of the variant and for fresh U-Nets of width 16 and 64.
3. ``train_loop`` (110 s): the variant's bare GAN step vs the full training loop (BatchMaker
   on the device), widths 16 and 64, batch 32 (`benchmarks.train_throughput.measure_loop`).
4. ``serving`` (150 s): Triton on the model repository (a GPU instance where Triton sees a GPU)
   behind the gateway: parity of Triton's output with the in-process float32 generator (within
   1/255 per pixel), then direct vs gateway latency at c = 1/16/64 on the same stack (`benchmarks.latency`).

Then ``<out>/report.md`` gathers what came back. Nothing is downloaded: the machine needs this
repository, its Python dependencies and (optionally) the prepared OpenMoji cache for real
training batches; without it the loop draws synthetic pairs. ``--quick`` is the CPU-sized
version the tests run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

from contract import wire
from contract.hints import MODEL_SIZE
from contract.wire import WEIGHTS_FILE

PARTS = {"environment": 20, "forward": 70, "train_loop": 110, "serving": 150}  # seconds each
QUICK = {
    "batches": (1, 4),
    "widths": (4,),
    "loop_widths": (4,),
    "loop_steps": 2,
    "concurrency": (1, 4),
    "duration": 1.0,
    "min_calls": 1,
    "call_seconds": 0.0,
}
FULL = {
    "batches": (1, 32, 256),
    "widths": (16, 64),
    "loop_widths": (16, 64),
    "loop_steps": 20,
    "concurrency": (1, 16, 64),
    "duration": 5.0,
    "min_calls": 5,
    "call_seconds": 0.5,
}
PARITY_TOLERANCE = 1  # uint8 levels per pixel: 1/255 of the range


def part_environment(out: Path, args) -> dict:
    import torch

    from benchmarks.latency_report import machine_description

    info = {
        "machine": machine_description(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["device"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
        }
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        info["nvidia_smi"] = f"unavailable: {e}"
    for module in ("tritonclient", "pytriton", "grpc", "cv2", "skia"):
        try:
            __import__(module)
            info[f"import {module}"] = "ok"
        except Exception as e:  # noqa: BLE001 - report any import failure, go on
            info[f"import {module}"] = f"{type(e).__name__}: {e}"
    return info


def part_forward(out: Path, args) -> dict:
    import torch

    from training.export import load_exported
    from training.networks import UNet, UNetConfig
    from training.variants import VARIANTS

    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    channels = VARIANTS[args.variant].hint.channels
    nets = {f"shipped {args.variant}": lambda: load_exported(Path(args.repository) / args.variant / "1" / WEIGHTS_FILE)}
    for w in args.widths:
        nets[f"U-Net w{w}"] = lambda w=w: UNet(UNetConfig(in_channels=channels, width=w)).eval()
    rows = []
    for name, build in nets.items():
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            try:
                net = build().to(device, dtype).to(memory_format=torch.channels_last)
            except Exception as e:  # noqa: BLE001
                rows.append({"net": name, "dtype": str(dtype), "error": f"{type(e).__name__}: {e}"})
                continue
            for batch in args.batches:
                row = {"net": name, "dtype": str(dtype).removeprefix("torch."), "batch": batch}
                try:
                    x = torch.rand(batch, channels, MODEL_SIZE, MODEL_SIZE, device=device, dtype=dtype) * 2 - 1
                    seconds = time_call(lambda net=net, x=x: net(x), device, args.min_calls, args.call_seconds)
                    row["img_s"] = batch / seconds
                except Exception as e:  # noqa: BLE001 - e.g. an export that allows fewer than 256
                    row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
                rows.append(row)
                write_json(out / "forward.json", {"device": str(device), "rows": rows})  # as it goes
    return {"device": str(device), "rows": rows}


def time_call(fn, device, min_calls: int = 5, seconds: float = 0.5) -> float:
    """Median seconds of one call, after two warm-up calls, synchronised on CUDA."""
    import torch

    with torch.inference_mode():
        for _ in range(2 if min_calls > 1 else 1):
            fn()
        times, stop = [], time.perf_counter() + seconds
        while len(times) < min_calls or time.perf_counter() < stop:
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def part_train_loop(out: Path, args) -> dict:
    from benchmarks.train_throughput import ThroughputConfig, measure_loop

    loops = []
    for width in args.loop_widths:
        cfg = ThroughputConfig(
            device="auto",
            batch=args.loop_batch,
            warmup_steps=3,
            loop_steps=args.loop_steps,
            loop_variant=args.variant,
            data=args.data,
        )
        loops.append(measure_loop(cfg, width))
        write_json(out / "train_loop.json", {"loops": loops})
    return {"loops": loops}


def part_serving(out: Path, args) -> dict:
    import asyncio

    import numpy as np
    import torch

    from benchmarks import latency as L
    from contract import batch as B
    from contract import hints as H
    from service.triton_local import serving_stack
    from training.export import load_exported

    repo = Path(args.repository)
    cfg = L.LatencyConfig(
        variant=args.variant,
        repository=repo,
        out=out / "latency",
        log_dir=out / "logs",
        duration=args.duration,
        warmup=min(1.0, args.duration),
        concurrency=args.concurrency,
        batches=args.batches,
        samples=16,
        sketches="synthetic" if args.quick else "auto",
    )
    result: dict = {}
    with serving_stack(repo, cfg.log_dir, gateway_args=("--log-level", "WARNING")) as stack:
        model = asyncio.run(L.model_info(stack.ports.grpc_url, args.variant))
        samples = L.make_samples(cfg.sketches, cfg.samples, 0)
        kind = H.HintKind(model["hint_encoding"])
        wire_inputs = [L.wire_sample(s, kind) for s in samples]
        from tritonclient.grpc import InferenceServerClient, InferInput, InferRequestedOutput

        client = InferenceServerClient(stack.ports.grpc_url)
        tensors = []
        for name in wire_inputs[0]:
            batch = np.stack([w[name] for w in wire_inputs])
            tensors.append(InferInput(name, list(batch.shape), "UINT8"))
            tensors[-1].set_data_from_numpy(batch)
        served = client.infer(args.variant, tensors, outputs=[InferRequestedOutput(model["output"])])
        served = served.as_numpy(model["output"])  # (N, 128, 128, 3) uint8
        # The reference: training's per-image encoding and the float32 generator on this process's CPU.
        encoded = np.stack(
            [
                H.encode(
                    kind,
                    s.sketch,
                    color=s.color if kind.needs_color_image else None,
                    points=s.points if kind is H.HintKind.POINTS else (),
                )
                for s in samples
            ]
        )
        with torch.inference_mode():
            generator = load_exported(repo / args.variant / "1" / WEIGHTS_FILE)
            generated = B.generate(generator, kind, torch.from_numpy(encoded)).numpy()
        reference = H.from_unit(generated).transpose(0, 2, 3, 1)
        diff = np.abs(served.astype(np.int64) - reference)
        inputs = encoded
        result["parity"] = {
            "images": len(inputs),
            "output_bytes": int(served.nbytes),
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "tolerance": PARITY_TOLERANCE,
            "ok": bool(served.size == reference.size and diff.max() <= PARITY_TOLERANCE),
        }
        write_json(out / "serving.json", result)
        res = L.run(cfg, ["--variant", args.variant], stack=stack)  # its own report under latency/
    result["latency"] = {
        "in_process": [vars(p) if not isinstance(p, dict) else p for p in res.in_process],
        "points": [
            {
                "path": p.path,
                "c": p.concurrency,
                "p50_ms": p.p50_ms,
                "p99_ms": p.p99_ms,
                "img_s": p.throughput,
                "mean_batch": p.mean_batch,
                "errors": p.errors,
            }
            for p in res.points
        ],
    }
    return result


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def run_part(name: str, out: Path, argv: list[str], limit: float) -> str:
    """One part in its own process under its own time limit: -> "ok", "failed" or "timed out"."""
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--part", name, *argv]
    t0 = time.perf_counter()
    print(f"[{name}] up to {limit:.0f} s ...", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        status = "ok" if done.returncode == 0 else "failed"
        log = done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        status, log = "timed out", f"{e.stdout or ''}{e.stderr or ''}"
        log = log.decode() if isinstance(log, bytes) else log
    (out / f"{name}.log").write_text(log)
    if status != "ok":
        (out / f"{name}.error.txt").write_text(f"{status} after {time.perf_counter() - t0:.0f} s\n{log[-4000:]}")
    print(f"[{name}] {status} in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return status


def render_report(out: Path, statuses: dict[str, str]) -> str:
    def load(name: str) -> dict | None:
        path = out / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    lines = ["# GPU check", "", "`python -m benchmarks.gpu_check`", "", "| part | status |", "|:---|:---|"]
    lines += [f"| {name} | {status} |" for name, status in statuses.items()]
    env = load("environment")
    if env:
        lines += [
            "",
            "## Machine",
            "",
            *(f"- {k}: {v}" for k, v in env["machine"].items()),
            f"- torch {env['torch']}, CUDA {env['cuda']}; nvidia-smi: {env.get('nvidia_smi')}",
        ]
    fwd = load("forward")
    if fwd:
        lines += [
            "",
            f"## In-process forward on {fwd['device']} (img/s, median call)",
            "",
            "| network | dtype | batch | img/s |",
            "|:---|:---|---:|---:|",
        ]
        for r in fwd["rows"]:
            value = f"{r['img_s']:,.0f}" if "img_s" in r else r.get("error", "")[:80]
            lines.append(f"| {r['net']} | {r['dtype']} | {r.get('batch', '')} | {value} |")
    loop = load("train_loop")
    if loop:
        lines += [
            "",
            "## Training loop: bare GAN step vs the full loop (BatchMaker on the device)",
            "",
            "| variant | width | device | data | bare img/s | full img/s | full / bare | batches only img/s |",
            "|:---|---:|:---|:---|---:|---:|---:|---:|",
        ]
        for r in loop["loops"]:
            lines.append(
                f"| {r['variant']} | {r['width']} | {r['device']} | {r['data']} | {r['bare_img_s']:,.0f} | "
                f"{r['full_img_s']:,.0f} | {r['full_over_bare']:.0%} | {r['data_img_s']:,.0f} |"
            )
    serving = load("serving")
    if serving:
        p = serving.get("parity")
        if p:
            lines += [
                "",
                "## Triton parity",
                "",
                f"{p['images']} inputs sent straight to Triton: {p['output_bytes']:,} output bytes, max |diff| "
                f"vs the in-process float32 generator {p['max_abs_diff']:.5f} on [-1, 1] (tolerance "
                f"{p['tolerance']:.5f} = 1/255 per pixel): **{'ok' if p['ok'] else 'FAILED'}**.",
            ]
        lat = serving.get("latency")
        if lat:
            lines += [
                "",
                "## Latency (details in latency/report.md)",
                "",
                "| path | c | p50 ms | p99 ms | img/s | mean batch | errors |",
                "|:---|---:|---:|---:|---:|---:|---:|",
            ]
            for q in lat["points"]:
                lines.append(
                    f"| {q['path']} | {q['c']} | {q['p50_ms']:.1f} | {q['p99_ms']:.1f} | {q['img_s']:.0f} | "
                    f"{q['mean_batch']:.1f} | {q['errors']} |"
                )
    for name in statuses:
        err = out / f"{name}.error.txt"
        if err.exists():
            lines += ["", f"## {name}: {statuses[name]}", "", "```", err.read_text()[-1500:], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, str]:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu"))
    parser.add_argument("--variant", default=wire.DEFAULT_VARIANT)
    parser.add_argument("--repository", default="model_repository")
    parser.add_argument("--data", default="openmoji", help="training split for the loop; synthetic if missing")
    parser.add_argument("--loop-batch", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="CPU-sized: what the tests run")
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS))
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)  # one part, in a child process
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        setattr(args, key, value)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part:
        try:
            result = globals()[f"part_{args.part}"](args.out, args)
        except Exception:
            traceback.print_exc()
            raise SystemExit(1) from None
        write_json(args.out / f"{args.part}.json", result)
        return {args.part: "ok"}
    child_argv = [a for a in argv if a != "--parts" and a not in PARTS]
    statuses = {}
    for name in args.parts:
        for stale in (f"{name}.json", f"{name}.error.txt"):
            (args.out / stale).unlink(missing_ok=True)
        limit = PARTS[name] * (3 if args.quick else 1)  # CPU-sized runs on a small shared CPU are slower
        statuses[name] = run_part(name, args.out, child_argv, limit)
        (args.out / "report.md").write_text(render_report(args.out, statuses))
    print((args.out / "report.md").read_text())
    return statuses


if __name__ == "__main__":
    main()
