"""Uploads: CIDs equal to Kubo's vectors, directories, hostile filenames, limits, truncation."""

import os

import httpx
import pytest
from conftest import entry_bytes, load_cases, materialize
from nodeproc import at_once, run_cli, wait_until

CASES = {c["id"]: c for c in load_cases("cid-vectors.json")}


def test_single_file_returns_its_kubo_cid(node):
    case = CASES["file-hello-world"]
    r = node.upload([("hello.txt", entry_bytes(case["entries"][0]))])
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain"
    assert r.text == case["cid"]["kubo-v1"]


def test_single_part_with_folder_in_filename_is_still_the_file_cid(node):
    case = CASES["file-262145"]
    r = node.upload([("some/dir/big.bin", entry_bytes(case["entries"][0]))])
    assert r.text == case["cid"]["kubo-v1"]


@pytest.mark.parametrize(
    "case_id",
    ["dir-spa", "dir-nested", "dir-unicode-names", "dir-names-with-spaces", "dir-sort-order",
     "dir-multichunk-file", "dir-same-content", "dir-empty-file", "dir-long-name"],
)
def test_directory_upload_matches_kubo(node, case_id):
    case = CASES[case_id]
    files = [(e["path"], entry_bytes(e)) for e in case["entries"] if not e.get("dir")]
    r = node.upload(files)
    assert r.status_code == 200, r.text
    assert r.text == case["cid"]["kubo-v1"]


def test_add_folder_equals_cid_command(node, vectors_dir):
    path = materialize(CASES["dir-spa"], vectors_dir)
    out = run_cli("cid", str(path))
    files = [(str(p.relative_to(path)), p.read_bytes()) for p in sorted(path.rglob("*")) if p.is_file()]
    assert node.upload(files).text == out.stdout.strip()


def test_browser_folder_upload_keeps_the_folder(node):
    r = node.upload([("site/index.html", b"<p>x</p>"), ("site/app.js", b"1")])
    with node.client() as c:
        listing = c.get(f"/api/v2/files/{r.text}").json()
    assert [child["name"] for child in listing["directory"]["children"]] == ["site"]


def test_ten_thousand_parts(node):
    files = [(f"f/{i:05d}.txt", f"{i}\n".encode()) for i in range(10_000)]
    r = node.upload(files)
    assert r.status_code == 200, r.text
    from edgefiles.node.cid import to_str
    from edgefiles.node.importer import TreeBuilder, import_bytes
    from edgefiles.node.profiles import KUBO_V1

    tree = TreeBuilder(KUBO_V1, lambda c, b: None)
    for name, data in files:
        tree.add_file(name.split("/"), import_bytes(KUBO_V1, data, lambda c, b: None))
    assert r.text == to_str(tree.finish().cid)
    with node.client() as c:
        sub = c.get(f"/api/v2/files/{r.text}/f").json()["directory"]
        assert len(sub["children"]) == 10_000
        assert c.get(f"/api/v2/files/{r.text}/f/09999.txt").text == "9999\n"


HOSTILE = [
    "../x", "a/../../b", "%2e%2e/x", "a/%2E%2E/b", "a%2fb", "a\\b", "..\\x", "./a",
    "a//b", "x/" + "n" * 256, "", "/",
]


@pytest.mark.parametrize("filename", HOSTILE, ids=[repr(h) for h in HOSTILE])
def test_hostile_filenames_are_rejected(node, filename):
    before = node.pins()
    r = node.upload([("ok.txt", b"fine"), (filename, b"evil")])
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "ERR_BAD_REQUEST"
    assert node.pins() == before
    assert httpx.get(f"{node.url}/health").status_code == 200


def test_255_byte_segment_is_fine(node):
    assert node.upload([("n" * 255, b"x"), ("b", b"y")]).status_code == 200


def test_a_path_of_many_long_segments_is_fine(node):
    deep = "/".join(f"{i:02d}" + "d" * 198 for i in range(25))  # 5,024 bytes, each segment valid
    root = node.upload([(f"{deep}/file.txt", b"deep down"), ("b", b"y")]).raise_for_status().text
    with node.client() as c:
        assert c.get(f"/api/v2/files/{root}/{deep}/file.txt").content == b"deep down"


@pytest.mark.parametrize(
    "files",
    [[("a.txt", b"1"), ("a.txt", b"2")], [("a", b"1"), ("a/b", b"2")], [("a/b", b"1"), ("a", b"2")]],
    ids=["duplicate", "file-then-dir", "dir-then-file"],
)
def test_path_conflicts(node, files):
    r = node.upload(files)
    assert r.status_code == 400
    assert r.json()["code"] == "ERR_BAD_REQUEST"
    said = "duplicate path 'a.txt'" if files[0][0] == files[1][0] else "'a' is both a file and a directory"
    assert r.json()["message"] == said  # whichever of the two came first


