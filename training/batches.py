"""Training batches made on the training device, a whole batch at a time.

The training split is held as uint8 tensors on the device (128x128 pairs are 64 KB each), with
what never changes computed once per image: the fill regions of each sketch for the ``points``
hint, the uint8 picture of a dense hint per mirror orientation. A batch is then a handful of
tensor ops: gather, flip, sample hints (`contract.batch.sample_points`), encode. Every input equals,
bit for bit, what `hints.encode` makes for the same image, flip and hints (a test proves it), so
training still sees exactly what serving sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from contract import batch as HB
from contract import hints as H
from training.variants import Variant


@dataclass(frozen=True)
class Batch:
    inputs: torch.Tensor  # (B, C, 128, 128) float32 in [-1, 1], the generator input
    targets: torch.Tensor  # (B, 3, 128, 128) float32 in [-1, 1]
    flips: torch.Tensor  # (B,) bool: which pairs were mirrored
    points: HB.PointBatch | None  # the sampled hints (``points`` variants)


def as_arrays(dataset: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """(sketches (N, 128, 128) uint8, colours (N, 128, 128, 3) uint8), read once."""
    if hasattr(dataset, "sketches"):
        return np.asarray(dataset.sketches), np.asarray(dataset.colors)
    pairs = [dataset[i] for i in range(len(dataset))]
    return np.stack([H.sketch_rgb(s).min(axis=2) for s, _ in pairs]), np.stack([c for _, c in pairs])


class BatchMaker:
    """`maker(indices, generator) -> Batch` for one variant, on one device."""

    def __init__(
        self,
        dataset: Sequence,
        variant: Variant,
        device: torch.device,
        *,
        flip: bool = True,
        region_share: float = 0.5,
        recolour: float = 0.0,
    ):
        sketches, colors = as_arrays(dataset)
        self.kind, self.device, self.flip, self.region_share = variant.hint, device, flip, region_share
        self.recolour = recolour
        self.sketches = torch.from_numpy(sketches).to(device)  # (N, 128, 128) uint8
        self.colors = torch.from_numpy(colors).permute(0, 3, 1, 2).contiguous().to(device)  # (N, 3, 128, 128) uint8
        if self.kind is H.HintKind.POINTS:
            # Region labels fit int16 (at most 128*128/2 regions); the partition mirrors with the image.
            self.labels = torch.from_numpy(np.stack([H.fill_labels(s) for s in sketches]).astype(np.int16)).to(device)
        elif self.kind.needs_color_image:
            # (2, N, 3, 128, 128) uint8: neither the 32x32 box blur nor the patch grid is mirror-symmetric.
            dense = [
                [
                    H.dense_image(self.kind, H.sketch_rgb(s[:, ::-1] if f else s), c[:, ::-1] if f else c)
                    for s, c in zip(sketches, colors)
                ]
                for f in (0, 1)
            ]
            self.dense = torch.from_numpy(np.array(dense)).permute(0, 1, 4, 2, 3).contiguous().to(device)

    def __len__(self) -> int:
        return self.sketches.shape[0]

    def __call__(self, indices: np.ndarray | Sequence[int], generator: torch.Generator) -> Batch:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64, device=self.device)
        b = idx.shape[0]
        flips = torch.rand(b, device=self.device, generator=generator) < 0.5
        if not self.flip:
            flips = torch.zeros_like(flips)
        sk, color = mirror(self.sketches[idx], flips), mirror(self.colors[idx], flips)
        points = None
        if self.kind is H.HintKind.POINTS:
            points = HB.sample_points(color, sk, generator, self.region_share)
            labels = mirror(self.labels[idx], flips)
            if self.recolour:
                color, points = recolour_region(color, labels, points, generator, self.recolour)
            inputs = HB.encode_points(sk, labels, points)
        elif self.kind is H.HintKind.NONE:
            inputs = HB.unit(sk)[:, None].expand(b, 3, *sk.shape[1:]).contiguous()
        else:
            dense = self.dense[flips.long(), idx].float()  # already mirrored where flipped
            if self.kind is H.HintKind.BLUR:
                dense = 0.5 * (sk[:, None].float() + dense)  # the same float32 steps as `hints.encode`
            inputs = dense / 127.5 - 1.0
        return Batch(inputs, HB.unit(color), flips, points)


def recolour_region(
    colors: torch.Tensor, labels: torch.Tensor, points: HB.PointBatch, generator: torch.Generator, share: float
) -> tuple[torch.Tensor, HB.PointBatch]:
    """For a `share` of the images with hints: the region under the first hint repainted, in the
    target too, by a random colour shift, and every hint recoloured from the new target.

    In the data a hint's colour always agrees with the whole picture's palette, so a network can
    learn "blue hint: blue picture". Here the hint is the only thing that says the region changed,
    and everything outside it must stay as it was: the training signal for hints that stay put.
    colors: (B, 3, H, W) uint8; labels: (B, H, W) `hints.fill_labels` of each sketch.
    """
    b, device = colors.shape[0], colors.device
    if points.valid.shape[1] == 0:
        return colors, points
    flat = labels.long().reshape(b, -1)
    at = points.rows[:, 0].clamp(0, HB.SIZE - 1) * HB.SIZE + points.cols[:, 0].clamp(0, HB.SIZE - 1)
    region = flat.gather(1, at[:, None])  # (B, 1); 0 = the hint's centre is on a line, which fills no region
    chosen = points.valid[:, 0] & (region[:, 0] > 0) & (torch.rand(b, device=device, generator=generator) < share)
    if not chosen.any():
        return colors, points
    inside = ((flat == region) & chosen[:, None]).reshape(b, 1, *colors.shape[2:])
    new = torch.randint(0, 256, (b, 3), device=device, generator=generator)
    shift = (new - points.rgb[:, 0]).reshape(b, 3, 1, 1)
    colors = torch.where(inside, (colors.long() + shift).clamp(0, 255).to(torch.uint8), colors)
    recoloured = HB.PointBatch(points.rows, points.cols, points.sizes, HB.hint_colours(colors, points), points.valid)
    return colors, recoloured


def mirror(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Images (B, ..., W) with those where flips[b] mirrored left to right."""
    shape = (-1,) + (1,) * (images.dim() - 1)
    return torch.where(flips.view(shape), images.flip(-1), images)


def batch_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """The random stream of one training step: a pure function of (seed, step, rank), so resumes repeat it."""
    key = np.random.SeedSequence([seed, step, rank, 1]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(key))
