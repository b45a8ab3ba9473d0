"""One picture file from a package, made ready for training: read (SVGs rendered by rsvg-convert),
put on white, trimmed, filtered (big and coloured enough), letterboxed and de-duplicated.
`training.illustrations` runs it over every package's files."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

PICTURE_SIZE = 256
MIN_SIDE = 64  # px, of the picture's content
MIN_COLOURED = 0.10  # fraction of the content's pixels that must be coloured
CHROMA = 32  # max - min over RGB below this a pixel is white, gray or black
DHASH_DISTANCE = 2  # Hamming distance at or below which a picture repeats one already kept
SVG_PX = 512


def coloured_fraction(rgb: np.ndarray) -> float:
    """Share of pixels that are neither near-white nor near-gray (line art and grayscale score ~0)."""
    rgb = rgb.astype(np.int16)
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) >= CHROMA).mean())


def on_white(image: Image.Image) -> np.ndarray:
    """Any PIL image as RGB, transparent parts composited onto white: (H, W, 3) uint8."""
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return np.asarray(canvas.convert("RGB"))


def trim_white(rgb: np.ndarray, level: int = 245) -> np.ndarray:
    """Crop away white margins only (nothing of the figure), so small sprites fill the frame."""
    ys, xs = np.nonzero((rgb < level).any(axis=2))
    if len(ys) == 0:
        return rgb
    return rgb[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def reject_reason(rgb: np.ndarray) -> str | None:
    """Why a picture (trimmed, on white) is unusable, or None when it passes."""
    if min(rgb.shape[:2]) < MIN_SIDE:
        return "small"
    if coloured_fraction(rgb) < MIN_COLOURED:
        return "gray"
    return None


def letterbox(rgb: np.ndarray, size: int = PICTURE_SIZE, margin: float = 0.04) -> np.ndarray:
    """Pad to a square on white (the whole figure stays) with a small margin, then resize with LANCZOS."""
    h, w = rgb.shape[:2]
    side = int(round(max(h, w) * (1 + 2 * margin)))
    canvas = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = rgb
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.Resampling.LANCZOS))


def dhash(rgb: np.ndarray) -> np.uint64:
    """8x8 difference hash: one bit per horizontally adjacent pair of a 9x8 grayscale thumbnail."""
    gray = np.asarray(Image.fromarray(rgb).convert("L").resize((9, 8), Image.Resampling.BOX), np.int16)
    bits = (gray[:, 1:] > gray[:, :-1]).flatten()
    return np.uint64(sum(1 << i for i, b in enumerate(bits) if b))


class Deduplicator:
    """Keeps a picture only if its dhash is farther than `distance` bits from every one kept so far."""

    def __init__(self, distance: int = DHASH_DISTANCE):
        self.distance, self.hashes = distance, np.zeros(0, np.uint64)

    def add(self, h: np.uint64) -> bool:
        diff = np.bitwise_xor(self.hashes, np.uint64(h))
        if len(diff) and np.unpackbits(diff.view(np.uint8)).reshape(-1, 64).sum(axis=1).min() <= self.distance:
            return False
        self.hashes = np.append(self.hashes, np.uint64(h))
        return True


def rasterize_svg(path: Path, px: int = SVG_PX, timeout: float = 20.0) -> Image.Image | None:
    """An SVG rendered by rsvg-convert within px x px (aspect kept); None if it fails or times out."""
    if shutil.which("rsvg-convert") is None:  # else every SVG source would be dropped as "unreadable"
        raise SystemExit("rsvg-convert is missing: install Debian's librsvg2-bin (make data does)")
    try:
        done = subprocess.run(
            [
                "rsvg-convert",
                "--width",
                str(px),
                "--height",
                str(px),
                "--keep-aspect-ratio",
                "--format",
                "png",
                str(path),
            ],
            capture_output=True,
            timeout=timeout,
        )
        if done.returncode != 0 or not done.stdout:
            return None
        return Image.open(io.BytesIO(done.stdout))
    except (subprocess.TimeoutExpired, OSError):
        return None


def links_external_image(svg: Path) -> bool:
    """True for SVGs that pull in a bitmap by reference: those render with holes."""
    text = svg.read_text(errors="replace")
    return re.search(r"<image\b[^>]*?href\s*=\s*[\"'](?!data:)", text, re.IGNORECASE | re.DOTALL) is not None


def load_picture(path: Path) -> np.ndarray | None:
    """A picture file (SVG or bitmap) on white and trimmed: (H, W, 3) uint8, or None if unreadable."""
    if path.suffix.lower() == ".svg":
        if links_external_image(path):
            return None
        image = rasterize_svg(path)
        return None if image is None else trim_white(on_white(image))
    try:
        with Image.open(path) as image:
            return trim_white(on_white(image))
    except OSError:
        return None
