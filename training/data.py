"""Sketch/colour pair data sets: one interface, four sources, fixed splits.

A data set is a sequence of (sketch, colour) pairs: sketch (128, 128) uint8 grayscale, colour
(128, 128, 3) uint8 RGB. Sources, named by a spec string:

- ``openmoji`` (default): OpenMoji 17.0.0, the coloured emoji and their own line art, 4494 pairs,
  prepared once by ``python -m training.data prepare-openmoji`` (``npm pack``, rasterise) and
  cached as one .npz. Split by a hash of the emoji's base name (skin-tone modifiers removed, so
  the five tones of one emoji never straddle splits): 80% train, 10% val, 10% test.
- ``illustrations``: ~3,800 colour character drawings, portraits, 3D emoji and props from package
  registries (`training.illustrations`: Art4Apps, openclipart, Fluent Emoji 3D, naev, Flare,
  Hedgewars, qabcs), turned into pairs by `training.sketchify` (jittered XDoG with line-weight,
  gap and noise augmentation; crops; ~19,000 pairs). Split by source item: 80/8/12, so the test
  split holds 410 pictures from every source, one reference-style sketch each.
- ``mix``: ``openmoji`` and ``illustrations`` together, each split with its own; the training
  split holds each emoji twice (``mix:N``: N times, to lean a fine-tune towards emoji).
- ``kaggle:DIR``: the Kaggle "danbooru-sketch-pair-128x" layout as-is,
  ``DIR/color/{sketch,src}/NNNN/<id>.png``. The study's split by sorted file order: first 20000
  train, next 3000 val, next 3000 test.
- ``folder:DIR``: any folder of colour images; sketches extracted with XDoG. Split by a hash of
  the relative path, 80/10/10.
- ``synthetic``: generated outlined shapes, for ``--dry-run`` and tests.

The test split is never read by training or model selection.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from training import illustrations, sketchify
from training.paths import SIZE, SPLITS, data_dir, hash_split, pairs_cache, pictures_cache
from training.xdog import XDoGParams, xdog

OPENMOJI_VERSION = "17.0.0"
OPENMOJI_SKIP = {"1F195"}  # its black outline is empty
KAGGLE_SPLIT = {"train": (0, 20000), "val": (20000, 23000), "test": (23000, 26000)}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class PairDataset(Sequence):
    """Pairs held in memory: sketches (N, 128, 128) uint8, colours (N, 128, 128, 3) uint8."""

    def __init__(self, sketches: np.ndarray, colors: np.ndarray, names: Sequence[str]):
        assert sketches.shape[0] == colors.shape[0] == len(names)
        self.sketches, self.colors, self.names = sketches, colors, list(names)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.sketches[i], self.colors[i]


class FileDataset(Sequence):
    """Pairs read from disk on access; `load(path) -> (sketch, colour)` does the work."""

    def __init__(self, items: Sequence, load, names: Sequence[str]):
        self.items, self.load, self.names = list(items), load, list(names)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.load(self.items[i])


def _emoji_repeat(arg: str) -> int:
    if not arg:
        return 2
    if not arg.isdigit() or int(arg) < 1:
        raise ValueError(f"mix:N takes a whole number of emoji repeats >= 1, got {arg!r}")
    return int(arg)


def load_split(source: str, split: str) -> Sequence[tuple[np.ndarray, np.ndarray]]:
    """The `split` ("train", "val" or "test") of the data set named by `source`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kind, _, arg = source.partition(":")
    if kind == "openmoji":
        return _openmoji_split(split)
    if kind == "illustrations":
        return _illustration_split(split)
    if kind == "mix":
        emoji = _openmoji_split(split)
        # Training sees each emoji twice per epoch (28% of pairs), so the new domain does not wash out the old.
        repeat = _emoji_repeat(arg) if split == "train" else 1
        return concat([emoji] * repeat + [_illustration_split(split)])
    if kind == "kaggle":
        return _kaggle_split(Path(arg), split)
    if kind == "folder":
        return _folder_split(Path(arg), split)
    if kind == "synthetic":
        n = {"train": 48, "val": 8, "test": 8}[split]
        return synthetic_pairs(n, seed=SPLITS.index(split))
    raise ValueError(
        f"unknown data source {source!r}: use openmoji, illustrations, mix, kaggle:DIR, folder:DIR or synthetic"
    )


