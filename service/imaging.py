"""Request images in and out: decode and validate, fit to the model grid, map hints, finish.

Everything here is synchronous and CPU-bound: the gateway runs it on the event loop for small
images (a thread hop cost more than the work) and in its thread pool for large ones (see
INLINE_MAX_BYTES in gateway.py). Failures are `RequestError`s that carry the gRPC status the caller should see.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import grpc
import numpy as np
from isal import isal_zlib
from PIL import Image, UnidentifiedImageError

from contract.hints import DEFAULT_POINT_SIZE, MODEL_SIZE, POINT_SIZE_RANGE, PointHint
from contract.wire import MAX_HINTS

# The gateway checks image dimensions itself (before any pixel is decoded), with its own limit.
Image.MAX_IMAGE_PIXELS = None
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP", "MPO": "JPEG"}  # MPO: multi-frame JPEG
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_MIN_PIXELS_PER_BYTE = 1024  # see decode_image: a JPEG holds at most 512 pixels per byte
BAND_PIXELS = 1 << 20
# Pillow modes whose pixels OpenCV decodes exactly as Pillow does (CMYK JPEGs differ by 1; a 16-bit
# gray PNG is Pillow's I;16, clipped rather than scaled).
OPENCV_MODES = {"1", "L", "LA", "P", "RGB", "RGBA"}
OUTPUT_FORMATS = {"png": (".png", "image/png"), "jpeg": (".jpg", "image/jpeg"), "webp": (".webp", "image/webp")}
ENCODE_QUALITY = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 92], ".webp": [cv2.IMWRITE_WEBP_QUALITY, 92]}


class RequestError(Exception):
    """A request the gateway refuses: a gRPC status code and a message for the caller."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 40_000_000  # ~6300x6300
    max_side: int = 16384
    max_hints: int = MAX_HINTS
    why: str = ""  # said after the limit when it is tighter than the gateway's own (e.g. for WebP)


