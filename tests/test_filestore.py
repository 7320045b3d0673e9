"""The Mainflux Filestore facade, black-box against real node processes: thing files, group
files and groupfiles, their shapes and status codes, hostile names, confinement between
things, groups and the Files API, and a file written on one node read on another."""

from __future__ import annotations

import json
import os
import socket

import httpx
import pytest
from nodeproc import Node, admin, at_once, two_members, wait_until


class World:
    """A node with one user (a member of group A, a viewer of group B) and two things (the
    first in both groups)."""

    def __init__(self, node: Node):
        self.node = node
        self.user = admin(node, "user", "add", "--email", "ada@example.com", "--org", "acme")
        self.outsider = admin(node, "user", "add", "--email", "eve@example.com", "--org", "acme")
        self.thing = admin(node, "thing", "add", "sensor-1", "--org", "acme")
        self.other = admin(node, "thing", "add", "sensor-2", "--org", "acme")
        self.group = admin(node, "group", "add", "line-a", "--org", "acme")
        self.viewed = admin(node, "group", "add", "line-b", "--org", "acme")
        admin(node, "group", "member", "add", self.group["id"], "--user", self.user["id"])
        viewer = ("--user", self.user["id"], "--role", "viewer")
        admin(node, "group", "member", "add", self.viewed["id"], *viewer)
        for g in (self.group, self.viewed):
            admin(node, "group", "member", "add", g["id"], "--thing", self.thing["id"])

    def as_thing(self, thing: dict | None = None) -> httpx.Client:
        key = (thing or self.thing)["key"]
        return httpx.Client(base_url=self.node.url, headers={"Authorization": f"Thing {key}"})

    def as_user(self, user: dict | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.node.url,
                            headers={"Authorization": f"Bearer {(user or self.user)['token']}"})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    node = Node(tmp_path_factory.mktemp("filestore") / "data").start()
    yield World(node)
    node.stop()


def upload(client: httpx.Client, path: str, name: str, data: bytes, ctype: str | None = None,
           metadata: str | None = None, method: str = "POST") -> httpx.Response:
    files = {"file": (name, data) if ctype is None else (name, data, ctype)}
    form = {} if metadata is None else {"metadata": metadata}
    return client.request(method, path, files=files, data=form)


def post_one_part(http: httpx.Client, filename: bytes, ctype: bytes) -> httpx.Response:
    """An upload of one file part whose name and type go as the bytes given (httpx would
    escape or refuse them)."""
    body = (b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="' + filename
            + b'"\r\nContent-Type: ' + ctype + b"\r\n\r\nx\r\n--bnd--\r\n")
    multipart = {"Content-Type": "multipart/form-data; boundary=bnd"}
    return http.post("/filestore/files", content=body, headers=multipart)


def test_a_thing_uploads_lists_reads_replaces_and_deletes_its_files(world):
    with world.as_thing() as http:
        r = upload(http, "/filestore/files", "sensor-data.csv", b"t,v\n1,2\n",
                   metadata='{"type":"readings","sensor":"temperature"}')
        assert r.status_code == 201
        made = r.json()
        assert made["name"] == "sensor-data.csv" and made["content_type"] == "text/csv"
        assert made["size"] == 8 and made["thing_id"] == world.thing["id"] and made["cid"].startswith("baf")
        assert made["metadata"] == {"type": "readings", "sensor": "temperature"} and made["created_at"]
        assert upload(http, "/filestore/files", "sensor-data.csv", b"again").status_code == 409
        upload(http, "/filestore/files", "calibration.json", b"{}", "application/json")
        listed = http.get("/filestore/files").json()
        assert listed["total"] >= 2 and listed["offset"] == 0 and listed["limit"] == 10
        assert [f["name"] for f in listed["files"]] == sorted(f["name"] for f in listed["files"])
        got = http.get("/filestore/files/sensor-data.csv")
        assert got.content == b"t,v\n1,2\n" and got.headers["content-type"] == "text/csv"  # as stored
        assert got.headers["etag"] == f'"{made["cid"]}"' and got.headers["content-length"] == "8"
        part = http.get("/filestore/files/sensor-data.csv", headers={"Range": "bytes=2-4"})
        assert part.status_code == 206 and part.content == b"v\n1"
        replaced = upload(http, "/filestore/files/sensor-data.csv", "whatever.bin", b"new", method="PUT")
        assert replaced.status_code == 200 and replaced.json()["size"] == 3
        assert replaced.json()["metadata"] == made["metadata"]  # kept when none is sent
        assert upload(http, "/filestore/files/nope.csv", "x", b"x", method="PUT").status_code == 404
        assert http.delete("/filestore/files/sensor-data.csv").status_code == 204
        assert http.get("/filestore/files/sensor-data.csv").status_code == 404
        assert http.delete("/filestore/files/sensor-data.csv").status_code == 404


