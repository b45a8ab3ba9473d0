"""Several Tritons behind one gateway (service/triton_pool.py): spreading, skipping, coming back."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import prometheus_client as prom
import pytest

from service import triton_local
from service.api import pb_grpc
from service.triton_pool import Endpoint, TritonPool

from .integration import REPOSITORY, ROOT, gateway_command
from .test_gateway import request_for


def pool_with(*states: tuple[str, bool, int]) -> TritonPool:
    pool = TritonPool(",".join(s[0] for s in states), prom.CollectorRegistry())
    for url, ready, in_flight in states:
        pool.endpoints[url] = Endpoint(url, stub=None, ready=ready, in_flight=in_flight)
    return pool


def test_a_request_goes_to_the_ready_endpoint_with_the_fewest_in_flight_and_ties_take_turns():
    pool = pool_with(("a:1", True, 3), ("b:1", True, 1), ("c:1", False, 0))
    assert pool.pick().url == "b:1"  # c has nothing in flight but is not ready
    pool.endpoints["a:1"].in_flight = 1
    assert {pool.pick().url for _ in range(4)} == {"a:1", "b:1"}
    assert pool.pick(exclude={"a:1", "b:1"}) is None


def test_the_spec_names_a_list_or_a_dns_name_resolved_to_every_address():
    async def resolve(spec: str) -> list[str]:
        return await TritonPool(spec, prom.CollectorRegistry()).resolve()

    assert asyncio.run(resolve("a:8001, b:8001")) == ["a:8001", "b:8001"]
    assert "127.0.0.1:8001" in asyncio.run(resolve("dns:///localhost:8001"))


def triton_requests(metrics_port: int) -> dict[str, int]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    pattern = r'sketch2color_triton_requests_total\{endpoint="([^"]+)",outcome="ok"\} ([0-9.]+)'
    return {url: int(float(n)) for url, n in re.findall(pattern, text)}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_two_tritons_share_the_load_one_stopped_mid_load_costs_at_most_its_calls_in_flight_and_comes_back(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPOSITORY / "guided", repo / "guided", ignore=shutil.ignore_patterns("__pycache__"))
    tritons = [triton_local.start_triton(repo, log_path=tmp_path / f"triton{i}.log") for i in range(2)]
    gateway = None
    try:
        for proc, ports in tritons:
            triton_local.wait_ready(ports, proc, timeout=300)
        port, metrics_port = triton_local.free_port(), triton_local.free_port()
        urls = [ports.grpc_url for _, ports in tritons]
        cmd = gateway_command(",".join(urls), port, "--health-interval-s", "0.3", metrics_port=metrics_port)
        gateway = subprocess.Popen(cmd, cwd=ROOT, stdout=open(tmp_path / "gateway.log", "wb"), stderr=subprocess.STDOUT)
        triton_local.wait_serving(f"127.0.0.1:{port}", gateway, timeout=60)
        request = request_for("guided", 3)[0]

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, ThreadPoolExecutor(4) as callers:
            stub = pb_grpc.ColorizerStub(channel)

            def call(_) -> str:
                try:
                    stub.Colorize(request, timeout=60)
                    return "OK"
                except grpc.RpcError as e:
                    return f"{e.code().name}: {e.details()}"

            assert set(callers.map(call, range(48))) == {"OK"}
            spread = triton_requests(metrics_port)
            # Both take a share; not half each: the one that answers faster frees its slots sooner and
            # so gets more (on this busy 2-core machine the split was 37/11).
            assert min(spread.get(u, 0) for u in urls) >= 6, spread

            # Stop one mid-load: at most the calls in flight on it (4 callers) may fail.
            results = callers.map(call, range(120))
            time.sleep(1.0)
            triton_local.stop_triton(tritons[1][0])
            outcomes = list(results)
            failed = [o for o in outcomes if o != "OK"]
            assert len(failed) <= 4 and all(f.startswith("UNAVAILABLE") for f in failed), failed

            # Back on the same ports: it takes traffic again without touching the gateway.
            before = triton_requests(metrics_port).get(urls[1], 0)
            tritons[1] = triton_local.start_triton(repo, tritons[1][1], tmp_path / "triton1b.log")
            triton_local.wait_ready(tritons[1][1], tritons[1][0], timeout=300)
            time.sleep(1.0)  # one health poll
            assert set(callers.map(call, range(48))) == {"OK"}
            assert triton_requests(metrics_port).get(urls[1], 0) >= before + 6
        assert gateway.poll() is None
    finally:
        if gateway is not None:
            triton_local.stop_process(gateway)
        for proc, _ in tritons:
            triton_local.stop_triton(proc)


def test_free_ports_never_hands_out_a_port_twice_even_when_the_kernel_offers_it_again(monkeypatch):
    """Ports picked one at a time for one gateway (gRPC, then metrics) once came out equal."""
    from service import triton_local

    offers = iter([41000, 41000, 41001, 41000, 41002, 41003, 41004])

    class Socket:  # the kernel offers a port again once the socket that held it is closed
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            self.port = next(offers)

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(triton_local.socket, "socket", Socket)
    monkeypatch.setattr(triton_local, "_HANDED_OUT", set())
    picks = [triton_local.free_port(), triton_local.free_port()]
    ports = triton_local.free_ports()
    assert picks == [41000, 41001]
    assert (ports.http, ports.grpc, ports.metrics) == (41002, 41003, 41004)
