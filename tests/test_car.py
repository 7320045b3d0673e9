"""CAR v1: the codec on its own (property tests), then export and import through a real node
and the `edgefiles car` commands."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import gen
from edgefiles.node import car, dagpb, unixfs
from edgefiles.node.cid import DAG_PB, RAW, codec_of, make_cid, normalize, to_str
from edgefiles.node.cid import parse as parse_cid
from hypothesis import given, settings
from hypothesis import strategies as st
from nodeproc import run_cli, two_members, wait_until

blocks = st.lists(st.binary(max_size=3000), max_size=12).map(
    lambda datas: [(make_cid(RAW, d), d) for d in datas])


def archive(roots: list[bytes], pairs: list[tuple[bytes, bytes]]) -> bytes:
    return car.header(roots) + b"".join(part for cid, data in pairs for part in car.section(cid, data))


def parse_all(data: bytes, cuts: list[int]) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    parser, out, start = car.CarParser(), [], 0
    for cut in sorted({*cuts, len(data)}):
        out += parser.feed(data[start:cut])
        start = cut
    parser.finish()
    return parser.roots, out


@settings(max_examples=200)
@given(blocks, st.lists(st.integers(0, 40_000), max_size=8), st.integers(0, 3))
def test_archives_round_trip_however_they_arrive(pairs, cuts, root_count):
    roots = [cid for cid, _ in pairs[:root_count]] or [make_cid(RAW, b"r")]
    assert parse_all(archive(roots, pairs), cuts) == (roots, pairs)


@settings(max_examples=200)
@given(blocks.filter(bool), st.data())
def test_a_cut_short_archive_is_refused(pairs, data):
    """Cut anywhere but between sections (that is a shorter archive, and a valid one)."""
    whole = archive([pairs[0][0]], pairs)
    ends = [len(car.header([pairs[0][0]]))]
    for cid, block in pairs:
        ends.append(ends[-1] + len(b"".join(car.section(cid, block))))
    cut = data.draw(st.integers(0, len(whole) - 1).filter(lambda n: n not in ends))
    with pytest.raises(car.CarInvalid):
        parse_all(whole[:cut], [])


@settings(max_examples=200)
@given(blocks.filter(lambda p: any(d for _, d in p)), st.data())
def test_a_block_that_does_not_match_its_cid_is_refused(pairs, data):
    whole = bytearray(archive([pairs[0][0]], pairs))
    # a byte inside some block's data: the sections end with the data
    index = data.draw(st.sampled_from([i for i, (_, d) in enumerate(pairs) if d]))
    sections = sum(len(b"".join(car.section(c, d))) for c, d in pairs[: index + 1])
    end = len(car.header([pairs[0][0]])) + sections
    whole[end - 1 - data.draw(st.integers(0, len(pairs[index][1]) - 1))] ^= 0x01
    with pytest.raises(car.CarInvalid) as refused:
        parse_all(bytes(whole), [])
    assert str(refused.value).endswith(to_str(pairs[index][0]))  # the CID as the user knows it


@given(st.binary(max_size=200))
def test_garbage_is_refused_cleanly(data):
    try:
        parse_all(data, [])
    except car.CarInvalid:
        pass


def test_the_header_is_the_dag_cbor_every_implementation_writes():
    root = parse_cid("bafybeihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    body = car.header([root])[1:]
    # {"roots": [CID], "version": 1}, keys in DAG-CBOR order, the CID as tag 42 over 0x00 + CID
    assert body == b"\xa2eroots\x81\xd8\x2aX\x25\x00" + root + b"gversion\x01"
    assert car.decode_header(body) == [root]


def test_cidv0_blocks_are_read():
    leaf = dagpb.encode([], b"\x08\x02\x18\x00")
    v0 = normalize(make_cid(DAG_PB, leaf))[2:]  # the bare multihash
    assert codec_of(v0) == DAG_PB and len(v0) == 34
    assert parse_all(archive([v0], [(v0, leaf)]), [3]) == ([v0], [(v0, leaf)])


# -- through a node -------------------------------------------------------------------------
CAR = {"Content-Type": "application/vnd.ipld.car"}


def walk(client, cid_text: str) -> list[str]:
    """The blocks of a DAG depth first, as the node lists them block by block over its API."""
    out, stack = [], [parse_cid(cid_text)]
    while stack:
        cid = stack.pop()
        if to_str(cid) in out:
            continue
        out.append(to_str(cid))
        if codec_of(cid) == DAG_PB:
            block = client.get(f"/api/v2/files/{to_str(cid)}", params={"format": "car"}).content
            _, pairs = parse_all(block, [])
            stack.extend(reversed([link.cid for link in dagpb.decode(pairs[0][1]).links]))
    return out


def test_export_holds_every_block_once_depth_first_and_imports_into_another_node(node, fresh_node):
    app = [("index.html", b"<h1>car</h1>"), ("js/app.js", gen("car js", 700_000)),
           ("js/copy.js", gen("car js", 700_000)), ("empty.txt", b"")]  # copy.js: the same blocks
    cid = node.upload(app).text
    with node.client() as client:
        r = client.get(f"/api/v2/files/{cid}", params={"format": "car"})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/vnd.ipld.car; version=1"
        assert r.headers["content-length"] == str(len(r.content))  # stored here whole: laid out
        roots, pairs = parse_all(r.content, [])
        assert [c for c in roots] == [parse_cid(cid)]
        order = [to_str(c) for c, _ in pairs]
        assert order == walk(client, cid) and len(set(order)) == len(order)
        sub = client.get(f"/api/v2/files/{cid}/js", params={"format": "car"})
        assert parse_all(sub.content, [])[0] != roots  # a path's own DAG
    other = fresh_node()
    with other.client() as client:
        answer = client.post("/api/v2/car", content=r.content, headers=CAR)
        assert answer.status_code == 200 and answer.json() == {"roots": [cid], "blocks": len(pairs)}
        for path, data in app:
            assert client.get(f"/api/v2/files/{cid}/{path}").content == data
        assert client.get("/api/v2/node/info").json()["pins"] == 1  # pinned like an upload


def test_a_dag_fetched_while_it_is_exported_comes_whole_without_a_length(tmp_path):
    with two_members(tmp_path) as (a, b):
        cid = a.upload([("f.bin", os.urandom(3 << 20))]).text
        with a.client() as client:
            whole = client.get(f"/api/v2/files/{cid}", params={"format": "car"}).content
        with b.client() as client:
            wait_until(lambda: client.get("/api/v2/node/info").json()["peers"], what="B to meet A")
            r = client.get(f"/api/v2/files/{cid}", params={"format": "car"})
            assert r.status_code == 200 and r.content == whole
            assert "content-length" not in r.headers and r.headers["transfer-encoding"] == "chunked"
            wait_until(lambda: client.get("/api/v2/node/info").json()["bytes"] > 3 << 20, what="B to keep it")
            again = client.get(f"/api/v2/files/{cid}", params={"format": "car"})
            assert again.content == whole and again.headers["content-length"] == str(len(whole))


def test_exports_reuse_the_nodes_memory(fresh_node):
    """The MiB-sized buffers of an export come from memory the node freed before, not from
    fresh pages it must fault in (each first touch of a page costs microseconds on a VM): a
    node that left its malloc's defaults faults ~10,000 pages per 64 MiB exported."""
    n = fresh_node()
    cid = n.upload([("big.bin", os.urandom(32 << 20))]).text

    def faults() -> int:  # minor page faults of the node so far (proc(5): field 10)
        return int((Path("/proc") / str(n.proc.pid) / "stat").read_text().rsplit(")", 1)[1].split()[7])

    counts = []
    with n.client() as client:
        for _ in range(4):  # the heap grows to what an export holds, then stays
            before = faults()
            assert len(client.get(f"/api/v2/files/{cid}", params={"format": "car"}).content) > 32 << 20
            counts.append(faults() - before)
    assert min(counts[2:]) < 600, counts  # ~3,400 each with malloc's defaults


