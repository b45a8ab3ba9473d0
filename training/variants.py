"""The generator variants: each a recipe of network + hint encoding + loss.

The first four are the study's models; ``guided`` is the flagship (the study's stated next step:
a patch discriminator, plus hints anywhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from contract.hints import HintKind


@dataclass(frozen=True)
class Variant:
    name: str
    hint: HintKind
    discriminator: Literal["none", "study", "patch"]
    description: str
    l1_weight: float = 100.0  # loss = l1_weight * L1 + BCE when there is a discriminator
    d_every: int = 1  # update the discriminator on every d_every-th iteration

    @property
    def adversarial(self) -> bool:
        return self.discriminator != "none"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("unet_l1", HintKind.NONE, "none", "U-Net, per-pixel L1, sketch only (study model 1)"),
        Variant(
            "pix2pix", HintKind.NONE, "study", "U-Net + study discriminator, 100*L1 + BCE (study model 2)", d_every=2
        ),
        Variant(
            "pix2pix_blur",
            HintKind.BLUR,
            "study",
            "pix2pix with a dense hint: 0.5*(sketch + 32x32 box-blur of a rough colour image) (study model 3)",
            d_every=2,
        ),
        Variant(
            "unet_patches20",
            HintKind.PATCHES20,
            "none",
            "U-Net, L1, 20 fixed 7x7 colour patches copied into the sketch (study model 4)",
        ),
        Variant(
            "guided",
            HintKind.POINTS,
            "patch",
            "U-Net + conditional PatchGAN, colour hints anywhere, any count (flagship)",
        ),
    )
}
