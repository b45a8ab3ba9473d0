"""Non-learned colourisers that the generators must beat, given exactly the hints the generators get.

Every baseline reads hints as *scribbles*: an RGB image and a boolean mask of the hinted pixels,
made from the same hint objects `contract.hints.encode` turns into network inputs:

- ``point_scribbles``: the squares of `PointHint`s (the guided variant's hints),
- ``patch_scribbles``: the study's 20 fixed 7x7 patches of the colour image (``patches20``),
- ``dense_scribbles``: the box-blurred colour image at every pixel (``blur``).

Baselines:

- ``sketch``: the line art returned as-is (what a colouriser that learned nothing would output).
- ``nearest_hint``: every pixel takes the colour of its nearest hinted pixel (a Voronoi fill that
  ignores the lines); no hints -> the sketch.
- ``levin2004``: Levin, Lischinski & Weiss, "Colorization using Optimization" (SIGGRAPH 2004):
  neighbouring pixels of similar intensity should have similar colour, solved as one sparse
  linear system with the hints as hard constraints. See `levin_colorize` for the two choices
  made to fit line art.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import scipy.ndimage
import scipy.sparse
import scipy.sparse.linalg

from contract.hints import BLUR_KERNEL, MODEL_SIZE, PATCH_CORNERS, PATCH_SIZE, PointHint, sketch_rgb

BASELINES = ("sketch", "nearest_hint", "levin2004")

# Levin weights w_rs = exp(-(Y_r - Y_s)^2 / (2 sigma^2)) on Y in [0, 1]. A fixed sigma instead of
# the paper's local variance: line art is flat paper and flat ink, where a local variance is ~0.
LEVIN_SIGMA = 0.1
# Added to every weight so that a region no hint reaches is still (weakly) connected: it then
# takes a smooth blend of its neighbours' colours instead of making the system singular.
LEVIN_FLOOR = 1e-6


def point_scribbles(points: Sequence[PointHint], size: int = MODEL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Point hints painted as squares: (rgb (H, W, 3) uint8, mask (H, W) bool); later hints win, as in encode."""
    rgb = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size), bool)
    for p in points:
        top, bottom, left, right = p.bounds()
        rgb[top:bottom, left:right] = p.rgb
        mask[top:bottom, left:right] = True
    return rgb, mask


def patch_scribbles(color: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The study's 20 fixed patches of `color` (what the ``patches20`` encoding copies into the sketch)."""
    rgb = np.zeros_like(color)
    mask = np.zeros(color.shape[:2], bool)
    for r, c in PATCH_CORNERS:
        rgb[r : r + PATCH_SIZE, c : c + PATCH_SIZE] = color[r : r + PATCH_SIZE, c : c + PATCH_SIZE]
        mask[r : r + PATCH_SIZE, c : c + PATCH_SIZE] = True
    return rgb, mask


def dense_scribbles(color: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``blur`` encoding's colour information: the box-blurred colour image, hinted everywhere."""
    return cv2.blur(color, BLUR_KERNEL), np.ones(color.shape[:2], bool)


def sketch_baseline(sketch: np.ndarray) -> np.ndarray:
    """The sketch as an RGB image: (H, W, 3) uint8."""
    return sketch_rgb(sketch).copy()


def nearest_hint_fill(sketch: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each pixel gets the colour of its nearest hinted pixel (Euclidean); no hints -> the sketch."""
    if not mask.any():
        return sketch_baseline(sketch)
    _, (rows, cols) = scipy.ndimage.distance_transform_edt(~mask, return_indices=True)
    return rgb[rows, cols]


def levin_colorize(
    sketch: np.ndarray,
    rgb: np.ndarray,
    mask: np.ndarray,
    sigma: float = LEVIN_SIGMA,
    floor: float = LEVIN_FLOOR,
) -> np.ndarray:
    """Levin et al. 2004 on line art: hint colours spread along the paper and stopped by the lines.

    The method minimises sum_r (C(r) - sum_s w_rs C(s) / sum_s w_rs)^2 over the 3x3 neighbours s of
    each pixel r, with the hinted pixels fixed; the weights come from the sketch's intensity Y, so
    colour flows freely across flat paper and hardly at all across a dark line. Equivalently
    (the row-normalised equations are the rows of the graph Laplacian L = D - W), the free pixels
    solve the symmetric system L_ff C_f = -L_fh C_h, one sparse LU factorisation for all channels.

    Two departures from the paper, both for line art:
    - The paper propagates only chrominance (U, V) and keeps the grey input's Y. A sketch's Y is
      white almost everywhere, so that would wash every colour out; here all three YUV channels of
      the hints are propagated (a linear map of RGB, so RGB is solved directly, same result).
    - The filled colour is then multiplied by sketch / 255, so the lines stay as dark as drawn.

    sketch: (H, W) or (H, W, 3) uint8; rgb: (H, W, 3) uint8 hint colours; mask: (H, W) bool.
    Returns (H, W, 3) uint8. No hints -> the sketch.
    """
    sk = sketch_rgb(sketch)
    shade = sk.astype(np.float64).mean(axis=2) / 255.0  # (H, W) in [0, 1]: 1 = paper, 0 = ink
    if not mask.any():
        return sk.copy()
    if mask.all():
        colour = rgb.astype(np.float64)
    else:
        colour = _solve_levin(shade, rgb.astype(np.float64), mask, sigma, floor)
    return np.clip(np.rint(colour * shade[:, :, None]), 0, 255).astype(np.uint8)


def _solve_levin(shade: np.ndarray, rgb: np.ndarray, mask: np.ndarray, sigma: float, floor: float) -> np.ndarray:
    """The colour (H, W, 3) float of every pixel: hints where mask, the harmonic fill elsewhere."""
    h, w = shade.shape
    index = np.arange(h * w).reshape(h, w)
    rows, cols, weights = [], [], []
    # Each undirected 8-neighbour edge once: right, down, down-right, down-left.
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = index[: h - dr, max(0, -dc) : w - max(0, dc)].ravel()  # pixel r
        b = index[dr:, max(0, dc) : w - max(0, -dc)].ravel()  # its neighbour s = r + (dr, dc)
        diff = shade.ravel()[a] - shade.ravel()[b]
        rows.append(a)
        cols.append(b)
        weights.append(np.exp(-(diff**2) / (2 * sigma**2)) + floor)
    i, j, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
    n = h * w
    adjacency = scipy.sparse.coo_matrix((np.r_[v, v], (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    laplacian = (scipy.sparse.diags(np.asarray(adjacency.sum(axis=1)).ravel()) - adjacency).tocsr()

    fixed = mask.ravel()
    free = ~fixed
    colour = rgb.reshape(n, 3).copy()
    rhs = -(laplacian[free][:, fixed] @ colour[fixed])  # (n_free, 3)
    # The system is symmetric positive definite: a symmetric fill-reducing ordering and no pivoting
    # factorise it about twice as fast as SuperLU's defaults.
    lu = scipy.sparse.linalg.splu(
        laplacian[free][:, free].tocsc(),
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    colour[free] = lu.solve(np.ascontiguousarray(rhs))
    return colour.reshape(h, w, 3)


def run_baseline(name: str, sketch: np.ndarray, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Baseline `name` (one of BASELINES) on one sketch and its scribbles: (H, W, 3) uint8."""
    if name == "sketch":
        return sketch_baseline(sketch)
    if name == "nearest_hint":
        return nearest_hint_fill(sketch, rgb, mask)
    if name == "levin2004":
        return levin_colorize(sketch, rgb, mask)
    raise ValueError(f"unknown baseline {name!r}: use one of {BASELINES}")
