"""``--processes N``: N gateway processes on one port, one metrics endpoint, one drain.

One asyncio process uses one core (plus a few image threads under the GIL); a GPU server has
16+. The supervisor starts N ordinary gateways (``--processes 1``) on the same host:port: gRPC
sets SO_REUSEPORT, so the kernel spreads new connections over them. Their Prometheus metrics go
to files in a private directory (prometheus-client's multiprocess mode, chosen by
PROMETHEUS_MULTIPROC_DIR in each child's environment) and the supervisor alone serves
/metrics, summed over the children. SIGTERM/SIGINT is passed to every child, each drains its
calls as a single gateway does, and the supervisor exits when all have. A child that dies on its
own stops the rest (exit 1): the orchestrator restarts the whole, as it would a single gateway.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import fields, replace

import prometheus_client as prom
from prometheus_client import multiprocess

log = logging.getLogger("sketch2color.processes")


def child_command(config) -> list[str]:
    """The command of one child: the same settings, one process, no metrics server of its own."""
    child = replace(config, processes=1, metrics_port=0)
    argv = [sys.executable, "-m", "service.gateway"]
    for f in fields(child):
        argv += ["--" + f.name.replace("_", "-"), str(getattr(child, f.name))]
    return argv


def supervise(config) -> int:
    """Run config.processes gateways until SIGTERM/SIGINT; -> the exit code."""
    metrics_dir = tempfile.mkdtemp(prefix="sketch2color-metrics-")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=metrics_dir)
    children = [subprocess.Popen(child_command(config), env=env) for _ in range(config.processes)]
    log.info(
        "%d gateway processes on %s:%s: pids %s",
        len(children),
        config.host,
        config.port,
        " ".join(str(c.pid) for c in children),
    )
    if config.metrics_port:
        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=metrics_dir)
        prom.start_http_server(config.metrics_port, addr=config.host, registry=registry)

    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    try:
        running = list(children)
        while running:
            for c in list(running):
                if c.poll() is None:
                    continue
                running.remove(c)
                multiprocess.mark_process_dead(c.pid, metrics_dir)
                if c.returncode != 0:
                    code = 1
                if not stopping:
                    log.error("gateway process %d exited with %s: stopping the others", c.pid, c.returncode)
                    code = 1
                    stop(signal.SIGTERM, None)
            time.sleep(0.05)
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("all gateway processes stopped")
    return code
