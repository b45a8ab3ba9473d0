"""What the quality benchmark evaluates, shared by the run, its backends and its report: hint
settings, result rows, the held-out examples with the fixed hints every method gets, and the
`Results` a run fills.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from benchmarks.baselines import dense_scribbles, patch_scribbles, point_scribbles
from benchmarks.image_metrics import summarize
from contract import hints as H

POINT_COUNTS = (0, 1, 2, 5, 10, 20, 50)  # the guided variant's hint sweep
PLACEMENTS = ("uniform", "region")  # where the sweep's hints go: anywhere, or as people place them
HEADLINE_POINTS = 10  # the guided setting shown beside the fixed-hint variants (with 0)
HINT_SEED = 20240501  # hints for image i come from default_rng((HINT_SEED, i)): same for every method and --limit


# ---------------------------------------------------------------------------------- what is evaluated


@dataclass(frozen=True)
class HintSetting:
    """What a method is told about the target: a hint encoding and, for points, how many."""

    kind: H.HintKind
    points: int = 0
    placement: str = "uniform"  # point hints: "uniform" positions, or "region" (on colour, off the lines)

    @property
    def label(self) -> str:
        if self.kind is not H.HintKind.POINTS:
            return self.kind.value
        return f"{'points' if self.placement == 'uniform' else 'region'}:{self.points}"

    @property
    def description(self) -> str:
        if self.kind is H.HintKind.POINTS:
            kind = "point" if self.placement == "uniform" else "region"
            return f"{self.points} {kind} hint{'s' if self.points != 1 else ''}"
        return {"none": "no hints", "blur": "blurred target", "patches20": "20 target patches"}[self.kind.value]

    @property
    def has_hints(self) -> bool:
        return self.kind is not H.HintKind.NONE and not (self.kind is H.HintKind.POINTS and self.points == 0)


@dataclass(frozen=True)
class Row:
    """One line of the results: a method (variant or baseline) under one hint setting."""

    method: str
    setting: HintSetting
    is_baseline: bool

    @property
    def key(self) -> str:
        return f"{self.method}@{self.setting.label}"


# ---------------------------------------------------------------------------------- hints


def hint_points(
    target: np.ndarray, index: int, count: int, placement: str = "uniform", sketch: np.ndarray | None = None
) -> list[H.PointHint]:
    """The first `count` point hints of image `index`: one fixed draw per image, so 5 hints are the first 5 of 10.

    ``uniform``: `hints.random_points`; ``region``: `hints.region_points` (on coloured pixels, away from
    the sketch's lines: where people put them).
    """
    rng = np.random.default_rng((HINT_SEED, index))
    if placement == "region":
        return H.region_points(target, sketch, max(POINT_COUNTS), rng)[:count]
    return H.random_points(target, max(POINT_COUNTS), rng)[:count]


@dataclass(frozen=True)
class Example:
    """One held-out pair and the hints every method gets for it."""

    index: int
    sketch: np.ndarray  # (128, 128) uint8
    target: np.ndarray  # (128, 128, 3) uint8

    def points(self, setting: HintSetting) -> list[H.PointHint]:
        if setting.kind is not H.HintKind.POINTS:
            return []
        return hint_points(self.target, self.index, setting.points, setting.placement, self.sketch)

    def color_hint(self, setting: HintSetting) -> np.ndarray | None:
        """The dense colour image the blur/patches20 encodings read: the target (the study's setting)."""
        return self.target if setting.kind.needs_color_image else None

    def encoded(self, setting: HintSetting) -> np.ndarray:
        """The generator input (C, 128, 128) float32, exactly as training and serving build it."""
        return H.encode(setting.kind, self.sketch, color=self.color_hint(setting), points=self.points(setting))

    def scribbles(self, setting: HintSetting) -> tuple[np.ndarray, np.ndarray]:
        """The same hints as (rgb, mask) for the baselines."""
        if setting.kind is H.HintKind.BLUR:
            return dense_scribbles(self.target)
        if setting.kind is H.HintKind.PATCHES20:
            return patch_scribbles(self.target)
        return point_scribbles(self.points(setting))


# ---------------------------------------------------------------------------------- results


@dataclass
class Results:
    rows: list[Row]
    scores: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    fid: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))  # row key -> outputs
    sample_examples: list[Example] = field(default_factory=list)
    locality: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # variant -> hint_locality scores
    hint_auc: dict[str, dict] = field(default_factory=dict)  # method -> `benchmarks.hint_auc` result

    def summary(self, row: Row, metric: str) -> dict[str, float] | None:
        values = self.scores[row.key].get(metric)
        return summarize(values) if values else None


def sample_indices(n: int, rows: int) -> list[int]:
    """`rows` image indices spread evenly over range(n): the examples sample sheets show."""
    return sorted(set(np.linspace(0, n - 1, min(rows, n)).round().astype(int).tolist()))


def is_headline(row: Row) -> bool:
    """Rows for the main table: everything but the inner points of the hint sweep."""
    return row.setting.kind is not H.HintKind.POINTS or row.setting.points in (0, HEADLINE_POINTS)
