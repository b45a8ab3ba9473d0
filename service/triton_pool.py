"""The Tritons behind one gateway, balanced per request and skipped while they are down.

``--triton-url`` is one endpoint (``host:8001``), a list (``a:8001,b:8001``), or a DNS name that
resolves to many (``dns:///triton-headless:8001``, re-resolved at every health poll: a Kubernetes
headless Service lists one address per ready pod). Each request goes to the ready endpoint with
the fewest requests in flight. Per request, not per connection: grpc's own ``round_robin`` would
also spread load, but it cannot tell a Triton that is up but not ready (models still loading),
and a long-lived channel pins to whatever resolved at its start.

An endpoint that fails a call with a connection error is marked down at once, so the calls after
it go elsewhere, and the failed call is tried once more on another ready endpoint (inference has
no side effects). The health poll marks it ready again when Triton says so.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from dataclasses import dataclass

import grpc
import numpy as np
import prometheus_client as prom
from tritonclient.grpc import service_pb2, service_pb2_grpc

log = logging.getLogger("sketch2color.triton_pool")
MAX_BACKOFF_MS = 1000
CHANNEL_ARGS = [
    ("grpc.initial_reconnect_backoff_ms", 200),  # reconnect quickly when a Triton comes back
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", MAX_BACKOFF_MS),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]
# Until an endpoint has once been seen ready, its readiness check waits this long for a channel
# in reconnect backoff (over the longest backoff plus grpc's 20 % jitter): without the wait, a
# gateway that started before Triton says "not ready" until its channel's next try, up to a
# backoff after Triton is up. Once seen ready, a check fails at once, so that calls during an
# outage get UNAVAILABLE without delay.
READY_WAIT_S = 2.0
assert READY_WAIT_S > 1.2 * MAX_BACKOFF_MS / 1000


def infer_request(model: str, tensors: dict[str, np.ndarray], output: str) -> service_pb2.ModelInferRequest:
    """A Triton inference request: uint8 tensors by name (batch axis included), one output asked for."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, array in tensors.items():
        request.inputs.add(name=name, datatype="UINT8", shape=array.shape)
        request.raw_input_contents.append(array.tobytes())
    request.outputs.add(name=output)
    return request


def the_output(response: service_pb2.ModelInferResponse) -> np.ndarray:
    """The one uint8 output an `infer_request` asked for (read-only, no copy)."""
    return np.frombuffer(response.raw_output_contents[0], np.uint8).reshape(response.outputs[0].shape)


def endpoint_failed(e: grpc.RpcError) -> bool:
    """The endpoint, not the request, failed: another Triton may well answer. A stopping Triton first
    answers UNAVAILABLE ("Server is stopping"), then NOT_FOUND for every model it has unloaded;
    a dead one fails to connect."""
    message = (e.details() or "").lower()
    return e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND) or "connect" in message


def unavailable(details: str) -> grpc.aio.AioRpcError:
    """The error a Triton call ends with when no endpoint can take it: what a dead one would answer."""
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@dataclass
class Endpoint:
    """One Triton. Calls go through grpc's generated stub, not tritonclient: its request and result
    objects cost the gateway ~0.05 CPU ms per call, and the wire is a few uint8 tensors."""

    url: str
    stub: service_pb2_grpc.GRPCInferenceServiceStub | None
    channel: grpc.aio.Channel | None = None
    ready: bool = False
    in_flight: int = 0
    judged: int = 0  # the number of the newest look that set `ready`: an older, slower one must not undo it
    seen_ready: bool = False


