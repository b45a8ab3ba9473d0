"""Latency and throughput of one variant three ways, in one run on one machine and one model.

``python -m benchmarks.latency [--variant guided] [--duration 10] [--profile]`` starts its own
Triton on ``--repository`` and its own gateway (``python -m service.gateway``), both on free
ports of 127.0.0.1, and measures:

(a) ``in-process``: the exported generator's forward in this process (``load_exported``) at batch 1
    and at batches 1..32; the best images/s is the "limit" the serving stack is held against;
(b) ``direct``: Triton's gRPC API with tensors already encoded, at each concurrency;
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
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import grpc
import numpy as np
import psutil
from tritonclient.grpc import service_pb2

from benchmarks.workload import MAX_HINTS, Sample, colorize_request, encode_sample, make_samples
from service.api import SERVICE_NAME, pb
from service.gateway import HINT_KINDS
from service.triton_local import Stack, serving_stack
from training import hints as H

ROOT = Path(__file__).resolve().parent.parent
TRITON_SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
MAX_MESSAGE = 64 << 20
CHANNEL_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
TARGET_CONCURRENCY = 16  # where the throughput targets are read
CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LatencyConfig:
    variant: str = "guided"
    repository: Path = Path("model_repository")
    out: Path = Path("results/latency")
    log_dir: Path = Path("results/tmp/latency")  # Triton and gateway logs (git-ignored)
    duration: float = 10.0  # measured seconds per point
    warmup: float = 2.0  # seconds run before each measured window
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # in-process batch sizes
    samples: int = 64  # distinct requests, cycled
    threads: int = 0  # torch intra-op threads, in-process and in Triton's stubs; 0 = torch's default
    sketches: str = "auto"  # openmoji (test split), synthetic, or auto: openmoji when prepared
    profile: bool = False
    seed: int = 0

    @staticmethod
    def quick(**overrides) -> LatencyConfig:
        """Seconds, not minutes: what the tests run."""
        base = dict(duration=2.0, warmup=0.5, concurrency=(1, 4), batches=(1, 4), samples=8, sketches="synthetic")
        return LatencyConfig(**{**base, **overrides})


# ---------------------------------------------------------------------------------- measuring


def _identity(data: bytes) -> bytes:
    return data


@dataclass
class Snapshot:
    """Counters read at the edges of a measured window."""

    t: float
    cpu_s: dict[str, float]  # CPU seconds: client, gateway, triton (with its backend stubs), machine
    triton: dict[str, int]  # inference_count, execution_count, success, queue_ns, compute_ns


class CpuMeter:
    """CPU seconds used by this process, the gateway, Triton's process tree, and the whole machine."""

    def __init__(self, gateway_pid: int, triton_pid: int):
        self.procs = {"client": psutil.Process(), "gateway": psutil.Process(gateway_pid)}
        self.triton = psutil.Process(triton_pid)

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    def read(self) -> dict[str, float]:
        out = {name: self._cpu(p) for name, p in self.procs.items()}
        out["triton"] = self._cpu(self.triton) + sum(self._cpu(c) for c in self.triton.children(recursive=True))
        t = psutil.cpu_times()
        out["machine"] = sum(t) - t.idle - getattr(t, "iowait", 0.0)
        return out


async def triton_counters(stub_call, variant: str) -> dict[str, int]:
    response = await stub_call(service_pb2.ModelStatisticsRequest(name=variant), timeout=10)
    s = response.model_stats[0]
    infer = s.inference_stats
    return {
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "success": infer.success.count,
        "queue_ns": infer.queue.ns,
        "compute_ns": infer.compute_input.ns + infer.compute_infer.ns + infer.compute_output.ns,
    }


@dataclass
class Point:
    """One (path, concurrency) measurement."""

    path: str
    concurrency: int
    requests: int  # completed inside the measured window
    errors: int  # failed calls, warm-up included
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # completed requests (= images) per second
    mean_batch: float  # Triton's mean dynamic batch over the window
    triton_queue_ms: float  # mean per request, from Triton's statistics
    triton_compute_ms: float
    cpu_cores: dict[str, float]  # mean cores busy: client, gateway, triton, other (the rest of the machine)
    server_ms: dict[str, float] = field(default_factory=dict)  # gateway path: mean ColorizeResponse.timings
    first_error: str = ""


