"""The Space in a real browser: Debian's chromium driven by Playwright picks k, presses Run, and sees the images.

Also what only a browser shows: the page opens already rendered, strip frames keep at least their pixel size, no
toolbar sits on the strip or the overview, a bad click gives one message, a failed Load says so in the info line,
picking a shipped model in the picker loads and renders it, and a slow generator's capped frames are said so.

Never downloads a browser: it uses /usr/bin/chromium, and fails (not skips) when that is missing.
"""
import contextlib
import io
import os

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

import app
from pdetraversal import plots
from pdetraversal.hub import read_config
from pdetraversal.space import handlers
from pdetraversal.space.frames import STRIP_MIN_SIZE
from pdetraversal.space.models import ModelCache, shipped_models
from pdetraversal.space.public import SHIPPED_POTENTIALS
from test_app import free_port, make_potentials, make_slow_potentials

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LOADED = "sel => { const i = document.querySelector(sel); return !!i && i.complete && i.naturalWidth > 0 }"
# Loaded, and no longer showing the picture at `old` (an output keeps its previous image until the new one comes).
REPLACED = ("([sel, old]) => { const i = document.querySelector(sel); "
            "return !!i && i.complete && i.naturalWidth > 0 && i.src !== old }")
BOX = "e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom] }"


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def visible_buttons_over(page, selector: str) -> list[str]:
    """Titles of the page's visible buttons whose box overlaps the image at `selector`."""
    image = page.eval_on_selector(selector, BOX)
    found = []
    for button in page.locator("button.icon-button, a.download-link").all():
        if button.is_visible() and overlaps(button.evaluate(BOX), image):
            found.append(button.get_attribute("title") or button.inner_text())
    return found


