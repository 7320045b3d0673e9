"""A site's _redirects: its rules (pure), and what the host route answers for paths that are
not in the site (a node)."""

import sqlite3
import string
from urllib.parse import unquote

import httpx
import pytest
from edgefiles.node.cid import RAW, make_cid
from edgefiles.web import redirects
from edgefiles.web.redirects import RedirectsInvalid
from hypothesis import given
from hypothesis import strategies as st

SEGMENT = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=8)
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda n: n != "splat")
URL_PATH_CHARACTERS = set(string.ascii_letters + string.digits + "/%-._~")


def rules_of(text: str) -> list[redirects.Rule]:
    return redirects.parse(text.encode())


@given(st.lists(st.tuples(NAME, SEGMENT), min_size=1, max_size=4, unique_by=lambda p: p[0]),
       st.lists(SEGMENT, max_size=3))
def test_placeholders_and_the_splat_carry_the_path_into_the_target(bound, rest):
    names, values = [n for n, _ in bound], [v for _, v in bound]
    source = "/" + "/".join(f":{n}" for n in names) + "/*"
    target = "/to/" + "/".join(f":{n}" for n in reversed(names)) + "/:splat"
    to, status = redirects.match(rules_of(f"{source} {target} 302"), [*values, *rest])
    assert status == 302
    assert set(to) <= URL_PATH_CHARACTERS  # each value percent-encoded, as a Location must be
    assert unquote(to) == "/to/" + "/".join([*reversed(values), "/".join(rest)])


@given(st.lists(SEGMENT, min_size=1, max_size=4), st.lists(SEGMENT, min_size=1, max_size=2))
def test_a_rule_without_a_splat_matches_its_own_length_only(fixed, extra):
    rule = rules_of("/" + "/".join(":p" + str(i) for i in range(len(fixed))) + " /x 200")
    assert redirects.match(rule, fixed) == ("/x", 200)
    assert redirects.match(rule, fixed + extra) is None
    assert redirects.match(rule, fixed[:-1]) is None


@given(st.lists(SEGMENT, max_size=4))
def test_the_first_rule_that_matches_wins_and_comments_and_blank_lines_are_skipped(path):
    text = "# an SPA\r\n\n   \n/only/this /first 302\r\n/* /index.html 200\n/* /never 301\n"
    expected = ("/first", 302) if path == ["only", "this"] else ("/index.html", 200)
    assert redirects.match(rules_of(text), path) == expected


def test_a_status_is_301_unless_the_rule_says_otherwise():
    assert redirects.match(rules_of("/old /new"), ["old"]) == ("/new", 301)
    assert redirects.match(rules_of("/old https://example.com/x"), ["old"]) == ("https://example.com/x", 301)


@pytest.mark.parametrize("text, says", [
    ("/a", "not 1 fields"),
    ("/a /b 301 extra", "not 4 fields"),
    ("a /b", "`from` must be a path"),
    ("/a b", "`to` must be a path"),
    ("/a /b 200!", "forced rules"),
    ("/a /b 418", "status '418'"),
    ("/a /b ok", "status 'ok'"),
    ("/a /b \u00b2", "status '\u00b2'"),  # a digit to str.isdigit, none to int
    ("/a //elsewhere.example/", "`to` must be a path"),  # a browser goes to that host
    ("/a /\\elsewhere.example/", "`to` must be a path"),
    ("/a https://example.com/ 200", "can only be redirected"),
    ("/a/*/b /c", "`*` may only end"),
    ("/ok /fine\n/bad", "line 2"),
])
def test_a_file_that_is_not_rules_is_refused_with_its_line(text, says):
    with pytest.raises(RedirectsInvalid, match=says):
        rules_of(text)


def test_a_file_over_64_kib_or_not_utf8_is_refused():
    with pytest.raises(RedirectsInvalid, match="over the limit"):
        redirects.parse(b"# x\n" * (17 << 10))
    with pytest.raises(RedirectsInvalid, match="UTF-8"):
        redirects.parse(b"/\xff /x")


SITE_RULES = b"""# the site's rules
/old /new.html 301
/posts/:year/:slug /articles/:year/:slug.html 302
/out/* https://example.com/:splat 307
/gone/* /410.html 410
/private/* /404.html 404
/docs/* /manual 200
/* /index.html 200
"""


@pytest.fixture(scope="module")
def site(node):
    files = [("index.html", b"<h1>app</h1>"), ("new.html", b"new"), ("404.html", b"<h1>no such page</h1>"),
             ("410.html", b"gone for good"), ("articles/2024/hello.html", b"hello"),
             ("manual/index.html", b"the manual"), ("_redirects", SITE_RULES)]
    cid = node.upload(files).text
    with node.client() as client:
        client.put("/api/v2/files/spa", content=cid).raise_for_status()
    return cid


def host_get(node, path: str, host: str = "spa.actyx.localhost", **kw) -> httpx.Response:
    return httpx.get(f"{node.url}{path}", headers={"Host": host, **kw.pop("headers", {})}, **kw)


