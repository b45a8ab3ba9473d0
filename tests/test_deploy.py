"""The deployment pieces, checked without a Docker engine or a cluster: docker-compose.yml against
the Compose specification's schema and against the code (ports, variables, models, COPY sources,
entry points importable with each image's dependencies), and deploy/k8s rendered by kustomize
(Debian's kubectl) and validated against the Kubernetes schemas (kubernetes-validate), offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest
import yaml

from contract.wire import WEIGHTS_FILE
from service.settings import GatewayConfig
from service.web import WebConfig

from .integration import REPOSITORY, ROOT
from .tools import debian_package

MODELS = {"guided", "pix2pix", "pix2pix_blur", "unet_l1", "unet_patches20"}
GATEWAY_VARS = {"SKETCH2COLOR_" + f.name.upper() for f in fields(GatewayConfig)}
WEB_VARS = {"SKETCH2COLOR_WEB_" + f.name.upper() for f in fields(WebConfig)}
MODEL_VARS = set(re.findall(r"SKETCH2COLOR_\w+", (REPOSITORY / "generator_model.py").read_text()))
# What each image does not install (pyproject's extras): importing any of it at start-up would crash.
NOT_IN_GATEWAY_IMAGE = ["torch", "pytriton", "skia", "matplotlib", "scipy", "skimage", "psutil", "locust", "selenium",
                        "training", "benchmarks"]  # fmt: skip
NOT_IN_LOCUST_IMAGE = ["torch", "pytriton", "skia", "matplotlib", "scipy", "skimage", "aiohttp", "selenium"]


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's `!reset` tag (an override that removes a key)."""


RESET = object()
ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)


def merged(base: dict, override: dict) -> dict:
    """Compose's merge of an override file, for the mappings these files use."""
    out = dict(base)
    for key, value in override.items():
        if value is RESET:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def load_compose(name: str) -> dict:
    return yaml.load((ROOT / name).read_text(), Loader=ComposeLoader)


@pytest.fixture(scope="module")
def compose_schema() -> jsonschema.Draft201909Validator:
    """The Compose specification's JSON schema, as docker-compose (Debian's package) ships it."""
    root = debian_package("docker-compose")
    return jsonschema.Draft201909Validator(json.loads(next(root.rglob("compose/config/compose_spec.json")).read_text()))


def test_compose_files_validate_against_the_compose_specification(compose_schema):
    base = load_compose("docker-compose.yml")
    compose_schema.validate(base)
    cpu = merged(base, load_compose("docker-compose.cpu.yml"))
    compose_schema.validate(cpu)
    assert "deploy" in base["services"]["triton"] and "deploy" not in cpu["services"]["triton"]
    with pytest.raises(jsonschema.ValidationError):  # the schema does catch a mistake
        compose_schema.validate(merged(base, {"services": {"gateway": {"prots": ["1:1"]}}}))


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
    compose = load_compose("docker-compose.yml")
    services = compose["services"]
    assert not [n for n, s in services.items() if "healthcheck" not in s]
    exposed = {name: {int(p.split(":")[-1]) for p in s.get("ports", [])} for name, s in services.items()}

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
    volume = next(v for v in services["triton"]["volumes"] if v.endswith(":/models:ro"))
    repository = ROOT / volume.split(":")[0]
    assert {p.name for p in repository.iterdir() if (p / "config.pbtxt").exists()} == MODELS
    assert all((repository / m / "1" / WEIGHTS_FILE).exists() for m in MODELS)
    for volume in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume


DOCKERFILES = ["service/Dockerfile", "service/triton.Dockerfile", "benchmarks/locust.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_dockerfile_copies_only_what_exists(dockerfile):
    text = (ROOT / dockerfile).read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        *sources, _ = line.split()
        for source in sources:
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
    for line in re.findall(r"^COPY (.+)$", (ROOT / dockerfile).read_text(), re.M):
        *sources, _ = line.split()
        for source in sources:
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
    copied = set()
    for line in re.findall(r"^COPY (.+)$", (ROOT / "service/Dockerfile").read_text(), re.M):
        copied.update(line.split()[:-1])
    assert copied == {"pyproject.toml", "README.md", "proto", "service", "contract"}


# ---------------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def kubectl() -> Path:
    return next(debian_package("kubernetes-client").rglob("usr/bin/kubectl"))


def render(kubectl: Path, overlay: str) -> dict[tuple[str, str], dict]:
    out = subprocess.run([str(kubectl), "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}


def container(objects: dict, name: str) -> dict:
    (c,) = objects[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
    return c


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_k8s_overlays_render_and_every_object_validates_against_the_kubernetes_schemas(kubectl, overlay):
    import kubernetes_validate

    objects = render(kubectl, overlay)
    assert {kind for kind, _ in objects} >= {"Deployment", "Service", "HorizontalPodAutoscaler",
                                              "PodDisruptionBudget", "PersistentVolumeClaim"}  # fmt: skip
    version = kubernetes_validate.latest_version()
    for obj in objects.values():
        kubernetes_validate.validate(obj, version, strict=True)
    broken = dict(objects[("Service", "triton")], spec={"clusterIP": "None", "portz": []})
    with pytest.raises(kubernetes_validate.ValidationError):  # strict validation does reject a typo
        kubernetes_validate.validate(broken, version, strict=True)


@pytest.mark.parametrize("overlay", ["cpu", "gpu"])
def test_k8s_objects_agree_with_each_other_and_with_the_code(kubectl, overlay):
    objects = render(kubectl, overlay)
    gateway, web, triton = (container(objects, n) for n in ("gateway", "web", "triton"))
    genv = {e["name"]: e["value"] for e in gateway["env"]}
    assert set(genv) <= GATEWAY_VARS and {e["name"] for e in web["env"]} <= WEB_VARS
    # The gateway finds every ready Triton pod through the headless Service's DNS name.
    host, port = genv["SKETCH2COLOR_TRITON_URL"].removeprefix("dns:///").rsplit(":", 1)
    service = objects[("Service", host)]["spec"]
    assert service["clusterIP"] == "None" and int(port) in {p["port"] for p in service["ports"]}
    assert int(genv["SKETCH2COLOR_PORT"]) in {p["containerPort"] for p in gateway["ports"]}
    assert gateway["readinessProbe"]["grpc"]["port"] == int(genv["SKETCH2COLOR_PORT"])
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for name in ("gateway", "triton"):
        pod = objects[("Deployment", name)]["spec"]["template"]
        scrape_port = int(pod["metadata"]["annotations"]["prometheus.io/port"])
        assert scrape_port in {p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    labels = objects[("Deployment", "gateway")]["spec"]["template"]["metadata"]["labels"]
    pdb = objects[("PodDisruptionBudget", "gateway")]["spec"]["selector"]["matchLabels"]
    assert pdb.items() <= labels.items()
    assert objects[("HorizontalPodAutoscaler", "gateway")]["spec"]["scaleTargetRef"]["name"] == "gateway"
    claim = objects[("Deployment", "triton")]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]
    assert ("PersistentVolumeClaim", claim["claimName"]) in objects
    gpus = triton["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert (gpus == 1) if overlay == "gpu" else gpus is None
    assert web["command"][:3] == ["python", "-m", "service.web"]
