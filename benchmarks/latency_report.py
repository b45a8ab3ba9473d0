"""The latency benchmark's results, targets, report and plots (`benchmarks.latency` measures)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks.workload import HINTS_PER_REQUEST

TARGET_CONCURRENCY = 16  # where the throughput targets are read


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

    @property
    def gateway_cpu_ms(self) -> float:
        """CPU milliseconds the gateway (all its processes) spent per completed request."""
        return 1e3 * self.cpu_cores["gateway"] * self.seconds / max(self.requests, 1)


@dataclass
class InProcessPoint:
    batch: int
    calls: int
    p50_ms: float  # per forward call of `batch` images
    images_per_s: float


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
            out.append(Target("gateway p50 / direct p50 at c=1", low[1].p50_ms / low[0].p50_ms, 1.15, False))
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
            f"The gateway's CPU per request (all threads, gRPC included): {g1.gateway_cpu_ms:.1f} ms at c=1. "
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
        f"Each point: {cfg['duration']:g} s measured in {cfg.get('rounds', 1)} windows, each after {cfg['warmup']:g} s "
        "of warm-up, direct and gateway windows taken in turn (ABBA) so that the machine's drift falls on both; "
        f"{cfg['samples']} distinct requests from the `{cfg['sketches']}` sketches, cycled; gateway requests carry "
        f"0-{HINTS_PER_REQUEST} hints where "
        f"the variant takes them and ask for OUTPUT_SIZE_MODEL PNG. Gateway processes: {cfg.get('processes', 1)}; "
        "direct Triton calls send the same compact uint8 inputs the gateway sends (`contract.wire`).",
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
        "gateway CPU ms/req",
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
                f"{p.gateway_cpu_ms:.1f}" if p.path == "gateway" else "",
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


def _save(fig, ax, res: LatencyResults, path: Path, grid_which: str) -> None:
    import matplotlib.pyplot as plt

    _concurrency_axis(ax, res.config["concurrency"])
    ax.grid(True, which=grid_which, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    _save(fig, ax, res, out / "latency_vs_concurrency.png", grid_which="both")

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
    _save(fig, ax, res, out / "throughput_vs_concurrency.png", grid_which="major")
