"""The requests the latency benchmark and the Locust load test send: real sketches (the OpenMoji
test split when prepared, else synthetic ones) with 0-20 point hints, or a colour hint, as the
variant takes. Kept apart from the benchmark so that a load generator imports only this (no
Triton, no torch).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from contract import hints as H
from contract import wire
from service.api import pb
from service.client import grid_hints
from training.data import load_split, openmoji_cache, synthetic_pairs

HINTS_PER_REQUEST = 20  # requests carry 0..HINTS_PER_REQUEST point hints, uniformly
MAX_MESSAGE = 64 << 20  # a load generator's gRPC message limit: above any request or answer it sends
CHANNEL_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]


@dataclass(frozen=True)
class Sample:
    """One sketch with its colour target and hints, raw and as request bytes."""

    sketch: np.ndarray  # (128, 128) uint8
    color: np.ndarray  # (128, 128, 3) uint8, the "rough colour image" for colour-image variants
    points: tuple[H.PointHint, ...]
    sketch_png: bytes
    color_png: bytes


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def load_pairs(source: str, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n (sketch, colour) pairs spread over the OpenMoji test split, or synthetic ones.

    source: "openmoji", "synthetic", or "auto" (OpenMoji when its cache is prepared).
    """
    if source == "auto":
        source = "openmoji" if openmoji_cache().exists() else "synthetic"
    if source == "synthetic":
        data = synthetic_pairs(n, seed=7)
    else:
        data = load_split(source, "test")
    picks = np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(int)
    return [(np.ascontiguousarray(data[int(i)][0]), np.ascontiguousarray(data[int(i)][1])) for i in picks]


def random_hints(color: np.ndarray, rng: np.random.Generator, max_hints: int = HINTS_PER_REQUEST) -> list[H.PointHint]:
    """0..max_hints point hints at random places, coloured from the target (what a user would pick)."""
    return H.random_points(color, int(rng.integers(0, max_hints + 1)), rng)


def make_samples(source: str, n: int, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [
        Sample(sketch, color, tuple(random_hints(color, rng)), png(sketch), png(color))
        for sketch, color in load_pairs(source, n)
    ]


def colorize_request(
    sample: Sample,
    variant: str,
    accepted_hints: list[int],
    points: tuple[H.PointHint, ...] | list[H.PointHint] | None = None,
    **fields,
) -> pb.ColorizeRequest:
    """A Colorize request for a variant with the hints it accepts (`Variant.accepted_hints`).

    points: the point hints to send (default: the sample's own).
    """
    request = pb.ColorizeRequest(sketch=sample.sketch_png, variant=variant, **fields)
    if pb.HINT_KIND_POINTS in accepted_hints:
        request.hints.extend(grid_hints(sample.points if points is None else points))
    if pb.HINT_KIND_COLOR_IMAGE in accepted_hints:
        request.color_hint = sample.color_png
    return request


def wire_sample(sample: Sample, kind: H.HintKind) -> dict[str, np.ndarray]:
    """The compact Triton inputs for a sample (`contract.wire`), as the gateway would send them."""
    points = sample.points if kind is H.HintKind.POINTS else ()
    return wire.inputs_for(kind, sample.sketch, points=points, color=sample.color if kind.needs_color_image else None)