def _raw_post(node, body: bytes, content_type: str, length: int | None = None) -> httpx.Response:
    with node.client() as c:
        headers = {"Content-Type": content_type}
        if length is not None:
            headers["Content-Length"] = str(length)
        return c.post("/api/v2/files", content=body, headers=headers)


def test_part_without_filename(node):
    body = b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nhello\r\n--B--\r\n'
    r = _raw_post(node, body, "multipart/form-data; boundary=B")
    assert r.status_code == 400
    assert "filename" in r.json()["message"]


def test_nul_byte_in_raw_filename(node):
    """httpx would escape a NUL as %00 (a legal name); send the raw byte ourselves."""
    body = (b'--B\r\nContent-Disposition: form-data; name="f"; filename="a\x00b"\r\n\r\nx\r\n'
            b'--B\r\nContent-Disposition: form-data; name="f"; filename="c"\r\n\r\ny\r\n--B--\r\n')
    r = _raw_post(node, body, "multipart/form-data; boundary=B")
    assert r.status_code == 400
    assert "NUL" in r.json()["message"]


def test_literal_percent_names_are_kept(node):
    r = node.upload([("a%00b.txt", b"1"), ("100%.txt", b"2")])
    assert r.status_code == 200
    with node.client() as c:
        assert c.get(f"/api/v2/files/{r.text}/a%2500b.txt").content == b"1"


def test_no_parts(node):
    r = _raw_post(node, b"--B--\r\n", "multipart/form-data; boundary=B")
    assert r.status_code == 400


def test_not_multipart(node):
    r = _raw_post(node, b"hello", "text/plain")
    assert r.status_code == 415
    assert r.json()["code"] == "ERR_UNSUPPORTED_MEDIA_TYPE"


def test_malformed_multipart(node):
    r = _raw_post(node, b"garbage without boundaries", "multipart/form-data; boundary=B")
    assert r.status_code == 400
    no_boundary = _raw_post(node, b"--B--\r\n", "multipart/form-data")
    assert no_boundary.status_code == 400
    assert "boundary" in no_boundary.json()["message"]
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {node.token()}"}) as c:
        long_boundary = "b" * 300  # past what the parser takes (RFC 2046 allows 70)
        r = c.post("/api/v2/files", content=f"--{long_boundary}--\r\n",
                   headers={"Content-Type": f"multipart/form-data; boundary={long_boundary}"})
        assert (r.status_code, r.json()["code"]) == (400, "ERR_BAD_REQUEST")
        assert c.get("/api/v2/names").status_code == 200  # on the same connection: still open


def test_a_preamble_before_the_first_boundary_is_ignored(node):
    """RFC 2046 5.1.1: text before the first boundary line is a preamble, which a receiver
    ignores (it was a 400 'Expected boundary character'); a body of nothing but preamble is
    refused once it passes 64 KiB, not held whole."""
    part = b'--B\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\nhello\r\n--B--\r\n'
    plain = _raw_post(node, part, "multipart/form-data; boundary=B")
    for preamble in (b"This is a preamble.\r\n", b"one\r\n--Bx is no boundary line\r\n", b"\r\n",
                     b"x" * 60000 + b"\r\n"):
        r = _raw_post(node, preamble + part, "multipart/form-data; boundary=B")
        assert (r.status_code, r.text) == (200, plain.text), preamble[:40]
    junk = _raw_post(node, b"y" * 200_000, "multipart/form-data; boundary=B")
    assert junk.status_code == 400 and "no boundary line" in junk.json()["message"]


def test_truncated_multipart_pins_nothing(node):
    before = node.pins()
    body = b'--B\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\n' + b"x" * 5000
    r = _raw_post(node, body, "multipart/form-data; boundary=B")
    assert r.status_code == 400
    assert "truncated" in r.json()["message"]
    assert node.pins() == before


def test_client_disconnect_mid_upload(node):
    before = node.pins()
    node.start_unfinished_upload(3_000_000).close()
    assert httpx.get(f"{node.url}/health").status_code == 200
    assert node.pins() == before
    assert node.upload([("after.txt", b"still works")]).status_code == 200
    assert "Traceback" not in node.output()


def test_oversize_body(fresh_node):
    n = fresh_node("--max-upload", "1MiB")
    r = n.upload([("big.bin", b"z" * (2 << 20))])
    assert r.status_code == 413
    assert r.json()["code"] == "ERR_PAYLOAD_TOO_LARGE"
    chunked = httpx.post(
        f"{n.url}/api/v2/files",
        headers={"Authorization": f"Bearer {n.token()}", "Content-Type": "multipart/form-data; boundary=B"},
        content=iter([b'--B\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n',
                      b"q" * (2 << 20)]),
    )
    assert chunked.status_code == 413
    assert n.upload([("small.bin", b"ok")]).status_code == 200


