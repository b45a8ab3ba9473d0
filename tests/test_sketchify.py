"""training.sketchify: random and reference sketches, biased crops, pairs from pictures; drawn test figures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training import sketchify as K
from training.paths import SIZE
from training.xdog import xdog as training_xdog


def figure(seed: int = 0, size: int = 256) -> np.ndarray:
    """A drawn character on white: a shaded body, an outlined face, a flat block; (size, size, 3)."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), 255, np.uint8)
    s = size / 256
    yy, xx = np.mgrid[:size, :size] / s
    body = ((xx - 128) / 60) ** 2 + ((yy - 160) / 80) ** 2 < 1
    shade = np.clip(1.2 - 0.6 * np.hypot(xx - 110, yy - 130) / 90, 0.3, 1.2)
    base = rng.integers(60, 230, 3)
    for c in range(3):
        image[..., c][body] = np.clip(base[c] * shade[body], 0, 255)
    cv2.circle(image, (int(128 * s), int(70 * s)), int(40 * s), (240, 200, 170), -1)
    cv2.circle(image, (int(128 * s), int(70 * s)), int(40 * s), (40, 30, 30), max(1, int(2 * s)))
    for x in (113, 143):
        cv2.circle(image, (int(x * s), int(65 * s)), int(5 * s), (20, 20, 20), -1)
    cv2.rectangle(image, (int(40 * s), int(200 * s)), (int(90 * s), int(240 * s)), (200, 30, 40), -1)
    return image


def corner_figure(size: int = 256) -> np.ndarray:
    """White paper with one small coloured square near a corner: crops must find it."""
    image = np.full((size, size, 3), 255, np.uint8)
    image[200:230, 10:40] = (30, 120, 220)
    return image


def test_random_sketch_shape_dtype_and_range():
    for seed in range(6):
        sketch = K.random_sketch(figure(), np.random.default_rng(seed))
        assert sketch.shape == (SIZE, SIZE) and sketch.dtype == np.uint8
    assert K.random_sketch(figure(), np.random.default_rng(0), out_size=64).shape == (64, 64)
    assert K.reference_sketch(figure()).shape == (SIZE, SIZE)


@pytest.mark.parametrize("seed", range(12))
def test_lines_dark_background_white(seed):
    sketch = K.random_sketch(figure(seed % 3), np.random.default_rng(seed))
    assert sketch.min() < 80, "the outlines must be drawn dark"
    assert np.median(sketch) > 220, "the page must stay (nearly) white"
    assert 0.01 < (sketch < K.DARK).mean() < 0.25


def test_faint_lines_are_darkened():
    """Thin or soft lines drawn at 256 px come out light gray once shrunk: they are stretched to dark."""
    faint = np.full((SIZE, SIZE), 255, np.uint8)
    faint[40:42, 20:100] = 200
    faint[80, 20:100] = 225
    out = K._darken_lines(faint, 10.0)
    assert out[40, 50] <= 12 and out[80, 50] < 128 and out[0, 0] == 255
    dark = faint.copy()
    dark[60:62, 20:100] = 30
    np.testing.assert_array_equal(K._darken_lines(dark, 10.0), dark)
    white = np.full((SIZE, SIZE), 255, np.uint8)
    np.testing.assert_array_equal(K._darken_lines(white, 10.0), white)


def test_shaded_picture_keeps_most_of_the_page_white():
    """Noise-textured shading makes plain XDoG draw texture everywhere; the guard must clear it."""
    rng = np.random.default_rng(1)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (256, 256)).astype(np.float32), (0, 0), 1.5)
    picture = np.clip(np.stack([texture * 0.8, texture, texture * 0.6], axis=2), 0, 255).astype(np.uint8)
    assert (training_xdog(picture) < K.DARK).mean() > 0.2  # what the guard is for
    for seed in range(12):
        assert (K.random_sketch(picture, np.random.default_rng(seed)) < K.DARK).mean() <= K.THICK_MAX_SHARE + 0.01
    assert (K.reference_sketch(picture) < K.DARK).mean() <= K.REFERENCE_DARK_SHARE[1] + 0.01


def test_painted_rectangle_gets_a_thin_frame_not_a_band():
    """A portrait on a dark opaque background, letterboxed on white: one thin frame line, white inside it."""
    picture = np.full((256, 256, 3), 255, np.uint8)
    picture[40:216, 10:246] = (25, 30, 45)
    cv2.circle(picture, (128, 128), 50, (230, 190, 160), -1)
    picture[41, 10:246] = 0  # the ringing a LANCZOS letterbox leaves along the edge
    assert K.opaque_box(picture) == (40, 216, 10, 246)
    assert K.opaque_box(figure()) is None
    sketches = [K.reference_sketch(picture)] + [K.random_sketch(picture, np.random.default_rng(s)) for s in range(8)]
    for sketch in sketches:  # the rectangle's top edge is at row 20 on the grid
        assert np.median(sketch[14:18, 30:100]) > 200, "the white paper stays white"
        assert (sketch[19:22, 30:100].min(axis=0) < K.DARK).mean() > 0.8, "a frame line along the top edge (gaps aside)"
        assert (sketch[22:26, 30:100] < K.DARK).mean() < 0.1, "no thick band inside the frame"


