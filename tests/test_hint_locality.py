"""The user-side hint metrics (`benchmarks.hint_locality`) on pictures whose answers are known."""

from __future__ import annotations

import numpy as np

from benchmarks import hint_locality as L
from contract.hints import MODEL_SIZE as SIZE
from contract.hints import PointHint


def two_colours() -> np.ndarray:
    """Left half red, right half blue, a white stripe between them."""
    target = np.full((SIZE, SIZE, 3), 255, np.uint8)
    target[:, :60] = (220, 30, 30)
    target[:, 68:] = (30, 30, 220)
    return target


def test_a_hints_region_is_the_connected_area_of_its_colour():
    target = two_colours()
    target[10:20, 10:20] = (225, 35, 28)  # within dE 12 of the red: still the same region

    region = L.hint_region(L.lab(target), PointHint(64, 30, (220, 30, 30)))

    assert region[:, :60].all() and not region[:, 60:].any()


def test_locality_counts_only_pixels_that_move_outside_the_region():
    target = two_colours()
    region = L.hint_region(L.lab(target), PointHint(64, 30, (220, 30, 30)))
    without = target.copy()
    inside_only = target.copy()
    inside_only[:, :60] = (30, 200, 30)  # the hinted region changes completely
    everywhere = inside_only.copy()
    everywhere[:, 100:] = (30, 200, 30)  # and a quarter of the picture outside it too

    assert L.locality(L.lab(without), L.lab(inside_only), region) == 0.0
    share = L.locality(L.lab(without), L.lab(everywhere), region)
    assert abs(share - 28 / 68) < 1e-6  # columns 100..127 of the 68 columns outside


def test_bleed_is_a_hint_colour_painted_where_the_target_is_far_from_it():
    target = two_colours()
    hint = PointHint(64, 30, (220, 30, 30))
    outside = ~L.hint_region(L.lab(target), hint)
    painted = target.copy()
    painted[:, 96:] = (220, 30, 30)  # red over part of the blue

    assert L.bleed(L.lab(target), L.lab(target), [hint], outside) == 0.0
    assert abs(L.bleed(L.lab(painted), L.lab(target), [hint], outside) - 32 / 68) < 1e-6
