"""Coloured character and illustration pictures from package registries, cached as one .npz.

OpenMoji alone teaches flat emoji; these sources add drawn people, animals, painted portraits,
3D-shaded emoji and game sprites. Each package is fetched with its registry's ordinary client
(`apt-get download` + `dpkg-deb -x`, or `npm pack` at a pinned version) into
``data_dir()/packages/`` and reused from there, so re-running is offline. Pictures are composited
onto white, trimmed to their content, filtered (big enough, coloured enough), letterboxed to
256x256 and de-duplicated with an 8x8 difference hash. `SOURCES` is the one record of licences.
(SuperTux's creatures were tried and left out: past the 64-px filter only 11 characters remain,
mostly fire frames, too few to split by character with a test share.)

    python -m training.illustrations prepare [--cache-dir DIR]
    python -m training.illustrations summary
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.paths import SPLITS, data_dir, pictures_cache
from training.pictures import Deduplicator, dhash, letterbox, load_picture, reject_reason

# Two packages' name prefixes are kept for an independent evaluation and never fetched here. They
# are held as (prefix length, sha256 of the prefix), so that no code, list or test names them.
RESERVED = (
    (7, "75282f9d47b2a65723cbf4ea4dc9318eed30571a307de43ec32d377552120770"),
    (5, "19dab99fc0fb7683f90a8701b435bc6023ecc9c6413a4a8bc442453a220f0984"),
)
SKIN_TONE = re.compile(r"-1f3f[b-f]", re.IGNORECASE)
OPENCLIPART_SKIP = (
    r"^usr/share/openclipart/svg/(computer/(icons|buttons|connectors|diagrams|folders|network)|buttons|shapes|"
    r"signs_and_symbols|special|logos|geography|people/stickmen|transportation/(aiga-symbols|roadsigns)|"
    r"recreation/games/(cards|chess))/"
    r"|(^|[/_\-\s.])(stick(man|men|figure)?|signs?|roadsigns?|flags?|maps?|icons?|buttons?|logos?|arrows?|patterns?|"
    r"borders?|frames?|fonts?|alphabet|text|symbols?|labels?|banners?|silhouettes?|outlines?|colou?ring)"
    r"($|[_\-\s.\d])"
)
HEDGEWARS_SKIP = (
    r"(?i)/(icon(@x)?|(sd)?(land(back)?tex|border|sky[lr]?|horizont[lr]?|flake|chunk|clouds?|splash|droplet|"
    r"bluewater|water|dust)|a?m?girder|tmp|[^/]*mask|[^/]*spray[^/]*|am[A-Z][^/]*)\.png$"
)


def check_allowed(package: str) -> str:
    """Refuse the packages reserved for the independent evaluation, so no code path can touch them."""
    name = package.strip().lower().lstrip("@")
    if any(hashlib.sha256(name[:n].encode()).hexdigest() == digest for n, digest in RESERVED):
        raise ValueError(f"package {package!r} is reserved for evaluation and must not be used")
    return package


@dataclass(frozen=True)
class Source:
    """One picture source and its licence record (the model card is generated from these)."""

    name: str
    registry: str  # "debian" or "npm"
    package: str
    licence: str
    attribution: str
    url: str
    pattern: str  # glob of the picture files inside the unpacked package
    exclude: str = ""  # regex on the path inside the package: matches are skipped
    version: str = ""  # pinned for npm; Debian gets the archive's current one, recorded in the cache's meta
    group: str = "numbered"  # split key: "numbered" (item, trailing digits off), "item", "folder", "word", "emoji"

    def __post_init__(self) -> None:
        check_allowed(self.package)
        if self.group not in ("numbered", "item", "folder", "word", "emoji"):
            raise ValueError(f"unknown group rule {self.group!r}")
        if self.registry not in ("debian", "npm"):
            raise ValueError(f"unknown registry {self.registry!r}")


SOURCES: tuple[Source, ...] = (
    Source(
        "art4apps",
        "debian",
        "pysiogame",
        "CC BY-SA 3.0 (Art4Apps; Debian's copyright lists the images as PD)",
        "Art4Apps drawings, shipped in pysiogame by Ireneusz Imiolek",
        "https://www.art4apps.org",
        "usr/share/games/pysiogame/res/images/art4apps/*/*.jpg",
        group="word",
    ),
    Source(
        "openclipart",
        "debian",
        "openclipart-svg",
        "Public domain (Open Clip Art Library dedication)",
        "Open Clip Art Library contributors (each SVG's .txt names its author)",
        "https://openclipart.org",
        "usr/share/openclipart/svg/**/*.svg",
        OPENCLIPART_SKIP,
    ),
    Source(
        "fluent-emoji-3d",
        "npm",
        "@lobehub/fluent-emoji-3d",
        "MIT",
        "Microsoft Fluent Emoji (3D style), packaged by LobeHub",
        "https://github.com/lobehub/fluent-emoji",
        "package/assets/*.webp",
        version="1.1.0",
        group="emoji",
    ),
    Source(
        "naev-portraits",
        "debian",
        "naev-data",
        "CC BY 3.0 (dat/gfx/ARTWORK_LICENSE.yaml)",
        "Nihilos, The Diligent Circle and other Naev artists",
        "https://naev.org",
        "usr/share/naev/dat/gfx/portraits/*/**/*.png",
        group="item",
    ),
    Source(
        "flare-portraits",
        "debian",
        "flare-game",
        "CC BY-SA 3.0+",
        "Clint Bellanger and the Flare contributors",
        "https://flarerpg.org",
        "usr/share/games/flare/mods/*/images/portraits/*.png",
        group="item",
    ),
    Source(
        "hedgewars-props",
        "debian",
        "hedgewars-data",
        "GPL-2 / GFDL-1.3 (per theme, Debian copyright)",
        "Hedgewars Project",
        "https://hedgewars.org",
        "usr/share/games/hedgewars/Data/Themes/*/*.png",
        HEDGEWARS_SKIP,
    ),
    Source(
        "qabcs",
        "debian",
        "qabcs-data",
        "GPL-3+ (a few CC0 / public domain)",
        "DanSoft (qABCs)",
        "https://bitbucket.org/admsasha/qabcs",
        "usr/share/qabcs/abcs/all/pics/*/*.png",
    ),
)


# ---------------------------------------------------------------------------------- names, groups, splits


def emoji_base(name: str) -> str:
    """An emoji file name without skin tones, gender signs and variation selectors."""
    return re.sub(r"-200d-264[02]", "", SKIN_TONE.sub("", name.lower()).replace("-fe0f", ""))


def group_of(source: str, item: str) -> str:
    """The key a split is drawn by: variants of one item (skin tones, numbered poses, frames) share it."""
    how = next((s.group for s in SOURCES if s.name == source), "numbered")
    item = item.lower()
    if how == "emoji":
        return f"{source}/{emoji_base(item)}"
    if how == "folder":
        return f"{source}/{item.split('/')[0]}"
    if how == "item":
        return f"{source}/{item}"
    if how == "word":  # the same word drawn in two categories
        item = item.rsplit("/", 1)[-1]
    return f"{source}/{re.sub(r'[-_ ]*[0-9]+$', '', item)}"


def drop_skin_tones(items: list[str]) -> list[str]:
    """One emoji per skin-tone family: the toneless default, or the first toned one if none."""
    toneless = {SKIN_TONE.sub("", i).replace("-fe0f", "") for i in items if not SKIN_TONE.search(i)}
    kept, seen = [], set()
    for item in items:
        base = SKIN_TONE.sub("", item).replace("-fe0f", "")
        if not SKIN_TONE.search(item) or (base not in toneless and base not in seen):
            kept.append(item)
            seen.add(base)
    return kept


def illustration_split(group: str) -> str:
    """A stable split of a group key by SHA-1: 12 % test, 8 % val, 80 % train on every machine."""
    bucket = int(hashlib.sha1(group.encode()).hexdigest(), 16) % 100
    return "test" if bucket < 12 else "val" if bucket < 20 else "train"


# ---------------------------------------------------------------------------------- fetching


def fetch(source: Source, packages: Path) -> Path:
    """The package file, downloaded with the registry's own client unless already in `packages`."""
    check_allowed(source.package)
    packages.mkdir(parents=True, exist_ok=True)
    if source.registry == "npm":
        out = packages / f"{source.package.lstrip('@').replace('/', '-')}-{source.version}.tgz"
        if not out.exists():
            subprocess.run(
                ["npm", "pack", f"{source.package}@{source.version}", "--silent"],
                cwd=packages,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        return out
    found = sorted(packages.glob(f"{source.package}_*.deb"))
    if not found:
        subprocess.run(["apt-get", "download", source.package], cwd=packages, check=True, stdout=subprocess.DEVNULL)
        found = sorted(packages.glob(f"{source.package}_*.deb"))
    return found[-1]


def unpack(source: Source, package: Path, dest: Path) -> str:
    """Unpack the package into dest; returns the exact version fetched."""
    if source.registry == "npm":
        with tarfile.open(package) as tar:
            tar.extractall(dest, filter="data")
        return json.loads((dest / "package" / "package.json").read_text())["version"]
    subprocess.run(["dpkg-deb", "-x", str(package), str(dest)], check=True)
    return subprocess.run(
        ["dpkg-deb", "-f", str(package), "Version"], capture_output=True, text=True, check=True
    ).stdout.strip()


def list_items(source: Source, root: Path) -> list[tuple[str, Path]]:
    """(item name, file) for the source's pictures: name is the path below the pattern's fixed part."""
    prefix = source.pattern.split("*", 1)[0]
    files = [p for p in sorted(root.glob(source.pattern)) if p.is_file()]
    files = [p for p in files if not (source.exclude and re.search(source.exclude, p.relative_to(root).as_posix()))]
    items = {p.relative_to(root / prefix).with_suffix("").as_posix(): p for p in files}
    return [(name, items[name]) for name in drop_skin_tones(sorted(items))]


# ---------------------------------------------------------------------------------- cache


@dataclass
class Illustrations:
    """The cache in memory: pictures (N, 256, 256, 3) uint8 and per-picture names, groups, sources."""

    pictures: np.ndarray
    names: np.ndarray
    groups: np.ndarray
    sources: np.ndarray
    meta: dict

    def splits(self) -> np.ndarray:
        return np.array([illustration_split(g) for g in self.groups])


def write_cache(path: Path, data: Illustrations) -> Path:
    """Save as one compressed .npz (names unique, meta as a JSON string)."""
    if len(set(data.names.tolist())) != len(data.names):
        raise ValueError("picture names must be unique")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        pictures=data.pictures,
        names=data.names.astype(str),
        groups=data.groups.astype(str),
        sources=data.sources.astype(str),
        meta=np.array(json.dumps(data.meta)),
    )
    return path


