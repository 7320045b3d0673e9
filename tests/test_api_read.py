"""Reads by CID and by name: bodies, headers, ranges, listings, errors."""

import hashlib
from urllib.parse import quote, unquote

import httpx
import pytest
from conftest import gen
from edgefiles.node import car, dagpb, unixfs
from edgefiles.node.cid import DAG_PB, RAW, make_cid, to_str
from edgefiles.web.content import content_disposition, parse_range
from edgefiles.web.errors import RangeNotSatisfiable
from hypothesis import given
from hypothesis import strategies as st

BIG = gen("read-big", 21 * 262144 + 1000)  # several of the MiB runs a file is read in
SITE = [("index.html", b"<h1>home</h1>"), ("assets/app.js", b"console.log(1)"),
        ("docs/readme.txt", b"read me"), ("docs/caf\u00e9 menu.txt", b"menu"), ("big.bin", BIG)]


@pytest.fixture(scope="module")
def site(node):
    r = node.upload(SITE)
    assert r.status_code == 200
    return r.text


@pytest.fixture(scope="module")
def client(node):
    with node.client() as c:
        yield c


def test_file_by_path(client, site):
    r = client.get(f"/api/v2/files/{site}/assets/app.js")
    assert r.status_code == 200
    assert r.content == b"console.log(1)"
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["content-length"] == "14"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["cache-control"] == "private, max-age=31536000, immutable"
    assert r.headers["content-disposition"] == 'inline; filename="app.js"'
    assert r.headers["etag"].startswith('"baf')


def test_non_ascii_content_disposition(client, site):
    r = client.get(f"/api/v2/files/{site}/docs/caf%C3%A9%20menu.txt")
    assert r.content == b"menu"
    assert "filename*=UTF-8''caf%C3%A9%20menu.txt" in r.headers["content-disposition"]


@given(st.text(max_size=60))
def test_any_name_makes_a_header_that_carries_it(name):
    """Whatever a file is called, its Content-Disposition is printable ASCII (a control
    character made the server drop the connection) and carries the name itself."""
    value = content_disposition(name)
    assert all(" " <= c <= "~" for c in value)
    plain, _, star = value.removeprefix('inline; filename="').partition('"')
    assert len(plain) == len(name)
    if not star:
        assert plain == name
    elif not any("\ud800" <= c <= "\udfff" for c in name):  # a lone surrogate has no UTF-8
        assert unquote(star.removeprefix("; filename*=UTF-8''")) == name


def test_files_of_any_name_are_read(node, client):
    """A directory made elsewhere (imported as a CAR) may name files with control characters
    or quotes; each is read like any other."""
    leaf = b"oddly named"
    names = ["a\rb.txt", "tab\there.txt", 'q"uote.txt', "caf\u00e9.txt"]
    links = sorted((dagpb.Link(make_cid(RAW, leaf), n, len(leaf)) for n in names), key=lambda k: k.name)
    folder = dagpb.encode(links, unixfs.encode(unixfs.UnixFSData(type=1)))
    root = make_cid(DAG_PB, folder)
    body = car.header([root]) + b"".join(car.section(root, folder) + car.section(make_cid(RAW, leaf), leaf))
    r = client.post("/api/v2/car", content=body, headers={"Content-Type": "application/vnd.ipld.car"})
    assert r.status_code == 200, r.text
    for name in names:
        r = client.get(f"/api/v2/files/{to_str(root)}/{quote(name, safe='')}")
        assert r.status_code == 200 and r.content == leaf, (name, r.text)
        assert f"filename*=UTF-8''{quote(name, safe='')}" in r.headers["content-disposition"]


def test_multi_block_file_streams_whole(client, site):
    r = client.get(f"/api/v2/files/{site}/big.bin")
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(BIG).digest()
    assert r.headers["content-type"] == "application/octet-stream"


def test_head_has_headers_and_no_body(client, site):
    r = client.head(f"/api/v2/files/{site}/big.bin")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(BIG))


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-9", 0, 10), ("bytes=262140-262150", 262140, 262151), ("bytes=-100", len(BIG) - 100, len(BIG)),
     (f"bytes={len(BIG) - 5}-", len(BIG) - 5, len(BIG)), ("bytes=10-999999999", 10, len(BIG)),
     ("bytes=1048000-3146000", 1048000, 3146001), ("bytes=-2097152", len(BIG) - 2097152, len(BIG)),
     ("Bytes=0-9", 0, 10), ("BYTES=0-9", 0, 10), ("bytes=0-9,", 0, 10), ("bytes=, 0-9 ,,", 0, 10),
     ("bytes=10-" + "9" * 5000, 10, len(BIG)), ("bytes=-" + "9" * 5000, 0, len(BIG)),
     ("bytes=" + "0" * 5000 + "7-9", 7, 10)],
)
def test_ranges(client, site, header, start, end):
    r = client.get(f"/api/v2/files/{site}/big.bin", headers={"Range": header})
    assert r.status_code == 206
    assert r.content == BIG[start:end]
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(BIG)}"


