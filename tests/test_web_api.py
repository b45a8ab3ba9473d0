"""service.web without a browser: the JSON it accepts, and its upstream credentials against a
gateway with TLS, mutual TLS and a bearer token (certificates made in the test, no Triton needed)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest

from service.api import pb
from service.triton_local import stop_process
from service.web import BadJson, request_from_json

from .test_security import TOKEN, certs, start_gateway  # noqa: F401 (certs is a fixture)
from .test_web import start_web


def test_json_becomes_the_request_the_gateway_would_get_from_any_client():
    r = request_from_json(
        {
            "sketch": "data:image/png;base64," + base64.b64encode(b"png!").decode(),
            "variant": "guided",
            "hints": [{"x": 0.25, "y": 0.5, "color": "#ff8000", "size": 3}],
            "output_format": "webp",
        }
    )
    assert r.sketch == b"png!" and r.variant == "guided" and r.output_format == pb.IMAGE_FORMAT_WEBP
    (h,) = r.hints
    assert h.HasField("normalized") and (h.normalized.x, h.normalized.y) == (0.25, 0.5)
    assert (h.color.r, h.color.g, h.color.b, h.size) == (255, 128, 0, 3)
    # Values out of range pass through: the gateway is the one place that judges them.
    far = request_from_json({"sketch": "", "hints": [{"x": 7, "y": -1, "color": [300, 0, 0]}]})
    assert far.hints[0].normalized.x == 7 and far.hints[0].color.r == 300


@pytest.mark.parametrize(
    "body, says",
    [
        ([], "JSON object"),
        ({"sketch": "%%%"}, "not valid base64"),
        ({"sketch": 12}, "base64 string"),
        ({"sketch": "", "hints": [{"x": 0.1, "color": "#fff"}]}, "hints[0]"),
        ({"sketch": "", "hints": [{"x": 0.1, "y": 0.1, "color": "purpleish"}]}, "hints[0]"),
        ({"sketch": "", "output_format": "gif"}, "output_format"),
    ],
)
def test_json_of_the_wrong_shape_is_refused_with_the_field_named(body, says):
    with pytest.raises(BadJson, match=says.replace("[", r"\[").replace("]", r"\]")):
        request_from_json(body)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.integration
def test_the_page_server_reaches_a_gateway_with_mutual_tls_and_a_token_and_reports_refusals(certs, tmp_path):  # noqa: F811
    gateway, address = start_gateway(
        tmp_path,
        "--tls-cert",
        str(certs / "server.pem"),
        "--tls-key",
        str(certs / "server.key"),
        "--tls-client-ca",
        str(certs / "ca.pem"),
        "--auth-tokens",
        TOKEN,
    )
    tls = (
        "--gateway-url",
        address,
        "--gateway-ca",
        str(certs / "ca.pem"),
        "--gateway-cert",
        str(certs / "client.pem"),
        "--gateway-key",
        str(certs / "client.key"),
    )
    webs = []
    try:
        for args in [(*tls, "--gateway-token", TOKEN), (*tls, "--gateway-token", "wrong"), tls[:4]]:
            webs.append(start_web(tmp_path, *args))
        (_, good), (_, wrong_token), (_, no_client_cert) = webs
        status, body = get(good + "api/variants")
        assert status == 200 and body.get("default_variant") == "guided", body
        status, body = get(wrong_token + "api/variants")
        assert status == 401 and "bearer token" in body["error"]["message"], body
        status, body = get(no_client_cert + "api/variants")
        assert status == 503 and body["error"]["code"] == "UNAVAILABLE", body
    finally:
        for proc, _ in webs:
            stop_process(proc)
        stop_process(gateway)


@pytest.mark.integration
def test_the_overhead_benchmark_measures_both_paths_and_writes_its_report(tmp_path):
    from benchmarks import web_overhead

    m = web_overhead.main(["--n", "6", "--out", str(tmp_path)])
    assert m["n"] == 6 and m["direct_p50_ms"] > 0 and m["web_p50_ms"] > 0 and m["web_server_own_p50_ms"] > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["added_p50_ms"] == m["added_p50_ms"]
    assert "through the web server" in (tmp_path / "report.md").read_text()