def test_an_spa_gets_its_index_for_any_deep_link(node, site):
    for path in ("/dashboard", "/users/17/settings", "/a%20b/"):
        r = host_get(node, path)
        assert r.status_code == 200 and r.content == b"<h1>app</h1>", path
        assert r.headers["content-type"].startswith("text/html")


def test_what_the_site_holds_is_served_as_it_is(node, site):
    assert host_get(node, "/new.html").content == b"new"
    assert host_get(node, "/").content == b"<h1>app</h1>"
    assert host_get(node, "/_redirects").content == SITE_RULES
    assert host_get(node, "/articles/2024/hello.html").content == b"hello"


def test_redirects_say_where_with_their_status(node, site):
    for path, status, location in [("/old", 301, "/new.html"),
                                   ("/posts/2024/hello", 302, "/articles/2024/hello.html"),
                                   ("/out/a/b%20c", 307, "https://example.com/a/b%20c")]:
        r = host_get(node, path)
        assert (r.status_code, r.headers["location"]) == (status, location), path
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.headers["cache-control"] == "no-cache"  # a name's next version may say otherwise


def test_pages_served_with_an_error_status_take_no_range_or_condition(node, site):
    r = host_get(node, "/private/report.pdf", headers={"Range": "bytes=0-3"})
    assert r.status_code == 404 and r.content == b"<h1>no such page</h1>"
    assert "content-range" not in r.headers
    etag = r.headers["etag"]
    again = host_get(node, "/private/report.pdf", headers={"If-None-Match": etag})
    assert again.status_code == 404 and again.content == b"<h1>no such page</h1>"
    gone = host_get(node, "/gone/x")
    assert gone.status_code == 410 and gone.content == b"gone for good"
    assert httpx.head(f"{node.url}/gone/x", headers={"Host": "spa.actyx.localhost"}).status_code == 410


def test_a_page_a_rule_serves_as_200_answers_conditions_and_ranges_as_a_page_does(node, site):
    """A browser revalidates a name's deep link on every reload: a 304 turned into an empty
    200 showed a blank page."""
    first = host_get(node, "/dashboard")
    again = host_get(node, "/dashboard", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    part = host_get(node, "/dashboard", headers={"Range": "bytes=0-3"})
    assert part.status_code == 206 and part.content == b"<h1>"
    assert part.headers["content-range"].startswith("bytes 0-3/")


def test_a_rewrite_to_a_folder_serves_its_index(node, site):
    r = host_get(node, "/docs/chapter-1")
    assert r.status_code == 200 and r.content == b"the manual"


def test_rules_apply_on_the_host_route_only(node, site):
    with node.client() as client:
        assert client.get(f"/api/v2/files/{site}/dashboard").status_code == 404
        assert client.get("/api/v2/files/spa/dashboard").status_code == 404
        token = node.token()
    by_cid = host_get(node, "/dashboard", host=f"{site}.actyx.localhost", params={"access_token": token})
    assert by_cid.status_code == 200 and by_cid.content == b"<h1>app</h1>"
    assert by_cid.headers["cache-control"].endswith("immutable")


def named_site(node, name: str, rules: bytes) -> None:
    """`name` pointed at a site of an index.html and these rules."""
    cid = node.upload([("index.html", b"ok"), ("_redirects", rules)]).text
    with node.client() as client:
        client.put(f"/api/v2/files/{name}", content=cid).raise_for_status()


def test_a_site_whose_rules_cannot_be_read_gets_a_500_for_missing_paths_only(node):
    named_site(node, "broken-rules", b"/a /b 200\n/c /d teapot\n")
    r = host_get(node, "/missing", host="broken-rules.actyx.localhost")
    assert r.status_code == 500 and r.json()["code"] == "ERR_REDIRECTS_INVALID"
    assert "line 2" in r.json()["message"]
    assert host_get(node, "/", host="broken-rules.actyx.localhost").content == b"ok"


def test_a_rule_whose_target_is_missing_is_a_404(node):
    named_site(node, "no-target", b"/* /app.html 200\n")
    r = host_get(node, "/deep", host="no-target.actyx.localhost")
    assert r.status_code == 404 and r.json()["code"] == "ERR_NOT_FOUND"


def test_a_block_not_here_is_no_path_the_site_lacks(fresh_node):
    """A file whose block is not on this node (not fetched yet, none to fetch it from) is a 404,
    not the index a rule would serve in its place: on a CID host that answer is immutable."""
    n = fresh_node("--fetch-timeout", "300ms")
    script = b"the app's script " * 100
    site = [("index.html", b"<h1>app</h1>"), ("app.js", script), ("_redirects", b"/* /index.html 200\n")]
    cid = n.upload(site).text
    n.stop()
    db = sqlite3.connect(n.data / "state.sqlite")
    db.execute("DELETE FROM blocks WHERE cid = ?", (make_cid(RAW, script),))
    db.commit()
    db.close()
    n.start()
    r = host_get(n, "/app.js", host=f"{cid}.actyx.localhost", params={"access_token": n.token()})
    assert r.status_code == 404 and r.json()["code"] == "ERR_NOT_FOUND"
    assert host_get(n, "/elsewhere", host=f"{cid}.actyx.localhost",
                    params={"access_token": n.token()}).content == b"<h1>app</h1>"
