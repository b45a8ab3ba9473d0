"""The page, driven in a real headless Chromium (Debian's chromium + chromedriver, through selenium)
against the real web server, gateway and Triton: upload, hints, result, removal, variants, errors."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.triton_local import free_port, stop_process

from .integration import ROOT

pytestmark = pytest.mark.integration
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SKETCH = ROOT / "examples" / "boy.png"
# Two hints inside closed regions of examples/boy.png (fractions of the picture): the shirt and the hand.
RED, BLUE = ("#e01010", (0.22, 0.86)), ("#1030e0", (0.70, 0.75))


def start_web(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(tmp_path / f"web-{port}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.web", "--port", str(port), *args],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return proc, url
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / f"web-{port}.log").read_text()
            time.sleep(0.1)


@pytest.fixture(scope="module")
def page_url(tmp_path_factory, stack):
    proc, url = start_web(tmp_path_factory.mktemp("web"), "--gateway-url", stack.address)
    try:
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    assert not missing, f"{missing} missing: `apt-get install chromium chromium-driver` (make test does)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No sandbox as root; no background networking: this machine's closed network refuses it.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1040",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = 60.0, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=what)


def result_after(driver, previous: str | None, timeout: float = 60.0) -> np.ndarray:
    """The next result image (the download link's data URL) that differs from `previous`."""

    def new_href(d):
        href = d.find_element("id", "download").get_attribute("href") or ""
        return href if href.startswith("data:") and href != previous else None

    href = wait(driver, new_href, timeout, "a new result")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).convert("RGB"))


