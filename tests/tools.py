"""Programs the tests run that are not Python packages (Prometheus and its promtool): Debian
packages fetched with `apt-get download` once, unpacked (not installed) under
data/tools/<package>/, and reused."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .integration import ROOT

CACHE = ROOT / "data" / "tools"


def debian_package(name: str) -> Path:
    """The unpacked root of Debian package `name` (its files under usr/...)."""
    root = CACHE / name
    if (root / ".unpacked").exists():
        return root
    work = CACHE / f"{name}.download"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        fetched = subprocess.run(["apt-get", "download", name], cwd=work, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise RuntimeError(f"apt-get is missing: cannot fetch the Debian package {name}") from None
    debs = list(work.glob("*.deb"))
    if fetched.returncode != 0 or not debs:
        raise RuntimeError(f"apt-get download {name} failed: {fetched.stderr[-500:]}")
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True, timeout=300)
    (root / ".unpacked").write_text(debs[0].name + "\n")
    shutil.rmtree(work)
    return root
