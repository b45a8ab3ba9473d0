"""The CLI's own checks, before any call: colours people type and files that are not there."""

from __future__ import annotations

import pytest

from service import cli
from service.client import parse_color, parse_hint


@pytest.mark.parametrize(
    ("text", "rgb"),
    [
        ("#ff8800", (255, 136, 0)),
        ("#f80", (255, 136, 0)),
        ("FF8800", (255, 136, 0)),
        ("255,136,0", (255, 136, 0)),
        ("red", (255, 0, 0)),
        ("SteelBlue", (70, 130, 180)),
        ("#FFF", (255, 255, 255)),
    ],
)
def test_colours_in_hex_triples_and_css_names(text, rgb):
    c = parse_color(text)
    assert (c.r, c.g, c.b) == rgb


@pytest.mark.parametrize(
    ("text", "says"),
    [("rr", "use #rrggbb"), ("#12345", "use #rrggbb"), ("300,0,0", "0..255"), ("notacolour", "CSS colour name")],
)
def test_a_bad_colour_is_named_with_the_forms_that_work(text, says):
    with pytest.raises(ValueError, match=says) as err:
        parse_color(text)
    assert repr(text) in str(err.value) and "int()" not in str(err.value)


def test_a_hint_takes_a_css_colour_name():
    h = parse_hint("50,25,red")
    assert (h.pixel.x, h.pixel.y, h.color.r, h.color.g, h.color.b) == (50, 25, 255, 0, 0)


def test_a_missing_input_is_named_as_missing(tmp_path, capsys):
    missing = tmp_path / "sketch.png"
    code = cli.main(["--server", "127.0.0.1:1", "colorize", str(missing), "-o", str(tmp_path / "out.png")])
    assert code == 2
    assert f"{missing}: no such file or folder" in capsys.readouterr().err


def test_a_bad_hint_colour_is_reported_without_a_traceback(tmp_path, capsys):
    code = cli.main(
        ["--server", "127.0.0.1:1", "colorize", str(tmp_path), "-o", str(tmp_path / "o"), "--hint", "50,25,rr"]
    )
    assert code == 2
    assert "colour 'rr': use #rrggbb" in capsys.readouterr().err
