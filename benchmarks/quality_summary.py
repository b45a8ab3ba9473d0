"""The quality benchmark's summary over data sets, and the character-art targets checked against it.

``python -m benchmarks.quality --data openmoji illustrations --fid --reference OLD.json`` ends by
calling `write_summary`; ``python -m benchmarks.quality_summary --out results/quality --data
openmoji illustrations`` rewrites the summary from the per-data-set ``metrics.json`` files alone.

Targets (the character-art issue), on the ``illustrations`` test split:
- ``guided`` with 10 region hints beats its own 0-hint PSNR by >= 3 dB, with 50 by >= 5 dB, and its
  PSNR rises monotonically over 0/1/2/5/10/20/50 region hints;
- at every hint count it beats Levin 2004 and the nearest-hint fill given the same hints;
- every variant beats returning the sketch by >= 2 dB (``guided`` with no hints);
- ``pix2pix`` beats ``unet_l1`` on FID;
- ``guided`` without hints scores at least ZERO_HINT_PSNR;
- one region hint moves at most LOCALITY of the pixels outside its region by more than dE 10, and
  10 region hints paint at most BLEED_PP points more pixels in a hint's colour where it does not
  belong than no hints do (`benchmarks.hint_locality`);
- its Hint-AUC of PSNR (dot hints) beats hintauc's oracle flat fill by HINT_AUC_MARGIN dB;
and on OpenMoji no variant loses more than 0.5 dB of PSNR against ``--reference`` (older weights).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

POINTS = (0, 1, 2, 5, 10, 20, 50)
GAIN_10, GAIN_50, BEAT_SKETCH, MAX_LOSS = 3.0, 5.0, 2.0, 0.5
ZERO_HINT_PSNR, LOCALITY, BLEED_PP, HINT_AUC_MARGIN = 15.08, 0.10, 1.0, 2.0


def folder(out: Path, source: str) -> Path:
    return out / source.replace(":", "_").replace("/", "_")


def load(path: Path) -> dict[tuple[str, str], dict]:
    """(method, hints label) -> metrics of one metrics.json."""
    return {(r["method"], r["hints"]): r["metrics"] for r in json.loads(path.read_text())["rows"]}


def psnr(rows: dict, method: str, hints: str) -> float | None:
    m = rows.get((method, hints)) or (
        rows.get(("sketch", "none")) if method != "guided" and hints.endswith(":0") else None
    )
    return m["psnr"]["mean"] if m else None


def check(name: str, value: float, bound: float, at_least: bool = True, unit: str = "dB") -> dict:
    met = value >= bound if at_least else value <= bound
    verdict = f"{'met' if met else 'missed'} ({value:+.2f} {unit} vs {'>=' if at_least else '<='} {bound:g})"
    return {"check": name, "value": round(value, 3), "bound": bound, "met": bool(met), "verdict": verdict}


def hint_targets(metrics: dict) -> list[dict]:
    """The user-side hint targets from one data set's metrics.json (locality and Hint-AUC of `guided`)."""
    out = []
    if scores := metrics.get("hint_locality", {}).get("guided"):
        out.append(
            check(
                "guided: pixels one region hint moves outside its region",
                100 * scores["locality"]["mean"],
                100 * LOCALITY,
                at_least=False,
                unit="%",
            )
        )
        extra = 100 * (scores["bleed_10"]["mean"] - scores["bleed_0"]["mean"])
        out.append(
            check("guided: bleed with 10 region hints over bleed with none", extra, BLEED_PP, at_least=False, unit="pp")
        )
    auc = metrics.get("hint_auc", {})
    oracle = next((r for name, r in auc.items() if name.startswith("oracle")), None)
    if "guided" in auc and oracle:
        margin = auc["guided"]["hint_auc"]["psnr"] - oracle["hint_auc"]["psnr"]
        out.append(check("guided: Hint-AUC of PSNR (dot hints) over the oracle flat fill", margin, HINT_AUC_MARGIN))
    return out


def targets(rows: dict, reference: dict | None, openmoji: dict | None) -> list[dict]:
    out = []
    zero = psnr(rows, "guided", "points:0")
    if zero is not None:
        out.append(check("guided: PSNR with no hints", zero, ZERO_HINT_PSNR))
        for k, bound in ((10, GAIN_10), (50, GAIN_50)):
            gain = psnr(rows, "guided", f"region:{k}") - zero
            out.append(check(f"guided: {k} region hints over 0 hints", gain, bound))
        curve = [zero] + [psnr(rows, "guided", f"region:{k}") for k in POINTS[1:]]
        rises = min(b - a for a, b in zip(curve, curve[1:]))
        out.append(check("guided: PSNR rises at every step 0/1/2/5/10/20/50 region hints (smallest step)", rises, 0.0))
        for baseline in ("levin2004", "nearest_hint"):
            margins = [psnr(rows, "guided", f"region:{k}") - psnr(rows, baseline, f"region:{k}") for k in POINTS[1:]]
            out.append(
                check(f"guided beats {baseline} at every region hint count (smallest margin)", min(margins), 0.0)
            )
    sketch = psnr(rows, "sketch", "none")
    for (method, hints), m in sorted(rows.items()):
        if method in ("sketch", "levin2004", "nearest_hint") or (method == "guided" and hints != "points:0"):
            continue
        out.append(check(f"{method} ({hints}) over the sketch", m["psnr"]["mean"] - sketch, BEAT_SKETCH))
    fids = {m: rows.get((m, "none"), {}).get("fid", {}).get("value") for m in ("pix2pix", "unet_l1")}
    if all(v is not None for v in fids.values()):
        out.append(
            check(
                "pix2pix FID below unet_l1 FID (unet_l1 - pix2pix)", fids["unet_l1"] - fids["pix2pix"], 0.0, unit="FID"
            )
        )
    if reference and openmoji:
        for key, m in sorted(openmoji.items()):
            if key in reference and key[0] not in ("sketch", "levin2004", "nearest_hint"):
                delta = m["psnr"]["mean"] - reference[key]["psnr"]["mean"]
                out.append(check(f"OpenMoji {key[0]} ({key[1]}) vs the reference weights", delta, -MAX_LOSS))
    return out


def headline(rows: dict) -> list[tuple[str, str]]:
    keep = [
        k for k in rows if k[0] not in ("levin2004", "nearest_hint") and not k[1].startswith(("points:", "region:"))
    ]
    keep += [k for k in rows if k[0] == "guided" and k[1] in ("points:0", "points:10", "region:10", "region:50")]
    return keep


def write_summary(out: Path, sources: list[str], reference: Path | None = None) -> dict:
    per = {s: load(folder(out, s) / "metrics.json") for s in sources}
    ref = load(reference) if reference else None
    links = ", ".join(f"[{s}]({folder(out, s).name}/report.md)" for s in sources)
    lines = ["# Quality benchmark: summary", "", f"Per data set: {links}. PSNR (dB, mean ± s.e.) / LPIPS / FID.", ""]
    methods = list(dict.fromkeys(k for s in sources for k in headline(per[s])))
    lines += ["| method | hints | " + " | ".join(sources) + " |", "|---|---|" + "---|" * len(sources)]
    for key in methods:
        cells = []
        for s in sources:
            m = per[s].get(key)
            if not m:
                cells.append("–")
                continue
            text = f"{m['psnr']['mean']:.2f} ± {m['psnr']['se']:.2f}"
            text += f" / {m['lpips']['mean']:.3f}" if "lpips" in m else ""
            text += f" / {m['fid']['value']:.1f}" if "fid" in m else ""
            cells.append(text)
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    result = {"sources": sources, "reference": str(reference) if reference else None}
    if "illustrations" in per:
        raw = json.loads((folder(out, "illustrations") / "metrics.json").read_text())
        checks = targets(per["illustrations"], ref, per.get("openmoji")) + hint_targets(raw)
        result["checks"] = checks
        lines += ["", "## Character-art targets (illustrations test split)", "", "| target | verdict |", "|---|---|"]
        lines += [f"| {c['check']} | {'✅' if c['met'] else '❌'} {c['verdict']} |" for c in checks]
        met = sum(c["met"] for c in checks)
        lines += ["", f"{met} of {len(checks)} met."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/quality"))
    parser.add_argument("--data", nargs="+", default=["openmoji", "illustrations"])
    parser.add_argument("--reference", type=Path)
    args = parser.parse_args(argv)
    result = write_summary(args.out, args.data, args.reference)
    print((args.out / "report.md").read_text())
    if "checks" in result:
        print(f"{sum(c['met'] for c in result['checks'])}/{len(result['checks'])} targets met")


if __name__ == "__main__":
    main()
