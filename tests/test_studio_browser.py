"""minicnn studio in a real browser (headless Chromium driven by Playwright): draw a digit with
mouse strokes, switch the explained class, start a training run.

Needs Playwright (the dev extra) and a Chromium (Debian's ``chromium`` package; ``.ci/run``
installs it). Without them the tests skip with the reason; in CI they fail instead.
Screenshots go to ``$MINICNN_SCREENSHOTS`` when set (the README's picture comes from there).
"""

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from helpers import require

from minicnn.recipes import train_classifier
from minicnn.studio import build_app, make_server


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    message = "no Chromium found (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run the browser tests (see .ci/run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    out = tmp_path_factory.mktemp("studio-model")
    train_classifier("mnist", recipe="mnist-fast", out=out, limit=20000, verbose=0)
    server = make_server(build_app(out / "model.safetensors", verbose=0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    yield f"http://{host}:{port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    playwright_api = require("playwright.sync_api")
    executable = chromium_path()
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, studio_url):
    # bypass_csp: the page forbids eval, which Playwright's wait_for_function uses
    page = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(studio_url)
    page.wait_for_selector("#prediction .bar")  # the first test image is analyzed on load
    yield page
    assert not errors, errors
    page.close()


def screenshot(page, name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    page.screenshot(path=path)
    folder = os.environ.get("MINICNN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / name)


def analyses(page) -> int:
    return int(page.locator("body").get_attribute("data-analyzed") or 0)


def draw(page, strokes) -> None:
    """Mouse strokes on the drawing canvas; points in [0, 1] of its width and height."""
    box = page.locator("#draw-canvas").bounding_box()
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=4)
        page.mouse.up()


def wait_for_new_analysis(page, before: int) -> None:
    page.wait_for_function(f"Number(document.body.dataset.analyzed || 0) > {before} && "
                           "!document.querySelector('#prediction').dataset.busy", timeout=20000)
    page.wait_for_timeout(300)  # a last update may still be on its way after the mouse-up


@pytest.mark.parametrize("digit, strokes", [
    ("1", [[(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)]]),
    ("7", [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]]),
    ("0", [[(0.5, 0.15), (0.75, 0.3), (0.78, 0.6), (0.5, 0.85), (0.25, 0.65), (0.22, 0.35),
            (0.5, 0.15)]]),
])
def test_drawing_a_digit_predicts_it_and_renders_both_passes(page, digit, strokes, tmp_path):
    before = analyses(page)
    draw(page, strokes)
    wait_for_new_analysis(page, before)
    assert page.locator("#prediction").get_attribute("data-predicted") == digit
    panels = page.locator(".layer-panel")
    assert panels.count() >= 10
    for i in range(panels.count()):
        panel = panels.nth(i)
        assert panel.locator(".forward canvas").count() >= 1
        assert panel.locator(".backward canvas").count() >= 1
        assert panel.locator(".formula").inner_text().startswith("forward:")
    assert "dW2 = dout @ cols.T" in panels.nth(0).locator(".formula").inner_text()
    screenshot(page, f"studio_drawn_{digit}.png", tmp_path)


def canvas_pixels(page, selector: str) -> str:
    return page.evaluate("""(selector) => Array.from(document.querySelectorAll(selector))
                                             .map((c) => c.toDataURL()).join('|')""", selector)


def test_choosing_another_class_changes_the_backward_maps(page):
    selector = ".layer-panel[data-layer='2'] .backward canvas"
    first = canvas_pixels(page, selector)
    forward = canvas_pixels(page, ".layer-panel[data-layer='2'] .forward canvas")
    before = analyses(page)
    page.select_option("#target-class", "3")
    wait_for_new_analysis(page, before)
    assert canvas_pixels(page, selector) != first
    assert canvas_pixels(page, ".layer-panel[data-layer='2'] .forward canvas") == forward
    assert "y[3]" in page.locator("#target-text").inner_text()
    before = analyses(page)
    page.locator("#prediction .bar[data-class='5']").click()  # a bar picks the class too
    wait_for_new_analysis(page, before)
    assert "y[5]" in page.locator("#target-text").inner_text()


def check_result(page, click) -> tuple[float, bool]:
    page.evaluate("() => { delete document.querySelector('#check-result').dataset.relativeError; }")
    click()
    page.wait_for_function("document.querySelector('#check-result').dataset.relativeError")
    box = page.locator("#check-result")
    return float(box.get_attribute("data-relative-error")), box.get_attribute("data-kink") == "true"


def test_check_it_yourself_agrees_or_names_the_kink(page):
    # a weight of the first layer: smooth (a flat background shifts equally, ties stay ties)
    error, kink = check_result(page, lambda: page.locator("#first-weight-gradient canvas").nth(2)
                               .click(position={"x": 20, "y": 20}))
    assert error < 1e-6 and not kink
    assert "numerical" in page.locator("#check-result").inner_text()
    # a pixel: where the analytic and the numerical slope differ, the page says it is a kink
    error, kink = check_result(page, lambda: page.locator("#input-gradient-canvas")
                               .click(position={"x": 56, "y": 56}))
    assert error < 1e-6 or (kink and "A kink here" in page.locator("#check-result").inner_text())


# The first answer of /api/training that holds records arrives 1.5 s late, as from a server
# busy training, and every drawing of the loss curve is recorded: a page that asked again
# before that answer came would draw it, an older curve, over newer ones.
LATE_ANSWER = """
window.drawings = [];
const realFetch = window.fetch;
let delayed = false;
window.fetch = async (...args) => {
  const reply = await realFetch(...args);
  if (!delayed && String(args[0]).includes("/api/training")) {
    const state = await reply.clone().json();
    if (state.records && state.records.length) {
      delayed = true;
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
  }
  return reply;
};
document.addEventListener("DOMContentLoaded", () => {
  const curve = document.getElementById("loss-curve");
  new MutationObserver(() => window.drawings.push([Number(curve.dataset.points), curve.toDataURL()]))
    .observe(curve, { attributes: true, attributeFilter: ["data-points"] });
});
"""


def test_a_training_run_updates_the_curves_in_order(page, tmp_path):
    page.add_init_script(LATE_ANSWER)
    # 600 steps instead of the button's 200: a run long enough to be drawn several times
    page.route("**/api/train", lambda route: route.continue_(post_data=json.dumps({"steps": 600})))
    page.reload()
    page.wait_for_selector("#prediction .bar")
    page.locator("#train-button").click()
    page.wait_for_function("document.querySelector('#training-status').textContent"
                           ".includes('(done)')", timeout=180000)
    drawings = page.evaluate("window.drawings")
    points = [count for count, _ in drawings]
    records = page.evaluate("fetch('/api/training').then((r) => r.json())")["records"]
    assert points == sorted(points), f"the loss curve went back in time: {points}"
    assert points[-1] == len(records) > 10
    # drawn while the run went on, a new picture for every new state
    pictures = {count: picture for count, picture in drawings if count}
    assert len(pictures) >= 3, f"the curve was drawn only at {points} points"
    assert len(set(pictures.values())) == len(pictures)
    assert page.locator("#training-filters canvas").count() == 8
    assert page.locator("#train-button").is_enabled()
    page.locator("#training-card").scroll_into_view_if_needed()
    screenshot(page, "studio_training.png", tmp_path)