@pytest.mark.parametrize("header", [f"bytes={len(BIG)}-", "bytes=999999999-1000000000", "bytes=-0",
                                    f"bytes={len(BIG)}-{len(BIG) + 10},-0, {len(BIG) + 50}-",
                                    "bytes=" + "9" * 5000 + "-", "bytes=" + "9" * 5000 + "-" + "9" * 5001])
def test_unsatisfiable_range(client, site, header):
    r = client.get(f"/api/v2/files/{site}/big.bin", headers={"Range": header})
    assert r.status_code == 416
    assert r.json()["code"] == "ERR_RANGE_NOT_SATISFIABLE"
    assert r.headers["content-range"] == f"bytes */{len(BIG)}"


@pytest.mark.parametrize("header", ["bytes=abc", "items=0-5", "bytes=5-1", "bytes", "bytes=0-1,5-,abc",
                                    "bytes=999999-,abc", "bytes =0-1",
                                    b"bytes=\xb2-3", b"bytes=0-\xb9", b"bytes=-\xb3"])
def test_invalid_range_is_ignored(client, site, header):
    r = client.get(f"/api/v2/files/{site}/index.html", headers={"Range": header})
    assert r.status_code == 200
    assert r.content == b"<h1>home</h1>"


@pytest.mark.parametrize("header, span", [
    ("bytes=0-1,99999999-", (0, 2)),  # one that cannot be met is dropped, as Kubo's gateway does
    ("bytes=99999999-, 3-4", (3, 5)),
    ("bytes=0-1,1-2", (0, 3)),  # overlapping: joined (RFC 9110 15.3.7.3)
    ("bytes=4-5,0-1", (0, 6)),  # a gap smaller than a multipart part's headers: joined
    ("bytes=50-99,0-1,90-120", (0, 121)),
])
def test_several_ranges_that_make_one_get_a_206_of_it(client, site, header, span):
    for method in ("GET", "HEAD"):
        r = client.request(method, f"/api/v2/files/{site}/big.bin", headers={"Range": header})
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes {span[0]}-{span[1] - 1}/{len(BIG)}"
        assert r.headers["content-length"] == str(span[1] - span[0])
        assert r.content == (BIG[span[0]:span[1]] if method == "GET" else b"")


def test_several_ranges_far_apart_get_the_whole(client, site):
    r = client.get(f"/api/v2/files/{site}/big.bin", headers={"Range": f"bytes=0-1,{len(BIG) - 2}-"})
    assert (r.status_code, r.content) == (200, BIG)


def test_a_suffix_range_of_an_empty_file_gets_the_empty_file(client, node):
    empty = node.upload([("empty.txt", b"")]).text
    for method in ("GET", "HEAD"):
        r = client.request(method, f"/api/v2/files/{empty}", headers={"Range": "bytes=-5"})
        assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "0")
        assert "content-range" not in r.headers
    nothing = client.get(f"/api/v2/files/{empty}", headers={"Range": "bytes=-0"})  # 14.1.3: never met
    assert (nothing.status_code, nothing.headers["content-range"]) == (416, "bytes */0")


def test_if_range_resumes_only_the_file_the_client_has_part_of(client, site, node):
    first = client.get(f"/api/v2/files/{site}/big.bin", headers={"Range": "bytes=0-99"})
    etag = first.headers["etag"]
    same = client.get(f"/api/v2/files/{site}/big.bin", headers={"Range": "bytes=100-199", "If-Range": etag})
    assert (same.status_code, same.content) == (206, BIG[100:200])
    other = node.upload([("other.bin", gen("other", 300_000))]).text
    for if_range in (etag, "Wed, 21 Oct 2015 07:28:00 GMT", f"W/{etag}"):  # a name repointed meanwhile
        r = client.get(f"/api/v2/files/{other}", headers={"Range": "bytes=100-", "If-Range": if_range})
        assert (r.status_code, len(r.content)) == (200, 300_000), if_range
        assert "content-range" not in r.headers


