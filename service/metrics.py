"""The gateway's Prometheus metrics. With --processes N each is kept per process in
prometheus-client's multiprocess files and summed when scraped (`service.processes`)."""

from __future__ import annotations

import prometheus_client as prom


class Metrics:
    def __init__(self, registry: prom.CollectorRegistry):
        self.registry = registry
        labels = ("rpc", "variant", "code")
        self.requests = prom.Counter("sketch2color_requests", "Colorize calls", labels, registry=registry)
        self.latency = prom.Histogram(
            "sketch2color_request_seconds",
            "Call latency",
            labels,
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.in_flight = prom.Gauge(
            "sketch2color_in_flight", "Items being processed", registry=registry, multiprocess_mode="livesum"
        )  # with --processes N: the sum over them
        self.stage = prom.Histogram(
            "sketch2color_stage_seconds",
            "Time per stage: triton vs gateway work",
            ("stage", "variant"),
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )
        self.batch = prom.Histogram(
            "sketch2color_triton_batch_size",
            "Requests per Triton call (service/batcher)",
            ("variant",),
            registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )
        self.image_pixels = prom.Histogram(
            "sketch2color_image_pixels",
            "Sketch size in pixels",
            registry=registry,
            buckets=(128**2, 256**2, 512**2, 1024**2, 2048**2, 4096**2),
        )