class TritonPool:
    def __init__(self, spec: str, registry: prom.CollectorRegistry):
        self.spec = spec.strip()
        self.endpoints: dict[str, Endpoint] = {}
        self._tiebreak = itertools.count()
        self._looks = itertools.count(1)
        self.calls = prom.Counter(
            "sketch2color_triton_requests",
            "Inference calls per Triton endpoint",
            ("endpoint", "outcome"),
            registry=registry,
        )
        self.up = prom.Gauge(
            "sketch2color_triton_up",
            "Whether a Triton endpoint is ready (1) or not (0)",
            ("endpoint",),
            registry=registry,
            multiprocess_mode="livemax",
        )

    def __str__(self) -> str:
        return self.spec

    async def resolve(self) -> list[str]:
        """The endpoint URLs the spec names now."""
        if not self.spec.startswith("dns:"):
            return [u.strip() for u in self.spec.split(",") if u.strip()]
        target = self.spec.split(":", 1)[1].lstrip("/")
        host, _, port = target.rpartition(":")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError as e:
            log.warning("cannot resolve %s: %s", host, e)
            return list(self.endpoints)  # keep what we had; the health poll judges them
        return sorted({f"[{i[4][0]}]:{port}" if ":" in i[4][0] else f"{i[4][0]}:{port}" for i in infos})

    async def refresh(self) -> list[Endpoint]:
        """Re-resolve, check every endpoint's readiness at once; the ready ones, in a stable order."""
        urls = await self.resolve()
        for url in set(self.endpoints) - set(urls):
            gone = self.endpoints.pop(url)
            self.up.remove(url)
            await gone.channel.close()
        for url in urls:
            if url not in self.endpoints:
                channel = grpc.aio.insecure_channel(url, options=CHANNEL_ARGS)
                self.endpoints[url] = Endpoint(url, service_pb2_grpc.GRPCInferenceServiceStub(channel), channel)
        await asyncio.gather(*(self._check(ep) for ep in self.endpoints.values()))
        return [ep for ep in self.endpoints.values() if ep.ready]

    async def _check(self, ep: Endpoint) -> None:
        number = next(self._looks)
        try:
            # wait_for_ready: see READY_WAIT_S.
            answer = await ep.stub.ServerReady(
                service_pb2.ServerReadyRequest(), timeout=READY_WAIT_S, wait_for_ready=not ep.seen_ready
            )
            ready = bool(answer.ready)
        except grpc.RpcError:
            ready = False
        if number < ep.judged:
            return
        ep.judged = number
        ep.seen_ready = ep.seen_ready or ready
        if ready != ep.ready:
            log.info("Triton %s %s", ep.url, "ready" if ready else "not ready")
        ep.ready = ready
        self.up.labels(ep.url).set(int(ready))

    @property
    def ready_count(self) -> int:
        return sum(ep.ready for ep in self.endpoints.values())

    def pick(self, exclude: set[str] = frozenset()) -> Endpoint | None:
        ready = [ep for ep in self.endpoints.values() if ep.ready and ep.url not in exclude]
        if not ready:
            return None
        least = min(ep.in_flight for ep in ready)
        candidates = [ep for ep in ready if ep.in_flight == least]
        return candidates[next(self._tiebreak) % len(candidates)]

    async def infer(
        self, request: service_pb2.ModelInferRequest, timeout: float | None
    ) -> service_pb2.ModelInferResponse:
        """One inference on a ready endpoint; a connection failure marks it down and tries another.
        Raises grpc.RpcError: Triton's, or UNAVAILABLE when no endpoint is ready."""
        tried: set[str] = set()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            ep = self.pick(tried)
            if ep is None:
                raise unavailable(f"no ready Triton among {self.spec}")
            tried.add(ep.url)
            ep.in_flight += 1
            try:
                remaining = None if deadline is None else max(0.001, deadline - loop.time())
                result = await ep.stub.ModelInfer(request, timeout=remaining)
            except grpc.RpcError as e:
                self.calls.labels(ep.url, "error").inc()
                if not endpoint_failed(e):
                    raise
                ep.ready, ep.judged = False, next(self._looks)
                self.up.labels(ep.url).set(0)
                log.warning("Triton %s failed (%s); skipping it until it is ready again", ep.url, e.details())
                if self.pick(tried) is None:
                    raise
                continue
            finally:
                ep.in_flight -= 1
            self.calls.labels(ep.url, "ok").inc()
            return result

    async def close(self) -> None:
        await asyncio.gather(*(ep.channel.close() for ep in self.endpoints.values() if ep.channel is not None))
