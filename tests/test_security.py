"""The gateway's TLS, mutual TLS and bearer tokens, with certificates made in the test (no Triton needed:
the calls that pass the checks answer UNAVAILABLE or an empty variant list, the refused ones never get there)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api import pb, pb_grpc
from service.triton_local import free_port, stop_process

from .integration import ROOT, gateway_command

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=sketch2color test CA",
    )
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        )
    return d


def start_gateway(tmp_path: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = gateway_command(f"127.0.0.1:{free_port()}", port, "--health-interval-s", "5", *args)
    log = open(tmp_path / f"gateway-{port}.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while b"gateway on" not in (tmp_path / f"gateway-{port}.log").read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / f"gateway-{port}.log").read_text()
        time.sleep(0.1)
    return proc, f"localhost:{port}"


def list_variants(channel: grpc.Channel, metadata=None):
    return pb_grpc.ColorizerStub(channel).ListVariants(pb.ListVariantsRequest(), timeout=10, metadata=metadata)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def test_bearer_tokens_let_the_right_token_in_and_refuse_a_missing_or_wrong_one(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# one per line\n{TOKEN}\n")
    proc, address = start_gateway(tmp_path, "--auth-tokens-file", str(tokens))
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ColorizerStub(channel)
            assert code_of(lambda: list_variants(channel)) == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(lambda: list_variants(channel, [("authorization", "Bearer nope")])) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            assert list_variants(channel, [("authorization", f"Bearer {TOKEN}")]).default_variant == "guided"
            stream = stub.ColorizeStream(iter([pb.ColorizeRequest(sketch=b"x")]), timeout=10)
            assert code_of(lambda: list(stream)) == grpc.StatusCode.UNAUTHENTICATED
            # Passing the check is not the same as being served: without Triton the call is UNAVAILABLE.
            with_token = [("authorization", f"Bearer {TOKEN}")]
            colorize = stub.Colorize
            assert code_of(lambda: colorize(pb.ColorizeRequest(sketch=b"x"), timeout=10, metadata=with_token)) == (
                grpc.StatusCode.UNAVAILABLE
            )
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING  # exempt by default, no token
    finally:
        stop_process(proc)


def test_with_no_exemptions_health_needs_the_token_too_and_tokens_come_from_the_environment(tmp_path):
    env = {**os.environ, "SKETCH2COLOR_AUTH_TOKENS": f"other, {TOKEN}"}
    proc, address = start_gateway(tmp_path, "--auth-exempt", "", env=env)
    try:
        with grpc.insecure_channel(address) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            assert code_of(lambda: check(health_pb2.HealthCheckRequest(), timeout=10)) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
            metadata = [("authorization", f"Bearer {TOKEN}")]
            assert check(health_pb2.HealthCheckRequest(), timeout=10, metadata=metadata).status in (1, 2)
    finally:
        stop_process(proc)


def test_tls_serves_a_client_that_trusts_the_ca_and_refuses_plaintext(tmp_path, certs):
    proc, address = start_gateway(
        tmp_path, "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key")
    )
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes())
        with grpc.secure_channel(address, creds) as channel:
            assert list_variants(channel).default_variant == "guided"
        with grpc.insecure_channel(address) as channel:
            assert code_of(lambda: list_variants(channel)) == grpc.StatusCode.UNAVAILABLE
    finally:
        stop_process(proc)


def test_mutual_tls_serves_a_client_with_a_certificate_from_the_ca_and_refuses_one_without(tmp_path, certs):
    proc, address = start_gateway(
        tmp_path,
        "--tls-cert",
        str(certs / "server.pem"),
        "--tls-key",
        str(certs / "server.key"),
        "--tls-client-ca",
        str(certs / "ca.pem"),
    )
    try:
        ca = (certs / "ca.pem").read_bytes()
        anonymous = grpc.ssl_channel_credentials(root_certificates=ca)
        with grpc.secure_channel(address, anonymous) as channel:
            assert code_of(lambda: list_variants(channel)) == grpc.StatusCode.UNAVAILABLE
        known = grpc.ssl_channel_credentials(
            ca, (certs / "client.key").read_bytes(), (certs / "client.pem").read_bytes()
        )
        with grpc.secure_channel(address, known) as channel:
            assert list_variants(channel).default_variant == "guided"
    finally:
        stop_process(proc)


@pytest.mark.parametrize("content", ["", "# tokens go here\n\n   \n"])
def test_a_tokens_file_without_a_token_stops_the_gateway_at_start_instead_of_leaving_it_open(tmp_path, content):
    tokens = tmp_path / "tokens"
    tokens.write_text(content)
    cmd = gateway_command(f"127.0.0.1:{free_port()}", free_port(), "--auth-tokens-file", str(tokens))
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert done.returncode != 0
    assert f"--auth-tokens-file {tokens} holds no token" in done.stderr


def test_the_bearer_scheme_is_case_insensitive_and_the_start_up_log_says_what_is_on(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\n")
    proc, address = start_gateway(tmp_path, "--auth-tokens-file", str(tokens))
    try:
        with grpc.insecure_channel(address) as channel:
            for scheme in ("bearer", "BEARER", "Bearer"):
                assert list_variants(channel, [("authorization", f"{scheme} {TOKEN}")]).default_variant == "guided"
            assert code_of(lambda: list_variants(channel, [("authorization", f"Basic {TOKEN}")])) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
    finally:
        stop_process(proc)
    log = next(tmp_path.glob("gateway-*.log")).read_text()
    assert "plaintext, 1 bearer token(s), open without one: grpc.health.v1.Health" in log
