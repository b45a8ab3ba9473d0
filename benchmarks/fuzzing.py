"""Seeded random Colorize requests for the reliability campaign: every request field and the image
bytes, from well-formed to hostile. Plain numpy randomness (not hypothesis) so that a campaign of
10,000 requests is cheap to generate and the same seed gives the same requests on every machine.

The test suite's property-based fuzz test (tests/test_fuzz.py) covers the same space with
shrinking; this module is the bulk version.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from service.api import pb

# The served variants and the hint each takes ("" is the default, guided).
VARIANTS = {
    "": "points",
    "guided": "points",
    "unet_l1": "none",
    "pix2pix": "none",
    "pix2pix_blur": "image",
    "unet_patches20": "image",
}
BAD_VARIANTS = ["nope", "guided\x00", "GUIDED", "x" * 10_000]
BAD = 0.1  # each field is out of its range this often, so that most requests reach the model
# What a correct gateway may answer to a fuzzed request: success, or a status naming the caller's
# mistake. UNKNOWN and INTERNAL mean a bug; UNAVAILABLE would mean it fell over.
EXPECTED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"}


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression-bomb probe)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(bytes(64)))
        + png_chunk(b"IEND", b"")
    )


def palette_png_with_long_trns(entries: int = 300) -> bytes:
    """A 4x4 two-colour palette PNG whose tRNS chunk has more entries than the palette: it decodes,
    and converting it to RGBA fails."""
    rows = zlib.compress(bytes(4 * 5))  # 4 rows: filter byte 0 and four palette indices 0
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 3, 0, 0, 0))
        + png_chunk(b"PLTE", bytes([0, 0, 0, 255, 255, 255]))
        + png_chunk(b"tRNS", bytes(entries))
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def one_bit_png(width: int, height: int) -> bytes:
    """A white 1-bit PNG: a few kB of bytes for tens of megapixels once decoded."""
    stride = (width + 7) // 8
    rows = zlib.compress((b"\x00" + b"\xff" * stride) * height, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


def flat_webp(width: int, height: int) -> bytes:
    """A flat white lossless WebP: about a kB for any size up to WebP's 16383 a side."""
    buf = io.BytesIO()
    Image.new("L", (width, height), 255).save(buf, format="WEBP", lossless=True)
    return buf.getvalue()