def test_a_directory_answer_varies_by_accept_and_each_listing_has_its_own_tag(client, site):
    as_json = client.get(f"/api/v2/files/{site}/docs/", headers={"Accept": "application/json"})
    as_html = client.get(f"/api/v2/files/{site}/docs/", headers={"Accept": "text/html"})
    assert as_json.headers["vary"] == as_html.headers["vary"] == "Accept"
    assert as_json.headers["etag"] != as_html.headers["etag"]
    stale = client.get(f"/api/v2/files/{site}/docs/",
                       headers={"Accept": "text/html", "If-None-Match": as_json.headers["etag"]})
    assert stale.status_code == 200 and stale.headers["content-type"].startswith("text/html")
    fresh = client.get(f"/api/v2/files/{site}/docs/",
                       headers={"Accept": "text/html", "If-None-Match": as_html.headers["etag"]})
    assert fresh.status_code == 304
    for r in (client.get(f"/api/v2/files/{site}", headers={"Accept": "text/html"}),  # 301 to the slash
              client.get(f"/api/v2/files/{site}/", headers={"Accept": "text/html"})):  # its index.html
        assert r.headers["vary"] == "Accept", r.status_code


def test_a_file_named_with_a_line_break_is_reached_as_percent_0a(node):
    parts = [(b"a\nb.txt", b"odd name"), (b"c.txt", b"plain")]  # as sent raw (httpx would escape it)
    body = b"".join(b'--B\r\nContent-Disposition: form-data; name="f"; filename="%s"\r\n\r\n%s\r\n' % part
                    for part in parts) + b"--B--\r\n"
    headers = {"Authorization": f"Bearer {node.token()}", "Content-Type": "multipart/form-data; boundary=B"}
    status, site = node.raw_request("POST", "/api/v2/files", body, headers)
    assert status == 200, site
    with node.client() as c:
        r = c.get(f"/api/v2/files/{site}/a%0Ab.txt")
        assert (r.status_code, r.content) == (200, b"odd name")
        names = [child["name"] for child in c.get(f"/api/v2/files/{site}").json()["directory"]["children"]]
        assert "a\nb.txt" in names


