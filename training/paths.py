"""Where the training data lives and how pictures are split: what every data module shares.

A leaf: the sources (`training.data`, `training.illustrations`, `training.sketchify`) import it,
it imports none of them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from contract.hints import MODEL_SIZE

SIZE = MODEL_SIZE  # training pairs are made at the size the generators see
SPLITS = ("train", "val", "test")
PICTURES_FILE = "illustrations-v1.npz"  # the filtered colour pictures (training.illustrations)
PAIRS_FILE = "illustration-pairs-v1.npz"  # their sketch/colour pairs (training.sketchify)


def data_dir() -> Path:
    """Where prepared data sets are cached: $SKETCH2COLOR_DATA or ./data."""
    return Path(os.environ.get("SKETCH2COLOR_DATA", "data"))


def pictures_cache(cache_dir: Path | None = None) -> Path:
    return (cache_dir or data_dir()) / PICTURES_FILE


def pairs_cache() -> Path:
    return data_dir() / PAIRS_FILE


def hash_split(key: str) -> str:
    """A stable 80/10/10 split of a name: the same name lands in the same split on every machine."""
    bucket = int(hashlib.sha1(key.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"