def concat(parts: Sequence[PairDataset]) -> PairDataset:
    return PairDataset(
        np.concatenate([p.sketches for p in parts]),
        np.concatenate([p.colors for p in parts]),
        [n for p in parts for n in p.names],
    )


# ---------------------------------------------------------------------------------- OpenMoji


def openmoji_cache() -> Path:
    return data_dir() / f"openmoji-{OPENMOJI_VERSION}-{SIZE}.npz"


def openmoji_group(name: str) -> str:
    """The emoji's name without skin-tone modifiers: the key its split is drawn by."""
    return re.sub(r"-?1F3F[B-F]", "", name)


def _openmoji_split(split: str) -> PairDataset:
    path = openmoji_cache()
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: prepare it with `python -m training.data prepare-openmoji`")
    with np.load(path) as npz:
        names = [str(n) for n in npz["names"]]
        keep = np.array([hash_split(openmoji_group(n)) == split for n in names])
        return PairDataset(npz["sketches"][keep], npz["colors"][keep], [n for n, k in zip(names, keep) if k])


def prepare_openmoji(package: Path | None = None) -> Path:
    """Fetch OpenMoji with `npm pack` (unless a .tgz is given), rasterise it, cache it as .npz."""
    out = openmoji_cache()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if package is None:
            print(f"npm pack openmoji@{OPENMOJI_VERSION} ...", file=sys.stderr)
            subprocess.run(
                ["npm", "pack", f"openmoji@{OPENMOJI_VERSION}", "--silent"],
                cwd=tmp,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            package = Path(tmp) / f"openmoji-{OPENMOJI_VERSION}.tgz"
        with tarfile.open(package) as tar:
            members = [m for m in tar.getmembers() if re.match(r"package/(color|black)/svg/[^/]+\.svg$", m.name)]
            tar.extractall(tmp, members=members, filter="data")
        root = Path(tmp) / "package"
        names = sorted(p.stem for p in (root / "color" / "svg").glob("*.svg") if p.stem not in OPENMOJI_SKIP)
        names = [n for n in names if (root / "black" / "svg" / f"{n}.svg").exists()]
        from tqdm import tqdm

        sketches = np.empty((len(names), SIZE, SIZE), np.uint8)
        colors = np.empty((len(names), SIZE, SIZE, 3), np.uint8)
        for i, name in enumerate(tqdm(names, desc="rasterise", unit="emoji")):
            colors[i] = render_svg(root / "color" / "svg" / f"{name}.svg")
            sketches[i] = render_svg(root / "black" / "svg" / f"{name}.svg").min(axis=2)
    np.savez_compressed(out, sketches=sketches, colors=colors, names=np.array(names))
    print(f"{len(names)} pairs -> {out}", file=sys.stderr)
    return out


def render_svg(path: Path, size: int = SIZE) -> np.ndarray:
    """Rasterise an SVG onto white at size x size: (size, size, 3) uint8."""
    import skia

    dom = skia.SVGDOM.MakeFromStream(skia.Stream.MakeFromFile(str(path)))
    dom.setContainerSize(skia.Size(size, size))
    surface = skia.Surface(size, size)
    with surface as canvas:
        canvas.clear(skia.ColorWHITE)
        dom.render(canvas)
    return surface.makeImageSnapshot().toarray(colorType=skia.kRGBA_8888_ColorType)[:, :, :3].copy()


# ---------------------------------------------------------------------------------- illustrations


def _illustration_split(split: str) -> PairDataset:
    path = pairs_cache()
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: prepare it with `python -m training.data prepare-illustrations` (package registries)"
        )
    with np.load(path) as npz:
        keep = npz["splits"] == split
        return PairDataset(npz["sketches"][keep], npz["colors"][keep], [str(n) for n in npz["names"][keep]])


def prepare_illustrations(views: int = 6, seed: int = 0) -> Path:
    """Fetch and filter the illustration pictures (apt-get download, npm pack), then make the pairs."""
    if not pictures_cache().exists():
        illustrations.main(["prepare"])
    return sketchify.build(views, seed)