def test_a_client_that_leaves_mid_export_stops_it(fresh_node):
    n = fresh_node()
    cid = n.upload([("big.bin", os.urandom(48 << 20))]).text
    with n.client() as client:
        for _ in range(3):
            with client.stream("GET", f"/api/v2/files/{cid}", params={"format": "car"}) as r:
                assert int(r.headers["content-length"]) > 48 << 20
                next(r.iter_bytes(1 << 20))
        busy = psutil.Process(n.proc.pid).cpu_times()
        time.sleep(0.5)
        idle = psutil.Process(n.proc.pid).cpu_times()
        assert (idle.user + idle.system) - (busy.user + busy.system) < 0.2  # no export reads on
        assert len(client.get(f"/api/v2/files/{cid}", params={"format": "car"}).content) > 48 << 20
    assert "Traceback" not in n.output()


def file_node(links: list[dagpb.Link], sizes: list[int]) -> bytes:
    meta = unixfs.UnixFSData(unixfs.FILE, filesize=sum(sizes), blocksizes=tuple(sizes))
    return dagpb.encode(links, unixfs.encode(meta))


def test_a_leaf_in_doubt_is_read_and_a_leaf_with_links_cuts_the_answer(fresh_node, tmp_path):
    """A parent's Tsize tells whether a dag-pb child is a leaf. One that does not match the
    child's size (a careless importer's) has the child read to be sure, and the CAR is
    whole; one made to match a child that has links all the same cuts the answer short of
    its Content-Length, logged in one line."""
    tail = os.urandom(1000)
    tail_cid = make_cid(RAW, tail)
    middle = file_node([dagpb.Link(tail_cid, "", 1000)], [1000])
    middle_cid = make_cid(DAG_PB, middle)
    n = fresh_node()
    with n.client() as client:
        for tsize, size, whole in ((1010, 1000, True), (len(middle), len(middle) - 10, False)):
            top = file_node([dagpb.Link(middle_cid, "", tsize)], [size])
            top_cid = make_cid(DAG_PB, top)
            pairs = [(top_cid, top), (middle_cid, middle), (tail_cid, tail)]
            imported = client.post("/api/v2/car", content=archive([top_cid], pairs), headers=CAR)
            assert imported.status_code == 200
            if whole:
                r = client.get(f"/api/v2/files/{to_str(top_cid)}", params={"format": "car"})
                assert parse_all(r.content, []) == ([top_cid], pairs)
                assert r.headers["content-length"] == str(len(r.content))
                continue
            with pytest.raises(httpx.RemoteProtocolError):
                client.get(f"/api/v2/files/{to_str(top_cid)}", params={"format": "car"})
            (here := tmp_path / "out").mkdir()
            done = run_cli("car", "export", to_str(top_cid), "-o", str(here / "cut.car"), "--node", n.url)
            assert done.returncode == 1 and "broke off the download" in done.stderr, done.stderr
            assert list(here.iterdir()) == []  # neither the file nor its .part
        assert client.get("/api/v2/node/info").status_code == 200  # the node goes on
    log = n.output()
    assert f"CAR of {to_str(top_cid)} cut short" in log and "Traceback" not in log, log