def read_cache(path: Path | None = None) -> Illustrations:
    path = path or pictures_cache()
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: prepare it with `python -m training.illustrations prepare`")
    with np.load(path) as npz:
        return Illustrations(npz["pictures"], npz["names"], npz["groups"], npz["sources"], json.loads(str(npz["meta"])))


def licence_table(meta: dict | None = None) -> str:
    """A markdown table of the sources' licences, with versions and counts from the cache when it exists."""
    if meta is None:
        meta = read_cache().meta if pictures_cache().exists() else {}
    rows = ["| source | package | licence | attribution | pictures |", "|---|---|---|---|---:|"]
    for s in SOURCES:
        m = meta.get(s.name, {})
        version = m.get("version") or s.version
        package = f"`{s.package}@{version}`" if version else f"`{s.package}`"
        rows.append(f"| [{s.name}]({s.url}) | {package} | {s.licence} | {s.attribution} | {m.get('count', '?')} |")
    return "\n".join(rows)


def contact_sheet(pictures: list[np.ndarray], path: Path, cols: int = 8, rows: int = 4, thumb: int = 96) -> None:
    """A grid of thumbnails (an even sample of the pictures) to look at what a filter keeps."""
    sheet = Image.new("RGB", (cols * thumb, rows * thumb), (200, 200, 200))
    chosen = np.linspace(0, len(pictures) - 1, min(len(pictures), cols * rows)).astype(int) if pictures else []
    for k, i in enumerate(chosen):
        tile = Image.fromarray(pictures[i]).resize((thumb - 2, thumb - 2), Image.Resampling.LANCZOS)
        sheet.paste(tile, ((k % cols) * thumb + 1, (k // cols) * thumb + 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def prepare(
    cache_dir: Path | None = None, packages: Path | None = None, previews: bool = True, only: list[str] | None = None
) -> Path:
    """Fetch every source, filter and de-duplicate its pictures, write the cache (and contact sheets)."""
    from tqdm import tqdm

    cache_dir, packages = cache_dir or data_dir(), packages or data_dir() / "packages"
    pictures, names, groups, sources, meta = [], [], [], [], {}
    dedup = Deduplicator()
    for source in [s for s in SOURCES if not only or s.name in only]:
        package = fetch(source, packages)
        kept, rejected, reasons = [], [], {"small": 0, "gray": 0, "unreadable": 0, "duplicate": 0}
        with tempfile.TemporaryDirectory() as tmp:
            version = unpack(source, package, Path(tmp))
            for item, file in tqdm(list_items(source, Path(tmp)), desc=source.name, unit="pic"):
                rgb = load_picture(file)
                reason = "unreadable" if rgb is None else reject_reason(rgb)
                picture = None if rgb is None or reason == "small" else letterbox(rgb)
                if reason is None and not dedup.add(dhash(picture)):
                    reason = "duplicate"
                if reason is not None:
                    reasons[reason] += 1
                    if picture is not None and reason == "gray":
                        rejected.append(picture[::4, ::4])
                    continue
                kept.append(picture)
                names.append(f"{source.name}/{item}")
                groups.append(group_of(source.name, item))
                sources.append(source.name)
        pictures += kept
        meta[source.name] = {
            "registry": source.registry,
            "package": source.package,
            "version": version,
            "licence": source.licence,
            "attribution": source.attribution,
            "url": source.url,
            "count": len(kept),
            "rejected": reasons,
        }
        print(f"{source.name}: kept {len(kept)}, rejected {reasons}", file=sys.stderr)
        if previews:
            contact_sheet(kept, cache_dir / "illustration_previews" / f"{source.name}.png")
            contact_sheet(rejected, cache_dir / "illustration_previews" / f"{source.name}-rejected.png", thumb=64)
    data = Illustrations(np.stack(pictures), np.array(names), np.array(groups), np.array(sources), meta)
    out = write_cache(pictures_cache(cache_dir), data)
    print(f"{len(names)} pictures -> {out}", file=sys.stderr)
    return out


def summary(data: Illustrations) -> str:
    """Counts per source and split, one line per source."""
    splits = data.splits()
    lines = [f"{'source':<20} {'total':>6} " + " ".join(f"{s:>6}" for s in SPLITS)]
    for name in [s.name for s in SOURCES] + ["all"]:
        mine = np.ones(len(splits), bool) if name == "all" else data.sources == name
        counts = " ".join(f"{int((mine & (splits == s)).sum()):>6}" for s in SPLITS)
        lines.append(f"{name:<20} {int(mine.sum()):>6} {counts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("prepare", "fetch, filter and cache the pictures"), ("summary", "counts per source/split")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--cache-dir", type=Path, help="where the .npz goes (default: the data dir)")
    sub.choices["prepare"].add_argument("--packages-dir", type=Path, help="downloads (default: DATA/packages)")
    sub.choices["prepare"].add_argument("--no-previews", action="store_true", help="skip the contact sheets")
    sub.choices["prepare"].add_argument("--only", nargs="+", help="these sources only (for trying filters)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        prepare(args.cache_dir, args.packages_dir, previews=not args.no_previews, only=args.only)
    print(summary(read_cache(pictures_cache(args.cache_dir))))


if __name__ == "__main__":
    main()
