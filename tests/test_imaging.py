"""service.imaging: decoding refuses what would make the gateway work hard for nothing."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from service.imaging import Limits, RequestError, decode_image


def jpeg(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **options)
    return buf.getvalue()


def forge_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0) claiming width x height."""
    at = data.find(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def test_a_tiny_jpeg_whose_header_claims_6300x6300_is_refused_before_decoding():
    forged = forge_size(jpeg(Image.fromarray(np.full((8, 8, 3), 200, np.uint8))), 6300, 6300)
    assert len(forged) < 1000 and Image.open(io.BytesIO(forged)).size == (6300, 6300)

    with pytest.raises(RequestError, match="claims to be a 6300x6300 JPEG but has"):
        decode_image(forged, "sketch", Limits())


@pytest.mark.parametrize("options", [{}, {"progressive": True, "optimize": True, "quality": 5}])
def test_the_most_compressible_real_jpeg_of_a_large_size_still_decodes(options):
    data = jpeg(Image.new("L", (2000, 1500), 255), **options)  # flat white: as small as a JPEG gets

    image = decode_image(data, "sketch", Limits())

    assert image.shape == (1500, 2000, 3) and image.min() >= 240  # quality 5 shifts white a little


def test_a_large_jpeg_for_a_model_size_answer_is_decoded_at_reduced_scale_onto_the_same_grid(monkeypatch):
    from service import imaging
    from service.api import pb
    from service.inputs import encode_request

    rng = np.random.default_rng(0)
    drawing = np.full((1500, 2000), 255, np.uint8)
    for _ in range(40):  # thick strokes, so the grid shows lines at either scale
        r, c = rng.integers(0, 1400), rng.integers(0, 1900)
        drawing[r : r + 12, c : c + rng.integers(50, 400)] = 0
    data = jpeg(Image.fromarray(drawing), quality=90)
    decoded = []  # the sizes decoded, by Pillow or by OpenCV
    load, by_opencv = imaging._load, imaging._by_opencv
    monkeypatch.setattr(imaging, "_load", lambda im, what: decoded.append(im.size) or load(im, what))

    def opencv(im):
        pixels = by_opencv(im)
        if pixels is not None:
            decoded.append((pixels.shape[1], pixels.shape[0]))
        return pixels

    monkeypatch.setattr(imaging, "_by_opencv", opencv)
    grids = {}
    for size in (pb.OUTPUT_SIZE_MODEL, pb.OUTPUT_SIZE_SKETCH):
        tensors, frame, _ = encode_request(pb.ColorizeRequest(sketch=data, output_size=size), "none", Limits())
        grids[size] = tensors["sketch"].astype(int)
        assert (frame.width, frame.height) == (2000, 1500)  # hints and the answer still refer to the full size
    assert decoded == [(250, 188), (2000, 1500)]  # 1/8 scale, still more than the 128-px grid
    assert np.abs(grids[pb.OUTPUT_SIZE_MODEL] - grids[pb.OUTPUT_SIZE_SKETCH]).mean() < 3


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16"])
def test_a_sketchs_gray_pixels_are_the_gray_of_its_rgb_pixels_in_every_mode(mode):
    from service import imaging

    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    im = Image.fromarray(rgba, "RGBA").convert(mode) if mode != "I;16" else Image.fromarray(rgba[:, :, 0] * 257)
    data = io.BytesIO()
    im.save(data, format="PNG")
    opened = [imaging.open_image(data.getvalue(), "sketch", Limits()) for _ in range(2)]
    gray = imaging.gray_pixels(opened[0], "sketch")
    assert gray.shape == (37, 53) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray, imaging.to_gray(imaging.pixels(opened[1], "sketch")))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (128, 128), (97, 203)])
def test_the_answers_png_decodes_to_exactly_the_pixels_with_pillow_and_opencv(shape):
    import cv2

    from service.imaging import encode_png

    rng = np.random.default_rng(sum(shape))
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)  # noise: every Up-filter byte wraps somewhere
    data = encode_png(rgb)
    with Image.open(io.BytesIO(data)) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (shape[1], shape[0]))
        im.verify()  # chunk CRCs
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), rgb)
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1], rgb)


def test_the_answers_png_is_no_larger_than_pillows_on_a_colouring():
    import cv2

    from service.imaging import encode_png

    for seed in range(3):  # flat fills with soft edges, as the generators paint
        blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        rgb = cv2.GaussianBlur(cv2.resize(blocks, (128, 128), interpolation=cv2.INTER_NEAREST), (5, 5), 0)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)  # what the gateway wrote before
        assert len(encode_png(rgb)) <= 1.1 * len(buf.getvalue())


def test_a_palette_png_with_more_transparency_entries_than_colours_is_invalid_argument_not_a_crash():
    from benchmarks.fuzzing import palette_png_with_long_trns

    with pytest.raises(RequestError, match="sketch is a corrupt PNG") as e:
        decode_image(palette_png_with_long_trns(), "sketch", Limits())
    assert e.value.code.name == "INVALID_ARGUMENT"


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA"])
def test_opencv_decodes_a_png_to_exactly_pillows_pixels(mode, monkeypatch):
    from service import imaging

    rgba = np.random.default_rng(2).integers(0, 256, (29, 41, 4), dtype=np.uint8)
    data = io.BytesIO()
    Image.fromarray(rgba, "RGBA").convert(mode).save(data, format="PNG")
    opened = imaging.open_image(data.getvalue(), "sketch", Limits())
    assert imaging._by_opencv(opened) is not None  # the GIL-free path is the one taken
    by_opencv = imaging.pixels(opened, "sketch")
    monkeypatch.setattr(imaging, "_by_opencv", lambda im: None)
    by_pillow = imaging.pixels(imaging.open_image(data.getvalue(), "sketch", Limits()), "sketch")
    np.testing.assert_array_equal(by_opencv, by_pillow)


@pytest.mark.parametrize("channels", [3, 4])
def test_a_16_bit_colour_png_is_decoded_once_by_opencv_to_pillows_pixels(channels, monkeypatch):
    import cv2

    from service import imaging

    rgb16 = np.random.default_rng(channels).integers(0, 65536, (9, 11, channels)).astype(np.uint16)
    data = cv2.imencode(".png", rgb16)[1].tobytes()
    opened = imaging.open_image(data, "sketch", Limits())
    assert imaging._by_opencv(opened) is not None  # not decoded, thrown away and decoded again by Pillow
    by_opencv = imaging.pixels(opened, "sketch")
    monkeypatch.setattr(imaging, "_by_opencv", lambda im: None)
    by_pillow = imaging.pixels(imaging.open_image(data, "sketch", Limits()), "sketch")
    np.testing.assert_array_equal(by_opencv, by_pillow)
