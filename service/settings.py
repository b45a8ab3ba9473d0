"""The gateway's settings: each a flag (--triton-url) and an environment variable
(SKETCH2COLOR_TRITON_URL), the flag winning."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, fields

from contract import wire
from service.api import DEFAULT_HOST, DEFAULT_PORT, MAX_MESSAGE_MB
from service.imaging import Limits


@dataclass(frozen=True)
class GatewayConfig:
    """Every setting is a flag (--triton-url) and an environment variable (SKETCH2COLOR_TRITON_URL)."""

    triton_url: str = "127.0.0.1:8001"  # or a list a:8001,b:8001, or dns:///name:8001 (service/triton_pool.py)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    metrics_port: int = 9095  # 0 = no metrics endpoint
    default_variant: str = wire.DEFAULT_VARIANT
    max_message_mb: int = MAX_MESSAGE_MB
    max_pixels: int = Limits.max_pixels
    max_hints: int = Limits.max_hints  # at most contract.wire.MAX_HINTS
    workers: int = 4  # threads for decoding and encoding images
    processes: int = 1  # gateway processes sharing the port (service/processes.py)
    # Triton calls in flight per variant and ready Triton; more requests wait and batch (service/batcher.py).
    # 0: no cap on a CPU (Triton's dynamic batcher batches), two per model instance on a GPU (Colorizer.calls_for).
    triton_calls: int = 0
    stream_concurrency: int = 16  # items of one ColorizeStream in flight at once
    health_interval_s: float = 1.0
    shutdown_grace_s: float = 10.0
    log_level: str = "INFO"
    max_in_flight: int = 256  # items being worked on at once; beyond it new work gets RESOURCE_EXHAUSTED (0 = no bound)
    # Decoded pixels of large requests in work at once (service/admission.py); 0 = twice max_pixels.
    max_pixels_in_flight: int = 0
    # A Triton call's bound when the caller sets no deadline (DEADLINE_EXCEEDED after it); 0 = none.
    triton_timeout_s: float = 30.0
    tls_cert: str = ""  # PEM; with tls_key the port speaks TLS only (service/security.py)
    tls_key: str = ""
    tls_client_ca: str = ""  # PEM CA: mutual TLS, clients must present a certificate it signed
    auth_tokens_file: str = ""  # one bearer token per line; calls must carry one
    auth_tokens: str = ""  # comma-separated tokens (best from the environment, SKETCH2COLOR_AUTH_TOKENS)
    auth_exempt: str = "health,reflection"  # services open without a token ("" = none)

    def __post_init__(self):
        if self.max_hints > wire.MAX_HINTS:
            raise ValueError(f"--max-hints {self.max_hints}: the wire to Triton carries at most {wire.MAX_HINTS} hints")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        if 0 < self.max_pixels_in_flight < self.max_pixels:
            raise ValueError(
                f"--max-pixels-in-flight {self.max_pixels_in_flight} is below --max-pixels "
                f"{self.max_pixels}: the largest sketch could never be admitted"
            )
        if self.triton_timeout_s < 0:
            raise ValueError(f"--triton-timeout-s {self.triton_timeout_s} is negative; 0 means no bound")

    @property
    def limits(self) -> Limits:
        return Limits(max_pixels=self.max_pixels, max_hints=self.max_hints)

    @property
    def pixels_in_flight(self) -> int:
        return self.max_pixels_in_flight or 2 * self.max_pixels


def from_args(cls, prefix: str, description: str, argv: list[str] | None = None):
    """A settings dataclass from flags (--triton-url) over environment variables (PREFIX_TRITON_URL)
    over its defaults. The gateway and the page's server both read theirs so."""
    parser = argparse.ArgumentParser(description=description)
    defaults = cls()
    for f in fields(cls):
        env = prefix + f.name.upper()
        default = type(getattr(defaults, f.name))(os.environ.get(env, getattr(defaults, f.name)))
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(default),
            default=default,
            help=f"env {env} (default {default!r})",
        )
    try:
        return cls(**vars(parser.parse_args(argv)))
    except ValueError as e:  # a combination of settings that cannot work: said at start-up, not at the first call
        parser.error(str(e))


def config_from_args(argv: list[str] | None = None) -> GatewayConfig:
    return from_args(GatewayConfig, "SKETCH2COLOR_", "The sketch2color gRPC gateway.", argv)


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
