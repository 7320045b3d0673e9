"""The uploader page in real Chromium: pick a folder, upload, name, open the app by name."""

from pathlib import Path

import pytest
from nodeproc import run_cli
from playwright.sync_api import expect, sync_playwright

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sample-spa"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def test_upload_folder_name_and_open(browser, node, tmp_path):
    page = browser.new_page()
    page.goto(f"{node.url}/")
    assert page.url.endswith("/uploader/")
    page.set_input_files("#folder", str(SAMPLE))
    expect(page.locator("#selection")).to_contain_text("3 file(s)")
    page.click("#upload")
    expect(page.locator("#cid")).to_have_text(run_cli("cid", str(SAMPLE)).stdout.strip(), timeout=15000)
    page.fill("#name", "browser-app")
    page.click("#publish")
    link = page.locator("#published")
    expect(link).to_have_text(f"http://browser-app.actyx.localhost:{node.port}/")
    expect(page.locator("#names")).to_contain_text("browser-app")
    page.screenshot(path=str(tmp_path / "uploader.png"))

    app = browser.new_page()
    app.goto(link.get_attribute("href"))
    expect(app.locator("h1")).to_have_text("Hello from the edge")
    expect(app.locator("#origin")).to_have_text(f"http://browser-app.actyx.localhost:{node.port}")
    app.click("#click")
    expect(app.locator("#count")).to_have_text("1")
    assert app.evaluate("getComputedStyle(document.body).display") == "grid"  # the CSS loaded


def test_upload_error_is_shown(browser, node, tmp_path):
    bad = tmp_path / "bad"
    (bad / "sub").mkdir(parents=True)
    (bad / "sub" / "a.txt").write_text("a")
    (bad / "b.txt").write_text("b")
    page = browser.new_page()
    page.goto(f"{node.url}/uploader/")
    page.set_input_files("#files", [str(bad / "b.txt"), str(bad / "sub" / "a.txt")])
    page.click("#upload")
    expect(page.locator("#cid")).not_to_have_text("", timeout=15000)
    page.fill("#name", "Not A Valid Name")
    page.click("#publish")
    expect(page.locator("#status")).to_contain_text("400")
    expect(page.locator("#status")).to_have_class("error")
