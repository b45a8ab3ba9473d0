"""The reliability campaign against a real local stack (Triton + gateway), as a careful tester
would run it: fuzzed requests and streams, the metrics endpoint under hostile labels, a soak at
~80 % of measured capacity with the gateway's memory per minute, a burst of maximum-pixel
requests, the loop's stall under tiny files of many megapixels and hint floods, bytes that are
not a protobuf against health and reflection (`benchmarks/hostile.py`), Triton frozen and then
SIGKILLed under load, and the gateway SIGTERMed under load. Writes
results/reliability/{report.md, metrics.json, soak.png}.

    python -m benchmarks.reliability                      # the full campaign, ~25 min
    python -m benchmarks.reliability --fuzz 300 --soak-minutes 1 --burst-settle-s 10 --freeze-s 5 \
        --out results/tmp/rel                             # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np

from benchmarks import fuzzing, hostile, load
from benchmarks.reliability_report import Targets, plot_soak, render
from benchmarks.workload import CHANNEL_OPTIONS
from service import triton_local
from service.api import pb, pb_grpc
from service.paths import MODEL_REPOSITORY, ROOT
from service.settings import GatewayConfig


@dataclass
class Config:
    fuzz: int = 10_000  # fuzzed Colorize calls
    raw: int = 500  # of which are bytes that are not a protobuf (counted within --fuzz)
    streams: int = 200  # fuzzed ColorizeStream calls, 1-5 items each
    concurrency: int = 8
    soak_minutes: float = 10.0
    soak_load: float = 0.8  # share of measured capacity
    capacity_s: float = 20.0
    seed: int = 0
    burst: int = 12  # maximum-pixel requests at once
    stall_rounds: int = 3  # rounds of tiny 40-Mpx files and hint floods while the loop's stall is measured
    burst_settle_s: float = 60.0  # after the burst, before the gateway's RSS is read again
    freeze_s: float = 40.0  # Triton SIGSTOPped: longer than the gateway's default bound on a Triton call
    out: Path = ROOT / "results" / "reliability"


LABEL_ATTACK = 300  # calls with made-up variant names after the fuzzing


def metrics_size(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return len(r.read())


# ---------------------------------------------------------------------------------- fuzzing


async def fuzz(address: str, cfg: Config, metrics_port: int, progress=lambda msg: None) -> dict:
    """cfg.fuzz fuzzed calls (cfg.raw of them not protobufs) and cfg.streams fuzzed streams; every
    answer's status is tallied. A call that needs its 60 s timeout counts as a hang."""
    # One generator per call index, so the same seed gives the same requests however calls interleave.
    raw_at = set(np.random.default_rng(cfg.seed).choice(cfg.fuzz, cfg.raw, replace=False).tolist())
    tally: dict[str, dict[str, int]] = {"request": {}, "raw": {}, "stream_item": {}}
    stream_faults: list[str] = []
    sizes = {"before": metrics_size(metrics_port)}
    next_index = iter(range(cfg.fuzz))
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.ColorizerStub(channel)
        raw = channel.unary_unary("/sketch2color.v1.Colorizer/Colorize")  # bytes in, bytes out

        async def caller() -> None:
            for i in next_index:
                kind, rng = "raw" if i in raw_at else "request", np.random.default_rng([cfg.seed, i])
                try:
                    if kind == "raw":
                        await raw(fuzzing.raw_bytes(rng), timeout=60)
                    else:
                        await stub.Colorize(fuzzing.request(rng), timeout=60)
                    code = "OK"
                except grpc.aio.AioRpcError as e:
                    code = e.code().name
                tally[kind][code] = tally[kind].get(code, 0) + 1
                if i == cfg.fuzz // 2:
                    sizes["half"] = metrics_size(metrics_port)
                if i and i % 1000 == 0:
                    progress(f"  {i:,} of {cfg.fuzz:,} fuzzed calls")

        await asyncio.gather(*(caller() for _ in range(cfg.concurrency)))
        sizes["after"] = metrics_size(metrics_port)
        # Labels an attacker controls: every call a new 10 kB variant name (and request id). Each
        # would be a new series forever if the label were copied from the request.
        for k in range(LABEL_ATTACK):
            name = f"{k:05d}" + "v" * 10_000
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.Colorize(pb.ColorizeRequest(sketch=b"x", variant=name, request_id=name), timeout=10)
        sizes["after_label_attack"] = metrics_size(metrics_port)

        async def stream(k: int) -> None:
            rng = np.random.default_rng([cfg.seed, cfg.fuzz + k])
            items = [fuzzing.request(rng) for _ in range(int(rng.integers(1, 6)))]
            try:
                answers = [a async for a in stub.ColorizeStream(iter(items), timeout=120)]
            except grpc.aio.AioRpcError as e:
                stream_faults.append(f"stream {k}: {e.code().name} {e.details()}")
                return
            if sorted(a.index for a in answers) != list(range(len(items))):
                stream_faults.append(f"stream {k}: {len(answers)} answers for {len(items)} items")
            for a in answers:
                code = "OK" if a.HasField("response") else grpc.StatusCode(_by_value[a.error.code]).name
                tally["stream_item"][code] = tally["stream_item"].get(code, 0) + 1

        gate = asyncio.Semaphore(cfg.concurrency)

        async def gated(k: int) -> None:
            async with gate:
                await stream(k)

        await asyncio.gather(*(gated(k) for k in range(cfg.streams)))
        alive = await stub.Colorize(load.valid_requests(n=1)[0], timeout=60)
    return {"tally": tally, "stream_faults": stream_faults, "metrics_bytes": sizes, "serves_after": bool(alive.image)}


