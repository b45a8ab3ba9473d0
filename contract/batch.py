"""The ``points`` hint encoding and the training hint samplers, for a whole batch at once in torch.

`contract.hints.encode` is the reference (one image, numpy; the gateway calls it). This module
makes the same tensor, bit for bit, for B images at once on the training device, so a GPU is
not starved by a per-image Python batch maker. Hints travel as padded tensors:

    rows, cols, sizes: (B, K) int64; rgb: (B, K, 3) int64; valid: (B, K) bool

where image b has the hints k with valid[b, k], in order (a later hint paints over an earlier).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from contract import hints as H
from contract.wire import MAX_HINTS

SIZE = H.MODEL_SIZE
SIDE = H.POINT_SIZE_RANGE[1]  # the widest hint square; every hint lives in a SIDE x SIDE window


@dataclass(frozen=True)
class PointBatch:
    rows: torch.Tensor  # (B, K) int64, the square's centre row on the model grid
    cols: torch.Tensor  # (B, K) int64
    sizes: torch.Tensor  # (B, K) int64, side of the square, 1..9
    rgb: torch.Tensor  # (B, K, 3) int64, 0..255
    valid: torch.Tensor  # (B, K) bool

    @staticmethod
    def from_lists(points: list[list[H.PointHint]], device: torch.device | str = "cpu") -> PointBatch:
        """PointHint lists (one per image) as a padded batch."""
        k = max((len(p) for p in points), default=0)
        rows, cols, sizes = (torch.zeros(len(points), k, dtype=torch.int64) for _ in range(3))
        rgb = torch.zeros(len(points), k, 3, dtype=torch.int64)
        valid = torch.zeros(len(points), k, dtype=torch.bool)
        for b, hints in enumerate(points):
            for i, p in enumerate(hints):
                rows[b, i], cols[b, i], sizes[b, i], valid[b, i] = p.row, p.col, p.size, True
                rgb[b, i] = torch.tensor(p.rgb)
        return PointBatch(*(t.to(device) for t in (rows, cols, sizes, rgb, valid)))

    @staticmethod
    def from_wire(table: torch.Tensor) -> PointBatch:
        """`contract.wire` hint tables (B, MAX_HINTS, 6) uint8 as a batch, cut after the last used row."""
        used = table[..., 2] > 0
        k = int(used.nonzero()[:, 1].max()) + 1 if used.any() else 0
        t = table[:, :k].long()
        return PointBatch(t[..., 0], t[..., 1], t[..., 2], t[..., 3:6], used[:, :k])

    def to_lists(self) -> list[list[H.PointHint]]:
        out = []
        for b in range(self.rows.shape[0]):
            ks = self.valid[b].nonzero().flatten().tolist()
            r, c, s, rgb = (t[b].tolist() for t in (self.rows, self.cols, self.sizes, self.rgb))
            out.append([H.PointHint(r[k], c[k], tuple(rgb[k]), s[k]) for k in ks])
        return out


def unit(x: torch.Tensor) -> torch.Tensor:
    """Integers in [0, 255] -> float32 in [-1, 1], the same float32 steps as `hints._unit_rgb`."""
    return x.float() / 127.5 - 1.0


def square_windows(points: PointBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels under each hint square: (flat index (B, K, SIDE*SIDE) into H*W, inside (B, K, SIDE*SIDE) bool)."""
    offsets = torch.arange(SIDE, device=points.rows.device)
    top = points.rows - (points.sizes - 1) // 2  # as PointHint.bounds
    left = points.cols - (points.sizes - 1) // 2
    r = top[..., :, None] + offsets  # (B, K, SIDE)
    c = left[..., :, None] + offsets
    r_in = (offsets < points.sizes[..., None]) & (r >= 0) & (r < SIZE)
    c_in = (offsets < points.sizes[..., None]) & (c >= 0) & (c < SIZE)
    inside = (r_in[..., :, None] & c_in[..., None, :]) & points.valid[..., None, None]
    flat = r.clamp(0, SIZE - 1)[..., :, None] * SIZE + c.clamp(0, SIZE - 1)[..., None, :]
    b, k = points.rows.shape
    return flat.reshape(b, k, SIDE * SIDE), inside.reshape(b, k, SIDE * SIDE)


