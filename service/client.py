"""A small Python client for the sketch2color gateway.

from service.client import ColorizerClient, hint
with ColorizerClient("127.0.0.1:50051") as client:
    png = client.colorize(open("sketch.png", "rb").read(), hints=[hint(40, 60, "#ff8800")])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc

from service.api import DEFAULT_ADDRESS, MAX_MESSAGE_MB, pb, pb_grpc

# Calls spread over every address the target resolves to (dns:///gateway:50051 on a headless
# Service: one per ready gateway pod) instead of all going down the first connection.
ROUND_ROBIN = ("grpc.lb_policy_name", "round_robin")

FORMATS = {
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "jpg": pb.IMAGE_FORMAT_JPEG,
    "webp": pb.IMAGE_FORMAT_WEBP,
}


def parse_color(text: str) -> pb.Color:
    """'#ff8800', '#f80', 'ff8800', '255,136,0' or a CSS colour name ('red', 'steelblue') -> Color."""
    from PIL import ImageColor  # hex forms and the CSS3 table of 147 names

    t = text.strip()
    try:
        if "," in t:
            r, g, b = (int(v) for v in t.split(","))
        else:
            is_hex = len(t) in (3, 6) and all(ch in "0123456789abcdefABCDEF" for ch in t)
            r, g, b = ImageColor.getrgb(f"#{t}" if is_hex else t.lower())[:3]
    except ValueError:
        raise ValueError(f"colour {text!r}: use #rrggbb, #rgb, r,g,b or a CSS colour name") from None
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"colour {text!r}: each channel is 0..255")
    return pb.Color(r=r, g=g, b=b)


def hint(x: float, y: float, color: str | tuple[int, int, int], size: int = 0, normalized: bool = False) -> pb.Hint:
    """A colour hint at (x, y): sketch pixels, or fractions of the sketch when normalized."""
    c = parse_color(color) if isinstance(color, str) else pb.Color(r=color[0], g=color[1], b=color[2])
    point = pb.Point(x=x, y=y)
    return pb.Hint(normalized=point, color=c, size=size) if normalized else pb.Hint(pixel=point, color=c, size=size)


def grid_hints(points) -> list[pb.Hint]:
    """Hints on the 128-px model grid (`contract.hints.PointHint`: row, col, rgb, size) as pixel
    hints on a 128x128 sketch, where the gateway maps pixel (x, y) back to (row=y, col=x)."""
    return [hint(p.col, p.row, p.rgb, p.size) for p in points]


def parse_hint(text: str) -> pb.Hint:
    """CLI form 'x,y,#rrggbb[,size]'; x and y with a trailing % are normalised (e.g. '50%,25%,#f00')."""
    parts = text.split(",")
    if len(parts) not in (3, 4):
        raise ValueError(f"hint {text!r}: use x,y,#rrggbb[,size]")
    normalized = parts[0].endswith("%") and parts[1].endswith("%")
    x, y = (float(p.rstrip("%")) / (100 if normalized else 1) for p in parts[:2])
    return hint(x, y, parts[2], int(parts[3]) if len(parts) == 4 else 0, normalized)


class ColorizerClient:
    """One channel to the gateway; thread-safe; use as a context manager or call close()."""

    def __init__(self, target: str = DEFAULT_ADDRESS, timeout: float = 30.0, max_message_mb: int = MAX_MESSAGE_MB):
        opts = [
            ("grpc.max_send_message_length", max_message_mb << 20),
            ("grpc.max_receive_message_length", max_message_mb << 20),
            ROUND_ROBIN,
        ]
        self.channel = grpc.insecure_channel(target, options=opts)
        self.stub = pb_grpc.ColorizerStub(self.channel)
        self.timeout = timeout

    def __enter__(self) -> ColorizerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def request(
        self,
        sketch: bytes | str | Path,
        variant: str = "",
        hints: Iterable[pb.Hint] = (),
        color_hint: bytes | str | Path | None = None,
        output_format: str = "png",
        model_size: bool = False,
        request_id: str = "",
    ) -> pb.ColorizeRequest:
        return pb.ColorizeRequest(
            sketch=_bytes(sketch),
            variant=variant,
            hints=list(hints),
            color_hint=_bytes(color_hint) if color_hint is not None else b"",
            output_format=FORMATS[output_format.lower()],
            output_size=pb.OUTPUT_SIZE_MODEL if model_size else pb.OUTPUT_SIZE_SKETCH,
            request_id=request_id,
        )

    def colorize_full(self, *args, timeout: float | None = None, **kwargs) -> pb.ColorizeResponse:
        """The whole response (image, variant, version, timings); arguments as `request`."""
        return self.stub.Colorize(self.request(*args, **kwargs), timeout=timeout or self.timeout)

    def colorize(self, *args, **kwargs) -> bytes:
        """The coloured image's bytes; arguments as `request`."""
        return self.colorize_full(*args, **kwargs).image

    def colorize_many(
        self, requests: Iterable[pb.ColorizeRequest], timeout: float | None = None
    ) -> Iterator[pb.ColorizeStreamResponse]:
        """Stream requests, get results as they finish (match them by index or request_id)."""
        return self.stub.ColorizeStream(iter(requests), timeout=timeout)

    def variants(self) -> pb.ListVariantsResponse:
        return self.stub.ListVariants(pb.ListVariantsRequest(), timeout=self.timeout)


def _bytes(source: bytes | str | Path) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()