def test_max_upload_bounds_every_body_of_the_api(fresh_node):
    """A name's CID and an app manifest are request bodies too: 413 past --max-upload."""
    n = fresh_node("--max-upload", "1000")
    cid = n.upload([("a.txt", b"a")]).text
    manifest = {"appId": "com.example.big", "displayName": "x" * 1000, "version": "1.0"}
    assert httpx.post(f"{n.url}/api/v2/auth", json=manifest).status_code == 413
    with n.client() as c:
        r = c.put("/api/v2/files/padded", content=" " * 1000 + cid)
        assert (r.status_code, r.json()["code"]) == (413, "ERR_PAYLOAD_TOO_LARGE")
        assert "--max-upload (1000 bytes)" in r.json()["message"]  # the bound it passed, not the CID's
        assert c.get("/api/v2/files/padded").status_code == 405  # nothing named
        assert c.put("/api/v2/files/padded", content=cid).status_code == 200


def test_concurrent_uploads_and_names(node):
    """Many requests at once: every upload and name write commits, none lands in another's transaction."""
    from concurrent.futures import ThreadPoolExecutor

    def work(i: int) -> tuple[int, int]:
        r = node.upload([(f"c{i}/a.txt", f"a{i}".encode()), (f"c{i}/b.txt", f"b{i}".encode())])
        with node.client() as c:
            put = c.put(f"/api/v2/files/conc-{i}", content=r.text)
            return r.status_code, put.status_code

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(work, range(48)))
    assert results == [(200, 200)] * 48
    with node.client() as c:
        names = {e["name"] for e in c.get("/api/v2/names").json()}
        assert {f"conc-{i}" for i in range(48)} <= names
        assert c.get("/api/v2/files/conc-7/c7/b.txt").content == b"b7"


def test_actyx_profile_node_gives_actyx_cids(fresh_node):
    n = fresh_node("--profile", "actyx")
    for case in load_cases("actyx-vectors.json"):
        files = [(e["path"], entry_bytes(e)) for e in case["entries"] if not e.get("dir")]
        if case["kind"] == "dir" and len(files) < 2:
            continue  # one part is answered with the file's CID, as Actyx does
        r = n.upload(files)
        assert r.text == case["cid"]["actyx"], case["id"]


def test_a_node_with_the_ipip_499_profile_gives_helias_cids(fresh_node):
    """`serve --profile unixfs-v1-2025`: uploads take the shape Helia gives its own files."""
    n = fresh_node("--profile", "unixfs-v1-2025")
    chosen = ("file-empty", "file-hello-world", "file-1mib", "file-1mib-plus-1", "file-10mib")
    cases = [c for c in load_cases("cid-vectors.json") if c["id"] in chosen]
    assert len(cases) == len(chosen)
    for case in cases:
        (entry,) = case["entries"]
        got = n.upload([(entry["path"], entry_bytes(entry))]).text
        assert got == case["cid"]["unixfs-v1-2025"], case["id"]


def test_a_filename_that_is_not_utf8_is_a_400(node):
    before = node.pins()
    body = b'--B\r\nContent-Disposition: form-data; name="f"; filename="\xff\xfe.txt"\r\n\r\nx\r\n--B--\r\n'
    r = _raw_post(node, body, "multipart/form-data; boundary=B")
    assert (r.status_code, r.json()["code"]) == (400, "ERR_BAD_REQUEST")
    assert node.pins() == before


def test_the_bytes_failed_uploads_wrote_go_back_to_the_disk(fresh_node):
    n = fresh_node("--store-quota", "50MiB")
    assert n.upload([("kept.txt", b"kept")]).status_code == 200

    def pack_bytes() -> int:
        return sum(p.stat().st_size for p in (n.data / "blocks").rglob("*") if p.is_file())

    def failing_upload() -> httpx.Response:
        """24 MiB of fresh bytes (imported as they arrive), then a part no upload may hold."""
        part = b'--B\r\nContent-Disposition: form-data; name="f"; filename="%s"\r\n\r\n'
        body = [part % b"big.bin", os.urandom(24 << 20), b"\r\n", part % b"../x", b"x\r\n--B--\r\n"]
        return httpx.post(f"{n.url}/api/v2/files", content=iter(body), timeout=60,
                          headers={"Authorization": f"Bearer {n.token()}",
                                   "Content-Type": "multipart/form-data; boundary=B"})

    for _ in range(3):
        assert failing_upload().status_code == 400
    wait_until(lambda: pack_bytes() < 8 << 20, timeout=30, what="the failed uploads' bytes to be given back")
    wait_until(lambda: "given back to the disk" in n.output(), timeout=10, what="the reclaim to be logged")
    assert httpx.get(f"{n.url}/api/v2/files/{n.upload([('k.txt', b'kept')]).text}",
                     headers={"Authorization": f"Bearer {n.token()}"}).content == b"kept"


