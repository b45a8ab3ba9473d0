"""The benchmarks run end to end in their quick modes and report sane numbers.

The integration tests start Triton (on a tiny repository of width-4 generators made here) and the
gateway; the latency benchmark starts its own, the Locust test uses the benchmark's stack.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import latency as L
from benchmarks import latency_report as R
from benchmarks import train_throughput as T
from benchmarks.profiling import summarize_profile
from service.triton_local import serving_stack

VARIANTS = ("guided", "unet_l1")  # point hints, and the sketch alone


@pytest.fixture(scope="module")
def tiny_repository(tmp_path_factory, trained_checkpoint, repo_root: Path) -> Path:
    """A model repository of one-step width-4 generators, laid out as training.export writes it."""
    from training.export import SHARED_MODEL_PY, export

    repository = tmp_path_factory.mktemp("model_repository")
    shutil.copy(repo_root / "model_repository" / SHARED_MODEL_PY, repository / SHARED_MODEL_PY)
    for variant in VARIANTS:
        export(trained_checkpoint(variant), repository)
    return repository


def _point(path: str, c: int, p50: float, throughput: float) -> R.Point:
    server = {"decode_ms": 1.0, "triton_ms": 0.9 * p50, "encode_ms": 0.5, "total_ms": p50} if path == "gateway" else {}
    return R.Point(
        path=path,
        concurrency=c,
        requests=100,
        errors=0,
        seconds=5.0,
        p50_ms=p50,
        p95_ms=1.5 * p50,
        p99_ms=2 * p50,
        mean_ms=p50,
        throughput=throughput,
        mean_batch=1.0,
        triton_queue_ms=0.1,
        triton_compute_ms=0.8 * p50,
        cpu_cores={"client": 0.1, "gateway": 0.2, "triton": 1.0, "other": 0.0},
        server_ms=server,
    )


def test_targets_compare_gateway_with_direct_triton_and_the_in_process_limit():
    points = [
        _point("direct", 1, 10.0, 100.0),
        _point("gateway", 1, 10.5, 95.0),
        _point("direct", 16, 40.0, 400.0),
        _point("gateway", 16, 50.0, 300.0),
    ]
    res = R.LatencyResults(
        {}, {}, {}, [R.InProcessPoint(1, 10, 8.0, 125.0), R.InProcessPoint(8, 10, 20.0, 400.0)], points
    )
    verdicts = {t.name: t for t in res.targets()}
    assert verdicts["gateway p50 / direct p50 at c=1"].met  # 1.05 <= 1.15
    assert not verdicts["gateway / direct throughput at c=16"].met  # 0.75 < 0.9
    assert verdicts["gateway / direct throughput at c=16"].verdict() == "missed, by 17%"
    assert verdicts["gateway throughput at c=16 / in-process limit"].met  # 300 / 400 = 0.75 >= 0.7
    assert verdicts["gateway throughput c=16 / c=1"].met  # 300 / 95 >= 1.5


def test_profile_summary_merges_lines_and_keeps_project_functions_inclusive(tmp_path: Path):
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "main (service/gateway.py:10);encode (contract/hints.py:131);blur (cv2/x.py:1) 3\n"
        "main (service/gateway.py:10);encode (contract/hints.py:140) 1\n"
        "select (selectors.py:468) 4\n"
    )
    summary = summarize_profile(raw)
    assert summary["samples"] == 8
    assert dict(summary["self"]) == {
        "blur (cv2/x.py)": 37.5,
        "encode (contract/hints.py)": 12.5,
        "select (selectors.py)": 50.0,
    }
    assert dict(summary["inclusive"]) == {"main (service/gateway.py)": 50.0, "encode (contract/hints.py)": 50.0}


def test_train_throughput_quick_reports_positive_rates_and_a_consistent_flop_count(tmp_path: Path):
    result = T.run(T.ThroughputConfig.quick(out=tmp_path, threads=1))
    assert [m["name"] for m in result["generator"]] == ["U-Net width 4", "U-Net width 8"]
    for m in result["generator"]:
        assert m["images_per_s"] > 0 and m["gflops_per_s"] > 0 and m["fraction_of_conv"] > 0
    assert result["generator"][1]["flops_per_step"] > result["generator"][0]["flops_per_step"]
    assert result["conv"]["gflops_per_s"] > 0
    assert result["conv_flops_counted"] == pytest.approx(result["conv"]["flops_per_step"], rel=0.01)
    assert "| U-Net width 8 |" in (tmp_path / "report.md").read_text()
    (loop,) = result["loop"]
    assert (loop["variant"], loop["width"], loop["device"]) == ("guided", 4, "cpu")
    assert loop["bare_img_s"] > 0 and loop["full_img_s"] > 0 and loop["data_img_s"] > 0
    assert len(loop["steps"]["full"]) == 2
    assert "| guided | 4 | synthetic |" in (tmp_path / "report.md").read_text()


@pytest.mark.integration
def test_latency_quick_writes_report_and_plots_with_sane_numbers(tiny_repository: Path, tmp_path: Path):
    out = tmp_path / "latency"
    cfg = L.LatencyConfig.quick(repository=tiny_repository, out=out, log_dir=tmp_path / "logs", threads=1)
    res = L.run(cfg)

    assert [p.batch for p in res.in_process] == [1, 4]
    assert all(p.images_per_s > 0 and p.p50_ms > 0 for p in res.in_process)
    assert [(p.path, p.concurrency) for p in res.points] == [
        ("direct", 1),
        ("direct", 4),
        ("gateway", 1),
        ("gateway", 4),
    ]
    for p in res.points:
        assert p.errors == 0, p.first_error
        assert p.requests > 0 and p.throughput > 0
        assert 0 < p.p50_ms <= p.p95_ms <= p.p99_ms
        assert p.mean_batch >= 1
        assert all(v >= 0 for v in p.cpu_cores.values())
    gateway = [p for p in res.points if p.path == "gateway"]
    assert all(0 < p.server_ms["triton_ms"] <= p.server_ms["total_ms"] for p in gateway)
    assert len(res.targets()) == 4 and all(math.isfinite(t.value) for t in res.targets())

    report = (out / "report.md").read_text()
    for heading in ("## Machine", "## In-process forward", "## Served", "## Targets", "## Where the time goes"):
        assert heading in report
    assert json.loads((out / "results.json").read_text())["config"]["variant"] == "guided"
    for plot in ("latency_vs_concurrency.png", "throughput_vs_concurrency.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_locustfile_runs_headless_against_the_gateway_without_failures(
    tiny_repository: Path, tmp_path: Path, repo_root: Path
):
    with serving_stack(tiny_repository, tmp_path / "logs", torch_threads=1) as stack:
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "benchmarks/locustfile.py",
            "--headless",
            "--host",
            stack.address,
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "5s",
            "--csv",
            str(tmp_path / "run"),
            "--sketches",
            "synthetic",
            "--samples",
            "8",
            "--only-summary",
        ]
        done = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "run_stats.csv") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Request Count"]) >= 1
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert any(name.startswith("/sketch2color.v1.Colorizer/Colorize [") for name in rows)
