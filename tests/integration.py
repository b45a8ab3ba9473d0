"""Real processes for integration tests: Triton (the pytriton wheel's binary) and the gateway."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import triton_local
from service.triton_local import TritonPorts

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"


@dataclass
class Stack:
    triton: subprocess.Popen
    ports: TritonPorts
    gateway: subprocess.Popen
    address: str
    metrics_port: int
    repository: Path
    triton_log: Path

    def restart_triton(self) -> None:
        self.triton, _ = triton_local.start_triton(self.repository, self.ports, log_path=self.triton_log)
        triton_local.wait_ready(self.ports, self.triton, timeout=180)

    def stop(self) -> int:
        """SIGTERM the gateway (it drains and exits) and stop Triton; returns the gateway's exit code."""
        self.gateway.terminate()
        try:
            code = self.gateway.wait(30)
        except subprocess.TimeoutExpired:
            self.gateway.kill()
            code = self.gateway.wait()
        triton_local.stop_triton(self.triton)
        return code


def health_status(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def wait_for_health(address: str, want: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = health_status(address)
            if last == want:
                return
        except grpc.RpcError as e:
            last = e.code()
        time.sleep(0.2)
    raise TimeoutError(f"gateway health stayed {last}, wanted {want}")


def start_stack(repository: Path, log_dir: Path) -> Stack:
    triton_log = log_dir / "triton.log"
    triton, ports = triton_local.start_triton(repository, log_path=triton_log)
    try:
        triton_local.wait_ready(ports, triton, timeout=180)
    except Exception:
        triton_local.stop_triton(triton)
        raise
    port, metrics_port = triton_local.free_port(), triton_local.free_port()
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.gateway",
            "--triton-url",
            ports.grpc_url,
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--health-interval-s",
            "0.3",
            "--max-message-mb",
            "8",
            "--max-pixels",
            "25000000",
        ],  # fmt: skip
        cwd=ROOT,
        stdout=open(log_dir / "gateway.log", "ab"),
        stderr=subprocess.STDOUT,
    )
    stack = Stack(triton, ports, gateway, f"127.0.0.1:{port}", metrics_port, repository, triton_log)
    try:
        wait_for_health(stack.address, health_pb2.HealthCheckResponse.SERVING)
    except Exception:
        stack.stop()
        raise
    return stack