def test_bad_archives_store_nothing(fresh_node):
    n = fresh_node()
    data = gen("a car to break", 600_000)
    cid = n.upload([("f.bin", data)]).text
    with n.client() as client:
        whole = client.get(f"/api/v2/files/{cid}", params={"format": "car"}).content
    fresh = fresh_node()
    flipped = bytearray(whole)
    flipped[-10] ^= 0x40
    with fresh.client() as client:
        no_root = car.header([]) + whole[len(car.header([parse_cid(cid)])):]  # CARv1: one or more roots
        for body in (bytes(flipped), whole[:-7], whole[:5], b"\xff" * 40, b"", no_root):
            r = client.post("/api/v2/car", content=body, headers=CAR)
            assert r.status_code == 400 and r.json()["code"] == "ERR_CAR_INVALID", r.text
        as_text = client.post("/api/v2/car", content=whole, headers={"Content-Type": "text/plain"})
        assert as_text.status_code == 415
        info = client.get("/api/v2/node/info").json()
        assert (info["blocks"], info["pins"]) == (0, 0)
    assert httpx.post(f"{fresh.url}/api/v2/car", content=whole, headers=CAR).status_code == 401


def test_car_commands_export_and_import(node, fresh_node, tmp_path):
    cid = node.upload([("page.html", b"<p>by car</p>"), ("big.bin", os.urandom(2 << 20))]).text
    out = tmp_path / "app.car"
    done = run_cli("car", "export", cid, "-o", str(out), "--node", node.url)
    assert done.returncode == 0, done.stderr
    other = fresh_node()
    done = run_cli("car", "import", str(out), "--node", other.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [cid]
    with other.client() as client:
        assert client.get(f"/api/v2/files/{cid}/page.html").content == b"<p>by car</p>"
    missing = run_cli("car", "import", str(tmp_path / "nope.car"), "--node", other.url)
    assert missing.returncode != 0 and "no such file" in missing.stderr


def test_car_import_reads_standard_input_and_says_a_folder_is_one(node, fresh_node, tmp_path):
    cid = node.upload([("piped.html", b"<p>through a pipe</p>"), ("b.txt", b"b")]).text
    assert run_cli("car", "export", cid, "-o", str(tmp_path / "a.car"), "--node", node.url).returncode == 0
    other = fresh_node()
    piped = subprocess.run([sys.executable, "-m", "edgefiles", "car", "import", "-", "--node", other.url],
                           input=(tmp_path / "a.car").read_bytes(), capture_output=True, timeout=60)
    assert piped.returncode == 0 and piped.stdout.split() == [cid.encode()], piped.stderr
    with other.client() as client:
        assert client.get(f"/api/v2/files/{cid}/piped.html").content == b"<p>through a pipe</p>"
    folder = run_cli("car", "import", str(tmp_path), "--node", other.url)
    assert folder.returncode == 1 and folder.stderr.startswith(f"edgefiles: {tmp_path} is a folder"), folder


def test_a_car_that_grows_while_it_is_imported_stores_nothing(node, fresh_node, tmp_path):
    """The file is the whole body: the check that it is unchanged comes before its last piece
    leaves, or the node would have every byte it was promised and keep them."""
    cid = node.upload([("big.bin", os.urandom(24 << 20))]).text
    grown = tmp_path / "a.car"
    assert run_cli("car", "export", cid, "-o", str(grown), "--node", node.url).returncode == 0
    more = b"".join(car.section(make_cid(RAW, b"more"), b"more"))  # the archive stays valid as it grows
    appender = subprocess.Popen([sys.executable, "-c", f"import sys\nwhile True:\n"
                                 f"    with open({str(grown)!r}, 'ab') as f: f.write({more!r})"])
    other = fresh_node()
    try:
        time.sleep(0.2)
        out = run_cli("car", "import", str(grown), "--node", other.url)
    finally:
        appender.kill()
        appender.wait()
    assert out.returncode == 1 and "changed while it was being uploaded" in out.stderr, out
    assert other.pins() == 0
    with other.client() as client:
        assert client.get(f"/api/v2/files/{cid}").status_code == 404


def identity_cid(codec: int, data: bytes) -> bytes:
    return bytes([1, codec, 0x00, len(data)]) + data  # CIDv1, identity multihash: the block itself


def test_identity_blocks_are_never_in_a_car_and_are_taken_from_one_without_being_stored(fresh_node):
    """The trustless gateway specification: a CAR MUST NOT include virtual blocks identified by
    identity CIDs. One that holds them all the same is checked, and nothing of it stored."""
    n = fresh_node()
    stored = gen("beside an inline leaf", 1000)
    inline = identity_cid(RAW, b"tiny")
    folder_meta = unixfs.encode(unixfs.UnixFSData(unixfs.DIRECTORY))
    stored_cid = make_cid(RAW, stored)
    links = [dagpb.Link(inline, "inline.txt", 4), dagpb.Link(stored_cid, "f.bin", 1000)]
    folder = dagpb.encode(links, folder_meta)
    folder_cid = make_cid(DAG_PB, folder)
    with n.client() as client:
        body = archive([folder_cid], [(folder_cid, folder), (inline, b"tiny"), (stored_cid, stored)])
        r = client.post("/api/v2/car", content=body, headers=CAR)
        assert r.status_code == 200, r.text
        assert client.get("/api/v2/node/info").json()["blocks"] == 2
        assert client.get(f"/api/v2/files/{to_str(folder_cid)}/inline.txt").content == b"tiny"
        folder_text = to_str(folder_cid)
        for url, params in ((f"/api/v2/files/{folder_text}", {"format": "car"}),
                            (f"/ipfs/{folder_text}", {"format": "car"}),
                            (f"/ipfs/{folder_text}/inline.txt", {"format": "car", "dag-scope": "block"})):
            exported = client.get(url, params=params).content
            _, pairs = parse_all(exported, [])
            assert inline not in [cid for cid, _ in pairs], url
            assert client.post("/api/v2/car", content=exported, headers=CAR).status_code == 200  # ours again
        assert client.get("/ipfs/bafkqaaa/nope", params={"format": "car"}).status_code == 404
        # an inline folder on the way to a file: a path step, and still no section of its own
        mid = dagpb.encode([dagpb.Link(stored_cid, "s.txt", 1000)], folder_meta)
        mid_cid = identity_cid(DAG_PB, mid)
        outer = dagpb.encode([dagpb.Link(mid_cid, "mid", len(mid))], folder_meta)
        outer_cid = make_cid(DAG_PB, outer)
        assert client.post("/api/v2/car", content=archive([outer_cid], [(outer_cid, outer)]),
                           headers=CAR).status_code == 200
        for path in (f"{to_str(outer_cid)}/mid/s.txt", f"{to_str(mid_cid)}/s.txt"):
            for scope in ("all", "entity", "block"):
                r = client.get(f"/ipfs/{path}", params={"format": "car", "dag-scope": scope})
                _, pairs = parse_all(r.content, [])
                assert mid_cid not in [cid for cid, _ in pairs] and stored_cid in [c for c, _ in pairs], path


def test_roots_and_blocks_this_node_could_not_serve_are_refused(fresh_node):
    n = fresh_node()
    block = b'{"a":1}'
    dag_json = bytes([1, 0xA9, 0x02, 0x12, 0x20]) + hashlib.sha256(block).digest()  # codec 0x0129
    good = make_cid(RAW, b"x")
    bodies = {
        "a root with no digest": archive([bytes.fromhex("01551220")], [(good, b"x")]),
        "a root with a short digest": archive([bytes.fromhex("015512050102030405")], [(good, b"x")]),
        "a codec of two bytes": archive([dag_json], [(dag_json, block)]),
    }
    with n.client() as client:
        for what, body in bodies.items():
            r = client.post("/api/v2/car", content=body, headers=CAR)
            assert (r.status_code, r.json()["code"]) == (400, "ERR_CAR_INVALID"), what
        info = client.get("/api/v2/node/info").json()
        assert (info["blocks"], info["pins"]) == (0, 0)


def test_a_car_of_a_dag_with_a_block_nowhere_holds_what_was_found_and_logs_one_line(fresh_node):
    n = fresh_node("--fetch-timeout", "1")
    here, gone = b"here", b"nowhere to be found"
    links = [dagpb.Link(make_cid(RAW, here), "a.txt", 4), dagpb.Link(make_cid(RAW, gone), "b.txt", len(gone))]
    folder = dagpb.encode(links, unixfs.encode(unixfs.UnixFSData(unixfs.DIRECTORY)))
    folder_cid = make_cid(DAG_PB, folder)
    with n.client() as client:
        body = archive([folder_cid], [(folder_cid, folder), (make_cid(RAW, here), here)])
        assert client.post("/api/v2/car", content=body, headers=CAR).status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # cut short: no clean end of the answer
            client.get(f"/ipfs/{to_str(folder_cid)}", params={"format": "car"})
        with client.stream("GET", f"/ipfs/{to_str(folder_cid)}", params={"format": "car"}) as r:
            got = b""
            with pytest.raises(httpx.RemoteProtocolError):
                for piece in r.iter_raw():
                    got += piece
    roots, pairs = parse_all(got, [])
    assert roots == [folder_cid] and pairs == [(folder_cid, folder), (make_cid(RAW, here), here)]
    log = n.output()
    assert f"CAR of {to_str(folder_cid)} cut short" in log and "Traceback" not in log


def test_a_dag_cbor_dag_is_exported_whole(fresh_node):
    import cbor2

    def cbor_cid(block: bytes) -> bytes:
        return bytes([1, 0x71, 0x12, 0x20]) + hashlib.sha256(block).digest()

    leaf_a, leaf_b = b"leaf a", b"leaf b"
    child = cbor2.dumps({"b": cbor2.CBORTag(42, b"\x00" + make_cid(RAW, leaf_b))})
    root = cbor2.dumps({"a": cbor2.CBORTag(42, b"\x00" + make_cid(RAW, leaf_a)),
                        "child": cbor2.CBORTag(42, b"\x00" + cbor_cid(child))})
    depth_first = [(cbor_cid(root), root), (make_cid(RAW, leaf_a), leaf_a), (cbor_cid(child), child),
                   (make_cid(RAW, leaf_b), leaf_b)]
    n = fresh_node()
    top = to_str(cbor_cid(root))
    with n.client() as client:
        shuffled = [depth_first[i] for i in (3, 1, 2, 0)]
        imported = client.post("/api/v2/car", content=archive([cbor_cid(root)], shuffled), headers=CAR)
        assert imported.json() == {"roots": [top], "blocks": 4}
        for url in (f"/api/v2/files/{top}", f"/ipfs/{top}"):
            roots, pairs = parse_all(client.get(url, params={"format": "car"}).content, [])
            assert roots == [cbor_cid(root)] and pairs == depth_first, url
        block_only = client.get(f"/ipfs/{top}", params={"format": "car", "dag-scope": "block"})
        assert parse_all(block_only.content, [])[1] == depth_first[:1]


def test_a_dag_cbor_block_whose_link_is_no_cid_is_exported_named_and_kept_whole(fresh_node):
    broken = bytes.fromhex("d82a43000171")  # tag 42 around the bytes of no whole CID
    root = bytes([1, 0x71, 0x12, 0x20]) + hashlib.sha256(broken).digest()
    n = fresh_node()
    with n.client() as client:
        imported = client.post("/api/v2/car", content=archive([root], [(root, broken)]), headers=CAR)
        assert imported.status_code == 200
        for url in (f"/ipfs/{to_str(root)}", f"/api/v2/files/{to_str(root)}"):
            r = client.get(url, params={"format": "car"})
            assert r.status_code == 200 and parse_all(r.content, [])[1] == [(root, broken)], url
        assert client.put("/api/v2/files/odd", content=to_str(root)).status_code == 200
        assert next(e for e in client.get("/api/v2/names").json() if e["name"] == "odd")["complete"] is True


def test_a_dag_with_an_inline_child_is_complete_once_its_other_blocks_are_here(fresh_node):
    n = fresh_node()
    stored = gen("next to an inline file", 500)
    inline = identity_cid(RAW, b"tiny")
    links = [dagpb.Link(inline, "inline.txt", 4), dagpb.Link(make_cid(RAW, stored), "f", 500)]
    folder = dagpb.encode(links, unixfs.encode(unixfs.UnixFSData(unixfs.DIRECTORY)))
    folder_cid = make_cid(DAG_PB, folder)
    with n.client() as client:
        body = archive([folder_cid], [(folder_cid, folder), (make_cid(RAW, stored), stored)])
        assert client.post("/api/v2/car", content=body, headers=CAR).status_code == 200
        assert client.put("/api/v2/files/inline-app", content=to_str(folder_cid)).status_code == 200
        entry = next(e for e in client.get("/api/v2/names").json() if e["name"] == "inline-app")
        assert (entry["complete"], entry["missing"]) == (True, 0)


def test_a_block_that_is_no_dag_pb_under_a_dag_pb_cid_is_exported_whole_as_one(fresh_node):
    """Hashed right, it is what its author made: linking nothing, as a dag-cbor block that is
    no CBOR (the answer was a 200 cut after its first section, and two ERROR lines)."""
    n = fresh_node()
    leaf = make_cid(RAW, b"leaf")
    not_unixfs = dagpb.encode([dagpb.Link(leaf, "", 4)], b"\xff\xfe no UnixFS")  # dag-pb, but its data
    for garbage in (b"\xff\xfe this is not protobuf at all", not_unixfs):
        cid = make_cid(DAG_PB, garbage)
        with n.client() as client:
            blocks = [(cid, garbage), (leaf, b"leaf")]
            assert client.post("/api/v2/car", content=archive([cid], blocks), headers=CAR).status_code == 200
            for url in (f"/api/v2/files/{to_str(cid)}", f"/ipfs/{to_str(cid)}"):
                # an entity (and a block) is the node alone: no entity can be read from it
                for scope in ("all", "entity", "block") if url.startswith("/ipfs") else ("all",):
                    r = client.get(url, params={"format": "car", "dag-scope": scope})
                    assert r.status_code == 200 and r.headers["content-length"] == str(len(r.content)), url
                    found = parse_all(r.content, [])[1]
                    linked = garbage == not_unixfs and scope == "all"
                    assert found == [(cid, garbage), *([(leaf, b"leaf")] if linked else [])], (url, scope)
    assert "ERROR" not in n.output()
