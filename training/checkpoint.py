"""Reading training checkpoints (``runs/<variant>/last.pt``) written by any version of this code.

Checkpoints are pickles, so a class they hold is found by its module path. The hint encodings
moved from ``training.hints`` to ``contract.hints``; checkpoints written before hold the enum
under the old path. New checkpoints store the hint kind as a plain string.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path

import torch

MOVED = {"training.hints": "contract.hints"}  # old module path -> where the class lives now


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return super().find_class(MOVED.get(module, module), name)


_pickle = types.ModuleType("checkpoint_pickle")  # the pickle_module torch.load takes
_pickle.Unpickler = _Unpickler
_pickle.load = pickle.load
_pickle.__dict__["Pickler"] = pickle.Pickler


def read_checkpoint(path: Path | str, map_location: torch.device | str = "cpu") -> dict:
    """A checkpoint's dict (generator, discriminator, optimisers, config, history)."""
    return torch.load(path, map_location=map_location, weights_only=False, pickle_module=_pickle)
