"""What the page's server adds over calling the gateway directly: the same Colorize request sent
alternately over gRPC and as JSON to ``python -m service.web`` (one caller, so the difference is
latency, not queueing). Writes results/web/{report.md, metrics.json}.

    python -m benchmarks.web_overhead [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import grpc
import numpy as np

from service.api import pb, pb_grpc
from service.paths import MODEL_REPOSITORY, ROOT
from service.triton_local import free_port, serving_stack, stop_process

TARGET_MS = 5.0  # the web server may add at most this much to the p50
SKETCH = ROOT / "examples" / "boy.png"
HINTS = [(0.22, 0.86, "#e01010"), (0.70, 0.75, "#1030e0")]


def start_web(gateway: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.web", "--port", str(port), "--gateway-url", gateway],
        cwd=ROOT,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the web server did not start:\n{log.read_text()}") from None
            time.sleep(0.1)


async def measure(address: str, url: str, n: int) -> dict:
    sketch = SKETCH.read_bytes()
    grpc_request = pb.ColorizeRequest(
        sketch=sketch,
        variant="guided",
        hints=[
            pb.Hint(
                normalized=pb.Point(x=x, y=y), color=pb.Color(r=int(c[1:3], 16), g=int(c[3:5], 16), b=int(c[5:], 16))
            )
            for x, y, c in HINTS
        ],
    )
    body = {
        "sketch": base64.b64encode(sketch).decode(),
        "variant": "guided",
        "hints": [{"x": x, "y": y, "color": c} for x, y, c in HINTS],
    }
    direct, web, web_ms = [], [], []
    async with grpc.aio.insecure_channel(address) as channel, aiohttp.ClientSession() as session:
        stub = pb_grpc.ColorizerStub(channel)
        for i in range(n + 10):  # the first 10 of each warm up
            t0 = time.perf_counter()
            await stub.Colorize(grpc_request, timeout=30)
            t1 = time.perf_counter()
            async with session.post(url + "/api/colorize", json=body) as r:
                answer = await r.json()
                assert r.status == 200, answer
            t2 = time.perf_counter()
            if i >= 10:
                direct.append(1e3 * (t1 - t0))
                web.append(1e3 * (t2 - t1))
                web_ms.append(answer["timings"]["web_ms"])
    p50 = lambda xs: float(np.percentile(xs, 50))  # noqa: E731
    return {
        "n": n,
        "direct_p50_ms": p50(direct),
        "web_p50_ms": p50(web),
        "added_p50_ms": p50(web) - p50(direct),
        "added_paired_median_ms": float(np.median(np.subtract(web, direct))),
        "direct_p90_ms": float(np.percentile(direct, 90)),
        "web_p90_ms": float(np.percentile(web, 90)),
        "web_server_own_p50_ms": p50(web_ms),
        "target_ms": TARGET_MS,
    }


def render(m: dict) -> str:
    met = m["added_p50_ms"] <= TARGET_MS
    return "\n".join(
        [
            "# The page's server: overhead over a direct gRPC call",
            "",
            f"`python -m benchmarks.web_overhead`: {m['n']} Colorize calls of `examples/boy.png` (256x256, 2 hints, "
            "guided), alternating a direct gRPC call to the gateway and the same request as JSON to "
            "`python -m service.web`, one caller, on the local stack.",
            "",
            "| path | p50 ms | p90 ms |",
            "|---|---|---|",
            f"| gRPC, direct to the gateway | {m['direct_p50_ms']:.1f} | {m['direct_p90_ms']:.1f} |",
            f"| JSON through the web server | {m['web_p50_ms']:.1f} | {m['web_p90_ms']:.1f} |",
            "",
            f"Added at p50: **{m['added_p50_ms']:.1f} ms** (target <= {TARGET_MS:.0f} ms: "
            f"{'✅ met' if met else '❌ missed'}); the median of the paired differences (each JSON call minus the "
            f"gRPC call before it) is {m['added_paired_median_ms']:.1f} ms; "
            f"of it, the server's own work (JSON and base64 both ways) is {m['web_server_own_p50_ms']:.1f} ms, the "
            "rest is the extra hop over HTTP.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "web")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="web-") as tmp, serving_stack(MODEL_REPOSITORY, Path(tmp)) as st:
        proc, url = start_web(st.address, Path(tmp) / "web.log")
        try:
            m = asyncio.run(measure(st.address, url, args.n))
        finally:
            stop_process(proc)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(m, indent=1) + "\n")
    (args.out / "report.md").write_text(render(m))
    print(render(m))
    return m


if __name__ == "__main__":
    main()
