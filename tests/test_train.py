"""training.train: the dry-run CLI of every variant, exact resume, the checkpoint, and torchrun."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from PIL import Image

import training.train as T
from training.networks import UNet, UNetConfig
from training.variants import VARIANTS

CHECKPOINT_KEYS = {"config", "generator_config", "variant", "G", "D", "opt_G", "opt_D", "step", "history"}


def run_cli(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stderr[-4000:]}"
    return done


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_state(a, b, where: str = "") -> None:
    """Nested dicts/lists of tensors and numbers are equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dry_run_trains_the_variant_and_writes_config_checkpoint_curves_and_samples(variant, tmp_path, repo_root):
    out = tmp_path / "run"

    args = ["--variant", variant, "--dry-run", "--threads", "1", "--out-dir", str(out)]

    done = run_cli([sys.executable, "-m", "training.train", *args], cwd=repo_root)

    config = json.loads((out / "config.json").read_text())
    assert config["variant"] == variant and config["dry_run"] and config["width"] == 4
    ckpt = load(out / "last.pt")
    assert ckpt["step"] == 3 and ckpt["variant"]["name"] == variant
    assert (ckpt["D"] is not None) == VARIANTS[variant].adversarial
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert math.isfinite(metrics["val_l1"]) and math.isfinite(metrics["val_psnr"])
    (sample,) = (out / "samples").glob("*.png")
    for png in (out / "loss_curves.png", sample):
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) > 100


@pytest.mark.parametrize("variant", ["guided", "unet_l1"])
def test_a_run_stopped_and_resumed_is_bit_identical_to_a_straight_run(
    variant, tmp_path, tiny_train_config, monkeypatch
):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    T.train(tiny_train_config(variant, straight, max_steps=6))
    T.train(tiny_train_config(variant, resumed, max_steps=3))
    halfway = load(resumed / "last.pt")
    batches = []
    make_batch = T.BatchMaker.__call__

    def counting_make_batch(self, indices, generator):
        batches.append(indices)
        return make_batch(self, indices, generator)

    monkeypatch.setattr(T.BatchMaker, "__call__", counting_make_batch)

    T.train(tiny_train_config(variant, resumed, max_steps=6))

    assert len(batches) == 3 + 2  # steps 4-6 (it did not start again), then 2 batches calibrate batch-norm
    a, b = load(straight / "last.pt"), load(resumed / "last.pt")
    assert a["step"] == b["step"] == 6
    assert any(not torch.equal(halfway["G"][k], b["G"][k]) for k in b["G"])  # steps 4-6 changed it
    for key in ("G", "D", "opt_G", "opt_D"):
        assert_same_state(a[key], b[key], key)
    assert [r["step"] for r in b["history"]["train"]] == [1, 2, 3, 4, 5, 6]
    losses = [[{k: v for k, v in r.items() if not k.endswith("_s")} for r in h["history"]["train"]] for h in (a, b)]
    assert losses[0] == losses[1]  # everything but the wall-clock timings
    assert [r["step"] for r in b["history"]["val"]] == [3, 6]  # the resumed run kept its curves


def test_checkpoint_describes_itself_so_the_generator_and_discriminator_rebuild_from_it(trained_checkpoint):
    ckpt = load(trained_checkpoint("guided"))

    assert CHECKPOINT_KEYS <= ckpt.keys()
    cfg = T.TrainConfig(**ckpt["config"])
    assert ckpt["variant"] == asdict(VARIANTS["guided"])
    assert ckpt["generator_config"] == asdict(cfg.generator_config())
    assert ckpt["generator_config"]["in_channels"] == VARIANTS["guided"].hint.channels
    assert ckpt["step"] == 1 and len(ckpt["history"]["train"]) == 1
    UNet(UNetConfig(**ckpt["generator_config"])).load_state_dict(ckpt["G"])  # strict: every tensor fits
    _, discriminator = T.build_models(cfg)
    discriminator.load_state_dict(ckpt["D"])
    assert ckpt["opt_G"]["state"] and ckpt["opt_D"]["state"]


def test_resume_refuses_a_checkpoint_of_another_variant(trained_checkpoint, tiny_train_config, tmp_path):
    shutil.copy(trained_checkpoint("guided"), tmp_path / "last.pt")

    with pytest.raises(SystemExit, match="holds variant guided"):
        T.train(tiny_train_config("pix2pix", tmp_path))


def test_torchrun_trains_on_two_cpu_processes_each_taking_half_of_every_epoch(tmp_path, repo_root):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"

    run_cli(
        [
            str(torchrun),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "training.train",
            "--variant",
            "unet_l1",
            "--dry-run",
            "--device",
            "cpu",
            "--out-dir",
            str(out),
        ],
        cwd=repo_root,
    )

    ckpt = load(out / "last.pt")
    assert ckpt["step"] == 3
    # 48 synthetic pairs in batches of 4 on each of 2 ranks: 6 steps an epoch (12 on one process).
    assert ckpt["epoch"] == 0.5
    assert not any(k.startswith("module.") for k in ckpt["G"])  # saved unwrapped from DDP


def test_a_checkpoint_written_before_the_hint_encodings_moved_still_loads(tmp_path):
    """Checkpoints pickled `training.hints.HintKind`; that module is now `contract.hints`."""
    import sys
    import types

    from contract.hints import HintKind
    from training.checkpoint import read_checkpoint

    old = types.ModuleType("training.hints")  # stand in for the old module while writing the file
    old.HintKind = HintKind
    saved = HintKind.__module__
    sys.modules["training.hints"] = old
    HintKind.__module__ = "training.hints"
    try:
        torch.save({"variant": {"hint": HintKind.POINTS}, "step": 3}, tmp_path / "old.pt")
    finally:
        HintKind.__module__ = saved
        del sys.modules["training.hints"]
    assert b"training.hints" in (tmp_path / "old.pt").read_bytes()  # written under the old path
    ckpt = read_checkpoint(tmp_path / "old.pt")
    assert ckpt["variant"]["hint"] is HintKind.POINTS and ckpt["step"] == 3


def test_fine_tuning_with_a_new_refinement_head_starts_from_the_given_weights_and_refuses_misfits(tmp_path):
    plain = UNet(UNetConfig(in_channels=11, width=4))
    cfg = T.TrainConfig(variant="guided", width=4, refine=4, refine_lr=1e-3, out_dir=str(tmp_path))
    models = T.build_training(cfg, torch.device("cpu"))
    T.load_initial(models.generator, plain.state_dict())
    assert torch.equal(models.generator.out[0].weight, plain.out[0].weight)
    # The head learns at its own rate; the U-Net's weights at lr.
    assert [g["lr"] for g in models.opt_g.param_groups] == [cfg.lr, 1e-3]
    assert len(models.opt_g.param_groups[1]["params"]) == len(list(models.generator.refine.parameters()))
    with pytest.raises(SystemExit, match="do not fit"):
        T.load_initial(models.generator, UNet(UNetConfig(in_channels=11, width=8)).state_dict())