def encode_points(sketch: torch.Tensor, labels: torch.Tensor, points: PointBatch) -> torch.Tensor:
    """The generator input (B, 11, 128, 128) float32: what `hints.encode("points", ...)` makes per image.

    sketch: (B, 128, 128) uint8; labels: (B, 128, 128) integer, `hints.fill_labels` of each sketch.
    """
    b, k = points.rows.shape
    device = sketch.device
    out = torch.empty(b, 11, SIZE * SIZE, device=device)
    out[:, 0:3] = unit(sketch.reshape(b, 1, -1))
    # Hint squares: each pixel shows the last hint covering it (scatter of the max hint index).
    flat, inside = square_windows(points)
    order = torch.arange(1, k + 1, device=device)[None, :, None].expand_as(flat)
    top = torch.zeros(b, SIZE * SIZE, dtype=torch.int64, device=device)
    top.scatter_reduce_(1, flat.reshape(b, -1), (order * inside).reshape(b, -1), "amax")  # 0 = no hint
    mask = top > 0
    palette = unit(torch.cat([torch.full((b, 3, 1), 127.5, device=device), points.rgb.mT], 2))  # 0.0 for "none"
    out[:, 3:6] = torch.gather(palette, 2, top[:, None].expand(b, 3, -1))
    out[:, 6] = mask
    fill, filled = fill_regions(labels, points)
    out[:, 7:10] = fill.reshape(b, 3, -1)
    out[:, 10] = filled.reshape(b, -1)
    return out.reshape(b, 11, SIZE, SIZE)


def encode_wire(
    kind: H.HintKind, sketch: torch.Tensor, hints: torch.Tensor | None = None, color: torch.Tensor | None = None
) -> torch.Tensor:
    """The generator input (B, C, 128, 128) float32 for a batch of `contract.wire` tensors.

    sketch: (B, 128, 128) uint8 on the compute device; hints: (B, MAX_HINTS, 6) uint8 (``points``);
    color: (B, 128, 128, 3) uint8 (``blur``, ``patches20``). The fill regions (connected
    components) and the dense kinds are computed per image with the reference code on the CPU.
    """
    kind = H.HintKind(kind)
    if kind is H.HintKind.POINTS:
        labels = torch.from_numpy(np.stack([H.fill_labels(s) for s in sketch.cpu().numpy()]))
        return encode_points(sketch, labels.to(sketch.device), PointBatch.from_wire(hints.to(sketch.device)))
    if kind is H.HintKind.NONE:
        return unit(sketch)[:, None].expand(-1, 3, -1, -1).contiguous()
    colors = color.cpu().numpy()
    parts = [H.encode(kind, s, color=c) for s, c in zip(sketch.cpu().numpy(), colors)]
    return torch.from_numpy(np.stack(parts)).to(sketch.device)


def reach(x: torch.Tensor, radius: float | None = None) -> torch.Tensor:
    """How far a ``points`` input's hints may change the output: (B, 1, H, W) in [0, 1].

    1 up to `radius` px (chessboard steps, each a 3x3 max-pool) from the hint squares through the
    regions they fill, fading to 0 over HINT_FADE_PX more, then e^(-d / HINT_REACH_PX) beyond the
    regions' edges: the colour fades across the bounding line instead of stopping at a seam.
    """
    radius = H.HINT_RADIUS_PX if radius is None else radius
    budget = radius + H.HINT_FADE_PX
    passable = torch.maximum(x[:, 10:11], x[:, 6:7]).float()
    s = x[:, 6:7].float() * budget  # px of travel left: spent one per step, only inside the hinted regions
    for _ in range(int(budget)):
        step = torch.maximum(s, (max_3x3(s) - 1.0) * passable)
        if torch.equal(step, s):  # every hinted region already filled within its budget
            break
        s = step
    m = (s / H.HINT_FADE_PX).clamp(0.0, 1.0)
    decay = math.exp(-1.0 / H.HINT_REACH_PX)
    for _ in range(H.HINT_REACH_STEPS):
        m = torch.maximum(m, decay * max_3x3(m))
    return m


