"""A ColorizeRequest, from bytes to the generator's wire tensors: parsing that cannot fail, field
checks made before any work, and decoding + fitting to the model grid (run in the gateway's worker
threads). The hint encoding itself happens in the Triton model (`contract.wire`)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
from google.protobuf.message import DecodeError

from contract import wire
from contract.hints import HintKind
from service import imaging
from service.api import pb
from service.imaging import Frame, Limits, RawHint, invalid

OUTPUT_FORMAT_NAMES = {
    pb.IMAGE_FORMAT_UNSPECIFIED: "png",
    pb.IMAGE_FORMAT_PNG: "png",
    pb.IMAGE_FORMAT_JPEG: "jpeg",
    pb.IMAGE_FORMAT_WEBP: "webp",
}
OUTPUT_SIZES = (pb.OUTPUT_SIZE_UNSPECIFIED, pb.OUTPUT_SIZE_MODEL, pb.OUTPUT_SIZE_SKETCH)
WEBP_MAX_SIDE = 16383  # libwebp cannot write a wider or taller picture


class Undecodable:
    """Request bytes that do not parse: the RPC answers INVALID_ARGUMENT with the parser's message
    (grpc itself would answer UNKNOWN and log a traceback per call)."""

    variant = request_id = ""

    def __init__(self, error: str):
        self.error = error


def lenient(parse):
    def parse_or_mark(data: bytes):
        try:
            return parse(data)
        except DecodeError as e:
            return Undecodable(str(e) or "malformed protobuf")

    return parse_or_mark


def check_output_fields(request) -> None:
    """Enums arrive as any int32 (proto3 keeps unknown values): check them before any work is done."""
    if request.output_format not in OUTPUT_FORMAT_NAMES:
        raise invalid(f"output_format {request.output_format} is not an ImageFormat: use PNG (1), JPEG (2) or "
                      "WEBP (3); 0 means PNG")  # fmt: skip
    if request.output_size not in OUTPUT_SIZES:
        raise invalid(f"output_size {request.output_size} is not an OutputSize: use MODEL (1) or SKETCH (2); "
                      "0 means SKETCH")  # fmt: skip


def encode_request(request, hint: HintKind, limits: Limits) -> tuple[dict[str, np.ndarray], Frame, np.ndarray]:
    """Decode and validate a request and fit it onto the model grid.

    -> (the `contract.wire` tensors by name, the sketch's frame on the model grid, sketch gray).
    CPU-bound: the gateway runs it in a worker thread unless the request is small.
    """
    if request.output_format == pb.IMAGE_FORMAT_WEBP and request.output_size != pb.OUTPUT_SIZE_MODEL:
        # The answer has the sketch's size: refuse a sketch WebP cannot hold before decoding it.
        limits = replace(limits, max_side=min(limits.max_side, WEBP_MAX_SIDE), why="for a WebP answer at its size")
    opened = imaging.open_image(request.sketch, "sketch", limits)
    frame = Frame.fit(*opened.size)  # the sketch's own size: hint positions and the answer's size refer to it
    if request.output_size == pb.OUTPUT_SIZE_MODEL:
        imaging.draft_for_grid(opened)  # only the 128-px grid is needed
    sketch = imaging.gray_pixels(opened, "sketch")
    color = None
    if request.color_hint:
        rough = imaging.decode_image(request.color_hint, "color_hint", limits)
        if rough.shape[:2] != sketch.shape:
            rough = cv2.resize(rough, (sketch.shape[1], sketch.shape[0]), interpolation=cv2.INTER_AREA)
        color = frame.to_grid(rough)
    raw = []
    for i, h in enumerate(request.hints):
        which = h.WhichOneof("position")
        if which is None:
            raise invalid(f"hints[{i}] has no position: set `pixel` or `normalized`")
        p = getattr(h, which)
        raw.append(RawHint(p.x, p.y, which == "normalized", (h.color.r, h.color.g, h.color.b), h.size))
    points = imaging.grid_points(raw, frame, limits)
    return wire.inputs_for(hint, frame.to_grid(sketch), points=points, color=color), frame, sketch
