"""Run the `tritonserver` binary that the nvidia-pytriton wheel ships, on a model repository.

The wheel carries Triton, its Python backend and one backend stub per Python version. To serve
Python-backend models with this venv's torch, the stub for this Python is copied next to the
backend, the venv's ``bin`` goes first on PATH (the stub runs the ``python`` it finds there), and
the wheel's bundled libraries plus Python's LIBDIR go on LD_LIBRARY_PATH.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from service.paths import ROOT


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc}"


_HANDED_OUT: set[int] = set()  # this process's picks: a port is free only until its user binds it


def free_port() -> int:
    return free_ports_distinct(1)[0]


def free_ports_distinct(n: int) -> list[int]:
    """n free ports, none handed out before by this process. The sockets stay bound until all n are
    chosen (one after the other, the kernel may hand out a port it just freed), and a port picked
    earlier whose user has not bound it yet is not picked again: two picks once gave the gateway's
    gRPC and metrics ports the same number ("Address already in use")."""
    with ExitStack() as stack:
        picked: list[int] = []
        while len(picked) < n:
            s = stack.enter_context(socket.socket())
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port not in _HANDED_OUT:
                picked.append(port)
        _HANDED_OUT.update(picked)
        return picked


def free_ports() -> TritonPorts:
    """Three distinct free ports for Triton (it refuses HTTP and gRPC on one)."""
    return TritonPorts(*free_ports_distinct(3))


def triton_home() -> Path:
    return pytriton_dir() / "tritonserver"


def pytriton_dir() -> Path:
    """Where the nvidia-pytriton wheel lies. Imported here, not at the top: the load generator and the
    gateway image import this module's helpers without that wheel."""
    import pytriton

    return Path(pytriton.__file__).parent


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


def triton_env(torch_threads: int = 0) -> dict[str, str]:
    env = dict(os.environ)
    if torch_threads:  # read by model_repository/generator_model.py
        env["SKETCH2COLOR_TORCH_THREADS"] = str(torch_threads)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    libs = [str(pytriton_dir().parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")])
    return env


def start_triton(
    model_repository: Path | str,
    ports: TritonPorts | None = None,
    log_path: Path | str | None = None,
    extra_args: tuple[str, ...] = (),
    torch_threads: int = 0,
) -> tuple[subprocess.Popen, TritonPorts]:
    """Start tritonserver in the background; returns the process and its ports (not yet ready).

    torch_threads: torch's threads in each model's backend process (0 = torch's default).
    """
    ports = ports or free_ports()
    backends = prepare_backend()
    # Each server's Python-backend shared memory gets a prefix of its own, so stop_triton can remove
    # exactly its regions when the stubs die without cleaning up.
    shm_prefix = f"sketch2color_{os.getpid()}_{ports.grpc}_"
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
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        *extra_args,
    ]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        cmd, env=triton_env(torch_threads), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc.shm_prefix = shm_prefix  # for stop_triton
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
    """Stop tritonserver, then everything left of it: the Python backend's stub processes (Triton was
    started in a session of its own, whose process group they share) and their shared memory."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # Stubs outlive a killed server (and hold ~0.4 GB each). SIGKILL is not instant: wait until they
    # are gone, so that a Triton started right after does not share the machine with them.
    deadline = time.monotonic() + timeout
    while group_members(proc.pid) and time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break  # nothing of it is left
        time.sleep(0.02)
    prefix = getattr(proc, "shm_prefix", None)
    if prefix:
        for region in Path("/dev/shm").glob(f"{prefix}*"):
            region.unlink(missing_ok=True)


def group_members(pgid: int) -> list[int]:
    """The live processes of process group `pgid` (Triton and its backend stubs share one); zombies,
    which hold no memory and wait only for a reaper, are not counted."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(stat.parent.name))
    return out


# ---------------------------------------------------------------------------------- Triton + gateway


@dataclass
class Stack:
    """Triton and a gateway process in front of it, on free local ports (tests and benchmarks)."""

    triton: subprocess.Popen
    ports: TritonPorts
    gateway: subprocess.Popen
    address: str
    metrics_port: int
    repository: Path
    triton_log: Path
    torch_threads: int = 0

    def restart_triton(self, timeout: float = 180.0) -> None:
        """Start Triton again on the same ports (after `stop_triton(stack.triton)`)."""
        self.triton, _ = start_triton(self.repository, self.ports, self.triton_log, torch_threads=self.torch_threads)
        wait_ready(self.ports, self.triton, timeout)


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_serving(address: str, proc: subprocess.Popen, timeout: float) -> None:
    """Block until the gateway's health check says SERVING; raise if it exits or times out."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with code {proc.returncode} before it was serving")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"the gateway on {address} was not serving within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM (the gateway drains), then SIGKILL if it lingers; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextmanager
def serving_stack(
    repository: Path | str,
    log_dir: Path,
    torch_threads: int = 0,
    gateway_args: tuple[str, ...] = (),
    timeout: float = 300.0,
) -> Iterator[Stack]:
    """Triton on `repository` and `python -m service.gateway` in front of it, until the block ends.

    Logs go to log_dir/{triton,gateway}.log; their tails are in the error if either fails to start.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    triton_log, gateway_log = log_dir / "triton.log", log_dir / "gateway.log"
    triton, ports = start_triton(repository, log_path=triton_log, torch_threads=torch_threads)
    stack = None
    try:
        port, metrics_port = free_port(), free_port()
        cmd = [
            sys.executable,
            "-m",
            "service.gateway",
            "--triton-url",
            ports.grpc_url,
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            *gateway_args,
        ]
        with open(gateway_log, "ab") as out:
            gateway = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        stack = Stack(
            triton, ports, gateway, f"127.0.0.1:{port}", metrics_port, Path(repository), triton_log, torch_threads
        )
        try:
            try:
                wait_ready(ports, triton, timeout)
            except (RuntimeError, TimeoutError) as e:
                raise RuntimeError(f"{e}\n--- {triton_log}:\n{log_tail(triton_log)}") from None
            try:
                wait_serving(stack.address, gateway, timeout)
            except (RuntimeError, TimeoutError) as e:
                raise RuntimeError(f"{e}\n--- {gateway_log}:\n{log_tail(gateway_log)}") from None
            yield stack
        finally:
            stop_process(gateway)
    finally:
        stop_triton(stack.triton if stack else triton)  # restart_triton may have replaced it
