"""``--processes N``: several gateway processes on one port, one metrics endpoint, one drain."""

from __future__ import annotations

import re
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import psutil
import pytest

from service.api import pb, pb_grpc
from service.triton_local import serving_stack

from .integration import GATEWAY_ARGS, REPOSITORY
from .test_gateway import png

pytestmark = pytest.mark.integration
PROCESSES = 2
CHANNELS = 16  # all on one process by chance: 2 in 2**16
CALLS = 48


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def test_n_processes_share_the_port_sum_their_metrics_and_drain_together_on_sigterm(tmp_path):
    sketch = np.full((128, 128), 255, np.uint8)
    sketch[30:100, 60:64] = 0
    request = pb.ColorizeRequest(sketch=png(sketch), variant="unet_l1", output_size=pb.OUTPUT_SIZE_MODEL)
    args = (*GATEWAY_ARGS, "--processes", str(PROCESSES))
    with serving_stack(REPOSITORY, tmp_path, gateway_args=args) as stack:
        children = psutil.Process(stack.gateway.pid).children()
        assert len(children) == PROCESSES
        port = int(stack.address.rsplit(":", 1)[1])
        # A local subchannel pool per channel: else grpc shares one connection among them.
        channels = [
            grpc.insecure_channel(stack.address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CHANNELS)
        ]
        stubs = [pb_grpc.ColorizerStub(ch) for ch in channels]
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: stubs[i % CHANNELS].Colorize(request, timeout=60), range(CALLS)))
        assert all(r.width == 128 for r in responses)
        # Each channel holds one connection; the kernel spread them over the processes (SO_REUSEPORT).
        held = [
            sum(1 for c in child.net_connections("tcp") if c.status == "ESTABLISHED" and c.laddr.port == port)
            for child in children
        ]
        assert sum(held) == CHANNELS and min(held) > 0, held

        text = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).read().decode()
        assert metric(text, r'sketch2color_requests_total\{code="OK",rpc="Colorize",variant="unet_l1"\}') == CALLS
        assert "pid=" not in text, "series are summed over the processes, not one per pid"

        # SIGTERM with calls in flight on every process: each is answered, then all processes exit.
        futures = [stub.Colorize.future(request, timeout=60) for stub in stubs for _ in range(2)]
        time.sleep(0.2)
        stack.gateway.send_signal(signal.SIGTERM)
        errors = [f.exception() for f in futures if f.exception() is not None]
        assert not errors, [e.code() for e in errors]
        assert stack.gateway.wait(timeout=30) == 0
        assert not any(psutil.pid_exists(c.pid) and c.status() != psutil.STATUS_ZOMBIE for c in children)
        for ch in channels:
            ch.close()
