"""Helpers for integration tests that run real Triton and gateway processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"
# Small limits and a fast health poll, so that the tests of those paths stay quick.
GATEWAY_ARGS = ("--health-interval-s", "0.3", "--max-message-mb", "8", "--max-pixels", "25000000")


def gateway_command(triton_url: str, port: int, *args: str, metrics_port: int = 0) -> list[str]:
    """`python -m service.gateway` in front of `triton_url` on `port`, with `args` after."""
    cmd = [sys.executable, "-m", "service.gateway", "--triton-url", triton_url, "--port", str(port)]
    return cmd + ["--metrics-port", str(metrics_port), *args]


def health_status(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status


def wait_for_health(address: str, want: int, timeout: float = 60.0) -> None:
    """Until the gateway's health is `want` (SERVING or NOT_SERVING)."""
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
