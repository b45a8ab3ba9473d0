"""A training run's configuration: every option of `python -m training.train`, saved in each
checkpoint so that export and a resumed run need nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from training.networks import UNetConfig
from training.variants import VARIANTS

BN_BATCHES = 64  # training batches the evaluated and exported batch-norm statistics average over


@dataclass(frozen=True)
class TrainConfig:
    variant: str = "guided"
    data: str = "mix"  # OpenMoji + the illustrations (what the shipped weights are trained on)
    out_dir: str = "runs/guided"
    width: int = 16  # generator width; 64 is the study's
    refine: int = 0  # hidden channels of the generator's full-resolution head (networks.UNet); 0 = none
    refine_lr: float = 0.0  # the head's learning rate (0 = lr): a new head on a trained U-Net learns faster
    d_width: int = 0  # discriminator width; 0 = same as the generator
    epochs: int = 20
    batch_size: int = 8
    lr: float = 2e-4
    beta1: float = 0.5
    seed: int = 0
    flip: bool = True  # horizontal flips; safe for every hint kind since hints are drawn after
    max_steps: int = 0  # stop after this many steps in all (0 = run all epochs)
    max_minutes: float = 0.0  # stop this session (checkpointed, resumable) after this long (0 = no limit)
    checkpoint_every: int = 200  # steps between mid-epoch checkpoints
    sample_every: int = 1  # epochs between sample grids
    val_hints: int = 10  # point hints given to the guided variant during validation
    max_val: int = 256  # validation pairs scored each epoch
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA, and on a CPU that has bfloat16 instructions (`bf16_ok`)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    bn_batches: int = BN_BATCHES  # batches the evaluated/exported batch-norm statistics average over
    recolour: float = 0.0  # share of hinted images whose first hint's region is repainted (batches.recolour_region)
    init_from: str = ""  # a new run's generator starts from these weights: a last.pt or an exported .pt2
    dry_run: bool = False

    def generator_config(self) -> UNetConfig:
        return UNetConfig(in_channels=VARIANTS[self.variant].hint.channels, width=self.width, refine=self.refine)
