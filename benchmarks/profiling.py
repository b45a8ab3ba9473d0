"""py-spy on a running process while it is measured, and its samples summarised by function."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


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


PROJECT_DIRS = ("service/", "contract/", "training/", "benchmarks/", "model_repository/")
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
