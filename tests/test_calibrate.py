"""training.calibrate: batch-norm statistics measured over batches, on a copy."""

from __future__ import annotations

import numpy as np
import torch

from training.batches import BatchMaker, batch_generator
from training.calibrate import calibrate_batchnorm
from training.data import synthetic_pairs
from training.networks import UNet, UNetConfig
from training.variants import VARIANTS


def test_calibrated_statistics_are_those_of_the_batches_and_the_original_is_untouched():
    torch.manual_seed(0)
    generator = UNet(UNetConfig(in_channels=11, width=4))
    for m in generator.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(5.0)  # statistics an unlucky last batch could have left
            m.running_var.fill_(0.01)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    make_batch = BatchMaker(synthetic_pairs(16, seed=2), VARIANTS["guided"], torch.device("cpu"))

    calibrated = calibrate_batchnorm(generator, make_batch, batches=1, batch_size=16, seed=0)
    assert all(torch.equal(before[k], v) for k, v in generator.state_dict().items())  # a copy was calibrated

    batch = make_batch(np.random.default_rng([0, 271828]).integers(16, size=16), batch_generator(0, 10**9, 0, "cpu"))
    with torch.no_grad():
        in_train_mode = generator.train()(batch.inputs)  # normalised by this very batch's statistics
        in_eval_mode = calibrated(batch.inputs)
        stale = generator.eval()(batch.inputs)
    assert torch.allclose(in_eval_mode, in_train_mode, atol=2e-2)  # unbiased vs biased variance: close, not equal
    assert (stale - in_train_mode).abs().mean() > 10 * (in_eval_mode - in_train_mode).abs().mean()
    assert not calibrated.training
