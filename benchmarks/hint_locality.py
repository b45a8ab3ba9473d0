"""Hint metrics seen from the user's side: does a hint colour its own region and leave the rest alone?

PSNR rises with hints even when one blue dot on a shirt also turns the face blue, so these
measure that directly, from the target alone (no model's choice in them). A hint's *region* is
the 4-connected set of target pixels within dE76 < REGION_DE of the hint's colour, flooded from
the hint's centre: what a person means by "this part". For each image, with the quality
benchmark's fixed region hints (`quality_plan.hint_points`, placement ``region``):

- *locality*: the share of pixels outside the first hint's region whose output moves by more than
  MOVE_DE between the output without hints and with that one hint;
- *bleed* (with 0 and with BLEED_HINTS hints): the share of pixels outside every hinted region
  whose output is within BLEED_NEAR of some hint's colour while the target there is more than
  BLEED_FAR from it. With 0 hints it is how often the model paints those colours anyway;
- *obedience* (with 1 and BLEED_HINTS hints): the mean dE76 between output and target inside
  the hinted regions.

Colour differences are CIE76 on CIELAB (skimage, sRGB D65).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage.color import rgb2lab

from benchmarks.image_metrics import summarize
from benchmarks.quality_plan import Example, HintSetting, sample_indices
from contract import hints as H

REGION_DE = 12.0
MOVE_DE = 10.0
BLEED_NEAR = 15.0
BLEED_FAR = 30.0
BLEED_HINTS = 10
SHEET_ROWS = 6


def lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 CIELAB."""
    return rgb2lab(np.asarray(rgb, np.uint8)).astype(np.float32)


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 between two CIELAB arrays (broadcasting)."""
    return np.sqrt(((a - b) ** 2).sum(axis=-1))


def hint_region(target_lab: np.ndarray, hint: H.PointHint) -> np.ndarray:
    """(H, W) bool: the 4-connected target pixels within REGION_DE of the hint's colour, from its centre."""
    close = (delta_e(target_lab, lab(np.array(hint.rgb))) < REGION_DE).astype(np.uint8)
    close[hint.row, hint.col] = 1  # the centre always belongs to its own hint
    _, parts = cv2.connectedComponents(close, connectivity=4)
    return parts == parts[hint.row, hint.col]


def locality(without: np.ndarray, with_hint: np.ndarray, region: np.ndarray) -> float:
    """Share of the pixels outside `region` whose colour moves by more than MOVE_DE (outputs in CIELAB)."""
    return float((delta_e(without, with_hint)[~region] > MOVE_DE).mean())


def bleed(output_lab: np.ndarray, target_lab: np.ndarray, hints: Sequence[H.PointHint], outside: np.ndarray) -> float:
    """Share of the `outside` pixels painted in some hint's colour where the target is far from it."""
    colours = lab(np.array([h.rgb for h in hints]))  # (K, 3)
    near = delta_e(output_lab[..., None, :], colours) < BLEED_NEAR  # (H, W, K)
    far = delta_e(target_lab[..., None, :], colours) > BLEED_FAR
    return float((near & far).any(axis=-1)[outside].mean())


@dataclass
class Locality:
    """Per-image scores of one variant, and the examples a sheet is drawn from."""

    scores: dict[str, list[float]]
    sheet: list[tuple[Example, H.PointHint, np.ndarray, np.ndarray, np.ndarray]]

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: summarize(values) for name, values in self.scores.items()}


