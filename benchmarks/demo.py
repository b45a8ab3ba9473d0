"""The README's demo picture: held-out character drawings coloured by the shipped ``guided`` model.

``python -m benchmarks.demo [--out results/demo.png]``: for a few test-split pictures of the
illustration sources (never trained on), the reference-style sketch, 8 hints placed where a
person would put them (`contract.hints.region_points`, coloured from the original), what
``guided`` makes of the sketch without and with those hints, and the original. In this process,
from the exported weights (the gateway gives the same pixels, up to uint8 rounding: a tested
contract). It also draws ``--boy-out`` (default results/boy.png): `examples/boy.png` with the
hints of `examples/README.md`, coloured by the network alone and as served, where a hint is kept
near its own region (`contract.batch.generate`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.quality_report import hint_overlay
from contract import batch as B
from contract import hints as H
from contract.wire import WEIGHTS_FILE
from training.data import load_split
from training.export import load_exported

PICTURES = (  # test split: one per kind of drawing
    "openclipart/people/a_happy_boy_01#0",
    "art4apps/jobs/clown#0",
    "naev-portraits/pirate/pirate12#0",
    "openclipart/animals/mammals/big_cats/tiger_graig_ryan_smith_-_01#0",
    "art4apps/actions/dance#0",
)
HINTS = 8
# examples/README.md's hints on examples/boy.png: (x, y) as fractions of the picture, colour.
BOY_SKIN, BOY_SHIRT = ((0.50, 0.25), (232, 176, 96)), ((0.40, 0.85), (48, 112, 208))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--out", type=Path, default=Path("results/demo.png"))
    parser.add_argument("--boy-out", type=Path, default=Path("results/boy.png"))
    args = parser.parse_args(argv)
    test = load_split("illustrations", "test")
    index = {n: i for i, n in enumerate(test.names)}
    model = load_exported(args.repository / "guided" / "1" / WEIGHTS_FILE)
    rows = []
    for name in PICTURES:
        sketch, target = test[index[name]]
        points = H.region_points(target, sketch, HINTS, np.random.default_rng(7))
        x = np.stack([H.encode("points", sketch), H.encode("points", sketch, points=points)])
        with torch.inference_mode():
            served = B.generate(model, H.HintKind.POINTS, torch.from_numpy(x))  # as the service answers
            none, hinted = H.from_unit(served.numpy().transpose(0, 2, 3, 1))
        rows.append([H.sketch_rgb(sketch), hint_overlay(sketch, points), none, hinted, target])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("sketch", f"{HINTS} hints", "guided, no hints", "guided, with the hints", "original")
    fig, axes = plt.subplots(len(rows), 5, figsize=(9, 1.9 * len(rows) + 0.3), squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            axes[r, c].imshow(image, interpolation="nearest")
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    plt.close(fig)
    print(args.out)
    boy_sheet(model, args.boy_out)
    print(args.boy_out)
    return args.out


def boy_sheet(model, out: Path) -> None:
    """The README's drawn example, one row per set of hints: the network alone, and as served."""
    from PIL import Image

    from service.imaging import Frame

    with Image.open(Path(__file__).resolve().parents[1] / "examples" / "boy.png") as im:
        gray = np.asarray(im.convert("L"))
    frame = Frame.fit(gray.shape[1], gray.shape[0])
    sketch = frame.to_grid(gray)

    def hint(where, rgb):
        return H.PointHint(*frame.grid_position(where[0] * frame.width, where[1] * frame.height), rgb)

    sets = (
        ("one blue hint on the shirt", [hint(*BOY_SHIRT)]),
        ("examples/README.md's two hints", [hint(*BOY_SKIN), hint(*BOY_SHIRT)]),
    )
    x = torch.from_numpy(np.stack([H.encode("points", sketch, points=p) for _, p in sets]))
    with torch.inference_mode():
        alone, served = (B.generate(model, H.HintKind.POINTS, x, confine=c).numpy() for c in (False, True))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sets), 3, figsize=(6, 2.1 * len(sets) + 0.3), squeeze=False)
    for r, (label, points) in enumerate(sets):
        row = [
            hint_overlay(sketch, points),
            H.from_unit(alone[r].transpose(1, 2, 0)),
            H.from_unit(served[r].transpose(1, 2, 0)),
        ]
        for c, (image, title) in enumerate(zip(row, (label, "the network alone", "as served"), strict=True)):
            axes[r, c].imshow(image, interpolation="nearest")
            axes[r, c].set_title(title, fontsize=8)
            axes[r, c].axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
