"""The trustless gateway (`/ipfs/<cid>[/<path>]`) of a real node: raw blocks, CARs of each
dag-scope, paths, entity-bytes, probes and refusals. Checked here with our own CAR parser;
tests/test_interop_helia.py checks it with Helia's gateway client and @ipld/car."""

from __future__ import annotations

import hashlib

import cbor2
import httpx
import pytest
from conftest import gen
from edgefiles.node import car, dagpb
from edgefiles.node.cid import DAG_CBOR, DAG_PB, codec_of, make_cid, to_str
from edgefiles.node.cid import RAW as RAW_CODEC
from edgefiles.node.cid import parse as parse_cid

RAW = {"Accept": "application/vnd.ipld.raw"}
APP = [("index.html", b"<h1>gateway</h1>"), ("assets/big.bin", gen("gateway big", 1_000_000)),
       ("assets/small.txt", b"small")]


@pytest.fixture(scope="module")
def site(node):
    return node.upload(APP).text


def car_of(client: httpx.Client, path: str, **params: str) -> tuple[list[str], list[str], dict[str, bytes]]:
    r = client.get(path, params={"format": "car", **params})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.headers["content-length"] == str(len(r.content))  # stored here whole: laid out
    assert r.headers["accept-ranges"] == "none"  # as gateway-conformance asks of every CAR
    parser = car.CarParser()
    pairs = list(parser.feed(r.content))
    parser.finish()
    names = [to_str(cid) for cid, _ in pairs]
    assert len(set(names)) == len(names)  # dups=n
    return [to_str(r) for r in parser.roots], names, {to_str(c): d for c, d in pairs}


def links(block: bytes) -> list[str]:
    return [to_str(link.cid) for link in dagpb.decode(block).links]


def test_a_raw_block_is_its_bytes(node, site):
    with node.client() as client:
        for ask in ({"params": {"format": "raw"}}, {"headers": RAW}):
            r = client.get(f"/ipfs/{site}", **ask)
            assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.ipld.raw"
            assert hashlib.sha256(r.content).digest() == parse_cid(site)[-32:]
            assert r.headers["etag"] == f'"{site}.raw"' and r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["content-disposition"] == f'attachment; filename="{site}.bin"'
            assert (r.headers["x-ipfs-path"], r.headers["x-ipfs-roots"]) == (f"/ipfs/{site}", site)
        head = client.head(f"/ipfs/{site}", params={"format": "raw"})
        assert head.status_code == 200 and head.content == b""


def test_car_scopes_hold_exactly_their_blocks(node, site):
    with node.client() as client:
        roots, all_blocks, blocks = car_of(client, f"/ipfs/{site}")
        assert roots == [site] and all_blocks[0] == site
        expected, stack = [], [site]  # the whole DAG, depth first
        while stack:
            cid = stack.pop()
            if cid not in expected:
                expected.append(cid)
                if codec_of(parse_cid(cid)) == DAG_PB:
                    stack.extend(reversed(links(blocks[cid])))
        assert all_blocks == expected
        assert car_of(client, f"/ipfs/{site}", **{"dag-scope": "block"})[1] == [site]
        assert car_of(client, f"/ipfs/{site}", **{"dag-scope": "entity"})[1] == [site]  # a directory: itself

        _, path_blocks, found = car_of(client, f"/ipfs/{site}/assets/big.bin", **{"dag-scope": "entity"})
        assets = [link.cid for link in dagpb.decode(blocks[site]).links if link.name == "assets"][0]
        big = [to_str(lk.cid) for lk in dagpb.decode(blocks[to_str(assets)]).links if lk.name == "big.bin"][0]
        assert path_blocks[:3] == [site, to_str(assets), big]  # the path, then the file
        told = client.get(f"/ipfs/{site}/assets/big.bin", params={"format": "car", "dag-scope": "block"})
        assert told.headers["x-ipfs-path"] == f"/ipfs/{site}/assets/big.bin"
        assert told.headers["x-ipfs-roots"] == ",".join([site, to_str(assets), big])
        assert set(path_blocks[3:]) == set(links(found[big]))
        assert b"".join(found[c] for c in links(found[big])) == APP[1][1]


