"""contract.wire: the uint8 tensors between the gateway and Triton, and the encoding the Triton
model makes from them, against the per-image reference training is checked against."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contract import batch as B
from contract import hints as H
from contract import wire
from service.api import pb
from service.imaging import Limits
from service.inputs import encode_request
from training.data import synthetic_pairs

ROOT = Path(__file__).resolve().parents[1]
PAIRS = synthetic_pairs(6, seed=5)


def points_for(i: int, count: int) -> list[H.PointHint]:
    sketch, color = PAIRS[i]
    rng = np.random.default_rng(i)
    return H.region_points(color, sketch, count, rng) if i % 2 else H.random_points(color, count, rng)


def test_a_hints_table_carries_every_hint_in_order_and_marks_the_rest_unused():
    points = points_for(1, 7)
    table = wire.pack_points(points)
    assert table.shape == (wire.MAX_HINTS, wire.HINT_FIELDS) and table.dtype == np.uint8
    assert (table[7:] == 0).all()
    assert wire.unpack_points(table) == points
    with pytest.raises(ValueError, match="at most"):
        wire.pack_points([H.PointHint(0, 0, (0, 0, 0))] * (wire.MAX_HINTS + 1))


@pytest.mark.parametrize(
    ("row", "why"), [((128, 5, 3, 0, 0, 0), "outside 0..127"), ((5, 5, 10, 0, 0, 0), "size is outside")]
)
def test_a_hints_table_from_an_arbitrary_client_is_checked(row, why):
    table = wire.pack_points(points_for(0, 3))
    assert wire.check_hints(table) is None
    table[1] = row
    assert why in wire.check_hints(table)
    table[1, 2] = 0  # an unused row may hold anything
    assert wire.check_hints(table) is None


@pytest.mark.parametrize("kind", list(H.HintKind))
def test_the_triton_models_batched_encoding_equals_the_per_image_reference(kind):
    counts = [0, 1, 5, 30, 2, 12]  # a batch mixing no hints, one, many
    sketches = np.stack([s for s, _ in PAIRS])
    colors = np.stack([c for _, c in PAIRS])
    tables, reference = [], []
    for i, (sketch, color) in enumerate(PAIRS):
        points = points_for(i, counts[i]) if kind is H.HintKind.POINTS else []
        table = wire.pack_points(points)
        if i == 4 and points:  # an unused row between used ones is skipped, not read as a hint
            table[0, 2] = 0
            points = points[1:]
        tables.append(table)
        reference.append(H.encode(kind, sketch, color=color if kind.needs_color_image else None, points=points))
    hints = torch.from_numpy(np.stack(tables)) if kind is H.HintKind.POINTS else None
    color = torch.from_numpy(colors) if kind.needs_color_image else None
    got = B.encode_wire(kind, torch.from_numpy(sketches), hints, color)
    np.testing.assert_array_equal(got.numpy(), np.stack(reference))


def test_a_batch_where_no_image_has_a_hint_encodes_as_the_reference():
    sketches = np.stack([PAIRS[i][0] for i in range(2)])
    hints = torch.zeros(2, wire.MAX_HINTS, wire.HINT_FIELDS, dtype=torch.uint8)  # what Triton's warm-up sends
    got = B.encode_wire(H.HintKind.POINTS, torch.from_numpy(sketches), hints)
    np.testing.assert_array_equal(got.numpy(), np.stack([H.encode("points", s) for s in sketches]))


def test_the_model_output_becomes_the_same_image_as_the_reference_rounding():
    x = torch.linspace(-1.2, 1.2, 3 * 128 * 128).reshape(1, 3, 128, 128)
    x[0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 1 / 255, -1 / 255])  # exact levels and halves
    np.testing.assert_array_equal(B.to_image(x)[0].numpy(), H.from_unit(x[0].numpy()).transpose(1, 2, 0))


@pytest.mark.parametrize("kind", list(H.HintKind))
def test_a_request_reaches_the_generator_as_the_tensor_training_builds(kind):
    """The gateway's wire tensors, encoded by the Triton model's code, are the tensor `hints.encode`
    makes from the same sketch and hints in training."""
    import io

    from PIL import Image

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    sketch, color = PAIRS[3]
    points = points_for(3, 12) if kind is H.HintKind.POINTS else []
    req = pb.ColorizeRequest(
        sketch=png(sketch),
        color_hint=png(color) if kind.needs_color_image else b"",
        hints=[
            pb.Hint(pixel=pb.Point(x=p.col, y=p.row), color=pb.Color(r=p.rgb[0], g=p.rgb[1], b=p.rgb[2]), size=p.size)
            for p in points
        ],
    )
    tensors, _, _ = encode_request(req, kind, Limits())
    assert [(n, a.shape) for n, a in tensors.items()] == [(s.name, s.dims) for s in wire.inputs(kind)]
    assert all(a.dtype == np.uint8 for a in tensors.values())
    batch = {n: torch.from_numpy(a[None]) for n, a in tensors.items()}
    got = B.encode_wire(kind, batch[wire.SKETCH], batch.get(wire.HINTS), batch.get(wire.COLOR_HINT))
    trained_on = H.encode(kind, sketch, color=color if kind.needs_color_image else None, points=points)
    np.testing.assert_array_equal(got[0].numpy(), trained_on)


def test_the_gateway_imports_neither_torch_nor_training_nor_benchmarks():
    banned = ("torch", "training", "benchmarks")
    code = (
        "import sys, service.gateway, service.web, service.healthcheck; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {banned}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    sources = [p for p in (ROOT / "service").rglob("*.py") if "_generated" not in p.parts]
    offending = [str(p) for p in sources if "from training" in p.read_text() or "import training" in p.read_text()]
    assert offending == []
