"""Latency and throughput of one variant three ways, in one run on one machine and one model.

``python -m benchmarks.latency [--variant guided] [--duration 10] [--profile]`` starts its own
Triton on ``--repository`` and its own gateway (``python -m service.gateway``), both on free
ports of 127.0.0.1, and measures:

(a) ``in-process``: what the Triton model does per batch, in this process: the hint encoding of the
    compact inputs (`contract.batch.encode_wire`), the exported generator's forward
    (``load_exported``) and the uint8 output, at batches 1..32; the best images/s is the "limit"
    the serving stack is held against;
(b) ``direct``: Triton's gRPC API with the compact uint8 inputs of `contract.wire` (the sketch on
    the model grid + the hints table or colour image), at each concurrency;
(c) ``gateway``: ``Colorize`` with a real PNG sketch (and 0-20 hints, or a colour hint, as the
    variant takes), ``OUTPUT_SIZE_MODEL``, at the same concurrencies.

Every point is a closed loop: ``c`` workers on one asyncio event loop, each with one request in
flight, over one gRPC channel; requests are serialised once, up front, so the client does as
little as it can per call. A warm-up precedes each measured window. Triton's statistics give the
mean batch it formed for each point; psutil gives the CPU each process used, so the report shows
whether the client, the gateway, Triton or something else (training) held the cores.

Writes ``<out>/report.md``, ``results.json``, ``latency_vs_concurrency.png`` and
``throughput_vs_concurrency.png``; logs go to ``--log-dir``. ``--quick`` is the tiny mode the
tests use. ``--profile`` samples the gateway with py-spy while it is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from benchmarks.latency_report import (
    InProcessPoint,
    LatencyResults,
    Point,
    machine_description,
    plot,
    render_report,
    render_targets,
)
from benchmarks.measure import CpuMeter, Snapshot, closed_loop, summarize, triton_counters
from benchmarks.profiling import profiled, summarize_profile
from benchmarks.workload import CHANNEL_OPTIONS, Sample, colorize_request, make_samples, wire_sample
from contract import hints as H
from contract import wire
from service.api import SERVICE_NAME, pb
from service.triton_local import Stack, serving_stack
from service.triton_pool import infer_request, the_output
from service.variants import HINT_KINDS

TRITON_SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LatencyConfig:
    variant: str = wire.DEFAULT_VARIANT
    repository: Path = Path("model_repository")
    out: Path = Path("results/latency")
    log_dir: Path = Path("results/tmp/latency")  # Triton and gateway logs (git-ignored)
    duration: float = 10.0  # measured seconds per point, in `rounds` windows taken in turn with the other path
    warmup: float = 1.0  # seconds run before each measured window
    rounds: int = 5
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # in-process batch sizes
    samples: int = 64  # distinct requests, cycled
    threads: int = 0  # torch intra-op threads, in-process and in Triton's stubs; 0 = torch's default
    sketches: str = "auto"  # openmoji (test split), synthetic, or auto: openmoji when prepared
    profile: bool = False
    seed: int = 0
    processes: int = 1  # gateway processes (--processes); > 1 spreads calls over 4 channels per process

    @staticmethod
    def quick(**overrides) -> LatencyConfig:
        """Seconds, not minutes: what the tests run."""
        base = dict(
            duration=2.0, warmup=0.5, rounds=2, concurrency=(1, 4), batches=(1, 4), samples=8, sketches="synthetic"
        )
        return LatencyConfig(**{**base, **overrides})


@dataclass
class _Windows:
    """One path's measured windows at one concurrency, summed."""

    latencies: list[float] = field(default_factory=list)
    results: list = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    windows: list[tuple[Snapshot, Snapshot]] = field(default_factory=list)


def _serialize(message) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def triton_rpc(channel: grpc.aio.Channel, method: str, response_type) -> grpc.aio.UnaryUnaryMultiCallable:
    """A call of Triton's gRPC API taking a message or its bytes (already serialised)."""
    return channel.unary_unary(
        f"/{TRITON_SERVICE}/{method}", request_serializer=_serialize, response_deserializer=response_type.FromString
    )