def test_entity_bytes_sends_only_the_blocks_of_the_range(node, site):
    with node.client() as client:
        path = f"/ipfs/{site}/assets/big.bin"
        _, whole, found = car_of(client, path, **{"dag-scope": "entity"})
        leaves = links(found[whole[2]])  # 1,000,000 bytes: four leaves of 256 KiB
        assert len(leaves) == 4
        assert car_of(client, path, **{"entity-bytes": "0:999"})[1][3:] == leaves[:1]
        assert car_of(client, path, **{"entity-bytes": "262144:524288"})[1][3:] == leaves[1:3]
        assert car_of(client, path, **{"entity-bytes": "-1000:*"})[1][3:] == leaves[3:]
        assert car_of(client, path, **{"entity-bytes": "0:*"})[1] == whole
        past_the_end = {"format": "car", "entity-bytes": "2000000:*"}
        assert client.get(path, params=past_the_end).status_code == 400
        assert client.head(path, params=past_the_end).status_code == 400
        assert client.get(path, params=past_the_end, headers={"If-None-Match": "*"}).status_code == 400
        for loose in ("+1:2", " 1:2", "1_000:*", "\uff11:2", "1:", ":2", "1:2:3", "a:b", "1" * 5000 + ":*"):
            r = client.get(path, params={"format": "car", "entity-bytes": loose})
            assert (r.status_code, r.json()["code"]) == (400, "ERR_BAD_REQUEST"), loose


def test_a_head_of_a_missing_dag_answers_what_its_get_answers(node):
    missing = "bafkreig5crvaelc5dsd5svao7vcumkdq3yg5uiyry2ql2uufw4qyhexkaa"
    with node.client() as client:
        for params in ({"format": "car"}, {"format": "raw"}, {"format": "car", "dag-scope": "entity"}):
            got = client.get(f"/ipfs/{missing}", params=params)
            head = client.head(f"/ipfs/{missing}", params=params)
            assert got.status_code == head.status_code == 404, params
            assert head.headers["content-length"] == got.headers["content-length"], params


def test_the_whole_of_an_empty_file_is_its_root_block(node):
    """entity-bytes=0:* is "the entire file" (trustless gateway spec), which for an empty file
    is a zero-length range: equivalent to dag-scope=block. Past its start is still a 400."""
    with node.client() as client:
        empty = client.post("/api/v2/files", files=[("f", ("empty.txt", b""))]).text.strip()
        for cid, blocks in ((empty, [empty]), ("bafkqaaa", [])):  # an identity CID is in no CAR
            for whole in ("0:*", "0:0", "-1:*"):
                assert car_of(client, f"/ipfs/{cid}", **{"entity-bytes": whole})[1] == blocks, (cid, whole)
            r = client.get(f"/ipfs/{cid}", params={"format": "car", "entity-bytes": "1:*"})
            assert r.status_code == 400, cid


def test_the_probe_and_what_is_refused(node, site, fresh_node):
    with node.client() as client:
        assert client.get("/ipfs/bafkqaaa", params={"format": "raw"}).content == b""
        probe = client.get("/ipfs/bafkqaaa", params={"format": "car"})
        assert probe.status_code == 200 and car.decode_header(probe.content[1:]) == [parse_cid("bafkqaaa")]
        refused = [
            (f"/ipfs/{site}", {}), (f"/ipfs/{site}", {"format": "tar"}),
            ("/ipfs/not-a-cid", {"format": "raw"}), (f"/ipfs/{site}/index.html", {"format": "raw"}),
            (f"/ipfs/{site}", {"format": "car", "dag-scope": "most"}),
            *[(f"/ipfs/{site}", {"format": "car", name: value})  # a CAR variant not served
              for name, value in (("car-version", "2"), ("car-dups", "x"), ("car-order", "bfs"))],
            (f"/ipfs/{site}/%2e%2e/x", {"format": "car"}), ("/ipfs/", {"format": "raw"}),
        ]
        for path, params in refused:
            assert client.get(path, params=params).status_code == 400, (path, params)
        assert client.get(f"/ipfs/{site}/nope", params={"format": "car"}).status_code == 404
        served = {"format": "car", "car-version": "1", "car-order": "dfs", "car-dups": "n"}
        assert client.get(f"/ipfs/{site}", params=served).status_code == 200
    assert httpx.get(f"{node.url}/ipfs/{site}", params={"format": "raw"}).status_code == 401
    empty = fresh_node()
    with empty.client() as client:
        assert client.get(f"/ipfs/{site}", params={"format": "raw"}).status_code == 404
        cached = {"Cache-Control": "only-if-cached"}
        assert client.get(f"/ipfs/{site}", params={"format": "car"}, headers=cached).status_code == 412
        for wanted in ("raw", "car"):  # the specification: a HEAD for a root that is nowhere is a 404
            assert client.head(f"/ipfs/{site}", params={"format": wanted}).status_code == 404, wanted


