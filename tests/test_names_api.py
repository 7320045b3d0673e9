"""Names over HTTP (PUT/DELETE/list) and the host route."""

import json
import time

import httpx
import pytest

BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"


@pytest.fixture(scope="module")
def app_cid(node):
    return node.upload([("index.html", b"<h1>v1</h1>"), ("js/app.js", b"v1()")]).text


@pytest.fixture(scope="module")
def client(node):
    with node.client() as c:
        yield c


def host_get(node, host: str, path: str = "/", **kw) -> httpx.Response:
    return httpx.get(f"{node.url}{path}", headers={"Host": host, **kw.pop("headers", {})}, **kw)


def test_put_get_delete_name(node, client, app_cid):
    r = client.put("/api/v2/files/shop", content=f"  {app_cid}\n")
    assert r.status_code == 200 and r.content == b""
    r = client.get("/api/v2/files/shop/js/app.js")
    assert r.content == b"v1()"
    assert r.headers["cache-control"] == "no-cache"
    listed = client.get("/api/v2/names").json()
    entry = next(e for e in listed if e["name"] == "shop")
    assert entry["cid"] == app_cid and entry["complete"] is True and entry["missing"] == 0
    assert entry["updated"].endswith("Z")
    r = client.delete("/api/v2/files/shop")
    assert r.status_code == 200 and r.text == app_cid
    assert client.get("/api/v2/files/shop").status_code == 405  # neither a name nor a CID now
    assert host_get(node, "shop.actyx.localhost").status_code == 404


def test_name_errors(client, app_cid):
    r = client.put(f"/api/v2/files/{app_cid}", content=app_cid)
    assert r.status_code == 405
    r = client.put("/api/v2/files/QmPZ9gcCEpqKTo6aq61g2nXGUhM4iCL3ewB6LDXZCtioEB", content=app_cid)
    assert r.status_code == 405
    for bad in ["Upper", "-x", "a_b", "x" * 64, "myapp%0A", "my%0Aapp"]:
        r = client.put(f"/api/v2/files/{bad}", content=app_cid)
        assert r.status_code == 400, bad
        assert r.json()["code"] == "ERR_BAD_REQUEST"
    r = client.put("/api/v2/files/good-name", content="not a cid")
    assert r.status_code == 405
    r = client.delete("/api/v2/files/never-set")
    assert r.status_code == 405
    assert r.json()["code"] == "ERR_METHOD_NOT_ALLOWED"


def test_cidv0_name_target_is_echoed_as_given(node, client, app_cid):
    from edgefiles.node.cid import parse, to_str

    v0 = to_str(parse(app_cid)[2:])
    assert client.put("/api/v2/files/old-style", content=v0).status_code == 200
    entry = next(e for e in client.get("/api/v2/names").json() if e["name"] == "old-style")
    assert entry["cid"] == v0 and entry["complete"] is True
    assert host_get(node, "old-style.actyx.localhost", "/js/app.js").content == b"v1()"
    assert client.delete("/api/v2/files/old-style").text == v0


def test_put_of_cid_not_stored_is_accepted_but_not_served(client):
    missing = "bafkreie7q3iidccmpvszul7kudcvvuavuo7u6gzlbobczuk5nqze7hlt7y"
    assert client.put("/api/v2/files/later", content=missing).status_code == 200
    entry = next(e for e in client.get("/api/v2/names").json() if e["name"] == "later")
    assert entry["complete"] is False and entry["missing"] >= 1  # 0 only when complete
    assert client.get("/api/v2/files/later").status_code == 404


def test_repoint_keeps_serving(node, client, app_cid):
    v2 = node.upload([("index.html", b"<h1>v2</h1>"), ("js/app.js", b"v2()")]).text
    client.put("/api/v2/files/roll", content=app_cid)
    assert host_get(node, "roll.actyx.localhost").content == b"<h1>v1</h1>"
    client.put("/api/v2/files/roll", content=v2)
    assert host_get(node, "roll.actyx.localhost").content == b"<h1>v2</h1>"


