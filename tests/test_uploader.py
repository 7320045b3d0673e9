"""The uploader page in real Chromium, driven by the accessible names a user (or a screen
reader) finds: pick a folder of 250 files, drop files, name an upload, open it on the host
route, repoint and delete from the Names table, cancel an upload, an app id the node does not
trust, the page saved and opened as a local file, and a 320 px wide screen. Screenshots of
every step go to test-artifacts/uploader/ (or $EDGEFILES_TEST_ARTIFACTS/uploader/)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
from nodeproc import Node, run_cli
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("EDGEFILES_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "uploader"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = Node(tmp_path_factory.mktemp("uploader") / "data").start()
    yield n
    n.stop()


def shot(page: Page, test: str, step: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{test}-{step}.png"), full_page=True)


def uploader(browser, node: Node, width: int = 1024) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(f"{node.url}/")
    assert page.url.endswith("/uploader/")
    expect(page.get_by_label("Node URL")).to_have_value(node.url)
    expect(page.get_by_label("App ID")).to_have_value("com.example.uploader")
    return page


def pick(page: Page, file: Path) -> None:
    page.get_by_label("Files", exact=True).set_input_files(str(file))


def upload_button(page: Page):
    return page.get_by_role("button", name="Upload", exact=True)


def app_files(version: str) -> dict[str, str]:
    return {
        "index.html": f'<!doctype html><link rel="stylesheet" href="app.css"><h1>{version}</h1>'
                      f'<p id="js">not run</p><script src="app.js"></script>',
        "app.js": 'document.getElementById("js").textContent = "ran";',
        "app.css": "h1 { color: rgb(1, 2, 3); }",
    }


def cid_of(folder: Path) -> str:
    out = run_cli("cid", str(folder))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def drop(page: Page, files: dict[str, str]) -> None:
    """A drop as a script can make one: a DataTransfer of files, without file-system entries."""
    transfer = page.evaluate_handle("""(files) => {
        const dt = new DataTransfer();
        for (const [name, text] of Object.entries(files)) dt.items.add(new File([text], name));
        return dt;
    }""", files)
    zone = page.get_by_role("region", name="Drop files or folders here")
    zone.dispatch_event("drop", {"dataTransfer": transfer})


def test_a_folder_of_250_nested_files_uploads_as_edgefiles_cid_sees_it(browser, node, tmp_path):
    folder = tmp_path / "big-app"
    files = {"index.html": "<h1>big</h1>", "assets/app.js": "", ".env": "SECRET=1",
             "assets/.cache/x": "hidden"}
    files.update({f"pages/part{i % 7}/deep{i % 3}/page{i}.html": f"<p>{i}</p>" for i in range(248)})
    write(folder, files)
    page = uploader(browser, node)
    shot(page, "folder", "1-opened")
    page.get_by_label("Folder", exact=True).set_input_files(str(folder))
    expect(page.locator("#selection")).to_contain_text("250 files")
    expect(page.locator("#selection")).to_contain_text("2 hidden left out")
    page.get_by_label("Include hidden files").check()
    expect(page.locator("#selection")).to_contain_text("252 files")
    page.get_by_label("Include hidden files").uncheck()  # off: like `edgefiles add` without --hidden
    shot(page, "folder", "2-chosen")
    upload_button(page).click()
    expect(page.get_by_label("Uploaded CID")).to_have_text(cid_of(folder), timeout=30000)
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    assert page.get_by_role("progressbar").count() == 1
    expect(page.get_by_role("status")).to_contain_text("Upload done")
    expect(page.locator("#bytes")).to_contain_text("(100%)")
    shot(page, "folder", "3-uploaded")


def test_drop_name_open_repoint_and_delete(browser, node, tmp_path):
    page = uploader(browser, node)
    drop(page, app_files("Version one"))
    expect(page.locator("#selection")).to_contain_text("3 files")
    upload_button(page).click()
    first = cid_of(write(tmp_path / "v1", app_files("Version one")))
    expect(page.get_by_label("Uploaded CID")).to_have_text(first, timeout=15000)
    expect(page.get_by_label("Name", exact=True)).to_be_focused()  # the next step, for the keyboard
    shot(page, "names", "1-uploaded")
    page.get_by_label("Name", exact=True).fill("drop-app")
    page.get_by_role("button", name="Set name").click()
    link = page.get_by_role("link", name="Open app")
    expect(link).to_have_attribute("href", f"http://drop-app.actyx.localhost:{node.port}/")
    names = page.get_by_role("table", name="Names")
    expect(names.get_by_role("row").filter(has_text="drop-app")).to_contain_text(first)
    expect(names.get_by_role("row").filter(has_text="drop-app")).to_contain_text("complete")
    shot(page, "names", "2-named")

    app = browser.new_page()
    app.goto(link.get_attribute("href"))
    expect(app.locator("h1")).to_have_text("Version one")
    expect(app.locator("#js")).to_have_text("ran")  # its JS loaded from the host route
    assert app.evaluate("getComputedStyle(document.querySelector('h1')).color") == "rgb(1, 2, 3)"  # and CSS
    shot(app, "names", "3-app-v1")

    drop(page, app_files("Version two"))
    # chosen, not sent: the last upload's CID is no more on offer to be named
    expect(page.get_by_label("Uploaded CID")).to_be_hidden()
    expect(page.get_by_role("button", name="Set name")).to_be_hidden()
    upload_button(page).click()
    second = cid_of(write(tmp_path / "v2", app_files("Version two")))
    expect(page.get_by_label("Uploaded CID")).to_have_text(second, timeout=15000)
    names.get_by_role("button", name="Repoint drop-app").click()
    field = page.get_by_label("New CID")
    expect(field).to_be_focused()
    expect(field).to_have_value(second)  # the last upload, ready to save
    shot(page, "names", "4-repointing")
    field.press("Enter")
    expect(names.get_by_role("row").filter(has_text="drop-app")).to_contain_text(second)
    app.reload()
    expect(app.locator("h1")).to_have_text("Version two")
    shot(app, "names", "5-app-v2")

    page.once("dialog", lambda dialog: dialog.dismiss())  # the user thinks better of it
    with page.expect_event("dialog") as asked:
        names.get_by_role("button", name="Delete drop-app").click()
    assert asked.value.message == 'Delete the name "drop-app"? Every node of the swarm stops serving it.'
    expect(names.get_by_role("row").filter(has_text="drop-app")).to_contain_text(second)
    with node.client() as client:
        assert client.get("/api/v2/files/drop-app").status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    names.get_by_role("button", name="Delete drop-app").click()
    expect(names.get_by_role("row").filter(has_text="drop-app")).to_have_count(0)
    expect(page.get_by_role("status")).to_contain_text("deleted")
    assert app.reload().status == 404
    shot(page, "names", "6-deleted")


def test_a_dropped_folder_is_read_to_its_last_entry_with_paths_relative_to_it(browser, node):
    """Chromium hands a folder's entries out 100 at a time; a drop of one folder of 250 files
    (as its file-system entries, which a script cannot make, stood in for here) keeps all 250,
    paths relative to the folder."""
    page = uploader(browser, node)
    picked = page.evaluate("""async () => {
        const file = (name) => ({ isFile: true, isDirectory: false, name,
                                  file: (ok) => ok(new File([name], name)) });
        const folder = (name, children) => ({ isFile: false, isDirectory: true, name, createReader() {
            let at = 0;
            return { readEntries(ok) { const batch = children.slice(at, at + 100); at += 100;
                                       setTimeout(() => ok(batch)); } };
        } });
        const pages = Array.from({ length: 248 }, (_, i) => file(`p${i}.html`));
        const site = folder("site", [file("index.html"), folder("pages", pages), file(".env")]);
        const item = { kind: "file", webkitGetAsEntry: () => site, getAsFile: () => null };
        pick(await dropped({ items: [item], files: [] }));
        return state.picked.map((e) => e.path);
    }""")
    assert len(picked) == 250 and "index.html" in picked and "pages/p247.html" in picked and ".env" in picked
    expect(page.locator("#selection")).to_contain_text("249 files")  # .env left out until asked for


def test_an_app_id_the_node_does_not_trust_is_a_readable_error(browser, node, tmp_path):
    page = uploader(browser, node)
    page.get_by_label("App ID").fill("org.evil.app")
    pick(page, write(tmp_path, {"a.txt": "a"}) / "a.txt")
    upload_button(page).click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text('did not accept the app ID "org.evil.app"')
    text = alert.inner_text()
    assert "{" not in text and "Error" not in text and "at " not in text.split(":")[0]
    expect(page.get_by_label("Uploaded CID")).to_be_hidden()
    shot(page, "evil", "1-refused")
    page.get_by_label("App ID").fill("com.example.uploader")  # fixed, the same page works
    upload_button(page).click()
    expect(page.get_by_label("Uploaded CID")).to_have_text(cid_of(tmp_path / "a.txt"), timeout=15000)
    expect(alert).to_have_text("")


def test_cancel_stops_an_upload_and_keeps_nothing(browser, node, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 << 20))
    page = uploader(browser, node)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 5, "downloadThroughput": -1,
                                                  "uploadThroughput": 512 * 1024})
    pins = node.pins()
    pick(page, big)
    upload_button(page).click()
    expect(page.get_by_role("status")).to_contain_text("Uploading")
    expect(page.get_by_role("progressbar")).not_to_have_attribute("aria-valuenow", "0", timeout=15000)
    shot(page, "cancel", "1-uploading")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("status")).to_have_text("Upload cancelled")
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "0")
    expect(page.get_by_label("Uploaded CID")).to_be_hidden()
    expect(upload_button(page)).to_be_enabled()
    expect(upload_button(page)).to_be_focused()  # Cancel, which had it, is disabled
    expect(page.get_by_role("alert")).to_have_text("")
    shot(page, "cancel", "2-cancelled")
    assert node.pins() == pins  # the node kept nothing of it


def test_cancel_while_the_token_is_still_coming_sends_nothing(browser, node, tmp_path):
    page = uploader(browser, node)
    page.get_by_label("App ID").fill("com.example.another")  # a new app id: a new token to fetch
    held = []

    def hold(route) -> None:  # the node's answer waits until the test lets it go
        held.append(route)

    page.route("**/api/v2/auth", hold)
    pick(page, write(tmp_path, {"late.txt": "late"}) / "late.txt")
    upload_button(page).click()
    expect(page.get_by_role("status")).to_contain_text("Uploading")
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_timeout(200)
    assert len(held) == 1, "one token request, however many wait for it"
    held[0].continue_()
    expect(page.get_by_role("status")).to_have_text("Upload cancelled")
    expect(page.get_by_label("Uploaded CID")).to_be_hidden()
    page.unroute("**/api/v2/auth", hold)
    with node.client() as c:  # and the node never got the file
        assert c.get(f"/api/v2/files/{cid_of(tmp_path / 'late.txt')}",
                     headers={"Cache-Control": "only-if-cached"}).status_code == 404


def test_another_node_url_lists_that_nodes_names_and_expired_tokens_are_renewed(browser, node, tmp_path):
    other = Node(tmp_path / "other", "--token-ttl", "2s").start()
    try:
        with other.client() as c:
            c.put("/api/v2/files/only-on-other", content=cid_of(write(tmp_path, {"o.txt": "o"}) / "o.txt"))
        with node.client() as c:
            c.put("/api/v2/files/only-on-first", content=cid_of(tmp_path / "o.txt"))
        page = uploader(browser, node)
        names = page.get_by_role("table", name="Names")
        expect(names).to_contain_text("only-on-first")
        page.get_by_label("Node URL").fill(other.url)
        page.get_by_label("Node URL").press("Tab")
        expect(names).to_contain_text("only-on-other")
        expect(names).not_to_contain_text("only-on-first")
        page.once("dialog", lambda dialog: dialog.accept())
        names.get_by_role("button", name="Delete only-on-other").click()
        expect(names).not_to_contain_text("only-on-other")
        with node.client() as c:
            assert "only-on-first" in c.get("/api/v2/names").text  # the first node untouched
        page.wait_for_timeout(2500)  # the token the page holds for the other node expires
        pick(page, tmp_path / "o.txt")
        upload_button(page).click()
        expect(page.get_by_label("Uploaded CID")).to_have_text(cid_of(tmp_path / "o.txt"), timeout=15000)
        expect(page.get_by_role("alert")).to_have_text("")
        page.get_by_label("Name", exact=True).fill("Not A Name")
        page.get_by_role("button", name="Set name").click()
        expect(page.get_by_role("alert")).to_contain_text("cannot be a name")
    finally:
        other.stop()


def test_a_refresh_that_fails_leaves_an_earlier_slower_listing_to_show(browser, node, tmp_path):
    cid = cid_of(write(tmp_path, {"r.txt": "r"}) / "r.txt")
    with node.client() as c:
        c.put("/api/v2/files/listed-first", content=cid)
    page = uploader(browser, node)
    names = page.get_by_role("table", name="Names")
    expect(names).to_contain_text("listed-first")
    with node.client() as c:
        c.put("/api/v2/files/listed-later", content=cid)
    held = []
    page.route("**/api/v2/names", lambda route: held.append(route) if not held else route.abort())
    refresh = page.get_by_role("button", name="Refresh names")
    refresh.click()  # its answer waits
    refresh.click()  # this one fails
    expect(page.get_by_role("alert")).to_contain_text("Cannot reach the node")
    held[0].continue_()
    expect(names).to_contain_text("listed-later")
    page.unroute("**/api/v2/names")
    page.close()


def test_a_listing_asked_for_another_app_id_never_fills_the_table(browser, node, tmp_path):
    with node.client() as c:
        c.put("/api/v2/files/listed-for-app", content=cid_of(write(tmp_path, {"a.txt": "a"}) / "a.txt"))
    page = uploader(browser, node)
    names = page.get_by_role("table", name="Names")
    expect(names).to_contain_text("listed-for-app")
    held = []
    page.route("**/api/v2/names", lambda route: held.append(route))
    page.get_by_role("button", name="Refresh names").click()  # its answer waits
    page.wait_for_timeout(200)
    page.get_by_label("App ID").fill("org.untrusted.app")  # this app id is refused: no listing
    page.get_by_label("App ID").press("Tab")
    expect(page.get_by_role("alert")).to_contain_text("did not accept the app ID")
    expect(names).not_to_contain_text("listed-for-app")
    held[0].continue_()  # the answer asked for the other app id comes
    page.wait_for_timeout(500)
    expect(names).not_to_contain_text("listed-for-app")
    page.unroute("**/api/v2/names")
    page.close()


def test_the_page_saved_as_a_local_file_works_with_a_typed_node_url(browser, node, tmp_path):
    saved = tmp_path / "uploader.html"
    saved.write_text(httpx.get(f"{node.url}/uploader/").text)
    for page_file in (saved, ROOT / "uploader" / "index.html"):  # saved, or the raw template itself
        page = browser.new_page()
        page.goto(page_file.as_uri())
        expect(page.get_by_label("Node URL")).to_have_value("")
        assert "{{" not in page.inner_text("body") and "{%" not in page.inner_text("body")
        page.close()
    page = browser.new_page()
    page.goto(saved.as_uri())
    pick(page, write(tmp_path, {"hello.txt": "hi"}) / "hello.txt")
    upload_button(page).click()
    expect(page.get_by_role("alert")).to_contain_text("Node URL")  # says what to do, in words
    with node.client() as c:
        c.put("/api/v2/files/named-before", content=cid_of(tmp_path / "hello.txt"))
    page.get_by_label("Node URL").fill(node.url)
    expect(page.get_by_role("table", name="Names")).to_contain_text("named-before")  # listed once typed
    upload_button(page).click()
    expect(page.get_by_label("Uploaded CID")).to_have_text(cid_of(tmp_path / "hello.txt"), timeout=15000)
    page.get_by_label("Name", exact=True).fill("from-a-file")
    page.get_by_role("button", name="Set name").click()
    expect(page.get_by_role("link", name="Open app")).to_have_attribute(
        "href", f"http://from-a-file.actyx.localhost:{node.port}/")  # the node's own suffix and port
    expect(page.get_by_role("table", name="Names")).to_contain_text("from-a-file")
    shot(page, "local-file", "1-named")


def test_readable_and_keyboard_usable_at_320_px(browser, node, tmp_path):
    page = uploader(browser, node, width=320)
    expect(page.get_by_role("table", name="Names").get_by_role("row").first).to_be_attached()
    pick(page, write(tmp_path, {"n.txt": "narrow"}) / "n.txt")
    page.get_by_label("Node URL").focus()
    for expected in ("App ID", "Drop files or folders here", "Files"):
        page.keyboard.press("Tab")
        focused = page.evaluate("document.activeElement.labels?.[0]?.textContent "
                                "|| document.activeElement.getAttribute('aria-label') "
                                "|| document.activeElement.title")
        assert focused == expected
    upload_button(page).focus()
    page.keyboard.press("Enter")  # the keyboard alone uploads
    expect(page.get_by_label("Uploaded CID")).to_have_text(cid_of(tmp_path / "n.txt"), timeout=15000)
    page.get_by_label("Name", exact=True).fill("narrow-screen-app")
    page.get_by_label("Name", exact=True).press("Enter")
    expect(page.get_by_role("table", name="Names")).to_contain_text("narrow-screen-app")
    assert page.evaluate("document.documentElement.scrollWidth") <= 320  # long CIDs wrap
    for control in page.locator("input, button").all():  # every control has a name
        name = control.evaluate("e => e.labels?.[0]?.textContent || e.getAttribute('aria-label') "
                                "|| e.textContent")
        assert name and name.strip(), control.evaluate("e => e.outerHTML")
    shot(page, "narrow", "1-320px")


def test_directory_listings_have_breadcrumbs_sizes_and_types(browser, node, tmp_path):
    site = write(tmp_path / "site", {"docs/readme.txt": "read me", "docs/logo.svg": "<svg/>"})
    cid = node.upload([(f"docs/{p.name}", p.read_bytes()) for p in (site / "docs").iterdir()]
                      + [("index.css", b"")]).text.strip()
    page = browser.new_page(viewport={"width": 320, "height": 700})
    page.goto(f"{node.url}/api/v2/files/{cid}/docs/?access_token={node.token()}")
    crumbs = page.get_by_role("navigation", name="Breadcrumbs")
    expect(crumbs.get_by_role("link", name=cid)).to_have_attribute(
        "href", re.compile(rf"^/api/v2/files/{cid}/\?access_token="))
    expect(crumbs).to_contain_text("docs")
    rows = page.get_by_role("row")
    expect(rows.filter(has_text="readme.txt")).to_contain_text("7 B")
    expect(rows.filter(has_text="readme.txt")).to_contain_text("text/plain")
    expect(rows.filter(has_text="logo.svg")).to_contain_text("image/svg+xml")
    assert page.evaluate("document.documentElement.scrollWidth") <= 320
    shot(page, "listing", "1-docs")
    crumbs.get_by_role("link", name=cid).click()
    expect(page.get_by_role("row").filter(has_text="docs/")).to_contain_text("folder")


def test_a_folder_holding_one_page_is_uploaded_as_a_folder_and_served_as_a_page(browser, node, tmp_path):
    folder = write(tmp_path / "one-page", {"index.html": "<h1>only page</h1>"})
    page = uploader(browser, node)
    page.get_by_label("Folder", exact=True).set_input_files(str(folder))
    expect(page.locator("#selection")).to_contain_text("1 file,")
    upload_button(page).click()
    expect(page.get_by_label("Uploaded CID")).to_have_text(cid_of(folder), timeout=15000)  # the folder's
    page.get_by_label("Name", exact=True).fill("one-page")
    page.get_by_role("button", name="Set name").click()
    app = browser.new_page()
    app.goto(page.get_by_role("link", name="Open app").get_attribute("href"))
    expect(app.locator("h1")).to_have_text("only page")
    pick(page, folder / "index.html")  # a file chosen alone is that file
    upload_button(page).click()
    expect(page.get_by_label("Uploaded CID")).to_have_text(cid_of(folder / "index.html"), timeout=15000)


def test_deleting_a_name_already_gone_elsewhere_is_no_error(browser, node, tmp_path):
    cid = cid_of(write(tmp_path / "gone", app_files("gone")))
    run_cli("add", str(tmp_path / "gone"), "--name", "gone-twice", "--node", node.url)
    page = uploader(browser, node)
    names = page.get_by_role("table", name="Names")
    expect(names.get_by_role("row").filter(has_text="gone-twice")).to_contain_text(cid)
    with node.client() as client:
        client.delete("/api/v2/files/gone-twice").raise_for_status()  # as another node of the swarm may
    page.once("dialog", lambda dialog: dialog.accept())
    names.get_by_role("button", name="Delete gone-twice").click()
    expect(page.get_by_role("status")).to_contain_text('"gone-twice" deleted')
    expect(names.get_by_role("row").filter(has_text="gone-twice")).to_have_count(0)
    expect(page.get_by_role("alert")).to_have_text("")


def test_a_name_still_being_fetched_follows_its_rollout_without_a_click(browser, node, tmp_path):
    folder = write(tmp_path / "later", app_files("arrives later"))
    cid = cid_of(folder)
    with node.client() as client:
        client.put("/api/v2/files/arrives-later", content=cid).raise_for_status()  # nothing stored yet
    page = uploader(browser, node)
    row = page.get_by_role("table", name="Names").get_by_role("row").filter(has_text="arrives-later")
    expect(row).to_contain_text("missing")
    assert run_cli("add", str(folder), "--node", node.url).stdout.strip() == cid  # the blocks come
    expect(row).to_contain_text("complete", timeout=10000)


def test_names_a_browser_would_rewrite_upload_as_edgefiles_cid_sees_them(browser, node, tmp_path):
    """A browser's FormData writes " and line breaks in a file name as %22, %0A and %0D, which
    the node takes literally: the page sends the names as `edgefiles add` does."""
    folder = write(tmp_path / "odd", {"index.html": "<p>odd</p>", 'say "hi".txt': "hi",
                                      "two\nlines.txt": "lf", "a\rb.txt": "cr", "100%22.txt": "pct"})
    page = uploader(browser, node)
    page.get_by_label("Folder", exact=True).set_input_files(str(folder))
    expect(page.locator("#selection")).to_contain_text("5 files")
    upload_button(page).click()
    expect(page.get_by_label("Uploaded CID")).to_have_text(cid_of(folder), timeout=15000)


def test_a_file_name_the_node_refuses_is_told_before_anything_is_sent(browser, node, tmp_path):
    folder = write(tmp_path / "win", {"index.html": "<p>win</p>", "back\\slash.txt": "no"})
    page = uploader(browser, node)
    page.get_by_label("Folder", exact=True).set_input_files(str(folder))
    expect(page.get_by_role("alert")).to_contain_text('"back\\slash.txt" cannot be uploaded')
    expect(page.get_by_role("alert")).to_contain_text("backslash")
    expect(upload_button(page)).to_be_disabled()
    hidden = write(tmp_path / "dotted", {"index.html": "<p>ok</p>", ".git/back\\slash": "never sent"})
    page.get_by_label("Folder", exact=True).set_input_files(str(hidden))
    expect(page.get_by_role("alert")).to_have_text("")  # left out with the hidden files: no refusal
    expect(upload_button(page)).to_be_enabled()
    page.get_by_label("Include hidden files").check()
    expect(page.get_by_role("alert")).to_contain_text("backslash")
    expect(upload_button(page)).to_be_disabled()
