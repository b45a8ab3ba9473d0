"""Shared fixtures. Training side: tiny configs and checkpoints on generated data (no downloads)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from training.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root: the working directory for `python -m ...` subprocesses."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_train_config() -> Callable[..., TrainConfig]:
    """A factory of width-4 training configs on synthetic pairs: a few steps take seconds on a CPU."""

    from training.config import TrainConfig  # imported here: the serving tests need no torch

    def make(variant: str, out_dir: Path, **overrides) -> TrainConfig:
        settings = dict(
            variant=variant,
            data="synthetic",
            out_dir=str(out_dir),
            width=4,
            batch_size=4,
            epochs=1,
            max_steps=1,
            max_val=8,
            bn_batches=2,
            device="cpu",
            threads=1,  # the test machine is small and shared; one thread is the fastest
        )
        return TrainConfig(**(settings | overrides))

    return make


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, tiny_train_config) -> Callable[[str], Path]:
    """A factory: the last.pt of a one-step run of a variant, trained once per test session."""
    from training.train import train

    cache: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in cache:
            out_dir = tmp_path_factory.mktemp(f"run_{variant}")
            train(tiny_train_config(variant, out_dir), resume=False)
            cache[variant] = out_dir / "last.pt"
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """Triton on the shipped repository and a gateway, one pair for the whole session (a start
    loads five models into two instances each: ~45 s on 2 cores). Tests that stop, freeze or
    drain a server start their own; checks on counters compare before and after."""
    from service.triton_local import serving_stack

    from .integration import GATEWAY_ARGS, REPOSITORY

    with serving_stack(REPOSITORY, tmp_path_factory.mktemp("stack"), gateway_args=GATEWAY_ARGS) as s:
        yield s
    assert s.gateway.returncode == 0, "the gateway should drain and exit 0 on SIGTERM"


@pytest.fixture(scope="module")
def stub(stack):
    import grpc

    from service.api import pb_grpc

    with grpc.insecure_channel(stack.address) as channel:
        yield pb_grpc.ColorizerStub(channel)