async def model_info(triton_url: str, variant: str) -> dict:
    """What Triton's config of the variant says: tensor names, hint encoding, parameters, instance kind."""
    from tritonclient.grpc import model_config_pb2

    async with grpc.aio.insecure_channel(triton_url) as channel:
        call = triton_rpc(channel, "ModelConfig", service_pb2.ModelConfigResponse)
        config = (await call(service_pb2.ModelConfigRequest(name=variant), timeout=10)).config
    kinds = [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group]
    return {
        "inputs": {i.name: list(i.dims) for i in config.input},  # batch dimension excluded
        "output": config.output[0].name,
        "hint_encoding": config.parameters["hint_encoding"].string_value,
        "parameters": {k: v.string_value for k, v in config.parameters.items()},
        "instance_kind": ", ".join(kinds),
    }


async def measure_servers(
    cfg: LatencyConfig,
    stack: Stack,
    model: dict,
    samples: list[Sample],
    meter: CpuMeter,
    on_gateway_start: Callable[[], None] | None = None,
) -> list[Point]:
    """Direct Triton, then the gateway, at each concurrency."""
    kind = H.HintKind(model["hint_encoding"])
    # One connection reaches one gateway process: with several, spread the calls over channels.
    # A local subchannel pool keeps grpc from sharing one connection among the channels.
    gateway_channels = [
        grpc.aio.insecure_channel(stack.address, options=[*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)])
        for _ in range(1 if cfg.processes == 1 else 4 * cfg.processes)
    ]
    async with grpc.aio.insecure_channel(stack.ports.grpc_url, options=CHANNEL_OPTIONS) as triton_channel:
        statistics = triton_rpc(triton_channel, "ModelStatistics", service_pb2.ModelStatisticsResponse)

        async def snapshot(t: float) -> Snapshot:
            cpu = meter.read()
            return Snapshot(t, cpu, await triton_counters(statistics, cfg.variant))

        # Direct: ModelInferRequests with the compact inputs, serialised once.
        direct_requests = [
            infer_request(
                cfg.variant, {name: x[None] for name, x in wire_sample(s, kind).items()}, model["output"]
            ).SerializeToString()
            for s in samples
        ]
        infer = triton_rpc(triton_channel, "ModelInfer", service_pb2.ModelInferResponse)

        async def send_direct(i: int) -> None:
            response = await infer(direct_requests[i % len(direct_requests)], timeout=CALL_TIMEOUT_S)
            the_output(response)  # what a client would read

        # Gateway: Colorize requests with PNG bytes, serialised once.
        hints = HINT_KINDS[kind]
        gateway_requests = [
            colorize_request(s, cfg.variant, hints, output_size=pb.OUTPUT_SIZE_MODEL).SerializeToString()
            for s in samples
        ]
        colorize = [
            channel.unary_unary(
                f"/{SERVICE_NAME}/Colorize",
                request_serializer=_serialize,
                response_deserializer=pb.ColorizeResponse.FromString,
            )
            for channel in gateway_channels
        ]

        async def send_gateway(i: int) -> pb.Timings:
            call = colorize[i % len(colorize)]
            return (await call(gateway_requests[i % len(gateway_requests)], timeout=CALL_TIMEOUT_S)).timings

        # One call down each path first: connections up, first-call costs paid.
        await send_direct(0)
        await send_gateway(0)

        # Direct and gateway take turns in short windows (ABBA): on a shared machine the speed
        # drifts by 10-30 % over minutes, and a ratio of two points measured minutes apart would
        # measure the drift as much as the gateway.
        sends = {"direct": send_direct, "gateway": send_gateway}
        gateway_started = False
        points = []
        for c in cfg.concurrency:
            runs = {path: _Windows() for path in sends}
            for r in range(cfg.rounds):
                for path in ("direct", "gateway") if r % 2 == 0 else ("gateway", "direct"):
                    if path == "gateway" and not gateway_started and on_gateway_start is not None:
                        on_gateway_start()
                        gateway_started = True
                    latencies, results, errors, first_error, before, after = await closed_loop(
                        sends[path], c, cfg.warmup, cfg.duration / cfg.rounds, snapshot
                    )
                    got = runs[path]
                    got.latencies += latencies
                    got.results += results
                    got.errors += errors
                    got.first_error = got.first_error or first_error
                    got.windows.append((before, after))
            for path, got in runs.items():
                point = Point(**summarize(path, c, got.latencies, got.errors, got.windows), first_error=got.first_error)
                if got.results and path == "gateway":
                    point.server_ms = {
                        k: float(np.mean([getattr(t, k) for t in got.results]))
                        for k in ("decode_ms", "triton_ms", "encode_ms", "total_ms")
                    }
                print(format_point(point), file=sys.stderr)
                points.append(point)
        points.sort(key=lambda p: p.path != "direct")  # the report's order: each path by concurrency
    for channel in gateway_channels:
        await channel.close()
    return points


