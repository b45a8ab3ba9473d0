"""What travels between the gateway (or any Triton client) and a Triton generator: uint8 only.

A generator takes the sketch on the model grid and, by its hint kind, the hints as a short table
or the rough colour image; it encodes them itself (`contract.batch`, the code training uses) and
answers an RGB image. Per request that is 16 KB + 3 KB in and 48 KB out, where float32 tensors
of the encoded input were 721 KB in and 197 KB out.

    sketch      (128, 128)        uint8  gray, the sketch fitted onto the model grid
    hints       (MAX_HINTS, 6)    uint8  per row: grid row, grid col, size, r, g, b; size 0 = unused
    color_hint  (128, 128, 3)     uint8  the rough colour image on the grid (``blur``, ``patches20``)
    image       (128, 128, 3)     uint8  the answer, RGB (output)

Each variant's config.pbtxt declares its inputs (written by `training.export` from `inputs`);
the gateway reads them from Triton and checks them against this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contract.hints import MODEL_SIZE, POINT_SIZE_RANGE, HintKind, PointHint

WEIGHTS_FILE = "generator.pt2"  # <variant>/1/ in the model repository
DEFAULT_VARIANT = "guided"
# Triton instances of each model (config.pbtxt): on a CPU each takes its share of the cores
# (generator_model.py), and two single-threaded forward passes beat one two-threaded one (no
# OpenMP barrier stalls when the gateway takes a core for a moment: 142 vs 110 img/s direct at
# c=16 on 2 cores); on a GPU one instance prepares its batch while the other computes.
INSTANCES = 2


def cpu_threads(cores: int, instances: int) -> int:
    """torch threads for each of a model's CPU instances: its share of `cores` (more would
    oversubscribe them), at least one."""
    return max(1, cores // instances)


def instances(config: dict) -> tuple[int, bool]:
    """(instances of a model one Triton runs, on GPUs?) from Triton's config of the loaded model
    (JSON), where KIND_AUTO is resolved; a GPU group runs `count` on each of its GPUs."""
    groups = config.get("instance_group") or [{"kind": "KIND_CPU", "count": 1}]
    gpu = any(g.get("kind") == "KIND_GPU" for g in groups)
    count = sum(
        int(g.get("count", 1)) * (max(1, len(g.get("gpus", []))) if g.get("kind") == "KIND_GPU" else 1) for g in groups
    )
    return max(1, count), gpu


# The most images one forward pass takes, per instance kind; config.pbtxt carries them
# (max_forward_batch_cpu/gpu) so an operator can change them without re-exporting. CPU: on 2 cores a
# pass of 32 took 2.7x as long as one of 16, and the gateway's p99 at c=64 fell 1285 -> 870 ms.
FORWARD_BATCH = {"cpu": 16, "gpu": 256}

MAX_HINTS = 512  # rows of the hints table: the most hints one request can carry

SKETCH, HINTS, COLOR_HINT, IMAGE = "sketch", "hints", "color_hint", "image"
HINT_FIELDS = 6  # row, col, size, r, g, b

# What each hint kind accepts, as sketch2color.v1.HintKind value names (the API's words).
HINT_KIND_API: dict[HintKind, tuple[str, ...]] = {
    HintKind.NONE: (),
    HintKind.POINTS: ("HINT_KIND_POINTS",),
    HintKind.BLUR: ("HINT_KIND_COLOR_IMAGE",),
    HintKind.PATCHES20: ("HINT_KIND_COLOR_IMAGE",),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dims: tuple[int, ...]  # without the batch dimension
    data_type: str = "UINT8"  # Triton's name; every tensor of the wire is uint8


OUTPUT = TensorSpec(IMAGE, (MODEL_SIZE, MODEL_SIZE, 3))


def inputs(kind: HintKind | str) -> tuple[TensorSpec, ...]:
    """The tensors a generator of this hint kind takes, in order."""
    kind = HintKind(kind)
    specs = [TensorSpec(SKETCH, (MODEL_SIZE, MODEL_SIZE))]
    if kind is HintKind.POINTS:
        specs.append(TensorSpec(HINTS, (MAX_HINTS, HINT_FIELDS)))
    elif kind.needs_color_image:
        specs.append(TensorSpec(COLOR_HINT, (MODEL_SIZE, MODEL_SIZE, 3)))
    return tuple(specs)


def pack_points(points: Sequence[PointHint]) -> np.ndarray:
    """Hints on the model grid as the (MAX_HINTS, 6) uint8 table, in order (a later one paints over)."""
    if len(points) > MAX_HINTS:
        raise ValueError(f"{len(points)} hints; the wire carries at most {MAX_HINTS}")
    table = np.zeros((MAX_HINTS, HINT_FIELDS), np.uint8)
    if points:
        table[: len(points)] = [(p.row, p.col, p.size, *p.rgb) for p in points]
    return table


def unpack_points(table: np.ndarray) -> list[PointHint]:
    """The hints of one table (rows with size 0 skipped), as `pack_points` took them."""
    return [PointHint(int(r), int(c), (int(red), int(g), int(b)), int(s)) for r, c, s, red, g, b in table if s]


def check_hints(table: np.ndarray) -> str | None:
    """Why a hints table from an arbitrary client is not valid, or None."""
    used = table[:, 2] > 0
    lo, hi = POINT_SIZE_RANGE
    if (table[used, :2] >= MODEL_SIZE).any():
        return f"a hint's row or column is outside 0..{MODEL_SIZE - 1}"
    if (table[used, 2] > hi).any():
        return f"a hint's size is outside {lo}..{hi} (0 marks an unused row)"
    return None


def inputs_for(
    kind: HintKind | str, sketch: np.ndarray, *, points: Sequence[PointHint] = (), color: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The wire tensors of one request (no batch dimension), by name: what the gateway sends."""
    kind = HintKind(kind)
    if sketch.shape != (MODEL_SIZE, MODEL_SIZE) or sketch.dtype != np.uint8:
        raise ValueError(f"sketch must be {MODEL_SIZE}x{MODEL_SIZE} uint8 gray, got {sketch.shape} {sketch.dtype}")
    out = {SKETCH: sketch}
    if kind is HintKind.POINTS:
        out[HINTS] = pack_points(points)
    elif kind.needs_color_image:
        if color is None or color.shape != (MODEL_SIZE, MODEL_SIZE, 3):
            raise ValueError(f"the {kind.value} hint needs a {MODEL_SIZE}x{MODEL_SIZE} RGB colour image")
        out[COLOR_HINT] = np.ascontiguousarray(color, np.uint8)
    return out
