"""The reliability campaign's hostile sections, what an outside fuzzer probed: the event loop's
stall while tiny files of many megapixels and a maximal hint list are worked on (measured as the
latency of a parallel health check), a burst of maximum-pixel requests (the gateway's peak RSS
and its RSS a minute later), a frozen Triton (SIGSTOP: alive, not answering), and bytes that
are not a protobuf sent to health and reflection."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks import fuzzing, load
from benchmarks.workload import CHANNEL_OPTIONS
from service import triton_local
from service.api import pb, pb_grpc
from service.imaging import Limits
from service.settings import GatewayConfig

MAX_SIDE = int(Limits.max_pixels**0.5)  # a square sketch of the gateway's default pixel limit
SERVING = health_pb2.HealthCheckResponse.SERVING


def _probe(address: str, stop, out) -> None:
    import grpc as grpc_sync  # the child's own, imported after the spawn

    with grpc_sync.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        check(health_pb2.HealthCheckRequest(), timeout=10)
        out.put("ready")
        latencies = []
        while not stop.is_set():
            t = time.perf_counter()
            check(health_pb2.HealthCheckRequest(), timeout=10)
            latencies.append(1e3 * (time.perf_counter() - t))
            time.sleep(0.005)
        out.put(latencies)


class HealthProbe:
    """Health checks back to back from a process of its own (a probe in the sending process would
    time that process's own serialising of 32 MB requests): the slowest is the gateway loop's stall."""

    def __init__(self, address: str):
        ctx = multiprocessing.get_context("spawn")
        self._stop, self._out = ctx.Event(), ctx.Queue()
        self._process = ctx.Process(target=_probe, args=(address, self._stop, self._out), daemon=True)

    async def __aenter__(self) -> HealthProbe:
        self._process.start()
        assert await asyncio.to_thread(self._out.get, True, 60) == "ready"
        return self

    async def __aexit__(self, *exc) -> None:
        self.latencies_ms = await self.stop()

    async def stop(self) -> list[float]:
        self._stop.set()
        latencies = await asyncio.to_thread(self._out.get, True, 60)
        self._process.join(10)
        return latencies


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(max(values)),
    }


def hint_flood(max_message_mb: int) -> bytes:
    """A ColorizeRequest filled with hints up to the message limit (~1.4 M at 32 MB)."""
    one = pb.ColorizeRequest(hints=[pb.Hint(pixel=pb.Point(x=3.5, y=4.5), color=pb.Color(r=200, g=9, b=9), size=3)])
    item = one.SerializeToString()
    sketch = pb.ColorizeRequest(sketch=fuzzing.one_bit_png(64, 64)).SerializeToString()
    count = ((max_message_mb << 20) - len(sketch) - 1024) // len(item)
    return sketch + item * count  # repeated fields concatenate on the wire


async def loop_stall(address: str, rounds: int = 3) -> dict:
    """A parallel health check's latency, idle and while each round sends two 40-Mpx 1-bit PNGs
    (12 kB each), two 40-Mpx WebPs (1.6 kB) and two maximal hint lists at once."""
    bombs = {"one_bit_png": fuzzing.one_bit_png(MAX_SIDE, MAX_SIDE), "webp": fuzzing.flat_webp(16383, 2441)}
    flood = hint_flood(GatewayConfig.max_message_mb)
    async with HealthProbe(address) as idle_probe:
        await asyncio.sleep(2)
    idle = idle_probe.latencies_ms
    codes: dict[str, dict[str, int]] = {name: {} for name in [*bombs, "hint_flood"]}
    async with HealthProbe(address) as probe:
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.ColorizerStub(channel)
            raw = channel.unary_unary("/sketch2color.v1.Colorizer/Colorize")

            async def send(name: str) -> None:
                try:
                    if name == "hint_flood":
                        await raw(flood, timeout=120)
                    else:
                        jpeg = pb.IMAGE_FORMAT_JPEG
                        request = pb.ColorizeRequest(sketch=bombs[name], variant="unet_l1", output_format=jpeg)
                        await stub.Colorize(request, timeout=120)
                    code = "OK"
                except grpc.aio.AioRpcError as e:
                    code = e.code().name
                codes[name][code] = codes[name].get(code, 0) + 1

            for _ in range(rounds):
                await asyncio.gather(*(send(name) for name in codes for _ in range(2)))
    return {
        "idle": summary_ms(idle),
        "under_bombs": summary_ms(probe.latencies_ms),
        "codes": codes,
        "bytes": {name: len(b) for name, b in bombs.items()} | {"hint_flood": len(flood)},
    }


async def memory_burst(stack: triton_local.Stack, n: int = 12, settle_s: float = 60.0) -> dict:
    """`n` maximum-pixel sketches at once (40 Mpx, 12 kB 1-bit PNGs, answered at their size as JPEG):
    the gateway's RSS before, at its peak (sampled every 20 ms) and `settle_s` after the burst."""
    pid = stack.gateway.pid
    warm = load.valid_requests(n=4)
    async with grpc.aio.insecure_channel(stack.address, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.ColorizerStub(channel)
        for r in warm:
            await stub.Colorize(r, timeout=60)
        await asyncio.sleep(1)
        baseline = load.rss_mb(pid)
        peak = [baseline]
        sampling = asyncio.Event()

        async def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], load.rss_mb(pid))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        request = pb.ColorizeRequest(
            sketch=fuzzing.one_bit_png(MAX_SIDE, MAX_SIDE), variant="unet_l1", output_format=pb.IMAGE_FORMAT_JPEG
        )
        t0 = time.monotonic()
        calls = await asyncio.gather(*(load.call(stub, request, 300) for _ in range(n)))
        seconds = time.monotonic() - t0
        sampling.set()
        await sampler
        await asyncio.sleep(settle_s)
        after = load.rss_mb(pid)
    return {
        "n": n,
        "pixels": MAX_SIDE * MAX_SIDE,
        "sketch_bytes": len(request.sketch),
        "codes": load.codes(calls),
        "seconds": seconds,
        "baseline_mb": baseline,
        "peak_mb": peak[0],
        "after_mb": after,
        "settle_s": settle_s,
    }