def measure_in_process(
    weights: Path,
    kind: H.HintKind,
    inputs: list[dict[str, np.ndarray]],
    batches: tuple[int, ...],
    seconds: float,
    threads: int = 0,
) -> list[InProcessPoint]:
    """What the Triton model does per batch, in this process, at each batch size (inputs cycled):
    encode the compact inputs, run the exported generator as served (`contract.batch.generate`: a
    hinted input takes two passes), make the uint8 image; on the device and
    in the precision Triton's KIND_AUTO instance uses: the first GPU in float16 with channels_last
    where there is one, else the CPU in float32 (`model_repository/generator_model.py`)."""
    import torch

    from contract import batch as B
    from training.export import load_exported

    if threads:
        torch.set_num_threads(threads)
    gpu = torch.cuda.is_available()
    device = torch.device("cuda:0" if gpu else "cpu")
    dtype, layout = (torch.float16, torch.channels_last) if gpu else (torch.float32, torch.contiguous_format)
    model = load_exported(weights).to(device, dtype).to(memory_format=layout)

    def call(batch: dict[str, torch.Tensor]) -> None:
        x = B.encode_wire(kind, batch[wire.SKETCH].to(device), batch.get(wire.HINTS), batch.get(wire.COLOR_HINT))
        B.to_image(B.generate(model, kind, x.to(dtype).contiguous(memory_format=layout))).cpu()

    points = []
    with torch.inference_mode():
        for b in batches:
            picks = [inputs[i % len(inputs)] for i in range(b)]
            batch = {name: torch.from_numpy(np.stack([p[name] for p in picks])) for name in picks[0]}
            for _ in range(2):
                call(batch)
            times: list[float] = []
            stop = time.perf_counter() + seconds
            while time.perf_counter() < stop or len(times) < 3:
                t0 = time.perf_counter()
                call(batch)
                times.append(time.perf_counter() - t0)
            point = InProcessPoint(b, len(times), float(np.median(times) * 1e3), b * len(times) / sum(times))
            print(
                f"in-process {device} batch {b:>2}: {point.p50_ms:8.1f} ms  {point.images_per_s:8.1f} img/s",
                file=sys.stderr,
            )
            points.append(point)
    return points


def format_point(p: Point) -> str:
    return (
        f"{p.path:<8} c={p.concurrency:<3} p50 {p.p50_ms:7.1f}  p95 {p.p95_ms:7.1f}  p99 {p.p99_ms:7.1f} ms  "
        f"{p.throughput:7.1f} img/s  batch {p.mean_batch:4.1f}  errors {p.errors}"
    )


# ---------------------------------------------------------------------------------- main