@dataclass(frozen=True)
class Frame:
    """Where a (width x height) image sits on the 128x128 model grid: scaled by `scale`, padded
    with white to a square, its top-left corner at (left, top)."""

    width: int
    height: int
    scale: float
    left: int
    top: int
    inner_width: int
    inner_height: int

    @staticmethod
    def fit(width: int, height: int) -> Frame:
        scale = MODEL_SIZE / max(width, height)
        iw, ih = max(1, round(width * scale)), max(1, round(height * scale))
        return Frame(width, height, scale, (MODEL_SIZE - iw) // 2, (MODEL_SIZE - ih) // 2, iw, ih)

    def to_grid(self, image: np.ndarray) -> np.ndarray:
        """An image of the frame's size, resized and padded with white onto the model grid."""
        if (self.inner_width, self.inner_height) == (image.shape[1], image.shape[0]):
            inner = image
        else:
            shrink = self.inner_width < image.shape[1]
            inner = cv2.resize(
                image,
                (self.inner_width, self.inner_height),
                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC,
            )
        shape = (MODEL_SIZE, MODEL_SIZE) + image.shape[2:]
        grid = np.full(shape, 255, np.uint8)
        grid[self.top : self.top + self.inner_height, self.left : self.left + self.inner_width] = inner
        return grid

    def from_grid(self, grid: np.ndarray) -> np.ndarray:
        """The frame's region of a model-grid image, resized back to the frame's own size."""
        inner = grid[self.top : self.top + self.inner_height, self.left : self.left + self.inner_width]
        if inner.shape[:2] == (self.height, self.width):
            return inner
        return cv2.resize(inner, (self.width, self.height), interpolation=cv2.INTER_CUBIC)

    def grid_position(self, x: float, y: float) -> tuple[int, int]:
        """(row, col) on the model grid of the point (x, y) in the image's pixel coordinates."""
        col = self.left + int((x + 0.5) * self.scale)
        row = self.top + int((y + 0.5) * self.scale)
        return (min(row, self.top + self.inner_height - 1), min(col, self.left + self.inner_width - 1))


def decode_image(data: bytes, what: str, limits: Limits) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 RGB, transparency composited on white.

    The header is checked against the limits before any pixel is decoded, so a 50000x50000
    header costs nothing.
    """
    return pixels(open_image(data, what, limits), what)


def open_image(data: bytes, what: str, limits: Limits) -> Image.Image:
    """The image with its header checked against the limits; no pixel decoded yet."""
    if not data:
        raise invalid(f"{what} is empty: send PNG, JPEG or WebP bytes")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        if data.startswith(PNG_SIGNATURE) and len(data) >= 24:  # PIL refuses a 0-pixel PNG without saying so
            width, height = struct.unpack(">II", data[16:24])
            if width == 0 or height == 0:
                raise invalid(f"{what} is {width}x{height}: an image needs at least one pixel") from None
        start = data[:8].hex(" ")  # bytes, not a Python repr: the page shows this message as it is
        raise invalid(f"{what} is not a PNG, JPEG or WebP image ({len(data)} bytes, beginning {start})") from None
    except Exception as e:  # PIL raises many types on malformed headers
        raise invalid(f"{what} has a malformed image header: {e}") from None
    if im.format not in ACCEPTED_FORMATS:
        raise invalid(f"{what} is {im.format}; send PNG, JPEG or WebP")
    width, height = im.size
    if width < 1 or height < 1:
        raise invalid(f"{what} is {width}x{height}: an image needs at least one pixel")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise invalid(
            f"{what} is {width}x{height} ({width * height / 1e6:.1f} Mpx); the limit is "
            f"{limits.max_pixels / 1e6:.0f} Mpx and {limits.max_side} px a side"
            + (f" {limits.why}" if limits.why else "")
        )
    if im.format in ("JPEG", "MPO") and len(data) < width * height / JPEG_MIN_PIXELS_PER_BYTE:
        # libjpeg fills missing data with gray and only warns: a forged header would make the gateway
        # decode, colour and encode a huge picture of filler. Every 8x8 block of a JPEG costs at least
        # one bit (its DC code), so a real one has at least width*height/512 bytes; the bound is half that.
        raise invalid(
            f"{what} claims to be a {width}x{height} JPEG but has {len(data)} bytes, fewer than any JPEG of that "
            f"size needs ({width * height / JPEG_MIN_PIXELS_PER_BYTE:.0f}): truncated, or a forged header"
        )
    im.encoded = data  # for _by_opencv
    return im


def _by_opencv(im: Image.Image) -> np.ndarray | None:
    """A still image decoded by OpenCV: (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA, the same
    pixels as Pillow's; None where Pillow decodes it (other modes, animations, a drafted JPEG,
    anything OpenCV reads differently). OpenCV lets go of the GIL while it decodes; Pillow holds it
    in long pieces (136 ms per 40 Mpx to copy a decoded WebP frame, ~15 ms per piece of a PNG), and
    meanwhile the gateway's event loop, health checks included, waits."""
    data = getattr(im, "encoded", None)
    if data is None or im.mode not in OPENCV_MODES or getattr(im, "n_frames", 1) != 1:
        return None
    if im.mode == "P" and not _transparency_fits_palette(im):
        return None  # libpng only warns, and decodes it; Pillow says it is corrupt
    flags = cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION  # Pillow does not rotate by EXIF either
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if decoded is not None and decoded.dtype == np.uint16:  # a 16-bit colour PNG: Pillow keeps the high bytes
        decoded = (decoded >> 8).astype(np.uint8)
    if decoded is None or decoded.dtype != np.uint8 or decoded.shape[:2] != (im.height, im.width):
        return None  # Pillow then decodes it, or says why it cannot
    return decoded


def _transparency_fits_palette(im: Image.Image) -> bool:
    trns = im.info.get("transparency")
    if not isinstance(trns, bytes):
        return True
    palette = im.getpalette() or []
    return len(trns) <= len(palette) // 3


def draft_for_grid(im: Image.Image) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale (in the DCT, far cheaper than decoding it whole)
    while it still has at least the model grid's pixels: for an answer at the model's size."""
    if im.format in ("JPEG", "MPO"):
        size = im.size
        im.draft(im.mode, (MODEL_SIZE, MODEL_SIZE))
        if im.size != size:
            im.encoded = None  # Pillow decodes the reduced scale; OpenCV would decode it whole


def _on_white(bgra: np.ndarray) -> np.ndarray:
    """BGRA composited on white -> BGR, in bands (numpy lets go of the GIL on each)."""
    out = np.empty(bgra.shape[:2] + (3,), np.uint8)
    step = max(1, BAND_PIXELS // bgra.shape[1])
    for top in range(0, bgra.shape[0], step):
        band = bgra[top : top + step]
        alpha = band[:, :, 3:].astype(np.uint16)
        mixed = band[:, :, :3] * alpha + 255 * (255 - alpha)
        out[top : top + step] = (mixed + 127) // 255
    return out


def _load(im: Image.Image, what: str) -> None:
    try:
        im.load()
    except Exception as e:
        kind = ACCEPTED_FORMATS[im.format]
        raise invalid(f"{what} could not be decoded ({kind} {im.width}x{im.height}): {e}") from None


def gray_pixels(im: Image.Image, what: str) -> np.ndarray:
    """An opened image's pixels: (H, W) uint8 gray, transparency composited on white. A gray or RGB
    image (most sketches) skips the RGB copy: a third of the sketch's decoding cost."""
    decoded = _by_opencv(im)
    if decoded is not None:
        if decoded.ndim == 2:
            return decoded
        bgr = _on_white(decoded) if decoded.shape[2] == 4 else decoded
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    _load(im, what)
    if im.mode == "L":
        return np.asarray(im)
    return to_gray(np.asarray(im) if im.mode == "RGB" else pixels(im, what))


def pixels(im: Image.Image, what: str) -> np.ndarray:
    """An opened image's pixels: (H, W, 3) uint8 RGB, transparency composited on white."""
    decoded = _by_opencv(im)
    if decoded is not None:
        if decoded.ndim == 2:
            return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
        bgr = _on_white(decoded) if decoded.shape[2] == 4 else decoded
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    _load(im, what)
    kind, size = ACCEPTED_FORMATS[im.format], f"{im.mode} {im.width}x{im.height}"
    try:
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            white.alpha_composite(im)
            im = white
        return np.asarray(im.convert("RGB"))
    except ValueError as e:  # a decodable but inconsistent file, e.g. a tRNS chunk longer than its palette
        raise invalid(f"{what} is a corrupt {kind} ({size}): {e}") from None


def encode_image(rgb: np.ndarray, fmt: str) -> tuple[bytes, str]:
    """(H, W, 3) uint8 -> (encoded bytes, mime type)."""
    extension, mime = OUTPUT_FORMATS[fmt]
    if extension == ".png":
        return encode_png(rgb), mime
    # OpenCV lets go of the GIL while it encodes (Pillow's encoder held it ~14 ms at a time on a
    # 40-Mpx answer, stalling the event loop).
    ok, data = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), ENCODE_QUALITY[extension])
    if not ok:
        raise RequestError(grpc.StatusCode.INTERNAL, f"the {rgb.shape[1]}x{rgb.shape[0]} answer could not be encoded")
    return data.tobytes(), mime


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(tag)))


