"""Sketches that look hand-drawn, made from colour pictures, and sketch/colour training pairs.

One fixed extractor teaches a model that extractor's signature (line width, tone, where it
breaks), not line art. So each training sketch is drawn with its own jittered XDoG
(`training.xdog`) and a random mix of what real sketches have: lines thicker or thinner,
small gaps, speckle, gray paper, slight blur, JPEG softness, or clean binarised ink. About half of
them are extracted at the picture's own resolution and shrunk onto the 128 px grid exactly as
the gateway shrinks a user's full-resolution sketch (`service.imaging.Frame.to_grid`), so the
model sees the thin gray lines it will be sent. Val/test use one deterministic style,
`reference_sketch`.

    python -m training.sketchify build [--views 6] [--seed 0]   # illustrations -> pairs .npz
    python -m training.sketchify grid [--out results/data]        # one PNG of pairs per source
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from training.illustrations import illustration_split
from training.paths import PAIRS_FILE, SIZE, pairs_cache, pictures_cache
from training.xdog import XDoGParams, xdog

DARK = 128  # a sketch pixel below this is line
DARK_SHARE = (0.015, 0.13)  # the share of line pixels a plausible sketch has (at extraction resolution)
REFERENCE_DARK_SHARE = (0.015, 0.10)
THICK_MAX_SHARE = 0.16
LINE_MAX = 60  # the darkest lines of a sketch are at least this dark
PAPER = 235  # a picture pixel with every channel above this is background, not drawing
CROP_SIDE = (0.5, 0.9)  # a random crop's side, as a share of the picture's shorter side
EPSILON_REACH = 6.0  # how far below the asked threshold the guard may go (p * DoG reaches ~-10)
BISECT_STEPS = 9


def fit_to_grid(image: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Scale onto a white size x size square as the gateway does (Frame.fit + to_grid): INTER_AREA
    to shrink, INTER_CUBIC to grow, centred."""
    h, w = image.shape[:2]
    scale = size / max(w, h)
    iw, ih = max(1, round(w * scale)), max(1, round(h * scale))
    if (iw, ih) == (w, h):
        inner = image
    else:
        inner = cv2.resize(image, (iw, ih), interpolation=cv2.INTER_AREA if iw < w else cv2.INTER_CUBIC)
    grid = np.full((size, size) + image.shape[2:], 255, np.uint8)
    top, left = (size - ih) // 2, (size - iw) // 2
    grid[top : top + ih, left : left + iw] = inner
    return grid


def dark_share(sketch: np.ndarray) -> float:
    return float((sketch < DARK).mean())


