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
  colour, and nothing else is filled. Regions are found so that a gap of up to REGION_GAP px in a
  line does not join them (`fill_labels`); a hint placed on a line fills the region nearest to it.
  An unhinted region is left empty rather than given a guessed colour: a guess from the nearest
  hint told the network to paint that hint's colour everywhere, and one hint recoloured a third
  of the picture.

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
    (64, 64), (32, 32), (96, 96), (32, 96), (96, 32), (32, 64), (64, 32), (64, 96), (96, 64),
    (16, 16), (32, 16), (16, 32), (16, 64), (64, 16), (16, 96), (96, 16), (112, 112),
    (112, 96), (96, 112), (80, 80),
)  # fmt: skip
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
REGION_GAP = 6  # a gap in a line up to this many px wide still separates the regions on its two sides
REGION_LINE_MARGIN = 2  # the region sampler keeps hints this many px away from lines
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
    """The regions a bucket fill sees: (128, 128) int32, k > 0 on region k, -k on a line pixel whose
    nearest region is k.

    A trapped-ball fill: regions are seeded where the distance to every line is more than
    REGION_GAP / 2, so no seed passes through a narrower gap; a line-free component too narrow for
    a seed is a seed of its own. The seeds then grow over the line-free pixels, all at once, one
    pixel a step, so two regions meet halfway through the gap between them. A property of the
    sketch alone, so training computes it once per image (and flips it with the image).
    """
    gray = sketch_rgb(sketch).min(axis=2)
    free = gray >= LINE_THRESHOLD
    if not free.any():  # all line: one region, which only a hint on it can fill
        return np.full(gray.shape, -1, np.int32)
    dist = cv2.distanceTransform(free.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    n_seeds, seeds = cv2.connectedComponents((dist > REGION_GAP / 2).astype(np.uint8), connectivity=4)
    n_free, components = cv2.connectedComponents(free.astype(np.uint8), connectivity=4)
    seeded = np.zeros(n_free, bool)
    seeded[components[seeds > 0]] = True
    lonely = free & ~seeded[components]
    seeds[lonely] = components[lonely] + n_seeds
    labels = _grow(seeds.astype(np.float32), free, REGION_GAP)
    remnant = free & (labels == 0)  # the ends of long corridors narrower than a seed: each joins a neighbour
    if remnant.any():
        n_parts, parts = cv2.connectedComponents(remnant.astype(np.uint8), connectivity=4)
        grown = cv2.dilate(labels, _CROSS)
        touching = remnant & (grown > 0)
        best = np.zeros(n_parts, np.float32)
        np.maximum.at(best, parts[touching], grown[touching])
        labels[remnant] = best[parts[remnant]]
    # A line pixel belongs to the nearest line-free pixel's region (Euclidean; labels are numbered
    # over the line-free pixels in raster order).
    _, nearest = cv2.distanceTransformWithLabels(
        (~free).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    labels = np.where(free, labels, labels[free][nearest - 1])
    labels = labels.astype(np.int32)
    renumber = np.cumsum(np.bincount(labels.ravel()) > 0, dtype=np.int32)  # 1..n, with no unused numbers
    labels = renumber[labels] - renumber[0]  # a pixel left at 0 (none should be) stays no region
    return np.where(free, labels, -labels)


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _grow(labels: np.ndarray, where: np.ndarray, steps: int) -> np.ndarray:
    """Labels (> 0, float32: exact below 2**24) spread into the unlabelled pixels of `where`, one
    4-neighbour step at a time, at most `steps` steps; where two meet, the larger label takes the pixel."""
    labels = labels.copy()
    for _ in range(steps):
        grown = cv2.dilate(labels, _CROSS)
        todo = where & (labels == 0) & (grown > 0)
        if not todo.any():
            break
        labels[todo] = grown[todo]
    return labels


def fill_regions(labels: np.ndarray, points) -> tuple[np.ndarray, np.ndarray]:
    """The hints' colours spread over the image: (fill (H, W, 3) in [-1, 1], filled (H, W) 0/1).

    A region that holds a hint's centre (or whose line the centre is on) takes that hint's colour
    (the mean, if it holds several) and is marked filled: the bucket fill a person would do.
    Everything else is 0 and unmarked. Sums are integers, so any implementation gets the same bits.
    """
    fill = np.zeros((MODEL_SIZE, MODEL_SIZE, 3), np.float32)
    if not points:
        return fill, np.zeros((MODEL_SIZE, MODEL_SIZE), np.float32)
    rgb = np.array([p.rgb for p in points], np.int64)  # (K, 3)
    rows = np.clip([p.row for p in points], 0, MODEL_SIZE - 1)
    cols = np.clip([p.col for p in points], 0, MODEL_SIZE - 1)
    n = int(np.abs(labels).max()) + 1
    under = np.abs(labels[rows, cols])  # the region under each hint's centre, or nearest to it
    sums = np.zeros((n, 3), np.int64)
    np.add.at(sums, under, rgb)
    counts = np.bincount(under, minlength=n)
    counts[0] = 0  # not a region: line pixels (-k) look up slot 0
    mean = _unit_rgb(sums.astype(np.float32) / np.maximum(counts, 1).astype(np.float32)[:, None])
    region = np.maximum(labels, 0)
    hinted = (counts > 0)[region]
    fill[hinted] = mean[region[hinted]]
    return fill, hinted.astype(np.float32)


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