def test_accept_weights_choose_the_answer(node, site):
    raw_type, car_type = "application/vnd.ipld.raw", "application/vnd.ipld.car"
    asks = {f"{raw_type};q=0.5, {car_type}; version=1; order=dfs": car_type,
            f"{car_type};q=0.2, {raw_type};q=0.9": raw_type, f"{raw_type}, {car_type}": raw_type,
            f"{car_type}; Q = 0.1, {raw_type};q=0.5": raw_type,
            f"{raw_type};q=0": None, "text/html, */*;q=0.8": None}
    with node.client() as client:
        for accept, expected in asks.items():
            r = client.get(f"/ipfs/{site}", headers={"Accept": accept})
            if expected is None:
                assert r.status_code == 400, accept
            else:
                assert r.status_code == 200 and r.headers["content-type"].startswith(expected), accept
                wanted = "raw" if expected == raw_type else "car"  # the URL that gives it without Accept
                assert r.headers["content-location"] == f"/ipfs/{site}?format={wanted}"
        scoped = client.get(f"/ipfs/{site}", params={"dag-scope": "block"}, headers={"Accept": car_type})
        assert scoped.headers["content-location"] == f"/ipfs/{site}?dag-scope=block&format=car"
        token = client.headers["authorization"].removeprefix("Bearer ")  # a credential no header repeats
        for name in ("access_token", "access%5Ftoken"):  # read as the token either way
            in_query = httpx.get(f"{node.url}/ipfs/{site}?{name}={token}&dag-scope=block",
                                 headers={"Accept": car_type})
            assert in_query.status_code == 200
            assert in_query.headers["content-location"] == f"/ipfs/{site}?dag-scope=block&format=car"
        assert "content-location" not in client.get(f"/ipfs/{site}", params={"format": "raw"}).headers
        for agreeing in ("application/vnd.ipld.raw", "*/*"):
            r = client.get(f"/ipfs/{site}", params={"format": "raw"}, headers={"Accept": agreeing})
            assert "content-location" not in r.headers, agreeing
        # format wins over an Accept it disagrees with, and the answer says which URL it is
        r = client.get(f"/ipfs/{site}", params={"format": "raw"}, headers={"Accept": car_type})
        assert r.headers["content-type"] == raw_type
        assert r.headers["content-location"] == f"/ipfs/{site}?format=raw"


def test_a_client_holding_the_etag_gets_a_304(node, site):
    with node.client() as client:
        for params in ({"format": "raw"}, {"format": "car"}, {"format": "car", "dag-scope": "entity"}):
            first = client.get(f"/ipfs/{site}", params=params)
            tag = first.headers["etag"]
            again = client.get(f"/ipfs/{site}", params=params, headers={"If-None-Match": tag})
            assert again.status_code == 304 and again.content == b"", params
            assert again.headers["etag"] == tag and again.headers["vary"] == first.headers["vary"]
            other = client.get(f"/ipfs/{site}", params=params, headers={"If-None-Match": '"another"'})
            assert other.status_code == 200 and other.content == first.content
            head = client.head(f"/ipfs/{site}", params=params, headers={"If-None-Match": tag})
            assert head.status_code == 304, params