def displayed_frame_width(page, selector: str, frames: int, tile: int, gap: int = 4) -> float:
    """CSS px a strip frame takes on the page: the image's rendered width times a frame's share of its pixels."""
    natural, shown = page.eval_on_selector(selector, "i => [i.naturalWidth, i.getBoundingClientRect().width]")
    assert natural == frames * tile + (frames - 1) * gap
    return shown * tile / natural


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1800):
    """A page of Debian's headless chromium, driven by Playwright (no browser is ever downloaded)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (never download a browser)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = make_potentials(tmp_path_factory.mktemp("browser"), 3)
    demo = app.build_demo(folder, allow_local_paths=True)  # a tmp folder: served as for local use
    app.launch(demo.queue(), server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url, folder
    finally:
        demo.close()


def test_pick_k_run_and_see_every_picture(served, tmp_path):
    url, folder = served
    with chromium_page() as page:
        page.goto(url)
        run = page.get_by_role("button", name="Run")
        run.wait_for(timeout=60_000)
        # The page opens rendered for its opening controls (seed 0, k 0, the potentials' 10 steps, step 1).
        opened = {}
        for element in ("strip", "gif", "landscape", "trajectory", "overview"):
            page.wait_for_function(LOADED, arg=f"#{element} img", timeout=60_000)
            opened[element] = page.eval_on_selector(f"#{element} img", "i => i.src")
        shown = Image.open(io.BytesIO(page.request.get(opened["strip"]).body()))
        expected = handlers.traverse(ModelCache(allow_local=True), 0, 0, 10, 1.0, folder, "")[0]
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(expected))
        tile = 8 * plots.upscale_factor(8, 8, STRIP_MIN_SIZE)
        assert tile == 64
        # Frames at no less than their pixel size: the 21-frame strip is wider than the column and scrolls.
        assert displayed_frame_width(page, "#strip img", 21, tile) >= 64
        column = page.eval_on_selector("#strip", "e => e.getBoundingClientRect().width")
        assert column < 21 * tile + 20 * 4
        assert page.eval_on_selector("#strip .image-container", "e => e.scrollWidth > e.clientWidth")
        # No toolbar on the strip's last frame or the overview's top-right cell.
        page.eval_on_selector("#strip .image-container", "e => { e.scrollLeft = e.scrollWidth }")
        page.hover("#strip img")
        assert visible_buttons_over(page, "#strip img") == []
        page.hover("#overview img")
        assert visible_buttons_over(page, "#overview img") == []

        k = page.get_by_label("Potential k")
        k.click()
        page.get_by_role("option", name="2: factor 2").click()
        assert k.input_value() == "2: factor 2"
        steps = page.get_by_label("number input for Steps each way")  # the slider's number box
        steps.fill("3")
        steps.press("Tab")
        run.click()

        for element in ("strip", "gif", "landscape", "trajectory", "overview"):
            page.wait_for_function(REPLACED, arg=[f"#{element} img", opened[element]], timeout=60_000)
        size = lambda sel: page.eval_on_selector(sel, "i => [i.naturalWidth, i.naturalHeight, i.src]")  # noqa: E731
        width, height, src = size("#strip img")
        assert (width, height) == (7 * tile + 6 * 4, tile)  # 2·3 + 1 frames: the steps box was used
        assert displayed_frame_width(page, "#strip img", 7, tile) >= 64
        # The page shows exactly what the handler computes for k = 2, 3 steps, seed 0, step size 1.
        shown = Image.open(io.BytesIO(page.request.get(src).body()))
        expected = handlers.traverse(ModelCache(allow_local=True), 0, 2, 3, 1.0, folder, "")[0]
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(expected))
        assert size("#gif img")[2].endswith(".gif")
        assert size("#landscape img")[0] > 300 and size("#trajectory img")[0] > 300
        assert size("#overview img")[1] == 3 * 64 + 2 * 4  # K = 3 rows
        assert page.get_by_text("Error").count() == 0
        page.screenshot(path=tmp_path / "space.png", full_page=True)  # look at it when the layout changes
        assert (tmp_path / "space.png").stat().st_size > 10_000


def test_compare_methods_shows_strips_shapes_and_table(served):
    url, folder = served
    with chromium_page() as page:
        page.goto(url)
        compare = page.get_by_role("button", name="Compare", exact=True)
        compare.wait_for(timeout=60_000)
        compare.click()
        for element in ("compare-strips", "compare-shape"):
            page.wait_for_function(LOADED, arg=f"#{element} img", timeout=60_000)
        table = page.locator("#compare-table table")
        table.wait_for(timeout=60_000)
        expect(table).to_contain_text("axes")
        expect(table).to_contain_text("potentials (loaded)")
        width, height = page.eval_on_selector("#compare-strips img", "i => [i.naturalWidth, i.naturalHeight]")
        tile = 8 * plots.upscale_factor(8, 8, STRIP_MIN_SIZE)
        # The fixture's generator has no shipped baselines: the potentials and the floors sefa, axes, random.
        assert height == 4 * tile + 3 * 4 and width > (2 * 10 + 1) * tile
        assert page.eval_on_selector("#compare-shape img", "i => i.naturalWidth") > 300
        assert page.get_by_text("Error").count() == 0


def test_a_bad_click_gives_one_message_and_a_failed_load_clears_the_info(served):
    url, folder = served
    with chromium_page() as page:
        page.goto(url)
        page.wait_for_function(LOADED, arg="#strip img", timeout=60_000)
        expect(page.locator("#info")).to_contain_text("K = 3 potentials")
        source = page.get_by_label("Potentials: Hub repo id or folder")
        source.fill("/no/such/folder")
        page.get_by_role("button", name="Run").click()
        messages = page.locator('[data-testid="toast-text"]')
        expect(messages.first).to_contain_text("is neither an existing folder nor a valid Hub repo id",
                                               timeout=60_000)
        page.wait_for_timeout(2_000)  # time for a second message, were one coming
        assert messages.count() == 1  # Run checks once; strip and overview are not even started
        page.locator('[data-testid="toast-close"]').first.click()
        expect(messages).to_have_count(0)

        page.get_by_role("button", name="Load", exact=True).click()
        info = page.locator("#info")
        expect(info).to_contain_text("Not loaded: Could not load potentials from '/no/such/folder': "
                                     "'/no/such/folder' is neither an existing folder nor a valid Hub repo id",
                                     timeout=60_000)
        expect(info).not_to_contain_text("K = 3 potentials")  # the previous model's line is gone


def test_shipped_default_page_starts_from_an_encoded_sprite(tmp_path):
    # The API's default start is the prior; the page itself switches to encoded sprites when the generator can.
    demo = app.build_demo(SHIPPED_POTENTIALS, allow_local_paths=False)  # as the Space serves it
    app.launch(demo.queue(), server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with chromium_page() as page:
            page.goto(demo.local_url)
            expect(page.get_by_label("a training image, encoded")).to_be_checked(timeout=60_000)
            # Opened rendered, without a click, from the encoded sprite.
            page.wait_for_function(LOADED, arg="#strip img", timeout=60_000)
            src = page.eval_on_selector("#strip img", "i => i.src")
            shown = Image.open(io.BytesIO(page.request.get(src).body()))
            expected = handlers.traverse(ModelCache(), 0, 0, 10, 1.0, SHIPPED_POTENTIALS, "", "data")[0]
            assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(expected))
            # dSprites' 64-px frames are shown at 64 CSS px, not shrunk to the column (about 56 px before).
            assert displayed_frame_width(page, "#strip img", 21, 64) >= 64
    finally:
        demo.close()


def test_pick_another_shipped_model_and_see_its_strip(served):
    url, folder = served
    # The shipped model with the fewest potentials (the quickest to load); the page's default is a tmp folder.
    label, source = min(shipped_models(), key=lambda model: read_config(model[1])["num_potentials"])
    models = ModelCache(allow_local=True)
    loaded = models.get(source)
    # The page keeps its controls (seed 0, 10 steps, step 1), resets k to 0 and starts where the model can.
    expected = handlers.traverse(models, 0, 0, 10, 1.0, source, "", loaded.start)[0]
    with chromium_page() as page:
        page.goto(url)
        page.wait_for_function(LOADED, arg="#strip img", timeout=60_000)
        opened = page.eval_on_selector("#strip img", "i => i.src")
        picker = page.get_by_label("Model (shipped potentials)")
        expect(picker).to_have_value(f"{folder} (K=3)")  # the default, listed under its own name
        picker.click()
        page.get_by_role("option", name=label, exact=True).click()
        page.wait_for_function(REPLACED, arg=["#strip img", opened], timeout=120_000)
        expect(picker).to_have_value(label)
        expect(page.get_by_label("Potentials: Hub repo id or folder")).to_have_value(source)
        expect(page.locator("#info")).to_contain_text(f"K = {loaded.flow.num_potentials} potentials")
        src = page.eval_on_selector("#strip img", "i => i.src")
        shown = Image.open(io.BytesIO(page.request.get(src).body()))
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(expected))
        assert page.get_by_text("Error").count() == 0
        assert page.locator("#frames-note").inner_text().strip() == ""  # a VAE decodes well within the budget


def test_a_slow_generator_says_its_frames_were_capped(served, tmp_path, monkeypatch):
    url, _ = served
    slow = make_slow_potentials(tmp_path)
    # At load: every strip keeps only z0 and both ends.
    monkeypatch.setattr("pdetraversal.space.frames.DECODE_BUDGET_S", 0.0)
    with chromium_page() as page:
        page.goto(url)
        page.wait_for_function(LOADED, arg="#strip img", timeout=60_000)
        opened = page.eval_on_selector("#strip img", "i => i.src")
        page.get_by_label("Potentials: Hub repo id or folder").fill(slow)
        page.get_by_role("button", name="Load", exact=True).click()
        expect(page.locator("#info")).to_contain_text("Slow generator", timeout=60_000)
        expect(page.get_by_label("Model (shipped potentials)")).to_have_value("")  # not one of the picker's
        steps = page.get_by_label("number input for Steps each way")
        steps.fill("4")
        steps.press("Tab")
        page.get_by_role("button", name="Run").click()
        page.wait_for_function(REPLACED, arg=["#strip img", opened], timeout=120_000)
        note = page.locator("#frames-note")
        expect(note).to_contain_text("Frames capped", timeout=60_000)
        expect(note).to_contain_text("Of the traversal's 9 frames the strip shows 3 and each overview row 3")
        tile = 8 * plots.upscale_factor(8, 8, STRIP_MIN_SIZE)
        assert page.eval_on_selector("#strip img", "i => i.naturalWidth") == 3 * tile + 2 * 4
        assert page.get_by_text("Error").count() == 0
