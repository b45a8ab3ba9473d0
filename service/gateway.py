"""The gRPC gateway: validates and encodes Colorize requests, runs them on Triton, answers.

``python -m service.gateway --triton-url 127.0.0.1:8001 --port 50051`` (flags or SKETCH2COLOR_*
environment variables, see `service.settings`). Serves sketch2color.v1.Colorizer, gRPC health
checking and server reflection; Prometheus metrics on their own port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import prometheus_client as prom
import uvloop

from contract import wire
from contract.hints import MODEL_SIZE
from service import imaging
from service.admission import Allocator, PixelBudget
from service.api import pb, pb_grpc
from service.batcher import UNCAPPED, Batcher
from service.imaging import Frame, RequestError, invalid
from service.inputs import (
    OUTPUT_FORMAT_NAMES,
    Opened,
    Undecodable,
    check_output_fields,
    encode_request,
    open_request,
)
from service.metrics import Metrics
from service.settings import GatewayConfig, config_from_args, setup_logging
from service.triton_pool import TritonPool, infer_request, the_output
from service.triton_state import TritonState
from service.variants import HINT_KINDS, VariantInfo, accepts, triton_error

log = logging.getLogger("sketch2color.gateway")

# Image work for a small request (~0.5 ms) runs on the event loop: handing it to a worker thread
# and back cost more CPU than the work itself (profiled at c=16 on 2 cores). Larger ones go to
# the thread pool, so the loop never stalls on a big decode or encode. "Small" is judged by the
# bytes (a header in a few kB is read at once) and then by the pixels the header promises and the
# hints: a 12 kB PNG can hold 40 megapixels.
DRAIN_SETTLE_S = 0.25  # after the last accepted call: calls in transit get the servicer's UNAVAILABLE
INLINE_MAX_BYTES = 64 << 10  # sketch + colour hint, as sent
INLINE_MAX_PIXELS = 256 * 256  # sketch + colour hint as decoded, and the answer at the sketch's size
INLINE_MAX_HINTS = 64
CANCEL_SLACK_S = 0.005  # a cancellation this close to the deadline is the deadline's
SWITCH_INTERVAL_S = 0.0005
NAME_SHOWN = 64  # characters of an unknown variant's name repeated in the error (metadata is bounded)


class Colorizer(pb_grpc.ColorizerServicer):
    def __init__(self, config: GatewayConfig, registry: prom.CollectorRegistry | None = None):
        self.config = config
        self.limits = config.limits
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="imaging")
        self.budget = PixelBudget(config.pixels_in_flight)
        self.allocator = Allocator()
        self.metrics = Metrics(registry or prom.CollectorRegistry())
        self.working = 0  # requests (and stream items) between admission and answer
        self.draining = False  # after SIGTERM: new work is refused with UNAVAILABLE
        self.triton = TritonPool(config.triton_url, self.metrics.registry)
        self.state = TritonState(self.triton)
        self.batcher = Batcher(
            self.triton_call,
            calls=self.calls_for,
            max_batch=self.max_batch,
            on_batch=lambda name, size: self.metrics.batch.labels(name).observe(size),
        )

    # ------------------------------------------------------------------ RPCs

    async def ListVariants(self, request, context):
        if not self.state.serving:
            await self.state.look()
        return pb.ListVariantsResponse(
            variants=[
                pb.Variant(
                    name=v.name,
                    description=v.description,
                    accepted_hints=HINT_KINDS[v.hint],
                    input_size=MODEL_SIZE,
                    version=v.version,
                    ready=v.ready,
                )
                for v in sorted(self.state.variants.values(), key=lambda v: v.name)
            ],
            default_variant=self.config.default_variant,
        )

    def calls_for(self, name: str) -> int:
        """Triton calls in flight allowed for a variant. On a CPU, no cap: each request goes at once
        and Triton's dynamic batcher forms each batch when an instance frees, from everything queued
        then; the gateway's batches, fixed when sent, split the load into halves that each waited
        (c=16 on 2 cores, one run each: 0.86 of direct Triton's throughput uncapped, 0.75 with two
        calls per instance), and sending each request alone cost the gateway no more CPU. On a GPU,
        two per instance: the forward pass is cheap there and per-call costs are what count."""
        v = self.state.variants.get(name)
        if self.config.triton_calls:
            per_triton = self.config.triton_calls
        elif v is not None and not v.gpu:
            return UNCAPPED  # as many as requests (max_in_flight bounds those)
        else:
            per_triton = 2 * (v.instances if v else 1)
        return per_triton * max(1, self.triton.ready_count)

    def max_batch(self, name: str) -> int:
        return self.state.variants[name].max_batch if name in self.state.variants else 1

    def variant_label(self, request) -> str:
        """The metrics label: a served variant's name, else "unknown" (a made-up name must not mint a series)."""
        if isinstance(request, Undecodable):
            return "unknown"
        name = request.variant or self.config.default_variant
        return name if name in self.state.variants else "unknown"

    async def Colorize(self, request, context):
        start = time.perf_counter()
        code, message = grpc.StatusCode.OK, ""
        self.metrics.in_flight.inc()
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        try:
            response = await self.colorize(request, remaining)
        except RequestError as e:
            code, message = e.code, e.message
        except asyncio.CancelledError:  # the caller went away, or its deadline passed mid-call
            code = cancelled_code(deadline)
            raise
        except Exception as e:  # a bug, not the caller's fault: say so with INTERNAL, not grpc's UNKNOWN
            log.exception("Colorize failed")
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}"
        finally:
            # Labelled after the work: a process's first call may arrive before it has seen what Triton serves.
            variant_label = self.variant_label(request)
            self.metrics.in_flight.dec()
            self.metrics.requests.labels("Colorize", variant_label, code.name).inc()
            self.metrics.latency.labels("Colorize", variant_label, code.name).observe(time.perf_counter() - start)
        if code is not grpc.StatusCode.OK:  # counted before the status leaves: a caller who reads /metrics sees it
            try:
                await context.abort(code, message)
            except grpc.aio.InternalError:  # the deadline passed meanwhile: grpc has ended the call itself
                raise asyncio.CancelledError from None
        return response

    async def ColorizeStream(self, request_iterator, context):
        results: asyncio.Queue = asyncio.Queue()
        gate = asyncio.Semaphore(self.config.stream_concurrency)

        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining

        async def one(index: int, request) -> None:
            code = grpc.StatusCode.OK
            try:
                response = await self.colorize(request, context.time_remaining())
                item = pb.ColorizeStreamResponse(request_id=request.request_id, index=index, response=response)
            except asyncio.CancelledError:  # the stream ended (cancelled, its deadline passed): no answer is read
                code = cancelled_code(deadline)
                raise
            except Exception as e:  # every item gets its answer, or the stream would never end
                if not isinstance(e, RequestError):
                    log.exception("ColorizeStream item %d failed", index)
                    e = RequestError(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
                code = e.code
                error = pb.Error(code=e.code.value[0], message=e.message)
                item = pb.ColorizeStreamResponse(request_id=request.request_id, index=index, error=error)
            finally:
                self.metrics.in_flight.dec()
                self.metrics.requests.labels("ColorizeStream", self.variant_label(request), code.name).inc()
            await results.put(item)

        tasks: list[asyncio.Task] = []

        async def read() -> int:
            async for request in request_iterator:
                await gate.acquire()
                self.metrics.in_flight.inc()
                tasks.append(asyncio.create_task(one(len(tasks), request)))
            await asyncio.gather(*tasks)
            await results.put(None)
            return len(tasks)

        reader = asyncio.create_task(read())
        try:
            while (item := await results.get()) is not None:
                yield item
                # An item's slot frees once its answer is handed to grpc, not when it is computed: a client
                # that sends but does not read holds at most stream_concurrency answers in the gateway.
                gate.release()
            await reader
        finally:
            # A stream that ends early (the caller cancelled, its deadline passed) stops its items' work.
            reader.cancel()
            for task in tasks:
                task.cancel()

    # ------------------------------------------------------------------ the work

    async def colorize(self, request, time_remaining: float | None) -> pb.ColorizeResponse:
        if self.draining:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down: retry (elsewhere)")
        limit = self.config.max_in_flight
        if limit and self.working >= limit:  # refuse at once: a queue past this only grows until deadlines expire
            message = f"the gateway is at its limit of {limit} requests in flight: retry with backoff"
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        self.working += 1
        try:
            return await self._colorize(request, time_remaining)
        finally:
            self.working -= 1

    async def _colorize(self, request, time_remaining: float | None) -> pb.ColorizeResponse:
        t0 = time.perf_counter()
        if isinstance(request, Undecodable):
            raise invalid(request.message)
        if time_remaining is not None and time_remaining <= 0:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the request was read")
        if not self.state.serving:
            await self.state.look()
        variant = self.resolve_variant(request)
        loop = asyncio.get_running_loop()
        if len(request.sketch) + len(request.color_hint) <= INLINE_MAX_BYTES:  # small: a thread hop costs more
            opened = open_request(request, self.limits)
        else:
            opened = await loop.run_in_executor(self.pool, open_request, request, self.limits)
        if opened.pixels <= INLINE_MAX_PIXELS:
            inline = len(request.sketch) + len(request.color_hint) <= INLINE_MAX_BYTES
            return await self._work(
                request, variant, opened, t0, time_remaining, inline=inline and len(request.hints) <= INLINE_MAX_HINTS
            )
        try:
            async with self.budget.hold(opened.pixels):
                return await self._work(request, variant, opened, t0, time_remaining, inline=False)
        finally:
            self.pool.submit(self.allocator.trim)  # a large request's freed blocks back to the system

    async def _work(
        self, request, variant: VariantInfo, opened: Opened, t0: float, time_remaining: float | None, inline: bool
    ) -> pb.ColorizeResponse:
        loop = asyncio.get_running_loop()
        if inline:
            encoded, frame, sketch = self.prepare(request, variant, opened)
        else:
            encoded, frame, sketch = await loop.run_in_executor(self.pool, self.prepare, request, variant, opened)
        self.metrics.image_pixels.observe(frame.width * frame.height)
        t1 = time.perf_counter()
        output = await self.infer(variant, encoded, None if time_remaining is None else time_remaining - (t1 - t0))
        t2 = time.perf_counter()
        if request.output_size == pb.OUTPUT_SIZE_MODEL or frame.width * frame.height <= INLINE_MAX_PIXELS:
            image, mime, width, height = self.finish(request, output, frame, sketch)
        else:
            image, mime, width, height = await loop.run_in_executor(
                self.pool, self.finish, request, output, frame, sketch
            )
        t3 = time.perf_counter()
        limit = (self.config.max_message_mb << 20) - 4096  # room for the response's other fields
        if len(image) > limit:  # grpc would fail the send after the fact, and the call would look like an OK
            size, cap = len(image) / 2**20, self.config.max_message_mb
            message = f"the {width}x{height} {mime} answer is {size:.1f} MB, over the {cap} MB message limit"
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, message + ": ask for JPEG or OUTPUT_SIZE_MODEL")
        self.metrics.stage.labels("triton", variant.name).observe(t2 - t1)
        self.metrics.stage.labels("gateway", variant.name).observe((t1 - t0) + (t3 - t2))
        return pb.ColorizeResponse(
            image=image,
            mime_type=mime,
            width=width,
            height=height,
            variant=variant.name,
            model_version=variant.version,
            timings=pb.Timings(
                decode_ms=1e3 * (t1 - t0),
                triton_ms=1e3 * (t2 - t1),
                encode_ms=1e3 * (t3 - t2),
                total_ms=1e3 * (t3 - t0),
            ),
        )

    def resolve_variant(self, request) -> VariantInfo:
        if not request.sketch and not request.variant and not request.hints and not request.color_hint:
            raise invalid("empty request: set at least `sketch` (PNG, JPEG or WebP bytes)")
        check_output_fields(request)
        if not self.state.serving:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, f"Triton at {self.config.triton_url} is not ready")
        name = request.variant or self.config.default_variant
        variant = self.state.variants.get(name)
        if variant is None:
            known = ", ".join(sorted(self.state.variants)) or "none"
            shown = repr(name) if len(name) <= NAME_SHOWN else f"{name[:NAME_SHOWN]!r}... ({len(name)} characters)"
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"unknown variant {shown}; available: {known}")
        accepted = HINT_KINDS[variant.hint]
        if request.hints and pb.HINT_KIND_POINTS not in accepted:
            raise invalid(
                f"variant {name!r} takes no point hints ({accepts(variant)}); use one that does, e.g. 'guided'"
            )
        if request.color_hint and pb.HINT_KIND_COLOR_IMAGE not in accepted:
            raise invalid(f"variant {name!r} takes no colour-hint image ({accepts(variant)})")
        if variant.hint.needs_color_image and not request.color_hint:
            raise invalid(f"variant {name!r} needs `color_hint`: a rough colour image of the sketch")
        return variant

    def prepare(self, request, variant: VariantInfo, opened: Opened) -> tuple[dict[str, np.ndarray], Frame, np.ndarray]:
        return encode_request(request, variant.hint, self.limits, opened)

    async def infer(
        self, variant: VariantInfo, inputs: dict[str, np.ndarray], time_remaining: float | None
    ) -> np.ndarray:
        """One request through Triton, batched with those that arrive with it: -> (128, 128, 3) uint8 RGB."""
        if time_remaining is not None and time_remaining <= 0:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before inference")
        bound = self.config.triton_timeout_s
        if time_remaining is not None or not bound:
            return await self.batcher.submit(variant.name, inputs, time_remaining)
        try:  # the caller set no deadline: the gateway's own bound, so a frozen Triton cannot hold calls forever
            return await self.batcher.submit(variant.name, inputs, bound)
        except RequestError as e:
            if e.code is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            message = f"Triton did not answer within {bound:g} s (the gateway's --triton-timeout-s): retry"
            raise RequestError(grpc.StatusCode.UNAVAILABLE, message) from None

    async def triton_call(self, name: str, batch: dict[str, np.ndarray], timeout: float | None) -> np.ndarray:
        """One Triton call with a batch of wire inputs (B, ...) -> images (B, 128, 128, 3) uint8."""
        try:
            response = await self.triton.infer(infer_request(name, batch, wire.IMAGE), timeout)
        except grpc.RpcError as e:
            raise triton_error(e, name) from None
        return the_output(response)  # its dtype and dims were checked against contract.wire at discovery

    def finish(self, request, color: np.ndarray, frame: Frame, sketch: np.ndarray) -> tuple[bytes, str, int, int]:
        """Model output (128, 128, 3) uint8 -> encoded image, at model size or at the sketch's own with crisp lines."""
        if request.output_size == pb.OUTPUT_SIZE_MODEL:
            out = color
        else:
            out = imaging.reapply_lines(frame.from_grid(color), sketch)
        data, mime = imaging.encode_image(np.ascontiguousarray(out), OUTPUT_FORMAT_NAMES[request.output_format])
        return data, mime, out.shape[1], out.shape[0]


def cancelled_code(deadline: float | None) -> grpc.StatusCode:
    """Why a call's work was cancelled: its deadline passed (grpc cancels the handler at the deadline,
    a hair before or after the clock reaches it), or the caller went away."""
    if deadline is not None and time.monotonic() >= deadline - CANCEL_SLACK_S:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def main(argv: list[str] | None = None) -> None:
    config = config_from_args(argv)
    setup_logging(config.log_level)
    log.debug("config %s", json.dumps(config.__dict__))
    if config.processes > 1:
        from service.processes import supervise

        raise SystemExit(supervise(config))
    # uvloop: the gateway's CPU per request is mostly the event loop and gRPC, not its own work
    # (c=16, 2 cores: 1.8 vs 2.0 CPU ms per request; 0.91 vs 0.86 of direct Triton's throughput).
    # A worker thread decoding or encoding a large image takes the GIL back between its C calls;
    # the loop then waits up to a switch interval for each of the several acquisitions a health
    # check needs. 0.5 ms instead of 5 ms cut the parallel health check's worst case under 40-Mpx
    # requests by about a third (results/reliability/report.md).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    from service.server import serve  # the server module builds on this one

    uvloop.run(serve(config))


if __name__ == "__main__":
    main()