def test_every_car_answer_has_a_valid_etag_of_its_own(node, site):
    """A CAR's Etag names its scope, and its path and range by digest: a path outside Latin-1
    still makes a header (it was a 500), and every shape of request gets a tag of its own. The
    answers vary by Accept and by token, which a shared cache must heed."""
    folder = node.upload([("日本語/ファイル.txt", b"names outside Latin-1"), ("index.html", b"<p>")]).text
    big = f"/ipfs/{site}/assets/big.bin"
    asks = [(f"/ipfs/{folder}/日本語/ファイル.txt", {}), (f"/ipfs/{folder}", {}),
            (f"/ipfs/{folder}", {"dag-scope": "block"}), (big, {"entity-bytes": "0:999"}),
            (big, {"entity-bytes": "0:1999"})]
    tags = set()
    with node.client() as client:
        for path, params in asks:
            r = client.get(path, params={"format": "car", **params})
            assert r.status_code == 200, (path, params, r.text)
            assert r.headers["vary"] == "Accept, Authorization"
            tags.add(r.headers["etag"])
        raw = client.get(f"/ipfs/{site}", params={"format": "raw"})
        assert raw.headers["vary"] == "Accept, Authorization"
    assert len(tags) == len(asks)
    assert all(tag.startswith('"') and tag.endswith('"') and tag.count('"') == 2 for tag in tags)


def test_a_raw_block_takes_a_range_and_a_filename(node, site):
    with node.client() as client:
        whole = client.get(f"/ipfs/{site}", params={"format": "raw"}).content
        r = client.get(f"/ipfs/{site}", params={"format": "raw"}, headers={"Range": "bytes=2-6"})
        assert (r.status_code, r.content) == (206, whole[2:7])
        assert r.headers["content-range"] == f"bytes 2-6/{len(whole)}"
        assert r.headers["accept-ranges"] == "bytes"
        for wanted, name in (("raw", "page.bin"), ("car", "site.car")):
            r = client.get(f"/ipfs/{site}", params={"format": wanted, "filename": name})
            assert r.headers["content-disposition"] == f'attachment; filename="{name}"', wanted


def test_a_car_variant_accept_asks_for_and_we_do_not_send_is_a_400_as_by_url(node, site):
    car_type = "application/vnd.ipld.car"
    with node.client() as client:
        for params in ("version=2", "dups=x", "order=bfs", 'version="2"'):
            r = client.get(f"/ipfs/{site}", headers={"Accept": f"{car_type}; {params}"})
            assert r.status_code == 400, params
        for accept in (f"{car_type}; version=1; dups=n", f"{car_type}; order=unk",
                       f"{car_type}; version=2, {car_type}; version=1;q=0.5"):
            assert client.get(f"/ipfs/{site}", headers={"Accept": accept}).status_code == 200, accept
        # the URL's format wins over Accept, and a variant Accept names that is not sent with it
        version_2 = {"Accept": f"{car_type}; version=2"}
        assert client.get(f"/ipfs/{site}", params={"format": "car"}, headers=version_2).status_code == 200


def test_dups_y_sends_a_block_each_time_the_dag_links_it(node):
    """gateway-conformance's optional cases: duplicates by Accept, by URL (which wins), with
    ?format=car too; an identity CID's CAR holds no block either way."""
    car_type = "application/vnd.ipld.car"
    same = gen("the same twice", 300_000)  # two leaves, each linked twice below the root
    root = node.upload([("a.bin", same), ("b.bin", same), ("c.txt", b"once")]).text
    with node.client() as client:
        once = client.get(f"/ipfs/{root}", params={"format": "car"})
        asks = [({}, {"Accept": f"{car_type}; version=1; order=dfs; dups=y"}),
                ({"format": "car"}, {"Accept": f"{car_type}; dups=y"}),
                ({"format": "car", "car-dups": "y"}, {"Accept": f"{car_type}; dups=n"})]
        for params, headers in asks:
            r = client.get(f"/ipfs/{root}", params=params, headers=headers)
            assert r.status_code == 200, (params, headers, r.text)
            assert r.headers["content-type"] == f"{car_type}; version=1; order=dfs; dups=y"
            assert r.headers["etag"] != once.headers["etag"]  # another body, another version
            parser = car.CarParser()
            sent = [to_str(cid) for cid, _ in parser.feed(r.content)]
            blocks = car_of(client, f"/ipfs/{root}")[2]
            file_of = {link.name: to_str(link.cid) for link in dagpb.decode(blocks[root]).links}
            assert file_of["a.bin"] == file_of["b.bin"]  # one file, linked twice
            leaves = links(blocks[file_of["a.bin"]])
            assert sent == [root, file_of["a.bin"], *leaves, file_of["a.bin"], *leaves, file_of["c.txt"]]
            assert int(r.headers["content-length"]) == len(r.content) > len(once.content) + len(same)
        none = client.get("/ipfs/bafkqaaa", headers={"Accept": f"{car_type}; dups=y"})
        assert none.status_code == 200 and none.headers["content-type"].endswith("dups=y")
        parser = car.CarParser()
        assert list(parser.feed(none.content)) == [] and parser.roots == [parse_cid("bafkqaaa")]


