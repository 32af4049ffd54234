"""minicnn studio in a real browser (headless Chromium driven by Playwright): draw a digit with
mouse strokes, switch the explained class, start a training run.

Needs Playwright (the dev extra) and a Chromium (Debian's ``chromium`` package; ``.ci/run``
installs it). Without them the tests skip with the reason; in CI they fail instead.
Screenshots go to ``$MINICNN_SCREENSHOTS`` when set (the README's picture comes from there).
"""

import json
import os
import shutil
import sys
import threading
import traceback
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
    yield server.url  # with the token the page's API needs
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


def open_page(browser, url, width=1280, height=800):
    # bypass_csp: the page forbids eval, which Playwright's wait_for_function uses
    page = browser.new_page(viewport={"width": width, "height": height}, bypass_csp=True)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("#prediction .bar")  # the first test image is analyzed on load
    return page


@pytest.fixture
def page(browser, studio_url):
    page = open_page(browser, studio_url)
    yield page
    assert not page.errors, page.errors
    page.close()


def screenshot(page, name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    page.screenshot(path=path)
    keep(path, name)


def keep(path: Path, name: str) -> None:
    folder = os.environ.get("MINICNN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / name)


def analyses(page) -> int:
    return int(page.locator("body").get_attribute("data-analyzed") or 0)


def draw(page, strokes, pause_ms: int = 0, steps: int = 4) -> None:
    """Mouse strokes on the drawing canvas; points in [0, 1] of its width and height. With
    ``pause_ms``, one mouse event every that many milliseconds, like a hand (60 Hz: 16)."""
    box = page.locator("#draw-canvas").bounding_box()
    at = lambda x, y: (box["x"] + x * box["width"], box["y"] + y * box["height"])  # noqa: E731
    for stroke in strokes:
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for (x0, y0), (x1, y1) in zip(stroke, stroke[1:]):
            for k in range(1, steps + 1):
                page.mouse.move(*at(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps))
                if pause_ms:
                    page.wait_for_timeout(pause_ms)
        page.mouse.up()


def wait_for_new_analysis(page, before: int) -> None:
    page.wait_for_function(f"Number(document.body.dataset.analyzed || 0) > {before} && "
                           "!document.querySelector('#prediction').dataset.busy", timeout=20000)
    page.wait_for_timeout(300)  # a last update may still be on its way after the mouse-up


SEVEN = [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]]


@pytest.mark.parametrize("digit, strokes", [
    ("1", [[(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)]]),
    ("7", SEVEN),
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
        panel.scroll_into_view_if_needed()  # panels out of view are painted when they come in
        page.wait_for_function("(i) => document.querySelectorAll('.layer-panel')[i]"
                               ".querySelector('canvas.backward').width > 0", arg=i)
        assert panel.locator("canvas.forward").count() == 1  # one atlas per pass
        assert panel.locator("canvas.backward").count() == 1
        assert panel.locator(".formula").inner_text().startswith("forward:")
    assert "dW2 = dout @ cols.T" in panels.nth(0).locator(".formula").inner_text()
    # a vector is drawn as bars or a grid a person can read: the logits labelled by class
    logits = panels.nth(panels.count() - 1).locator("canvas.forward")
    assert logits.evaluate("(c) => c.height") >= 100
    assert logits.get_attribute("title").splitlines()[int(digit)].startswith(f"{digit}: ")
    flatten = page.locator(".layer-panel", has_text="Flatten()").locator("canvas.forward")
    assert flatten.evaluate("(c) => c.height") >= 40
    page.locator(".layer-panel").first.scroll_into_view_if_needed()
    screenshot(page, f"studio_drawn_{digit}.png", tmp_path)


@pytest.mark.parametrize("width, height", [(1280, 800), (1920, 1080)])
def test_the_answer_is_in_view_while_drawing(browser, studio_url, width, height, tmp_path):
    """Stroke to prediction, measured in the page (performance.now() at the pointer event,
    again when the prediction and then the frame with the visible maps are drawn), for a 7
    drawn at 60 mouse events a second. Reported, not asserted: wall time is the machine's."""
    page = open_page(browser, studio_url, width, height)
    page.evaluate("() => { window.studioLatency = {prediction: [], frame: [], server: []}; }")
    draw(page, SEVEN, pause_ms=16, steps=20)
    wait_for_new_analysis(page, 0)
    latency = page.evaluate("window.studioLatency")
    assert len(latency["prediction"]) >= 5, "the prediction did not follow the drawing"
    assert page.locator("#prediction").get_attribute("data-predicted") == "7"
    prediction = page.locator("#prediction-card").bounding_box()
    drawing = page.locator("#draw-canvas").bounding_box()
    assert drawing["y"] >= 0 and prediction["y"] + prediction["height"] <= height
    page.mouse.wheel(0, 2000)  # the layers scroll by, the answer stays
    page.wait_for_timeout(300)
    assert page.locator("#prediction-card").bounding_box()["y"] + prediction["height"] <= height
    page.mouse.wheel(0, -4000)
    page.wait_for_timeout(300)
    screenshot(page, f"studio_{width}x{height}.png", tmp_path)
    report = tmp_path / f"studio_latency_{width}x{height}.json"
    report.write_text(json.dumps(latency))
    keep(report, report.name)
    print(f"{width}x{height}: stroke to prediction (ms), sorted:",
          sorted(round(v, 1) for v in latency["prediction"]))
    assert not page.errors, page.errors
    page.close()


BLANK = """(c) => c.getContext('2d').getImageData(0, 0, c.width, c.height).data
                  .every((v, i) => i % 4 === 3 ? true : v === 0)"""


def test_clear_clears_the_drawing_and_everything_computed_from_it(page):
    before = analyses(page)
    draw(page, SEVEN)
    wait_for_new_analysis(page, before)
    panels = page.locator(".layer-panel").count()
    page.locator(".layer-panel[data-layer='8']").scroll_into_view_if_needed()
    page.wait_for_timeout(200)
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 300
    page.locator("#clear-button").click()
    assert page.locator("#prediction .bar").count() == 0
    assert page.locator("#prediction").get_attribute("data-predicted") is None
    assert page.locator("#check-result").inner_text() == "nothing checked yet"
    # the panels stay where they were, blank: the page is not sent back to the top
    assert page.locator(".layer-panel").count() == panels
    assert page.evaluate("window.scrollY") == scrolled
    for i in range(panels):
        for canvas in page.locator(f".layer-panel[data-layer='{i}'] canvas").all():
            assert canvas.evaluate(BLANK), i
    blank = f"(id) => ({BLANK})(document.getElementById(id))"
    for canvas in ("input-canvas", "input-gradient-canvas", "gradient-input-canvas",
                   "gradcam-canvas"):
        assert page.evaluate(blank, canvas), canvas
    assert page.evaluate(blank, "draw-canvas")  # black
    page.wait_for_timeout(500)  # no answer still on its way comes back to fill the page
    assert page.locator("#prediction .bar").count() == 0
    before = analyses(page)
    draw(page, SEVEN)  # and drawing again starts afresh
    wait_for_new_analysis(page, before)
    assert page.locator("#prediction").get_attribute("data-predicted") == "7"


def test_a_click_checks_the_pixel_under_the_pointer(page):
    page.route("**/api/check", lambda route: route.abort())  # the index sent is what counts
    canvas = page.locator("#input-canvas")
    box = canvas.bounding_box()
    border = canvas.evaluate("(c) => c.clientLeft")
    inner = canvas.evaluate("(c) => c.clientWidth")  # the drawing area, border excluded
    assert border >= 1 and inner == 112
    cell = inner / 28
    points = [(row, col, (row + 0.5) * cell, (col + 0.5) * cell)
              for row in range(28) for col in range(28)]
    # the edges of a few pixels, a hair inside them
    points += [(r, c, r * cell + dy, c * cell + dx) for r, c in ((0, 0), (13, 14), (27, 27))
               for dy in (0.25, cell - 0.25) for dx in (0.25, cell - 0.25)]
    wrong = []
    for row, col, y, x in points:
        page.mouse.click(box["x"] + border + x, box["y"] + border + y)
        got = page.locator("#check-result").get_attribute("data-index")
        if got != f"0,{row},{col}":
            wrong.append(((row, col), got))
    assert not wrong, wrong[:10]


def test_choosing_another_class_changes_the_backward_maps(page):
    page.locator(".layer-panel[data-layer='2']").scroll_into_view_if_needed()  # painted in view
    page.wait_for_timeout(100)
    first = canvas_pixels(page, ".layer-panel[data-layer='2'] canvas.backward")
    forward = canvas_pixels(page, ".layer-panel[data-layer='2'] canvas.forward")
    before = analyses(page)
    page.select_option("#target-class", "3")
    wait_for_new_analysis(page, before)
    assert canvas_pixels(page, ".layer-panel[data-layer='2'] canvas.backward") != first
    assert canvas_pixels(page, ".layer-panel[data-layer='2'] canvas.forward") == forward
    assert "S_3" in page.locator("#target-text").inner_text()
    assert "dS_3/dy" in page.locator(".layer-panel[data-layer='2'] .backward-label").inner_text()
    before = analyses(page)
    page.locator("#prediction .bar[data-class='5']").click()  # a bar picks the class too
    wait_for_new_analysis(page, before)
    assert "S_5" in page.locator("#target-text").inner_text()
    before = analyses(page)
    page.locator("input[name=target][value=loss]").check()
    wait_for_new_analysis(page, before)
    assert "dL/dy" in page.locator(".layer-panel[data-layer='2'] .backward-label").inner_text()
    assert "dL/dW" in page.locator("#first-weight-gradient-caption").inner_text()


def canvas_pixels(page, selector: str) -> str:
    return page.evaluate("""(selector) => Array.from(document.querySelectorAll(selector))
                                             .map((c) => c.toDataURL()).join('|')""", selector)


def check_result(page, click) -> tuple[float, str]:
    page.evaluate("() => { delete document.querySelector('#check-result').dataset.relativeError; }")
    click()
    page.wait_for_function("document.querySelector('#check-result').dataset.relativeError")
    box = page.locator("#check-result")
    return float(box.get_attribute("data-relative-error")), box.get_attribute("data-verdict")


WORDS = {"smooth": "the network is smooth here", "kink": "backward pass at +h",
         "switch": "A switch that does not reach", "unresolved": "Nothing is claimed"}


def test_check_it_yourself_agrees_or_explains_the_kink(page):
    # a weight of the first layer (the atlas's third filter, pixel (1, 1))
    weights = page.locator("#first-weight-gradient")
    zoom = weights.evaluate("(c) => c.clientWidth / c.width")
    error, verdict = check_result(page, lambda: weights.click(
        position={"x": (2 * 4 + 1.5) * zoom, "y": 1.5 * zoom}))
    text = page.locator("#check-result").inner_text()
    assert "W[2, 0, 1, 1]" in text and WORDS[verdict] in text, text
    # every third pixel of a row of the input gradient: each says what holds there
    canvas = page.locator("#input-gradient-canvas")
    for col in range(0, 28, 3):
        error, verdict = check_result(page, lambda col=col: canvas.click(
            position={"x": col * 4 + 2, "y": 14 * 4 + 2}))
        text = page.locator("#check-result").inner_text()
        assert WORDS[verdict] in text, text
        assert verdict != "smooth" or error < 1e-4, text


def test_the_check_s_answer_comes_into_view_and_what_never_changes_is_not_repainted(browser,
                                                                                   studio_url):
    """At 1280x900 the answer to a click lies below the fold of the sticky left column: it is
    brought into view. The first layer's weights do not depend on the drawing: painted once."""
    page = open_page(browser, studio_url, 1280, 900)
    page.evaluate("""() => { const c = document.getElementById('first-weights').getContext('2d');
                             window.weightPaints = 0;
                             const paint = c.putImageData.bind(c);
                             c.putImageData = (...a) => { window.weightPaints += 1;
                                                          return paint(...a); }; }""")
    before = analyses(page)
    draw(page, SEVEN)
    wait_for_new_analysis(page, before)
    before = analyses(page)
    page.select_option("#target-class", "3")
    wait_for_new_analysis(page, before)
    assert page.evaluate("window.weightPaints") == 0  # painted with the first image, kept since
    canvas = page.locator("#input-gradient-canvas")
    check_result(page, lambda: canvas.click(position={"x": 14 * 4 + 2, "y": 14 * 4 + 2}))
    page.wait_for_timeout(300)
    box = page.locator("#check-result").bounding_box()
    assert 0 <= box["y"] and box["y"] + min(box["height"], 200) <= 900, box
    assert page.locator("#input-gradient-canvas").bounding_box()["y"] >= 0  # the click's place
    assert not page.errors, page.errors
    page.close()


def test_an_exact_zero_reads_zero(page):
    """dS_c/dlogits is 1 at c and exactly 0 elsewhere; the tooltip says so."""
    before = analyses(page)
    page.select_option("#target-class", "3")
    wait_for_new_analysis(page, before)
    last = page.locator(".layer-panel").last
    last.scroll_into_view_if_needed()
    page.wait_for_function("() => { const p = document.querySelectorAll('.layer-panel');"
                           "return p[p.length - 1].querySelector('canvas.backward').title; }")
    lines = last.locator("canvas.backward").get_attribute("title").splitlines()
    assert lines[3] == "3: 1" and all(line.endswith(": 0") for i, line in enumerate(lines)
                                      if i != 3), lines


def test_the_kink_explanation_holds_on_every_pixel_of_a_digit_for_a_trained_model(studio_url):
    """The page's claims for a trained network, through the server (not a browser test: the
    page only words them): over all 784 pixels of a drawn 7, what the reply says holds for its
    own numbers (test_studio.assert_the_check_holds; more models and both convolution
    algorithms in test_studio.py). A trained MNIST network's flat background is full of
    max-pooling ties, so most pixels are kinks."""
    import http.client
    from urllib.parse import parse_qs, urlsplit

    from test_studio import assert_the_check_holds, drawn_seven

    url = urlsplit(studio_url)
    headers = {"X-Studio-Token": parse_qs(url.query)["token"][0]}
    verdicts = {"smooth": 0, "switch": 0, "kink": 0}
    for row in range(28):
        for col in range(28):
            connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
            connection.request("POST", "/api/check", json.dumps(
                {"drawing": drawn_seven(), "kind": "pixel", "index": [0, row, col]}), headers)
            r = json.loads(connection.getresponse().read())
            connection.close()
            assert_the_check_holds(r)
            verdicts[r["verdict"]] += 1
    assert verdicts["kink"] > 392, verdicts  # most of the image


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


def threads_now() -> str:
    """Where every thread of this process is (the studio's server and its training run are
    threads here), and who holds the BLAS turn: what tells a stuck run from a slow one."""
    from minicnn.kernels import cpu_runtime

    names = {thread.ident: thread.name for thread in threading.enumerate()}
    stacks = [f"--- {names.get(ident, ident)}\n" + "".join(traceback.format_stack(frame)[-6:])
              for ident, frame in sys._current_frames().items()]
    return f"BLAS turn {cpu_runtime._blas_turn!r}, threads:\n" + "\n".join(stacks)


def test_a_training_run_updates_the_curves_in_order(page, tmp_path):
    page.add_init_script(LATE_ANSWER)
    # the button's 200 steps, drawn every 400 ms: several drawings. On a busy 2-core machine
    # (the other test worker and the browser beside it) a run took over 180 s twice in CI. The
    # page's own request goes out as it is: a stuck run in CI (0 records, no training thread, an
    # empty status: the POST never reached the server) had it pass through a route that
    # rewrote it to the same {"steps": 200}
    page.reload()
    page.wait_for_selector("#prediction .bar")
    page.locator("#train-button").click()
    try:
        page.wait_for_function("document.querySelector('#training-status').textContent"
                               ".includes('(done)')", timeout=360000)
    except require("playwright.sync_api").TimeoutError:  # how far the run got: slow or stuck
        state = page.evaluate("api('/api/training')")
        pytest.fail(f"the run did not finish: {len(state['records'])} records, "
                    f"error {state.get('error')!r}, status "
                    f"{page.locator('#training-status').text_content()!r}; {threads_now()}")
    drawings = page.evaluate("window.drawings")
    points = [count for count, _ in drawings]
    records = page.evaluate("api('/api/training')")["records"]
    assert points == sorted(points), f"the loss curve went back in time: {points}"
    assert points[-1] == len(records) > 10
    # drawn while the run went on, a new picture for every new state
    pictures = {count: picture for count, picture in drawings if count}
    assert len(pictures) >= 3, f"the curve was drawn only at {points} points"
    assert len(set(pictures.values())) == len(pictures)
    assert page.locator("#training-filters").evaluate("(c) => c.atlas.channels") == 8
    legend = page.locator("#gradnorm-legend span")
    assert legend.count() >= 3 and "Conv2D" in legend.first.inner_text()
    ticks = page.evaluate("[0.01, 0.1, 1, 10, 0.5, 2e-5].map(tickLabel)")
    assert ticks == ["0.01", "0.1", "1", "10", "0.5", "2e-5"]
    assert page.locator("#train-button").is_enabled()
    page.locator("#training-card").scroll_into_view_if_needed()
    screenshot(page, "studio_training.png", tmp_path)
