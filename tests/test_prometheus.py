"""A real Prometheus (Debian's binary) scrapes a local gateway and Triton; after some load, every
PromQL expression of the Grafana dashboard (deploy/grafana/dashboards/) evaluates and has data."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import yaml

from service.api import pb, pb_grpc
from service.triton_local import free_port, serving_stack, stop_process

from .integration import GATEWAY_ARGS, REPOSITORY, ROOT
from .test_gateway import request_for
from .tools import debian_package

pytestmark = pytest.mark.integration
DASHBOARD = ROOT / "deploy/grafana/dashboards/sketch2color.json"
GPU_ONLY = ("nv_gpu_",)  # series a Triton without a GPU does not export: they must parse, not have data


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p["targets"]]


def query(port: int, expr: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # a bad expression: 400 with Prometheus's error
        return json.loads(e.read())
    except OSError:  # not listening yet
        return {}


@pytest.fixture(scope="module")
def prometheus_binary():
    return next(debian_package("prometheus").rglob("usr/bin/prometheus"))


def test_every_dashboard_expression_evaluates_with_data_after_load(prometheus_binary, tmp_path):
    repo = tmp_path / "repo"  # one model keeps Triton's start short; the panels are per model anyway
    shutil.copytree(REPOSITORY / "guided", repo / "guided", ignore=shutil.ignore_patterns("__pycache__"))
    with serving_stack(repo, tmp_path / "logs", gateway_args=GATEWAY_ARGS) as stack:
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [
                {"job_name": "gateway", "static_configs": [{"targets": [f"127.0.0.1:{stack.metrics_port}"]}]},
                {"job_name": "triton", "static_configs": [{"targets": [f"127.0.0.1:{stack.ports.metrics}"]}]},
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        prometheus = subprocess.Popen(
            [
                str(prometheus_binary),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path}/tsdb",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=open(tmp_path / "prometheus.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while query(port, "up").get("status") != "success" or len(query(port, "up")["data"]["result"]) < 2:
                assert prometheus.poll() is None and time.monotonic() < deadline, (
                    tmp_path / "prometheus.log"
                ).read_text()
                time.sleep(0.5)

            # Load over a few scrapes: good calls and a few refused ones (the errors panel needs some).
            with grpc.insecure_channel(stack.address) as channel, ThreadPoolExecutor(4) as pool:
                stub = pb_grpc.ColorizerStub(channel)

                def call(i: int) -> None:
                    request = request_for("guided", i % 8)[0] if i % 10 else pb.ColorizeRequest(sketch=b"nope")
                    try:
                        stub.Colorize(request, timeout=60)
                    except grpc.RpcError:
                        pass

                for _ in range(4):
                    list(pool.map(call, range(16)))
                    time.sleep(1.0)
            time.sleep(3.0)  # two more scrapes after the last call

            up = {r["metric"]["job"]: r["value"][1] for r in query(port, "up")["data"]["result"]}
            assert up == {"gateway": "1", "triton": "1"}, up
            empty = []
            for title, expr in dashboard_queries():
                answer = query(port, expr)
                assert answer["status"] == "success", (title, expr, answer.get("error"))
                if not answer["data"]["result"] and not any(s in expr for s in GPU_ONLY):
                    empty.append((title, expr))
            assert not empty, empty
            # A misspelt metric would have evaluated fine but empty: the check above is not vacuous.
            assert query(port, "rate(sketch2color_request_total[1m])")["data"]["result"] == []
        finally:
            stop_process(prometheus)
