"""Auth: tokens, their errors, and what needs them."""

import json
import math
import time

import httpx
import pytest
from edgefiles.node.identity import NodeKey
from edgefiles.web.auth import TokenAuthority
from edgefiles.web.errors import TokenExpired
from nodeproc import APP


def test_auth_issues_token_that_opens_the_api(node):
    r = httpx.post(f"{node.url}/api/v2/auth", json=APP)
    assert r.status_code == 200
    token = r.json()["token"]
    info = httpx.get(f"{node.url}/api/v2/node/info", headers={"Authorization": f"Bearer {token}"})
    assert info.status_code == 200
    by_query = httpx.get(f"{node.url}/api/v2/node/info", params={"access_token": token})
    assert by_query.status_code == 200


def test_missing_auth_header(node):
    r = httpx.get(f"{node.url}/api/v2/files/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"code": "ERR_MISSING_AUTH_HEADER", "message": '"Authorization" header is missing.'}
    assert r.headers["access-control-allow-origin"] == "*"


def test_garbage_token(node):
    r = httpx.get(f"{node.url}/api/v2/names", headers={"Authorization": "Bearer my invalid token"})
    assert r.status_code == 401
    body = r.json()
    assert body["code"] == "ERR_TOKEN_INVALID"
    assert "my invalid token" in body["message"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_tampered_token(node):
    token = node.token()
    payload, sig = token.split(".")
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + sig
    r = httpx.get(f"{node.url}/api/v2/names", headers={"Authorization": f"Bearer {forged}"})
    assert r.json()["code"] == "ERR_TOKEN_INVALID"


def test_a_token_has_one_spelling(node):
    """Base64url text whose last character carries stray bits, or padding, decodes to the same
    bytes: such a second spelling of a token is refused, so a token is one string."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    token = node.token()
    payload, sig = token.split(".")
    stray = alphabet[alphabet.index(sig[-1]) ^ 1]  # a 64-byte signature leaves 4 bits unused
    for spelling in (f"{payload}.{sig[:-1]}{stray}", f"{payload}.{sig}==", f"{payload}=.{sig}", token + " x"):
        r = httpx.get(f"{node.url}/api/v2/names", headers={"Authorization": f"Bearer {spelling}"})
        assert r.status_code == 401 and r.json()["code"] == "ERR_TOKEN_INVALID", spelling
    r = httpx.get(f"{node.url}/api/v2/names", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


def test_app_ids_that_are_not_names_are_not_trusted(node):
    for app_id in ("com.example.", "com.example.app\n", "com.example.a\x00b", "com.example.my app"):
        r = httpx.post(f"{node.url}/api/v2/auth", json={**APP, "appId": app_id})
        assert r.status_code == 400 and r.json()["code"] == "ERR_MANIFEST_INVALID", app_id


def test_other_scheme(node):
    r = httpx.get(f"{node.url}/api/v2/names", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    assert r.json()["code"] == "ERR_UNSUPPORTED_AUTH_TYPE"


def test_untrusted_app_and_malformed_body(node):
    r = httpx.post(f"{node.url}/api/v2/auth", json={**APP, "appId": "com.acme.app"})
    assert r.status_code == 400
    assert r.json()["code"] == "ERR_MANIFEST_INVALID"
    too_deep = b'{"appId": "com.example.app", "displayName": "x", "version": "1", "n": %s}' % (
        b"[" * 30000 + b"]" * 30000)  # past Python's recursion limit, under the 64 KiB cap
    for body in [b"not json", b"{}", b'{"appId": 5, "displayName": "x", "version": "1"}', b"[]", too_deep]:
        r = httpx.post(f"{node.url}/api/v2/auth", content=body)
        assert r.status_code == 400, body
        assert r.json()["code"] == "ERR_BAD_REQUEST"


def test_bodies_read_whole_are_capped(node):
    """Bodies the node reads whole are refused past a few KiB, declared or streamed, before
    it holds them: the token route needs no token, and megabytes there cost memory."""
    manifest = json.dumps({**APP, "displayName": "x" * (100 << 10)}).encode()
    for send in (manifest, iter([manifest])):  # with a Content-Length, and chunked
        r = httpx.post(f"{node.url}/api/v2/auth", content=send)
        assert r.status_code == 413 and r.json()["code"] == "ERR_PAYLOAD_TOO_LARGE", r.text
    long_id = httpx.post(f"{node.url}/api/v2/auth", json={**APP, "appId": "com.example." + "a" * 300})
    assert long_id.status_code == 400 and "appId" in long_id.json()["message"]
    with node.client() as client:
        # a name's CID is read with flat memory: more than a CID is refused as soon as it is seen
        big = client.put("/api/v2/files/capped", content=b"x" * (64 << 20))
        assert big.status_code == 405 and big.json()["code"] == "ERR_METHOD_NOT_ALLOWED"
        assert client.get("/api/v2/names").status_code == 200
    assert httpx.post(f"{node.url}/api/v2/auth", json=APP).status_code == 200


def test_expired_token_and_other_nodes_token(fresh_node, node):
    short = fresh_node("--token-ttl", "1s", "--trust-app", "com.acme.app")
    r = httpx.post(f"{short.url}/api/v2/auth", json={**APP, "appId": "com.acme.app"})
    assert r.status_code == 200
    token = r.json()["token"]
    time.sleep(1.2)
    r = httpx.get(f"{short.url}/api/v2/names", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert r.json()["code"] == "ERR_TOKEN_EXPIRED"
    r = httpx.get(f"{short.url}/api/v2/names", headers={"Authorization": f"Bearer {node.token()}"})
    assert r.json()["code"] == "ERR_TOKEN_INVALID"


def test_a_token_lives_its_whole_ttl_whenever_in_the_second_it_was_issued():
    """An expiry cut to whole seconds took up to a second off every token's life."""
    tokens = TokenAuthority(NodeKey(bytes(32)), ttl=2.0)
    now = time.time()
    if now % 1 > 0.9:  # so that no second begins between the issue and the check
        time.sleep(0.15)
        now = time.time()
    issued = math.floor(now) + 0.9999 - 2.0  # a whole-second expiry would be this second's start
    assert tokens.check(tokens.issue("com.example.a", now=issued))["app"] == "com.example.a"
    with pytest.raises(TokenExpired):
        tokens.check(tokens.issue("com.example.a", now=now - 2.001))


def test_a_token_is_good_for_its_ttl_and_then_expired(fresh_node):
    short = fresh_node("--token-ttl", "2s", "--trust-app", "com.acme.app")
    asked = time.monotonic()
    token = httpx.post(f"{short.url}/api/v2/auth", json={**APP, "appId": "com.acme.app"}).json()["token"]
    answered = time.monotonic()
    bearer = {"Authorization": f"Bearer {token}"}
    time.sleep(max(0.0, asked + 1.0 - time.monotonic()))
    assert httpx.get(f"{short.url}/api/v2/names", headers=bearer).status_code == 200
    time.sleep(max(0.0, answered + 2.2 - time.monotonic()))
    assert httpx.get(f"{short.url}/api/v2/names", headers=bearer).json()["code"] == "ERR_TOKEN_EXPIRED"


def test_tokens_survive_restart(fresh_node):
    n = fresh_node()
    token = n.token()
    assert n.stop() == 0
    n.start()
    r = httpx.get(f"{n.url}/api/v2/names", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


def test_public_endpoints_need_no_token(node):
    assert httpx.get(f"{node.url}/health").json() == {"statusCode": 200, "status": "ok"}
    node_id = httpx.get(f"{node.url}/api/v2/node/id")
    assert node_id.status_code == 200
    assert node_id.headers["content-type"].startswith("text/plain")
    assert f"/p2p/{node_id.text}" in node.output()
    metrics = httpx.get(f"{node.url}/metrics")
    assert "edgefiles_http_requests_total" in metrics.text
    assert "edgefiles_blocks" in metrics.text


def test_a_path_no_route_takes_is_no_label_of_its_own_on_metrics(node):
    """Each such path was a series of its own: anyone could grow the registry without end, and
    a token typed into a wrong URL was published, unauthenticated, on /metrics."""
    for path in ("/api/ffpat_secret123/x/y", "/api/v2/nope1", "/api/v9/nope2", "/api/" + "a" * 300):
        assert httpx.get(f"{node.url}{path}").status_code == 404
    assert httpx.get(f"{node.url}/api/v2/node/id").status_code == 200  # a route keeps its label
    text = httpx.get(f"{node.url}/metrics").text
    assert "ffpat_secret123" not in text and "nope1" not in text and "a" * 300 not in text
    assert 'route="/api/*"' in text and 'route="/api/v2/node"' in text


def test_a_head_the_route_refuses_gets_the_head_of_its_gets_405(node):
    """RFC 9110 9.3.2: the same header fields as a GET; its message named HEAD, a byte longer."""
    got, head = httpx.get(f"{node.url}/api/v2/auth"), httpx.head(f"{node.url}/api/v2/auth")
    assert got.status_code == head.status_code == 405
    for field in ("content-length", "allow", "content-type"):
        assert head.headers[field] == got.headers[field], field


def test_token_guarded_routes(node):
    guarded = [("GET", "/api/v2/node/info"), ("GET", "/api/v2/names"), ("POST", "/api/v2/files"),
               ("PUT", "/api/v2/files/x"), ("DELETE", "/api/v2/files/x"), ("HEAD", "/api/v2/files/x")]
    for method, path in guarded:
        r = httpx.request(method, f"{node.url}{path}")
        assert r.status_code == 401, (method, path)


def test_node_info_shape(node):
    with node.client() as c:
        info = c.get("/api/v2/node/info").json()
    assert set(info) == {"peerId", "addrs", "peers", "blocks", "bytes", "pins", "names", "rollout",
                         "hostSuffix", "apiPort"}
    assert info["hostSuffix"] == "actyx.localhost" and info["apiPort"] == node.port
    assert len(info["rollout"]) == info["names"]
    assert all(a.endswith(f"/p2p/{info['peerId']}") for a in info["addrs"])
    assert info["addrs"]


def test_node_info_reports_the_host_route_a_name_is_served_at(fresh_node):
    node = fresh_node("--host-suffix", "edge.localhost")
    with node.client() as c:
        info = c.get("/api/v2/node/info").json()
    assert (info["hostSuffix"], info["apiPort"]) == ("edge.localhost", node.port)


def test_cors_preflight(node):
    r = httpx.options(f"{node.url}/api/v2/files", headers={
        "Origin": "http://example.com", "Access-Control-Request-Method": "DELETE"})
    assert r.status_code == 204
    assert "DELETE" in r.headers["access-control-allow-methods"]
    assert "Authorization" in r.headers["access-control-allow-headers"]
    assert "ETag" in r.headers["access-control-expose-headers"]


def test_a_405_names_the_methods_of_the_route_it_came_from(node):
    allowed = {"/api/v2/auth": "POST, OPTIONS", "/api/v2/names": "GET, HEAD, OPTIONS",
               "/api/v2/node/id": "GET, HEAD, OPTIONS"}
    for path, allow in allowed.items():
        r = httpx.request("PATCH", f"{node.url}{path}")
        assert (r.status_code, r.json()["code"]) == (405, "ERR_METHOD_NOT_ALLOWED")
        assert sorted(r.headers["allow"].split(", ")) == sorted(allow.split(", ")), path
    r = httpx.request("PATCH", f"{node.url}/api/v2/files")
    assert "POST" in r.headers["allow"].split(", ")