def encode_png(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG: every row with the Up filter, deflated by ISA-L at level 1.

    Pillow tries each PNG filter on every row, and zlib's deflate even at level 1 took 0.4 ms of
    the gateway's ~2 CPU ms per request on a generator's 128x128 answer; ISA-L writes the same
    zlib stream format in 0.12 ms, and a little smaller (12.8 vs 13.5 KB on the benchmark's answers)."""
    height, width, _ = rgb.shape
    flat = rgb.reshape(height, 3 * width)
    rows = np.empty((height, 3 * width + 1), np.uint8)
    rows[:, 0] = 2  # Up: each byte minus the one above it (the row above the first counts as zeros)
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # uint8 wraps modulo 256, as PNG's filters do
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    return (
        PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", isal_zlib.compress(rows, 1))
        + _png_chunk(b"IEND", b"")
    )


def to_gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class RawHint(NamedTuple):  # a tuple: made per hint, 5x cheaper than a frozen dataclass
    """A hint as the caller sent it: a position (pixel or normalised), a colour, a size."""

    x: float
    y: float
    normalized: bool
    rgb: tuple[int, int, int]
    size: int


def grid_points(hints: list[RawHint], frame: Frame) -> list[PointHint]:
    """Validate the caller's hints (their number is checked before they are built) and place them on
    the model grid."""
    points = []
    for i, h in enumerate(hints):
        if not (math.isfinite(h.x) and math.isfinite(h.y)):  # math, not numpy: 20x faster per hint
            raise invalid(f"hints[{i}]: position ({h.x}, {h.y}) is not finite")
        if h.normalized:
            if not (0 <= h.x <= 1 and 0 <= h.y <= 1):
                raise invalid(f"hints[{i}]: normalized position ({h.x:g}, {h.y:g}) is outside [0, 1]")
            x, y = min(h.x * frame.width, frame.width - 1), min(h.y * frame.height, frame.height - 1)
        else:
            if not (0 <= h.x < frame.width and 0 <= h.y < frame.height):
                raise invalid(
                    f"hints[{i}]: pixel position ({h.x:g}, {h.y:g}) is outside the {frame.width}x{frame.height} sketch"
                )
            x, y = h.x, h.y
        if max(h.rgb) > 255:
            raise invalid(f"hints[{i}]: colour {h.rgb} has a component above 255")
        size = h.size or DEFAULT_POINT_SIZE
        lo, hi = POINT_SIZE_RANGE
        if not lo <= size <= hi:
            raise invalid(f"hints[{i}]: size {size} is outside {lo}..{hi} (model pixels; 0 means {DEFAULT_POINT_SIZE})")
        row, col = frame.grid_position(x, y)
        points.append(PointHint(row, col, h.rgb, size))
    return points


def reapply_lines(color: np.ndarray, sketch_gray: np.ndarray) -> np.ndarray:
    """Multiply the full-resolution line art over an upsampled colour image, so lines stay crisp.
    In bands of about a megapixel: the 16-bit products of a whole 40-Mpx answer would be 240 MB."""
    out = np.empty(color.shape, np.uint8)
    step = max(1, BAND_PIXELS // max(1, color.shape[1]))
    for top in range(0, color.shape[0], step):
        band = color[top : top + step].astype(np.uint16)
        band *= sketch_gray[top : top + step, :, None]
        band //= 255
        out[top : top + step] = band
    return out