# ---------------------------------------------------------------------------------- Kaggle


def _kaggle_split(root: Path, split: str) -> FileDataset:
    sketch_root = root / "color" / "sketch"
    if not sketch_root.is_dir():
        raise FileNotFoundError(f"{sketch_root} not found: expected the danbooru-sketch-pair-128x layout")
    rel = sorted(p.relative_to(sketch_root) for p in sketch_root.glob("*/*.png"))
    start, stop = KAGGLE_SPLIT[split]
    chosen = rel[start:stop]

    def load(r: Path) -> tuple[np.ndarray, np.ndarray]:
        sketch = _read_rgb(sketch_root / r, (SIZE, SIZE)).min(axis=2)
        return sketch, _read_rgb(root / "color" / "src" / r, (SIZE, SIZE))

    return FileDataset(chosen, load, [str(r) for r in chosen])


# ---------------------------------------------------------------------------------- any folder


def _folder_split(root: Path, split: str, params: XDoGParams = XDoGParams()) -> FileDataset:
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    rel = sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    chosen = [r for r in rel if hash_split(str(r)) == split]

    def load(r: Path) -> tuple[np.ndarray, np.ndarray]:
        color = _read_rgb(root / r, (SIZE, SIZE))
        return xdog(color, params), color

    return FileDataset(chosen, load, [str(r) for r in chosen])


def _read_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An image file as RGB on white, centre-cropped to square and resized: (H, W, 3) uint8."""
    with Image.open(path) as im:
        im = im.convert("RGBA")
        canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
        canvas.alpha_composite(im)
        w, h = canvas.size
        s = min(w, h)
        canvas = canvas.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        if canvas.size != size:
            canvas = canvas.resize(size, Image.Resampling.LANCZOS)
        return np.asarray(canvas.convert("RGB"))


# ---------------------------------------------------------------------------------- synthetic


def synthetic_pairs(n: int, seed: int = 0) -> PairDataset:
    """Outlined ellipses and rectangles in flat colours: a stand-in data set for dry runs."""
    rng = np.random.default_rng(seed)
    sketches = np.full((n, SIZE, SIZE), 255, np.uint8)
    colors = np.full((n, SIZE, SIZE, 3), 255, np.uint8)
    for i in range(n):
        for _ in range(int(rng.integers(1, 4))):
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            cx, cy = (int(v) for v in rng.integers(24, SIZE - 24, 2))
            a, b = (int(v) for v in rng.integers(8, 28, 2))
            if rng.random() < 0.5:
                cv2.ellipse(colors[i], (cx, cy), (a, b), 0, 0, 360, fill, -1)
                cv2.ellipse(colors[i], (cx, cy), (a, b), 0, 0, 360, (0, 0, 0), 2)
                cv2.ellipse(sketches[i], (cx, cy), (a, b), 0, 0, 360, 0, 2)
            else:
                cv2.rectangle(colors[i], (cx - a, cy - b), (cx + a, cy + b), fill, -1)
                cv2.rectangle(colors[i], (cx - a, cy - b), (cx + a, cy + b), (0, 0, 0), 2)
                cv2.rectangle(sketches[i], (cx - a, cy - b), (cx + a, cy + b), 0, 2)
    return PairDataset(sketches, colors, [f"synthetic-{seed}-{i}" for i in range(n)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare-openmoji", help="npm pack OpenMoji, rasterise, cache as .npz")
    prep.add_argument("--package", type=Path, help="an already downloaded openmoji-17.0.0.tgz")
    ill = sub.add_parser("prepare-illustrations", help="fetch the illustration packages, make sketch/colour pairs")
    ill.add_argument("--views", type=int, default=6, help="pairs per training picture (whole + crops)")
    show = sub.add_parser("summary", help="print the size of each split of a source")
    show.add_argument("source", nargs="?", default="openmoji")
    args = parser.parse_args(argv)
    if args.command == "prepare-openmoji":
        prepare_openmoji(args.package)
    elif args.command == "prepare-illustrations":
        prepare_illustrations(args.views)
    else:
        for split in SPLITS:
            print(f"{split}: {len(load_split(args.source, split))} pairs")


if __name__ == "__main__":
    main()
