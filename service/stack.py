"""One command, the whole service on this machine: Triton on model_repository/, then the gateway.

``python -m service.stack`` (what ``make run`` does). The page for people
(``python -m service.web``) comes up too, on http://127.0.0.1:8080/ (``--web-port 0``: no page).
Ctrl-C (or SIGTERM) drains the gateway, then stops the page and Triton. ``--triton-url HOST:PORT``
uses a Triton that is already running instead.
Any gateway flag (see ``python -m service.gateway --help``) may follow. Each Triton model gets
half the cores for torch, shared by its instances (``--torch-threads``, per instance): on a
small CPU the gateway needs the rest, and on this 2-core machine that raised served throughput
at 16 concurrent calls from 107 to 152 img/s (with one instance per model).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import uvloop

from contract import wire
from service import security, triton_local
from service.paths import MODEL_REPOSITORY, ROOT
from service.server import serve
from service.settings import config_from_args, setup_logging

log = logging.getLogger("sketch2color.stack")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=False)
    parser.add_argument("--repository", type=Path, default=MODEL_REPOSITORY)
    parser.add_argument("--triton-grpc-port", type=int, default=8001)
    parser.add_argument("--triton-http-port", type=int, default=8000)
    parser.add_argument("--triton-metrics-port", type=int, default=8002)
    parser.add_argument("--triton-log", type=Path, default=Path("triton.log"))
    parser.add_argument("--triton-url", help="use this running Triton instead of starting one")
    parser.add_argument("--web-port", type=int, default=8080, help="the page's port (0 = no page)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=int(os.environ.get("SKETCH2COLOR_TORCH_THREADS", "0"))
        or wire.cpu_threads((os.cpu_count() or 2) // 2, wire.INSTANCES),
        help="torch threads per Triton model instance (default: half the cores over a model's instances)",
    )
    args, gateway_argv = parser.parse_known_args(argv)
    if args.triton_url:
        gateway_argv += ["--triton-url", args.triton_url]
    config = config_from_args(gateway_argv)
    setup_logging(config.log_level)

    proc = None
    if not args.triton_url:
        ports = triton_local.TritonPorts(args.triton_http_port, args.triton_grpc_port, args.triton_metrics_port)
        log.info("starting Triton on %s (gRPC :%d, log %s)", args.repository, ports.grpc, args.triton_log)
        proc, ports = triton_local.start_triton(
            args.repository, ports, log_path=args.triton_log, torch_threads=args.torch_threads
        )
        try:
            triton_local.wait_ready(ports, proc, timeout=300)
        except (RuntimeError, TimeoutError) as e:
            triton_local.stop_triton(proc)
            raise SystemExit(f"{e}; see {args.triton_log}") from None
        log.info("Triton ready")
        config = replace(config, triton_url=ports.grpc_url)
    web = None
    if args.web_port:
        # Its own process: the page's server is a gRPC client like any other, and its work stays off
        # the gateway's event loop.
        cmd = [
            sys.executable,
            "-m",
            "service.web",
            "--port",
            str(args.web_port),
            "--gateway-url",
            f"127.0.0.1:{config.port}",
        ]
        env = dict(os.environ)
        tokens = security.read_tokens(config.auth_tokens_file, config.auth_tokens)
        if tokens:  # the page calls with the first token; with TLS, start service.web by hand (--gateway-ca)
            env["SKETCH2COLOR_WEB_GATEWAY_TOKEN"] = tokens[0]
        web = subprocess.Popen(cmd, cwd=ROOT, env=env)
        log.info("the page: http://127.0.0.1:%d/", args.web_port)
    try:
        uvloop.run(serve(config))  # as `python -m service.gateway` runs it
    except KeyboardInterrupt:
        pass
    finally:
        if web is not None:
            triton_local.stop_process(web)
        if proc is not None:
            log.info("stopping Triton")
            triton_local.stop_triton(proc)


if __name__ == "__main__":
    main()
