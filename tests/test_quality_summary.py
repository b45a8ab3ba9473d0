"""benchmarks.quality_summary: the character-art targets read off per-data-set metrics.json files."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import quality_summary as S


def metrics_file(
    path: Path,
    psnr: dict[tuple[str, str], float],
    fid: dict[tuple[str, str], float] = {},  # noqa: B006
    extra: dict | None = None,
) -> Path:
    rows = []
    for (method, hints), value in psnr.items():
        m = {"psnr": {"mean": value, "se": 0.1, "n": 10}}
        if (method, hints) in fid:
            m["fid"] = {"value": fid[(method, hints)], "n": 10}
        rows.append({"method": method, "hints": hints, "metrics": m})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": rows, **(extra or {})}))
    return path


def hint_scores(locality: float, bleed_0: float, bleed_10: float, auc: float, oracle: float) -> dict:
    """The `hint_locality` and `hint_auc` parts of a metrics.json (fractions, dB)."""
    scores = {"locality": {"mean": locality}, "bleed_0": {"mean": bleed_0}, "bleed_10": {"mean": bleed_10}}
    aucs = {"guided": {"hint_auc": {"psnr": auc}}, "oracle flat fill": {"hint_auc": {"psnr": oracle}}}
    return {"hint_locality": {"guided": scores}, "hint_auc": aucs}


def illustration_scores(
    guided_region: list[float], baseline: float, zero: float = 12.0
) -> dict[tuple[str, str], float]:
    scores = {
        ("sketch", "none"): 10.0,
        ("unet_l1", "none"): 12.5,
        ("pix2pix", "none"): 12.1,
        ("pix2pix_blur", "blur"): 16.0,
        ("unet_patches20", "patches20"): 15.0,
        ("guided", "points:0"): zero,
    }
    for k, v in zip(S.POINTS[1:], guided_region):
        scores[("guided", f"region:{k}")] = v
        scores[("levin2004", f"region:{k}")] = baseline
        scores[("nearest_hint", f"region:{k}")] = baseline
    return scores


def test_targets_met_when_the_curve_rises_enough_and_beats_the_baselines(tmp_path):
    metrics_file(
        tmp_path / "illustrations" / "metrics.json",
        illustration_scores([16, 16.5, 17.5, 18.7, 19.5, 21], 14.5, zero=15.5),
        fid={("pix2pix", "none"): 80.0, ("unet_l1", "none"): 90.0},
        extra=hint_scores(0.05, 0.02, 0.025, 19.0, 16.5),
    )
    metrics_file(tmp_path / "openmoji" / "metrics.json", {("guided", "points:0"): 18.6, ("unet_l1", "none"): 19.0})
    reference = metrics_file(tmp_path / "old.json", {("guided", "points:0"): 18.9, ("unet_l1", "none"): 19.3})

    result = S.write_summary(tmp_path, ["openmoji", "illustrations"], reference)

    verdicts = {c["check"]: c["met"] for c in result["checks"]}
    assert all(verdicts.values()), verdicts
    # no-hint PSNR, gains, rise, two baselines; 5 over-sketch; FID; two OpenMoji; locality, bleed, Hint-AUC
    assert len(verdicts) == 6 + 5 + 1 + 2 + 3
    report = (tmp_path / "report.md").read_text()
    assert "17 of 17 met." in report and "| guided | region:10 |" in report


def test_each_missed_target_is_reported_with_its_margin(tmp_path):
    # a dip at 5 hints, +2.5 dB at 10, a baseline ahead at 1 hint, pix2pix worse on FID, 0.8 dB lost on OpenMoji
    scores = illustration_scores([12.5, 13, 12.8, 14.5, 16, 17.5], 12.6)
    metrics_file(
        tmp_path / "illustrations" / "metrics.json",
        scores,
        fid={("pix2pix", "none"): 95.0, ("unet_l1", "none"): 90.0},
        extra=hint_scores(0.3, 0.02, 0.05, 17.9, 16.5),
    )
    metrics_file(tmp_path / "openmoji" / "metrics.json", {("guided", "points:0"): 18.1})
    reference = metrics_file(tmp_path / "old.json", {("guided", "points:0"): 18.9})

    result = S.write_summary(tmp_path, ["openmoji", "illustrations"], reference)

    missed = {c["check"]: c["verdict"] for c in result["checks"] if not c["met"]}
    assert missed["guided: 10 region hints over 0 hints"].startswith("missed (+2.50 dB")
    assert any("rises" in k for k in missed) and any("levin2004" in k for k in missed)
    assert any("FID" in k for k in missed) and any(k.startswith("OpenMoji guided") for k in missed)
    assert "guided: 50 region hints over 0 hints" not in missed  # +5.5 dB
    assert missed["guided: PSNR with no hints"].startswith("missed (+12.00 dB vs >= 15.08")
    assert missed["guided: pixels one region hint moves outside its region"].startswith("missed (+30.00 %")
    assert missed["guided: bleed with 10 region hints over bleed with none"].startswith("missed (+3.00 pp")
    assert missed["guided: Hint-AUC of PSNR (dot hints) over the oracle flat fill"].startswith("missed (+1.40 dB")
