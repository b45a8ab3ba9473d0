"""The gateway's limits, metrics and refusals: bad input gets a precise gRPC status, nothing
unbounded (real Triton, real gRPC)."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from benchmarks.fuzzing import palette_png_with_long_trns
from service import triton_local
from service.api import SERVICE_NAME, pb, pb_grpc

from .integration import ROOT, gateway_command, health_status
from .test_gateway import PAIRS, png, png_header_only, request_for

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------------------- metrics and limits


def test_metrics_endpoint_counts_calls_by_rpc_variant_and_code(stack, stub):
    stub.Colorize(request_for("unet_l1", 0)[0], timeout=30)  # a served call: the stage histograms have data
    with pytest.raises(grpc.RpcError):
        stub.Colorize(pb.ColorizeRequest(sketch=b"xx", variant="guided"), timeout=10)
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).read().decode()
    assert 'sketch2color_requests_total{code="INVALID_ARGUMENT",rpc="Colorize",variant="guided"}' in text
    assert "sketch2color_stage_seconds_bucket" in text and "sketch2color_in_flight" in text


def metric_value(stack, sample: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def test_made_up_variant_names_are_counted_as_unknown_not_as_new_series(stack, stub):
    for i in range(3):
        with pytest.raises(grpc.RpcError):
            stub.Colorize(pb.ColorizeRequest(sketch=png(PAIRS[0][0]), variant=f"made-up-{i}-" + "x" * 500), timeout=10)

    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5).read().decode()
    assert "made-up" not in text
    assert metric_value(stack, 'sketch2color_requests_total{code="NOT_FOUND",rpc="Colorize",variant="unknown"}') >= 3


@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x0a\x64abc", b"\x12\x05\x80"])
def test_bytes_that_are_not_a_colorize_request_get_invalid_argument_and_are_counted(stack, payload):
    sample = 'sketch2color_requests_total{code="INVALID_ARGUMENT",rpc="Colorize",variant="unknown"}'
    before = metric_value(stack, sample)
    with grpc.insecure_channel(stack.address) as channel:
        raw = channel.unary_unary(
            f"/{SERVICE_NAME}/Colorize", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.RpcError) as e:
            raw(payload, timeout=10)

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a serialized sketch2color.v1.ColorizeRequest" in e.value.details()
    assert metric_value(stack, sample) == before + 1


@pytest.mark.parametrize(
    "method, streaming",
    [
        ("/grpc.health.v1.Health/Check", (False, False)),
        ("/grpc.health.v1.Health/Watch", (False, True)),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", (True, True)),
    ],
)
def test_bytes_that_are_not_a_protobuf_get_invalid_argument_from_health_and_reflection_too(stack, method, streaming):
    with grpc.insecure_channel(stack.address) as channel:
        kind = {
            (False, False): channel.unary_unary,
            (False, True): channel.unary_stream,
            (True, True): channel.stream_stream,
        }[streaming]
        call = kind(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        payload = b"\xff\xff\xff\xff"
        with pytest.raises(grpc.RpcError) as e:
            answer = call(iter([payload]) if streaming[0] else payload, timeout=10)
            if streaming[1]:
                list(answer)

    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert f"the request is not a serialized {method} request" in e.value.details()


def test_an_undecodable_stream_item_gets_its_error_and_the_others_their_images(stack):
    good = request_for("guided", 0)[0].SerializeToString()
    with grpc.insecure_channel(stack.address) as channel:
        raw = channel.stream_stream(
            f"/{SERVICE_NAME}/ColorizeStream",
            request_serializer=lambda b: b,
            response_deserializer=pb.ColorizeStreamResponse.FromString,
        )
        items = list(raw(iter([good, b"\xff\xff\xff", good]), timeout=60))

    by_index = {i.index: i for i in items}
    assert sorted(by_index) == [0, 1, 2]
    assert by_index[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert by_index[0].response.image and by_index[2].response.image


def big_sketch(side: int) -> bytes:
    sketch = np.full((side, side), 255, np.uint8)
    for k in range(0, side, 11):  # dense lines: a sketch that takes a while to decode
        cv2.line(sketch, (k, 0), (side - 1 - k, side - 1), 0, 2)
    return png(sketch)


def speckled_sketch(side: int) -> bytes:
    """Black specks on 30 % of the pixels at random: no PNG filter predicts them, so at 5000x5000 the
    answer (whatever colouring, times these specks) stays over 11 MB even on a plain white colouring,
    while the sketch is under 5 MB. Regular lines compressed too well once the PNG writer improved."""
    specks = np.random.default_rng(0).random((side, side)) < 0.3
    return png(np.where(specks, 0, 255).astype(np.uint8))


def test_an_answer_over_the_message_limit_is_resource_exhausted_and_counted_so(stack, stub):
    sample = 'sketch2color_requests_total{code="RESOURCE_EXHAUSTED",rpc="Colorize",variant="unet_l1"}'
    before = metric_value(stack, sample)
    req = pb.ColorizeRequest(sketch=speckled_sketch(5000), variant="unet_l1", output_format=pb.IMAGE_FORMAT_PNG)
    assert len(req.SerializeToString()) < 8 << 20  # the request fits the tests' 8 MB limit; its answer does not

    with grpc.insecure_channel(stack.address, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.ColorizerStub(channel).Colorize(req, timeout=120)

    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "message limit" in e.value.details()
    assert metric_value(stack, sample) == before + 1


def test_a_call_the_client_cancels_is_counted_as_cancelled_not_ok(stack, stub):
    sample = 'sketch2color_requests_total{code="CANCELLED",rpc="Colorize",variant="unet_l1"}'
    before = metric_value(stack, sample)
    call = stub.Colorize.future(pb.ColorizeRequest(sketch=big_sketch(4000), variant="unet_l1"), timeout=120)
    for _ in range(200):  # until the gateway is working on it (decoding the 16 Mpx sketch), however busy the machine
        if metric_value(stack, "sketch2color_in_flight") >= 1:
            break
        time.sleep(0.05)
    call.cancel()

    for _ in range(50):
        if metric_value(stack, sample) > before:
            break
        time.sleep(0.1)
    assert metric_value(stack, sample) == before + 1


def test_beyond_max_in_flight_new_calls_get_resource_exhausted_at_once_and_health_stays_responsive(stack, tmp_path):
    port = triton_local.free_port()
    cmd = gateway_command(stack.ports.grpc_url, port, "--max-in-flight", "2", "--max-pixels", "25000000")
    with open(tmp_path / "gateway.log", "wb") as log:
        gateway = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        triton_local.wait_serving(f"127.0.0.1:{port}", gateway, timeout=60)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ColorizerStub(channel)
            req = pb.ColorizeRequest(sketch=big_sketch(3000), variant="unet_l1", output_format=pb.IMAGE_FORMAT_JPEG)
            calls = [stub.Colorize.future(req, timeout=120) for _ in range(8)]
            started = time.monotonic()
            assert health_status(f"127.0.0.1:{port}") == health_pb2.HealthCheckResponse.SERVING
            health_s = time.monotonic() - started
            codes = []
            for call in calls:
                try:
                    call.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
                    assert "limit of 2 requests in flight" in e.details()
    finally:
        assert triton_local.stop_process(gateway) == 0
    assert codes.count(grpc.StatusCode.OK) >= 2 and codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 1, codes
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert health_s < 10  # answered while the gateway was saturated (seconds only on a machine this loaded)


def test_a_stream_whose_client_does_not_read_stops_computing_after_a_bounded_number_of_answers(stack):
    sample = 'sketch2color_requests_total{code="OK",rpc="ColorizeStream",variant="unet_l1"}'
    before = metric_value(stack, sample)
    big = png(cv2.resize(PAIRS[3][0], (1024, 1024), interpolation=cv2.INTER_NEAREST))  # answers of ~1 MB each
    reqs = [pb.ColorizeRequest(sketch=big, variant="unet_l1", request_id=str(i)) for i in range(100)]
    with grpc.insecure_channel(stack.address) as channel:
        call = pb_grpc.ColorizerStub(channel).ColorizeStream(iter(reqs), timeout=120)  # sends all, reads nothing
        done, last = 0.0, -1.0
        for _ in range(60):  # until the gateway stops making progress
            time.sleep(0.5)
            done = metric_value(stack, sample) - before
            if done == last and done > 0:
                break
            last = done
        call.cancel()
    # 16 in flight (--stream-concurrency) plus what the transport's flow-control windows hold (a few MB):
    # far fewer than the 100 sent (the unbounded gateway computed every one).
    assert 0 < done <= 50, done


# ---------------------------------------------------------------------------------- bad input

GOOD = png(PAIRS[0][0])


def _hint(**kw):
    defaults = dict(pixel=pb.Point(x=10, y=10), color=pb.Color(r=1, g=2, b=3))
    defaults.update(kw)
    return pb.Hint(**defaults)


BAD_REQUESTS = {
    "empty_request": (pb.ColorizeRequest(), grpc.StatusCode.INVALID_ARGUMENT, "empty request"),
    "truncated_png": (pb.ColorizeRequest(sketch=GOOD[: len(GOOD) // 2]), grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
    "corrupt_bytes": (pb.ColorizeRequest(sketch=b"\x00garbage" * 50), grpc.StatusCode.INVALID_ARGUMENT, "not a PNG"),
    "zero_by_zero_header": (pb.ColorizeRequest(sketch=png_header_only(0, 0)), grpc.StatusCode.INVALID_ARGUMENT, "0x0"),
    "huge_header": (
        pb.ColorizeRequest(sketch=png_header_only(50000, 50000)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "50000x50000",
    ),
    "unknown_variant": (pb.ColorizeRequest(sketch=GOOD, variant="nope"), grpc.StatusCode.NOT_FOUND, "available"),
    "hint_outside_sketch": (
        pb.ColorizeRequest(sketch=GOOD, hints=[_hint(pixel=pb.Point(x=128, y=3))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "outside the 128x128",
    ),
    "normalized_hint_above_one": (
        pb.ColorizeRequest(sketch=GOOD, hints=[_hint(normalized=pb.Point(x=1.5, y=0))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "outside [0, 1]",
    ),
    "hint_colour_above_255": (
        pb.ColorizeRequest(sketch=GOOD, hints=[_hint(color=pb.Color(r=300))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "above 255",
    ),
    "hint_size_too_big": (
        pb.ColorizeRequest(sketch=GOOD, hints=[_hint(size=40)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "size 40",
    ),
    "hint_without_position": (
        pb.ColorizeRequest(sketch=GOOD, hints=[pb.Hint(color=pb.Color(r=1))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no position",
    ),
    "points_for_a_sketch_only_variant": (
        pb.ColorizeRequest(sketch=GOOD, variant="unet_l1", hints=[_hint()]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "takes no point hints",
    ),
    "color_image_for_the_points_variant": (
        pb.ColorizeRequest(sketch=GOOD, variant="guided", color_hint=GOOD),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no colour-hint image",
    ),
    "blur_variant_without_its_color_image": (
        pb.ColorizeRequest(sketch=GOOD, variant="pix2pix_blur"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs `color_hint`",
    ),
    "corrupt_color_hint": (
        pb.ColorizeRequest(sketch=GOOD, variant="pix2pix_blur", color_hint=b"xx"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "color_hint is not",
    ),
    "palette_png_with_a_trns_longer_than_its_palette": (
        pb.ColorizeRequest(sketch=palette_png_with_long_trns()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "sketch is a corrupt PNG",
    ),
    "unknown_variant_of_20_kb": (
        pb.ColorizeRequest(sketch=GOOD, variant="v" * 20_000),
        grpc.StatusCode.NOT_FOUND,
        "(20000 characters)",
    ),
    "more_hints_than_the_limit": (
        pb.ColorizeRequest(sketch=GOOD, hints=[_hint()] * 600),
        grpc.StatusCode.INVALID_ARGUMENT,
        "600 hints; at most 512",
    ),
    "a_hint_flood_refused_unparsed": (
        pb.ColorizeRequest(sketch=GOOD, hints=[_hint()] * 20_000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "more than 512 hints",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_colorize_refuses_bad_input_with_a_precise_status(stub, case):
    request, code, words = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as err:
        stub.Colorize(request, timeout=30)
    assert err.value.code() == code, err.value.details()
    assert words in err.value.details()


def test_colorize_returns_resource_exhausted_for_a_message_over_the_limit(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.Colorize(pb.ColorizeRequest(sketch=b"\x89PNG" + bytes(9 << 20)), timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_colorize_returns_deadline_exceeded_when_the_deadline_is_too_short(stub):
    big = np.full((2000, 2000), 255, np.uint8)
    big[::50] = 0
    with pytest.raises(grpc.RpcError) as err:
        stub.Colorize(pb.ColorizeRequest(sketch=png(big), variant="guided"), timeout=0.005)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
