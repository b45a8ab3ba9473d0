"""The result tables the documents quote, written from the benchmarks' own JSON.

    python -m benchmarks.tables            # rewrite every table in README.md, docs/ and the model card
    python -m benchmarks.tables --check    # exit 1 if a committed table is not what its JSON gives

A table sits between `<!-- table NAME -->` and `<!-- end table -->`; the text around it is the
author's. A benchmark rerun rewrites its JSON, this rewrites every place that quotes it, and
`tests/test_tables.py` fails while a document still shows older figures.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.latency_report import InProcessPoint, LatencyResults, Point
from benchmarks.quality import ORACLE
from benchmarks.quality_summary import load
from service.paths import ROOT

RESULTS = ROOT / "results"
DOCUMENTS = ("README.md", "docs/performance.md", "model_repository/MODEL_CARD.md")
BLOCK = re.compile(r"(<!-- table (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)
DASH = "–"

# (method, hints label in metrics.json, what the table calls the hints)
QUALITY_ROWS = [
    ("guided", "points:0", "0 hints"),
    ("guided", "region:10", "10 region hints"),
    ("guided", "region:50", "50 region hints"),
    ("guided", "points:10", "10 uniform hints"),
    ("unet_l1", "none", "none"),
    ("pix2pix", "none", "none"),
    ("pix2pix_blur", "blur", "blurred target"),
    ("unet_patches20", "patches20", "20 target patches"),
    ("sketch", "none", "—"),
    ("levin2004", "region:10", "10 region hints"),
    ("levin2004", "points:10", "10 uniform hints"),
    ("nearest_hint", "points:10", "10 uniform hints"),
]
BASELINES = {"sketch", "levin2004", "nearest_hint"}


def markdown(header: list[str], rows: list[list[str]], right_from: int = 1, right_to: int | None = None) -> str:
    """A markdown table; columns right_from..right_to are right-aligned (they hold numbers)."""
    right = range(right_from, len(header) if right_to is None else right_to + 1)
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = [header, align, *rows]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _mean(rows: dict, key: tuple[str, str], metric: str, fmt: str, se: bool = False) -> str:
    m = rows.get(key, {}).get(metric)
    if m is None:
        return DASH
    if "mean" not in m:  # a set-level metric (FID): one value, no standard error
        return f"{m['value']:{fmt}}"
    return f"{m['mean']:{fmt}}" + (f" ± {m['se']:{fmt}}" if se else "")


def quality(results: Path = RESULTS) -> str:
    """Every variant and baseline on both test splits, and the emoji-only weights on OpenMoji."""
    drawings = load(results / "quality" / "illustrations" / "metrics.json")
    emoji = load(results / "quality" / "openmoji" / "metrics.json")
    reference = load(results / "quality" / "reference_openmoji_v1.json")
    header = [
        "method",
        "hints",
        "illustrations PSNR ↑ (dB)",
        "LPIPS ↓",
        "FID ↓",
        "OpenMoji PSNR ↑ (dB)",
        "OpenMoji, emoji-only weights",
    ]
    rows = []
    for method, hints, label in QUALITY_ROWS:
        key = (method, hints)
        name = f"*{method}*" if method in BASELINES else f"`{method}`"
        rows.append(
            [
                name,
                label,
                _mean(drawings, key, "psnr", ".2f", se=True),
                _mean(drawings, key, "lpips", ".3f"),
                _mean(drawings, key, "fid", ".1f"),
                _mean(emoji, key, "psnr", ".2f", se=True),
                _mean(reference, key, "psnr", ".2f", se=True),
            ]
        )
    return markdown(header, rows, right_from=2)


def _targets_met(checks: list[dict]) -> str:
    return f"{sum(bool(c['met']) for c in checks)} of {len(checks)}"


def latency_results(results: Path = RESULTS) -> LatencyResults:
    raw = _json(results / "latency" / "results.json")
    raw["in_process"] = [InProcessPoint(**p) for p in raw["in_process"]]
    raw["points"] = [Point(**p) for p in raw["points"]]
    return LatencyResults(**raw)


def latency(results: Path = RESULTS) -> str:
    """The latency benchmark's points: the in-process limit, direct Triton and the gateway."""
    res = latency_results(results)
    one, best = res.in_process[0], res.limit
    rows = [
        [
            "in-process, batch 1 / best batch (the limit)",
            DASH,
            f"{one.p50_ms:.1f} / {best.p50_ms:.1f} (batch {best.batch})",
            "",
            f"{one.images_per_s:.0f} / {best.images_per_s:.0f}",
            "",
        ]
    ]
    for p in sorted(res.points, key=lambda p: (p.path != "direct", p.concurrency)):
        cpu = f"{p.gateway_cpu_ms:.1f}" if p.path == "gateway" else ""
        path = "direct Triton" if p.path == "direct" else p.path
        rows.append([path, str(p.concurrency), f"{p.p50_ms:.1f}", f"{p.p99_ms:.1f}", f"{p.throughput:.0f}", cpu])
    header = ["path", "c", "p50 ms", "p99 ms", "img/s", "gateway CPU ms per request"]
    return markdown(header, rows)


