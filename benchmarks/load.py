"""Load for the reliability campaign: valid requests sent closed-loop (N callers back to back) or
open-loop (a fixed arrival rate, as independent clients send), every call recorded with its start,
end and status, plus process memory sampled from /proc."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from benchmarks.workload import CHANNEL_OPTIONS
from service.api import pb, pb_grpc
from service.paths import ROOT


@dataclass(frozen=True)
class Call:
    start: float  # time.monotonic()
    end: float
    code: str  # grpc.StatusCode name

    @property
    def seconds(self) -> float:
        return self.end - self.start


def valid_requests(seed: int = 0, n: int = 16) -> list[pb.ColorizeRequest]:
    """The example sketches with a few random hints each: what a well-behaved client sends."""
    rng = np.random.default_rng(seed)
    sketches = []
    for path in sorted((ROOT / "examples").glob("*.png")):
        buf = io.BytesIO()
        Image.open(path).convert("L").save(buf, format="PNG")
        sketches.append(buf.getvalue())
    out = []
    for i in range(n):
        hints = [
            pb.Hint(normalized=pb.Point(x=float(x), y=float(y)), color=pb.Color(r=int(c[0]), g=int(c[1]), b=int(c[2])))
            for x, y, c in zip(rng.random(4), rng.random(4), rng.integers(0, 256, (4, 3)))
        ]
        out.append(pb.ColorizeRequest(sketch=sketches[i % len(sketches)], variant="guided", hints=hints))
    return out


async def call(stub: pb_grpc.ColorizerStub, request: pb.ColorizeRequest, timeout: float) -> Call:
    start = time.monotonic()
    try:
        await stub.Colorize(request, timeout=timeout)
        code = "OK"
    except grpc.aio.AioRpcError as e:
        code = e.code().name
    return Call(start, time.monotonic(), code)


async def closed_loop(
    address: str,
    requests: list[pb.ColorizeRequest],
    concurrency: int,
    stop: asyncio.Event,
    timeout: float = 30.0,
    backoff_s: float = 0.05,
) -> list[Call]:
    """`concurrency` callers, each sending its next request when the last one is answered, until
    `stop` is set. After a failure a caller waits `backoff_s`, as a real client would, so that a
    down server is not hammered by a busy loop that starves the machine it restarts on."""
    calls: list[Call] = []
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.ColorizerStub(channel)

        async def caller(k: int) -> None:
            i = k
            while not stop.is_set():
                c = await call(stub, requests[i % len(requests)], timeout)
                calls.append(c)
                i += concurrency
                if c.code != "OK":
                    await asyncio.sleep(backoff_s)

        await asyncio.gather(*(caller(k) for k in range(concurrency)))
    return calls


async def open_loop(
    address: str, requests: list[pb.ColorizeRequest], rate: float, seconds: float, timeout: float = 30.0, on_tick=None
) -> list[Call]:
    """Requests at a fixed `rate` per second for `seconds`, each on its own (an arrival does not wait
    for earlier answers). `on_tick(now)` runs about once a second (e.g. to sample memory)."""
    calls: list[Call] = []
    tasks: set[asyncio.Task] = set()
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.ColorizerStub(channel)
        t0 = time.monotonic()
        next_tick = t0
        for i in range(int(rate * seconds)):
            due = t0 + i / rate
            if (now := time.monotonic()) < due:
                await asyncio.sleep(due - now)
            if on_tick and time.monotonic() >= next_tick:
                on_tick(time.monotonic() - t0)
                next_tick += 1.0
            task = asyncio.create_task(call(stub, requests[i % len(requests)], timeout))
            task.add_done_callback(lambda t: (tasks.discard(t), calls.append(t.result())))
            tasks.add(task)
        await asyncio.gather(*tasks)
    return calls


def codes(calls: list[Call]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in calls:
        out[c.code] = out.get(c.code, 0) + 1
    return dict(sorted(out.items()))


def percentile_ms(calls: list[Call], q: float) -> float:
    ok = [c.seconds for c in calls if c.code == "OK"]
    return float(np.percentile(ok, q) * 1e3) if ok else float("nan")


# ---------------------------------------------------------------------------------- processes


def rss_mb(pid: int) -> float:
    """Resident memory of one process, from /proc (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def shm_regions(prefix: str) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"{prefix}*"))