_by_value = {s.value[0]: s for s in grpc.StatusCode}


# ---------------------------------------------------------------------------------- soak


async def capacity(address: str, cfg: Config) -> float:
    """Completed requests per second with cfg.concurrency callers back to back."""
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(cfg.capacity_s, stop.set)
    calls = await load.closed_loop(address, load.valid_requests(cfg.seed), cfg.concurrency, stop)
    ok = [c for c in calls if c.code == "OK"]
    return len(ok) / (max(c.end for c in ok) - min(c.start for c in ok))


async def soak(stack: triton_local.Stack, cfg: Config, rate: float) -> dict:
    """Open-loop load at `rate` for cfg.soak_minutes; the gateway's and Triton's RSS every second."""
    samples: list[tuple[float, float, float]] = []

    def sample(t: float) -> None:
        triton_mb = sum(load.rss_mb(p) for p in triton_local.group_members(stack.triton.pid))
        samples.append((t, load.rss_mb(stack.gateway.pid), triton_mb))

    t0 = time.monotonic()
    calls = await load.open_loop(
        stack.address, load.valid_requests(cfg.seed), rate, 60 * cfg.soak_minutes, on_tick=sample
    )
    minutes = []
    for m in range(int(np.ceil(cfg.soak_minutes))):
        in_minute = [c for c in calls if m <= (c.start - t0) / 60 < m + 1]
        rss = [s for s in samples if m <= s[0] / 60 < m + 1]
        last = rss[-1] if rss else (0.0, 0.0, 0.0)
        minutes.append(
            {
                "minute": m + 1,
                "calls": len(in_minute),
                "errors": sum(c.code != "OK" for c in in_minute),
                "p50_ms": load.percentile_ms(in_minute, 50),
                "p99_ms": load.percentile_ms(in_minute, 99),
                "gateway_rss_mb": last[1],
                "triton_rss_mb": last[2],
            }
        )
    return {
        "rate": rate,
        "calls": len(calls),
        "codes": load.codes(calls),
        "minutes": minutes,
        "rss_samples": samples,
        **rss_growth(minutes),
    }


def rss_growth(minutes: list[dict]) -> dict[str, float]:
    """The gateway's RSS growth after the first minute (by then pools, caches and allocator arenas
    have their size): at the end against the end of minute 1 (the target), the peak against it, and
    the trend over the minutes after the first (MB per minute), which tells a leak from noise."""
    rss = [m["gateway_rss_mb"] for m in minutes]
    after = rss[1:] or rss
    slope = float(np.polyfit(range(len(after)), after, 1)[0]) if len(after) > 1 else 0.0
    return {
        "gateway_rss_growth": after[-1] / rss[0] - 1,
        "gateway_rss_peak_growth": max(after) / rss[0] - 1,
        "gateway_rss_trend_mb_per_min": slope,
    }


# ---------------------------------------------------------------------------------- Triton killed


async def kill_triton(stack: triton_local.Stack, cfg: Config) -> dict:
    """SIGKILL Triton under closed-loop load; clean up what it left as an operator's supervisor would
    (`stop_triton`), start it again on the same ports; time the outage and the recovery."""
    stop = asyncio.Event()
    loader = asyncio.create_task(load.closed_loop(stack.address, load.valid_requests(cfg.seed), 4, stop))
    await asyncio.sleep(5)
    old = stack.triton
    t_kill = time.monotonic()
    os.kill(old.pid, signal.SIGKILL)
    await asyncio.sleep(3)  # the outage: calls meanwhile must fail fast with UNAVAILABLE
    left_by_kill = leftovers(old)
    await asyncio.to_thread(triton_local.stop_triton, old)
    orphans_after_cleanup = leftovers(old)
    t_restart = time.monotonic()
    stack.triton, _ = triton_local.start_triton(stack.repository, stack.ports, stack.triton_log)
    t_ready = await asyncio.to_thread(wait_ready_precisely, stack.ports, stack.triton)
    await asyncio.sleep(5)
    stop.set()
    calls = await loader
    down = [c for c in calls if t_kill <= c.start and c.end < t_ready]
    first_ok = min((c.end for c in calls if c.code == "OK" and c.end >= t_ready), default=float("nan"))
    return {
        "old_pid": old.pid,
        "left_by_kill": left_by_kill,
        "orphans_after_cleanup": orphans_after_cleanup,
        "codes_while_down": load.codes(down),
        "codes_in_flight_at_kill": load.codes([c for c in calls if c.start < t_kill <= c.end]),
        "restart_to_ready_s": t_ready - t_restart,
        "first_success_after_ready_s": first_ok - t_ready,
        "codes_total": load.codes(calls),
    }


