"""What the gateway knows of its Tritons: whether they serve, which variants they hold, and the
health status it reports for them. Kept current by a poll every `--health-interval-s`, and asked
again at once by a call that finds the gateway not serving."""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2

from service.api import SERVICE_NAME
from service.triton_pool import TritonPool
from service.variants import VariantInfo, discover

log = logging.getLogger("sketch2color.gateway")
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class TritonState:
    def __init__(self, pool: TritonPool):
        self.pool = pool
        self.health = health.aio.HealthServicer()  # what grpc.health.v1 answers, for "" and the Colorizer
        self.variants: dict[str, VariantInfo] = {}
        self.serving = False
        self._look: asyncio.Future | None = None
        self._refreshes = 0  # refreshes started; one that ends after a later one started must not undo it
        self._applied = 0

    async def refresh(self) -> bool:
        """Ask the Tritons whether they are ready and which variants they hold; update health. Never raises."""
        self._refreshes += 1
        number = self._refreshes
        try:
            ready_endpoints = await self.pool.refresh()
            ready, variants = bool(ready_endpoints), {}
            if ready:  # every Triton serves the same model repository: ask one of them what it holds
                variants = await discover(ready_endpoints[0].stub)
        except (grpc.RpcError, KeyError, ValueError) as e:
            log.debug("Triton not ready: %s", e)
            ready, variants = False, {}
        if number < self._applied:  # a slow answer (a timeout under load) from before a newer one: stale
            return self.serving
        self._applied = number
        serving = bool(ready and variants)
        if serving:
            self.variants = variants
        else:
            for v in self.variants.values():
                v.ready = False
        if serving != self.serving:
            log.info("Triton %s: %s", "ready" if serving else "unavailable", ", ".join(sorted(variants)) or "-")
            self.serving = serving
        status = SERVING if serving else NOT_SERVING
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)
        return serving

    async def look(self) -> None:
        """A call that finds this process not serving asks Triton itself (one question shared by the
        calls that arrive together; it waits out a reconnect backoff, see triton_pool.READY_WAIT_S)
        before it answers UNAVAILABLE, instead of trusting the last poll: with --processes N a
        process's first poll may not yet have seen what another's did, and on a loaded machine one
        poll can time out while Triton is fine."""
        if self._look is None or self._look.done():
            self._look = asyncio.ensure_future(self.refresh())
        await asyncio.shield(self._look)

    async def watch(self, interval_s: float) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(interval_s)
