"""How the gateway judges Triton's health (no Triton: the pool's answers are scripted): a slow poll
must not undo a newer one, and a call that finds the gateway not serving asks Triton again first."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import grpc
import prometheus_client as prom
import pytest

from contract.hints import HintKind
from service import gateway, triton_state
from service.api import pb
from service.imaging import RequestError
from service.settings import GatewayConfig
from service.triton_local import free_port
from service.triton_pool import READY_WAIT_S, Endpoint, TritonPool
from service.variants import VariantInfo

VARIANTS = {"unet_l1": VariantInfo("unet_l1", HintKind.NONE, "", "1")}


class ScriptedPool:
    """`refresh()` answers from a queue of (ready?, gate): a gate holds that answer until it is set."""

    def __init__(self, *answers: tuple[bool, asyncio.Event | None]):
        self.answers, self.refreshes, self.ready_count = list(answers), 0, 1

    async def refresh(self):
        self.refreshes += 1
        ready, gate = self.answers.pop(0)
        if gate is not None:
            await gate.wait()
        return [Endpoint("t:1", stub=None, ready=True)] if ready else []


@pytest.fixture
def colorizer(monkeypatch):
    async def discover(client):
        return dict(VARIANTS)

    monkeypatch.setattr(triton_state, "discover", discover)
    c = gateway.Colorizer(GatewayConfig())
    yield c
    c.pool.shutdown()


def test_a_slow_failed_poll_that_ends_after_a_newer_good_one_leaves_the_gateway_serving(colorizer):
    async def main():
        slow = asyncio.Event()
        colorizer.state.pool = ScriptedPool((False, slow), (True, None))
        stale = asyncio.create_task(colorizer.state.refresh())  # e.g. timed out under load, answers late
        await asyncio.sleep(0)
        assert await colorizer.state.refresh() is True
        slow.set()
        await stale
        return colorizer.state.serving

    assert asyncio.run(main()) is True


def test_a_call_that_finds_the_gateway_not_serving_asks_triton_once_for_all_who_arrive_together(colorizer):
    request = pb.ColorizeRequest(sketch=b"x", variant="no_such_variant")

    async def main():
        colorizer.state.pool = ScriptedPool((True, None), (False, None), (True, None))
        await colorizer.state.refresh()
        assert await colorizer.state.refresh() is False  # served once, then a poll failed; Triton is ready now
        codes = []
        for outcome in await asyncio.gather(
            *(colorizer.colorize(request, None) for _ in range(3)), return_exceptions=True
        ):
            assert isinstance(outcome, RequestError), outcome
            codes.append(outcome.code)
        return codes, colorizer.state.pool.refreshes

    codes, refreshes = asyncio.run(main())
    # NOT_FOUND, not UNAVAILABLE: the calls got past "is Triton ready" to the variant lookup.
    assert codes == [grpc.StatusCode.NOT_FOUND] * 3 and refreshes == 3


class SlowStub:
    """A Triton stub whose ServerReady answers (ready?, after seconds) from a list."""

    def __init__(self, answers: list[tuple[bool, float]]):
        self.answers = answers

    async def ServerReady(self, request, timeout, wait_for_ready):
        ready, delay = self.answers.pop(0)
        await asyncio.sleep(delay)
        return SimpleNamespace(ready=ready)


def test_an_endpoint_check_that_ends_after_a_newer_one_does_not_undo_it():
    async def main():
        pool = TritonPool("t:1", prom.CollectorRegistry())
        ep = pool.endpoints["t:1"] = Endpoint("t:1", stub=SlowStub([(False, 0.2), (True, 0.0)]))
        slow = asyncio.create_task(pool._check(ep))
        await asyncio.sleep(0.01)
        await pool._check(ep)
        await slow
        return ep.ready

    assert asyncio.run(main()) is True


def test_a_triton_that_comes_up_after_the_gateway_is_seen_at_once_and_one_that_goes_away_too():
    """A real gRPC server that answers ServerReady stands in for Triton (the channel is what is tested)."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    class Ready(service_pb2_grpc.GRPCInferenceServiceServicer):
        async def ServerReady(self, request, context):
            return service_pb2.ServerReadyResponse(ready=True)

    async def main():
        port = free_port()
        pool = TritonPool(f"127.0.0.1:{port}", prom.CollectorRegistry())
        for _ in range(4):  # nothing listens yet: the channel's reconnect backoff grows to its maximum
            assert await pool.refresh() == []
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Ready(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        t0 = time.monotonic()
        ready = [ep.url for ep in await pool.refresh()]
        up_s = time.monotonic() - t0
        await server.stop(None)
        t0 = time.monotonic()
        after = await pool.refresh()
        return ready, up_s, after, time.monotonic() - t0

    ready, up_s, after, down_s = asyncio.run(main())
    assert len(ready) == 1 and up_s < READY_WAIT_S, (ready, up_s)
    # Once seen ready, a Triton that goes away is judged at once: calls during an outage fail fast.
    assert after == [] and down_s < READY_WAIT_S / 4, down_s