def animated(fmt: str, frames: int = 3, side: int = 32) -> bytes:
    """An animated PNG or WebP of line art (the first frame is coloured)."""
    images = [Image.fromarray(line_art(np.random.default_rng(k), side, side)) for k in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format=fmt, save_all=True, append_images=images[1:], duration=100, loop=0)
    return buf.getvalue()


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 8x8 JPEG whose frame header (SOF0) claims width x height."""
    data = encoded(np.full((8, 8, 3), 200, np.uint8), "JPEG")
    at = data.find(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def line_art(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """White paper with a few black strokes and boxes: something the models can colour."""
    image = np.full((h, w), 255, np.uint8)
    for _ in range(int(rng.integers(1, 6))):
        y0, y1 = sorted(rng.integers(0, h, 2))
        x0, x1 = sorted(rng.integers(0, w, 2))
        image[y0 : y1 + 1, x0] = image[y0 : y1 + 1, x1] = 0
        image[y0, x0 : x1 + 1] = image[y1, x0 : x1 + 1] = 0
    return image


def image_bytes(rng: np.random.Generator) -> bytes:
    return sized_image(rng)[0]


def sized_image(rng: np.random.Generator) -> tuple[bytes, tuple[int, int]]:
    """Image bytes and the size they were drawn at (what a client knows of its own picture)."""
    good = rng.random() >= 2 * BAD
    hostile = ["garbage", "truncated", "empty", "bomb", "trns", "one_bit", "animated", "forged_jpeg"]
    kind = rng.choice(["png", "png", "jpeg", "webp", "noise"] if good else hostile)
    if kind == "empty":
        return b"", (1, 1)
    if kind == "trns":
        return palette_png_with_long_trns(int(rng.integers(3, 400))), (4, 4)
    if kind == "one_bit":  # a few kB for up to 9 Mpx (the gateway's limit is 40)
        w, h = int(rng.integers(1, 3000)), int(rng.integers(1, 3000))
        return one_bit_png(w, h), (w, h)
    if kind == "animated":
        return animated(str(rng.choice(["PNG", "WEBP"])), int(rng.integers(2, 4))), (32, 32)
    if kind == "forged_jpeg":  # a real 8x8 JPEG claiming more: refused or decoded with filler, never a crash
        w, h = int(rng.integers(8, 65_536)), int(rng.integers(8, 65_536))
        return jpeg_claiming(w, h), (w, h)
    if kind == "garbage":
        return rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes(), (1, 1)
    if kind == "bomb":
        w, h = int(rng.integers(1, 70_000)), int(rng.integers(1, 70_000))
        return png_claiming(w, h), (w, h)
    h, w = int(rng.integers(1, 400)), int(rng.integers(1, 400))
    if kind == "noise":
        mode = rng.choice(["L", "RGB", "RGBA"])
        shape = (h, w) if mode == "L" else (h, w, len(mode))
        data = encoded(rng.integers(0, 256, shape, dtype=np.uint8), "PNG")
    else:
        data = encoded(line_art(rng, h, w), {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "truncated": "PNG"}[kind])
    return (data[: int(rng.integers(0, len(data)))] if kind == "truncated" else data), (w, h)


def coordinate(rng: np.random.Generator, scale: float) -> float:
    roll = rng.random()
    if roll < BAD / 8:
        return float(rng.choice([np.nan, np.inf, -np.inf, 1e30]))
    return float(rng.uniform(-0.1, 1.1) * scale if roll < BAD / 4 else rng.uniform(0, 1) * (scale - 1e-3))


def hint(rng: np.random.Generator, size: tuple[int, int]) -> pb.Hint:
    roll = rng.random()
    if roll < BAD / 4:
        return pb.Hint()  # no position at all
    color = pb.Color(**{c: int(rng.integers(0, 256 if rng.random() >= BAD / 4 else 5000)) for c in "rgb"})
    side = int(rng.integers(0, 10 if rng.random() >= BAD / 4 else 100))
    if roll < 0.5:
        return pb.Hint(normalized=pb.Point(x=coordinate(rng, 1), y=coordinate(rng, 1)), color=color, size=side)
    return pb.Hint(
        pixel=pb.Point(x=coordinate(rng, size[0] - 1), y=coordinate(rng, size[1] - 1)), color=color, size=side
    )


def request(rng: np.random.Generator) -> pb.ColorizeRequest:
    """One fuzzed request: mostly plausible values, each field sometimes out of its range."""

    def bad() -> bool:
        return rng.random() < BAD

    variant = str(rng.choice(BAD_VARIANTS if bad() else list(VARIANTS)))
    takes = VARIANTS.get(variant) if not bad() else rng.choice(["points", "image"])  # else the wrong kind
    sketch, size = sized_image(rng)
    return pb.ColorizeRequest(
        sketch=sketch,
        variant=variant,
        hints=[hint(rng, size) for _ in range(int(rng.integers(0, 600 if bad() else 8)))] if takes == "points" else [],
        color_hint=image_bytes(rng) if takes == "image" else b"",
        output_format=int(rng.choice([-2, -1, 4, 7, 100]) if bad() else rng.integers(0, 4)),
        output_size=int(rng.choice([-1, 3, 4, 100]) if bad() else rng.integers(0, 3)),
        request_id="".join(chr(int(c)) for c in rng.integers(32, 0x2FFF, int(rng.integers(0, 30)))),
    )


def raw_bytes(rng: np.random.Generator) -> bytes:
    """Bytes sent as a ColorizeRequest that are not one: noise, or a valid request cut short."""
    if rng.random() < 0.5:
        return rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    data = request(rng).SerializeToString()
    return data[: int(rng.integers(1, max(2, len(data))))] + rng.integers(0, 256, 3, dtype=np.uint8).tobytes()
