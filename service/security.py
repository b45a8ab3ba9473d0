"""Who may call the gateway: TLS or mutual TLS on its port, and bearer tokens.

Both are off by default (a local `make run` needs neither) and switched on by settings:

- ``--tls-cert/--tls-key`` (PEM files): the port speaks TLS only. ``--tls-client-ca`` too: mutual
  TLS, a client must present a certificate signed by that CA.
- ``--auth-tokens-file`` (one token per line) or ``SKETCH2COLOR_AUTH_TOKENS`` (comma-separated):
  every call must carry ``authorization: Bearer <token>`` (the scheme in any case, RFC 7235); a
  missing or wrong one gets UNAUTHENTICATED. A tokens file that holds no token is a start-up error,
  not an open gateway. ``--auth-exempt`` names the services that stay open (default: health and
  reflection, so load balancers and grpcurl's ``list`` work; empty = nothing is exempt).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path

import grpc

EXEMPT_ALIASES = {
    "health": ("grpc.health.v1.Health",),
    "reflection": ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"),
}


def read_tokens(tokens_file: str, tokens_env: str) -> list[str]:
    """Tokens from a file (one per line, # comments) and a comma-separated string; blanks dropped.
    Raises ValueError for a file that cannot be read or holds none: asking for tokens and getting
    an open gateway would fail open."""
    tokens = [t.strip() for t in tokens_env.split(",")]
    if tokens_file:
        try:
            lines = Path(tokens_file).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--auth-tokens-file {tokens_file}: {e}") from None
        from_file = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not from_file:
            raise ValueError(f"--auth-tokens-file {tokens_file} holds no token (one per line, # for comments)")
        tokens += from_file
    return [t for t in tokens if t]


def describe(tls_cert: str, tls_client_ca: str, tokens: list[str], exempt: set[str]) -> str:
    """What protects the port, for the start-up log."""
    transport = "mutual TLS" if tls_client_ca else "TLS" if tls_cert else "plaintext"
    if not tokens:
        return f"{transport}, no bearer tokens"
    open_to_all = ", ".join(sorted(exempt)) or "nothing"
    return f"{transport}, {len(tokens)} bearer token(s), open without one: {open_to_all}"


def exempt_services(spec: str) -> set[str]:
    """'health,reflection' (aliases) or full service names -> the set of full service names."""
    names = set()
    for item in (s.strip() for s in spec.split(",")):
        if item:
            names.update(EXEMPT_ALIASES.get(item, (item,)))
    return names


class BearerTokenAuth(grpc.aio.ServerInterceptor):
    """Lets a call through if it carries one of `tokens` (compared in constant time) or its service
    is exempt; otherwise the call ends with UNAUTHENTICATED before any handler runs."""

    def __init__(self, tokens: Iterable[str], exempt: set[str]):
        self.tokens = [t.encode() for t in tokens]
        self.exempt = exempt

    def authorized(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, given = value.strip().partition(" ")
                if scheme.lower() != "bearer":
                    return False
                given_bytes = given.strip().encode()
                return any(hmac.compare_digest(given_bytes, t) for t in self.tokens)
        return False

    async def intercept_service(self, continuation, details):
        service = details.method.lstrip("/").split("/", 1)[0]
        if service in self.exempt or self.authorized(details.invocation_metadata):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:
            return None
        message = "missing or wrong bearer token: send the metadata `authorization: Bearer <token>`"

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async def deny_stream(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # never reached: makes this the async generator a streaming answer needs

        kinds = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }
        streaming = handler.response_streaming
        return kinds[(handler.request_streaming, streaming)](
            deny_stream if streaming else deny,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def server_credentials(cert: str, key: str, client_ca: str = "") -> grpc.ServerCredentials:
    """TLS from PEM files; with client_ca, clients must present a certificate that CA signed."""
    ca = Path(client_ca).read_bytes() if client_ca else None
    return grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())], root_certificates=ca, require_client_auth=ca is not None
    )