def test_paging_is_by_name_bytewise(world):
    with world.as_thing(world.other) as http:
        for name in ("b.txt", "a.txt", "Z.txt", "\u00e9.txt", "c.txt"):
            assert upload(http, "/filestore/files", name, name.encode()).status_code == 201
        first = http.get("/filestore/files", params={"limit": 2}).json()
        rest = http.get("/filestore/files", params={"offset": 2, "limit": 200}).json()
        names = [f["name"] for f in first["files"] + rest["files"]]
        assert names == sorted(names, key=str.encode) and first["total"] == 5 and len(first["files"]) == 2
        for bad in ({"limit": 201}, {"limit": 0}, {"offset": -1}, {"limit": "ten"}):
            r = http.get("/filestore/files", params=bad)
            assert r.status_code == 400 and r.json()["error"]


@pytest.mark.parametrize("raw", ["a/b", "..", "%2e%2e", "a%2Fb", "a%5Cb", "a%00b", "a%7Fb", "%C3", "x" * 256])
def test_hostile_names_in_the_path_are_400(world, raw):
    status, body = raw_request(world, "GET", f"/filestore/files/{raw}", f"Thing {world.thing['key']}")
    assert status == 400 and "error" in json.loads(body)


@pytest.mark.parametrize("name", ["..", "a/b", "a\\b", "a\x00b", "tab\tname", "", "y" * 256])
def test_hostile_names_in_an_upload_are_400_and_store_nothing(world, name):
    with world.as_thing() as http:
        before = http.get("/filestore/files", params={"limit": 200}).json()["total"]
        r = post_one_part(http, name.encode(), b"text/plain")
        assert r.status_code == 400 and r.json()["error"]
        assert http.get("/filestore/files", params={"limit": 200}).json()["total"] == before


@pytest.mark.parametrize("ctype", ["text/csv; charset=\u65e5\u672c", "text/plain\x7f", "x/" + "y" * 300])
def test_a_file_whose_content_type_is_no_media_type_is_400_and_stores_nothing(world, ctype):
    """The part's Content-Type is sent back with the file: one a header cannot carry made
    every download of it a 500."""
    with world.as_thing() as http:
        r = post_one_part(http, b"typed.csv", ctype.encode())
        assert r.status_code == 400 and "Content-Type" in r.json()["error"], r.text
        assert http.get("/filestore/files/typed.csv").status_code == 404


def test_a_content_type_padded_with_whitespace_is_taken_without_it(world):
    with world.as_thing() as http:
        r = post_one_part(http, b"padded.csv", b"\ttext/csv;\tcharset=utf-8 ")
        assert r.status_code == 201 and r.json()["content_type"] == "text/csv;\tcharset=utf-8", r.text
        assert http.get("/filestore/files/padded.csv").headers["content-type"] == "text/csv;\tcharset=utf-8"


def test_bad_bodies_are_400(world):
    with world.as_thing() as http:
        for metadata in ("[1, 2]", "{not json", json.dumps({"k": "v" * (65 << 10)})):
            r = upload(http, "/filestore/files", "m.txt", b"x", metadata=metadata)
            assert r.status_code == 400 and r.json()["error"], metadata
        multipart = {"Content-Type": "multipart/form-data; boundary=x"}
        r = http.post("/filestore/files", content=b"--x\r\nbroken", headers=multipart)
        assert r.status_code == 400
        assert http.post("/filestore/files", content=b"raw").status_code == 400


