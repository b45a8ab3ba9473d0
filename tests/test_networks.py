"""training.networks: the study's U-Net, its discriminator and the conditional PatchGAN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.networks import (
    BN_MOMENTUM,
    PatchDiscriminator,
    StudyDiscriminator,
    UNet,
    UNetConfig,
    count_parameters,
)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def all_networks() -> list[nn.Module]:
    # Built at collection, before the seeding fixture: seed here, or the draw depends on what ran first.
    torch.manual_seed(0)
    config = UNetConfig(in_channels=10, width=16)
    return [UNet(config), StudyDiscriminator(config), PatchDiscriminator(10, width=16)]


@pytest.mark.parametrize("width", [4, 16])
@pytest.mark.parametrize("in_channels", [3, 10])
def test_unet_maps_any_input_channels_to_rgb_128px_in_unit_range(width, in_channels):
    net = UNet(UNetConfig(in_channels=in_channels, width=width))
    x = torch.rand(2, in_channels, 128, 128) * 2 - 1

    y = net(x)

    assert y.shape == (2, 3, 128, 128)
    assert y.min() >= -1 and y.max() <= 1
    assert y.std() > 0  # not a constant image


def test_unet_width16_has_about_4_09m_parameters_as_its_layer_shapes_add_up():
    k = 5
    # (in, out, batch-norm?) of each convolution; a convolution without batch-norm has a bias.
    downs = [
        (3, 16, False),
        (16, 32, True),
        (32, 64, True),
        (64, 128, True),
        (128, 128, True),
        (128, 128, True),
        (128, 128, False),
    ]
    ups = [(128, 128, True), (256, 128, True), (256, 128, True), (256, 64, True), (128, 32, True), (64, 16, True)]
    out = [(32, 3, False)]
    expected = sum(k * k * cin * cout + (2 * cout if norm else cout) for cin, cout, norm in downs + ups + out)

    params = count_parameters(UNet(UNetConfig(in_channels=3, width=16)))

    assert params == expected
    assert 3.5e6 < params < 4.5e6
    assert round(params / 1e6, 2) == 4.09


@pytest.mark.parametrize("net", all_networks(), ids=type)
def test_batch_norm_momentum_is_0_1_everywhere(net):
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]

    assert norms
    assert BN_MOMENTUM == 0.1  # Keras momentum 0.9, in PyTorch's convention
    assert all(m.momentum == 0.1 for m in norms)


@pytest.mark.parametrize("net", all_networks(), ids=type)
def test_weights_start_as_the_study_normal_0_02_and_biases_at_zero(net):
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    weights = torch.cat([m.weight.detach().flatten() for m in layers])

    assert abs(weights.std().item() - 0.02) < 0.0005
    assert abs(weights.mean().item()) < 0.0005
    for m in layers:
        if m.weight.numel() >= 2000:  # enough samples for a per-layer estimate within 10%
            assert abs(m.weight.std().item() - 0.02) < 0.002
        if m.bias is not None:
            assert torch.all(m.bias == 0)
    scales = torch.cat([m.weight.detach() for m in net.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(scales.mean().item() - 1) < 0.01 and abs(scales.std().item() - 0.02) < 0.005


def test_study_discriminator_gives_one_logit_per_image():
    d = StudyDiscriminator(UNetConfig(in_channels=10, width=4))

    logits = d(torch.rand(3, 10, 128, 128), torch.rand(3, 3, 128, 128))

    assert logits.shape == (3, 1)


def test_patch_discriminator_gives_a_30x30_map_of_logits_on_128px():
    d = PatchDiscriminator(10, width=4)

    logits = d(torch.rand(3, 10, 128, 128), torch.rand(3, 3, 128, 128))

    assert logits.shape == (3, 1, 30, 30)


def test_patch_discriminator_logit_sees_exactly_a_34px_window():
    d = PatchDiscriminator(3, width=4).eval()
    condition = torch.rand(1, 3, 128, 128, requires_grad=True)
    color = torch.rand(1, 3, 128, 128, requires_grad=True)

    d(condition, color)[0, 0, 15, 15].backward()

    # LeakyReLU and eval-mode batch-norm never zero a gradient: its support is the receptive field.
    seen = (condition.grad.abs().sum(dim=(0, 1)) + color.grad.abs().sum(dim=(0, 1))) > 0
    rows, cols = seen.any(dim=1).nonzero().flatten(), seen.any(dim=0).nonzero().flatten()
    assert seen.sum() == 34 * 34
    assert rows.max() - rows.min() + 1 == 34 and cols.max() - cols.min() + 1 == 34


def test_patch_discriminator_logit_ignores_pixels_outside_its_receptive_field():
    d = PatchDiscriminator(3, width=4).eval()
    condition, color = torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        before = d(condition, color)
        far, near = color.clone(), color.clone()
        far[0, :, 100, 100] += 5.0  # > 70 px from the top-left patch's window
        near[0, :, 10, 10] += 5.0  # inside it
        after_far, after_near = d(condition, far), d(condition, near)

    assert torch.equal(after_far[0, 0, 0, 0], before[0, 0, 0, 0])
    assert not torch.equal(after_near[0, 0, 0, 0], before[0, 0, 0, 0])
    assert not torch.equal(after_far, before)  # the pixel is seen, by the patches around it


def test_a_refinement_head_starts_as_no_correction_so_a_unets_weights_give_the_same_image():
    plain = UNet(UNetConfig(in_channels=11, width=4)).eval()
    refined = UNet(UNetConfig(in_channels=11, width=4, refine=8)).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("refine.") for k in missing)
    x = torch.rand(2, 11, 128, 128) * 2 - 1

    with torch.no_grad():
        assert torch.equal(plain(x), refined(x))
        refined.refine[-1].bias.fill_(0.5)  # a correction, once learnt, changes the image
        assert not torch.equal(plain(x), refined(x))


def test_the_refinement_head_sees_single_pixels_of_the_input_that_the_unet_blurs():
    """The reason it exists: a one-pixel change of the input changes the output there more with the head."""
    torch.manual_seed(1)
    refined = UNet(UNetConfig(in_channels=3, width=4, refine=8)).eval()
    nn.init.normal_(refined.refine[-1].weight, std=0.5)
    x = torch.zeros(1, 3, 128, 128)
    y = x.clone()
    y[0, :, 64, 64] = 1.0
    with torch.no_grad():
        change = (refined(y) - refined(x)).abs()[0].sum(0)
    assert change[63:66, 63:66].max() > 0
    assert change[64, 64] >= change[60, 60]