def max_3x3(s: torch.Tensor) -> torch.Tensor:
    """Each pixel's maximum over its 3x3 neighbourhood (the image's edge adds nothing): what
    max_pool2d(s, 3, stride=1, padding=1) gives, as two passes of shifted maxima, several times
    faster on a CPU for these one-channel maps."""
    rows = s.clone()
    rows[..., 1:, :] = torch.maximum(rows[..., 1:, :], s[..., :-1, :])
    rows[..., :-1, :] = torch.maximum(rows[..., :-1, :], s[..., 1:, :])
    out = rows.clone()
    out[..., :, 1:] = torch.maximum(out[..., :, 1:], rows[..., :, :-1])
    out[..., :, :-1] = torch.maximum(out[..., :, :-1], rows[..., :, 1:])
    return out


def generate(generator, kind: H.HintKind, x: torch.Tensor, forward_batch: int = 256, confine: bool = True):
    """The generator's answer (B, 3, H, W) in [-1, 1] to inputs `x`, as served.

    A ``points`` input is answered twice, with its hints and without them (the same input with
    channels 3.. zeroed is exactly the no-hint encoding), and the hinted answer is kept only
    within `reach` of the hinted regions. The network alone lets one hint recolour a third of
    the picture outside the hint's region (it reads a hint as evidence of the whole palette);
    this way a hint colours its own region and everything else is left as it was without it.
    ``confine=False`` gives the network's answer alone (to measure what confining changes).
    """

    def run(inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([generator(chunk) for chunk in inputs.split(forward_batch)])

    if not confine or H.HintKind(kind) is not H.HintKind.POINTS:
        return run(x)
    hinted = x[:, 6].flatten(1).amax(1) > 0
    if not bool(hinted.any()):
        return run(x)
    plain = x[hinted].clone()
    plain[:, 3:] = 0
    y = run(torch.cat([x, plain]))
    y, y_plain = y[: x.shape[0]], y[x.shape[0] :]
    m = reach(x[hinted]).to(y.dtype)
    y[hinted] = y_plain + m * (y[hinted] - y_plain)
    return y


def to_image(x: torch.Tensor) -> torch.Tensor:
    """Generator output (B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounded as `hints.from_unit`."""
    return torch.round((x.float() + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def fill_regions(labels: torch.Tensor, points: PointBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """`hints.fill_regions` for a batch: (fill (B, 3, H, W) in [-1, 1], filled (B, H, W) 0/1)."""
    b, k = points.rows.shape
    device = labels.device
    if k == 0:
        return torch.zeros(b, 3, SIZE, SIZE, device=device), torch.zeros(b, SIZE, SIZE, device=device)
    labels = labels.long().reshape(b, -1)
    rows, cols = points.rows.clamp(0, SIZE - 1), points.cols.clamp(0, SIZE - 1)
    under = torch.gather(labels, 1, rows * SIZE + cols)  # (B, K) region under each centre
    for i in ((under == 0) & points.valid).any(1).nonzero().flatten().tolist():  # centres on lines: the reference
        image = labels[i].view(SIZE, SIZE).cpu().numpy()
        under[i] = torch.from_numpy(H.regions_under(image, rows[i].cpu().numpy(), cols[i].cpu().numpy())).to(device)
    under = torch.where(points.valid, under, 0)  # padding fills nothing
    # Soft guess: the nearest hint to each cell centre, first hint on a tie (argmin's rule).
    centres = torch.as_tensor(H.soft_cell_centres(), device=device)
    d = (centres[None, None, :, None] - rows[..., None, None]) ** 2 + (
        centres[None, None, None, :] - cols[..., None, None]
    ) ** 2  # (B, K, cells, cells)
    d = torch.where(points.valid[..., None, None], d, torch.iinfo(torch.int64).max)
    nearest = d.argmin(1).repeat_interleave(H.SOFT_CELL, 1).repeat_interleave(H.SOFT_CELL, 2).reshape(b, -1)
    # In a hinted region, the nearest of its own hints (strict <: the first hint wins a tie). In
    # int32 (a squared distance on the grid is at most 2 * 127**2), each hint's distances made from
    # a row and a column term: the loop runs once per hint over the whole batch.
    far = torch.iinfo(torch.int32).max
    line = torch.arange(SIZE, device=device, dtype=torch.int32)
    labels32, under32 = labels.int(), under.int()
    best = torch.full((b, SIZE * SIZE), far, device=device, dtype=torch.int32)
    for k in range(points.rows.shape[1]):
        dr, dc = line - rows[:, k : k + 1].int(), line - cols[:, k : k + 1].int()  # (B, SIZE) each
        dk = ((dr * dr)[:, :, None] + (dc * dc)[:, None, :]).reshape(b, -1)  # (B, HW)
        own = (labels32 == under32[:, k : k + 1]) & (under32[:, k : k + 1] > 0)
        closer = own & (dk < best)
        best = torch.where(closer, dk, best)
        nearest = torch.where(closer, k, nearest)
    hinted = best < far
    fill = torch.gather(unit(points.rgb.mT), 2, nearest[:, None].expand(b, 3, -1))  # (B, 3, HW)
    fill = torch.where(points.valid.any(1)[:, None, None], fill, 0.0)  # no hints: an all-zero fill
    return fill.reshape(b, 3, SIZE, SIZE), hinted.float().reshape(b, SIZE, SIZE)


# ---------------------------------------------------------------------------------- samplers


def hint_colours(targets: torch.Tensor, points: PointBatch) -> torch.Tensor:
    """The mean target colour under each hint square, rounded half to even: (B, K, 3) int64.

    targets: (B, 3, 128, 128) uint8. Matches `hints.point_from_target` (float64 mean of the
    integer sum, then round).
    """
    b, k = points.rows.shape
    flat, inside = square_windows(points)
    pixels = torch.gather(
        targets.reshape(b, 3, 1, -1).expand(b, 3, k, SIZE * SIZE), 3, flat[:, None].expand(b, 3, k, flat.shape[-1])
    )
    sums = (pixels.long() * inside[:, None]).sum(-1).permute(0, 2, 1)  # (B, K, 3)
    counts = inside.sum(-1, keepdim=True).clamp(min=1)
    return torch.round(sums.double() / counts.double()).long()


def sample_points(
    targets: torch.Tensor, sketches: torch.Tensor, generator: torch.Generator, region_share: float = 0.5
) -> PointBatch:
    """The training hint distribution for a batch, drawn on the batch's device.

    Count ~ Geometric(1/8) - 1 per image, or Geometric(1/32) - 1 for a quarter of them (mean 13,
    one in ten has none; `hints.DENSE_SHARE`), sizes uniform 1..9.
    Positions: for a `region_share` of the images, on coloured pixels away from the lines (the
    way people place hints; `hints.region_points`), else uniform (`hints.random_points`).
    """
    b, device = targets.shape[0], targets.device
    sparse = torch.empty(b, device=device).geometric_(H.POINT_COUNT_P, generator=generator)
    dense = torch.empty(b, device=device).geometric_(H.DENSE_COUNT_P, generator=generator)
    pick_dense = torch.rand(b, device=device, generator=generator) < H.DENSE_SHARE
    counts = torch.where(pick_dense, dense, sparse).long().clamp(max=MAX_HINTS + 1) - 1
    k = int(counts.max()) if b else 0
    lo, hi = H.POINT_SIZE_RANGE
    sizes = torch.randint(lo, hi + 1, (b, k), device=device, generator=generator)
    valid = torch.arange(k, device=device)[None] < counts[:, None]
    uniform = torch.randint(0, SIZE * SIZE, (b, k), device=device, generator=generator)
    use_region = torch.rand(b, device=device, generator=generator) < region_share
    if k:
        weights = region_candidates(targets, sketches).reshape(b, -1).float()
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, 1.0)  # no candidate: uniform
        region = torch.multinomial(weights, k, replacement=True, generator=generator)
        at = torch.where(use_region[:, None], region, uniform)
    else:
        at = uniform
    points = PointBatch(at // SIZE, at % SIZE, sizes, torch.zeros(b, k, 3, dtype=torch.int64, device=device), valid)
    return PointBatch(points.rows, points.cols, sizes, hint_colours(targets, points), valid)


def region_candidates(targets: torch.Tensor, sketches: torch.Tensor) -> torch.Tensor:
    """`hints.region_candidates` for a batch: (B, H, W) bool. targets (B, 3, H, W), sketches (B, H, W) uint8."""
    lines = (sketches < H.LINE_THRESHOLD).float()[:, None]
    side = 2 * H.REGION_LINE_MARGIN + 1
    near_line = F.max_pool2d(lines, side, stride=1, padding=H.REGION_LINE_MARGIN)[:, 0] > 0
    coloured = (targets < H.WHITE_LEVEL).any(1)
    return coloured & ~near_line