def test_a_cid_whose_blocks_no_node_here_could_verify_is_a_400_at_once(node):
    from multiformats import CID, multihash

    with node.client() as client:
        for hashed, codec in (("sha2-512", "raw"), ("blake2b-256", "raw"), ("sha2-256", "dag-json")):
            cid = CID("base32", 1, codec, multihash.digest(b"x", hashed))
            r = client.get(f"/ipfs/{cid}", params={"format": "raw"}, timeout=5)
            assert r.status_code == 400, (hashed, codec)


def test_a_car_of_the_files_api_has_an_etag_to_revalidate_with(node, site):
    with node.client() as client:
        assert client.put("/api/v2/files/car-site", content=site).status_code == 200
        for root in ("car-site", site):
            first = client.get(f"/api/v2/files/{root}", params={"format": "car"})
            tag = first.headers["etag"]
            assert tag == f'"{site}.car"' and first.headers["x-content-type-options"] == "nosniff"
            held = {"If-None-Match": tag}
            again = client.get(f"/api/v2/files/{root}", params={"format": "car"}, headers=held)
            assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", tag)


def test_a_head_of_a_car_says_the_length_its_get_sends(node, site):
    asks = [(f"/ipfs/{site}", {}), (f"/ipfs/{site}", {"dag-scope": "block"}),
            (f"/ipfs/{site}/assets/big.bin", {"entity-bytes": "0:999"}), (f"/ipfs/{site}/assets", {})]
    with node.client() as client:
        for path, params in asks:
            got = client.get(path, params={"format": "car", **params})
            head = client.head(path, params={"format": "car", **params})
            assert head.status_code == 200 and head.content == b"", (path, params)
            assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))


def test_a_car_path_goes_through_dag_cbor_to_the_block_it_links(node):
    """The trustless gateway paths as the path gateway does: through DAG-CBOR map keys and list
    indices too (it was a 404)."""
    leaves = [b"a leaf under files/single", b"a leaf in a list"]
    cids = [make_cid(RAW_CODEC, leaf) for leaf in leaves]
    links = [cbor2.CBORTag(42, b"\x00" + cid) for cid in cids]
    document = cbor2.dumps({"files": {"single": links[0], "note": "x"}, "list": [7, links[1]]})
    root = make_cid(DAG_CBOR, document)
    body = car.header([root]) + b"".join(
        b"".join(car.section(cid, data)) for cid, data in [(root, document), *zip(cids, leaves, strict=True)])
    with node.client() as client:
        r = client.post("/api/v2/car", content=body, headers={"Content-Type": "application/vnd.ipld.car"})
        assert r.status_code == 200, r.text
        for path, leaf in (("files/single", 0), ("list/1", 1)):
            roots, blocks, found = car_of(client, f"/ipfs/{to_str(root)}/{path}")
            assert roots == [to_str(root)] and blocks == [to_str(root), to_str(cids[leaf])], path
            assert found[to_str(cids[leaf])] == leaves[leaf]
        for nowhere in ("files/none", "files/note", "list/0", "list/5", "files/single/deeper"):
            r = client.get(f"/ipfs/{to_str(root)}/{nowhere}", params={"format": "car"})
            assert r.status_code == 404, nowhere
