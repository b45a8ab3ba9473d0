"""Line art from a colour picture: Winnemöller et al.'s eXtended Difference of Gaussians (XDoG)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class XDoGParams:
    """XDoG's parameters, tuned for 128 px line art."""

    sigma: float = 0.6
    k: float = 4.5
    p: float = 19.0  # sharpening strength
    epsilon: float = 0.01
    phi: float = 10.0**9


def xdog(rgb: np.ndarray, params: XDoGParams = XDoGParams()) -> np.ndarray:
    """Line art extracted from a colour image: (H, W) uint8, black lines on white."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    g1 = cv2.GaussianBlur(gray, (0, 0), params.sigma)
    g2 = cv2.GaussianBlur(gray, (0, 0), params.sigma * params.k)
    d = (1 + params.p) * g1 - params.p * g2
    out = np.where(d >= params.epsilon, 1.0, 1.0 + np.tanh(params.phi * (d - params.epsilon)))
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)