def opaque_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of a picture painted on an opaque rectangle and padded with white
    paper (a portrait with its background, letterboxed), or None for a figure on white."""
    drawn = rgb.min(axis=2) < PAPER
    rows, cols = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
    if len(rows) == 0:
        return None
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    inner = [side.mean() for side, _ in _box_sides(drawn, (top, bottom, left, right), 1)]
    return (top, bottom, left, right) if inner and min(inner) >= 0.8 else None


def _box_sides(image: np.ndarray, box: tuple[int, int, int, int], width: int) -> list[tuple[np.ndarray, tuple]]:
    """The sides of `box` that lie inside the image (not on its edge): (view of the side, index)."""
    (h, w), (top, bottom, left, right) = image.shape[:2], box
    sides = [
        (top > 1, (slice(top, top + width), slice(left, right))),
        (bottom < h - 1, (slice(bottom - width, bottom), slice(left, right))),
        (left > 1, (slice(top, bottom), slice(left, left + width))),
        (right < w - 1, (slice(top, bottom), slice(right - width, right))),
    ]
    return [(image[index], index) for inside, index in sides if inside]


def guarded_xdog(rgb: np.ndarray, params: XDoGParams, band: tuple[float, float] = DARK_SHARE) -> np.ndarray:
    """XDoG whose share of line pixels is kept within `band`, with a thin frame round an opaque picture.

    On shaded or painted pictures XDoG draws the shading as texture: then its threshold epsilon
    is lowered (by bisection, up to EPSILON_REACH below the asked one) to the highest value that
    leaves at most `hi` of the picture dark, which keeps the strongest edges, the outlines. A
    picture with too few lines gets a stronger p, unless it is (nearly) blank: blank stays white.
    A painted rectangle on white paper would get a thick black band where its dark background
    meets the paper (eating the line budget), so its edge pixels are extended over the paper
    first, and a one-grid-pixel frame is drawn instead.
    """
    box = opaque_box(rgb)
    if box is None:
        return _guarded(rgb, params, band)
    (h, w), (top, bottom, left, right) = rgb.shape[:2], box
    i = 2  # replicate from 2 px in: resampling rings along the rectangle's edge
    inner = rgb[top + i : bottom - i, left + i : right - i]
    content = cv2.copyMakeBorder(inner, top + i, h - bottom + i, left + i, w - right + i, cv2.BORDER_REPLICATE)
    sketch = _guarded(content, params, band)
    framed = np.full_like(sketch, 255)
    framed[top:bottom, left:right] = sketch[top:bottom, left:right]
    for _, index in _box_sides(framed, box, max(1, round(max(h, w) / SIZE))):
        framed[index] = 0
    return framed


def _guarded(rgb: np.ndarray, params: XDoGParams, band: tuple[float, float]) -> np.ndarray:
    lo, hi = band
    sketch = xdog(rgb, params)
    share = dark_share(sketch)
    if share > hi:
        low, high, fitting = params.epsilon - EPSILON_REACH, params.epsilon, None
        for _ in range(BISECT_STEPS):
            mid = xdog(rgb, replace(params, epsilon=(low + high) / 2))
            if dark_share(mid) > hi:
                high = (low + high) / 2
            else:
                low, fitting = (low + high) / 2, mid
        return fitting if fitting is not None else xdog(rgb, replace(params, epsilon=low))
    if share < lo and (rgb.min(axis=2) <= PAPER).mean() > 0.01:
        for _ in range(3):
            params = replace(params, p=params.p * 1.5)
            stronger = xdog(rgb, params)
            if dark_share(stronger) > hi:
                break
            sketch = stronger
            if dark_share(sketch) >= lo:
                break
    return sketch


def reference_sketch(rgb: np.ndarray, out_size: int = SIZE) -> np.ndarray:
    """The fixed style for val/test: the default XDoG on the picture shrunk to the grid, share-guarded.

    Deterministic, so validation numbers from different runs compare.
    """
    return guarded_xdog(fit_to_grid(rgb, out_size), XDoGParams(), REFERENCE_DARK_SHARE)


def random_sketch(rgb: np.ndarray, rng: np.random.Generator, out_size: int = SIZE) -> np.ndarray:
    """A sketch in a random hand-drawn-looking style: (out_size, out_size) uint8, black on white."""
    return _random_sketch(rgb, rng, out_size)[0]


def _random_sketch(rgb: np.ndarray, rng: np.random.Generator, out_size: int = SIZE) -> tuple[np.ndarray, str]:
    """`random_sketch` and a short description of the style drawn (for grids and debugging)."""
    tags = []
    native = max(rgb.shape[:2]) >= 1.5 * out_size and rng.random() < 0.5
    if native:  # draw at the picture's resolution and shrink it like a user's sketch
        work, scale = rgb, max(rgb.shape[:2]) / out_size
        tags.append(f"{max(rgb.shape[:2])}px")
    else:
        work, scale = fit_to_grid(rgb, out_size), 1.0
        tags.append(f"{out_size}px")
    soft = rng.random() < 0.4
    params = XDoGParams(
        sigma=float(rng.uniform(0.45, 0.85) * scale ** rng.uniform(0.5, 1.0)),
        k=float(rng.uniform(3.5, 5.5)),
        p=float(rng.uniform(13.0, 26.0)),
        epsilon=float(rng.uniform(-0.01, 0.03)),
        phi=float(10 ** rng.uniform(1.3, 2.3)) if soft else 1e9,  # soft: graded pencil-like edges
    )
    if soft:
        tags.append("soft")
    sketch = guarded_xdog(work, params, (DARK_SHARE[0], float(rng.uniform(0.07, DARK_SHARE[1]))))
    # line weight, at the drawing's resolution so the change is a fraction of a grid pixel when native
    weight = rng.random()
    if weight < 0.25:
        radius = int(rng.integers(1, 3)) if native else 1
        thick = cv2.erode(sketch, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (radius + 1, radius + 1)))
        if dark_share(thick) <= THICK_MAX_SHARE:  # a bold pen on a busy drawing would be a mess
            sketch = thick
            tags.append("thick")
    elif weight < 0.4 and native:
        thinned = cv2.dilate(sketch, np.ones((2, 2), np.uint8))
        if dark_share(thinned) > 0.6 * dark_share(sketch):  # keep it unless the lines vanish
            sketch = thinned
            tags.append("thin")
    elif weight < 0.55:
        sketch = (255 * (sketch / 255.0) ** rng.uniform(1.5, 3.0)).astype(np.uint8)  # grays darken
        tags.append("bold")
    if native:
        sketch = fit_to_grid(sketch, out_size)
    sketch = _darken_lines(sketch, float(rng.uniform(0, LINE_MAX)))
    if rng.random() < 0.35:
        sketch = _gaps(sketch, rng, int(rng.integers(2, 8)))
        tags.append("gaps")
    if rng.random() < 0.25:  # clean binarised ink, nothing else on the page
        sketch = np.where(sketch < rng.uniform(140, 210), 0, 255).astype(np.uint8)
        return sketch, " ".join(tags + ["ink"])
    if rng.random() < 0.3:
        sketch = (sketch.astype(np.float32) * rng.uniform(228, 250) / 255).astype(np.uint8)
        tags.append("paper")
    if rng.random() < 0.25:
        count = int(rng.integers(5, 40))
        ys, xs = rng.integers(0, out_size, count), rng.integers(0, out_size, count)
        sketch[ys, xs] = np.minimum(sketch[ys, xs], rng.integers(90, 210, count)).astype(np.uint8)
        tags.append("speckle")
    if rng.random() < 0.2:
        sketch = cv2.GaussianBlur(sketch, (0, 0), rng.uniform(0.35, 0.7))
        tags.append("blur")
    if rng.random() < 0.15:
        _, buf = cv2.imencode(".jpg", sketch, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 75))])
        sketch = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        tags.append("jpeg")
    return sketch, " ".join(tags)


def _darken_lines(sketch: np.ndarray, target: float) -> np.ndarray:
    """Stretch the tones so the darkest lines reach `target` if they are lighter than LINE_MAX.

    Thin or soft lines drawn at 256 px come out light gray once shrunk; a faint sketch is not
    what people send, and the model should not learn to colour over near-invisible lines.
    """
    lines = sketch[sketch < 250]
    if len(lines) == 0:
        return sketch
    darkest = float(np.percentile(lines, 5))
    if darkest <= LINE_MAX:
        return sketch
    stretched = 255 - (255 - sketch.astype(np.float32)) * (255 - target) / (255 - darkest)
    return np.clip(stretched, 0, 255).astype(np.uint8)


def _gaps(sketch: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """Erase a few short pieces of line, as a pen that skipped or strokes that don't quite meet."""
    ys, xs = np.nonzero(sketch < DARK)
    if len(ys) == 0:
        return sketch
    out = sketch.copy()
    for i in rng.choice(len(ys), size=min(count, len(ys)), replace=False):
        angle, length = rng.uniform(0, np.pi), rng.uniform(1.5, 3.5)
        dx, dy = length * np.cos(angle), length * np.sin(angle)
        p0 = (int(round(xs[i] - dx)), int(round(ys[i] - dy)))
        p1 = (int(round(xs[i] + dx)), int(round(ys[i] + dy)))
        cv2.line(out, p0, p1, 255, 2)
    return out