def settled_result(driver, timeout: float = 60.0) -> np.ndarray:
    """The result once the page is idle: no request in flight and none pending in the debounce, the
    same image twice in a row (an answer to an earlier edit may arrive between two clicks)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        time.sleep(0.6)  # longer than the page's debounce
        busy = driver.find_element("id", "busy").is_displayed()
        href = driver.find_element("id", "download").get_attribute("href") or ""
        if not busy and href.startswith("data:") and href == last:
            return np.asarray(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))).convert("RGB"))
        last = None if busy else href
    raise TimeoutError("the page did not settle on a result")


def click_at(driver, element, fx: float, fy: float) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    w, h = element.size["width"], element.size["height"]
    ActionChains(driver).move_to_element_with_offset(element, fx * w - w / 2, fy * h - h / 2).click().perform()


def set_color(driver, color: str) -> None:
    driver.execute_script(
        "const c = document.getElementById('color'); c.value = arguments[0];"
        "c.dispatchEvent(new Event('input', {bubbles: true}));",
        color,
    )


def patch_mean(image: np.ndarray, fx: float, fy: float, r: int = 4) -> np.ndarray:
    y, x = int(fy * image.shape[0]), int(fx * image.shape[1])
    return image[y - r : y + r + 1, x - r : x + r + 1].reshape(-1, 3).mean(0)


def test_a_person_uploads_places_hints_removes_one_switches_variant_and_sees_errors(browser, page_url, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(page_url)
    variant = wait(
        d,
        lambda d: (
            Select(d.find_element("id", "variant")) if d.find_elements("css selector", "#variant option") else None
        ),
        30,
        "the variant list",
    )
    assert variant.first_selected_option.get_attribute("value") == "guided"
    assert {o.get_attribute("value") for o in variant.options} >= {"guided", "unet_l1", "pix2pix_blur"}

    d.find_element("id", "sketch-file").send_keys(str(SKETCH))
    plain = result_after(d, None)
    assert plain.shape[:2] == Image.open(SKETCH).size[::-1]  # full resolution, as the gateway answers

    sketch = d.find_element("id", "sketch")
    for color, (fx, fy) in (RED, BLUE):
        set_color(d, color)
        click_at(d, sketch, fx, fy)
    assert len(d.find_elements("css selector", ".hint")) == 2
    hinted = settled_result(d)
    red, blue = patch_mean(hinted, *RED[1]), patch_mean(hinted, *BLUE[1])
    # Red there, and redder than without the hint (the hint did it, not the model's own guess).
    redness = lambda rgb: rgb[0] - max(rgb[1], rgb[2])  # noqa: E731
    before = patch_mean(plain, *RED[1])
    assert redness(red) > 30 and redness(red) > redness(before) + 30, f"red hint's region is {red}, was {before}"
    assert blue[2] > blue[0] + 40, f"blue hint's region is {blue}"
    assert "server" in d.find_element("id", "message").text and "ms" in d.find_element("id", "message").text
    if shots := os.environ.get("SKETCH2COLOR_SCREENSHOTS"):  # the README's picture: make the test write it
        Path(shots).mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(Path(shots) / "page.png"))

    # Remove the blue hint with the keyboard: the region loses its blue.
    d.find_elements("css selector", ".hint")[1].send_keys(Keys.DELETE)
    assert len(d.find_elements("css selector", ".hint")) == 1
    without_blue = settled_result(d)
    after = patch_mean(without_blue, *BLUE[1])
    assert after[2] < blue[2] - 30, f"blue region still {after}"

    # Drag the remaining dot; then place one from the keyboard (Enter: the centre) and move it with an arrow.
    from selenium.webdriver.common.action_chains import ActionChains

    dot = d.find_element("css selector", ".hint")
    left = dot.value_of_css_property("left")
    ActionChains(d).drag_and_drop_by_offset(dot, 40, -30).perform()
    assert d.find_element("css selector", ".hint").value_of_css_property("left") != left
    d.find_element("id", "canvas").send_keys(Keys.ENTER)
    keyed = d.find_elements("css selector", ".hint")[-1]
    assert len(d.find_elements("css selector", ".hint")) == 2 and keyed.get_attribute("style").find("left: 50%") >= 0
    keyed.send_keys(Keys.ARROW_RIGHT)
    assert "left: 51%" in d.find_elements("css selector", ".hint")[-1].get_attribute("style")
    d.find_elements("css selector", ".hint")[-1].send_keys(Keys.BACKSPACE)
    assert len(d.find_elements("css selector", ".hint")) == 1

    # Another variant: its own result, and the page says the hints are not used by it.
    variant.select_by_value("unet_l1")
    wait(d, lambda d: d.find_element("id", "message").text.startswith("unet_l1 v"), 60, "unet_l1's answer")
    other = result_after(d, None)
    assert other.shape == hinted.shape and "not used by unet_l1" in d.find_element("id", "hint-count").text

    # A file that is not an image: the gateway's refusal, readable, on the page.
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"these are not the pixels you are looking for")
    d.find_element("id", "sketch-file").send_keys(str(bad))
    message = wait(
        d,
        lambda d: (m := d.find_element("id", "message")).get_attribute("class") == "error" and m.text,
        30,
        "an error message",
    )
    assert "not a PNG, JPEG or WebP image" in message and "b'" not in message  # the gateway's words, no repr


def variants_loaded(d):
    from selenium.webdriver.support.ui import Select

    return wait(
        d,
        lambda d: (
            Select(d.find_element("id", "variant")) if d.find_elements("css selector", "#variant option") else None
        ),
        30,
        "the variant list",
    )


def showing_no_result(d) -> bool:
    link = d.find_element("id", "download")
    return (
        not d.find_element("id", "result").is_displayed()
        and link.get_attribute("aria-disabled") == "true"
        and (not (link.get_attribute("href") or "").startswith("data:"))
    )


def test_the_page_shows_only_what_belongs_to_the_sketch_and_variant_chosen_now(browser, page_url, tmp_path):
    d = browser
    d.get(page_url)
    variant = variants_loaded(d)
    # An empty page: no broken result image, nothing to download, no colour-hint input for guided.
    assert showing_no_result(d)
    assert not d.find_element("id", "color-hint-label").is_displayed()

    d.find_element("id", "sketch-file").send_keys(str(SKETCH))
    first = result_after(d, None)
    click_at(d, d.find_element("id", "sketch"), *RED[1])
    assert len(d.find_elements("css selector", ".hint")) == 1

    # A new sketch: the last one's hints are gone, and its colouring is replaced.
    other = tmp_path / "other.png"
    Image.open(SKETCH).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    d.find_element("id", "sketch-file").send_keys(str(other))
    assert d.find_elements("css selector", ".hint") == [] and d.find_element("id", "hint-count").text == "no hints"
    flipped = settled_result(d)
    assert flipped.shape == first.shape and not np.array_equal(flipped, first)

    # A refusal takes the old result off the screen and out of Download.
    bad = tmp_path / "notes.webp"
    bad.write_bytes(b"RIFF....WEBPnot really")
    d.find_element("id", "sketch-file").send_keys(str(bad))
    wait(d, lambda d: d.find_element("id", "message").get_attribute("class") == "error", 30, "an error message")
    assert showing_no_result(d)

    # A variant that colours from a rough colour image says so, without an error, until one is chosen.
    d.find_element("id", "sketch-file").send_keys(str(SKETCH))
    result_after(d, None)
    variant.select_by_value("pix2pix_blur")
    wait(d, lambda d: "rough colour image" in d.find_element("id", "message").text, 10, "the colour-image note")
    time.sleep(0.6)  # past the debounce: no request went out to be refused
    message = d.find_element("id", "message")
    assert message.get_attribute("class") != "error", message.text
    assert d.find_element("id", "color-hint-label").is_displayed() and showing_no_result(d)


def test_make_run_serves_the_page_beside_the_gateway_and_stops_it_on_sigterm(tmp_path):
    """`python -m service.stack` (what `make run` does), on free ports: the page answers with the
    variants Triton serves, and SIGTERM takes everything down."""
    web_port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "service.stack",
        "--triton-http-port",
        str(free_port()),
        "--triton-grpc-port",
        str(free_port()),
        "--triton-metrics-port",
        str(free_port()),
        "--triton-log",
        str(tmp_path / "triton.log"),
        "--port",
        str(free_port()),
        "--metrics-port",
        "0",
        "--web-port",
        str(web_port),
    ]
    log = open(tmp_path / "stack.log", "wb")
    stack = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, variants = time.monotonic() + 240, None
        while variants is None:
            assert stack.poll() is None and time.monotonic() < deadline, (tmp_path / "stack.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/variants", timeout=5) as r:
                    answer = json.loads(r.read())
                    variants = answer if all(v.get("ready") for v in answer["variants"]) else None
            except OSError:
                pass
            time.sleep(0.5)
        assert {v["name"] for v in variants["variants"]} >= {"guided", "pix2pix", "unet_l1"}
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=5) as r:
            assert b"sketch2color" in r.read()
    finally:
        assert stop_process(stack, timeout=60) == 0, (tmp_path / "stack.log").read_text()[-3000:]
    with pytest.raises(OSError):  # the page went with it
        urllib.request.urlopen(f"http://127.0.0.1:{web_port}/", timeout=2)
