"""Run the `tritonserver` binary that the nvidia-pytriton wheel ships, on a model repository.

The wheel carries Triton, its Python backend and one backend stub per Python version. To serve
Python-backend models with this venv's torch, the stub for this Python is copied next to the
backend, the venv's ``bin`` goes first on PATH (the stub runs the ``python`` it finds there), and
the wheel's bundled libraries plus Python's LIBDIR go on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytriton


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports() -> TritonPorts:
    return TritonPorts(free_port(), free_port(), free_port())


def triton_home() -> Path:
    return Path(pytriton.__file__).parent / "tritonserver"


def prepare_backend() -> Path:
    """Copy this Python's backend stub next to the Python backend (once); return the backends dir."""
    home = triton_home()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = home / "python_backend_stubs" / version / "triton_python_backend_stub"
    target = home / "backends" / "python" / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"nvidia-pytriton ships no Triton Python backend stub for Python {version}")
    if not target.exists() or target.stat().st_size != stub.stat().st_size:
        shutil.copy2(stub, target)
    return home / "backends"


def triton_env() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    libs = [str(Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")])
    return env


def start_triton(
    model_repository: Path | str,
    ports: TritonPorts | None = None,
    log_path: Path | str | None = None,
    extra_args: tuple[str, ...] = (),
) -> tuple[subprocess.Popen, TritonPorts]:
    """Start tritonserver in the background; returns the process and its ports (not yet ready)."""
    ports = ports or free_ports()
    backends = prepare_backend()
    cmd = [
        str(triton_home() / "bin" / "tritonserver"),
        f"--model-repository={Path(model_repository).resolve()}",
        f"--backend-directory={backends}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--log-verbose=0",
        *extra_args,
    ]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=triton_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, ports


def wait_ready(ports: TritonPorts, proc: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Block until Triton reports ready (every model loaded); raise if it exits or times out."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{ports.http}/v2/health/ready"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"tritonserver exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"Triton was not ready within {timeout:.0f} s")


def stop_triton(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
