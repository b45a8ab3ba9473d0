"""The user-side hint metrics (`benchmarks.hint_locality`) on pictures whose answers are known."""

from __future__ import annotations

from pathlib import Path

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


def test_hintauc_dots_become_point_hints_in_rgb_at_their_centres():
    from benchmarks.hint_auc import DOT_SIZE, dots

    colour = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    colour[10:12, 20:22], mask[10:12, 20:22] = (30, 20, 10), 255  # BGR, as hintauc gives it
    colour[100:102, 50:52], mask[100:102, 50:52] = (0, 0, 255), 255

    points = sorted(dots(colour, mask), key=lambda p: p.row)

    assert [(p.row, p.col, p.rgb, p.size) for p in points] == [
        (10, 20, (10, 20, 30), DOT_SIZE),  # a 2x2 dot centred at 10.5: half to even, and 3 px cover it
        (100, 50, (255, 0, 0), DOT_SIZE),
    ]


def test_one_blue_hint_on_the_boys_shirt_leaves_his_face_and_the_far_side_alone():
    """The README's drawn example, through the shipped weights as served: the figure's lines do not
    close at the neck, so the whole figure is one fill region and the network alone turns it blue."""
    import torch
    from PIL import Image

    from contract import batch as B
    from contract import hints as H
    from service.imaging import Frame
    from training.export import load_exported

    root = Path(__file__).resolve().parents[1]
    with Image.open(root / "examples" / "boy.png") as im:
        gray = np.asarray(im.convert("L"))
    frame = Frame.fit(gray.shape[1], gray.shape[0])
    sketch = frame.to_grid(gray)
    blue = (48, 112, 208)
    shirt_row, shirt_col = frame.grid_position(0.40 * frame.width, 0.85 * frame.height)
    face_row, face_col = frame.grid_position(0.50 * frame.width, 0.25 * frame.height)
    generator = load_exported(root / "model_repository" / "guided" / "1" / "generator.pt2")
    inputs = [H.encode("points", sketch), H.encode("points", sketch, points=[PointHint(shirt_row, shirt_col, blue)])]
    with torch.inference_mode():
        served = B.to_image(B.generate(generator, H.HintKind.POINTS, torch.from_numpy(np.stack(inputs)))).numpy()
    without, with_hint = L.lab(served[0]), L.lab(served[1])
    moved = L.delta_e(without, with_hint)

    def patch(image, row, col):
        return image[row - 4 : row + 5, col - 4 : col + 5].reshape(-1, 3).mean(axis=0)

    hint_blue = L.lab(np.array(blue, np.uint8))
    assert L.delta_e(patch(with_hint, shirt_row, shirt_col), hint_blue) < 20  # the shirt is blue
    assert L.delta_e(patch(without, shirt_row, shirt_col), hint_blue) > 40  # and was not before
    assert moved[face_row - 4 : face_row + 5, face_col - 4 : face_col + 5].mean() < 5  # the face is as it was
    rows, cols = np.mgrid[:SIZE, :SIZE]
    far = (rows - shirt_row) ** 2 + (cols - shirt_col) ** 2 > 48**2
    assert (moved[far] > L.MOVE_DE).mean() < 0.01