def summarize(
    path: str, concurrency: int, latencies: list[float], errors: int, before: Snapshot, after: Snapshot
) -> dict:
    seconds = after.t - before.t
    ms = np.asarray(latencies) * 1e3 if latencies else np.full(1, np.nan)
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    dt = {k: after.triton[k] - before.triton[k] for k in after.triton}
    per_request = max(dt["success"], 1)
    cores = {k: (after.cpu_s[k] - before.cpu_s[k]) / seconds for k in after.cpu_s}
    cores["other"] = max(cores.pop("machine") - cores["client"] - cores["gateway"] - cores["triton"], 0.0)
    return dict(
        path=path,
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        seconds=seconds,
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=float(ms.mean()),
        throughput=len(latencies) / seconds,
        mean_batch=dt["inference_count"] / dt["execution_count"] if dt["execution_count"] else float("nan"),
        triton_queue_ms=dt["queue_ns"] / per_request / 1e6,
        triton_compute_ms=dt["compute_ns"] / per_request / 1e6,
        cpu_cores=cores,
    )


async def closed_loop(
    send: Callable[[int], Awaitable[object]],
    concurrency: int,
    warmup: float,
    duration: float,
    snapshot: Callable[[float], Awaitable[Snapshot]],
) -> tuple[list[float], list[object], int, str, Snapshot, Snapshot]:
    """`concurrency` workers, each sending request i, awaiting it, sending the next.

    Latencies and results are kept for calls that complete inside the measured window (after the
    warm-up); snapshots are taken at its two edges. -> (latencies s, results, errors, first error,
    before, after).
    """
    counter = itertools.count()
    latencies: list[float] = []
    results: list[object] = []
    errors, first_error = 0, ""
    window: dict[str, float] = {}
    start = time.perf_counter()
    end = start + warmup + duration

    async def worker() -> None:
        nonlocal errors, first_error
        while (t0 := time.perf_counter()) < end:
            try:
                result = await send(next(counter))
            except grpc.aio.AioRpcError as e:
                errors += 1
                first_error = first_error or f"{e.code().name}: {e.details()}"
                await asyncio.sleep(0.01)
                continue
            t1 = time.perf_counter()
            if window.get("start", end) <= t1 <= window.get("end", end):
                latencies.append(t1 - t0)
                results.append(result)

    async def edges() -> tuple[Snapshot, Snapshot]:
        await asyncio.sleep(warmup)
        window["start"] = time.perf_counter()
        before = await snapshot(window["start"])
        await asyncio.sleep(max(end - time.perf_counter(), 0.0))
        window["end"] = time.perf_counter()  # calls completing after this are not counted
        after = await snapshot(window["end"])
        return before, after

    (before, after), *_ = await asyncio.gather(edges(), *(worker() for _ in range(concurrency)))
    return latencies, results, errors, first_error, before, after


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
        "input": config.input[0].name,
        "input_shape": list(config.input[0].dims),  # batch dimension excluded
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
    async with (
        grpc.aio.insecure_channel(stack.ports.grpc_url, options=CHANNEL_OPTIONS) as triton_channel,
        grpc.aio.insecure_channel(stack.address, options=CHANNEL_OPTIONS) as gateway_channel,
    ):
        statistics = triton_rpc(triton_channel, "ModelStatistics", service_pb2.ModelStatisticsResponse)

        async def snapshot(t: float) -> Snapshot:
            cpu = meter.read()
            return Snapshot(t, cpu, await triton_counters(statistics, cfg.variant))

        # Direct: ModelInferRequests with the encoded tensor, serialised once.
        direct_requests = []
        for s in samples:
            x = encode_sample(s, kind)[None]  # (1, C, 128, 128)
            r = service_pb2.ModelInferRequest(model_name=cfg.variant)
            r.inputs.add(name=model["input"], datatype="FP32", shape=x.shape)
            r.outputs.add(name=model["output"])
            r.raw_input_contents.append(x.astype(np.float32).tobytes())
            direct_requests.append(r.SerializeToString())
        infer = triton_rpc(triton_channel, "ModelInfer", service_pb2.ModelInferResponse)

        async def send_direct(i: int) -> None:
            response = await infer(direct_requests[i % len(direct_requests)], timeout=CALL_TIMEOUT_S)
            np.frombuffer(response.raw_output_contents[0], np.float32)  # what a client would read

        # Gateway: Colorize requests with PNG bytes, serialised once.
        hints = HINT_KINDS[kind]
        gateway_requests = [
            colorize_request(s, cfg.variant, hints, output_size=pb.OUTPUT_SIZE_MODEL).SerializeToString()
            for s in samples
        ]
        colorize = gateway_channel.unary_unary(
            f"/{SERVICE_NAME}/Colorize",
            request_serializer=_serialize,
            response_deserializer=pb.ColorizeResponse.FromString,
        )

        async def send_gateway(i: int) -> pb.Timings:
            return (await colorize(gateway_requests[i % len(gateway_requests)], timeout=CALL_TIMEOUT_S)).timings

        # One call down each path first: connections up, first-call costs paid.
        await send_direct(0)
        await send_gateway(0)

        points = []
        for path, send in (("direct", send_direct), ("gateway", send_gateway)):
            if path == "gateway" and on_gateway_start is not None:
                on_gateway_start()
            for c in cfg.concurrency:
                latencies, results, errors, first_error, before, after = await closed_loop(
                    send, c, cfg.warmup, cfg.duration, snapshot
                )
                point = Point(**summarize(path, c, latencies, errors, before, after), first_error=first_error)
                if results and path == "gateway":
                    point.server_ms = {
                        k: float(np.mean([getattr(t, k) for t in results]))
                        for k in ("decode_ms", "triton_ms", "encode_ms", "total_ms")
                    }
                print(format_point(point), file=sys.stderr)
                points.append(point)
        return points


