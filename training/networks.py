"""The study's U-Net generator, its discriminator, and a conditional PatchGAN.

Study settings: 5x5 kernels, stride 2, "same" padding, LeakyReLU(0.2) down, ReLU up, tanh out,
batch-norm with Keras momentum 0.9 (= PyTorch momentum 0.1), weights N(0, 0.02).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from contract.hints import MODEL_SIZE

BN_MOMENTUM = 0.1  # PyTorch convention; the study's Keras momentum 0.9 means the same thing


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 3
    out_channels: int = 3
    width: int = 64  # 64 reproduces the study; 16 or 32 train on a CPU
    depth: int = 7  # 128 -> 1 with 7 stride-2 convolutions
    kernel_size: int = 5
    refine: int = 0  # hidden channels of a full-resolution head (see UNet); 0 = the study's U-Net

    def channels(self) -> list[int]:
        """Channels after each down-sampling step: w, 2w, 4w, 8w, 8w, ... (pix2pix's ladder)."""
        return [self.width * min(2**i, 8) for i in range(self.depth)]


def _down(cin: int, cout: int, k: int, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=2, padding=k // 2, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout, momentum=BN_MOMENTUM))
    layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def _up(cin: int, cout: int, k: int) -> nn.Sequential:
    # padding k//2 with output_padding 1 doubles the size exactly, like Keras "same".
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, k, stride=2, padding=k // 2, output_padding=1, bias=False),
        nn.BatchNorm2d(cout, momentum=BN_MOMENTUM),
        nn.ReLU(),
    )


class UNet(nn.Module):
    """Encoder-decoder with concatenated skips: (B, in, 128, 128) -> (B, out, 128, 128) in [-1, 1]."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch, k = config.channels(), config.kernel_size
        # No norm on the first layer (pix2pix) nor on the 1x1 bottleneck (a batch-norm of one
        # pixel per image is only noise).
        self.downs = nn.ModuleList(
            _down(cin, cout, k, norm=0 < i < len(ch) - 1)
            for i, (cin, cout) in enumerate(zip([config.in_channels, *ch[:-1]], ch))
        )
        # Up step i maps depth i+1 to depth i; from the second up on, its input is the previous
        # up output concatenated with the skip of the same size.
        ups = [_up(ch[-1], ch[-2], k)]
        for i in range(len(ch) - 2, 0, -1):
            ups.append(_up(2 * ch[i], ch[i - 1], k))
        self.ups = nn.ModuleList(ups)
        self.out = nn.Sequential(
            nn.ConvTranspose2d(2 * ch[0], config.out_channels, k, stride=2, padding=k // 2, output_padding=1),
            nn.Tanh(),
        )
        # The U-Net's finest features are at half resolution, so it cannot copy a per-pixel input
        # (a hint's bucket fill, which ends exactly at a line) into its output. The head sees the
        # input and the U-Net's pre-tanh output at full resolution and adds a correction.
        self.refine = None
        if config.refine:
            h = config.refine
            self.refine = nn.Sequential(
                nn.Conv2d(config.in_channels + config.out_channels, h, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(h, h, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(h, config.out_channels, 3, padding=1),
            )
        init_weights(self)
        if self.refine is not None:  # zero correction at the start: a U-Net's weights load unchanged
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs, skips = x, []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        x = skips.pop()  # (B, 8w, 1, 1)
        for up in self.ups:
            x = torch.cat([up(x), skips.pop()], dim=1)
        if self.refine is None:
            return self.out(x)
        pre = self.out[0](x)
        return self.out[1](pre + self.refine(torch.cat([inputs, pre], dim=1)))


class StudyDiscriminator(nn.Module):
    """The study's discriminator: the generator's down-sampling half, flatten, one logit.

    Conditional, as in pix2pix: it sees the generator input and a colour image side by side.
    Returns logits (B, 1); the sigmoid lives in the BCE-with-logits loss.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        ch, k = config.channels(), config.kernel_size
        self.features = nn.Sequential(
            *(
                _down(cin, cout, k, norm=0 < i < len(ch) - 1)
                for i, (cin, cout) in enumerate(zip([config.in_channels + 3, *ch[:-1]], ch))
            )
        )
        spatial = MODEL_SIZE // 2**config.depth
        self.classify = nn.Linear(ch[-1] * spatial * spatial, 1)
        init_weights(self)

    def forward(self, condition: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(torch.cat([condition, color], dim=1)).flatten(1))


class PatchDiscriminator(nn.Module):
    """pix2pix's conditional PatchGAN scaled to 128x128.

    pix2pix's 70x70 receptive field covers 27% of a 256 image's side; with two stride-2 layers
    the receptive field here is 34x34, the same fraction of 128, and the output is the same
    30x30 map of real/fake logits. (B, C+3, 128, 128) -> (B, 1, 30, 30).
    """

    def __init__(self, in_channels: int, width: int = 64, n_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels + 3, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            nxt = width * min(2**i, 8)
            layers += [
                nn.Conv2d(ch, nxt, 4, stride, 1, bias=False),
                nn.BatchNorm2d(nxt, momentum=BN_MOMENTUM),
                nn.LeakyReLU(0.2),
            ]
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, condition: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([condition, color], dim=1))


def init_weights(module: nn.Module) -> None:
    """The study's N(0, 0.02) for convolutions and linears; N(1, 0.02) scales for batch-norm."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
