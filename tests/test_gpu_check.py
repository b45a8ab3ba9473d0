"""benchmarks.gpu_check: every part reports on its own, a failing part does not stop the rest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run_check(out: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--quick", "--data", "synthetic", "--out", str(out), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=880)


@pytest.mark.integration
@pytest.mark.timeout(900)  # four parts, two Triton starts: ~2 min on an idle 2-core CPU, far more on a busy one
def test_gpu_check_quick_runs_every_part_on_a_cpu_and_writes_one_report(tmp_path, repo_root):
    done = run_check(tmp_path, cwd=repo_root)

    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    for part in ("environment", "forward", "train_loop", "serving"):
        assert f"| {part} | ok |" in report, report
    forward = json.loads((tmp_path / "forward.json").read_text())
    assert {r["dtype"] for r in forward["rows"]} == {"float32", "float16", "bfloat16"}
    assert all(r["img_s"] > 0 for r in forward["rows"] if r["dtype"] == "float32")
    (loop,) = json.loads((tmp_path / "train_loop.json").read_text())["loops"]
    assert loop["bare_img_s"] > 0 and loop["full_img_s"] > 0
    parity = json.loads((tmp_path / "serving.json").read_text())["parity"]
    assert parity["ok"] and parity["output_bytes"] == parity["images"] * 128 * 128 * 3  # uint8 RGB answers
    assert {p["path"] for p in json.loads((tmp_path / "serving.json").read_text())["latency"]["points"]} == {
        "direct",
        "gateway",
    }
    assert "## Triton parity" in report and "**ok**" in report


def test_a_failing_part_is_reported_and_the_next_part_still_runs(tmp_path, repo_root):
    done = run_check(
        tmp_path, "--parts", "forward", "environment", "--repository", str(tmp_path / "none"), cwd=repo_root
    )

    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    assert "| environment | ok |" in report
    forward = json.loads((tmp_path / "forward.json").read_text())  # the missing export is one row's error
    assert any("error" in r and r["net"].startswith("shipped") for r in forward["rows"])
    assert any("img_s" in r and r["net"].startswith("U-Net") for r in forward["rows"])
