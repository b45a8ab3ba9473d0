"""Hint-AUC (Madono, Mingcheng, Simo-Serra, IEEE TVCG 2026) through the ``hintauc`` package.

The protocol from outside this project: deterministic hints from the target (Felzenszwalb
regions, one dot per region at its mean colour), the largest ``alpha`` share of the regions
hinted for each ``alpha`` of the paper's grid 0 .. 1, each output scored against the target
(images resized to 256 px), and the area under each metric's curve (trapezoids over alpha).
``guided`` gets the dots as 3-px point hints on the model grid; hintauc's oracle flat fill,
which reads the target's regions and fills every hinted one with its mean colour, is the
reference (not a model). ``path_method="geodesic"`` (no fil_finder or astropy), ties between
regions of equal area broken by label (``tie_break="stable"``, the same on every machine).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import hintauc
import numpy as np

from benchmarks.quality_plan import Example, HintSetting
from contract import hints as H
from contract.wire import MAX_HINTS

METRICS = ("psnr", "ssim", "deltae")
DOT_SIZE = 3  # px on the model grid: a 64-px hint map's dot is 2x2 model pixels
SETTINGS = dict(hint_type="dot", metrics=METRICS, path_method="geodesic", tie_break="stable")


@dataclass(frozen=True)
class GivenHints(Example):
    """A held-out pair with hints chosen outside `quality_plan` (here: hintauc's dots)."""

    given: tuple[H.PointHint, ...] = ()

    def points(self, setting: HintSetting) -> list[H.PointHint]:
        return list(self.given)


def dots(hint_color_bgr: np.ndarray, hint_mask: np.ndarray) -> tuple[H.PointHint, ...]:
    """hintauc's dot hints (a BGR colour map and a {0, 255} mask at the target's size) as point hints."""
    count, blobs, _, centres = cv2.connectedComponentsWithStats((hint_mask > 0).astype(np.uint8), connectivity=8)
    points = []
    for i in range(1, count):
        ys, xs = np.nonzero(blobs == i)
        b, g, r = (int(v) for v in hint_color_bgr[ys[0], xs[0]])
        points.append(H.PointHint(int(round(centres[i][1])), int(round(centres[i][0])), (r, g, b), DOT_SIZE))
    return tuple(points[:MAX_HINTS])


def evaluate(backend, variant: str, dataset: Sequence) -> dict:
    """Hint-AUC of `variant` through `backend` (`quality_backends`): per-alpha means and the areas."""

    def colorize(sample: dict) -> np.ndarray:
        given = dots(sample["hint_color"], sample["hint_mask"])
        example = GivenHints(sample["index"], sample["line_art"], np.zeros(0), given)
        setting = HintSetting(H.HintKind.POINTS, len(example.given), "region")
        (rgb,) = backend.colorize(variant, setting, [example])
        return np.ascontiguousarray(rgb[:, :, ::-1])

    return _summary(hintauc.evaluate_colorizer(colorize, _samples(dataset), **SETTINGS))


def oracle(dataset: Sequence) -> dict:
    """The same for hintauc's oracle flat fill (`hintauc.hint_fill_colorizer`)."""
    return _summary(hintauc.evaluate_colorizer(hintauc.hint_fill_colorizer, _samples(dataset), oracle=True, **SETTINGS))


def _samples(dataset: Sequence):
    for sketch, target in dataset:
        yield sketch, np.ascontiguousarray(target[:, :, ::-1])  # hintauc reads BGR


def _summary(result: dict) -> dict:
    return {
        "hint_auc": result["hint_auc"],
        "per_alpha": {str(a): scores for a, scores in result["per_alpha"].items()},
        "n_images": result["n_images"],
        "protocol": {k: result["protocol"][k] for k in ("protocol", "alphas", "hint_type", "path_method", "metrics")},
    }


def report_lines(by_method: dict[str, dict]) -> list[str]:
    """A markdown table: each method's Hint-AUC per metric, then its PSNR at each alpha."""
    if not by_method:
        return []
    alphas = list(next(iter(by_method.values()))["per_alpha"])
    lines = [
        "| method | Hint-AUC PSNR ↑ | SSIM ↑ | CIEDE2000 ↓ | " + " | ".join(f"PSNR α={a}" for a in alphas) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(alphas),
    ]
    for method, r in by_method.items():
        auc = r["hint_auc"]
        cells = [f"{auc['psnr']:.2f}", f"{auc['ssim']:.3f}", f"{auc['deltae']:.2f}"]
        cells += [f"{r['per_alpha'][a]['psnr']:.2f}" for a in alphas]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines
