"""Image-quality metrics on uint8 RGB images, as the model card and the benchmarks report them."""

from __future__ import annotations

import numpy as np

# About 3% of OpenMoji pairs are black line art with no colour at all: there the sketch equals the
# target and PSNR is infinite. Capping it keeps means over images finite; 60 dB is an MSE of
# 0.065, i.e. identical to the eye. Every method is scored with the same cap.
PSNR_CAP_DB = 60.0


def psnr_uint8(output: np.ndarray, target: np.ndarray, cap: float = PSNR_CAP_DB) -> float:
    """PSNR in dB of two uint8 images (peak 255), capped at `cap` (identical images score `cap`)."""
    mse = np.mean((output.astype(np.float64) - target.astype(np.float64)) ** 2)
    return cap if mse == 0 else float(min(cap, 10 * np.log10(255.0**2 / mse)))


def l1_unit(output: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error of two uint8 images on the [-1, 1] scale the networks are trained on."""
    return float(np.mean(np.abs(output.astype(np.float64) - target.astype(np.float64))) / 127.5)
