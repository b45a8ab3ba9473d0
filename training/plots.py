"""Training plots: loss curves and sample grids (sketch | hints | output | target)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from contract import hints as H  # noqa: E402


def _smooth(values: list[float], window: int = 50) -> np.ndarray:
    v = np.asarray(values, float)
    if len(v) < window:
        return v
    return np.convolve(v, np.ones(window) / window, mode="valid")


def plot_history(history, path: Path, title: str = "") -> None:
    """Train L1 vs validation L1, validation PSNR, and the D/G adversarial losses when present."""
    train = history.train
    adversarial = any("loss_G_adv" in r for r in train)
    fig, axes = plt.subplots(1, 3 if adversarial else 2, figsize=(15 if adversarial else 10, 3.6))
    steps = [r["step"] for r in train]
    l1 = _smooth([r["loss_G_L1"] for r in train])
    axes[0].plot(steps[len(steps) - len(l1) :], l1, label="train L1 (smoothed)")
    if history.val:
        axes[0].plot([r["step"] for r in history.val], [r["val_l1"] for r in history.val], "o-", label="val L1")
        axes[1].plot([r["epoch"] for r in history.val], [r["val_psnr"] for r in history.val], "o-")
    axes[0].set(xlabel="step", ylabel="L1 on [-1, 1]", title=f"{title} L1")
    axes[0].legend()
    axes[1].set(xlabel="epoch", ylabel="dB", title="validation PSNR")
    if adversarial:
        for key in ("loss_G_adv", "loss_D_real", "loss_D_fake"):
            rows = [r for r in train if key in r]
            v = _smooth([r[key] for r in rows])
            axes[2].plot([r["step"] for r in rows][len(rows) - len(v) :], v, label=key)
        axes[2].set(xlabel="step", ylabel="BCE", title="adversarial losses (smoothed)")
        axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def hint_preview(kind: H.HintKind, encoded: np.ndarray) -> np.ndarray:
    """What the network was shown, as an RGB uint8 picture: the sketch with its hints drawn in."""
    if kind is not H.HintKind.POINTS:
        return H.from_unit(encoded[:3]).transpose(1, 2, 0)
    sketch, hint, mask = encoded[:3], encoded[3:6], encoded[6:7]
    return H.from_unit(np.where(mask > 0, hint, sketch)).transpose(1, 2, 0)


@torch.no_grad()
def save_sample_grid(generator, dataset, variant, cfg, device, path: Path, n: int = 6) -> None:
    """Rows of sketch | hints | output | target for n validation pairs spread over the split."""
    rng = np.random.default_rng(7)
    rows = []
    was_training = generator.training
    generator.eval()
    for i in np.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().astype(int):  # across every source
        sketch, color = dataset[int(i)]
        points = H.region_points(color, sketch, cfg.val_hints, rng) if variant.hint is H.HintKind.POINTS else ()
        x = H.encode(variant.hint, sketch, color=color, points=points)
        out = generator(torch.from_numpy(x)[None].to(device)).float().cpu().numpy()[0]
        rows.append(
            np.concatenate(
                [H.sketch_rgb(sketch), hint_preview(variant.hint, x), H.from_unit(out).transpose(1, 2, 0), color],
                axis=1,
            )
        )
    generator.train(was_training)
    grid = np.concatenate(rows, axis=0)
    fig = plt.figure(figsize=(grid.shape[1] / 100, grid.shape[0] / 100 + 0.3), dpi=100)
    plt.imshow(grid)
    plt.axis("off")
    plt.title("sketch | hints | output | target", fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
