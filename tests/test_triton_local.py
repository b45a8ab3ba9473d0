"""service.triton_local: a stopped Triton leaves nothing behind, even after it was killed."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import psutil
import pytest

from service.triton_local import start_triton, stop_triton, wait_ready

from .integration import REPOSITORY

pytestmark = pytest.mark.integration


def group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return members


def test_stop_triton_after_a_kill_leaves_no_backend_stub_and_no_shared_memory(tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(REPOSITORY / "unet_l1", repository / "unet_l1", symlinks=True)
    shutil.copy(REPOSITORY / "generator_model.py", repository)  # what 1/model.py links to
    proc, ports = start_triton(repository, log_path=tmp_path / "triton.log", torch_threads=1)
    try:
        wait_ready(ports, proc, timeout=180)
        assert len(group_members(proc.pid)) >= 2  # the server and the model's backend stub
        assert list(Path("/dev/shm").glob(proc.shm_prefix + "*"))
        os.kill(proc.pid, signal.SIGKILL)  # Triton dies the hard way: nothing of it cleans up
        proc.wait()
    finally:
        stop_triton(proc)

    psutil.wait_procs(group_members(proc.pid), timeout=0.5)  # SIGKILLed: gone at once
    assert group_members(proc.pid) == []
    assert list(Path("/dev/shm").glob(proc.shm_prefix + "*")) == []