def test_credentials_and_confinement(world):
    with world.as_thing() as mine:
        assert upload(mine, "/filestore/files", "private", b"mine").status_code == 201
    with world.as_thing(world.other) as theirs:
        assert theirs.get("/filestore/files/private").status_code == 404
    with world.as_user() as user:
        r = user.get("/filestore/files")
        assert r.status_code == 401 and r.json()["error"]  # a Bearer token on a thing route
    for header in (None, "Thing nope", "Thing", "Bearer x", "Basic Zm9vOmJhcg=="):
        headers = {} if header is None else {"Authorization": header}
        assert httpx.get(f"{world.node.url}/filestore/files", headers=headers).status_code == 401
    with httpx.Client(base_url=world.node.url) as http:  # a facade's names are not app names
        apps = {"Authorization": f"Bearer {world.node.token()}"}
        unknown = http.get("/api/v2/files/never-set", headers=apps)
        assert http.get("/api/v2/files/private", headers=apps).status_code == unknown.status_code >= 400
        assert "private" not in {n["name"] for n in http.get("/api/v2/names", headers=apps).json()}
        assert http.get("/", headers={"Host": "private.actyx.localhost"}).status_code == 404


def test_group_files_for_members_viewers_and_things(world):
    g, v = world.group["id"], world.viewed["id"]
    with world.as_user() as user:
        r = upload(user, f"/filestore/groups/{g}/files", "config.json", b'{"a":1}')
        assert r.status_code == 201 and r.json()["group_id"] == g
        assert r.json()["content_type"] == "application/json"
        assert user.get(f"/filestore/groups/{g}/files").json()["total"] == 1
        assert upload(user, f"/filestore/groups/{v}/files", "x.txt", b"x").status_code == 403  # a viewer
        assert user.get(f"/filestore/groups/{v}/files").status_code == 200
        assert user.get("/filestore/groups/no-such-group/files").status_code == 404
    with world.as_user(world.outsider) as eve:
        assert eve.get(f"/filestore/groups/{g}/files").status_code == 403
    with world.as_thing() as thing:
        assert thing.get(f"/filestore/groups/{g}/files/config.json").content == b'{"a":1}'
        assert upload(thing, f"/filestore/groups/{g}/files", "t.txt", b"x").status_code == 403
        assert thing.get("/filestore/groupfiles/config.json").content == b'{"a":1}'
        assert thing.get("/filestore/groupfiles/none.json").status_code == 404
    with world.as_thing(world.other) as outsider:
        assert outsider.get(f"/filestore/groups/{g}/files/config.json").status_code == 403
        assert outsider.get("/filestore/groupfiles/config.json").status_code == 404


def test_a_name_in_two_of_a_things_groups_is_a_409_that_points_to_the_group_route(tmp_path):
    node = Node(tmp_path / "n").start()
    try:
        world = World(node)
        admin(node, "group", "member", "add", world.viewed["id"], "--user", world.user["id"])  # a member now
        with world.as_user() as user:
            for g in (world.group, world.viewed):
                assert upload(user, f"/filestore/groups/{g['id']}/files", "fw.bin", b"1").status_code == 201
        with world.as_thing() as thing:
            r = thing.get("/filestore/groupfiles/fw.bin")
            assert r.status_code == 409 and "/filestore/groups/" in r.json()["error"]
    finally:
        node.stop()


def test_too_large_files_are_413_with_nothing_stored(tmp_path):
    node = Node(tmp_path / "n", "--filestore-max-file", "1KiB").start()
    try:
        world = World(node)
        with world.as_thing() as http:
            r = upload(http, "/filestore/files", "big.bin", b"x" * 1025)
            assert r.status_code == 413 and r.json()["error"]
            assert http.get("/filestore/files").json()["total"] == 0
            assert upload(http, "/filestore/files", "ok.bin", b"x" * 1024).status_code == 201
    finally:
        node.stop()


def test_a_file_written_on_one_node_is_read_on_another(tmp_path):
    with two_members(tmp_path) as (a, b):
        thing = admin(a, "thing", "add", "sensor", "--org", "acme")
        headers = {"Authorization": f"Thing {thing['key']}"}
        with httpx.Client(base_url=a.url, headers=headers) as on_a:
            made = upload(on_a, "/filestore/files", "r.csv", b"1,2", metadata='{"k": 1}')
            assert made.status_code == 201
        with httpx.Client(base_url=b.url, headers=headers) as on_b:
            wait_until(lambda: on_b.get("/filestore/files/r.csv").status_code == 200, timeout=10,
                       what="B to serve A's file")
            assert on_b.get("/filestore/files/r.csv").content == b"1,2"
            assert on_b.get("/filestore/files").json()["files"][0]["metadata"] == {"k": 1}


