"""training.data: the pair sources and their fixed splits, on tiny data sets built in tmp_path."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import data as D

SIZE = D.SIZE


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def flat_square(background: tuple[int, int, int], fill: tuple[int, int, int], size: int = SIZE) -> np.ndarray:
    """A square of one colour on another: colour edges along rows/cols 32 and 95, flat elsewhere."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = background
    image[32:96, 32:96] = fill
    return image


# ---------------------------------------------------------------------------------- Kaggle


@pytest.fixture
def kaggle_root(tmp_path) -> tuple[Path, list[str]]:
    """Seven pairs in the danbooru-sketch-pair-128x layout, over two numbered folders."""
    rng = np.random.default_rng(0)
    root = tmp_path / "kaggle"
    rel = ["0000/15.png", "0000/3.png", "0000/700.png", "0001/1.png", "0001/2.png", "0001/44.png", "0001/9.png"]
    for r in reversed(rel):  # written out of order: the split must come from sorting, not the file system
        save_png(root / "color" / "sketch" / r, rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
        save_png(root / "color" / "src" / r, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    return root, sorted(rel, key=lambda r: Path(r).parts)


def test_kaggle_source_reads_pairs_as_they_are_split_by_sorted_file_order(kaggle_root, monkeypatch):
    root, rel = kaggle_root
    monkeypatch.setattr(D, "KAGGLE_SPLIT", {"train": (0, 4), "val": (4, 6), "test": (6, 9)})

    splits = {split: D.load_split(f"kaggle:{root}", split) for split in D.SPLITS}

    assert splits["train"].names == rel[:4]
    assert splits["val"].names == rel[4:6]
    assert splits["test"].names == rel[6:]
    for dataset in splits.values():
        for name, (sketch, color) in zip(dataset.names, dataset, strict=True):
            assert sketch.shape == (SIZE, SIZE) and sketch.dtype == np.uint8
            assert np.array_equal(sketch, np.asarray(Image.open(root / "color" / "sketch" / name)))
            assert np.array_equal(color, np.asarray(Image.open(root / "color" / "src" / name)))


def test_kaggle_split_boundaries_are_half_open(kaggle_root, monkeypatch):
    root, rel = kaggle_root
    monkeypatch.setattr(D, "KAGGLE_SPLIT", {"train": (0, 3), "val": (3, 4), "test": (4, 7)})

    names = [D.load_split(f"kaggle:{root}", split).names for split in D.SPLITS]

    assert [len(n) for n in names] == [3, 1, 3]
    assert sum(names, []) == rel


def test_kaggle_source_rejects_a_folder_without_the_kaggle_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="danbooru-sketch-pair-128x"):
        D.load_split(f"kaggle:{tmp_path}", "train")


# ---------------------------------------------------------------------------------- any folder


def test_xdog_draws_dark_lines_at_colour_edges_and_white_in_flat_regions():
    sketch = D.xdog(flat_square((200, 220, 240), (180, 40, 40)))

    assert sketch.shape == (SIZE, SIZE) and sketch.dtype == np.uint8
    band = np.zeros((SIZE, SIZE), bool)  # within 8 px of the square's outline
    band[24:104, 24:104] = True
    band[40:88, 40:88] = False
    assert np.all(sketch[~band] == 255)
    for i in range(34, 94):  # every pixel along each of the four edges has a dark line beside it
        assert sketch[i, 28:37].min() < 64 and sketch[i, 91:100].min() < 64
        assert sketch[28:37, i].min() < 64 and sketch[91:100, i].min() < 64


@pytest.fixture
def image_folder(tmp_path) -> tuple[Path, list[str]]:
    """40 colour images (PNG and JPEG, some not square, one nested) and a file that is no image."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    rel = []
    for i in range(40):
        fill = tuple(int(v) for v in rng.integers(0, 150, 3))  # darker than the background
        r = f"{'nested/' if i % 7 == 0 else ''}img{i:02d}.{'jpg' if i % 5 == 0 else 'png'}"
        image = flat_square((230, 230, 230), fill, size=SIZE * 2)
        if i % 3 == 0:
            image = np.pad(image, ((0, 0), (20, 20), (0, 0)), constant_values=255)  # 256 x 296
        (root / r).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / r)
        rel.append(r)
    (root / "notes.txt").write_text("not an image")
    return root, sorted(rel)


def test_folder_source_pairs_each_image_with_its_xdog_sketch(image_folder):
    root, _ = image_folder

    dataset = D.load_split(f"folder:{root}", "train")

    assert len(dataset) > 0
    for sketch, color in dataset:
        assert color.shape == (SIZE, SIZE, 3) and color.dtype == np.uint8
        assert np.array_equal(sketch, D.xdog(color))
        assert sketch.min() < 64 and np.mean(sketch == 255) > 0.5  # line art: dark lines, mostly white


def test_folder_split_is_deterministic_disjoint_and_covers_every_image(image_folder):
    root, rel = image_folder

    first = {split: D.load_split(f"folder:{root}", split).names for split in D.SPLITS}
    second = {split: D.load_split(f"folder:{root}", split).names for split in D.SPLITS}

    assert first == second
    assert all(first[split] for split in D.SPLITS)
    assert not set(first["test"]) & set(first["train"])
    assert not set(first["val"]) & (set(first["train"]) | set(first["test"]))
    assert sorted(sum(first.values(), [])) == rel
    assert all(D.hash_split(name) == split for split, names in first.items() for name in names)


# ---------------------------------------------------------------------------------- splits


def test_hash_split_is_stable_and_close_to_80_10_10():
    keys = [f"emoji-{i}" for i in range(5000)]

    splits = [D.hash_split(k) for k in keys]

    assert splits == [D.hash_split(k) for k in keys]
    share = {split: n / len(keys) for split, n in Counter(splits).items()}
    assert set(share) == set(D.SPLITS)
    assert abs(share["train"] - 0.8) < 0.02
    assert abs(share["val"] - 0.1) < 0.015 and abs(share["test"] - 0.1) < 0.015


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("1F44B", "1F44B"),
        ("1F44B-1F3FB", "1F44B"),
        ("1F44B-1F3FF", "1F44B"),
        ("1F9D1-1F3FD-200D-1F91D-200D-1F9D1-1F3FB", "1F9D1-200D-1F91D-200D-1F9D1"),
        ("1F468-200D-1F469-200D-1F467", "1F468-200D-1F469-200D-1F467"),
        ("2764-FE0F", "2764-FE0F"),
    ],
)
def test_openmoji_group_drops_skin_tone_modifiers_only(name, group):
    assert D.openmoji_group(name) == group


# ---------------------------------------------------------------------------------- OpenMoji

COLOR_SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">
  <circle cx="36" cy="36" r="24" fill="{fill}" stroke="#000000" stroke-width="3"/>
</svg>"""
BLACK_SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">
  <circle cx="36" cy="36" r="24" fill="none" stroke="#000000" stroke-width="3"/>
</svg>"""
FILLS = {
    "1F44B": "#FCEA2B",
    "1F44B-1F3FB": "#FADCBC",
    "1F44B-1F3FD": "#DEA27C",
    "1F600": "#FFD200",
    "1F680": "#3F3F3F",
    "2764": "#D22F27",
    "1F9D1-200D-1F4BB": "#92D3F5",
    "1F195": "#1E50A0",  # its outline is empty in OpenMoji: skipped
    "E000": "#61B2E4",  # no black counterpart: skipped
}


@pytest.fixture
def openmoji_package(tmp_path) -> Path:
    """A tiny stand-in for openmoji-17.0.0.tgz: a few colour SVGs and their outlines, npm-pack layout."""
    path = tmp_path / "openmoji-fake.tgz"
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, text: str) -> None:
            payload = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        add("package/package.json", '{"name": "openmoji"}')
        for name, fill in FILLS.items():
            add(f"package/color/svg/{name}.svg", COLOR_SVG.format(fill=fill))
            if name != "E000":
                add(f"package/black/svg/{name}.svg", BLACK_SVG)
    return path


def test_prepare_openmoji_rasterises_each_pair_and_skips_1F195_and_unpaired_emoji(
    openmoji_package, tmp_path, monkeypatch
):
    monkeypatch.setenv("SKETCH2COLOR_DATA", str(tmp_path / "cache"))

    out = D.prepare_openmoji(package=openmoji_package)

    assert out == tmp_path / "cache" / f"openmoji-{D.OPENMOJI_VERSION}-{SIZE}.npz"
    with np.load(out) as npz:
        names, sketches, colors = list(npz["names"]), npz["sketches"], npz["colors"]
    assert names == sorted(set(FILLS) - {"1F195", "E000"})
    assert sketches.shape == (len(names), SIZE, SIZE) and sketches.dtype == np.uint8
    assert colors.shape == (len(names), SIZE, SIZE, 3) and colors.dtype == np.uint8
    for name, sketch, color in zip(names, sketches, colors, strict=True):
        fill = tuple(int(FILLS[name][i : i + 2], 16) for i in (1, 3, 5))
        assert tuple(color[64, 64]) == fill  # the fill at the centre
        assert tuple(color[2, 2]) == (255, 255, 255)  # white outside the circle
        assert sketch[64, 64] == 255 and sketch[2, 2] == 255
        assert sketch[64, 64 + 43] < 64  # the outline: radius 24 of 72 is 43 px of 128


def test_openmoji_splits_are_disjoint_cover_every_pair_and_keep_skin_tones_together(
    openmoji_package, tmp_path, monkeypatch
):
    monkeypatch.setenv("SKETCH2COLOR_DATA", str(tmp_path / "cache"))
    D.prepare_openmoji(package=openmoji_package)
    with np.load(D.openmoji_cache()) as npz:
        everything = dict(zip(npz["names"], zip(npz["sketches"], npz["colors"], strict=True), strict=True))

    splits = {split: D.load_split("openmoji", split) for split in D.SPLITS}

    names = {split: dataset.names for split, dataset in splits.items()}
    assert sorted(sum(names.values(), [])) == sorted(everything)
    assert sum(len(n) for n in names.values()) == len(set(sum(names.values(), [])))
    split_of = {name: split for split, ns in names.items() for name in ns}
    assert split_of["1F44B-1F3FB"] == split_of["1F44B-1F3FD"] == split_of["1F44B"]
    for dataset in splits.values():
        for name, (sketch, color) in zip(dataset.names, dataset, strict=True):
            assert np.array_equal(sketch, everything[name][0]) and np.array_equal(color, everything[name][1])


def test_openmoji_source_says_how_to_prepare_it_when_the_cache_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("SKETCH2COLOR_DATA", str(tmp_path))

    with pytest.raises(FileNotFoundError, match="prepare-openmoji"):
        D.load_split("openmoji", "train")


# ---------------------------------------------------------------------------------- synthetic


def test_synthetic_pairs_are_deterministic_per_seed():
    a, b, other = D.synthetic_pairs(6, seed=3), D.synthetic_pairs(6, seed=3), D.synthetic_pairs(6, seed=4)

    assert np.array_equal(a.sketches, b.sketches) and np.array_equal(a.colors, b.colors)
    assert a.names == b.names
    assert not np.array_equal(a.colors, other.colors)
    assert a.sketches.shape == (6, SIZE, SIZE) and a.colors.shape == (6, SIZE, SIZE, 3)
    assert a.sketches.dtype == a.colors.dtype == np.uint8


def test_synthetic_source_gives_fixed_distinct_splits():
    splits = {split: D.load_split("synthetic", split) for split in D.SPLITS}

    assert [len(splits[s]) for s in D.SPLITS] == [48, 8, 8]
    assert not np.array_equal(splits["val"].colors, splits["test"].colors)
    assert np.array_equal(D.load_split("synthetic", "val").colors, splits["val"].colors)


@pytest.mark.parametrize(("source", "split"), [("synthetic", "validation"), ("imagenet", "train")])
def test_load_split_rejects_unknown_splits_and_sources(source, split):
    with pytest.raises(ValueError):
        D.load_split(source, split)


def test_mix_repeats_the_emoji_in_training_only_and_mix_n_sets_how_often(monkeypatch):
    emoji, drawings = D.synthetic_pairs(3, seed=1), D.synthetic_pairs(5, seed=2)
    monkeypatch.setattr(D, "_openmoji_split", lambda split: emoji)
    monkeypatch.setattr(D, "_illustration_split", lambda split: drawings)

    assert len(D.load_split("mix", "train")) == 2 * 3 + 5
    assert len(D.load_split("mix:4", "train")) == 4 * 3 + 5
    assert len(D.load_split("mix:4", "val")) == 3 + 5
    with pytest.raises(ValueError, match="mix:N"):
        D.load_split("mix:0", "train")