@pytest.mark.parametrize(("disposition", "stored"), [
    (b'form-data; name="f"; filename="a"b.txt"', None),  # an unescaped quote: malformed, not `a`
    (b'form-data; name="f"; filename="open.txt', None),
    (b'form-data; name="f"; filename="q\\"x.txt"', 'q"x.txt'),
    (b'form-data; name="f"; filename="sp.txt" ; x=1', "sp.txt"),
])
def test_a_quote_in_a_filename_is_escaped_or_the_part_is_refused(node, disposition, stored):
    body = (b"--B\r\nContent-Disposition: " + disposition + b"\r\n\r\nq\r\n"
            b'--B\r\nContent-Disposition: form-data; name="g"; filename="other.txt"\r\n\r\no\r\n--B--\r\n')
    r = _raw_post(node, body, "multipart/form-data; boundary=B")
    if stored is None:
        assert (r.status_code, r.json()["code"]) == (400, "ERR_BAD_REQUEST")
    else:
        assert r.status_code == 200, r.text
        with node.client() as c:
            names = [e["name"] for e in c.get(f"/api/v2/files/{r.text}").json()["directory"]["children"]]
        assert stored in names


def test_wrap_with_directory_makes_one_part_a_folder_as_kubo_does(node):
    case = CASES["file-hello-world"]
    data = entry_bytes(case["entries"][0])
    with node.client() as client:
        for value in ("true", "1", "True"):
            wrapped = client.post("/api/v2/files", params={"wrap-with-directory": value},
                                  files=[("file", ("site/hello.txt", data))])
            assert wrapped.status_code == 200, wrapped.text
            listing = client.get(f"/api/v2/files/{wrapped.text}").json()["directory"]
            assert [c["name"] for c in listing["children"]] == ["site"]
            inner = client.get(f"/api/v2/files/{wrapped.text}/site").json()["directory"]["children"]
            assert inner == [{"name": "hello.txt", "size": len(data), "cid": case["cid"]["kubo-v1"]}]
        plain = client.post("/api/v2/files", params={"wrap-with-directory": "false"},
                            files=[("file", ("hello.txt", data))])
        assert plain.text == case["cid"]["kubo-v1"]
        bad = client.post("/api/v2/files", params={"wrap-with-directory": "yes please"},
                          files=[("file", ("hello.txt", data))])
        assert bad.status_code == 400 and "wrap-with-directory" in bad.json()["message"]


def test_one_content_uploaded_many_times_at_once_is_counted_and_kept_once(fresh_node):
    """Each upload writes its blocks before the others' are indexed; the rows of all but one
    do not land. Those bytes counted as stored (a quota filled by nothing) and were never
    given back to the disk (ten uploads of 20 MiB kept 200 MB of packs until a restart)."""
    n = fresh_node()
    data = os.urandom(20 << 20)
    cids = at_once(lambda: n.upload([("same.bin", data)]).text, 8)
    assert len(set(cids)) == 1 and cids[0].startswith("baf")
    with n.client() as client:
        assert client.get("/api/v2/node/info").json()["bytes"] < 21 << 20
        assert client.get(f"/api/v2/files/{cids[0]}").content == data

    def packs() -> int:
        return sum(p.stat().st_size for p in (n.data / "blocks").glob("pack-*.dat"))

    wait_until(lambda: packs() < 2 * (20 << 20), timeout=30, what="the extra copies to be given back")
    with n.client() as client:
        assert client.get(f"/api/v2/files/{cids[0]}").content == data


def test_one_content_uploaded_many_times_at_once_takes_its_room_in_the_quota_once(fresh_node):
    """The store quota is of what is stored, and all but one copy of raced uploads go back:
    eight uploads at once of 20 MiB under a 50 MiB quota each got a 507 once two were on
    their way, for content that takes 20 MiB."""
    n = fresh_node("--store-quota", "50MiB")
    data = os.urandom(20 << 20)
    statuses = at_once(lambda: n.upload([("same.bin", data)]).status_code, 8)
    assert statuses == [200] * 8
    with n.client() as client:
        assert client.get("/api/v2/node/info").json()["bytes"] < 21 << 20
        other = os.urandom(20 << 20)  # room is left for as much again, once the copies are settled
        assert n.upload([("other.bin", other)]).status_code == 200
