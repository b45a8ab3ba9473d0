"""The quality benchmark's outputs for one data set: ``report.md``, ``metrics.json`` and the three
plots, written from a finished run's `Results`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks import hint_auc, hint_locality
from benchmarks.baselines import BASELINES
from benchmarks.image_metrics import METRIC_INFO, SSIM_PARAMS
from benchmarks.quality_plan import (
    HEADLINE_POINTS,
    HINT_SEED,
    PLACEMENTS,
    POINT_COUNTS,
    HintSetting,
    Results,
    Row,
    is_headline,
)
from contract import hints as H
from training.metrics import PSNR_CAP_DB

# ---------------------------------------------------------------------------------- report


def fmt(summary: dict[str, float] | None, metric: str) -> str:
    if summary is None:
        return "–"
    digits = {"psnr": 2, "ciede2000": 2, "l1": 4, "ssim": 4, "lpips": 4}[metric]
    return f"{summary['mean']:.{digits}f} ± {summary['se']:.{digits}f}"


def metric_header(metric: str) -> str:
    label, unit, higher = METRIC_INFO[metric]
    return f"{label} {'↑' if higher else '↓'}" + (f" ({unit})" if unit else "")


def row_label(row: Row) -> str:
    return f"{row.method} · {row.setting.description}"


def main_table(results: Results, metrics: Sequence[str]) -> list[str]:
    cols = ["method", "hints", *[metric_header(m) for m in metrics]] + (["FID ↓"] if results.fid else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in [r for r in results.rows if is_headline(r)]:
        cells = [f"**{row.method}**" if not row.is_baseline else f"_{row.method}_", row.setting.description]
        cells += [fmt(results.summary(row, m), m) for m in metrics]
        if results.fid:
            cells.append(f"{results.fid[row.key]:.2f}" if row.key in results.fid else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def sweep_methods(results: Results) -> tuple[list[str], list[str]]:
    """(points variants, baselines) that appear in the hint sweep."""
    variants = sorted({r.method for r in results.rows if not r.is_baseline and r.setting.kind is H.HintKind.POINTS})
    return variants, list(BASELINES)


def sweep_summary(
    results: Results, method: str, count: int, metric: str, placement: str = "uniform"
) -> dict[str, float] | None:
    """A method's score with `count` point hints; baselines given no hints are the sketch by definition."""
    by_key = {r.key: r for r in results.rows}
    setting = HintSetting(H.HintKind.POINTS, count, placement if count else "uniform")
    if method in BASELINES and (method == "sketch" or count == 0):
        return results.summary(by_key["sketch@none"], metric)
    row = by_key.get(f"{method}@{setting.label}")
    return results.summary(row, metric) if row else None


