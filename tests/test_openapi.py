"""The OpenAPI document, black-box: every route the node serves is in it under its tag (the
FlowFuse facade's too when it is on), its examples validate against their schemas, and the
page that shows it needs no token and no network."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
from edgefiles.web import admin_api, filestore
from edgefiles.web.openapi import openapi_path
from edgefiles.web.storage import api as storage_api
from fake_platform import FakePlatform
from nodeproc import Node

TAGS = {"files", "node", "flowfuse", "tokens", "admin", "filestore", "storage"}
CORE = [("POST", "/api/v2/auth"), ("GET", "/api/v2/files/{tail}"), ("PUT", "/api/v2/files/{tail}"),
        ("DELETE", "/api/v2/files/{tail}"), ("POST", "/api/v2/files"), ("GET", "/api/v2/names"),
        ("POST", "/api/v2/car"), ("GET", "/ipfs/{tail}"), ("GET", "/api/v2/node/info"),
        ("GET", "/api/v1/user"), ("POST", "/api/v1/user/tokens"),
        ("DELETE", "/api/v1/user/tokens/{token_id}"),
        ("GET", "/health"), ("GET", "/metrics"), ("GET", "/api/openapi.json"),
        ("POST", "/v1/files/{tail}"), ("GET", "/v1/context/{project}/{scope}")]


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    platform = FakePlatform()
    folder = tmp_path_factory.mktemp("openapi")
    (folder / "ff.yml").write_text(f"base_url: {platform.url}\n")
    node = Node(folder / "data", "--flowfuse-config", str(folder / "ff.yml")).start()
    try:
        answer = httpx.get(f"{node.url}/api/openapi.json")  # no token needed
        assert answer.status_code == 200
        pages = [httpx.get(f"{node.url}{path}") for path in ("/api/", "/docs")]
        yield answer.json(), pages
    finally:
        node.stop()
        platform.close()


def test_every_route_is_in_the_document_under_its_tag(doc):
    document, _ = doc
    assert document["openapi"].startswith("3.1")
    routes = CORE + [(m, openapi_path(p)) for m, p in admin_api.COMMANDS]
    routes += [(m, openapi_path(p)) for p, _, methods in filestore.ROUTES for m in methods if m != "HEAD"]
    routes += [(m, r.path) for r in storage_api.ROUTES if r.include_in_schema for m in r.methods - {"HEAD"}]
    assert len(routes) > len(CORE) + 20
    for method, path in routes:
        assert method.lower() in document["paths"].get(path, {}), (method, path)
    seen = {tag for ops in document["paths"].values() for op in ops.values() for tag in op["tags"]}
    assert seen == TAGS and {t["name"] for t in document["tags"]} == TAGS
    for prefix, tag in (("/filestore", "filestore"), ("/api/v1/storage", "storage")):
        facade = [op for p, ops in document["paths"].items() if p.startswith(prefix) for op in ops.values()]
        assert facade and all(op["tags"] == [tag] for op in facade)
    storage_paths = [p for p in document["paths"] if p.startswith("/api/v1/storage")]
    assert not any("{rest}" in p or "{tail}" in p for p in storage_paths)
    files_ops = [(method, path) for path, ops in document["paths"].items()
                 for method, op in ops.items() if op["tags"] == ["files"]]
    assert ("post", "/api/v2/files") in files_ops and ("get", "/api/v2/names") in files_ops  # under its tag
    for path, method in (("/api/v2/files/{tail}", "get"), ("/api/v2/names", "get"), ("/api/v2/car", "post")):
        assert document["paths"][path][method]["security"] == [{"bearer": []}], path  # files-api.md: a token
    for path, method in (("/api/v2/auth", "post"), ("/api/v2/node/id", "get")):
        assert document["paths"][path][method]["security"] == [], path  # none needed
    for path, ops in document["paths"].items():  # a thing's own files take its key alone
        if path.startswith("/filestore/"):
            schemes = {scheme for op in ops.values() for option in op["security"] for scheme in option}
            wanted = {"thing", "bearer"} if path.startswith("/filestore/groups/") else {"thing"}
            assert schemes == wanted, path


def test_a_summary_is_a_whole_sentence_of_its_route(doc):
    """The first line of a docstring was the summary, cut mid-sentence ("quota and category checked,")."""
    document, _ = doc
    summaries = [op["summary"] for ops in document["paths"].values() for op in ops.values()]
    assert not [s for s in summaries if s.endswith((",", "(", ";", " and", " or"))], summaries
    upload = document["paths"]["/api/v1/storage/upload"]["post"]["summary"]
    assert upload.startswith("Upload a file") and upload.endswith("chunked into blocks"), upload


def test_every_example_validates_against_its_schema(doc):
    document, _ = doc
    checked = 0
    for ops in document["paths"].values():
        for op in ops.values():
            bodies = [*op.get("requestBody", {}).get("content", {}).values(),
                      *(c for r in op["responses"].values() for c in r.get("content", {}).values())]
            for body in bodies:
                if "example" in body:
                    jsonschema.validate(body["example"], body["schema"])
                    checked += 1
    assert checked >= 12


def test_the_page_is_served_without_a_token_and_loads_nothing_from_elsewhere(doc):
    _, pages = doc
    for page in pages:
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/api/openapi.json" in page.text and "#/${tag.name}" in page.text
        assert "http://" not in page.text and "https://" not in page.text


def test_the_page_opens_a_group_by_its_anchor_and_sends_an_operation(tmp_path):
    """In Chromium: /docs#/filestore shows the Filestore group; the token field and a
    "Send" form run GET /api/v1/user with a real token."""
    from nodeproc import run_cli
    from playwright.sync_api import expect, sync_playwright
    from test_uploader import CHROMIUM, FLAGS

    node = Node(tmp_path / "n").start()
    try:
        out = run_cli("admin", "user", "add", "--email", "ada@example.com", "--org", "acme", "--json",
                      "--data", str(node.data))
        token = json.loads(out.stdout)["token"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            page.goto(f"{node.url}/docs#/filestore")
            expect(page.locator("#\\/filestore")).to_be_in_viewport()
            page.fill("#auth", f"Bearer {token}")
            user_op = page.locator("details", has=page.locator("summary", has_text="/api/v1/user —"))
            user_op.locator("summary").click()
            user_op.get_by_role("button", name="Send GET").click()
            expect(user_op.get_by_role("status")).to_contain_text('"email":"ada@example.com"')
            page.screenshot(path=str(tmp_path / "docs.png"))
            browser.close()
    finally:
        node.stop()
