"""Closed-loop load and what is read at the edges of a measured window: latencies, Triton's
statistics, the CPU each process used (`benchmarks.latency` drives them)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
import numpy as np
import psutil
from tritonclient.grpc import service_pb2


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
        out["gateway"] += sum(self._cpu(c) for c in self.procs["gateway"].children())  # --processes N
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


def summarize(
    path: str, concurrency: int, latencies: list[float], errors: int, windows: list[tuple[Snapshot, Snapshot]]
) -> dict:
    """A point from its measured windows (each a pair of snapshots at its edges), summed."""
    seconds = sum(after.t - before.t for before, after in windows)
    ms = np.asarray(latencies) * 1e3 if latencies else np.full(1, np.nan)
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    first = windows[0][1]
    dt = {k: sum(after.triton[k] - before.triton[k] for before, after in windows) for k in first.triton}
    per_request = max(dt["success"], 1)
    cores = {k: sum(after.cpu_s[k] - before.cpu_s[k] for before, after in windows) / seconds for k in first.cpu_s}
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