def sweep_tables(results: Results, metrics: Sequence[str]) -> list[str]:
    variants, baselines = sweep_methods(results)
    if not variants:
        return ["No variant takes point hints; no sweep."]
    lines = []
    for placement in PLACEMENTS:
        lines += [f"### {placement.capitalize()} hints", ""]
        for metric in metrics:
            cols = [f"{placement} hints", *variants, *baselines]
            lines += [f"**{metric_header(metric)}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for k in POINT_COUNTS:
                cells = [fmt(sweep_summary(results, m, k, metric, placement), metric) for m in cols[1:]]
                lines.append("| " + " | ".join([str(k), *cells]) + " |")
            lines.append("")
    return lines


def write_report(results: Results, out: Path, info: dict, metrics: Sequence[str]) -> None:
    ssim = ", ".join(f"{k}={v}" for k, v in SSIM_PARAMS.items())
    lines = [
        "# Quality benchmark",
        "",
        f"Written by `{info['command']}` in {info['wall_time_s'] / 60:.1f} min ({info['backend']}).",
        "",
        f"- Data: `{info['data']}`, split `{info['split']}`, {info['n_images']} images"
        + (f" (the first {info['n_images']}: `--limit`)" if info["limited"] else "")
        + ".",
        f"- Model repository: `{info['repository']}`; variants: "
        + ", ".join(f"`{v}` ({k})" for v, k in info["variants"].items())
        + ".",
        "- Each figure is the mean over images ± its standard error (sample std / √n). ↑ higher is better, "
        "↓ lower is better.",
        "- Hints, all taken from the target: `blur` gets the target itself as the rough colour image "
        f"(the study's setting; the encoding box-blurs it {H.BLUR_KERNEL[0]}x{H.BLUR_KERNEL[1]}); `patches20` gets its "
        f"20 fixed {H.PATCH_SIZE}x{H.PATCH_SIZE} patches of the target; point hints are "
        f"`contract.hints.random_points(target, {max(POINT_COUNTS)}, default_rng(({HINT_SEED}, image index)))` "
        "(*uniform*: anywhere) or `contract.hints.region_points(target, sketch, ...)` with the same generator "
        "(*region*: on coloured pixels at least 2 px from a line, the way people place hints), truncated to the "
        "first k, so every method sees the same hints and k hints are a subset of the next count's.",
        "- Baselines get exactly those hints (as pixels: hint squares, the 20 patches, or the blurred target "
        "everywhere): `sketch` returns the line art; `nearest_hint` gives each pixel the colour of the nearest "
        "hinted pixel; `levin2004` is Levin, Lischinski & Weiss 2004 (Colorization using Optimization): "
        "3x3-neighbour least squares with the hints as hard constraints and weights "
        "exp(-(Y_r - Y_s)^2 / (2·0.1^2)) from the sketch (Y in [0, 1]), so colour stops at lines. For line art, "
        "all three YUV channels are propagated (the sketch's Y is white almost everywhere and would wash colours "
        "out) and the result is multiplied by sketch/255 so lines stay dark. Given no hints, both return the sketch.",
        "",
        "## Metrics",
        "",
        "- L1: mean |output − target| on the [-1, 1] scale (the training loss), `training.metrics.l1_unit`.",
        f"- PSNR: uint8 RGB, peak 255, `training.metrics.psnr_uint8`, capped at {PSNR_CAP_DB:.0f} dB (a pixel-perfect "
        "image, e.g. a colourless emoji's sketch, would be infinite).",
        f"- SSIM: `skimage.metrics.structural_similarity(output, target, {ssim})` (mean over the RGB channels).",
        "- CIEDE2000: `skimage.color.deltaE_ciede2000(rgb2lab(output), rgb2lab(target))`, mean over pixels "
        "(sRGB, D65).",
        f"- LPIPS: {info['lpips']}.",
        f"- FID: {info['fid']}.",
        "",
        "## Each variant with its own hints",
        "",
        *main_table(results, metrics),
        "",
        f"The guided variant is shown with no hints and with {HEADLINE_POINTS}; the baselines under each hint "
        "setting get the same hints as the variants in that setting.",
        "",
        "## Point-hint sweep",
        "",
        "![PSNR vs hint count](psnr_vs_hints.png)",
        "",
        *sweep_tables(results, metrics),
        "With 0 hints `nearest_hint` and `levin2004` return the sketch, so they share its row.",
        "",
        "![metrics per method](bars.png)",
        "",
        "![samples](samples.png)",
        "",
        *locality_section(results),
        *hint_auc_section(results),
        "All numbers are in `metrics.json`.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


def locality_section(results: Results) -> list[str]:
    """Whether hints stay in their regions (`benchmarks.hint_locality`), with each variant's sheet."""
    if not results.locality:
        return []
    what = hint_locality.__doc__.split("\n\n")[1].replace("\n", " ")
    lines = [
        "## Hints that stay where they are put",
        "",
        what,
        "Definitions: `benchmarks/hint_locality.py`.",
        "",
        *hint_locality.report_lines(results.locality),
        "",
    ]
    for name in results.locality:
        lines += [f"![one hint's effect, {name}]({hint_locality.sheet_file(name)})", ""]
    return lines


def hint_auc_section(results: Results) -> list[str]:
    """The outside protocol (`benchmarks.hint_auc`): Hint-AUC of dot hints, the oracle flat fill beside."""
    if not results.hint_auc:
        return []
    what = hint_auc.__doc__.split("\n\n")[1].replace("\n", " ")
    return ["## Hint-AUC (dot hints)", "", what, "", *hint_auc.report_lines(results.hint_auc), ""]


def write_metrics_json(results: Results, out: Path, info: dict, metrics: Sequence[str]) -> None:
    rows = []
    for row in results.rows:
        entry = {
            "method": row.method,
            "kind": "baseline" if row.is_baseline else "variant",
            "hints": row.setting.label,
            "metrics": {m: s for m in metrics if (s := results.summary(row, m)) is not None},
        }
        if row.key in results.fid:
            entry["metrics"]["fid"] = {"value": results.fid[row.key], "n": len(results.scores[row.key]["l1"])}
        rows.append(entry)
    payload = {
        **info,
        "ssim_params": SSIM_PARAMS,
        "psnr_cap_db": PSNR_CAP_DB,
        "hint_seed": HINT_SEED,
        "point_counts": list(POINT_COUNTS),
        "placements": list(PLACEMENTS),
        "rows": rows,
        "hint_locality": results.locality,
        "hint_auc": results.hint_auc,
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_psnr_vs_hints(results: Results, path: Path) -> None:
    """PSNR against point-hint count, one panel per hint placement, for the points variants and the
    baselines; fixed-hint variants as horizontal lines."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(PLACEMENTS), figsize=(7 * len(PLACEMENTS), 4.8), sharey=True)
    variants, baselines = sweep_methods(results)
    styles = {"sketch": ("0.5", "--"), "nearest_hint": ("tab:orange", "-"), "levin2004": ("tab:green", "-")}
    n = len(results.scores[results.rows[0].key]["psnr"])
    for ax, placement in zip(np.atleast_1d(axes), PLACEMENTS, strict=True):
        for method in variants + baselines:
            pts = [(k, s) for k in POINT_COUNTS if (s := sweep_summary(results, method, k, "psnr", placement))]
            if not pts:
                continue
            ks = np.array([k for k, _ in pts])
            mean = np.array([s["mean"] for _, s in pts])
            se = np.nan_to_num(np.array([s["se"] for _, s in pts]))
            color, style = styles.get(method, ("tab:blue", "-"))
            ax.plot(ks, mean, style, marker="o", color=color, lw=2.2 if method in variants else 1.5, label=method)
            ax.fill_between(ks, mean - se, mean + se, color=color, alpha=0.2, lw=0)
        fixed = [r for r in results.rows if not r.is_baseline and r.setting.kind is not H.HintKind.POINTS]
        line_colors = ["tab:red", "tab:purple", "tab:brown", "tab:cyan", "tab:pink", "tab:olive"]
        for i, row in enumerate(fixed):
            s = results.summary(row, "psnr")
            ax.axhline(
                s["mean"],
                color=line_colors[i % len(line_colors)],
                ls=":",
                lw=1.5,
                label=f"{row.method} ({row.setting.description})",
            )
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(-0.3, POINT_COUNTS[-1] * 1.2)
        ax.set_xticks(POINT_COUNTS, [str(k) for k in POINT_COUNTS])
        ax.set(
            xlabel=f"{placement} point hints (same hints for every method)",
            ylabel="PSNR (dB) ↑",
            title=f"{placement} hints: PSNR, mean ± s.e., n = {n}",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(results: Results, path: Path, metrics: Sequence[str]) -> None:
    """One horizontal bar chart per metric over the main-table rows, with standard-error whiskers."""
    plt = _plt()
    rows = [r for r in results.rows if is_headline(r)]
    panels = [m for m in metrics if results.summary(rows[0], m)] + (["fid"] if results.fid else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 2.5, 0.32 * len(rows) + 1.6), sharey=True)
    axes = np.atleast_1d(axes)
    y = np.arange(len(rows))[::-1]
    colors = ["0.6" if r.is_baseline else "tab:blue" for r in rows]
    for ax, metric in zip(axes, panels, strict=True):
        if metric == "fid":
            values = [results.fid.get(r.key, np.nan) for r in rows]
            errors = None
        else:
            stats = [results.summary(r, metric) for r in rows]
            values, errors = [s["mean"] for s in stats], [np.nan_to_num(s["se"]) for s in stats]
        ax.barh(y, values, xerr=errors, color=colors, capsize=2)
        label, _, higher = METRIC_INFO[metric]
        ax.set_title(f"{label} {'↑' if higher else '↓'}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [row_label(r) for r in rows], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def hint_overlay(sketch: np.ndarray, points: Sequence[H.PointHint]) -> np.ndarray:
    """The sketch, faded, with each hint square drawn in its colour inside a black frame."""
    image = (H.sketch_rgb(sketch).astype(np.float32) * 0.5 + 127.5).astype(np.uint8)
    for p in points:
        top, bottom, left, right = p.bounds()
        image[max(top - 1, 0) : bottom + 1, max(left - 1, 0) : right + 1] = 0
        image[top:bottom, left:right] = p.rgb
    return image


def plot_samples(results: Results, path: Path) -> None:
    """Rows of sketch | point hints | each variant | the hint baselines | target, at the headline point count."""
    plt = _plt()
    headline = HintSetting(H.HintKind.POINTS, HEADLINE_POINTS, "region")
    columns = [
        r
        for r in results.rows
        if not r.is_baseline and (r.setting.kind is not H.HintKind.POINTS or r.setting == headline)
    ]
    has_points = any(r.setting == headline for r in columns)
    columns += [r for r in results.rows if r.is_baseline and r.setting == headline and r.method != "sketch"]
    examples = results.sample_examples
    n_cols = len(columns) + 2 + has_points
    fig, axes = plt.subplots(len(examples), n_cols, figsize=(1.6 * n_cols, 1.75 * len(examples) + 0.4), squeeze=False)
    for i, example in enumerate(examples):
        panels = [("sketch", H.sketch_rgb(example.sketch))]
        if has_points:
            panels.append((f"{HEADLINE_POINTS} region hints", hint_overlay(example.sketch, example.points(headline))))
        panels += [(f"{r.method}\n({r.setting.description})", results.samples[r.key][i]) for r in columns]
        panels.append(("target", example.target))
        for ax, (title, image) in zip(axes[i], panels, strict=True):
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