def summary(results: Path = RESULTS) -> str:
    """The README's one table: the figures a user asks about first, each with its report."""
    drawings = _json(results / "quality" / "illustrations" / "metrics.json")
    rows = load(results / "quality" / "illustrations" / "metrics.json")
    psnr = {h: rows[("guided", h)]["psnr"]["mean"] for h in ("points:0", "region:10", "region:50")}
    locality = drawings["hint_locality"]["guided"]["locality"]["mean"]
    auc = drawings["hint_auc"]
    quality_checks = _json(results / "quality" / "metrics.json")["checks"]
    lat = latency_results(results)
    lat_targets = lat.targets()
    g1, c_hi = lat.point("gateway", 1), lat.high_concurrency()
    gh = lat.point("gateway", c_hi)
    reliability = _json(results / "reliability" / "metrics.json")["targets"]
    quality_link = "[quality](results/quality/report.md)"
    out = [
        [
            "`guided` on 410 held-out drawings, PSNR with 0 / 10 / 50 region hints",
            " / ".join(f"{psnr[h]:.2f}" for h in psnr) + " dB",
            quality_link,
        ],
        [
            "pixels one hint changes outside its own region (dE > 10)",
            f"{100 * locality:.1f} %",
            "[hint locality](results/hint_locality/report.md)",
        ],
        [
            "Hint-AUC of PSNR, dot hints (hintauc's oracle flat fill)",
            f"{auc['guided']['hint_auc']['psnr']:.2f} dB ({auc[ORACLE]['hint_auc']['psnr']:.2f})",
            quality_link,
        ],
        ["quality targets met", _targets_met(quality_checks), quality_link],
        [
            f"gateway p50 at c=1; throughput at c={c_hi} (CPU, 2 cores)",
            f"{g1.p50_ms:.1f} ms; {gh.throughput:.0f} img/s",
            "[latency](results/latency/report.md)",
        ],
        [
            "latency targets met",
            f"{sum(t.met for t in lat_targets)} of {len(lat_targets)}",
            "[latency](results/latency/report.md)",
        ],
        [
            "reliability targets met (fuzzing, outages, soak, memory)",
            _targets_met(reliability),
            "[reliability](results/reliability/report.md)",
        ],
    ]
    return markdown(["what", "measured", "report"], out, right_from=1, right_to=1)


TABLES: dict[str, Callable[[Path], str]] = {"quality": quality, "latency": latency, "summary": summary}


def rewrite(text: str, results: Path = RESULTS) -> str:
    """The document with every table block rewritten from the JSON; an unknown name is an error."""

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise KeyError(f"no table named {name!r}; known: {', '.join(TABLES)}")
        return match.group(1) + TABLES[name](results) + match.group(4)

    return BLOCK.sub(fill, text)


def stale(root: Path = ROOT, results: Path = RESULTS) -> list[str]:
    """The documents whose tables differ from what the JSON gives."""
    return [doc for doc in DOCUMENTS if (text := (root / doc).read_text()) != rewrite(text, results)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only say which documents are out of date")
    args = p.parse_args(argv)
    if args.check:
        out = stale()
        for doc in out:
            print(f"{doc}: its tables differ from results/ (run python -m benchmarks.tables)", file=sys.stderr)
        return 1 if out else 0
    for doc in DOCUMENTS:
        path = ROOT / doc
        path.write_text(rewrite(path.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
