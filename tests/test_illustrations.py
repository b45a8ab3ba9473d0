"""training.illustrations: the picture filters, de-duplication, letterboxing, guard, split and cache (no network)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import illustrations as il
from training import pictures as pic


def blob(size: tuple[int, int] = (100, 120), fill: tuple[int, ...] = (220, 40, 40), frac: float = 0.5) -> np.ndarray:
    """A white picture whose left `frac` of columns is one colour: a known coloured fraction."""
    h, w = size
    rgb = np.full((h, w, 3), 255, np.uint8)
    rgb[:, : int(round(w * frac))] = fill
    return rgb


def test_coloured_fraction_counts_only_saturated_pixels() -> None:
    assert pic.coloured_fraction(blob(frac=0.5)) == pytest.approx(0.5, abs=0.01)
    assert pic.coloured_fraction(blob(fill=(128, 128, 128), frac=1.0)) == 0.0  # gray
    assert pic.coloured_fraction(blob(fill=(0, 0, 0), frac=1.0)) == 0.0  # black ink
    assert pic.coloured_fraction(np.full((8, 8, 3), 250, np.uint8)) == 0.0  # near-white


def test_reject_reason_checks_size_and_colour() -> None:
    assert pic.reject_reason(blob((100, 120), frac=0.5)) is None
    assert pic.reject_reason(blob((63, 200), frac=0.5)) == "small"
    assert pic.reject_reason(blob((100, 120), frac=0.05)) == "gray"
    line_art = np.full((100, 100, 3), 255, np.uint8)
    line_art[::10] = 0
    assert pic.reject_reason(line_art) == "gray"


def test_transparent_pixels_become_white_and_margins_are_trimmed() -> None:
    rgba = np.zeros((80, 90, 4), np.uint8)  # fully transparent black
    rgba[20:40, 30:70] = (10, 200, 30, 255)
    rgb = pic.on_white(Image.fromarray(rgba, "RGBA"))
    assert rgb.shape == (80, 90, 3)
    assert (rgb[0, 0] == 255).all() and (rgb[30, 50] == (10, 200, 30)).all()
    trimmed = pic.trim_white(rgb)
    assert trimmed.shape == (20, 40, 3) and (trimmed == (10, 200, 30)).all()


def test_letterbox_pads_with_white_and_keeps_the_whole_figure() -> None:
    wide = np.zeros((50, 200, 3), np.uint8)
    wide[:] = (0, 0, 255)
    out = pic.letterbox(wide, size=64, margin=0.0)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert (out[:10] >= 250).all() and (out[-10:] >= 250).all()  # white bands above and below
    assert (out[32, :, 2] > 200).all() and (out[32, :, 0] < 50).all()  # the figure spans the full width
    tall = pic.letterbox(np.zeros((300, 60, 3), np.uint8), size=256)
    assert tall.shape == (256, 256, 3) and (tall[:, :20] >= 250).all()


def test_dhash_dedup_drops_near_copies_and_keeps_distinct_pictures() -> None:
    rng = np.random.default_rng(0)
    a = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    a = np.asarray(Image.fromarray(a).resize((256, 256), Image.Resampling.NEAREST))
    brighter = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)  # same picture, slightly changed
    b = np.ascontiguousarray(a[::-1])  # a different picture
    dedup = pic.Deduplicator(distance=2)
    assert pic.dhash(a) == pic.dhash(a.copy())
    assert dedup.add(pic.dhash(a)) is True
    assert dedup.add(pic.dhash(brighter)) is False
    assert dedup.add(pic.dhash(b)) is True
    assert dedup.add(pic.dhash(b)) is False
    assert len(dedup.hashes) == 2


def test_dedup_uses_hamming_distance() -> None:
    dedup = pic.Deduplicator(distance=2)
    assert dedup.add(np.uint64(0b0000))
    assert not dedup.add(np.uint64(0b0011))  # 2 bits away
    assert dedup.add(np.uint64(0b0111))  # 3 bits away from the only one kept
    assert not dedup.add(np.uint64(1 << 63))  # 1 bit from 0: the top bit counts too
    assert dedup.add(np.uint64(7 << 61))  # 3 bits from 0


# The real reserved names are never spelt here: the guard is tested on a stand-in prefix.
STAND_IN = "reservedexample"
RESERVED_NAMES = [STAND_IN, f"{STAND_IN}-1.16-data", f"@{STAND_IN}/x", STAND_IN.capitalize()]


@pytest.fixture(autouse=True)
def stand_in_reserved(monkeypatch) -> None:
    digest = hashlib.sha256(STAND_IN.encode()).hexdigest()
    monkeypatch.setattr(il, "RESERVED", (*il.RESERVED, (len(STAND_IN), digest)))


@pytest.mark.parametrize("name", RESERVED_NAMES)
def test_reserved_packages_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        il.check_allowed(name)
    with pytest.raises(ValueError, match="reserved"):
        il.Source("x", "debian", name, "MIT", "someone", "https://example.org", "*.png")


def test_fetch_refuses_reserved_names_before_any_download(tmp_path: Path) -> None:
    source = il.Source("x", "debian", "qabcs-data", "MIT", "someone", "https://example.org", "*.png")
    object.__setattr__(source, "package", f"{STAND_IN}-data")  # bypass the constructor's own check
    with pytest.raises(ValueError, match="reserved"):
        il.fetch(source, tmp_path)
    assert not any(tmp_path.iterdir())


def test_sources_are_allowed_and_uniquely_named() -> None:
    names = [s.name for s in il.SOURCES]
    assert len(names) == len(set(names)) and all(il.check_allowed(s.package) for s in il.SOURCES)
    assert all(s.registry in ("debian", "npm") and s.licence and s.url for s in il.SOURCES)
    assert all(s.version for s in il.SOURCES if s.registry == "npm")  # npm packages are pinned


def test_split_is_stable_and_roughly_80_8_12() -> None:
    assert il.illustration_split("fluent-emoji-3d/1f600") == il.illustration_split("fluent-emoji-3d/1f600")
    # fixed values: a change of the hash or the thresholds moves pictures between splits
    expected = ["train"] * 6 + ["test"] + ["train"] * 2 + ["test"] * 3
    assert [il.illustration_split(f"g{i}") for i in range(12)] == expected
    counts = Counter(il.illustration_split(f"group-{i}") for i in range(20000))
    assert counts["test"] / 20000 == pytest.approx(0.12, abs=0.01)
    assert counts["val"] / 20000 == pytest.approx(0.08, abs=0.01)
    assert counts["train"] / 20000 == pytest.approx(0.80, abs=0.01)


def test_split_matches_sha1_buckets() -> None:
    import hashlib

    for key in ("art4apps/cat", "naev-portraits/dvaered/dv_civilian_f1", "x"):
        bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100
        assert il.illustration_split(key) == ("test" if bucket < 12 else "val" if bucket < 20 else "train")


def test_groups_join_variants_of_one_item() -> None:
    g = il.group_of
    assert g("fluent-emoji-3d", "1f44b-1f3fb") == g("fluent-emoji-3d", "1f44b") == "fluent-emoji-3d/1f44b"
    assert g("fluent-emoji-3d", "1f3c3-200d-2640-fe0f") == g("fluent-emoji-3d", "1f3c3")
    assert g("flare-portraits", "male01") != g("flare-portraits", "male02")
    assert g("art4apps", "food/apple") == g("art4apps", "fruit_n_veg/apple")
    assert g("hedgewars-props", "Cake/plant1") == g("hedgewars-props", "Cake/plant2")
    assert g("naev-portraits", "dvaered/dv_civilian_f1") != g("naev-portraits", "dvaered/dv_civilian_f2")


def test_skin_tone_repeats_are_dropped() -> None:
    items = ["1f44b", "1f44b-1f3fb", "1f44b-1f3ff", "1f3cb-fe0f", "1f3cb-1f3fb", "1f9d1-1f3fc", "1f9d1-1f3fd", "1f600"]
    assert il.drop_skin_tones(items) == ["1f44b", "1f3cb-fe0f", "1f9d1-1f3fc", "1f600"]


def test_list_items_applies_pattern_and_exclude(tmp_path: Path) -> None:
    for rel in ("pics/a/cat.png", "pics/a/cat_mask.png", "pics/b/dog.png", "other/x.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(blob()).save(tmp_path / rel)
    source = il.Source("t", "debian", "t", "MIT", "someone", "https://example.org", "pics/*/*.png", r"mask")
    assert [name for name, _ in il.list_items(source, tmp_path)] == ["a/cat", "b/dog"]


def test_svg_with_external_image_is_skipped(tmp_path: Path) -> None:
    linked = tmp_path / "linked.svg"
    linked.write_text('<svg xmlns="http://www.w3.org/2000/svg"><image xlink:href="photo.jpg" width="9"/></svg>')
    embedded = tmp_path / "embedded.svg"
    embedded.write_text('<svg xmlns="http://www.w3.org/2000/svg"><image href="data:image/png;base64,AA"/></svg>')
    assert pic.links_external_image(linked) and not pic.links_external_image(embedded)
    assert pic.load_picture(linked) is None


@pytest.mark.skipif(shutil.which("rsvg-convert") is None, reason="rsvg-convert not installed")
def test_rasterize_svg_fits_the_box_and_fails_softly(tmp_path: Path) -> None:
    svg = tmp_path / "r.svg"
    svg.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100">'
        '<rect width="200" height="100" fill="#ff0000"/></svg>'
    )
    image = pic.rasterize_svg(svg, px=128)
    assert image is not None and image.size == (128, 64)
    bad = tmp_path / "bad.svg"
    bad.write_text("not an svg")
    assert pic.rasterize_svg(bad) is None


def test_cache_round_trip_and_summary(tmp_path: Path) -> None:
    pictures = np.stack([pic.letterbox(blob()), pic.letterbox(blob(fill=(30, 60, 220)))])
    meta = {"art4apps": {"version": "4.20.01-1", "count": 1}, "qabcs": {"version": "1.0.2-6", "count": 1}}
    names, groups = np.array(["art4apps/a/red", "qabcs/b/blue"]), np.array(["art4apps/red", "qabcs/blue"])
    data = il.Illustrations(pictures, names, groups, np.array(["art4apps", "qabcs"]), meta)
    path = il.write_cache(tmp_path / "c.npz", data)
    back = il.read_cache(path)
    assert back.pictures.shape == (2, 256, 256, 3) and back.pictures.dtype == np.uint8
    assert np.array_equal(back.pictures, pictures)
    assert back.names.tolist() == ["art4apps/a/red", "qabcs/b/blue"] and back.sources.tolist() == ["art4apps", "qabcs"]
    assert back.groups.tolist() == ["art4apps/red", "qabcs/blue"] and back.meta == meta
    assert json.loads(str(np.load(path)["meta"])) == meta
    assert "art4apps" in il.summary(back) and il.summary(back).splitlines()[-1].split()[1] == "2"
    table = il.licence_table(back.meta)
    assert "`pysiogame@4.20.01-1`" in table and "`@lobehub/fluent-emoji-3d@1.1.0`" in table
    assert table.count("\n") == len(il.SOURCES) + 1


def test_cache_refuses_duplicate_names(tmp_path: Path) -> None:
    pictures = np.zeros((2, 256, 256, 3), np.uint8)
    data = il.Illustrations(pictures, np.array(["a/x", "a/x"]), np.array(["a", "a"]), np.array(["a", "a"]), {})
    with pytest.raises(ValueError, match="unique"):
        il.write_cache(tmp_path / "c.npz", data)
