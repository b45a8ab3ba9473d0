"""Where the checkout is: the root every module that reads or starts something from it uses."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = ROOT / "model_repository"  # the shipped weights, one Triton model per variant