def evaluate(backend, variant: str, dataset: Sequence, batch: int = 32, sheet_rows: int = SHEET_ROWS) -> Locality:
    """Locality, bleed and obedience of `variant` over `dataset` (pairs), through `backend` (`quality_backends`)."""
    names = ("locality", "bleed_0", f"bleed_{BLEED_HINTS}", "obedience_1", f"obedience_{BLEED_HINTS}")
    result = Locality({name: [] for name in names}, [])
    keep = set(sample_indices(len(dataset), sheet_rows))
    settings = [HintSetting(H.HintKind.POINTS, k, "region") for k in (0, 1, BLEED_HINTS)]
    for start in range(0, len(dataset), batch):
        examples = [Example(i, *dataset[i]) for i in range(start, min(start + batch, len(dataset)))]
        none, one, many = (backend.colorize(variant, s, examples) for s in settings)
        for e, out0, out1, out_k in zip(examples, none, one, many, strict=True):
            hints = e.points(settings[2])
            if not hints:
                continue
            target = lab(e.target)
            regions = [hint_region(target, h) for h in hints]
            hinted = np.logical_or.reduce(regions)
            out0_lab, out1_lab, outk_lab = lab(out0), lab(out1), lab(out_k)
            result.scores["locality"].append(locality(out0_lab, out1_lab, regions[0]))
            result.scores["bleed_0"].append(bleed(out0_lab, target, hints, ~hinted))
            result.scores[f"bleed_{BLEED_HINTS}"].append(bleed(outk_lab, target, hints, ~hinted))
            result.scores["obedience_1"].append(float(delta_e(out1_lab, target)[regions[0]].mean()))
            result.scores[f"obedience_{BLEED_HINTS}"].append(float(delta_e(outk_lab, target)[hinted].mean()))
            if e.index in keep:
                result.sheet.append((e, hints[0], out0, out1, regions[0]))
    return result


def sheet_file(label: str) -> str:
    """The file name of a variant's (or a row label's) sheet, e.g. ``hint_effect_guided.png``."""
    return "hint_effect_" + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") + ".png"


def plot_sheet(result: Locality, path: Path, title: str) -> None:
    """One row per example: the sketch with its hint (region outlined), output without, with, and how far
    each pixel moved (dE76, 0 black .. 30+ white; red: moved by more than MOVE_DE outside the region)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.sheet
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 4, figsize=(8, 2.1 * len(rows)), squeeze=False)
    for ax_row, (e, hint, out0, out1, region) in zip(axes, rows, strict=True):
        sketch = H.sketch_rgb(e.sketch).copy()
        outline = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)) - region.astype(np.uint8)
        sketch[outline > 0] = (0, 200, 255)
        top, bottom, left, right = hint.bounds()
        sketch[top:bottom, left:right] = hint.rgb
        moved = delta_e(lab(out0), lab(out1))
        diff = np.repeat((np.clip(moved / 30.0, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
        diff[(moved > MOVE_DE) & ~region] = (230, 40, 40)
        share = float((moved[~region] > MOVE_DE).mean())
        panels = [
            (sketch, "sketch, hint, its region"),
            (out0, "no hint"),
            (out1, "one hint"),
            (diff, f"moved: {share:.0%} outside"),
        ]
        for ax, (image, label) in zip(ax_row, panels, strict=True):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_lines(by_variant: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """A markdown table: one row per variant, mean ± standard error of each score."""
    if not by_variant:
        return []
    names = list(next(iter(by_variant.values())))
    header = {
        "locality": f"locality (moved > dE {MOVE_DE:g} outside, 1 hint) ↓",
        "bleed_0": "bleed, 0 hints",
        f"bleed_{BLEED_HINTS}": f"bleed, {BLEED_HINTS} hints ↓",
        "obedience_1": "obedience dE, 1 hint ↓",
        f"obedience_{BLEED_HINTS}": f"obedience dE, {BLEED_HINTS} hints ↓",
    }
    lines = ["| variant | " + " | ".join(header.get(n, n) for n in names) + " |", "|---|" + "---:|" * len(names)]
    for variant, summary in by_variant.items():
        cells = []
        for n in names:
            s = summary[n]
            pct = not n.startswith("obedience")
            scale = 100 if pct else 1
            cells.append(f"{s['mean'] * scale:.1f}{'%' if pct else ''} ± {s['se'] * scale:.1f}")
        lines.append(f"| `{variant}` | " + " | ".join(cells) + " |")
    return lines
