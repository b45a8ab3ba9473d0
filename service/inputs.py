"""A ColorizeRequest, from bytes to the generator's wire tensors: parsing that cannot fail, field
checks made before any work, and decoding + fitting to the model grid (run in the gateway's worker
threads). The hint encoding itself happens in the Triton model (`contract.wire`)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace

import grpc
import numpy as np
from google.protobuf.message import DecodeError
from PIL import Image

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
    """Request bytes the gateway will not work on: the RPC answers INVALID_ARGUMENT with `message`
    (grpc itself would answer UNKNOWN and log a traceback per call)."""

    variant = request_id = ""

    def __init__(self, message: str):
        self.message = message


def lenient(parse, what: str):
    """A request deserializer that cannot fail: bytes that do not parse become an `Undecodable`."""

    def parse_or_mark(data: bytes):
        try:
            return parse(data)
        except DecodeError as e:
            return Undecodable(f"the request is not a serialized {what}: {e or 'malformed protobuf'}")

    return parse_or_mark


class LenientParsing(grpc.aio.ServerInterceptor):
    """Bytes that are not a method's request message get INVALID_ARGUMENT, for the services whose
    handlers grpc's own packages build (health, reflection): their parsers raise, and grpc answers
    UNKNOWN and logs a traceback. `skip` names the services that parse leniently themselves."""

    def __init__(self, skip: set[str]):
        self.skip = skip

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        service = details.method.lstrip("/").split("/", 1)[0]
        if handler is None or service in self.skip or handler.request_deserializer is None:
            return handler
        what = f"{details.method} request"
        parse = lenient(handler.request_deserializer, what)

        async def refuse(context, request) -> None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)

        inner = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream

        async def checked(requests, context):
            async for request in requests:
                if isinstance(request, Undecodable):
                    await refuse(context, request)
                yield request

        async def first(request, context):
            if handler.request_streaming:
                return checked(request, context)
            if isinstance(request, Undecodable):
                await refuse(context, request)
            return request

        # grpc tells a streamed answer by an async generator function, and a stream of requests
        # comes as an async iterator: the wrapper keeps the inner handler's shape.
        if inspect.isasyncgenfunction(inner):

            async def behaviour(request, context):
                async for response in inner(await first(request, context), context):
                    yield response
        else:

            async def behaviour(request, context):
                return await inner(await first(request, context), context)

        make = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return make(behaviour, request_deserializer=parse, response_serializer=handler.response_serializer)


HINTS_FIELD = pb.ColorizeRequest.DESCRIPTOR.fields_by_name["hints"].number
MAX_HINT_BYTES = 64  # a serialized Hint is at most 29 bytes: a position, a colour, a size
MAX_OTHER_FIELDS = 64  # a request has 6 other fields; proto3 lets a singular one repeat (the last wins)
WALK_FROM_BYTES = 64 << 10  # below this, parsing all of it costs under a millisecond


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]  # IndexError past the end
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def field_count_refusal(data: bytes, max_hints: int) -> str | None:
    """Why a serialized ColorizeRequest is refused unparsed, or None.

    Parsing runs on the event loop and holds the GIL: a 32 MB request of 1.4 M hints took ~0.3 s
    to parse and seconds more to turn into hints. Walking its top-level fields stops after at most
    `max_hints` + 64 of them, so a request is refused in well under a millisecond. Malformed bytes
    end the walk: the parser then says what is wrong."""
    hints = fields = i = 0
    try:
        while i < len(data):
            key, i = _varint(data, i)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, i = _varint(data, i)
            elif wire_type in (1, 5):
                i += 8 if wire_type == 1 else 4
            elif wire_type == 2:
                length, i = _varint(data, i)
                if number == HINTS_FIELD:
                    if length > MAX_HINT_BYTES:
                        return f"hints[{hints}] is {length} bytes; a hint is at most {MAX_HINT_BYTES}"
                    hints += 1
                i += length
            else:
                return None
            fields += 1
            if hints > max_hints:
                return f"more than {max_hints} hints; at most {max_hints} are accepted"
            if fields > max_hints + MAX_OTHER_FIELDS:
                return f"the request has more than {max_hints + MAX_OTHER_FIELDS} fields; a ColorizeRequest has 7"
    except (IndexError, ValueError):
        return None
    return None


class Received:
    """A parsed ColorizeRequest with its two images read once. Each read of a bytes field of a
    protobuf message makes a new bytes object: for a 30 MB sketch ~20 ms holding the GIL, and the
    gateway reads the sketch several times on the event loop. Other fields read through."""

    __slots__ = ("message", "sketch", "color_hint")

    def __init__(self, message: pb.ColorizeRequest):
        self.sketch, self.color_hint = message.sketch, message.color_hint
        message.ClearField("sketch")
        message.ClearField("color_hint")
        self.message = message

    def __getattr__(self, name: str):
        return getattr(self.message, name)


def colorize_parser(max_hints: int):
    """The Colorize deserializer: bounded work for any bytes, never an exception."""
    parse = lenient(pb.ColorizeRequest.FromString, "sketch2color.v1.ColorizeRequest")

    def parse_request(data: bytes):
        if len(data) > WALK_FROM_BYTES and (refusal := field_count_refusal(data, max_hints)):
            return Undecodable(refusal)
        request = parse(data)
        return request if isinstance(request, Undecodable) else Received(request)

    return parse_request


def check_output_fields(request) -> None:
    """Enums arrive as any int32 (proto3 keeps unknown values): check them before any work is done."""
    if request.output_format not in OUTPUT_FORMAT_NAMES:
        raise invalid(
            f"output_format {request.output_format} is not an ImageFormat: use PNG (1), JPEG (2) or "
            "WEBP (3); 0 means PNG"
        )
    if request.output_size not in OUTPUT_SIZES:
        raise invalid(
            f"output_size {request.output_size} is not an OutputSize: use MODEL (1) or SKETCH (2); 0 means SKETCH"
        )


@dataclass(frozen=True)
class Opened:
    """A request's images with their headers checked against the limits; no pixel decoded yet."""

    sketch: Image.Image
    color: Image.Image | None
    frame: Frame  # the sketch's own size: hint positions and the answer's size refer to it

    @property
    def pixels(self) -> int:
        """What decoding costs, in pixels (as the headers say)."""
        color = self.color.width * self.color.height if self.color is not None else 0
        return self.frame.width * self.frame.height + color


