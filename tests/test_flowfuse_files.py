"""The FlowFuse file server facade, black-box against real node processes and a fake platform."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading

import httpx
import pytest
from conftest import gen, open_names
from edgefiles.ans.files import NamedFiles
from edgefiles.web.flowfuse.files import namespace
from fake_platform import EVERY_PROJECT, FakePlatform
from nodeproc import Node, free_port, run_cli, wait_until

pytestmark = pytest.mark.timeout(120)
OCTET = {"Content-Type": "application/octet-stream"}
UNAUTHORIZED = {"code": "unauthorized", "error": "unauthorized"}


@pytest.fixture(scope="module")
def platform():
    p = FakePlatform()
    yield p
    p.close()


def config_file(folder, platform: FakePlatform, extra: str = "") -> str:
    path = folder / "flowforge-storage.yml"
    path.write_text(f"base_url: {platform.url}\nhost: 127.0.0.1\nport: 3001\n{extra}")
    return str(path)


@pytest.fixture(scope="module")
def ff(tmp_path_factory, platform):
    folder = tmp_path_factory.mktemp("ff")
    node = Node(folder / "data", "--flowfuse-config", config_file(folder, platform)).start()
    yield node
    node.stop()


def client(node: Node, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=node.url, headers=headers, timeout=30)


_teams = itertools.count(1)


@pytest.fixture
def team(platform):
    """A fresh team/project and a token the platform grants for it."""
    n = next(_teams)
    return f"team{n}", f"proj{n}", platform.issue(f"tok-proj{n}", f"proj{n}")


def test_tokens_are_checked_against_the_platform_as_upstream_does(ff, platform, team):
    t, p, token = team
    path = f"/v1/files/{t}/{p}/a.txt"
    with client(ff, None) as c:
        r = c.get(path)
        assert (r.status_code, r.json()) == (401, UNAUTHORIZED)
    for header in ("Basic abc", f"bearer {token}", "Bearer", "Bearer garbage.token"):
        r = httpx.get(ff.url + path, headers={"Authorization": header})
        assert (r.status_code, r.json()) == (401, UNAUTHORIZED), header
    with client(ff, token) as c:
        assert c.post(path, content=b"x", headers=OCTET).status_code == 200
        asked = [q for q in platform.requests if q["path"] == f"/account/check/project/{p}"]
        assert asked[-1]["ff-quota"] == "true"
        assert asked[-1]["user-agent"] == "FlowFuse Storage Server"
        assert asked[-1]["authorization"] == f"Bearer {token}"
        other = platform.issue("tok-other", "someone-else")
    with client(ff, other) as c:  # a token for another project never reaches this one
        assert c.get(path).status_code == 401
        assert c.get(f"/v1/quota/{t}/{p}").status_code == 401


@pytest.mark.parametrize("answer, allowed", [
    (b"null", False), (b"false", False), (b"0", False), (b'""', False), (b"NaN", False), (b"", False),
    (b"{}", True), (b"true", True), (b'{"quota": null}', True)])
def test_a_platform_answer_javascript_takes_for_no_is_no(ff, platform, team, answer, allowed):
    """Upstream: `if (!tokenResponse) throw` after JSON.parse; what JSON.parse refuses is a no too."""
    t, p, _ = team
    token = f"tok-{p}-{len(platform.bodies)}"
    platform.bodies[token] = answer
    with client(ff, token) as c:
        r = c.post(f"/v1/files/{t}/{p}/a.txt", content=b"x", headers=OCTET)
        assert r.status_code == (200 if allowed else 401), answer
        assert c.get(f"/v1/quota/{t}/{p}").json() == ({"used": 1} if allowed else UNAUTHORIZED)


def test_a_token_holding_a_space_is_refused_before_the_platform_hears_of_it(ff, platform, team):
    t, p, _ = team
    spaced = platform.issue("tok with space", p)
    asked = len(platform.requests)
    for header in (f"Bearer {spaced}", f"Bearer  {spaced}", "Bearer  tok"):
        r = httpx.get(f"{ff.url}/v1/files/{t}/{p}/a.txt", headers={"Authorization": header})
        assert (r.status_code, r.json()) == (401, UNAUTHORIZED), header
    assert len(platform.requests) == asked


def test_a_tokens_cached_yes_outlives_a_no_for_another_project(ff, platform, team):
    t, p, token = team
    with client(ff, token) as c:
        assert c.get(f"/v1/files/{t}/{p}/a.txt").status_code == 404  # allowed: no such file
        del platform.tokens[token]  # revoked: the node's cached yes still holds for 90 s
        assert c.get(f"/v1/files/{t}/{p}/a.txt").status_code == 404
        assert c.get(f"/v1/files/{t}/other-{p}/a.txt").status_code == 401
        assert c.get(f"/v1/files/{t}/{p}/a.txt").status_code == 404


def test_create_read_replace_append_delete(ff, team):
    t, p, token = team
    path = f"/v1/files/{t}/{p}/flows/data.txt"
    with client(ff, token) as c:
        r = c.post(path, content=b"hello", headers=OCTET)
        assert (r.status_code, r.content) == (200, b"")
        r = c.get(path)
        assert (r.status_code, r.content) == (200, b"hello")
        assert r.headers["content-type"] == "application/octet-stream"
        text = {"Content-Type": "text/plain; charset=utf-8"}
        assert c.post(path, content=b"bye", headers=text).status_code == 200
        assert c.get(path).content == b"bye"
        assert c.post(path, content=b"+more", headers={**OCTET, "FF_MODE": "append"}).status_code == 200
        assert c.get(path).content == b"bye+more"
        fresh = f"/v1/files/{t}/{p}/new.log"
        assert c.post(fresh, content=b"first", headers={**OCTET, "ff_mode": "append"}).status_code == 200
        assert c.get(fresh).content == b"first"
        for mode in ("Append", "bogus"):
            c.post(fresh, content=b"over", headers={**OCTET, "ff_mode": mode})
            assert c.get(fresh).content == b"over"
        c.post(fresh, content=b"hyphen", headers={**OCTET, "ff-mode": "append"})
        assert c.get(fresh).content == b"hyphen"
        ensure = {**OCTET, "ff_mode": "ensureDir"}
        assert c.post(f"/v1/files/{t}/{p}/somedir", headers=ensure).status_code == 200
        assert c.get(f"/v1/files/{t}/{p}/somedir").status_code == 404
        assert c.delete(path).status_code == 200
        r = c.get(path)
        assert r.status_code == 404
        assert r.json()["code"] == "ENOENT" and r.json()["error"] == "Not Found"
        r = c.delete(path)
        assert (r.status_code, r.json()["code"]) == (400, "ENOENT")


def test_content_types_and_body_limit(ff, team):
    t, p, token = team
    path = f"/v1/files/{t}/{p}/limits.bin"
    with client(ff, token) as c:
        r = c.post(path, content=b"{}", headers={"Content-Type": "application/json"})
        assert r.status_code == 415
        assert r.json() == {"statusCode": 415, "code": "FST_ERR_CTP_INVALID_MEDIA_TYPE",
                            "error": "Unsupported Media Type", "message": "Unsupported Media Type"}
        assert c.post(path, content=b"x").status_code == 415  # a body without a type
        big_json = c.post(path, content=bytes(11 << 20), headers={"Content-Type": "application/json"})
        assert big_json.status_code == 415  # the type is judged before the size, as upstream
        assert c.post(path).status_code == 400  # neither body nor type
        assert c.post(path, content=bytes(10 * 1024 * 1024), headers=OCTET).status_code == 200
        r = c.post(path, content=bytes(10 * 1024 * 1024 + 1), headers=OCTET)
        assert (r.status_code, r.json()["code"]) == (413, "FST_ERR_CTP_BODY_TOO_LARGE")
        assert len(c.get(path).content) == 10 * 1024 * 1024


def test_directories_and_files_do_not_mix(ff, team):
    t, p, token = team
    base = f"/v1/files/{t}/{p}"
    with client(ff, token) as c:
        assert c.post(f"{base}/a/b", content=b"leaf", headers=OCTET).status_code == 200
        assert c.get(f"{base}/a").status_code >= 400
        assert c.post(f"{base}/a", content=b"x", headers=OCTET).status_code == 400
        assert c.delete(f"{base}/a").status_code == 400
        assert c.post(f"{base}/a/b/c", content=b"x", headers=OCTET).status_code == 400
        assert c.get(f"{base}/a/b/c").status_code == 400
        assert c.get(f"{base}/a/b").content == b"leaf"


def test_names_are_url_decoded_and_the_query_is_not_part_of_them(ff, team):
    t, p, token = team
    base = f"/v1/files/{t}/{p}"
    with client(ff, token) as c:
        c.post(f"{base}/my%20file%C3%A9.txt?x=1", content=b"spaced", headers=OCTET)
        assert c.get(f"{base}/my file\u00e9.txt").content == b"spaced"
        c.post(f"{base}/a+b", content=b"plus", headers=OCTET)
        assert c.get(f"{base}/a+b").content == b"plus"
        assert c.get(f"{base}/a%20b").status_code == 404


@pytest.mark.parametrize("hostile", [
    "../other/x", "%2e%2e/other/x", "..%2fother%2fx", "a/%2e%2e/%2e%2e/x", "a%5cb", "a%00b", "a//b", "./x",
])
def test_hostile_paths_are_refused(ff, team, hostile):
    t, p, token = team
    for method in ("GET", "POST", "DELETE"):
        status, body = raw_request(ff, method, f"/v1/files/{t}/{p}/{hostile}", token)
        assert status == 400, (method, hostile)
        assert str(ff.data) not in body  # error messages never show server paths
        # upstream authenticates first: a token the platform refuses is a 401, whatever the path
        assert raw_request(ff, method, f"/v1/files/{t}/{p}/{hostile}", "garbage")[0] == 401, (method, hostile)


def raw_request(node: Node, method: str, path: str, token: str) -> tuple[int, str]:
    return node.raw_request(method, path, b"x", {**OCTET, "Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("team_id", ["..", "%2e%2e", "a%2fb", "a%5cb"])
def test_hostile_team_ids_are_refused(ff, team, team_id):
    _, p, token = team
    assert raw_request(ff, "POST", f"/v1/files/{team_id}/{p}/x", token)[0] == 400
    assert raw_request(ff, "POST", f"/v1/files/{team_id}/{p}/x", "garbage")[0] == 401
    assert raw_request(ff, "GET", f"/v1/context/{p}/%2e%2e?key=a", "garbage")[0] == 401
    assert raw_request(ff, "GET", f"/v1/context/{p}/%2e%2e?key=a", token)[0] == 400


@pytest.mark.parametrize("project_id", ["..", "%2e%2e", ".", "%2E", "", "a%2fb", "a%5cb", "a%00b"])
def test_hostile_project_ids_are_refused_before_the_platform_hears_of_them(ff, platform, team, project_id):
    """A 400 even for a token the platform would grant for any project: no hostile id is ever
    sent to it (".." would name another of its routes)."""
    t, _, _ = team
    token = platform.issue(f"tok-every-{project_id}", EVERY_PROJECT)
    asked = len(platform.requests)
    for method, path in (("POST", f"/v1/files/{t}/{project_id}/x"), ("GET", f"/v1/files/{t}/{project_id}/x"),
                         ("DELETE", f"/v1/files/{t}/{project_id}/x"), ("GET", f"/v1/quota/{t}/{project_id}/"),
                         ("GET", f"/v1/context/{project_id}/global?key=a"),
                         ("GET", f"/v1/context/{project_id}/global/keys"),
                         ("POST", f"/v1/context/{project_id}/g")):
        for used in (token, "garbage"):
            status, body = raw_request(ff, method, path, used)
            assert (status, json.loads(body)["code"]) == (400, "FST_ERR_VALIDATION"), (method, path, used)
        assert ff.raw_request(method, path, b"x", OCTET)[0] == 401  # no token at all: 401 first
    assert len(platform.requests) == asked


def test_trailing_slashes_and_unknown_context_routes_keep_their_answers(ff, platform, team):
    t, p, token = team
    with client(ff, token) as c:
        assert c.get(f"/v1/quota/{t}/{p}/").json() == {"used": 0}
        assert c.get(f"/v1/quota/{t}/{p}/x").status_code == 401  # no such route upstream
        assert c.get(f"/v1/files/{t}/{p}/").status_code == 400  # a file path is required
        for path in (f"/v1/context/{p}/global/", f"/v1/context/{p}/a/b/c"):
            assert c.get(path).status_code == 401, path  # unknown routes, judged for no segment
        for path in (f"/v1/context/{p}//keys", f"/v1/context/{p}//x/y"):
            assert c.get(path).status_code == 400, path  # an empty scope
    spaced = platform.issue("tok-spaced", "a b ü")
    with client(ff, spaced) as c:
        assert c.post(f"/v1/files/{t}/a%20b%20%C3%BC/f", content=b"x", headers=OCTET).status_code == 200
        assert c.get(f"/v1/files/{t}/a b ü/f").content == b"x"


def test_projects_and_teams_are_isolated(ff, platform, team):
    t, p, token = team
    other_token = platform.issue(f"tok-{p}-b", f"{p}-b")
    with client(ff, token) as c, client(ff, other_token) as d:
        c.post(f"/v1/files/{t}/{p}/same.txt", content=b"mine", headers=OCTET)
        d.post(f"/v1/files/{t}/{p}-b/same.txt", content=b"theirs", headers=OCTET)
        c.post(f"/v1/files/other-team/{p}/same.txt", content=b"other team", headers=OCTET)
        assert c.get(f"/v1/files/{t}/{p}/same.txt").content == b"mine"
        assert d.get(f"/v1/files/{t}/{p}-b/same.txt").content == b"theirs"
        assert c.get(f"/v1/files/other-team/{p}/same.txt").content == b"other team"
        assert d.get(f"/v1/files/{t}/{p}/same.txt").status_code == 401


def test_quota_route_and_file_quota(ff, platform, team):
    t, p, _ = team
    token = platform.issue(f"tok-{p}-q", p, file=100)
    with client(ff, token) as c:
        assert c.get(f"/v1/quota/{t}/{p}").json() == {"used": 0}
        assert c.post(f"/v1/files/{t}/{p}/a", content=b"x" * 60, headers=OCTET).status_code == 200
        assert c.post(f"/v1/files/{t}/{p}/b", content=b"y" * 30, headers=OCTET).status_code == 200
        assert c.get(f"/v1/quota/{t}/{p}").json() == {"used": 90}
        r = c.post(f"/v1/files/{t}/{p}/c", content=b"z" * 10, headers=OCTET)  # 90 + 10 is not < 100
        assert (r.status_code, r.json()) == (413, {"code": "over_quota", "error": "Over Quota", "limit": 100})
        assert c.get(f"/v1/files/{t}/{p}/c").status_code == 404
        r = c.post(f"/v1/files/{t}/{p}/a", content=b"+" * 10, headers={**OCTET, "ff_mode": "append"})
        assert r.status_code == 413
        assert c.delete(f"/v1/files/{t}/{p}/a").status_code == 200
        assert c.get(f"/v1/quota/{t}/{p}").json() == {"used": 30}
        assert c.post(f"/v1/files/{t}/{p}/c", content=b"z" * 10, headers=OCTET).status_code == 200
        assert c.get(f"/v1/quota/{t}").status_code == 401  # not a route upstream
    fraction = platform.issue(f"tok-{p}-f", p, file=50.5)  # 40 used: compared as given, as upstream does
    with client(ff, fraction) as c:
        assert c.post(f"/v1/files/{t}/{p}/d", content=b"w" * 10, headers=OCTET).status_code == 200
        r = c.post(f"/v1/files/{t}/{p}/e", content=b"v", headers=OCTET)
        assert (r.status_code, r.json()["limit"]) == (413, 50.5)
    text = platform.issue(f"tok-{p}-t", p, file=" 51 ")  # 50 used: JavaScript compares "51" as 51
    with client(ff, text) as c:
        r = c.post(f"/v1/files/{t}/{p}/e", content=b"v", headers=OCTET)
        assert (r.status_code, r.json()["limit"]) == (413, 51)


def test_concurrent_appends_all_land_whole(ff, team):
    t, p, token = team
    path = f"/v1/files/{t}/{p}/log.txt"
    lines = [f"line {i:03d} ".encode() * 8 + b"\n" for i in range(40)]

    def append(line: bytes) -> None:
        with client(ff, token) as c:
            assert c.post(path, content=line, headers={**OCTET, "ff_mode": "append"}).status_code == 200

    threads = [threading.Thread(target=append, args=(line,)) for line in lines]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    with client(ff, token) as c:
        got = c.get(path).content
    assert sorted(got.splitlines(keepends=True)) == sorted(lines)


def test_security_headers_only_on_v1(ff, team):
    t, p, token = team
    with client(ff, token) as c:
        c.post(f"/v1/files/{t}/{p}/h.txt", content=b"h", headers=OCTET)
        v1 = c.get(f"/v1/files/{t}/{p}/h.txt")
        assert v1.headers["x-frame-options"] == "DENY"
        assert v1.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" in v1.headers
        assert "strict-transport-security" not in v1.headers  # upstream turns HSTS off
    health = httpx.get(f"{ff.url}/health")
    assert health.json() == {"statusCode": 200, "status": "ok"}
    assert "x-frame-options" not in health.headers
    for method in ("GET", "OPTIONS"):  # an app's own /v1/ path on the host route: no facade's headers
        hosted = httpx.request(method, f"{ff.url}/v1/files/x", headers={"Host": "some-app.actyx.localhost"})
        assert "x-frame-options" not in hosted.headers, method


def test_error_answers_on_v1_carry_the_security_headers_too(ff, team):
    t, p, token = team
    with client(ff, token) as c:
        answers = [c.get(f"/v1/files/{t}/{p}/nope"), c.post(f"/v1/files/{t}/{p}/x", content=b"x"),
                   c.post(f"/v1/files/{t}/{p}/x", content=b"x" * (10 << 20 | 1), headers=OCTET)]
    with client(ff, "garbage") as c:
        answers.append(c.get(f"/v1/files/{t}/{p}/x"))
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    answers.append(httpx.options(f"{ff.url}/v1/files/{t}/{p}/x", headers=preflight))
    assert [r.status_code for r in answers] == [404, 415, 413, 401, 204]
    assert all(r.headers.get("x-frame-options") == "DENY" for r in answers)
    assert all(r.headers.get_list("x-content-type-options") == ["nosniff"] for r in answers)  # once
    two_hosts = b"GET /v1/files/%s/%s/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n"
    head, _ = ff.raw_exchange(two_hosts % (t.encode(), p.encode()))  # refused before any route
    assert head.startswith(b"HTTP/1.1 400 ") and b"\r\nx-frame-options: DENY" in head, head


def test_head_answers_as_get_without_a_body_and_writes_nothing(ff, team):
    t, p, token = team
    with client(ff, token) as c:
        assert c.post(f"/v1/files/{t}/{p}/h.txt", content=b"precious", headers=OCTET).status_code == 200
        head = c.head(f"/v1/files/{t}/{p}/h.txt", headers={"Content-Type": "text/plain"})
        assert (head.status_code, head.headers["content-length"], head.content) == (200, "8", b"")
        assert c.head(f"/v1/files/{t}/{p}/new.txt", headers=OCTET).status_code == 404
        assert c.get(f"/v1/files/{t}/{p}/h.txt").content == b"precious"
        assert c.get(f"/v1/files/{t}/{p}/new.txt").status_code == 404
        assert c.get(f"/v1/quota/{t}/{p}").json() == {"used": 8}


def test_parallel_writes_stay_within_the_file_quota(ff, platform, team):
    t, p, _ = team
    token = platform.issue(f"tok-{p}-race", p, file=100)

    async def write_all() -> list[int]:
        async with httpx.AsyncClient(base_url=ff.url, headers={"Authorization": f"Bearer {token}"},
                                     limits=httpx.Limits(max_connections=16), timeout=30) as c:
            sent = [c.post(f"/v1/files/{t}/{p}/f{i}", content=b"0123456789", headers=OCTET)
                    for i in range(40)]
            return [r.status_code for r in await asyncio.gather(*sent)]

    statuses = asyncio.run(write_all())
    assert statuses.count(200) == 9 and statuses.count(413) == 31  # 9 * 10 + 10 is not < 100
    with client(ff, token) as c:
        assert c.get(f"/v1/quota/{t}/{p}").json() == {"used": 90}


def test_files_replicate_to_another_node(tmp_path, platform):
    key = tmp_path / "swarm.key"
    key.write_text("7e" * 32)
    conf = config_file(tmp_path, platform)
    a = Node(tmp_path / "a", "--flowfuse-config", conf, "--swarm-key", str(key)).start()
    b = Node(tmp_path / "b", "--flowfuse-config", conf, "--swarm-key", str(key),
             "--peer", a.swarm_addr).start()
    try:
        token = platform.issue("tok-replicated", "rp")
        with client(a, token) as c:
            assert c.post("/v1/files/rt/rp/shared.json", content=b'{"v":1}', headers=OCTET).status_code == 200
        with client(b, token) as c:
            r = wait_until(lambda: (x := c.get("/v1/files/rt/rp/shared.json")).status_code == 200 and x,
                           what="the file on node B")
            assert r.content == b'{"v":1}'
            # counted once B has stored it: a read may be served from blocks still in flight
            wait_until(lambda: c.get("/v1/quota/rt/rp").json() == {"used": 7}, what="B's quota to count it")
    finally:
        a.stop()
        b.stop()


def test_a_file_from_a_peer_is_listed_and_counted_with_its_metadata(tmp_path):
    """A file's metadata travels in its name record: B lists it with the same size, type,
    times and user metadata, and counts it in the quota, before any block arrived. A name
    without metadata (as the Files API sets names) counts once its root is stored here; the
    quota once stayed 0 for good that way, a flaky CI failure."""
    ns, body = namespace("rt", "rp"), b'{"v":1}'

    async def scenario() -> None:
        a, b = await open_names(tmp_path)
        files_a, files_b = NamedFiles(a.core, a), NamedFiles(b.core, b)
        try:
            assert files_b.used(ns) == 0
            written = await files_a.write(ns, "shared.json", body, content_type="application/json",
                                          metadata={"by": "a", "n": 1})
            await b.registry.apply([a.registry.get("shared.json", ns)])
            assert files_b.info(ns, "shared.json") == written and written.size == len(body)
            assert files_b.used(ns) == len(body) and files_b.list(ns) == [written]
            appended = await files_a.write(ns, "shared.json", b"+", append=True)
            assert (appended.size, appended.created, appended.metadata) == (len(body) + 1, written.created,
                                                                            written.metadata)

            plain = await a.core.import_bytes(b"no metadata")  # a name set without metadata
            await a.core.commit(plain.batch, [plain.root])
            await a.set("plain.txt", plain.root, ns)
            await b.registry.apply([a.registry.get("plain.txt", ns)])
            assert files_b.exists(ns, "plain.txt") and files_b.used(ns) == len(body)
            transfer = b.core.store.batch()  # as Bitswap stores a fetched block
            transfer.put_many([(plain.root, a.core.store.get(plain.root))], bulk=True)
            await asyncio.to_thread(b.core.store.commit, transfer)
            assert [files_b.used(ns), files_b.used(ns)] == [len(body) + 11] * 2  # counted once
            await files_a.delete(ns, "plain.txt")
            await b.registry.apply([a.registry.table[(ns, "plain.txt")]])  # the tombstone
            assert files_b.used(ns) == len(body) and not files_b.exists(ns, "plain.txt")
        finally:
            files_a.close()
            files_b.close()
            for names in (a, b):
                await names.core.close()

    asyncio.run(scenario())


class NoApiNode(Node):
    """Started without --api, so the FlowFuse config (and PORT) choose the address."""

    def command(self) -> list[str]:
        cmd = super().command()
        i = cmd.index("--api")
        return cmd[:i] + cmd[i + 2 :]


def test_config_errors_and_address(tmp_path, platform):
    bad = tmp_path / "bad.yml"
    bad.write_text("base_url: [unclosed\n")
    r = run_cli("serve", "--data", str(tmp_path / "d"), "--flowfuse-config", str(bad))
    assert r.returncode == 1
    assert "not valid YAML" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    port = free_port()
    home = tmp_path / "home"
    (home / "etc").mkdir(parents=True)
    (home / "etc" / "flowforge-storage.yml").write_text(
        f"base_url: {platform.url}\nhost: 127.0.0.1\nport: 1\nsurprise: true\n"
    )
    node = NoApiNode(tmp_path / "n", api_port=port)
    os.environ["FLOWFORGE_HOME"], os.environ["PORT"] = str(home), str(port)
    try:
        node.start()
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        assert "ignoring unknown setting 'surprise'" in node.output()
    finally:
        del os.environ["FLOWFORGE_HOME"], os.environ["PORT"]
        node.stop()


def test_overwritten_files_do_not_keep_old_versions(tmp_path, platform):
    conf = config_file(tmp_path, platform)
    node = Node(tmp_path / "gc", "--flowfuse-config", conf, "--pin-uploads-for", "1s",
                "--gc-above", str(1 << 20)).start()
    try:
        token = platform.issue("tok-overwrite", "ow")
        with client(node, token) as c:
            for i in range(6):
                body = gen(f"version {i}", 700 << 10)
                assert c.post("/v1/files/t/ow/big.bin", content=body, headers=OCTET).status_code == 200
            info = lambda: node.client().get("/api/v2/node/info").json()  # noqa: E731
            wait_until(lambda: info()["bytes"] <= 1 << 20, timeout=60, what="old versions to be collected")
            assert c.get("/v1/files/t/ow/big.bin").content == gen("version 5", 700 << 10)
    finally:
        node.stop()


def test_metrics_show_upstreams_route_figures(ff, team):
    t, p, token = team
    with client(ff, token) as c:
        c.post(f"/v1/files/{t}/{p}/m.txt", content=b"m", headers=OCTET)
        c.get(f"/v1/files/{t}/{p}/m.txt")
    text = httpx.get(f"{ff.url}/metrics").text
    route = 'route="/v1/files/:teamId/:projectId/*"'
    assert any(line.startswith("http_request_duration_seconds_count") and route in line
               and 'method="GET"' in line and 'status_code="200"' in line for line in text.splitlines())
    assert "http_request_summary_seconds" in text
    assert "process_resident_memory_bytes" in text
    assert f"{t}/{p}" not in text  # concrete paths never become labels


def test_requests_arriving_together_ask_the_platform_once(ff, platform):
    token = platform.issue("tok-burst", "burst")
    clients = [client(ff, token) for _ in range(12)]
    go = threading.Barrier(len(clients))
    statuses = []

    def ask(c: httpx.Client) -> None:
        go.wait()
        statuses.append(c.get("/v1/quota/t/burst").status_code)

    platform.delay = 0.2  # every request arrives while the first answer is on its way
    try:
        threads = [threading.Thread(target=ask, args=(c,)) for c in clients]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        platform.delay = 0.0
        for c in clients:
            c.close()
    assert statuses == [200] * len(clients)
    assert len([q for q in platform.requests if q["path"] == "/account/check/project/burst"]) == 1


def test_a_platform_answer_that_trickles_past_half_a_second_is_a_401(ff, platform):
    """The 500 ms bound the whole exchange: each of its reads came quickly enough."""
    token = platform.issue("tok-trickle", "trickle")
    platform.trickle = 0.1  # a body of ~40 bytes over ~4 s
    try:
        with client(ff, token) as c:
            r = c.get("/v1/quota/t/trickle")
    finally:
        platform.trickle = 0.0
    assert r.status_code == 401
    with client(ff, token) as c:  # not cached as refused: asked again, and granted
        assert c.get("/v1/quota/t/trickle").status_code == 200


def test_a_file_whose_content_is_nowhere_is_a_404_in_the_facades_shape(fresh_node, tmp_path, platform, team):
    """A newer version named by a peer whose blocks never came (here: a block a repair dropped):
    the read was a 500 in the Files API's shape, with a traceback."""
    from test_fsck import biggest_block, flip_byte, fsck

    t, p, token = team
    node = fresh_node("--flowfuse-config", config_file(tmp_path, platform), "--fetch-timeout", "1")
    path = f"/v1/files/{t}/{p}/big.bin"
    with client(node, token) as c:
        assert c.post(path, content=os.urandom(3 << 20), headers=OCTET).status_code == 200
    node.stop()
    _, pack, offset = biggest_block(node.data)
    flip_byte(pack, offset + 1000)
    assert fsck(node.data, "--repair")[1]["repaired"]["dropped"] == 1
    node.start()
    with client(node, token) as c:
        r = c.get(path)
        assert r.status_code == 404 and r.json()["code"] == "ENOENT", r.text
        assert r.json()["statusCode"] == 404 and "no peer sent it" in r.json()["message"]
        assert c.head(path).status_code == 404
    assert "Traceback" not in node.output()