async def frozen_triton(stack: triton_local.Stack, bound_s: float, freeze_s: float = 12.0) -> dict:
    """Triton's process group SIGSTOPped for `freeze_s` under 4 callers that send no deadline. Each
    call must end within the gateway's bound; health must say NOT_SERVING while it lasts."""
    stop = asyncio.Event()
    loader = asyncio.create_task(load.closed_loop(stack.address, load.valid_requests(), 4, stop, timeout=None))
    await asyncio.sleep(3)
    health: list[tuple[float, int]] = []
    t_freeze = time.monotonic()
    os.killpg(stack.triton.pid, signal.SIGSTOP)
    try:
        async with grpc.aio.insecure_channel(stack.address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while time.monotonic() < t_freeze + freeze_s:
                status = (await check(health_pb2.HealthCheckRequest(), timeout=5)).status
                health.append((time.monotonic() - t_freeze, status))
                await asyncio.sleep(0.1)
    finally:
        os.killpg(stack.triton.pid, signal.SIGCONT)
    t_thaw = time.monotonic()
    async with grpc.aio.insecure_channel(stack.address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        while (await check(health_pb2.HealthCheckRequest(), timeout=5)).status != SERVING:
            await asyncio.sleep(0.1)
    serving_again = time.monotonic() - t_thaw
    await asyncio.sleep(3)
    stop.set()
    calls = await loader
    frozen = [c for c in calls if c.start < t_thaw and c.end > t_freeze]
    not_serving = [t for t, s in health if s != SERVING]
    return {
        "bound_s": bound_s,
        "freeze_s": freeze_s,
        "calls_during": len(frozen),
        "codes_during": load.codes(frozen),
        "longest_call_s": max((c.seconds for c in frozen), default=0.0),
        "not_serving_after_s": min(not_serving, default=float("nan")),
        "serving_again_after_thaw_s": serving_again,
        "codes_total": load.codes(calls),
    }


NOT_PROTOBUF_METHODS = {
    "/grpc.health.v1.Health/Check": "unary",
    "/grpc.health.v1.Health/Watch": "server_stream",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "bidi",
}


async def not_protobuf(address: str, n: int = 100, seed: int = 0) -> dict:
    """`n` payloads per method that no parser accepts (field number 0 is never valid) -> status tallies."""
    rng = np.random.default_rng(seed)
    tally: dict[str, dict[str, int]] = {m: {} for m in NOT_PROTOBUF_METHODS}
    async with grpc.aio.insecure_channel(address) as channel:
        for method, kind in NOT_PROTOBUF_METHODS.items():
            make = {"unary": channel.unary_unary, "server_stream": channel.unary_stream, "bidi": channel.stream_stream}
            call = make[kind](method)
            for _ in range(n):
                payload = bytes([int(rng.choice([0x00, 0x07]))]) + rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
                try:
                    if kind == "unary":
                        await call(payload, timeout=10)
                    elif kind == "server_stream":
                        [_ async for _ in call(payload, timeout=10)]
                    else:
                        [_ async for _ in call(iter([payload]), timeout=10)]
                    code = "OK"
                except grpc.aio.AioRpcError as e:
                    code = e.code().name
                tally[method][code] = tally[method].get(code, 0) + 1
    return tally
