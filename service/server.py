"""The gateway's gRPC server: the Colorizer with request parsing that cannot fail, health checking
and reflection, TLS and tokens, metrics; run until SIGTERM, then drained. `python -m
service.gateway` starts it (`service.gateway.main`)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time

import grpc
import prometheus_client as prom
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service import security
from service.api import SERVICE_NAME, pb
from service.gateway import DRAIN_SETTLE_S, Colorizer
from service.inputs import LenientParsing, colorize_parser, lenient
from service.settings import GatewayConfig

log = logging.getLogger("sketch2color.gateway")


def add_colorizer(servicer: Colorizer, server) -> None:
    """The generated add_ColorizerServicer_to_server, with request parsing that cannot fail."""
    handlers = {
        "Colorize": grpc.unary_unary_rpc_method_handler(
            servicer.Colorize,
            request_deserializer=colorize_parser(servicer.limits.max_hints),
            response_serializer=pb.ColorizeResponse.SerializeToString,
        ),
        "ColorizeStream": grpc.stream_stream_rpc_method_handler(
            servicer.ColorizeStream,
            request_deserializer=colorize_parser(servicer.limits.max_hints),
            response_serializer=pb.ColorizeStreamResponse.SerializeToString,
        ),
        "ListVariants": grpc.unary_unary_rpc_method_handler(
            servicer.ListVariants,
            request_deserializer=lenient(pb.ListVariantsRequest.FromString, "sketch2color.v1.ListVariantsRequest"),
            response_serializer=pb.ListVariantsResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


async def serve(config: GatewayConfig, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT (or `stop`), then drain in-flight calls and exit."""
    registry = prom.CollectorRegistry()
    servicer = Colorizer(config, registry)
    max_bytes = config.max_message_mb << 20
    try:
        tokens = security.read_tokens(config.auth_tokens_file, config.auth_tokens)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    exempt = security.exempt_services(config.auth_exempt)
    interceptors = [LenientParsing({SERVICE_NAME})]  # the stock health and reflection servicers' requests
    if tokens:
        interceptors.insert(0, security.BearerTokenAuth(tokens, exempt))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 1),  # the default on Linux; --processes N relies on it
            # Clients balancing over a headless Service re-resolve its name when a connection
            # ends: closing each after a minute (calls in flight still finish) lets them find the
            # pods an autoscaler added.
            ("grpc.max_connection_age_ms", 60_000),
        ],
    )
    add_colorizer(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(servicer.state.health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    address = f"{config.host}:{config.port}"
    if config.tls_cert:
        port = server.add_secure_port(
            address, security.server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        )
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise SystemExit(f"cannot listen on {address}")
    if config.metrics_port:
        prom.start_http_server(config.metrics_port, addr=config.host, registry=registry)
    await servicer.state.refresh()
    await server.start()
    # What start-up made (modules, descriptors, the servicer) lives until exit: out of the cyclic
    # collector, so a full collection, run on the event loop, walks only what requests leave.
    gc.freeze()
    watcher = asyncio.create_task(servicer.state.watch(config.health_interval_s))
    log.info(
        "gateway on %s (%s) -> Triton %s (%s); metrics on :%s",
        address,
        security.describe(config.tls_cert, config.tls_client_ca, tokens, exempt),
        config.triton_url,
        "serving" if servicer.state.serving else "waiting for Triton",
        config.metrics_port or "-",
    )

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("draining (up to %.0f s)", config.shutdown_grace_s)
    watcher.cancel()
    await servicer.state.health.enter_graceful_shutdown()
    # The server keeps running while what it accepted finishes, and refuses new work itself with
    # UNAVAILABLE: a call that grpc has taken in but the servicer not yet started would be answered
    # CANCELLED by server.stop, and a client cannot tell that from its own cancellation.
    servicer.draining = True
    deadline = time.monotonic() + config.shutdown_grace_s
    while servicer.working and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(DRAIN_SETTLE_S)
    await server.stop(max(deadline - time.monotonic(), 0.1))
    await servicer.triton.close()
    servicer.pool.shutdown(wait=False)
    log.info("stopped")
