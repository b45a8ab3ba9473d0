"""training.batches / contract.batch: batches made on the device equal the per-image reference encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contract import batch as HB
from contract import hints as H
from training.batches import BatchMaker, batch_generator
from training.data import synthetic_pairs
from training.train import resolve_device
from training.variants import VARIANTS


@pytest.fixture(scope="module")
def pairs():
    return synthetic_pairs(24, seed=5)


def reference_inputs(pairs, variant, indices, batch) -> np.ndarray:
    """What `hints.encode` (the gateway's encoder) makes for the same pairs, flips and hints."""
    points = batch.points.to_lists() if batch.points is not None else [()] * len(indices)
    out = []
    for i, flip, hints in zip(indices, batch.flips.tolist(), points):
        sketch, color = pairs[int(i)]
        if flip:
            sketch, color = sketch[:, ::-1], color[:, ::-1]
        out.append(
            H.encode(variant.hint, np.ascontiguousarray(sketch), color=np.ascontiguousarray(color), points=hints)
        )
    return np.stack(out)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_batch_made_on_the_device_is_bit_identical_to_the_reference_encoder(name, pairs):
    variant = VARIANTS[name]
    maker = BatchMaker(pairs, variant, torch.device("cpu"))
    indices = np.array([3, 0, 17, 17, 9, 22, 5, 11, 1, 8, 13, 20])

    batch = maker(indices, batch_generator(0, 7, 0, torch.device("cpu")))

    assert batch.flips.any() and not batch.flips.all()  # both orientations are exercised
    if variant.hint is H.HintKind.POINTS:
        counts = batch.points.valid.sum(1)
        assert (counts == 0).any() and (counts >= 3).any()
    expected = reference_inputs(pairs, variant, indices, batch)
    assert batch.inputs.dtype == torch.float32 and np.array_equal(batch.inputs.numpy(), expected)
    targets = np.stack([pairs[int(i)][1][:, ::-1] if f else pairs[int(i)][1] for i, f in zip(indices, batch.flips)])
    assert np.array_equal(batch.targets.numpy(), H.to_unit(targets).transpose(0, 3, 1, 2))


def test_the_same_step_seed_gives_the_same_batch_and_another_step_a_different_one(pairs):
    maker = BatchMaker(pairs, VARIANTS["guided"], torch.device("cpu"))
    idx = np.arange(8)

    a, b = (maker(idx, batch_generator(0, 3, 0, torch.device("cpu"))) for _ in range(2))
    c = maker(idx, batch_generator(0, 4, 0, torch.device("cpu")))

    assert torch.equal(a.inputs, b.inputs)
    assert not torch.equal(a.inputs, c.inputs)


def test_sampled_hint_colours_are_the_reference_mean_under_each_square(pairs):
    targets = torch.from_numpy(pairs.colors).permute(0, 3, 1, 2).contiguous()

    points = HB.sample_points(targets, torch.from_numpy(pairs.sketches), torch.Generator().manual_seed(1))

    hints = [p for ps in points.to_lists() for p in ps]
    assert len(hints) > 50
    for b, ps in enumerate(points.to_lists()):
        for p in ps:
            assert p == H.point_from_target(pairs.colors[b], p.row, p.col, p.size)


def test_training_hint_count_mixes_sparse_and_dense_geometric_counts():
    n = 4000
    targets = torch.full((n, 3, 128, 128), 255, dtype=torch.uint8)

    points = HB.sample_points(
        targets, torch.full((n, 128, 128), 255, dtype=torch.uint8), torch.Generator().manual_seed(0)
    )

    counts = points.valid.sum(1).double()
    share = H.DENSE_SHARE
    mean = (1 - share) * (1 / H.POINT_COUNT_P - 1) + share * (1 / H.DENSE_COUNT_P - 1)  # 13
    none = (1 - share) * H.POINT_COUNT_P + share * H.DENSE_COUNT_P  # 0.10
    at_least_50 = (1 - share) * (1 - H.POINT_COUNT_P) ** 50 + share * (1 - H.DENSE_COUNT_P) ** 50  # 0.051
    assert abs(counts.mean().item() - mean) < 1.0  # s.e. 0.3
    assert abs((counts == 0).double().mean().item() - none) < 0.02
    assert abs((counts >= 50).double().mean().item() - at_least_50) < 0.015
    sizes = points.sizes[points.valid]
    assert set(sizes.unique().tolist()) == set(range(H.POINT_SIZE_RANGE[0], H.POINT_SIZE_RANGE[1] + 1))


def test_region_hints_sit_on_coloured_pixels_away_from_lines():
    sketch = np.full((128, 128), 255, np.uint8)
    sketch[:, 64] = 0
    target = np.full((128, 128, 3), 255, np.uint8)
    target[:, 70:100] = (10, 200, 30)  # the only colour: right of the line, > 2 px from it
    n = 64
    targets = torch.from_numpy(np.repeat(target[None], n, 0)).permute(0, 3, 1, 2).contiguous()

    points = HB.sample_points(
        targets, torch.from_numpy(np.repeat(sketch[None], n, 0)), torch.Generator().manual_seed(0), region_share=1.0
    )

    cols = points.cols[points.valid]
    assert cols.numel() > 100 and cols.min() >= 70 and cols.max() < 100
    uniform = HB.sample_points(
        targets, torch.from_numpy(np.repeat(sketch[None], n, 0)), torch.Generator().manual_seed(0), region_share=0.0
    )
    assert (uniform.cols[uniform.valid] < 64).any()


@pytest.mark.parametrize(
    ("name", "local_rank", "cuda_available", "expected"),
    [
        ("cpu", 0, True, "cpu"),
        ("cuda", 0, False, "cuda:0"),  # a bare "cuda" gets an index: torch.cuda.set_device needs one
        ("cuda", 3, False, "cuda:3"),  # under torchrun each rank takes its own GPU
        ("cuda:1", 3, False, "cuda:1"),  # an explicit index is kept
        ("auto", 2, True, "cuda:2"),
        ("auto", 2, False, "cpu"),
    ],
)
def test_device_names_resolve_to_an_indexed_device(name, local_rank, cuda_available, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_available)

    assert resolve_device(name, local_rank) == torch.device(expected)


def test_recolouring_repaints_the_first_hints_region_and_nothing_else(pairs):
    maker = BatchMaker(pairs, VARIANTS["guided"], torch.device("cpu"), recolour=1.0)
    plain = BatchMaker(pairs, VARIANTS["guided"], torch.device("cpu"))
    idx = np.arange(16)
    batch = maker(idx, batch_generator(0, 3, 0, torch.device("cpu")))
    before = plain(idx, batch_generator(0, 3, 0, torch.device("cpu")))  # the same flips and hint positions

    changed = (batch.targets != before.targets).any(1)  # (B, H, W)
    labels = [
        H.fill_labels(np.ascontiguousarray(pairs[b][0][:, ::-1] if f else pairs[b][0]))
        for b, f in zip(idx, before.flips.tolist())
    ]
    rows, cols = batch.points.rows[:, 0].tolist(), batch.points.cols[:, 0].tolist()
    regions = [labels[b][rows[b], cols[b]] if batch.points.valid[b, 0] else 0 for b in range(len(idx))]
    repainted = torch.tensor([r > 0 for r in regions])  # a first hint off the lines: its region is repainted
    assert repainted.sum() >= 8 and changed[repainted].flatten(1).any(1).all()
    assert not changed[~repainted].any()  # no hint, or one on a line: the target is left alone
    for b in np.flatnonzero(repainted.numpy()):
        assert not changed[b][torch.from_numpy(labels[b] != regions[b])].any()  # only that region moved
    # the hints the network is shown are coloured from the repainted target, as encoded
    targets_u8 = torch.round((batch.targets + 1) * 127.5).to(torch.uint8)
    assert torch.equal(batch.points.rgb, HB.hint_colours(targets_u8, batch.points))
    assert np.array_equal(batch.inputs.numpy(), reference_inputs(pairs, VARIANTS["guided"], idx, batch))
