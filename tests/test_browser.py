"""The Space in a real browser: Debian's chromium driven by Playwright picks k, presses Run, and sees the images.

Never downloads a browser: it uses /usr/bin/chromium, and fails (not skips) when that is missing.
"""
import io
import os

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

import app
from pdetraversal import plots
from test_app import free_port, make_potentials

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LOADED = "sel => { const i = document.querySelector(sel); return !!i && i.complete && i.naturalWidth > 0 }"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = make_potentials(tmp_path_factory.mktemp("browser"), 3)
    demo = app.build_demo(folder)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url, folder
    finally:
        demo.close()


def test_pick_k_run_and_see_every_picture(served, tmp_path):
    url, folder = served
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (never download a browser)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(url)
            run = page.get_by_role("button", name="Run")
            run.wait_for(timeout=60_000)
            assert page.locator("#strip img").count() == 0  # nothing is rendered before Run

            k = page.get_by_label("Potential k")
            k.click()
            page.get_by_role("option", name="2: factor 2").click()
            assert k.input_value() == "2: factor 2"
            steps = page.get_by_label("number input for Steps each way")  # the slider's number box
            steps.fill("3")
            steps.press("Tab")
            run.click()

            for element in ("strip", "gif", "landscape", "trajectory", "overview"):
                page.wait_for_function(LOADED, arg=f"#{element} img", timeout=60_000)
            size = lambda sel: page.eval_on_selector(sel, "i => [i.naturalWidth, i.naturalHeight, i.src]")  # noqa: E731
            width, height, src = size("#strip img")
            tile = 8 * plots.upscale_factor(8, 8, 128)
            assert (width, height) == (7 * tile + 6 * 4, tile)  # 2·3 + 1 frames: the steps box was used
            # The page shows exactly what the handler computes for k = 2, 3 steps, seed 0, step size 1.
            shown = Image.open(io.BytesIO(page.request.get(src).body()))
            expected = app.traverse(app.ModelCache(), 0, 2, 3, 1.0, folder, "")[0]
            assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(expected))
            assert size("#gif img")[2].endswith(".gif")
            assert size("#landscape img")[0] > 300 and size("#trajectory img")[0] > 300
            assert size("#overview img")[1] == 3 * 64 + 2 * 4  # K = 3 rows
            assert page.get_by_text("Error").count() == 0
            page.screenshot(path=tmp_path / "space.png", full_page=True)  # look at it when the layout changes
            assert (tmp_path / "space.png").stat().st_size > 10_000
        finally:
            browser.close()


def test_compare_methods_shows_strips_shapes_and_table(served):
    url, folder = served
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (never download a browser)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
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
            tile = 8 * plots.upscale_factor(8, 8, 128)
            # The fixture's generator has no shipped baselines: the potentials and the floors sefa, axes, random.
            assert height == 4 * tile + 3 * 4 and width > (2 * 10 + 1) * tile
            assert page.eval_on_selector("#compare-shape img", "i => i.naturalWidth") > 300
            assert page.get_by_text("Error").count() == 0
        finally:
            browser.close()


def test_shipped_default_page_starts_from_an_encoded_sprite(tmp_path):
    # The API's default start is the prior; the page itself switches to encoded sprites when the generator can.
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (never download a browser)")
    demo = app.build_demo(app.SHIPPED_POTENTIALS)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1800})
                page.goto(demo.local_url)
                expect(page.get_by_label("a training image, encoded")).to_be_checked(timeout=60_000)
                page.get_by_role("button", name="Run").click()
                page.wait_for_function(LOADED, arg="#strip img", timeout=60_000)
                src = page.eval_on_selector("#strip img", "i => i.src")
                shown = Image.open(io.BytesIO(page.request.get(src).body()))
                expected = app.traverse(app.ModelCache(), 0, 0, 10, 1.0, app.SHIPPED_POTENTIALS, "", "data")[0]
                assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(expected))
            finally:
                browser.close()
    finally:
        demo.close()
