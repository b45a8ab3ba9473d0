"""A Locust User for gRPC services, the way Locust's own gRPC example does it.

A client interceptor times every call on the user's channel and fires ``events.request`` with
its name (the RPC's full method, or what `GrpcUser.request_name` makes of it), response time,
response size and exception, so gRPC calls show up in Locust's statistics like HTTP requests do.
grpc is patched to cooperate with gevent, which Locust runs its users on.

Subclasses declare ``host`` ("127.0.0.1:50051") and ``stub_class``, and use ``self.stub``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User
from locust.env import Environment
from locust.exception import LocustError

from benchmarks.workload import CHANNEL_OPTIONS

# grpc runs its own threads and event loop; make it yield to gevent instead of blocking it.
grpc_gevent.init_gevent()


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Fires one ``events.request`` per call: unary calls when they complete, streams when drained."""

    def __init__(self, environment: Environment, name: Callable[[str, Any], str]):
        self.env = environment
        self.name = name

    def _fire(self, name: str, start: float, length: int, exception: Exception | None) -> None:
        self.env.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            response=None,
            context=None,
            exception=exception,
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        start = time.perf_counter()
        call = continuation(client_call_details, request)
        length, exception = 0, None
        try:
            length = call.result().ByteSize()
        except grpc.RpcError as e:
            exception = e
        self._fire(self.name(client_call_details.method, request), start, length, exception)
        return call  # the stub calls .result() on it: the caller sees the response or the same RpcError

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        start = time.perf_counter()
        responses = continuation(client_call_details, request_iterator)
        return self._drain(responses, self.name(client_call_details.method, None), start)

    def _drain(self, responses: Iterator, name: str, start: float) -> Iterator:
        """Yield the stream's responses; fire once when it ends (time to the last response, total size)."""
        length = 0
        try:
            for response in responses:
                length += response.ByteSize()
                yield response
        except grpc.RpcError as e:
            self._fire(name, start, length, e)
            raise
        self._fire(name, start, length, None)


class GrpcUser(User):
    """A Locust user with a gRPC stub on an intercepted channel to ``host``."""

    abstract = True
    stub_class: ClassVar[type | None] = None

    def __init__(self, environment: Environment):
        super().__init__(environment)
        if not self.host:
            raise LocustError('set the gRPC target: `host = "127.0.0.1:50051"` or --host')
        if self.stub_class is None:
            raise LocustError("set `stub_class` to the generated stub, e.g. pb_grpc.ColorizerStub")
        self._channel = grpc.insecure_channel(self.host, options=CHANNEL_OPTIONS)
        channel = grpc.intercept_channel(self._channel, LocustInterceptor(environment, self.request_name))
        self.stub = self.stub_class(channel)

    def request_name(self, method: str, request: Any) -> str:
        """The name a call is reported under: its full method (request is None for streams)."""
        return method

    def on_stop(self) -> None:
        self._channel.close()