def open_request(request, limits: Limits) -> Opened:
    """Both images' headers, checked: cheap (no pixel decoded), so a refusal costs nothing."""
    if request.output_format == pb.IMAGE_FORMAT_WEBP and request.output_size != pb.OUTPUT_SIZE_MODEL:
        # The answer has the sketch's size: refuse a sketch WebP cannot hold before decoding it.
        limits = replace(limits, max_side=min(limits.max_side, WEBP_MAX_SIDE), why="for a WebP answer at its size")
    sketch = imaging.open_image(request.sketch, "sketch", limits)
    color = imaging.open_image(request.color_hint, "color_hint", limits) if request.color_hint else None
    return Opened(sketch, color, Frame.fit(*sketch.size))


def encode_request(
    request, hint: HintKind, limits: Limits, opened: Opened | None = None
) -> tuple[dict[str, np.ndarray], Frame, np.ndarray]:
    """Decode and validate a request and fit it onto the model grid.

    -> (the `contract.wire` tensors by name, the sketch's frame on the model grid, sketch gray).
    CPU-bound: the gateway runs it in a worker thread unless the request is small.
    """
    opened = opened or open_request(request, limits)
    frame = opened.frame
    if len(request.hints) > limits.max_hints:  # before any hint is built
        raise invalid(f"{len(request.hints)} hints; at most {limits.max_hints} are accepted")
    raw = []
    for i, h in enumerate(request.hints):
        which = h.WhichOneof("position")
        if which is None:
            raise invalid(f"hints[{i}] has no position: set `pixel` or `normalized`")
        p = getattr(h, which)
        raw.append(RawHint(p.x, p.y, which == "normalized", (h.color.r, h.color.g, h.color.b), h.size))
    points = imaging.grid_points(raw, frame)  # checked before any pixel is decoded
    if request.output_size == pb.OUTPUT_SIZE_MODEL:
        imaging.draft_for_grid(opened.sketch)  # only the 128-px grid is needed
    sketch = imaging.gray_pixels(opened.sketch, "sketch")
    # Straight onto the model grid, whatever the colour image's size: not via the sketch's size,
    # which for a large sketch would be a full-size RGB copy.
    color = frame.to_grid(imaging.pixels(opened.color, "color_hint")) if opened.color is not None else None
    return wire.inputs_for(hint, frame.to_grid(sketch), points=points, color=color), frame, sketch