def test_determinism_per_seed_and_variety_across_seeds():
    picture = figure()
    a = K.random_sketch(picture, np.random.default_rng(7))
    b = K.random_sketch(picture, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    sketches = [K.random_sketch(picture, np.random.default_rng(s)) for s in range(8)]
    distinct = {s.tobytes() for s in sketches}
    assert len(distinct) == 8
    styles = {K._random_sketch(picture, np.random.default_rng(s))[1] for s in range(20)}
    assert len(styles) >= 8, styles


def test_reference_sketch_is_deterministic_and_plain():
    picture = figure(2)
    a, b = K.reference_sketch(picture), K.reference_sketch(picture.copy())
    np.testing.assert_array_equal(a, b)
    assert a.min() < 80 and np.median(a) == 255


def test_flat_white_picture_gives_white_sketch():
    white = np.full((256, 256, 3), 255, np.uint8)
    for seed in range(10):
        sketch = K.random_sketch(white, np.random.default_rng(seed))
        assert (sketch < K.DARK).mean() < 0.005 and np.median(sketch) > 220
    assert (K.reference_sketch(white) == 255).all()


def test_fit_to_grid_matches_the_gateway():
    from service.imaging import Frame

    for h, w in [(256, 256), (300, 451), (90, 60)]:
        image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.testing.assert_array_equal(K.fit_to_grid(image), Frame.fit(w, h).to_grid(image))


def test_crops_are_biased_to_the_drawing():
    picture = corner_figure()
    drawn = picture.min(axis=2) <= K.PAPER
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left, side = K.random_crop(picture, rng)
        assert 0.5 * 256 - 1 <= side <= 0.9 * 256 + 1
        assert 0 <= top <= 256 - side and 0 <= left <= 256 - side
        assert drawn[top : top + side, left : left + side].any(), "a crop must overlap the coloured pixels"


def make_set(n: int = 6):
    pictures = np.stack([figure(i) for i in range(n)])
    names = [f"src{i % 2}/item{i}" for i in range(n)]
    groups = [f"g{i // 2}" for i in range(n)]  # two pictures per group
    split_of = {"g0": "train", "g1": "val", "g2": "test"}.__getitem__
    return pictures, names, groups, split_of


def test_build_pairs_shapes_views_and_groups():
    pictures, names, groups, split_of = make_set()
    pairs = K.build_pairs(pictures, names, groups, split_of, views=3, seed=0, progress=False)
    m = 2 * 3 + 4  # two train pictures x 3 views, four val/test pictures x 1
    assert pairs["sketches"].shape == (m, SIZE, SIZE) and pairs["sketches"].dtype == np.uint8
    assert pairs["colors"].shape == (m, SIZE, SIZE, 3) and pairs["colors"].dtype == np.uint8
    for key in ("names", "groups", "splits", "styles"):
        assert pairs[key].shape == (m,)
    assert list(pairs["names"][:3]) == ["src0/item0#0", "src0/item0#1", "src0/item0#2"]
    for split, n_views in (("train", 3), ("val", 1), ("test", 1)):
        rows = pairs["splits"] == split
        for name in {n.split("#")[0] for n in pairs["names"][rows]}:
            mine = [i for i, n in enumerate(pairs["names"]) if n.split("#")[0] == name]
            assert len(mine) == n_views
            picture = names.index(name)
            assert {pairs["groups"][i] for i in mine} == {groups[picture]}
            assert {pairs["splits"][i] for i in mine} == {split}
    # view 0 and every val/test view is the whole picture; val/test use the reference sketch
    np.testing.assert_array_equal(pairs["colors"][0], K.fit_to_grid(pictures[0]))
    val = int(np.flatnonzero(pairs["splits"] == "val")[0])
    np.testing.assert_array_equal(pairs["colors"][val], K.fit_to_grid(pictures[2]))
    np.testing.assert_array_equal(pairs["sketches"][val], K.reference_sketch(pictures[2]))
    assert not np.array_equal(pairs["colors"][1], pairs["colors"][0]), "views > 0 are crops"


def test_build_pairs_is_a_pure_function_of_inputs_and_seed():
    pictures, names, groups, split_of = make_set(4)
    a = K.build_pairs(pictures, names, groups, split_of, views=2, seed=3, progress=False)
    b = K.build_pairs(pictures, names, groups, split_of, views=2, seed=3, progress=False)
    c = K.build_pairs(pictures, names, groups, split_of, views=2, seed=4, progress=False)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["sketches"][:2], c["sketches"][:2])
    # a picture's views do not depend on the other pictures in the set
    alone = K.build_pairs(pictures[1:2], names[1:2], groups[1:2], split_of, views=2, seed=3, progress=False)
    np.testing.assert_array_equal(alone["sketches"], a["sketches"][2:4])


def test_build_and_grid_commands(tmp_path, monkeypatch):
    """The CLI end to end on a six-picture cache: the pairs file has every array a loader needs."""
    from training.paths import PAIRS_FILE, PICTURES_FILE

    pictures, names, groups, split_of = make_set()
    monkeypatch.setenv("SKETCH2COLOR_DATA", str(tmp_path))
    monkeypatch.setattr(K, "illustration_split", split_of)
    np.savez(
        tmp_path / PICTURES_FILE,
        pictures=pictures,
        names=np.array(names),
        groups=np.array(groups),
        sources=np.array([n.split("/")[0] for n in names]),
    )
    K.main(["build", "--views", "2", "--seed", "1"])
    with np.load(tmp_path / PAIRS_FILE) as npz:
        assert len(npz["names"]) == 2 * 2 + 4
        assert list(npz["splits"]).count("train") == 4
        assert set(npz["sources"]) == {"src0", "src1"} and int(npz["views"]) == 2
    K.main(["grid", "--out", str(tmp_path / "grids")])
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == ["src0.png", "src1.png"]
