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
  colour (lines are thickened by one pixel first, so a 1-2 px gap in a sketch's line does not let
  the colour leak out; with several hints, each pixel its nearest one's); elsewhere the colour of
  the nearest hint stands in, on a 4-px grid. It turns a handful of dots into a dense colour
  guess, the way the ``blur`` hint is dense, so that a small network learns to use sparse hints
  within an hour of CPU training. What a hint may change in the answer is bounded when it is
  served (`contract.batch.generate`): its region, as far as HINT_RADIUS_PX from the hint.

The ``points`` encoding is integer arithmetic up to one final float32 step, so the batched torch
encoder that training runs on its device (`contract.batch`) makes bit-identical tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

MODEL_SIZE = 128

# (row, col) top-left corners of the study's 20 patches, in the study's order.
PATCH_CORNERS: tuple[tuple[int, int], ...] = (
    (64, 64),
    (32, 32),
    (96, 96),
    (32, 96),
    (96, 32),
    (32, 64),
    (64, 32),
    (64, 96),
    (96, 64),
    (16, 16),
    (32, 16),
    (16, 32),
    (16, 64),
    (64, 16),
    (16, 96),
    (96, 16),
    (112, 112),
    (112, 96),
    (96, 112),
    (80, 80),
)
PATCH_SIZE = 7
BLUR_KERNEL = (32, 32)
POINT_SIZE_RANGE = (1, 9)  # side of a hint square, in model pixels
DEFAULT_POINT_SIZE = 5  # a hint that gives no size (the API's 0)
# Training hint count ~ Geometric(p) - 1 with p = POINT_COUNT_P (mean 7), but for a DENSE_SHARE of the
# images p = DENSE_COUNT_P (mean 31): with only the first, 50 hints came once in 800 images and the
# model never learnt to follow many (50 region hints gained 4.2 dB over none, 10 gained 3.5).
POINT_COUNT_P = 1 / 8
DENSE_COUNT_P = 1 / 32
DENSE_SHARE = 1 / 4
LINE_THRESHOLD = 128  # sketch pixels darker than this are lines, which bound the fill regions
LINE_GROW = 3  # lines are dilated by this square before regions are found: gaps of <= 2 px close
SOFT_CELL = 4  # the nearest-hint guess is made per SOFT_CELL x SOFT_CELL cell (cheap, and only a guess)
REGION_LINE_MARGIN = 2  # the region sampler keeps hints this many px away from lines
# How far a served hint reaches (`batch.reach`): through its filled region (not across lines) up to
# HINT_RADIUS_PX from the hint square, fading out over the next HINT_FADE_PX, then e^(-d / HINT_REACH_PX)
# past the region's edge so no hard seam shows. A sketch whose lines do not close (a figure open at
# the neck) is one region, and without the radius one blue hint on the shirt turned the face blue.
HINT_RADIUS_PX = 32.0
HINT_FADE_PX = 8.0
HINT_REACH_PX = 1.5
HINT_REACH_STEPS = 8  # e^(-8 / 1.5) = 0.005: nothing visible is cut off
WHITE_LEVEL = 235  # a target pixel with every channel at or above this is background, not colour


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
    size: int = DEFAULT_POINT_SIZE

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

    if kind is HintKind.POINTS:
        return _encode_points(sk, points)
    image = dense_image(kind, sk, color).astype(np.float32)
    if kind is HintKind.BLUR:
        image = 0.5 * (sk.astype(np.float32) + image)
    return (image / 127.5 - 1.0).transpose(2, 0, 1).copy()


def dense_image(kind: HintKind, sk: np.ndarray, color: np.ndarray | None) -> np.ndarray:
    """The uint8 picture a dense kind is made from: (128, 128, 3), the sketch (``none``), the
    box-blurred colour (``blur``, then averaged with the sketch) or the sketch with the patches."""
    if kind is HintKind.NONE:
        return sk
    if kind is HintKind.BLUR:
        return cv2.blur(color, BLUR_KERNEL)
    if kind is HintKind.PATCHES20:
        image = sk.copy()
        for r, c in PATCH_CORNERS:
            image[r : r + PATCH_SIZE, c : c + PATCH_SIZE] = color[r : r + PATCH_SIZE, c : c + PATCH_SIZE]
        return image
    raise ValueError(f"{kind.value} is not a dense hint kind")


def _encode_points(sk: np.ndarray, points: tuple[PointHint, ...] | list[PointHint]) -> np.ndarray:
    hint = np.zeros((MODEL_SIZE, MODEL_SIZE, 3), np.float32)  # hint colours in [-1, 1], 0 elsewhere
    mask = np.zeros((MODEL_SIZE, MODEL_SIZE), np.float32)
    for p in points:
        top, bottom, left, right = p.bounds()
        hint[top:bottom, left:right] = _unit_rgb(np.asarray(p.rgb))
        mask[top:bottom, left:right] = 1.0
    fill, filled = fill_regions(fill_labels(sk), points)
    channels = [_unit_rgb(sk), hint, mask[:, :, None], fill, filled[:, :, None]]
    return np.concatenate(channels, axis=2).transpose(2, 0, 1).copy()


def _unit_rgb(values: np.ndarray) -> np.ndarray:
    """Integers (or exact integer floats) in [0, 255] -> float32 in [-1, 1]; the one float step."""
    return np.asarray(values).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def fill_labels(sketch: np.ndarray) -> np.ndarray:
    """The regions a bucket fill sees: (128, 128) int32, 0 on (thickened) lines, 1.. per region.

    A property of the sketch alone, so training computes it once per image (and flips it with
    the image: the partition is mirror-symmetric).
    """
    gray = sketch_rgb(sketch).min(axis=2)
    lines = cv2.dilate((gray < LINE_THRESHOLD).astype(np.uint8), np.ones((LINE_GROW, LINE_GROW), np.uint8))
    _, labels = cv2.connectedComponents(1 - lines, connectivity=4)
    return labels.astype(np.int32)


def regions_under(labels: np.ndarray, rows, cols) -> np.ndarray:
    """The fill region under each hint centre (rows, cols in the image); for a centre on a line,
    the nearest region's (Euclidean, scipy's tie order), so a hint placed on a line still fills."""
    under = labels[rows, cols]
    if (under == 0).any() and labels.max() > 0:
        from scipy import ndimage

        near = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
        under = labels[near[0][rows, cols], near[1][rows, cols]]
    return under


def soft_cell_centres() -> np.ndarray:
    """Row (= column) coordinate of each soft-guess cell's centre: (128 / SOFT_CELL,) int."""
    return np.arange(MODEL_SIZE // SOFT_CELL) * SOFT_CELL + SOFT_CELL // 2


def fill_regions(labels: np.ndarray, points) -> tuple[np.ndarray, np.ndarray]:
    """The hints' colours spread over the image: (fill (H, W, 3) in [-1, 1], filled (H, W) 0/1).

    A region that holds a hint's centre is marked filled, and each of its pixels takes the colour
    of the nearest hint in it (squared distance to the centre, the first hint on a tie): the bucket
    fill a person would do, and with two hints in one region (skin on the face, blue on the shirt
    of a figure whose lines do not close at the neck) each keeps its own side rather than both
    taking their mean. A centre on a line counts for the nearest region. Everywhere else the fill
    is the colour of the hint nearest to the pixel's 4x4 cell (a soft guess, marked 0; the first
    hint wins a tie). Distances are integers, so any implementation gets the same bits.
    """
    if not points:
        return np.zeros((MODEL_SIZE, MODEL_SIZE, 3), np.float32), np.zeros((MODEL_SIZE, MODEL_SIZE), np.float32)
    rgb = np.array([p.rgb for p in points], np.int64)  # (K, 3)
    rows = np.clip([p.row for p in points], 0, MODEL_SIZE - 1)
    cols = np.clip([p.col for p in points], 0, MODEL_SIZE - 1)
    under = regions_under(labels, rows, cols)
    # Soft guess: squared distances from each cell centre to each hint centre, nearest hint's colour.
    centres = soft_cell_centres()
    d = (centres[None, :, None] - rows[:, None, None]) ** 2 + (centres[None, None, :] - cols[:, None, None]) ** 2
    nearest = d.argmin(axis=0).repeat(SOFT_CELL, axis=0).repeat(SOFT_CELL, axis=1)  # (H, W) hint index
    hinted = np.isin(labels, under[under > 0])
    for region in np.unique(under[under > 0]):  # in each hinted region, the nearest of its own hints
        ks = np.flatnonzero(under == region)
        r, c = np.nonzero(labels == region)
        d = (r[None] - rows[ks, None]) ** 2 + (c[None] - cols[ks, None]) ** 2  # (k, pixels)
        nearest[r, c] = ks[d.argmin(axis=0)]
    return _unit_rgb(rgb)[nearest].astype(np.float32), hinted.astype(np.float32)


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
    """The training distribution: count ~ Geometric(1/8 or 1/32) - 1 (see DENSE_SHARE), positions uniform."""
    p = DENSE_COUNT_P if rng.random() < DENSE_SHARE else POINT_COUNT_P
    return random_points(target, int(rng.geometric(p)) - 1, rng)


def region_candidates(target: np.ndarray, sketch: np.ndarray) -> np.ndarray:
    """Where a person would put a hint: (H, W) bool, coloured target pixels away from the lines."""
    lines = sketch_rgb(sketch).min(axis=2) < LINE_THRESHOLD
    side = 2 * REGION_LINE_MARGIN + 1
    near_line = cv2.dilate(lines.astype(np.uint8), np.ones((side, side), np.uint8)).astype(bool)
    coloured = (target < WHITE_LEVEL).any(axis=2)
    return coloured & ~near_line


def region_points(target: np.ndarray, sketch: np.ndarray, count: int, rng: np.random.Generator) -> list[PointHint]:
    """`count` hints the way people place them: on coloured regions, off the lines, coloured from
    the target under the square; uniform positions when the image has no such pixel."""
    where = np.flatnonzero(region_candidates(target, sketch))
    if where.size == 0:
        return random_points(target, count, rng)
    lo, hi = POINT_SIZE_RANGE
    picks = where[rng.integers(0, where.size, count)]
    sizes = rng.integers(lo, hi + 1, count)
    return [point_from_target(target, int(i) // MODEL_SIZE, int(i) % MODEL_SIZE, int(s)) for i, s in zip(picks, sizes)]