def test_etag_revalidation(client, site):
    etag = client.get(f"/api/v2/files/{site}/index.html").headers["etag"]
    r = client.get(f"/api/v2/files/{site}/index.html", headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""


def test_directory_json(client, site):
    for accept in [None, "application/json", "*/*"]:
        headers = {"Accept": accept} if accept else {}
        r = client.get(f"/api/v2/files/{site}", headers=headers)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        d = r.json()["directory"]
        assert d["name"] == "/" and d["cid"] == site
        names = [c["name"] for c in d["children"]]
        assert names == ["assets", "big.bin", "docs", "index.html"]
        sizes = {c["name"]: c["size"] for c in d["children"]}
        assert sizes["docs"] == len(b"read me") + len(b"menu")
        assert sizes["big.bin"] == len(BIG)
    sub = client.get(f"/api/v2/files/{site}/docs").json()["directory"]
    assert sub["name"] == "docs"


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_directory_html(client, site):
    r = client.get(f"/api/v2/files/{site}", headers={"Accept": BROWSER})
    assert r.status_code == 301
    assert r.headers["location"].endswith(f"/api/v2/files/{site}/")
    r = client.get(f"/api/v2/files/{site}/", headers={"Accept": BROWSER})
    assert r.content == b"<h1>home</h1>"
    assert r.headers["content-type"].startswith("text/html")
    r = client.get(f"/api/v2/files/{site}/docs/", headers={"Accept": BROWSER})
    assert r.headers["content-type"].startswith("text/html")
    assert 'href="readme.txt"' in r.text
    assert "caf\u00e9 menu.txt" in r.text
    prefer_json = {"Accept": "text/html;q=0.5, application/json"}
    json_wins = client.get(f"/api/v2/files/{site}/docs/", headers=prefer_json)
    assert json_wins.headers["content-type"] == "application/json"


@pytest.mark.parametrize("root", ["not-a-cid!", "Qmnope", "bafyinvalid", "zzzz"])
def test_invalid_root_is_405(client, root):
    r = client.get(f"/api/v2/files/{root}")
    assert r.status_code == 405
    assert r.json()["code"] == "ERR_METHOD_NOT_ALLOWED"
    assert "GET" in r.headers["allow"]


def test_unknown_cid_and_missing_path_are_404(client, site):
    unknown = "bafkreie7q3iidccmpvszul7kudcvvuavuo7u6gzlbobczuk5nqze7hlt7y"
    r = client.get(f"/api/v2/files/{unknown}")
    assert r.status_code == 404
    assert r.json()["code"] == "ERR_NOT_FOUND"
    dag_cbor = "bafyreib6f3wqhkqqbjeq3ddhuqmqmcd7ltsgsz5vq5b5rfqj7c6vrfxyey"
    assert client.get(f"/api/v2/files/{dag_cbor}").status_code == 404
    assert client.get(f"/api/v2/files/{site}/nope.txt").status_code == 404
    assert client.get(f"/api/v2/files/{site}/index.html/deeper").status_code == 404


@pytest.mark.parametrize("path", ["", "/", "{site}/%2e%2e/x", "{site}/a//b", "{site}/..%5cx", "{site}/a%00b"])
def test_bad_request_paths(node, site, path):
    raw = f"/api/v2/files/{path.format(site=site)}" if path else "/api/v2/files"
    with httpx.Client(base_url=node.url) as c:
        r = c.send(c.build_request("GET", raw, headers={"Authorization": f"Bearer {node.token()}"}))
    assert r.status_code == 400, raw
    assert r.json()["code"] == "ERR_BAD_REQUEST"


def test_cidv0_and_cidv1_of_the_same_dag_pb_both_work(client, site):
    from edgefiles.node.cid import parse, to_str

    v1 = parse(site)
    v0 = to_str(v1[2:])  # the bare multihash is the CIDv0 of a dag-pb node
    assert v0.startswith("Qm")
    assert client.get(f"/api/v2/files/{v0}/index.html").content == b"<h1>home</h1>"


def test_html_listing_carries_a_url_token_into_its_links(node, site):
    token = node.token()
    page = httpx.get(f"{node.url}/api/v2/files/{site}/docs/", params={"access_token": token},
                     headers={"Accept": BROWSER})
    assert f'href="readme.txt?access_token={token}"' in page.text
    follow = httpx.get(f"{node.url}/api/v2/files/{site}/docs/readme.txt", params={"access_token": token})
    assert follow.content == b"read me"


@given(header=st.text(alphabet=st.sampled_from("bytesBYTES=-,0123456789 ²³¹½\t"), max_size=24),
       size=st.integers(min_value=0, max_value=10**6))
def test_a_range_header_of_any_text_is_a_range_within_the_file_ignored_or_a_416(header, size):
    try:
        got = parse_range(header, size)
    except RangeNotSatisfiable as refused:
        assert refused.headers == {"Content-Range": f"bytes */{size}"}
        return
    assert got is None or 0 <= got[0] < got[1] <= size


def _import_blocks(client: httpx.Client, root: bytes, blocks: list[tuple[bytes, bytes]]) -> None:
    body = car.header([root]) + b"".join(b"".join(car.section(cid, data)) for cid, data in blocks)
    r = client.post("/api/v2/car", content=body, headers={"Content-Type": "application/vnd.ipld.car"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("shape", ["claims more than its children", "claims bytes it has not",
                                   "holds more than its children"])
def test_a_file_node_whose_sizes_lie_is_a_500_before_any_byte(client, node, shape):
    """Made elsewhere (a CAR, a peer): the answer never promises bytes it cannot send."""
    leaf = b"abc"
    link = [dagpb.Link(make_cid(RAW, leaf), "", len(leaf))]
    fields, links = {
        "claims more than its children": (dict(filesize=1000, blocksizes=(1000,)), link),
        "claims bytes it has not": (dict(filesize=10**15), []),
        "holds more than its children": (dict(filesize=3, blocksizes=(1000,)), link),
    }[shape]
    block = dagpb.encode(links, unixfs.encode(unixfs.UnixFSData(type=unixfs.FILE, **fields)))
    root = make_cid(DAG_PB, block)
    _import_blocks(client, root, [(root, block), (make_cid(RAW, leaf), leaf)])
    r = client.get(f"/api/v2/files/{to_str(root)}")
    assert (r.status_code, r.json()["code"]) == (500, "ERR_CORRUPT_BLOCK")
    if shape != "claims more than its children":  # told by the node itself: HEAD reads no leaf
        assert client.head(f"/api/v2/files/{to_str(root)}").status_code == 500
    assert "Traceback" not in node.output()


def test_media_types_browsers_show_rather_than_download(node, client):
    expected = {"page.xhtml": "application/xhtml+xml", "lib.cjs": "text/javascript; charset=utf-8",
                "anim.apng": "image/apng", "data.jsonld": "application/ld+json", "scan.tiff": "image/tiff",
                "model.glb": "model/gltf-binary", "app.js": "text/javascript; charset=utf-8",
                "notes.unknownext": "application/octet-stream"}
    folder = node.upload([(name, b"x") for name in expected]).text
    for name, media in expected.items():
        assert client.get(f"/api/v2/files/{folder}/{name}").headers["content-type"] == media, name


def test_if_match_serves_only_the_versions_it_names(client, site):
    path = f"/api/v2/files/{site}/index.html"
    tag = client.get(path).headers["etag"]
    for header in (tag, "*", f'"other", {tag}'):
        assert client.get(path, headers={"If-Match": header}).status_code == 200, header
    for header in ('"other"', f"W/{tag}"):  # compared strongly: a weak tag never matches
        r = client.get(path, headers={"If-Match": header})
        assert (r.status_code, r.json()["code"]) == (412, "ERR_PRECONDITION_FAILED"), header
