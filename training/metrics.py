"""Image-quality metrics on uint8 RGB images, as the model card and the benchmarks report them."""

from __future__ import annotations

import numpy as np


def psnr_uint8(output: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (peak 255); identical images give +inf."""
    mse = np.mean((output.astype(np.float64) - target.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def l1_unit(output: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error of two uint8 images on the [-1, 1] scale the networks are trained on."""
    return float(np.mean(np.abs(output.astype(np.float64) - target.astype(np.float64))) / 127.5)