@dataclass
class InProcessPoint:
    batch: int
    calls: int
    p50_ms: float  # per forward call of `batch` images
    images_per_s: float


def measure_in_process(
    weights: Path, inputs: np.ndarray, batches: tuple[int, ...], seconds: float, threads: int = 0
) -> list[InProcessPoint]:
    """The exported generator's forward, in this process, at each batch size (inputs cycled), on the
    device and in the precision Triton's KIND_AUTO instance uses: the first GPU in float16 with
    channels_last where there is one, else the CPU in float32 (`model_repository/generator_model.py`)."""
    import torch

    from training.export import load_exported

    if threads:
        torch.set_num_threads(threads)
    gpu = torch.cuda.is_available()
    device = torch.device("cuda:0" if gpu else "cpu")
    dtype, layout = (torch.float16, torch.channels_last) if gpu else (torch.float32, torch.contiguous_format)
    model = load_exported(weights).to(device, dtype).to(memory_format=layout)

    def call(x) -> None:
        model(x)
        if gpu:
            torch.cuda.synchronize(device)

    points = []
    with torch.inference_mode():
        for b in batches:
            x = torch.from_numpy(inputs[np.arange(b) % len(inputs)]).to(device, dtype)
            x = x.contiguous(memory_format=layout)
            for _ in range(2):
                call(x)
            times: list[float] = []
            stop = time.perf_counter() + seconds
            while time.perf_counter() < stop or len(times) < 3:
                t0 = time.perf_counter()
                call(x)
                times.append(time.perf_counter() - t0)
            point = InProcessPoint(b, len(times), float(np.median(times) * 1e3), b * len(times) / sum(times))
            print(f"in-process {device} batch {b:>2}: {point.p50_ms:8.1f} ms  {point.images_per_s:8.1f} img/s",
                  file=sys.stderr)  # fmt: skip
            points.append(point)
    return points


