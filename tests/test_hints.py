"""contract.hints: how a sketch and its hints become the generator's input tensor."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from contract import batch as HB
from contract import hints as H
from contract.hints import HintKind, PointHint

SIZE = H.MODEL_SIZE


@pytest.fixture
def sketch() -> np.ndarray:
    """(128, 128) uint8: black outlines on white, plus noise so every pixel value matters."""
    rng = np.random.default_rng(1)
    image = rng.integers(200, 256, (SIZE, SIZE), dtype=np.uint8)
    cv2.circle(image, (64, 64), 40, 0, 2)
    cv2.rectangle(image, (10, 10), (50, 90), 0, 1)
    return image


@pytest.fixture
def color() -> np.ndarray:
    """(128, 128, 3) uint8 with the extremes 0 and 255 present in every channel."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    image[:8] = 0
    image[-8:] = 255
    return image


def square(row: int, col: int, size: int) -> np.ndarray:
    """A (128, 128) bool mask of an odd-sized square centred at (row, col), clipped to the image."""
    half = size // 2
    mask = np.zeros((SIZE, SIZE), bool)
    mask[max(row - half, 0) : row + half + 1, max(col - half, 0) : col + half + 1] = True
    return mask


def unit(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(rgb, np.float32) / 127.5 - 1.0


@pytest.mark.parametrize(
    ("kind", "channels"),
    [(HintKind.NONE, 3), (HintKind.BLUR, 3), (HintKind.PATCHES20, 3), (HintKind.POINTS, 11)],
)
def test_encode_gives_each_kind_its_channel_count_in_unit_range(kind, channels, sketch, color):
    points = [PointHint(5, 5, (255, 255, 255), 9), PointHint(120, 3, (0, 0, 0), 9), PointHint(60, 70, (255, 0, 40))]
    x = H.encode(kind, sketch, color=color, points=points if kind is HintKind.POINTS else ())

    assert kind.channels == channels
    assert x.shape == (channels, SIZE, SIZE)
    assert x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_encode_accepts_kinds_by_their_names(sketch):
    assert np.array_equal(H.encode("none", sketch), H.encode(HintKind.NONE, sketch))


def test_none_hint_is_the_sketch_alone_on_unit_scale(sketch):
    x = H.encode(HintKind.NONE, sketch)

    assert np.array_equal(H.from_unit(x), np.stack([sketch] * 3))


def test_encode_treats_gray_and_rgb_sketches_alike(sketch):
    gray = H.encode(HintKind.NONE, sketch)

    assert np.array_equal(H.encode(HintKind.NONE, sketch[:, :, None]), gray)
    assert np.array_equal(H.encode(HintKind.NONE, np.stack([sketch] * 3, axis=2)), gray)


def test_blur_hint_is_the_mean_of_sketch_and_32px_box_blurred_colour(sketch, color):
    x = H.encode(HintKind.BLUR, sketch, color=color)

    blurred = cv2.blur(color, (32, 32)).astype(np.float32)
    expected = 0.5 * (np.stack([sketch] * 3, axis=2).astype(np.float32) + blurred) / 127.5 - 1.0
    assert np.allclose(x, expected.transpose(2, 0, 1), atol=1e-6)


def test_patches20_copies_exactly_the_20_7x7_colour_patches_and_keeps_the_sketch_elsewhere(sketch, color):
    x = H.encode(HintKind.PATCHES20, sketch, color=color)

    assert len(set(H.PATCH_CORNERS)) == 20
    patches = np.zeros((SIZE, SIZE), bool)
    for r, c in H.PATCH_CORNERS:
        patches[r : r + 7, c : c + 7] = True
    assert patches.sum() == 20 * 7 * 7  # the patches do not overlap
    image = H.from_unit(x).transpose(1, 2, 0)
    assert np.array_equal(image[patches], color[patches])
    assert np.array_equal(image[~patches], np.stack([sketch] * 3, axis=2)[~patches])


def test_points_mask_is_one_exactly_under_each_square_and_hint_channels_hold_its_colour(sketch):
    points = [PointHint(20, 30, (250, 10, 0), 1), PointHint(64, 64, (0, 128, 255), 5), PointHint(100, 40, (7, 7, 7), 9)]
    x = H.encode(HintKind.POINTS, sketch, points=points)
    sk, hint, mask = x[:3], x[3:6], x[6]

    assert np.array_equal(H.from_unit(sk), np.stack([sketch] * 3))
    covered = np.zeros((SIZE, SIZE), bool)
    for p in points:
        under = square(p.row, p.col, p.size)
        assert np.all(mask[under] == 1.0)
        assert np.array_equal(hint[:, under], np.repeat(unit(p.rgb)[:, None], under.sum(), axis=1))
        covered |= under
    assert np.all(mask[~covered] == 0.0)
    assert np.all(hint[:, ~covered] == 0.0)


def test_point_near_the_border_is_clipped_to_the_image(sketch):
    corner = PointHint(0, SIZE - 1, (255, 0, 0), 9)

    x = H.encode(HintKind.POINTS, sketch, points=[corner])

    assert corner.bounds() == (0, 5, SIZE - 5, SIZE)
    assert np.array_equal(x[6] == 1.0, square(0, SIZE - 1, 9))
    assert x[6].sum() == 5 * 5


def test_zero_points_leave_hint_mask_and_fill_channels_all_zero(sketch):
    x = H.encode(HintKind.POINTS, sketch)

    assert x.shape == (HintKind.POINTS.channels, SIZE, SIZE)
    assert np.array_equal(H.from_unit(x[:3]), np.stack([sketch] * 3))
    assert np.all(x[3:] == 0.0)


@pytest.fixture
def two_rooms() -> np.ndarray:
    """A white sketch with a closed box (rows/cols 32..95) split in two by a line at column 64."""
    image = np.full((SIZE, SIZE), 255, np.uint8)
    cv2.rectangle(image, (32, 32), (95, 95), 0, 1)
    image[32:96, 64] = 0
    return image


def rooms(sketch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left room, right room, outside) masks of `two_rooms`: the regions its lines enclose, less the
    pixel next to each line (lines are thickened by one pixel before the fill looks for regions)."""
    left, right = np.zeros((SIZE, SIZE), bool), np.zeros((SIZE, SIZE), bool)
    left[34:94, 34:63] = True
    right[34:94, 66:94] = True
    outside = np.ones((SIZE, SIZE), bool)
    outside[31:97, 31:97] = False
    assert np.all(sketch[left | right | outside] == 255)
    return left, right, outside


def test_a_hint_fills_the_line_enclosed_region_under_it_with_its_colour(two_rooms):
    rgb = (200, 30, 90)
    x = H.encode(HintKind.POINTS, two_rooms, points=[PointHint(64, 48, rgb, 5)])
    fill, filled = x[7:10], x[10]
    left, right, outside = rooms(two_rooms)

    assert np.array_equal(filled == 1.0, left)  # only the room holding the hint, not its walls
    assert np.all(filled[~left] == 0.0)
    assert np.allclose(fill[:, left], unit(rgb)[:, None], atol=1e-6)


def test_each_region_takes_its_own_hints_colours_each_pixel_the_nearest_hints(two_rooms):
    red, blue, white = (255, 0, 0), (0, 0, 255), (255, 255, 255)
    points = [PointHint(50, 40, red), PointHint(80, 80, blue, 3), PointHint(40, 80, white, 1)]

    x = H.encode(HintKind.POINTS, two_rooms, points=points)

    fill, filled = x[7:10], x[10]
    left, right, _ = rooms(two_rooms)
    assert np.all(filled[left | right] == 1.0)
    assert np.allclose(fill[:, left], unit(red)[:, None], atol=1e-6)
    lower, upper = right.copy(), right.copy()
    lower[:61], upper[60:] = False, False  # row 60 is as near the white hint (row 40) as the blue (row 80)
    assert np.allclose(fill[:, lower], unit(blue)[:, None], atol=1e-6)
    assert np.allclose(fill[:, upper], unit(white)[:, None], atol=1e-6)
    assert np.allclose(fill[:, 60, 70], unit(blue), atol=1e-6)  # a tie: the first-listed hint of the two


def test_a_hint_centred_on_a_line_fills_the_nearest_region(two_rooms):
    # Column 63 is the thickened wall: the left room (from column 62) is 1 px away, the right (66) 3 px.
    x = H.encode(HintKind.POINTS, two_rooms, points=[PointHint(60, 63, (10, 200, 10), 5)])
    left, right, outside = rooms(two_rooms)

    assert np.all(x[10][left] == 1.0)
    assert np.all(x[10][right | outside] == 0.0)
    assert np.all(x[6][58:63, 61:66] == 1.0)  # and it is shown as a hint


def test_fill_outside_hinted_regions_is_the_colour_of_the_only_hint(two_rooms):
    rgb = (200, 30, 90)
    x = H.encode(HintKind.POINTS, two_rooms, points=[PointHint(64, 48, rgb, 5)])
    fill, filled = x[7:10], x[10]
    _, right, outside = rooms(two_rooms)

    assert np.all(filled[right | outside] == 0.0)
    assert np.array_equal(fill, np.broadcast_to(unit(rgb)[:, None, None], fill.shape))


def test_a_gap_of_two_pixels_in_a_line_does_not_let_the_fill_leak_out(two_rooms):
    leaky = two_rooms.copy()
    leaky[60:62, 32] = 255  # a 2-px gap in the left wall
    x = H.encode(HintKind.POINTS, leaky, points=[PointHint(64, 48, (200, 30, 90), 5)])
    left, _, outside = rooms(two_rooms)

    assert np.all(x[10][left] == 1.0) and np.all(x[10][outside] == 0.0)
    wide = two_rooms.copy()
    wide[55:65, 32] = 255  # a 10-px hole is an opening, not a gap: the colour flows out
    assert np.all(H.encode(HintKind.POINTS, wide, points=[PointHint(64, 48, (200, 30, 90), 5)])[10][outside] == 1.0)


def test_soft_guess_takes_the_nearest_hint_per_4px_cell_and_the_first_on_a_tie():
    lines = np.full((SIZE, SIZE), 255, np.uint8)
    lines[:, 60:68] = 0  # a thick wall: each hint's own side is its region; the wall shows the guess
    red, blue = (255, 0, 0), (0, 0, 255)
    x = H.encode(HintKind.POINTS, lines, points=[PointHint(10, 10, red), PointHint(10, 118, blue)])
    fill, filled = x[7:10], x[10]

    assert np.all(filled[:, :58] == 1.0) and np.all(filled[:, 60:68] == 0.0)
    # cells centred at columns 62 and 66 are nearer red (col 10) / blue (col 118) respectively
    assert np.all(fill[:, :, 60:64] == unit(red)[:, None, None])
    assert np.all(fill[:, :, 64:68] == unit(blue)[:, None, None])
    tie = H.encode(HintKind.POINTS, lines, points=[PointHint(10, 62 - 20, red), PointHint(10, 62 + 20, blue)])
    assert np.all(tie[7:10, :, 60:64] == unit(red)[:, None, None])  # equidistant from col 62: the first wins


def test_soft_guess_is_closer_to_the_nearer_of_two_hints(two_rooms):
    red, blue = (255, 0, 0), (0, 0, 255)
    points = [PointHint(16, 20, red), PointHint(16, 108, blue)]  # both outside the box

    x = H.encode(HintKind.POINTS, np.full((SIZE, SIZE), 255, np.uint8), points=points)
    assert np.all(x[10] == 1.0)  # a sketch without lines is one region: both hints fill it
    x = H.encode(HintKind.POINTS, two_rooms, points=points)
    fill = x[7:10]

    inside_left, inside_right = fill[:, 64, 40], fill[:, 64, 88]  # rooms without hints: the soft guess
    assert np.abs(inside_left - unit(red)).sum() < np.abs(inside_left - unit(blue)).sum()
    assert np.abs(inside_right - unit(blue)).sum() < np.abs(inside_right - unit(red)).sum()


def test_point_from_target_takes_the_mean_colour_under_its_square(color):
    p = H.point_from_target(color, 50, 60, 3)

    expected = color[49:52, 59:62].reshape(-1, 3).mean(axis=0)
    assert (p.row, p.col, p.size) == (50, 60, 3)
    assert p.rgb == tuple(int(round(v)) for v in expected)


def test_sample_training_points_count_mixes_sparse_and_dense_geometric_counts(color):
    rng = np.random.default_rng(0)
    draws = 4000

    samples = [H.sample_training_points(color, rng) for _ in range(draws)]

    counts = np.array([len(s) for s in samples])
    share = H.DENSE_SHARE
    mean = (1 - share) * (1 / H.POINT_COUNT_P - 1) + share * (1 / H.DENSE_COUNT_P - 1)  # 13, s.e. 0.3
    none = (1 - share) * H.POINT_COUNT_P + share * H.DENSE_COUNT_P  # 0.10, s.e. 0.005
    assert abs(counts.mean() - mean) < 1.0
    assert abs(np.mean(counts == 0) - none) < 0.02
    assert np.mean(counts >= 50) > 0.03  # the dense tail: 5 %, where Geometric(1/8) alone gives 0.1 %
    points = [p for s in samples for p in s]
    lo, hi = H.POINT_SIZE_RANGE
    assert {p.size for p in points} == set(range(lo, hi + 1))
    assert all(0 <= p.row < SIZE and 0 <= p.col < SIZE for p in points)


@pytest.mark.parametrize("kind", list(HintKind))
def test_encode_rejects_a_sketch_that_is_not_128px(kind, color):
    with pytest.raises(ValueError, match="128x128"):
        H.encode(kind, np.zeros((64, 64), np.uint8), color=color)


@pytest.mark.parametrize("kind", [HintKind.BLUR, HintKind.PATCHES20])
@pytest.mark.parametrize("bad_color", [None, np.zeros((64, 64, 3), np.uint8), np.zeros((128, 128), np.uint8)])
def test_encode_rejects_a_missing_or_misshapen_colour_image_for_dense_hints(kind, bad_color, sketch):
    with pytest.raises(ValueError, match="RGB colour image"):
        H.encode(kind, sketch, color=bad_color)


@pytest.mark.parametrize("kind", [HintKind.NONE, HintKind.BLUR, HintKind.PATCHES20])
def test_encode_rejects_point_hints_for_kinds_that_take_none(kind, sketch, color):
    with pytest.raises(ValueError, match="takes no point hints"):
        H.encode(kind, sketch, color=color, points=[PointHint(10, 10, (1, 2, 3))])


def test_to_unit_and_from_unit_round_trip_every_uint8_value_exactly():
    values = np.arange(256, dtype=np.uint8)

    x = H.to_unit(values)

    assert x.dtype == np.float32
    assert x[0] == -1.0 and x[-1] == 1.0
    assert np.all(np.diff(x) > 0)
    assert np.array_equal(H.from_unit(x), values)


def test_from_unit_clips_values_outside_the_unit_range():
    assert np.array_equal(H.from_unit(np.array([-1.7, -1.0, 1.0, 1.3])), np.array([0, 0, 255, 255], np.uint8))


def test_region_points_land_on_coloured_pixels_away_from_lines_and_take_the_local_colour(two_rooms):
    target = np.full((SIZE, SIZE, 3), 255, np.uint8)
    target[33:95, 33:64] = (200, 40, 40)  # only the left room is coloured

    points = H.region_points(target, two_rooms, 200, np.random.default_rng(0))

    assert len(points) == 200
    for p in points:
        assert 35 <= p.row <= 92 and 35 <= p.col <= 61  # in the room, >= 2 px from its walls
        assert p.rgb == H.point_from_target(target, p.row, p.col, p.size).rgb


def test_region_points_fall_back_to_uniform_positions_on_a_white_target(two_rooms):
    white = np.full((SIZE, SIZE, 3), 255, np.uint8)

    points = H.region_points(white, two_rooms, 300, np.random.default_rng(0))

    rows = np.array([p.row for p in points])
    assert len(points) == 300 and rows.min() < 20 and rows.max() > 108


def spreading_generator(x: torch.Tensor) -> torch.Tensor:
    """A stand-in network that does what the trained one was measured doing: every pixel takes the
    mean hint colour of the whole input, plus the sketch (so the no-hint answer is not flat)."""
    hint_mean = x[:, 3:6].mean(dim=(2, 3), keepdim=True)
    return torch.tanh(0.5 * x[:, 0:3] + 4 * hint_mean)


def test_served_hints_change_only_their_region_and_a_few_pixels_past_its_line(two_rooms):
    hint = PointHint(64, 48, (10, 200, 10), 5)
    hinted = torch.from_numpy(H.encode(HintKind.POINTS, two_rooms, points=[hint]))[None]
    plain = torch.from_numpy(H.encode(HintKind.POINTS, two_rooms))[None]
    left, right, outside = rooms(two_rooms)

    served = HB.generate(spreading_generator, HintKind.POINTS, hinted)[0]
    alone = spreading_generator(hinted)[0]
    without = spreading_generator(plain)[0]

    assert torch.equal(served[:, torch.from_numpy(left)], alone[:, torch.from_numpy(left)])
    far = torch.from_numpy(right | outside) & (HB.reach(hinted)[0, 0] == 0)
    assert far.sum() > 0.8 * (right | outside).sum()  # reach ends a few pixels past the room's walls
    assert torch.equal(served[:, far], without[:, far])
    assert not torch.allclose(alone[:, far], without[:, far])  # the network alone would recolour them


def test_a_batch_mixing_hinted_and_unhinted_inputs_is_answered_row_by_row(two_rooms):
    hinted = H.encode(HintKind.POINTS, two_rooms, points=[PointHint(64, 48, (10, 200, 10), 5)])
    plain = H.encode(HintKind.POINTS, two_rooms)
    batch = torch.from_numpy(np.stack([plain, hinted, plain]))

    served = HB.generate(spreading_generator, HintKind.POINTS, batch, forward_batch=2)

    assert torch.equal(served[0], spreading_generator(batch[:1])[0])
    assert torch.equal(served[1], HB.generate(spreading_generator, HintKind.POINTS, batch[1:2])[0])
    assert torch.equal(served[2], served[0])


def test_unconfined_generation_is_the_network_alone(two_rooms):
    hinted = torch.from_numpy(H.encode(HintKind.POINTS, two_rooms, points=[PointHint(64, 48, (10, 200, 10), 5)]))[None]

    served = HB.generate(spreading_generator, HintKind.POINTS, hinted, confine=False)

    assert torch.equal(served, spreading_generator(hinted))


def test_max_3x3_is_a_3x3_max_pool_and_the_reach_stops_only_once_nothing_moves():
    import math

    import torch
    import torch.nn.functional as F

    from contract import batch as B

    g = torch.Generator().manual_seed(3)
    s = torch.rand(3, 1, 37, 53, generator=g) * 10 - 5  # negatives too: the edge must add nothing, not a 0
    assert torch.equal(B.max_3x3(s), F.max_pool2d(s, 3, stride=1, padding=1))

    def every_step(x):  # the reach by its definition: max-pools, every step of the budget
        budget = H.HINT_RADIUS_PX + H.HINT_FADE_PX
        passable = torch.maximum(x[:, 10:11], x[:, 6:7])
        s = x[:, 6:7] * budget
        for _ in range(int(budget)):
            s = torch.maximum(s, (F.max_pool2d(s, 3, stride=1, padding=1) - 1.0) * passable)
        m = (s / H.HINT_FADE_PX).clamp(0.0, 1.0)
        for _ in range(H.HINT_REACH_STEPS):
            m = torch.maximum(m, math.exp(-1.0 / H.HINT_REACH_PX) * F.max_pool2d(m, 3, stride=1, padding=1))
        return m

    x = torch.zeros(3, 14, 128, 128)
    x[:, 10] = (torch.rand(3, 128, 128, generator=g) > 0.3).float()  # ragged regions
    x[:, 6] = (torch.rand(3, 128, 128, generator=g) > 0.997).float()
    x[1, :, :, :] = 0
    x[1, 10, :, :64] = 1.0  # one region, the left half, and one hint square in it: the budget runs out inside
    x[1, 6, 60:63, 10:13] = 1.0
    x[2, 6] = 0  # no hint: reaches nothing
    m = B.reach(x)
    assert torch.equal(m, every_step(x))
    edge = 12 + int(H.HINT_RADIUS_PX)  # the hint square's last column, plus the radius
    assert float(m[1, 0, 61, edge]) == 1.0 and 0 < float(m[1, 0, 61, edge + 4]) < 1
    assert float(m[1, 0, 61, 63]) == 0.0 and float(m[2].max()) == 0.0
