"""End to end in a real headless Chromium (Debian's ``chromium``, driven by Playwright through its executable path):
load the page, upload images, explain with two methods, change the class, run an analysis, download; draw a box
on the image for an analysis that takes boxes.

Screenshots go to ``out/test-artifacts/app/``. Without Chromium or Playwright the test skips with the reason;
where ``XVIT_REQUIRE_BROWSER=1`` (CI) it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.conftest import noise_image, png, running_server

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts" / "app"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _unavailable(reason: str) -> None:
    if os.environ.get("XVIT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"XVIT_REQUIRE_BROWSER=1 but {reason}")
    print(f"skipping the browser tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server() as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright; no 'playwright install' needed)")
    with sync_playwright() as p:  # the page's content security policy stays on: no eval in these tests
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900}, accept_downloads=True)
        yield context
        context.close()


def test_upload_explain_change_class_analyse_download(server, browser, tmp_path):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    page.wait_for_selector("[data-sample]")
    assert page.locator("#methods input[type=checkbox]").count() >= 14
    assert page.locator("#model option").count() >= 2

    files = []
    for seed in (1, 2):
        path = tmp_path / f"upload_{seed}.png"
        path.write_bytes(png(noise_image(64, 48, seed=seed)))
        files.append(str(path))
    page.set_input_files("#file-input", files)
    expect(page.locator("#gallery [data-image]")).to_have_count(2)
    page.wait_for_selector("#top5 li button.active", timeout=60_000)

    checked = page.locator("#methods input[data-method]:checked")
    while checked.count():
        checked.first.uncheck()
    page.check("input[data-method=gradcam]")
    page.check("input[data-method=input_x_gradient]")
    page.click("#explain")
    page.wait_for_selector(".card[data-method=input_x_gradient]", timeout=60_000)
    assert page.locator(".card").count() == 2
    first_class = page.locator("#top5 li button.active").get_attribute("data-class")
    stack = page.locator(".card[data-method=gradcam] .stack")
    stack.hover()
    assert page.locator(".card[data-method=gradcam] .value").inner_text().startswith("value ")
    page.fill("#opacity", "0.8")
    page.dispatch_event("#opacity", "input")
    assert page.locator(".card .heat").first.evaluate("e => e.style.opacity") == "0.8"
    page.screenshot(path=str(ARTIFACTS / "explain.png"), full_page=True)

    second = page.locator("#top5 li button").nth(1)
    new_class = second.get_attribute("data-class")
    assert new_class != first_class
    second.click()
    for sub in page.locator(".card .card-sub").all():
        expect(sub).to_have_text(re.compile(f"^class {new_class}:"), timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "changed-class.png"), full_page=True)

    with page.expect_download() as png_download:
        page.click(".card[data-method=gradcam] a[data-overlay]")
    saved = tmp_path / "overlay.png"
    png_download.value.save_as(saved)
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with page.expect_download() as json_download:
        page.click("#download-json")
    json_download.value.save_as(tmp_path / "result.json")
    result = json.loads((tmp_path / "result.json").read_text())
    assert set(result["methods"]) == {"gradcam", "input_x_gradient"}
    assert result["images"][0]["methods"]["gradcam"]["target"]["index"] == int(new_class)

    page.click("#run-analysis")
    page.wait_for_selector("#analysis-result img[data-figure]", timeout=60_000)
    assert page.locator("#analysis-result img").evaluate("e => e.naturalWidth") > 0
    page.screenshot(path=str(ARTIFACTS / "analysis.png"), full_page=True)
    assert errors == []


def test_draw_a_box_on_the_image_for_guide(server, browser, tmp_path):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server)
    path = tmp_path / "boxes.png"
    path.write_bytes(png(noise_image(64, 48, seed=3)))
    page.set_input_files("#file-input", [str(path)])
    # The prediction is shown: the layout above the panel is final.
    page.wait_for_selector("#top5 li button.active", timeout=60_000)
    page.select_option("#analysis", "guide")
    canvas = page.locator("#analysis-params [data-boxes] canvas")
    expect(canvas).to_be_visible()
    page.wait_for_function("document.querySelector('[data-boxes] img').naturalWidth > 0")
    page.wait_for_load_state("networkidle")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 0.1 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.9 * box["height"], steps=5)
    page.mouse.up()
    expect(page.locator("[data-boxes] li")).to_have_count(1)
    page.click("#run-analysis")
    page.wait_for_selector("#analysis-result img[data-figure=guide]", timeout=60_000)
    assert page.locator("#analysis-result img").evaluate("e => e.naturalWidth") > 0
    sent = json.loads(page.locator("#analysis-result tr", has_text="param boxes").locator("td").nth(1).inner_text())
    assert len(sent) == 1 and sent[0] == pytest.approx([0.1, 0.2, 0.6, 0.9], abs=0.02)
    page.screenshot(path=str(ARTIFACTS / "guide-boxes.png"), full_page=True)
    assert errors == []