def format_point(p: Point) -> str:
    return (
        f"{p.path:<8} c={p.concurrency:<3} p50 {p.p50_ms:7.1f}  p95 {p.p95_ms:7.1f}  p99 {p.p99_ms:7.1f} ms  "
        f"{p.throughput:7.1f} img/s  batch {p.mean_batch:4.1f}  errors {p.errors}"
    )


# ---------------------------------------------------------------------------------- py-spy


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


@contextmanager
def profiled(pid: int, out: Path) -> Iterator[Callable[[], None]]:
    """Sample `pid` with py-spy (collapsed stacks to `out`) from when the yielded start() is called."""
    exe = py_spy()
    procs: list[subprocess.Popen] = []

    def start() -> None:
        if exe is None:
            print("--profile: py-spy not found (pip install py-spy); reporting server timings only", file=sys.stderr)
            return
        cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--nonblocking"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))

    try:
        yield start
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                _, err = proc.communicate(timeout=30)
                if proc.returncode not in (0, -signal.SIGINT) and not out.exists():
                    print(f"py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
            except subprocess.TimeoutExpired:
                proc.kill()


PROJECT_DIRS = ("service/", "training/", "benchmarks/", "model_repository/")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::\d+)?\)$")


def summarize_profile(raw: Path, top: int = 15) -> dict:
    """py-spy's collapsed stacks -> the functions holding the most samples, in % of all samples.

    "self": where the samples were taken (any code, line numbers merged); "inclusive": the
    project's own functions (service/, training/, ...) with everything they call.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            m = FRAME.match(frame.strip())
            if m:
                frames.append((f"{m['function']} ({m['file']})", m["file"].startswith(PROJECT_DIRS)))
        if not frames:
            continue
        n = int(count)
        total += n
        own[frames[-1][0]] += n
        for name in {name for name, ours in frames if ours}:
            inclusive[name] += n
    share = 100.0 / max(total, 1)
    return {
        "samples": total,
        "self": [(f, n * share) for f, n in own.most_common(top)],
        "inclusive": [(f, n * share) for f, n in inclusive.most_common(top)],
    }


# ---------------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    bound: float
    at_least: bool  # value >= bound when True, value <= bound when False

    @property
    def met(self) -> bool:
        return self.value >= self.bound if self.at_least else self.value <= self.bound

    def verdict(self) -> str:
        rel = (self.value - self.bound) / self.bound * 100
        if self.met:
            return f"met, by {abs(rel):.0f}%"
        return f"missed, by {abs(rel):.0f}%"


def machine_description() -> dict[str, str]:
    """CPU, cores, load, memory, GPU and torch threads: the context every number needs."""
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    gpu = "none"
    if torch.cuda.is_available():
        gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return {
        "cpu": cpu,
        "logical cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable by this process)",
        "load average (1, 5, 15 min) at start": load,
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "gpu": gpu,
        "torch": f"{torch.__version__}, {torch.get_num_threads()} intra-op threads",
        "python": platform.python_version(),
        "os": platform.platform(),
    }


@dataclass
class LatencyResults:
    config: dict
    machine: dict[str, str]
    model: dict
    in_process: list[InProcessPoint]
    points: list[Point]
    profile: dict | None = None

    def point(self, path: str, concurrency: int) -> Point | None:
        return next((p for p in self.points if p.path == path and p.concurrency == concurrency), None)

    @property
    def limit(self) -> InProcessPoint:
        return max(self.in_process, key=lambda p: p.images_per_s)

    def high_concurrency(self) -> int:
        measured = sorted({p.concurrency for p in self.points})
        return TARGET_CONCURRENCY if TARGET_CONCURRENCY in measured else measured[-1]

    def targets(self) -> list[Target]:
        c_hi = self.high_concurrency()
        low = [self.point(path, 1) for path in ("direct", "gateway")]
        high = [self.point(path, c_hi) for path in ("direct", "gateway")]
        out = []
        if all(low):
            out.append(Target("gateway p50 / direct p50 at c=1", low[1].p50_ms / low[0].p50_ms, 1.10, False))
        if all(high):
            out.append(
                Target(f"gateway / direct throughput at c={c_hi}", high[1].throughput / high[0].throughput, 0.9, True)
            )
            out.append(
                Target(
                    f"gateway throughput at c={c_hi} / in-process limit",
                    high[1].throughput / self.limit.images_per_s,
                    0.7,
                    True,
                )
            )
        if high[1] and low[1] and c_hi != 1:
            out.append(Target(f"gateway throughput c={c_hi} / c=1", high[1].throughput / low[1].throughput, 1.5, True))
        return out


def where_time_goes(res: LatencyResults) -> list[str]:
    """Plain sentences on the gateway's overhead, from its own timings and the CPU each process used."""
    lines = []
    d1, g1 = res.point("direct", 1), res.point("gateway", 1)
    if d1 and g1 and g1.server_ms:
        s = g1.server_ms
        hop = g1.mean_ms - s["total_ms"]
        lines.append(
            f"At c=1 the gateway's p50 is {g1.p50_ms:.1f} ms, direct Triton's {d1.p50_ms:.1f} ms "
            f"({g1.p50_ms - d1.p50_ms:+.1f} ms). "
            f"Inside the gateway (means): decode+encode of the input {s['decode_ms']:.1f} ms, the Triton call "
            f"{s['triton_ms']:.1f} ms, PNG out {s['encode_ms']:.1f} ms, total {s['total_ms']:.1f} ms; "
            f"the client's mean latency is {hop:.1f} ms more: the extra gRPC hop (client -> gateway and back). "
            f"Triton itself, per request, gateway path vs direct: queue {g1.triton_queue_ms:.1f} vs "
            f"{d1.triton_queue_ms:.1f} ms, compute {g1.triton_compute_ms:.1f} vs {d1.triton_compute_ms:.1f} ms "
            "(compute grows when the gateway's own work takes cores the forward pass would use)."
        )
    c_hi = res.high_concurrency()
    dh, gh = res.point("direct", c_hi), res.point("gateway", c_hi)
    if dh and gh:
        cd, cg = dh.cpu_cores, gh.cpu_cores
        lines.append(
            f"At c={c_hi}, cores busy (of {os.cpu_count()}): direct path: client {cd['client']:.2f}, "
            f"Triton {cd['triton']:.2f}, other processes {cd['other']:.2f}; gateway path: client {cg['client']:.2f}, "
            f"gateway {cg['gateway']:.2f}, Triton {cg['triton']:.2f}, other {cg['other']:.2f}. On a machine this "
            "small every core the gateway or the client takes is a core Triton's forward pass does not get."
        )
        if gh.server_ms:
            lines.append(
                f"At c={c_hi} the gateway's own timings: decode {gh.server_ms['decode_ms']:.1f} ms, Triton call "
                f"{gh.server_ms['triton_ms']:.1f} ms (Triton: queue {gh.triton_queue_ms:.1f} ms + compute "
                f"{gh.triton_compute_ms:.1f} ms, mean batch {gh.mean_batch:.1f}), encode "
                f"{gh.server_ms['encode_ms']:.1f} ms; direct Triton formed a mean batch of {dh.mean_batch:.1f}."
            )
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|:---|" + "|".join("---:" for _ in header[1:]) + "|"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def render_targets(res: LatencyResults) -> list[str]:
    lines = _table(
        ["target", "measured", "bound", "verdict"],
        [
            [t.name, f"{t.value:.2f}", ("≥ " if t.at_least else "≤ ") + f"{t.bound:.2f}", t.verdict()]
            for t in res.targets()
        ],
    )
    if res.high_concurrency() != TARGET_CONCURRENCY:
        lines += ["", f"c={TARGET_CONCURRENCY} was not measured; the targets use c={res.high_concurrency()}."]
    return lines


