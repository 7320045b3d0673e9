"""Personal access tokens and the first user, black-box: `edgefiles admin` on a running and on
a stopped node, the FlowFuse platform routes `/api/v1/user[/tokens]`, and two nodes of a
swarm that accept each other's tokens and revocations."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from nodeproc import Node, admin, run_cli, two_members, wait_until

UNAUTHORIZED = {"code": "unauthorized", "error": "unauthorized"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def first_user(node: Node, email: str = "ada@example.com") -> dict:
    return admin(node, "user", "add", "--email", email, "--org", "acme", "--admin")


def test_the_first_user_and_their_tokens(fresh_node):
    node = fresh_node()
    ada = first_user(node)
    assert set(ada) >= {"id", "email", "org_id", "token"} and ada["token"].startswith("ffpat_")
    with httpx.Client(base_url=node.url) as http:
        me = http.get("/api/v1/user", headers=bearer(ada["token"]))
        assert me.status_code == 200
        assert me.json() == {"id": ada["id"], "email": "ada@example.com", "name": "ada",
                             "org_id": ada["org_id"], "admin": True}
        later = (datetime.now(UTC) + timedelta(days=2)).isoformat().replace("+00:00", "Z")
        made = http.post("/api/v1/user/tokens", headers=bearer(ada["token"]),
                         json={"name": "ci", "scope": ["project:files:read"], "expiresAt": later})
        assert made.status_code == 201
        body = made.json()
        assert set(body) == {"id", "name", "scope", "expiresAt", "token"}
        assert body["scope"] == ["project:files:read"]
        listed = http.get("/api/v1/user/tokens", headers=bearer(body["token"])).json()
        assert listed["count"] == 2 and {t["name"] for t in listed["tokens"]} == {"first token", "ci"}
        assert all(set(t) == {"id", "name", "scope", "expiresAt", "createdAt"} for t in listed["tokens"])
        revoke = f"/api/v1/user/tokens/{body['id']}"
        assert http.delete(revoke, headers=bearer(ada["token"])).status_code == 204
        gone = http.get("/api/v1/user", headers=bearer(body["token"]))
        assert gone.status_code == 401 and gone.json() == UNAUTHORIZED
        assert http.delete(revoke, headers=bearer(ada["token"])).status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer ffpat_", "Bearer ffpat_" + "A" * 43,
                                    "Basic dXNlcjpwYXNz", "Bearer " + "x" * 5000, "Bearer ffpat_\u00e9" * 3])
def test_garbage_tokens_get_the_platforms_401(node, header):
    headers = {} if header is None else {"Authorization": header.encode("utf-8")}
    with httpx.Client(base_url=node.url) as http:
        for method, path in (("GET", "/api/v1/user"), ("GET", "/api/v1/user/tokens"),
                             ("POST", "/api/v1/user/tokens"), ("DELETE", "/api/v1/user/tokens/x"),
                             ("POST", "/api/v1/admin/orgs")):
            r = http.request(method, path, headers=headers)
            assert r.status_code == 401 and r.json() == UNAUTHORIZED, (method, path)
            # a browser app reads why it was refused (CORS), and the scheme it should use
            assert r.headers["access-control-allow-origin"] == "*", (method, path)
            assert r.headers["www-authenticate"] == "Bearer", (method, path)


@pytest.mark.parametrize("body", [[], {"scope": []}, {"name": ""}, {"name": "x", "scope": "all"},
                                  {"name": "x", "expiresAt": "tomorrow"},
                                  {"name": "x", "expiresAt": "2001-01-01T00:00:00Z"}])
def test_a_bad_token_request_is_a_400_and_makes_nothing(fresh_node, body):
    node = fresh_node()
    ada = first_user(node)
    with httpx.Client(base_url=node.url) as http:
        r = http.post("/api/v1/user/tokens", headers=bearer(ada["token"]), json=body)
        assert r.status_code == 400 and r.json()["code"] == "invalid_request" and r.json()["error"]
        assert http.get("/api/v1/user/tokens", headers=bearer(ada["token"])).json()["count"] == 1


def test_a_token_request_nested_too_deeply_is_a_400(fresh_node):
    node = fresh_node()
    ada = first_user(node)
    r = httpx.post(f"{node.url}/api/v1/user/tokens", headers=bearer(ada["token"]),
                   content=b"[" * 30000 + b"]" * 30000)
    assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text


def test_an_expired_token_is_refused_at_once_and_gone_from_the_list(fresh_node):
    node = fresh_node()
    ada = first_user(node)
    short = admin(node, "token", "create", "--user", ada["id"], "--expires-in", "2s")
    assert short["expires_at"].endswith("Z")
    with httpx.Client(base_url=node.url) as http:
        assert http.get("/api/v1/user", headers=bearer(short["token"])).status_code == 200
        time.sleep(2.2)
        assert http.get("/api/v1/user", headers=bearer(short["token"])).json() == UNAUTHORIZED
        listed = http.get("/api/v1/user/tokens", headers=bearer(ada["token"])).json()
        ids = {t["id"] for t in listed["tokens"]}
        assert ids and short["id"] not in ids


def test_admin_works_on_a_stopped_node_too_and_it_lasts(tmp_path):
    node = Node(tmp_path / "n").start()
    node.stop()
    ada = first_user(node)
    assert [u["email"] for u in admin(node, "user", "ls")] == ["ada@example.com"]
    assert admin(node, "org", "ls") == [{"id": ada["org_id"], "name": "acme"}]
    node.start()
    try:
        with httpx.Client(base_url=node.url) as http:
            assert http.get("/api/v1/user", headers=bearer(ada["token"])).status_code == 200
        removed = admin(node, "user", "rm", ada["id"])  # through the running node: at once
        assert removed["id"] == ada["id"]
        with httpx.Client(base_url=node.url) as http:
            assert http.get("/api/v1/user", headers=bearer(ada["token"])).status_code == 401
    finally:
        node.stop()


def test_admin_errors_are_plain_words_with_exit_status_1(fresh_node):
    node = fresh_node()
    first_user(node)
    data = ("--data", str(node.data))
    again = run_cli("admin", "user", "add", "--email", "ada@example.com", "--org", "x", *data)
    assert again.returncode == 1 and "exists already" in again.stderr and "Traceback" not in again.stderr
    bad = run_cli("admin", "token", "create", "--user", "nobody", *data)
    assert bad.returncode == 1 and "no user" in bad.stderr
    usage = run_cli("admin", "token", "create", "--user", "x", "--expires-in", "soon", *data)
    assert usage.returncode == 2


def test_a_token_made_on_one_node_works_on_the_other_and_so_does_its_revocation(tmp_path):
    with two_members(tmp_path) as (a, b):
        ada = first_user(a)
        with httpx.Client(base_url=b.url) as on_b:
            wait_until(lambda: on_b.get("/api/v1/user", headers=bearer(ada["token"])).status_code == 200,
                       timeout=10, what="B to accept A's token")
            made = on_b.post("/api/v1/user/tokens", headers=bearer(ada["token"]), json={"name": "b"}).json()
        with httpx.Client(base_url=a.url) as on_a:
            wait_until(lambda: on_a.get("/api/v1/user", headers=bearer(made["token"])).status_code == 200,
                       timeout=10, what="A to accept B's token")
            revoked = on_a.delete(f"/api/v1/user/tokens/{made['id']}", headers=bearer(ada["token"]))
            assert revoked.status_code == 204
        with httpx.Client(base_url=b.url) as on_b:
            wait_until(lambda: on_b.get("/api/v1/user", headers=bearer(made["token"])).status_code == 401,
                       timeout=10, what="B to refuse the revoked token")


def test_things_and_groups_from_the_command_line(fresh_node):
    node = fresh_node()
    ada = first_user(node)
    sensor = admin(node, "thing", "add", "sensor-1", "--org", "acme")
    assert set(sensor) >= {"id", "name", "org_id", "key"} and sensor["org_id"] == ada["org_id"]
    rotated = admin(node, "thing", "rotate", sensor["id"])
    assert rotated["key"] != sensor["key"] and rotated["id"] == sensor["id"]
    group = admin(node, "group", "add", "line-a", "--org", "acme")
    assert set(group) >= {"id", "name", "org_id"}
    admin(node, "group", "member", "add", group["id"], "--thing", sensor["id"])
    viewer = admin(node, "group", "member", "add", group["id"], "--user", ada["id"], "--role", "viewer")
    assert viewer["role"] == "viewer"
    (listed,) = admin(node, "group", "ls")
    assert {(m["kind"], m["role"]) for m in listed["members"]} == {("thing", "member"), ("user", "viewer")}
    admin(node, "group", "member", "rm", group["id"], "--user", ada["id"])
    assert [t["id"] for t in admin(node, "thing", "ls")] == [sensor["id"]]
    assert admin(node, "thing", "rm", sensor["id"])["id"] == sensor["id"]
    assert admin(node, "thing", "ls") == [] and admin(node, "group", "rm", group["id"])["id"] == group["id"]
    data = ("--data", str(node.data))
    text = run_cli("admin", "thing", "add", "pump", "--org", "acme", *data)
    assert text.returncode == 0 and "shown once" in text.stdout
    missing = run_cli("admin", "group", "member", "add", "nope", "--user", ada["id"], *data)
    assert missing.returncode == 1 and "no group nope" in missing.stderr


def test_the_http_admin_api_provisions_users_things_and_groups(fresh_node):
    node = fresh_node()
    ada = first_user(node)
    with httpx.Client(base_url=node.url, headers=bearer(ada["token"])) as http:
        org = http.post("/api/v1/admin/orgs", json={"name": "globex"})
        assert org.status_code == 201 and org.json()["name"] == "globex"
        bob = http.post("/api/v1/admin/users", json={"email": "bob@globex.com", "org": "globex"})
        assert bob.status_code == 201 and bob.json()["org_id"] == org.json()["id"]
        bob = bob.json()
        extra = http.post(f"/api/v1/admin/users/{bob['id']}/tokens", json={"name": "ci", "expires-in": "1h"})
        assert extra.status_code == 201 and set(extra.json()) == {"id", "token", "expires_at"}
        thing = http.post("/api/v1/admin/things", json={"name": "sensor", "org": "globex"})
        assert thing.status_code == 201 and "key" in thing.json()
        group = http.post("/api/v1/admin/groups", json={"name": "line", "org": "globex"}).json()
        members = f"/api/v1/admin/groups/{group['id']}/members"
        member = http.post(members, json={"user": bob["id"], "role": "viewer"})
        assert member.status_code == 201 and member.json()["role"] == "viewer"
        for path, body, status in (("/api/v1/admin/users", {"email": "bob@globex.com", "org": "x"}, 409),
                                   ("/api/v1/admin/users", {"org": "x"}, 400),
                                   ("/api/v1/admin/users", ["not", "an", "object"], 400),
                                   ("/api/v1/admin/users/nobody/tokens", {}, 404),
                                   (members, {"user": "nobody"}, 404)):
            r = http.post(path, json=body)
            assert r.status_code == status and r.json()["error"], (path, r.text)
        bobs = bearer(bob["token"])
        assert http.post("/api/v1/admin/orgs", json={"name": "x"}, headers=bobs).status_code == 403
        assert http.delete(f"/api/v1/admin/users/{bob['id']}").status_code == 204
        assert http.get("/api/v1/user", headers=bearer(extra.json()["token"])).status_code == 401
        assert http.delete(f"/api/v1/admin/users/{bob['id']}").status_code == 404
    assert httpx.post(f"{node.url}/api/v1/admin/orgs", json={"name": "x"}).status_code == 401


@pytest.mark.parametrize("admin_field", ["false", "true", 0, 1, None, []])
def test_admin_is_a_json_boolean_or_the_user_is_not_made(fresh_node, admin_field):
    """`"admin": "false"` made a node-wide admin (any non-empty string counted as true), whose
    answer said "false"."""
    node = fresh_node()
    ada = first_user(node)
    with httpx.Client(base_url=node.url, headers=bearer(ada["token"])) as http:
        carl = {"email": "carl@acme.com", "org": "acme", "admin": admin_field}
        r = http.post("/api/v1/admin/users", json=carl)
        assert r.status_code == 400 and "admin is true or false" in r.json()["error"], r.text
    assert [user["email"] for user in admin(node, "user", "ls")] == ["ada@example.com"]


@pytest.mark.parametrize("expires_in", ["99999999999d", "0s", "0", "500ms", 3600, "١٢h", "²h"])
def test_a_token_expiry_out_of_range_is_a_400_and_makes_nothing(fresh_node, expires_in):
    """An expiry past year 9999 was a 500, but the token was stored all the same, and every
    listing of the user's tokens failed from then on; "0s" made a token expired at once."""
    node = fresh_node()
    ada = first_user(node)
    with httpx.Client(base_url=node.url, headers=bearer(ada["token"])) as http:
        made = f"/api/v1/admin/users/{ada['id']}/tokens"
        r = http.post(made, json={"name": "odd", "expires_in": expires_in})
        assert r.status_code == 400 and "expires_in" in r.json()["error"], r.text
        listed = http.get("/api/v1/user/tokens")
        assert listed.status_code == 200 and "odd" not in listed.text
        assert http.post(made, json={"name": "long", "expires_in": "36500d"}).status_code == 201


def test_a_data_dir_too_deep_for_a_unix_socket_still_serves(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    node = Node(deep / "data").start()
    try:
        assert httpx.get(f"{node.url}/health").status_code == 200
        out = run_cli("admin", "user", "ls", "--data", str(node.data))
        assert out.returncode == 1 and "admin socket" in out.stderr and "Traceback" not in out.stderr
    finally:
        node.stop()
