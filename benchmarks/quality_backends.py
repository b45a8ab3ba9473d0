"""How the quality benchmark gets a variant's outputs: the exported generators loaded in this
process (the numbers the model card quotes), or a running gateway through its public gRPC API.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from benchmarks.quality_plan import Example, HintSetting
from contract import batch as B
from contract import hints as H
from contract.wire import WEIGHTS_FILE
from training.export import load_exported

# ---------------------------------------------------------------------------------- generators


class Backend(Protocol):
    name: str

    def colorize(self, variant: str, setting: HintSetting, examples: Sequence[Example]) -> np.ndarray:
        """Outputs (B, 128, 128, 3) uint8 for a batch of examples under one hint setting."""
        ...


class InProcess:
    """The exported generators, loaded here, answering as served (`contract.batch.generate`): the
    numbers the model card quotes. ``confine=False`` takes the network's answer alone, to measure
    what keeping hints in their regions changes."""

    name = "in-process (training.export.load_exported)"

    def __init__(self, repository: Path, confine: bool = True):
        self.repository = repository
        self.confine = confine
        self.models: dict[str, torch.nn.Module] = {}

    def colorize(self, variant: str, setting: HintSetting, examples: Sequence[Example]) -> np.ndarray:
        if variant not in self.models:
            self.models[variant] = load_exported(self.repository / variant / "1" / WEIGHTS_FILE)
        x = torch.from_numpy(np.stack([e.encoded(setting) for e in examples]))  # (B, C, 128, 128) in [-1, 1]
        with torch.inference_mode():
            y = B.generate(self.models[variant], setting.kind, x, confine=self.confine).numpy()  # (B, 3, 128, 128)
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