def render_report(res: LatencyResults) -> str:
    cfg = res.config
    lines = [
        f"# Latency: variant `{cfg['variant']}`",
        "",
        f"`{cfg['command']}`",
        "",
        f"Model: `{cfg['variant']}` ({res.model.get('hint_encoding')} hints), trained "
        f"{res.model.get('parameters', {}).get('trained', '?')}, Triton instance {res.model.get('instance_kind')}. "
        f"Each point: {cfg['warmup']:g} s warm-up, then {cfg['duration']:g} s measured; {cfg['samples']} distinct "
        f"requests from the `{cfg['sketches']}` sketches, cycled; gateway requests carry 0-{MAX_HINTS} hints where "
        "the variant takes them and ask for OUTPUT_SIZE_MODEL PNG.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in res.machine.items()]
    lines += [
        "",
        f"The load generator (one asyncio loop, requests serialised up front) runs on the same {os.cpu_count()} "
        "cores as Triton and the gateway; the CPU columns below show what each process used, `other` being "
        "everything else on the machine (e.g. training).",
        "",
        "## In-process forward (the limit)",
        "",
    ]
    lines += _table(
        ["batch", "p50 ms / call", "images/s"],
        [[str(p.batch), f"{p.p50_ms:.1f}", f"{p.images_per_s:.1f}"] for p in res.in_process],
    )
    lines += ["", f"Limit: {res.limit.images_per_s:.1f} images/s at batch {res.limit.batch}.", "", "## Served", ""]
    header = [
        "path",
        "c",
        "requests",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "img/s",
        "Triton batch",
        "queue ms",
        "compute ms",
        "CPU client",
        "CPU gateway",
        "CPU Triton",
        "CPU other",
        "errors",
    ]
    rows = []
    for p in res.points:
        cores = p.cpu_cores
        rows.append(
            [
                p.path,
                str(p.concurrency),
                str(p.requests),
                f"{p.p50_ms:.1f}",
                f"{p.p95_ms:.1f}",
                f"{p.p99_ms:.1f}",
                f"{p.throughput:.1f}",
                f"{p.mean_batch:.2f}",
                f"{p.triton_queue_ms:.1f}",
                f"{p.triton_compute_ms:.1f}",
                f"{cores['client']:.2f}",
                f"{cores['gateway']:.2f}",
                f"{cores['triton']:.2f}",
                f"{cores['other']:.2f}",
                str(p.errors),
            ]
        )
    lines += _table(header, rows)
    errors = [f"- {p.path} c={p.concurrency}: {p.first_error}" for p in res.points if p.first_error]
    if errors:
        lines += ["", "First error per point:", *errors]
    lines += ["", "Gateway's own timings (mean ColorizeResponse.timings, ms):", ""]
    stages = ("decode_ms", "triton_ms", "encode_ms", "total_ms")
    lines += _table(
        ["c", "decode", "triton", "encode", "total", "client mean - total"],
        [
            [
                str(p.concurrency),
                *(f"{p.server_ms[k]:.1f}" for k in stages),
                f"{p.mean_ms - p.server_ms['total_ms']:.1f}",
            ]
            for p in res.points
            if p.path == "gateway" and p.server_ms
        ],
    )
    lines += ["", "## Targets", "", *render_targets(res), "", "## Where the time goes", ""]
    lines += [f"- {s}" for s in where_time_goes(res)]
    if res.profile:
        lines += [
            "",
            f"py-spy on the gateway during the gateway points ({res.profile['samples']} samples of its busy "
            "threads; py-spy's idle detection is a heuristic, so waits in `select`/queue `get` still show; "
            "py-spy itself takes CPU from the same cores):",
            "",
        ]
        for title, key in (("where samples were taken", "self"), ("project functions, inclusive", "inclusive")):
            lines += _table([title, "% samples"], [[f"`{f}`", f"{v:.1f}"] for f, v in res.profile[key]])
            lines.append("")
    lines += ["", "![latency](latency_vs_concurrency.png)", "", "![throughput](throughput_vs_concurrency.png)", ""]
    return "\n".join(lines)


def _concurrency_axis(ax, concurrency: list[int]) -> None:
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(concurrency, [str(c) for c in concurrency])
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot(res: LatencyResults, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"direct": "tab:blue", "gateway": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for path in ("direct", "gateway"):
        pts = [p for p in res.points if p.path == path]
        cs = [p.concurrency for p in pts]
        for q, style in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", ":")):
            ax.plot(cs, [getattr(p, q) for p in pts], style, marker="o", color=colors[path], label=f"{path} {q[:3]}")
    batch1 = next((p for p in res.in_process if p.batch == 1), None)
    if batch1:
        ax.axhline(batch1.p50_ms, color="grey", ls="-.", label="in-process forward, batch 1 (p50)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent requests",
        ylabel="latency (ms)",
        title=f"Latency, variant {res.config['variant']}",
    )
    _concurrency_axis(ax, res.config["concurrency"])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "latency_vs_concurrency.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for path in ("direct", "gateway"):
        pts = [p for p in res.points if p.path == path]
        ax.plot([p.concurrency for p in pts], [p.throughput for p in pts], "-o", color=colors[path], label=path)
    ax.axhline(res.limit.images_per_s, color="grey", ls="--", label=f"in-process limit (batch {res.limit.batch})")
    if batch1:
        ax.axhline(batch1.images_per_s, color="grey", ls=":", label="in-process, batch 1")
    ax.set(
        xscale="log",
        xlabel="concurrent requests",
        ylabel="images / s",
        ylim=(0, None),
        title=f"Throughput, variant {res.config['variant']}",
    )
    _concurrency_axis(ax, res.config["concurrency"])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "throughput_vs_concurrency.png", dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------- main


def run(cfg: LatencyConfig, argv: list[str] | None = None) -> LatencyResults:
    """The whole benchmark: start the stack, measure the three paths, write the report."""
    weights = cfg.repository / cfg.variant / "1" / "generator.pt2"
    if not weights.exists():
        raise SystemExit(f"{weights} not found: export the variant first (python -m training.export ...)")
    cfg.out.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    threads = cfg.threads or "torch's default"
    machine["torch threads in this benchmark"] = f"{threads} in-process and in Triton's backend stubs"
    samples = make_samples(cfg.sketches, cfg.samples, cfg.seed)
    profile_raw = cfg.out / "gateway_profile.txt"
    profile_raw.unlink(missing_ok=True)
    with serving_stack(cfg.repository, cfg.log_dir, cfg.threads, gateway_args=("--log-level", "WARNING")) as stack:
        model = asyncio.run(model_info(stack.ports.grpc_url, cfg.variant))
        # Triton and the gateway are idle now: the in-process forward has the cores to itself
        # (apart from whatever else runs on the machine).
        inputs = np.stack([encode_sample(s, H.HintKind(model["hint_encoding"])) for s in samples])
        if list(inputs.shape[1:]) != model["input_shape"]:
            raise SystemExit(
                f"{cfg.variant} takes {model['input_shape']} but training.hints.encode makes {list(inputs.shape[1:])} "
                f"for {model['hint_encoding']} hints: re-export the variant"
            )
        in_process = measure_in_process(weights, inputs, cfg.batches, max(1.0, cfg.duration / 2), cfg.threads)
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
    parser.add_argument("--warmup", type=float, help=f"warm-up seconds per point (default {d.warmup:g})")
    parser.add_argument("--concurrency", type=int, nargs="+", help=f"default {' '.join(map(str, d.concurrency))}")
    parser.add_argument(
        "--batches", type=int, nargs="+", help=f"in-process batches (default {' '.join(map(str, d.batches))})"
    )
    parser.add_argument("--samples", type=int, help=f"distinct requests (default {d.samples})")
    parser.add_argument("--sketches", choices=("auto", "openmoji", "synthetic"), help="default auto")
    parser.add_argument("--threads", type=int, help="torch threads in-process and in Triton (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="sample the gateway with py-spy")
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
