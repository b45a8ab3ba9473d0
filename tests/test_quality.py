"""benchmarks.quality and benchmarks.baselines: metrics on known inputs, baselines on drawn sketches, a tiny run."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from benchmarks import baselines as B
from benchmarks import image_metrics as M
from benchmarks import quality as Q
from benchmarks import quality_backends as QB
from benchmarks import quality_plan as P
from contract import hints as H
from training.data import load_split
from training.export import SHARED_MODEL_PY, export
from training.metrics import PSNR_CAP_DB
from training.variants import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
RED, BLUE = (220, 30, 30), (30, 30, 220)


def random_image(seed: int = 0, low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (128, 128, 3)).astype(np.uint8)


def ring_sketch() -> np.ndarray:
    """White paper with one closed black circle (radius 30, 3 px thick) in the middle."""
    sketch = np.full((128, 128), 255, np.uint8)
    cv2.circle(sketch, (64, 64), 30, 0, 3)
    return sketch


@pytest.fixture(scope="module")
def tiny_repository(trained_checkpoint, tmp_path_factory) -> Path:
    """A model repository with every variant, each exported from a one-step width-4 run."""
    repository = tmp_path_factory.mktemp("quality_repository")
    shutil.copy(ROOT / "model_repository" / SHARED_MODEL_PY, repository / SHARED_MODEL_PY)
    for variant in VARIANTS:
        export(trained_checkpoint(variant), repository)
    return repository


# ---------------------------------------------------------------------------------- metrics


def test_identical_images_have_zero_error_the_capped_psnr_and_unit_ssim():
    image = random_image()

    m = M.image_metrics(image, image)

    assert m == {"l1": 0.0, "psnr": PSNR_CAP_DB, "ssim": pytest.approx(1.0), "ciede2000": 0.0}


def test_a_uniform_shift_of_ten_levels_gives_l1_of_10_over_127_5_and_psnr_of_28_13_db():
    target = random_image(low=20, high=200)

    m = M.image_metrics(target + 10, target)

    assert m["l1"] == pytest.approx(10 / 127.5)
    assert m["psnr"] == pytest.approx(20 * math.log10(255 / 10))  # 28.13 dB
    assert 0.9 < m["ssim"] < 1.0  # SSIM's luminance term notices a shift of the mean


def test_ciede2000_between_black_and_white_is_100():
    black, white = np.zeros((128, 128, 3), np.uint8), np.full((128, 128, 3), 255, np.uint8)

    assert M.image_metrics(black, white)["ciede2000"] == pytest.approx(100.0, abs=0.01)


def test_ssim_of_an_image_against_independent_noise_is_near_zero():
    assert abs(M.image_metrics(random_image(1), random_image(2))["ssim"]) < 0.05


def test_the_standard_error_is_the_sample_std_over_root_n():
    s = M.summarize([1.0, 2.0, 3.0, 4.0])

    assert s == {"mean": 2.5, "se": pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2), "n": 4}


def test_frechet_distance_is_zero_for_one_set_and_the_squared_mean_shift_between_shifted_sets():
    features = np.random.default_rng(0).normal(size=(400, 8))

    assert M.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    assert M.frechet_distance(features + 3.0, features) == pytest.approx(8 * 9.0, rel=1e-6)


def test_frechet_distance_equals_the_textbook_matrix_square_root_formula():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 6)), rng.normal(0.5, 2.0, size=(200, 6)) @ rng.normal(size=(6, 6))
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    textbook = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * scipy.linalg.sqrtm(s_a @ s_b).real)

    assert M.frechet_distance(a, b) == pytest.approx(textbook, rel=1e-9)


# ---------------------------------------------------------------------------------- hints


def test_point_hints_are_fixed_per_image_and_k_hints_are_the_first_k_of_a_larger_count():
    target = random_image()

    ten = P.hint_points(target, index=7, count=10)

    assert ten == P.hint_points(target, index=7, count=10)
    assert P.hint_points(target, index=7, count=5) == ten[:5]
    assert P.hint_points(target, index=8, count=10) != ten


def test_baselines_get_exactly_the_point_hints_that_the_generator_input_encodes():
    sketch, target = ring_sketch(), random_image()
    points = P.hint_points(target, index=0, count=20)

    rgb, mask = B.point_scribbles(points)
    encoded = H.encode(H.HintKind.POINTS, sketch, points=points)  # channels 3:6 hint colours, 6 their mask

    np.testing.assert_array_equal(mask, encoded[6] > 0)
    np.testing.assert_allclose(H.to_unit(rgb)[mask], encoded[3:6].transpose(1, 2, 0)[mask], atol=1e-6)


def test_patch_scribbles_are_the_pixels_the_patches20_encoding_copies_from_the_colour_image():
    sketch, target = ring_sketch(), random_image()

    rgb, mask = B.patch_scribbles(target)
    encoded = H.from_unit(H.encode(H.HintKind.PATCHES20, sketch, color=target).transpose(1, 2, 0))

    assert mask.sum() == len(H.PATCH_CORNERS) * H.PATCH_SIZE**2
    np.testing.assert_array_equal(encoded[mask], rgb[mask])
    np.testing.assert_array_equal(encoded[~mask], H.sketch_rgb(sketch)[~mask])


def test_dense_scribbles_are_the_blurred_colour_the_blur_encoding_mixes_with_the_sketch():
    sketch, target = ring_sketch(), random_image()

    rgb, mask = B.dense_scribbles(target)
    encoded = H.encode(H.HintKind.BLUR, sketch, color=target)

    assert mask.all()
    expected = (0.5 * (H.sketch_rgb(sketch).astype(np.float32) + rgb) / 127.5 - 1.0).transpose(2, 0, 1)
    np.testing.assert_allclose(encoded, expected, atol=1e-6)


def test_the_plan_sweeps_point_hints_and_scores_hint_baselines_only_where_there_are_hints():
    variants = {"unet_l1": H.HintKind.NONE, "unet_patches20": H.HintKind.PATCHES20, "guided": H.HintKind.POINTS}

    rows = Q.plan_rows(variants)
    keys = [r.key for r in rows]

    region = [f"guided@region:{k}" for k in P.POINT_COUNTS if k]  # 0 hints are scored once, as points:0
    assert [k for k in keys if k.startswith("guided@")] == [f"guided@points:{k}" for k in P.POINT_COUNTS] + region
    assert keys.count("sketch@none") == 1
    assert "levin2004@patches20" in keys and "nearest_hint@points:50" in keys
    assert "levin2004@points:0" not in keys and "levin2004@none" not in keys
    assert "levin2004@region:10" in keys and "nearest_hint@region:1" in keys


def test_region_hints_are_fixed_per_image_nested_by_count_and_placed_on_colour_off_the_lines():
    sketch, target = ring_sketch(), np.full((128, 128, 3), 255, np.uint8)
    target[40:90, 40:90] = (30, 160, 60)

    ten = P.hint_points(target, index=3, count=10, placement="region", sketch=sketch)

    assert (
        ten == P.hint_points(target, 3, 10, "region", sketch)
        and P.hint_points(target, 3, 4, "region", sketch) == ten[:4]
    )
    assert all(tuple(target[p.row, p.col]) == (30, 160, 60) and sketch[p.row, p.col] == 255 for p in ten)
    assert ten != P.hint_points(target, index=3, count=10)  # uniform hints are another draw


# ---------------------------------------------------------------------------------- baselines


def test_levin_keeps_each_hint_colour_on_its_own_side_of_a_closed_line():
    sketch = ring_sketch()
    rgb, mask = B.point_scribbles([H.PointHint(64, 64, RED, 3), H.PointHint(10, 10, BLUE, 3)])

    out = B.levin_colorize(sketch, rgb, mask).astype(int)

    inside, outside = out[64, 50], out[64, 110]  # 14 px from the red hint, 100 px from the blue one
    assert np.abs(inside - RED).max() <= 3
    assert np.abs(outside - BLUE).max() <= 3
    assert np.abs(out[110, 20] - BLUE).max() <= 3  # the far corner, reached only around the ring


def test_levin_keeps_the_lines_as_dark_as_drawn():
    sketch = ring_sketch()
    rgb, mask = B.point_scribbles([H.PointHint(64, 64, RED, 3), H.PointHint(10, 10, BLUE, 3)])

    out = B.levin_colorize(sketch, rgb, mask)

    assert out[sketch == 0].max() == 0


def test_levin_without_hints_returns_the_sketch():
    sketch = ring_sketch()

    out = B.levin_colorize(sketch, *B.point_scribbles([]))

    np.testing.assert_array_equal(out, H.sketch_rgb(sketch))


def test_levin_with_every_pixel_hinted_returns_the_hints_darkened_by_the_lines():
    sketch, target = ring_sketch(), random_image()

    out = B.levin_colorize(sketch, target, np.ones((128, 128), bool))

    expected = np.rint(target * (sketch[:, :, None] / 255.0)).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_nearest_hint_fill_gives_each_pixel_the_colour_of_the_closest_hint_across_lines():
    sketch = ring_sketch()
    rgb, mask = B.point_scribbles([H.PointHint(64, 20, RED, 1), H.PointHint(64, 100, BLUE, 1)])

    out = B.nearest_hint_fill(sketch, rgb, mask)

    assert tuple(out[64, 55]) == RED  # inside the ring, but nearer the red hint outside it
    assert tuple(out[64, 65]) == BLUE
    assert tuple(out[0, 0]) == RED and tuple(out[127, 127]) == BLUE


def test_nearest_hint_fill_without_hints_returns_the_sketch():
    sketch = ring_sketch()

    np.testing.assert_array_equal(B.nearest_hint_fill(sketch, *B.point_scribbles([])), H.sketch_rgb(sketch))


# ---------------------------------------------------------------------------------- LPIPS, FID


def test_the_weights_unpickler_refuses_anything_but_numpy_arrays(tmp_path):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"kernel": os.getcwd}))  # a pickle that would call a function
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"a": {"kernel": np.arange(6.0).reshape(2, 3)}}))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        M.load_numpy_pickle(evil)
    np.testing.assert_array_equal(M.load_numpy_pickle(good)["a"]["kernel"], np.arange(6.0).reshape(2, 3))


def test_lpips_is_zero_for_identical_images_and_grows_with_the_distortion():
    lpips, note = M.load_lpips()
    if lpips is None:
        pytest.skip(note)
    clean = np.stack([cv2.GaussianBlur(random_image(i), (0, 0), 3) for i in range(3)])
    noise = np.random.default_rng(9).normal(0, 1, clean.shape)
    slight, heavy = (np.clip(clean + s * noise, 0, 255).astype(np.uint8) for s in (4, 40))

    reference = lpips.features(clean)
    d_same, d_slight, d_heavy = (lpips.distance(lpips.features(x), reference) for x in (clean, slight, heavy))

    np.testing.assert_allclose(d_same, 0.0, atol=1e-6)
    assert (0 < d_slight).all() and (d_slight < d_heavy).all()


def test_the_fid_inception_is_the_pinned_file_and_gives_2048_pool3_features():
    fid, note = M.load_fid(enabled=True)
    if fid is None:
        pytest.skip(note)

    features = fid.features(np.stack([random_image(0), random_image(1)]))

    assert features.shape == (2, 2048) and np.isfinite(features).all() and (features >= 0).all()  # post-ReLU pool


# ---------------------------------------------------------------------------------- the repository and the CLI


def test_discover_variants_reads_every_exported_hint_encoding(tiny_repository):
    assert Q.discover_variants(tiny_repository) == {name: v.hint for name, v in VARIANTS.items()}


def test_discover_variants_refuses_an_export_whose_inputs_are_not_the_wire_of_its_encoding(tiny_repository, tmp_path):
    stale = tmp_path / "repository"
    shutil.copytree(tiny_repository / "guided", stale / "guided", symlinks=True)
    config = stale / "guided" / "config.pbtxt"
    config.write_text(config.read_text().replace("dims: [ 512, 6 ]", "dims: [ 10, 6 ]"))

    with pytest.raises(SystemExit, match="--rewrite-config"):
        Q.discover_variants(stale)


def test_the_cli_writes_a_report_plots_and_sane_metrics_for_every_variant_and_baseline(tiny_repository, tmp_path):
    out = tmp_path / "quality"
    command = [
        sys.executable,
        "-m",
        "benchmarks.quality",
        "--repository",
        str(tiny_repository),
        "--data",
        "synthetic",
        "--limit",
        "4",
        "--out",
        str(out),
    ]

    run = subprocess.run(command, cwd=ROOT, timeout=180, capture_output=True, text=True)

    assert run.returncode == 0, run.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 4 and metrics["data"] == "synthetic"
    assert metrics["ssim_params"] == M.SSIM_PARAMS
    rows = {(r["method"], r["hints"]): r["metrics"] for r in metrics["rows"]}
    expected = {(r.method, r.setting.label) for r in Q.plan_rows(Q.discover_variants(tiny_repository))}
    assert set(rows) == expected
    for m in rows.values():
        assert m["psnr"]["n"] == 4 and 0 < m["psnr"]["mean"] <= PSNR_CAP_DB
        assert -1 <= m["ssim"]["mean"] <= 1 and 0 <= m["l1"]["mean"] <= 2 and 0 <= m["ciede2000"]["mean"] <= 100
    report = (out / "report.md").read_text()
    assert "gaussian_weights=True, sigma=1.5, use_sample_covariance=False" in report
    assert "--limit 4" in report and "| **guided** | 10 point hints |" in report
    for name in ("psnr_vs_hints.png", "bars.png", "samples.png", "hint_effect_guided.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and min(im.size) > 300
    locality = metrics["hint_locality"]["guided"]
    assert set(locality) == {"locality", "bleed_0", "bleed_10", "obedience_1", "obedience_10"}
    assert all(0 <= locality[k]["mean"] <= 1 for k in ("locality", "bleed_0", "bleed_10"))
    assert "## Hints that stay where they are put" in report
    served, alone = metrics["hint_locality"]["guided"], metrics["hint_locality"]["guided" + Q.UNCONFINED]
    assert served["bleed_0"] == alone["bleed_0"]  # without hints, confining changes nothing
    auc = metrics["hint_auc"]
    assert set(auc) == {"guided", "guided" + Q.UNCONFINED, Q.ORACLE}
    for r in auc.values():
        curve = [r["per_alpha"][a]["psnr"] for a in r["per_alpha"]]
        assert r["n_images"] == 4 and len(curve) == 8 and min(curve) <= r["hint_auc"]["psnr"] <= max(curve)
    assert auc["guided"]["per_alpha"]["0.0"] == auc["guided" + Q.UNCONFINED]["per_alpha"]["0.0"]
    assert "## Hint-AUC (dot hints)" in report


# ---------------------------------------------------------------------------------- through the gateway


@pytest.mark.integration
@pytest.mark.skipif(not (ROOT / "service" / "gateway.py").exists(), reason="service/gateway.py is not written yet")
def test_the_gateway_returns_the_in_process_images_for_every_variant_and_hint_setting(tiny_repository, tmp_path):
    from service.triton_local import serving_stack

    variants = Q.discover_variants(tiny_repository)
    rows = [r for r in Q.plan_rows(variants, counts=(0, 5)) if not r.is_baseline]
    pairs = load_split("synthetic", "test")
    examples = [P.Example(i, *pairs[i]) for i in range(3)]
    local = QB.InProcess(tiny_repository)
    with serving_stack(tiny_repository, tmp_path) as stack:
        gateway = QB.Gateway(stack.address)
        gateway.check(variants)
        for row in rows:
            served = gateway.colorize(row.method, row.setting, examples).astype(int)
            here = local.colorize(row.method, row.setting, examples).astype(int)
            assert np.abs(served - here).max() <= 1, row.key  # the contract: equal up to uint8 rounding
        gateway.close()
    assert stack.gateway.returncode == 0