def random_crop(picture: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """(top, left, side) of a random square crop, 50-90 % of the shorter side, centred near a
    random drawn (non-background) pixel so that a crop is rarely mostly white paper."""
    h, w = picture.shape[:2]
    side = max(1, round(min(h, w) * rng.uniform(*CROP_SIDE)))
    drawn = np.flatnonzero(picture.min(axis=2) <= PAPER)
    if len(drawn):
        cy, cx = divmod(int(drawn[rng.integers(len(drawn))]), w)
        cy += int(rng.integers(-side // 4, side // 4 + 1))
        cx += int(rng.integers(-side // 4, side // 4 + 1))
    else:
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
    top = int(np.clip(cy - side // 2, 0, h - side))
    left = int(np.clip(cx - side // 2, 0, w - side))
    return top, left, side


def picture_rng(seed: int, name: str) -> np.random.Generator:
    """A picture's own generator: its views depend on (seed, name), not on the other pictures."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def build_pairs(
    pictures: np.ndarray,
    names,
    groups,
    split_of: Callable[[str], str],
    views: int,
    seed: int,
    size: int = SIZE,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Sketch/colour pairs from pictures: `views` random views per train picture (view 0 the
    whole picture, the rest crops, each with its own random sketch), one reference-sketched
    whole view per val/test picture. Returns sketches, colors, names ("source/item#view"),
    groups, splits and styles; a pure function of the inputs and `seed`."""
    from tqdm import tqdm

    splits = [split_of(str(g)) for g in groups]
    counts = [views if s == "train" else 1 for s in splits]
    total = sum(counts)
    sketches = np.empty((total, size, size), np.uint8)
    colors = np.empty((total, size, size, 3), np.uint8)
    out_names, out_groups, out_splits, styles = [], [], [], []
    row = 0
    for picture, name, group, split, count in zip(
        tqdm(pictures, desc="sketchify", unit="picture", disable=not progress), names, groups, splits, counts
    ):
        name = str(name)
        rng = picture_rng(seed, name)
        for view in range(count):
            if split != "train":
                crop, sketch, style = picture, reference_sketch(picture, size), "reference"
            else:
                crop = picture
                if view > 0:
                    top, left, side = random_crop(picture, rng)
                    crop = picture[top : top + side, left : left + side]
                sketch, style = _random_sketch(crop, rng, size)
            sketches[row], colors[row] = sketch, fit_to_grid(crop, size)
            out_names.append(f"{name}#{view}")
            out_groups.append(str(group))
            out_splits.append(split)
            styles.append(style)
            row += 1
    return {
        "sketches": sketches,
        "colors": colors,
        "names": np.array(out_names, dtype=str),
        "groups": np.array(out_groups, dtype=str),
        "splits": np.array(out_splits, dtype=str),
        "styles": np.array(styles, dtype=str),
    }


def build(views: int, seed: int) -> Path:
    """Read the illustrations cache, write the pairs cache; print counts and time."""

    source = pictures_cache()
    if not source.exists():
        raise FileNotFoundError(f"{source} is missing: prepare it with `python -m training.illustrations prepare`")
    start = time.perf_counter()
    with np.load(source) as npz:
        pictures, names, groups = npz["pictures"], npz["names"], npz["groups"]
    pairs = build_pairs(pictures, names, groups, illustration_split, views, seed)
    pairs["sources"] = np.array([n.split("/", 1)[0] for n in pairs["names"]], dtype=str)
    out = pairs_cache()
    np.savez_compressed(out, **pairs, views=np.int64(views), seed=np.int64(seed))
    print(f"{len(pairs['names'])} pairs from {len(names)} pictures -> {out} in {time.perf_counter() - start:.0f} s")
    for split in ("train", "val", "test"):
        print(f"  {split}: {(pairs['splits'] == split).sum()} pairs")
    for src in sorted(set(pairs["sources"])):
        keep = pairs["sources"] == src
        per_split = ", ".join(f"{s} {(pairs['splits'][keep] == s).sum()}" for s in ("train", "val", "test"))
        print(f"  {src}: {keep.sum()} pairs ({per_split})")
    return out


def grid(out_dir: Path, per_source: int = 8, seed: int = 0) -> list[Path]:
    """One PNG per source: `per_source` train pairs from different pictures, sketch above target,
    whole pictures and crops in turn, chosen so that many sketch styles show, each plainly."""
    from PIL import Image, ImageDraw, ImageFont

    with np.load(pairs_cache()) as npz:  # each npz[key] decompresses the whole array: read once
        names, splits, styles, sketches, colors = (npz[k] for k in ("names", "splits", "styles", "sketches", "colors"))
    pictures = np.array([n.split("#")[0] for n in names])
    whole = np.array([n.endswith("#0") for n in names])
    sources = np.array([n.split("/", 1)[0] for n in names])
    out_dir.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default(size=11)
    written = []
    for src in sorted(set(sources)):
        candidates = np.flatnonzero((sources == src) & (splits == "train"))
        candidates = candidates[np.random.default_rng(seed).permutation(len(candidates))][:600]
        chosen, seen_tags, seen_pictures = [], set(), set()
        for col in range(per_source):  # greedy: up to two style tags not shown yet, in as plain a sketch as can be
            pool = [i for i in candidates if pictures[i] not in seen_pictures and whole[i] == (col % 2 == 0)]
            if not pool:
                continue
            best = max(
                pool, key=lambda i: min(len(set(styles[i].split()) - seen_tags), 2) - 0.1 * len(styles[i].split())
            )
            chosen.append(best)
            seen_tags |= set(styles[best].split())
            seen_pictures.add(pictures[best])
        cell, gap, head, foot = SIZE, 4, 18, 30
        sheet = Image.new("RGB", (len(chosen) * (cell + gap) + gap, head + 2 * cell + gap + foot), "white")
        draw = ImageDraw.Draw(sheet)
        title = f"{src}: train pairs, sketch above target (whole picture / crop; sketch style under each)"
        draw.text((gap, 3), title, fill="black", font=font)
        for col, i in enumerate(chosen):
            x = gap + col * (cell + gap)
            sheet.paste(Image.fromarray(sketches[i]).convert("RGB"), (x, head))
            sheet.paste(Image.fromarray(colors[i]), (x, head + cell + gap))
            draw.rectangle((x - 1, head - 1, x + cell, head + cell), outline=(200, 200, 200))
            lines = [""]
            for word in ["whole:" if whole[i] else "crop:"] + str(styles[i]).split():  # wrap under the column
                if lines[-1] and draw.textlength(f"{lines[-1]} {word}", font=font) > cell:
                    lines.append(word)
                else:
                    lines[-1] = f"{lines[-1]} {word}".strip()
            draw.multiline_text((x, head + 2 * cell + gap + 1), "\n".join(lines), fill=(80, 80, 80), font=font)
        path = out_dir / f"{src}.png"
        sheet.save(path)
        written.append(path)
        print(f"{path}: {len(chosen)} pairs")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help=f"illustrations cache -> {PAIRS_FILE}")
    b.add_argument("--views", type=int, default=6, help="views (whole picture + crops) per train picture")
    b.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("grid", help="one PNG of train pairs per source")
    g.add_argument("--out", type=Path, default=Path("results/data"))
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)  # the work is many small images: threads only add contention
    if args.command == "build":
        build(args.views, args.seed)
    else:
        grid(args.out)


if __name__ == "__main__":
    sys.exit(main())