def test_host_route(node, client, app_cid):
    client.put("/api/v2/files/my.app", content=app_cid)
    r = host_get(node, "my.app.actyx.localhost:4454")
    assert r.status_code == 200 and r.content == b"<h1>v1</h1>"
    assert r.headers["content-type"].startswith("text/html")
    assert host_get(node, "MY.APP.Actyx.LocalHost:99999").content == b"<h1>v1</h1>"
    assert host_get(node, "my.app.actyx.localhost", "/js/app.js").content == b"v1()"
    r = host_get(node, "my.app.actyx.localhost", "/js", params={"v": "2"})
    # the path alone (a proxy's scheme and host stay the browser's), revalidated: a later version
    # of the name may hold a file at /js, and browsers keep a 301 for good
    assert r.status_code == 301 and r.headers["location"] == "/js/?v=2"
    assert r.headers["cache-control"] == "no-cache"
    for file_as_dir in ("/js/app.js/", "/index.html/"):  # its relative links would resolve below it
        assert host_get(node, "my.app.actyx.localhost", file_as_dir).status_code == 404, file_as_dir
    assert client.get(f"/api/v2/files/{app_cid}/js/app.js/").status_code == 404
    listing = host_get(node, "my.app.actyx.localhost", "/js/", headers={"Accept": BROWSER})
    assert 'href="app.js"' in listing.text
    assert host_get(node, "my.app.actyx.localhost", "/js/").json()["directory"]["name"] == "js"
    assert host_get(node, "my.app.actyx.localhost", "/api/v2/files").status_code == 404
    assert host_get(node, "my.app.actyx.localhost", "/nope").status_code == 404
    assert host_get(node, "unknown.actyx.localhost").status_code == 404
    for empty_name in (".actyx.localhost", ".actyx.localhost:4454"):  # the host route's, never the API
        r = host_get(node, empty_name, f"/api/v2/files/{app_cid}")
        assert r.status_code == 404 and r.json()["code"] == "ERR_NOT_FOUND", empty_name
    assert host_get(node, "my.app.actyx.localhost", "/%2e%2e/x").status_code == 400


def test_cid_host_needs_token_and_sets_cookie(node, app_cid):
    host = f"{app_cid}.actyx.localhost"
    assert host_get(node, host).status_code == 401
    with httpx.Client(base_url=node.url, headers={"Host": host}) as c:
        r = c.get("/", params={"access_token": node.token()})
        assert r.status_code == 200 and r.content == b"<h1>v1</h1>"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "domain" not in cookie
        max_age = int(cookie.split("max-age=")[1].split(";")[0])  # as long as its token lasts
        assert 24 * 3600 - 60 < max_age <= 24 * 3600
        assert c.get("/js/app.js").content == b"v1()"  # the cookie carries the token


def test_a_good_cookie_is_taken_beside_a_bad_one_of_the_same_name(node, app_cid, fresh_node):
    """Another host of the site (a public app) can set a cookie of the same name for the whole
    domain; the browser then sends both, in an order of its own."""
    host, good = f"{app_cid}.actyx.localhost", node.token()
    foreign = fresh_node().token()  # another node's: invalid here
    for pair in ((good, "junk"), ("junk", good)):
        cookies = "; ".join(f"edgefiles_token={token}" for token in pair)
        r = host_get(node, host, "/js/app.js", headers={"Cookie": cookies})
        assert r.status_code == 200 and r.content == b"v1()", cookies
    cookies = f"edgefiles_token=junk; edgefiles_token={foreign}"
    r = host_get(node, host, "/js/app.js", headers={"Cookie": cookies})
    assert r.status_code == 401 and r.json()["code"] == "ERR_TOKEN_INVALID"


def test_one_host_per_request(node, client, app_cid):
    """RFC 9112 3.2: two Host headers are a 400 (a proxy reading the first would route the
    request elsewhere than the node reading the last); an absolute-form target names its host."""
    client.put("/api/v2/files/hosted", content=app_cid)
    two = (b"GET /js/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: hosted.actyx.localhost\r\n"
           b"Connection: close\r\n\r\n")
    head, body = node.raw_exchange(two)
    assert head.startswith(b"HTTP/1.1 400 ") and json.loads(body)["code"] == "ERR_BAD_REQUEST"
    absolute = (b"GET http://hosted.actyx.localhost:4454/js/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Connection: close\r\n\r\n")
    head, body = node.raw_exchange(absolute)
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"v1()"
    head, _ = node.raw_exchange(absolute.replace(b"Host: 127.0.0.1\r\n", b"Host: a\r\nHost: b\r\n"))
    assert head.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("first_is_good", [True, False])
def test_one_authorization_per_request(node, first_is_good):
    """Two Authorization headers are a 400, as two Hosts are: the node took the first, where a
    proxy that adds its own credentials may have meant its own to count."""
    good, bad = f"Bearer {node.token()}".encode(), b"Bearer garbage"
    pair = (good, bad) if first_is_good else (bad, good)
    request = (b"GET /api/v2/names HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nAuthorization: %s\r\n"
               b"Connection: close\r\n\r\n" % pair)
    head, body = node.raw_exchange(request)
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert "one Authorization header" in json.loads(body)["message"]