def raw_request(world: World, method: str, path: str, auth: str) -> tuple[int, str]:
    """A request whose path goes out byte for byte as written (no client normalizes it)."""
    with socket.create_connection(("127.0.0.1", world.node.port)) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
                  .encode())
        reply = b"".join(iter(lambda: s.recv(65536), b""))
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def test_a_facade_file_is_no_apps_to_read_by_cid_until_an_app_uploads_the_same(world):
    secret = b"calibration only sensor-1 may read"
    with world.as_thing() as thing:
        cid = upload(thing, "/filestore/files", "cal.bin", secret).json()["cid"]
    apps = {"Authorization": f"Bearer {world.node.token()}"}
    with httpx.Client(base_url=world.node.url, headers=apps) as http:
        for path in (f"/api/v2/files/{cid}", f"/api/v2/files/{cid}?format=car", f"/ipfs/{cid}?format=raw",
                     f"/ipfs/{cid}?format=car"):
            assert http.get(path).status_code == 404, path
        # nor by its CID's host, nor by a name an app points at it (which would serve it to all)
        assert http.get("/", headers={"Host": f"{cid}.actyx.localhost"}).status_code == 404
        assert http.put("/api/v2/files/leak", content=cid).status_code == 404
        assert http.get("/", headers={"Host": "leak.actyx.localhost"}).status_code == 404
        assert "leak" not in {n["name"] for n in http.get("/api/v2/names").json()}
        assert world.node.upload([("cal.bin", secret)]).status_code == 200  # an app has it too now
        file_cid = http.post("/api/v2/files", files=[("f", ("x.bin", secret))]).text
        assert file_cid == cid and http.get(f"/api/v2/files/{cid}").content == secret


