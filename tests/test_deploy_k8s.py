"""deploy/k8s, checked without a cluster: both overlays rendered by `kubectl kustomize` (kubectl from
PyPI, the dev extra: kustomize v5) and validated against the Kubernetes schemas offline
(kubernetes-validate), in current kustomize syntax, agreeing with each other and with the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import grpc
import kubernetes_validate
import pytest
import yaml

from service.client import ColorizerClient
from service.web import WebConfig, open_channel

from .integration import ROOT
from .test_deploy import BIN, GATEWAY_VARS, TRITON_DOCKERFILE, WEB_VARS

K8S = ROOT / "deploy/k8s"
OVERLAYS = ["cpu", "gpu"]


def kustomize(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )


def render(overlay: str) -> dict[tuple[str, str], dict]:
    out = kustomize(K8S / "overlays" / overlay)
    assert out.returncode == 0, out.stderr
    assert "deprecated" not in out.stderr, out.stderr  # kustomize warns of each deprecated field it reads
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}


def container(objects: dict, name: str) -> dict:
    (c,) = objects[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
    return c


def env(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_overlays_render_and_every_object_validates_against_the_kubernetes_schemas(overlay, tmp_path):
    objects = render(overlay)
    assert {kind for kind, _ in objects} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    version = kubernetes_validate.latest_version()
    for obj in objects.values():
        kubernetes_validate.validate(obj, version, strict=True)
    broken = dict(objects[("Service", "triton")], spec={"clusterIP": "None", "portz": []})
    with pytest.raises(kubernetes_validate.ValidationError):  # strict validation does reject a typo
        kubernetes_validate.validate(broken, version, strict=True)
    shutil.copytree(K8S, tmp_path / "k8s")  # and kustomize rejects an overlay whose patch is missing
    (tmp_path / "k8s/overlays" / overlay / f"triton-{overlay}.yaml").unlink()
    assert kustomize(tmp_path / "k8s/overlays" / overlay).returncode != 0


DEPRECATED = {"bases", "patchesStrategicMerge", "patchesJson6902", "commonLabels", "vars", "imageTags"}


def test_k8s_kustomizations_use_no_deprecated_field(tmp_path):
    for path in K8S.rglob("kustomization.yaml"):
        assert not DEPRECATED & yaml.safe_load(path.read_text()).keys(), path
    # render() also fails on kustomize's own warning; an overlay in the old syntax does raise it.
    shutil.copytree(K8S, tmp_path / "k8s")
    old = tmp_path / "k8s/overlays/cpu/kustomization.yaml"
    old.write_text("bases: [../../base]\npatchesStrategicMerge: [triton-cpu.yaml]\n")
    out = kustomize(old.parent)
    assert out.returncode == 0 and "'bases' is deprecated" in out.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_deployments_an_autoscaler_owns_set_no_replicas(overlay):
    objects = render(overlay)
    scaled = [o["spec"]["scaleTargetRef"] for (kind, _), o in objects.items() if kind == "HorizontalPodAutoscaler"]
    assert scaled
    for target in scaled:
        assert "replicas" not in objects[(target["kind"], target["name"])]["spec"], f"{target['name']}: the HPA owns it"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_triton_pods_serve_the_model_repository_of_their_image(overlay):
    objects = render(overlay)
    assert not [name for kind, name in objects if kind in {"PersistentVolumeClaim", "PersistentVolume"}]
    for (kind, name), obj in objects.items():
        if kind == "Deployment":
            volumes = obj["spec"]["template"]["spec"].get("volumes", [])
            assert not [v for v in volumes if "persistentVolumeClaim" in v], f"{name} needs a filled volume"
    triton = container(objects, "triton")
    # The image's own command serves the repository its Dockerfile copied in; nothing overrides or covers it.
    assert "command" not in triton and "args" not in triton
    (served,) = re.findall(r"--model-repository=(\S+?)\"", TRITON_DOCKERFILE.read_text())
    assert served not in {m["mountPath"] for m in triton.get("volumeMounts", [])}
    for name in ("triton", "gateway", "web"):  # a version to roll out and back, not :latest
        image = container(objects, name)["image"]
        assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", image), f"{name}: {image}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_in_cluster_clients_balance_over_every_gateway_pod(overlay):
    objects = render(overlay)
    gateway = container(objects, "gateway")
    service = objects[("Service", "gateway")]["spec"]
    assert service.get("clusterIP") == "None"  # DNS answers with every ready pod, not one virtual IP
    url = env(container(objects, "web"))["SKETCH2COLOR_WEB_GATEWAY_URL"]
    assert url.startswith("dns:///"), f"the page's {url} would resolve once, to one pod"
    host, port = url.removeprefix("dns:///").rsplit(":", 1)
    assert host == "gateway" and int(port) in {p["port"] for p in service["ports"]}
    assert int(port) in {p["containerPort"] for p in gateway["ports"]}  # a headless Service translates no port


def test_the_page_and_the_client_balance_round_robin_over_what_the_name_resolves_to(monkeypatch):
    seen = {}

    def recorder(who: str):
        def channel(target, options):
            seen[who] = dict(options)
            return mock.MagicMock()

        return channel

    monkeypatch.setattr(grpc.aio, "insecure_channel", recorder("page"))
    monkeypatch.setattr(grpc, "insecure_channel", recorder("client"))
    open_channel(WebConfig(gateway_url="dns:///gateway:50051"))
    ColorizerClient("dns:///gateway:50051")
    assert seen["page"]["grpc.lb_policy_name"] == "round_robin"
    assert seen["client"]["grpc.lb_policy_name"] == "round_robin"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_objects_agree_with_each_other_and_with_the_code(overlay):
    objects = render(overlay)
    gateway, web, triton = (container(objects, n) for n in ("gateway", "web", "triton"))
    genv = env(gateway)
    assert set(genv) <= GATEWAY_VARS and set(env(web)) <= WEB_VARS
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
    gpus = triton["resources"].get("limits", {}).get("nvidia.com/gpu")
    assert (gpus == 1) if overlay == "gpu" else gpus is None
    assert web["command"][:3] == ["python", "-m", "service.web"]
