"""Fuzzing the gateway's Colorize over every request field and the image bytes: each answer is OK or
a status that names the caller's mistake, never UNKNOWN or INTERNAL, and the gateway serves on."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from benchmarks import fuzzing
from service.api import pb, pb_grpc

pytestmark = pytest.mark.integration
EXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def image_bytes(draw) -> bytes:
    kind = draw(
        st.sampled_from(
            ["png", "jpeg", "webp", "garbage", "truncated", "empty", "trns", "one_bit", "animated", "forged_jpeg"]
        )
    )
    if kind == "empty":
        return b""
    if kind == "trns":
        return fuzzing.palette_png_with_long_trns(draw(st.integers(3, 400)))
    if kind == "one_bit":
        return fuzzing.one_bit_png(draw(st.integers(1, 2000)), draw(st.integers(1, 2000)))
    if kind == "animated":
        return fuzzing.animated(draw(st.sampled_from(["PNG", "WEBP"])), draw(st.integers(2, 3)))
    if kind == "forged_jpeg":
        return fuzzing.jpeg_claiming(draw(st.integers(8, 65535)), draw(st.integers(8, 65535)))
    if kind == "garbage":
        return draw(st.binary(min_size=1, max_size=300))
    w, h = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA"]))
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    image = np.random.default_rng(draw(st.integers(0, 1000))).integers(0, 256, shape, dtype=np.uint8)
    data = encoded(
        image,
        {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "truncated": "PNG"}[kind]
        if mode != "RGBA" or kind != "jpeg"
        else "PNG",
    )
    return data[: draw(st.integers(0, len(data) - 1))] if kind == "truncated" else data


coordinate = st.one_of(st.floats(-50, 400), st.sampled_from([float("nan"), float("inf"), -float("inf")]))
point = st.builds(pb.Point, x=coordinate, y=coordinate)
hint = st.one_of(
    st.builds(
        lambda p, c, s: pb.Hint(pixel=p, color=c, size=s),
        point,
        st.builds(pb.Color, r=st.integers(0, 300), g=st.integers(0, 300), b=st.integers(0, 300)),
        st.integers(0, 20),
    ),
    st.builds(lambda p: pb.Hint(normalized=p), point),
    st.just(pb.Hint()),
)
requests = st.builds(
    pb.ColorizeRequest,
    sketch=image_bytes(),
    variant=st.sampled_from(["", "guided", "unet_l1", "pix2pix_blur", "unet_patches20", "nope", "guided\x00"]),
    hints=st.lists(hint, max_size=6),
    color_hint=st.one_of(st.just(b""), image_bytes()),
    output_format=st.integers(-2, 5),
    output_size=st.integers(-1, 4),
    request_id=st.text(max_size=20),
)


@pytest.fixture(scope="module")
def stub(stack):
    with grpc.insecure_channel(stack.address) as channel:
        yield pb_grpc.ColorizerStub(channel)
    assert stack.gateway.poll() is None  # still alive after everything


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(request=requests)
def test_every_fuzzed_request_gets_ok_or_a_status_that_names_the_callers_mistake(stub, request):
    try:
        stub.Colorize(request, timeout=60)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        code, details = e.code(), e.details()
    assert code in EXPECTED, (code, details)
    assert code is grpc.StatusCode.OK or details  # a refusal says why


def test_the_gateway_still_serves_a_valid_request_after_the_fuzzing(stub):
    sketch = np.full((64, 64), 255, np.uint8)
    sketch[10:50, 30] = 0
    response = stub.Colorize(pb.ColorizeRequest(sketch=encoded(sketch, "PNG")), timeout=60)
    assert response.image and response.variant == "guided"