def test_host_suffix_flag(fresh_node):
    n = fresh_node("--host-suffix", "edge.test")
    cid = n.upload([("index.html", b"hi"), ("b", b"b")]).text
    with n.client() as c:
        c.put("/api/v2/files/x", content=cid)
    assert host_get(n, "x.edge.test").content == b"hi"
    assert host_get(n, "x.actyx.localhost", "/api/v2/names").status_code == 401  # the API answers


def test_names_survive_restart(fresh_node):
    n = fresh_node()
    cid = n.upload([("a", b"1"), ("b", b"2")]).text
    with n.client() as c:
        c.put("/api/v2/files/keep", content=cid)
    assert n.stop() == 0
    n.start()
    with n.client() as c:
        assert c.get("/api/v2/files/keep/a").content == b"1"


def test_an_identity_cid_is_read_from_itself_by_cid_and_by_name(node, client):
    """An identity CID holds its bytes (Kubo's --inline makes them): listed as complete, and
    readable too, without a block stored anywhere."""
    from edgefiles.node.cid import IDENTITY, RAW, to_str

    data = b"hello world\n"
    inline = to_str(bytes([1, RAW, IDENTITY, len(data)]) + data)  # CIDv1, raw, identity multihash
    assert client.put("/api/v2/files/inline", content=inline).status_code == 200
    assert next(e for e in client.get("/api/v2/names").json() if e["name"] == "inline")["complete"] is True
    for path in (f"/api/v2/files/{inline}", "/api/v2/files/inline"):
        r = client.get(path)
        assert (r.status_code, r.content) == (200, b"hello world\n"), path
    assert host_get(node, "inline.actyx.localhost").content == b"hello world\n"


def test_of_deletes_of_a_name_at_once_one_is_a_200_and_the_others_find_it_gone(node, client, app_cid):
    import asyncio

    async def deletes_at_once(count: int) -> list[int]:
        headers = {"Authorization": f"Bearer {node.token()}"}
        async with httpx.AsyncClient(base_url=node.url, headers=headers) as http:
            answers = await asyncio.gather(*(http.delete("/api/v2/files/racer") for _ in range(count)))
        return sorted(r.status_code for r in answers)

    for _ in range(10):
        assert client.put("/api/v2/files/racer", content=app_cid).status_code == 200
        assert asyncio.run(deletes_at_once(10)) == [200] + [405] * 9


def test_a_file_or_name_says_in_one_order_that_it_takes_no_post(node, app_cid):
    """A CID or a name takes GET, HEAD, PUT and DELETE: a 405 says so in the same words
    every time (one order, not a set's), and so does OPTIONS (RFC 9110 9.3.7)."""
    item = "GET, HEAD, PUT, DELETE, OPTIONS"
    auth = {"Authorization": f"Bearer {node.token()}"}
    for method in ("POST", "PATCH", "TRACE"):
        r = httpx.request(method, f"{node.url}/api/v2/files/{app_cid}", headers=auth)
        assert (r.status_code, r.json()["code"], r.headers["allow"]) == (405, "ERR_METHOD_NOT_ALLOWED", item)
    assert httpx.options(f"{node.url}/api/v2/files/{app_cid}/js").headers["allow"] == item
    collection = httpx.options(f"{node.url}/api/v2/files").headers["allow"]
    assert collection == "GET, HEAD, POST, PUT, DELETE, OPTIONS"
    assert "allow" not in httpx.options(f"{node.url}/no/such/route").headers
    host = httpx.options(f"{node.url}/js/app.js", headers={"Host": "my.app.actyx.localhost"})
    assert host.headers["allow"] == "GET, HEAD, OPTIONS"


def test_a_cid_host_gives_its_cookie_with_a_404_and_keeps_the_token_out_of_redirects(node, app_cid):
    """A first visit to a missing path (a stale deep link) still leaves the page its token; a
    directory's 301 comes with the cookie, so its Location holds no copy of the token."""
    host, token = f"{app_cid}.actyx.localhost", node.token()
    missing = host_get(node, host, "/nope", params={"access_token": token})
    assert missing.status_code == 404 and "httponly" in missing.headers["set-cookie"].lower()
    moved = host_get(node, host, "/js", params={"access_token": token, "v": "2"}, follow_redirects=False)
    assert (moved.status_code, moved.headers["location"]) == (301, "/js/?v=2")
    assert token in moved.headers["set-cookie"]
    listing = host_get(node, host, "/js/", params={"access_token": token}, headers={"Accept": BROWSER})
    assert 'href="app.js"' in listing.text and token not in listing.text  # the cookie carries it


