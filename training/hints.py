"""Colour-hint encodings: how a sketch and its hints become the generator's input tensor.

Training and serving both call `encode`, so the tensor a model was trained on is, bit for bit,
the tensor it is served. Every function works on one 128x128 image in uint8 HWC and returns
float32 CHW in [-1, 1].

Kinds:
- ``none``: the sketch alone (3 channels).
- ``blur``: the study's dense hint, 0.5 * (sketch + box-blur(colour, 32x32)) (3 channels).
- ``patches20``: the study's 20 fixed 7x7 patches of the colour copied into the sketch
  (3 channels, no mask).
- ``points``: hints anywhere, any count: sketch (3) + hint RGB (3) + hint mask (1), as the study
  describes, plus a fill (3) and its mask (1) = 11 channels. The fill is what a person with a
  paint bucket would do with the hints: each region enclosed by lines that holds a hint takes its
  colour; elsewhere a Gaussian-weighted average of the hint colours stands in. It turns a handful
  of dots into a dense colour guess, the way the ``blur`` hint is dense, so that a small network
  learns to use sparse hints within an hour of CPU training.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

MODEL_SIZE = 128

# (row, col) top-left corners of the study's 20 patches, in the study's order.
PATCH_CORNERS: tuple[tuple[int, int], ...] = (
    (64, 64), (32, 32), (96, 96), (32, 96), (96, 32), (32, 64), (64, 32), (64, 96), (96, 64),
    (16, 16), (32, 16), (16, 32), (16, 64), (64, 16), (16, 96), (96, 16), (112, 112),
    (112, 96), (96, 112), (80, 80),
)  # fmt: skip
PATCH_SIZE = 7
BLUR_KERNEL = (32, 32)
POINT_SIZE_RANGE = (1, 9)  # side of a hint square, in model pixels
POINT_COUNT_P = 1 / 8  # training hint count ~ Geometric(p) - 1: mean 7, one in eight has none
SPREAD_SIGMA = 12.0  # px; how far a point hint's colour reaches in the soft-guess fill
LINE_THRESHOLD = 128  # sketch pixels darker than this are lines, which bound the fill regions


class HintKind(StrEnum):
    NONE = "none"
    BLUR = "blur"
    PATCHES20 = "patches20"
    POINTS = "points"

    @property
    def channels(self) -> int:
        return 11 if self is HintKind.POINTS else 3

    @property
    def needs_color_image(self) -> bool:
        """Whether the encoding reads a dense colour image (the target, or a user's rough colours)."""
        return self in (HintKind.BLUR, HintKind.PATCHES20)


@dataclass(frozen=True)
class PointHint:
    """A square of one colour centred at (row, col), `size` pixels wide, on the model grid."""

    row: int
    col: int
    rgb: tuple[int, int, int]
    size: int = 5

    def bounds(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the square, clipped to the image, bottom/right exclusive."""
        top = self.row - (self.size - 1) // 2
        left = self.col - (self.size - 1) // 2
        return (
            max(top, 0),
            min(top + self.size, MODEL_SIZE),
            max(left, 0),
            min(left + self.size, MODEL_SIZE),
        )


def to_unit(image: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return image.astype(np.float32) / 127.5 - 1.0


def from_unit(x: np.ndarray) -> np.ndarray:
    """float [-1, 1] (CHW or HWC, as given) -> uint8 [0, 255], rounded."""
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def sketch_rgb(sketch: np.ndarray) -> np.ndarray:
    """A grayscale (H, W) or (H, W, 1) or RGB sketch as (H, W, 3) uint8."""
    if sketch.ndim == 2:
        return np.repeat(sketch[:, :, None], 3, axis=2)
    if sketch.shape[2] == 1:
        return np.repeat(sketch, 3, axis=2)
    return sketch[:, :, :3]


def encode(
    kind: HintKind | str,
    sketch: np.ndarray,
    *,
    color: np.ndarray | None = None,
    points: tuple[PointHint, ...] | list[PointHint] = (),
) -> np.ndarray:
    """The generator input (C, 128, 128) float32 in [-1, 1] for one sketch and its hints.

    sketch: (128, 128) or (128, 128, 3) uint8. color: (128, 128, 3) uint8, required by ``blur``
    and ``patches20``. points: only for ``points``.
    """
    kind = HintKind(kind)
    sk = sketch_rgb(sketch)
    if sk.shape[:2] != (MODEL_SIZE, MODEL_SIZE):
        raise ValueError(f"sketch must be {MODEL_SIZE}x{MODEL_SIZE}, got {sk.shape[1]}x{sk.shape[0]}")
    if kind.needs_color_image:
        if color is None or color.shape != (MODEL_SIZE, MODEL_SIZE, 3):
            shape = None if color is None else color.shape
            raise ValueError(f"the {kind.value} hint needs a {MODEL_SIZE}x{MODEL_SIZE} RGB colour image, got {shape}")
    if points and kind is not HintKind.POINTS:
        raise ValueError(f"the {kind.value} hint takes no point hints")

    if kind is HintKind.NONE:
        image = sk.astype(np.float32)
    elif kind is HintKind.BLUR:
        blurred = cv2.blur(color, BLUR_KERNEL).astype(np.float32)
        image = 0.5 * (sk.astype(np.float32) + blurred)
    elif kind is HintKind.PATCHES20:
        image = sk.copy()
        for r, c in PATCH_CORNERS:
            image[r : r + PATCH_SIZE, c : c + PATCH_SIZE] = color[r : r + PATCH_SIZE, c : c + PATCH_SIZE]
        image = image.astype(np.float32)
    else:
        return _encode_points(sk, points)
    return (image / 127.5 - 1.0).transpose(2, 0, 1).copy()


def _encode_points(sk: np.ndarray, points: tuple[PointHint, ...] | list[PointHint]) -> np.ndarray:
    hint = np.zeros((MODEL_SIZE, MODEL_SIZE, 3), np.float32)  # hint colours in [-1, 1], 0 elsewhere
    mask = np.zeros((MODEL_SIZE, MODEL_SIZE), np.float32)
    for p in points:
        top, bottom, left, right = p.bounds()
        hint[top:bottom, left:right] = np.asarray(p.rgb, np.float32) / 127.5 - 1.0
        mask[top:bottom, left:right] = 1.0
    fill, filled = _fill_regions(sk, points)
    channels = [sk.astype(np.float32) / 127.5 - 1.0, hint, mask[:, :, None], fill, filled[:, :, None]]
    return np.concatenate(channels, axis=2).transpose(2, 0, 1).copy()


def _fill_regions(sk: np.ndarray, points) -> tuple[np.ndarray, np.ndarray]:
    """The hints' colours spread over the image: (fill (H, W, 3) in [-1, 1], filled (H, W) 0/1).

    A region of the sketch enclosed by lines that holds a hint's centre takes that hint's colour (the
    mean, if it holds several) and is marked filled: the bucket fill a person would do. Everywhere else
    the fill is a Gaussian-weighted average of all hint colours (a soft guess, marked 0).
    """
    if not points:
        return np.zeros((MODEL_SIZE, MODEL_SIZE, 3), np.float32), np.zeros((MODEL_SIZE, MODEL_SIZE), np.float32)
    colors = np.array([p.rgb for p in points], np.float32) / 127.5 - 1.0
    # Soft guess: normalised convolution of the hint squares, blurred at quarter resolution (fast).
    weight = np.zeros((MODEL_SIZE, MODEL_SIZE), np.float32)
    total = np.zeros((MODEL_SIZE, MODEL_SIZE, 3), np.float32)
    for p, c in zip(points, colors):
        top, bottom, left, right = p.bounds()
        weight[top:bottom, left:right] += 1.0
        total[top:bottom, left:right] += c
    weight, total = (_blur_quarter(a) for a in (weight, total))
    soft = np.where(weight[:, :, None] > 1e-6, total / np.maximum(weight, 1e-6)[:, :, None], 0.0)
    # Bucket fill: regions are the 4-connected components of non-line pixels (label 0 = lines).
    free = sk.min(axis=2) >= LINE_THRESHOLD
    n, labels = cv2.connectedComponents(free.astype(np.uint8), connectivity=4)
    sums, counts = np.zeros((n, 3), np.float32), np.zeros(n, np.float32)
    for p, c in zip(points, colors):
        row, col = min(max(p.row, 0), MODEL_SIZE - 1), min(max(p.col, 0), MODEL_SIZE - 1)
        label = labels[row, col]  # the region under the hint's centre; a hint on a line fills none
        sums[label] += c
        counts[label] += 1
    counts[0] = 0  # lines are not a region
    hinted = (counts > 0)[labels]
    fill = np.where(hinted[:, :, None], (sums / np.maximum(counts, 1)[:, None])[labels], soft)
    return fill.astype(np.float32), hinted.astype(np.float32)


def _blur_quarter(a: np.ndarray) -> np.ndarray:
    small = cv2.resize(a, (MODEL_SIZE // 4, MODEL_SIZE // 4), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), SPREAD_SIGMA / 4, borderType=cv2.BORDER_CONSTANT)
    return cv2.resize(small, (MODEL_SIZE, MODEL_SIZE), interpolation=cv2.INTER_LINEAR)


def point_from_target(target: np.ndarray, row: int, col: int, size: int) -> PointHint:
    """A hint at (row, col) whose colour is the mean of `target` under its square."""
    p = PointHint(row, col, (0, 0, 0), size)
    top, bottom, left, right = p.bounds()
    mean = target[top:bottom, left:right].reshape(-1, 3).mean(axis=0)
    return PointHint(row, col, tuple(int(round(v)) for v in mean), size)


def random_points(target: np.ndarray, count: int, rng: np.random.Generator) -> list[PointHint]:
    """`count` hints at uniform random positions and sizes, coloured from the target."""
    lo, hi = POINT_SIZE_RANGE
    rows = rng.integers(0, MODEL_SIZE, count)
    cols = rng.integers(0, MODEL_SIZE, count)
    sizes = rng.integers(lo, hi + 1, count)
    return [point_from_target(target, int(r), int(c), int(s)) for r, c, s in zip(rows, cols, sizes)]


def sample_training_points(target: np.ndarray, rng: np.random.Generator) -> list[PointHint]:
    """The training distribution: count ~ Geometric(1/8) - 1 (many with none), positions uniform."""
    return random_points(target, int(rng.geometric(POINT_COUNT_P)) - 1, rng)