def leftovers(triton) -> dict[str, int]:
    return {"processes": len(triton_local.group_members(triton.pid)), "shm": len(load.shm_regions(triton.shm_prefix))}


def wait_ready_precisely(ports: triton_local.TritonPorts, proc, timeout: float = 180.0) -> float:
    """The moment Triton's readiness endpoint first says ready, polled every 20 ms."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{ports.http}/v2/health/ready"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tritonserver exited with {proc.returncode} while restarting")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError("Triton did not become ready again")


# ---------------------------------------------------------------------------------- SIGTERM drain

ACCEPT_MARGIN_S = 0.02  # a call sent this long before SIGTERM has surely reached the local gateway


async def drain(stack: triton_local.Stack, cfg: Config) -> dict:
    """SIGTERM the gateway under closed-loop load. Calls it had accepted must all complete OK; calls
    after it may get UNAVAILABLE (refused, the client retries elsewhere) but nothing else."""
    stop = asyncio.Event()
    loader = asyncio.create_task(
        load.closed_loop(stack.address, load.valid_requests(cfg.seed), cfg.concurrency, stop, backoff_s=0.2)
    )
    await asyncio.sleep(5)
    t_term = time.monotonic()
    stack.gateway.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(stack.gateway.wait, 60)
    t_exit = time.monotonic()
    await asyncio.sleep(1)
    stop.set()
    calls = await loader
    accepted = [c for c in calls if c.start < t_term - ACCEPT_MARGIN_S]
    later = [c for c in calls if c.start >= t_term - ACCEPT_MARGIN_S]
    return {
        "exit_code": code,
        "drain_s": t_exit - t_term,
        "accepted": len(accepted),
        "accepted_lost": sum(c.code != "OK" for c in accepted),
        "codes_accepted": load.codes(accepted),
        "codes_after_sigterm": load.codes(later),
    }


# ---------------------------------------------------------------------------------- campaign


async def campaign(stack: triton_local.Stack, cfg: Config, progress) -> dict:
    res: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}}
    progress(f"fuzz: {cfg.fuzz} calls ({cfg.raw} not protobufs), {cfg.streams} streams")
    t = time.monotonic()
    res["fuzz"] = await fuzz(stack.address, cfg, stack.metrics_port, progress)
    res["fuzz"]["seconds"] = time.monotonic() - t
    res["fuzz"]["gateway_alive"] = stack.gateway.poll() is None
    progress(f"capacity: closed loop, {cfg.concurrency} callers, {cfg.capacity_s:.0f} s")
    res["capacity_rps"] = await capacity(stack.address, cfg)
    rate = cfg.soak_load * res["capacity_rps"]
    progress(f"soak: {rate:.1f} req/s ({cfg.soak_load:.0%} of {res['capacity_rps']:.1f}) for {cfg.soak_minutes} min")
    res["soak"] = await soak(stack, cfg, rate)
    progress(f"burst: {cfg.burst} maximum-pixel requests at once, then {cfg.burst_settle_s:.0f} s")
    res["burst"] = await hostile.memory_burst(stack, cfg.burst, cfg.burst_settle_s)
    progress("loop stall: health checks while tiny files of 40 Mpx and hint floods are processed")
    res["loop_stall"] = await hostile.loop_stall(stack.address, cfg.stall_rounds)
    progress("bytes that are not a protobuf against health and reflection")
    res["not_protobuf"] = await hostile.not_protobuf(stack.address, seed=cfg.seed)
    progress(f"Triton frozen (SIGSTOP) for {cfg.freeze_s:.0f} s under callers without a deadline")
    res["triton_frozen"] = await hostile.frozen_triton(stack, GatewayConfig.triton_timeout_s, cfg.freeze_s)
    progress("Triton SIGKILLed under load, then restarted")
    res["triton_kill"] = await kill_triton(stack, cfg)
    progress("gateway SIGTERMed under load")
    res["drain"] = await drain(stack, cfg)
    return res


def run(cfg: Config) -> dict:
    def progress(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        with triton_local.serving_stack(MODEL_REPOSITORY, Path(tmp)) as stack:
            res = asyncio.run(campaign(stack, cfg, progress))
            groups = {stack.triton.pid, res["triton_kill"]["old_pid"]}
            prefix = stack.triton.shm_prefix
    # After the stack's shutdown nothing of either Triton may be left: no stub, no shared memory.
    res["after_shutdown"] = {
        "processes": sum(len(triton_local.group_members(g)) for g in groups),
        "shm": len(load.shm_regions(prefix)),
    }
    res["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    return res


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in asdict(Config()).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    cfg = Config(**vars(p.parse_args(argv)))
    res = run(cfg)
    res["targets"] = [asdict(t) for t in Targets.evaluate(res)]
    cfg.out.mkdir(parents=True, exist_ok=True)
    samples = res["soak"].pop("rss_samples")
    (cfg.out / "metrics.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    plot_soak(res, samples, cfg.out / "soak.png")
    (cfg.out / "report.md").write_text(render(res))
    print(render(res))
    return res


if __name__ == "__main__":
    main()