def test_a_cid_padded_with_any_whitespace_is_a_cid_and_more_than_a_cid_is_a_405(node, client, app_cid):
    """The body is a CID, whitespace around it trimmed (files-api.md): however much of it there
    is; a 413 only past --max-upload."""
    padded = client.put("/api/v2/files/padded", content=f"{' ' * 100_000}{app_cid}{chr(10) * 100_000}")
    assert padded.status_code == 200, padded.text
    assert next(e for e in client.get("/api/v2/names").json() if e["name"] == "padded")["cid"] == app_cid
    long = client.put("/api/v2/files/padded", content=app_cid + "x" * 5000)
    assert (long.status_code, long.json()["code"]) == (405, "ERR_METHOD_NOT_ALLOWED")
    assert next(e for e in client.get("/api/v2/names").json() if e["name"] == "padded")["cid"] == app_cid


def test_preconditions_make_a_repoint_or_delete_of_a_name_conditional_on_its_version(client, app_cid):
    """RFC 9110 13.1.1-2: the name's version is the ETag its reads carry."""
    other = client.post("/api/v2/files", files={"f": ("o.txt", b"other")}).text
    created = client.put("/api/v2/files/guarded", content=app_cid, headers={"If-None-Match": "*"})
    assert created.status_code == 200  # a create only: it was not set
    again = client.put("/api/v2/files/guarded", content=other, headers={"If-None-Match": "*"})
    assert (again.status_code, again.json()["code"]) == (412, "ERR_PRECONDITION_FAILED")
    assert client.get("/api/v2/files/guarded").headers["etag"] == f'"{app_cid}"'  # the version to name
    stale = client.put("/api/v2/files/guarded", content=other, headers={"If-Match": f'"{other}"'})
    assert stale.status_code == 412
    moved = client.put("/api/v2/files/guarded", content=other, headers={"If-Match": f'"{app_cid}", "x"'})
    assert moved.status_code == 200
    kept = client.delete("/api/v2/files/guarded", headers={"If-Match": f'"{app_cid}"'})
    assert kept.status_code == 412 and client.get("/api/v2/files/guarded").status_code == 200
    assert client.delete("/api/v2/files/guarded", headers={"If-Match": f'"{other}"'}).text == other
    gone = client.delete("/api/v2/files/guarded", headers={"If-Match": "*"})
    assert gone.status_code == 405  # not set: the 405 it is without the precondition
    absent = client.put("/api/v2/files/guarded", content=app_cid, headers={"If-Match": "*"})
    assert absent.status_code == 412 and client.get("/api/v2/files/guarded").status_code == 405


def test_if_none_match_on_two_header_lines_is_one_list(node, client, app_cid):
    etag = f'"{app_cid}"'
    auth = ("Authorization", f"Bearer {node.token()}")
    for tags in (['"x"', etag], [etag, '"x"']):  # the first line alone was read
        lines = [auth, *(("If-None-Match", tag) for tag in tags)]
        assert httpx.get(f"{node.url}/api/v2/files/{app_cid}", headers=lines).status_code == 304, tags


def test_two_repoints_from_one_version_cannot_both_land(node, client, app_cid):
    """Both check If-Match, then read their bodies: the check is made again as each writes,
    so the second finds the version it names gone (it landed over the first: a lost update)."""
    import socket

    other = client.post("/api/v2/files", files={"f": ("r.txt", b"race")}).text
    third = client.post("/api/v2/files", files={"f": ("s.txt", b"race 2")}).text
    assert client.put("/api/v2/files/raced", content=app_cid).status_code == 200
    answers = []
    socks = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(2)]
    for sock, cid in zip(socks, (other, third), strict=True):
        body = cid.encode()
        sock.sendall(b"PUT /api/v2/files/raced HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     + f'Authorization: Bearer {node.token()}\r\nIf-Match: "{app_cid}"\r\n'.encode()
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
    time.sleep(0.3)  # both checked once, both waiting for the rest of their bodies
    for sock, cid in zip(socks, (other, third), strict=True):
        sock.sendall(cid.encode()[10:])
        answers.append(sock.makefile("rb").readline().split()[1])
        sock.close()
    assert sorted(answers) == [b"200", b"412"], answers