def run(cfg: LatencyConfig, argv: list[str] | None = None, stack=None) -> LatencyResults:
    """The whole benchmark: start the stack (or use `stack`, one `serving_stack` already up with
    cfg's repository, threads and processes), measure the three paths, write the report."""
    weights = cfg.repository / cfg.variant / "1" / wire.WEIGHTS_FILE
    if not weights.exists():
        raise SystemExit(f"{weights} not found: export the variant first (python -m training.export ...)")
    cfg.out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    machine["torch threads in this benchmark"] = (
        f"{cfg.threads} in-process and per Triton instance"
        if cfg.threads
        else "torch's default in-process; in Triton each CPU instance its share of the cores (generator_model.py)"
    )
    samples = make_samples(cfg.sketches, cfg.samples, cfg.seed)
    profile_raw = cfg.out / "gateway_profile.txt"
    profile_raw.unlink(missing_ok=True)
    gateway_args = ("--log-level", "WARNING", "--processes", str(cfg.processes))
    started = serving_stack(cfg.repository, cfg.log_dir, cfg.threads, gateway_args=gateway_args)
    with started if stack is None else nullcontext(stack) as stack:
        model = asyncio.run(model_info(stack.ports.grpc_url, cfg.variant))
        # Triton and the gateway are idle now: the in-process forward has the cores to itself
        # (apart from whatever else runs on the machine).
        kind = H.HintKind(model["hint_encoding"])
        wanted = {t.name: list(t.dims) for t in wire.inputs(kind)}
        if model["inputs"] != wanted:
            raise SystemExit(
                f"{cfg.variant} declares inputs {model['inputs']} but contract.wire has {wanted} for "
                f"{kind.value} hints: re-export the variant"
            )
        inputs = [wire_sample(s, kind) for s in samples]
        seconds = max(1.0, cfg.duration / 2)
        in_process = measure_in_process(weights, kind, inputs, cfg.batches, seconds, cfg.threads)
        meter = CpuMeter(stack.gateway.pid, stack.triton.pid)
        with profiled(stack.gateway.pid, profile_raw) if cfg.profile else nullcontext() as start_profile:
            points = asyncio.run(measure_servers(cfg, stack, model, samples, meter, start_profile))
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config["command"] = " ".join(["python -m benchmarks.latency", *(argv or [])])
    profile = summarize_profile(profile_raw) if profile_raw.exists() else None
    res = LatencyResults(config, machine, model, in_process, points, profile)
    write(res, cfg.out)
    return res


def write(res: LatencyResults, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(asdict(res), indent=2, default=float) + "\n")
    (out / "report.md").write_text(render_report(res))
    plot(res, out)


def main(argv: list[str] | None = None) -> LatencyResults:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = LatencyConfig()
    parser.add_argument("--variant", default=d.variant)
    parser.add_argument("--repository", type=Path, default=d.repository)
    parser.add_argument("--out", type=Path, default=d.out)
    parser.add_argument("--log-dir", type=Path, default=d.log_dir)
    parser.add_argument("--duration", type=float, help=f"measured seconds per point (default {d.duration:g})")
    parser.add_argument("--warmup", type=float, help=f"warm-up seconds per window (default {d.warmup:g})")
    parser.add_argument(
        "--rounds", type=int, help=f"windows per point, direct and gateway in turn (default {d.rounds})"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", help=f"default {' '.join(map(str, d.concurrency))}")
    parser.add_argument(
        "--batches", type=int, nargs="+", help=f"in-process batches (default {' '.join(map(str, d.batches))})"
    )
    parser.add_argument("--samples", type=int, help=f"distinct requests (default {d.samples})")
    parser.add_argument("--sketches", choices=("auto", "openmoji", "synthetic"), help="default auto")
    parser.add_argument("--threads", type=int, help="torch threads in-process and in Triton (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="sample the gateway with py-spy")
    parser.add_argument("--processes", type=int, help="gateway processes (default 1)")
    parser.add_argument("--quick", action="store_true", help="tiny mode: 2 s points, c = 1 and 4")
    args = parser.parse_args(argv)
    cfg = LatencyConfig.quick() if args.quick else d
    overrides = {k: v for k, v in vars(args).items() if k != "quick" and v is not None}
    for k in ("concurrency", "batches"):
        if k in overrides:
            overrides[k] = tuple(overrides[k])
    cfg = replace(cfg, **overrides)
    res = run(cfg, argv)
    print("\n".join(render_targets(res)))
    print(f"report: {cfg.out / 'report.md'}")
    return res


if __name__ == "__main__":
    main()