def test_a_big_file_streams_in_and_gets_the_cid_any_upload_of_it_gets(world):
    data = bytes(range(256)) * ((3 << 20) // 256) + b"tail"
    with world.as_thing() as thing:
        made = upload(thing, "/filestore/files", "firmware.bin", data)
        assert made.status_code == 201 and made.json()["size"] == len(data)
        assert thing.get("/filestore/files/firmware.bin").content == data
    assert world.node.upload([("firmware.bin", data)]).text == made.json()["cid"]


def test_a_new_file_was_created_when_first_modified_and_keeps_that_time(world):
    with world.as_thing() as http:
        made = upload(http, "/filestore/files", "times.txt", b"1").json()
        assert made["created_at"] == made["updated_at"]
        again = upload(http, "/filestore/files/times.txt", "times.txt", b"2", method="PUT").json()
        assert again["created_at"] == made["created_at"] and again["updated_at"] > made["updated_at"]


def test_viewers_and_things_may_not_replace_or_delete_group_files_and_ranges_work_there(world):
    g, v = world.group["id"], world.viewed["id"]
    with world.as_user() as user:
        assert upload(user, f"/filestore/groups/{g}/files", "shared.txt", b"0123456789").status_code == 201
        part = user.get(f"/filestore/groups/{g}/files/shared.txt", headers={"Range": "bytes=3-5"})
        assert part.status_code == 206 and part.content == b"345"
        assert user.delete(f"/filestore/groups/{v}/files/none.txt").status_code == 403  # a viewer there
        put = upload(user, f"/filestore/groups/{v}/files/none.txt", "none.txt", b"x", method="PUT")
        assert put.status_code == 403
    with world.as_thing() as thing:
        assert thing.delete(f"/filestore/groups/{g}/files/shared.txt").status_code == 403
        put = upload(thing, f"/filestore/groups/{g}/files/shared.txt", "shared.txt", b"x", method="PUT")
        assert put.status_code == 403
    with world.as_user() as user:
        assert user.get(f"/filestore/groups/{g}/files/shared.txt").content == b"0123456789"
        assert user.delete(f"/filestore/groups/{g}/files/shared.txt").status_code == 204


def test_head_lists_and_never_uploads_even_where_post_is_refused(world):
    """Starlette answers HEAD on a GET route: it took the upload path, past the write check."""
    v = world.viewed["id"]
    with world.as_user() as user:
        sneaked = upload(user, f"/filestore/groups/{v}/files", "planted.bin", b"pwned", method="HEAD")
        assert sneaked.status_code == 200  # the listing's answer, without its body
        assert upload(user, f"/filestore/groups/{v}/files", "planted.bin", b"x").status_code == 403
        names = [f["name"] for f in user.get(f"/filestore/groups/{v}/files").json()["files"]]
        assert "planted.bin" not in names
    with world.as_thing() as thing:
        head = thing.head("/filestore/files")
        assert (head.status_code, head.content) == (200, b"")
        assert upload(thing, "/filestore/files", "by-head.bin", b"x", method="HEAD").status_code == 200
        assert thing.get("/filestore/files/by-head.bin").status_code == 404


def test_a_file_name_that_is_not_utf8_or_metadata_nested_too_deeply_is_a_400(world):
    with world.as_thing() as thing:
        r = post_one_part(thing, b"\xff\xfe.txt", b"text/plain")
        assert r.status_code == 400 and "error" in r.json(), r.text
        deep = "[" * 5000 + "]" * 5000
        r = upload(thing, "/filestore/files", "deep.json", b"{}", metadata=f'{{"a":{deep}}}')
        assert r.status_code == 400 and "error" in r.json(), r.text
        assert thing.get("/filestore/files/deep.json").status_code == 404


def test_a_form_of_many_fields_is_refused_early_and_stores_nothing(world):
    with world.as_thing() as thing:
        fields = {f"f{i}": "x" for i in range(33)}
        r = thing.post("/filestore/files", files={"file": ("many.txt", b"x")}, data=fields)
        assert r.status_code == 400 and "at most 32 fields" in r.json()["error"], r.text
        assert thing.get("/filestore/files/many.txt").status_code == 404
        fine = {f"f{i}": "x" for i in range(31)}
        r = thing.post("/filestore/files", files={"file": ("some.txt", b"x")}, data=fine)
        assert r.status_code == 201


def test_errors_of_every_layer_come_in_the_filestores_shape(world):
    with world.as_thing() as thing:
        assert upload(thing, "/filestore/files", "eight.txt", b"12345678").status_code == 201
        refused = thing.request("PATCH", "/filestore/files/eight.txt")
        assert refused.status_code == 405 and set(refused.json()) == {"error"}
        assert "GET" in refused.headers["allow"]
        past = thing.get("/filestore/files/eight.txt", headers={"Range": "bytes=8-"})
        assert past.status_code == 416 and set(past.json()) == {"error"}
        assert past.headers["content-range"] == "bytes */8"


@pytest.mark.parametrize("spelled", ["/filestore/%66iles/{name}", "/filestore/files/%63{rest}"])
def test_a_path_with_percent_encoded_characters_names_the_same_file(world, spelled):
    with world.as_thing() as http:
        assert upload(http, "/filestore/files", "coded.txt", b"same").status_code in (201, 409)
        path = spelled.format(name="coded.txt", rest="oded.txt")
        status, body = raw_request(world, "GET", path, f"Thing {world.thing['key']}")
        assert (status, body) == (200, "same")


def test_a_401_names_the_schemes_the_route_takes(world):
    node = world.node.url
    assert httpx.get(f"{node}/filestore/files").headers["www-authenticate"] == "Thing"
    r = httpx.get(f"{node}/filestore/groups/{world.group['id']}/files")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer, Thing"


def test_a_small_upload_past_the_store_quota_is_a_507_that_keeps_nothing(tmp_path):
    node = Node(tmp_path / "n", "--store-quota", "1MiB").start()
    try:
        world = World(node)
        with world.as_thing() as http:
            assert upload(http, "/filestore/files", "a.bin", os.urandom(900_000)).status_code == 201
            for name, size in (("b.bin", 300_000), ("c.bin", 3 << 20)):  # read whole, then streamed
                r = upload(http, "/filestore/files", name, os.urandom(size))
                assert r.status_code == 507 and r.json()["error"], name
            assert http.get("/filestore/files").json()["total"] == 1
            assert upload(http, "/filestore/files", "d.bin", os.urandom(50_000)).status_code == 201
        assert "Traceback" not in node.output()
    finally:
        node.stop()


def test_of_concurrent_deletes_of_one_file_one_succeeds(world):
    with world.as_thing() as http:
        assert upload(http, "/filestore/files", "race.bin", b"once").status_code == 201

    def delete() -> int:
        with world.as_thing() as own:
            return own.delete("/filestore/files/race.bin").status_code

    assert sorted(at_once(delete, 6)) == [204] + [404] * 5
