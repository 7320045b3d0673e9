"""The FlowFuse context store facade: property paths (pure) and the routes, black-box."""

from __future__ import annotations

import itertools
import json
import math
import threading

import httpx
import pytest
from edgefiles.web.flowfuse import jsvalues, properties
from edgefiles.web.flowfuse.context import SQL_INTEGER_MAX, page_window
from fake_platform import FakePlatform
from hypothesis import given
from hypothesis import strategies as st
from nodeproc import Node
from pgserver import PostgresServer

pytestmark = pytest.mark.timeout(120)

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_$0123456789", min_size=1, max_size=8).filter(
    lambda s: not s.isdigit()
)
quoted = st.text(alphabet="ab.x y", min_size=1, max_size=5)
steps = st.lists(st.one_of(names, st.integers(0, 5), quoted), min_size=1, max_size=5)


def render(path: list) -> str:
    out = ""
    for i, step in enumerate(path):
        if isinstance(step, int):
            out += f"[{step}]"
        elif i > 0 and all(c.isalnum() or c in "_$" for c in step) and not step[0].isdigit():
            out += f".{step}"
        elif i == 0 and all(c.isalnum() or c in "_$" for c in step):
            out += step
        else:
            out += f'["{step}"]'
    return out


@given(steps)
def test_rendered_paths_parse_back(path):
    if isinstance(path[0], int) or not all(c.isalnum() or c in "_$" for c in str(path[0])):
        path = ["root", *path]
    assert properties.parse(render(path)) == path


@given(steps, st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)))
def test_set_then_get_returns_the_value(path, value):
    if isinstance(path[0], int):
        path = ["root", *path]
    obj: dict = {}
    properties.set_value(obj, path, value)
    assert properties.get(obj, path) == (True, value)
    properties.delete(obj, path)
    found, got = properties.get(obj, path)
    assert not found or got is None


@pytest.mark.parametrize("bad", ["x.[].x", ".{}", "", "a.", ".a", "a..b", "a[", "a[b]", 'a["x]', "a b",
                                 "a[\u00b2]"])
def test_bad_expressions_are_refused(bad):
    with pytest.raises(properties.InvalidExpression, match="Invalid property expression"):
        properties.parse(bad)


def test_node_red_path_examples():
    obj: dict = {}
    properties.set_value(obj, properties.parse("a.b.c"), 1)
    properties.set_value(obj, properties.parse("arr[1]"), "x")
    properties.set_value(obj, properties.parse("list[0].name"), "n")
    properties.set_value(obj, properties.parse('o["x.y"]'), 2)
    properties.set_value(obj, properties.parse("o['z']"), 3)
    assert obj == {"a": {"b": {"c": 1}}, "arr": [None, "x"], "list": [{"name": "n"}], "o": {"x.y": 2, "z": 3}}
    for beneath in ("a.b.c.d", "arr[1].y", "n.x", "n[0]"):  # a plain value or null in the way
        obj["n"] = None
        before = json.dumps(obj)
        assert properties.set_value(obj, properties.parse(beneath), 5) == 0
        assert json.dumps(obj) == before, beneath


def test_digits_before_a_dot_are_an_index_and_an_index_is_spliced_out_as_node_red_does():
    assert properties.parse("a2.1.b") == ["a2", 1, "b"] and properties.parse("a.1") == ["a", "1"]
    assert properties.parse("a.01.b") == ["a", 1, "b"] and properties.parse("a.1[0]") == ["a", "1", 0]
    obj: dict = {}
    properties.set_value(obj, properties.parse("a2.1.b"), "v")
    properties.set_value(obj, properties.parse("o.1"), "w")  # a name at the end: `o` is an object
    assert obj == {"a2": [None, {"b": "v"}], "o": {"1": "w"}}
    obj = {"l": [1, 2, 3], "m": [1, 2, 3], "n": [1, 2, 3]}
    properties.delete(obj, properties.parse("l[0]"))  # an index: spliced out
    properties.delete(obj, properties.parse("m.1"))  # a name that is an index's digits: a hole
    properties.delete(obj, properties.parse("n[7]"))  # past the end: nothing
    assert obj == {"l": [2, 3], "m": [1, None, 3], "n": [1, 2, 3]}
    assert properties.get({"l": [5, 6]}, properties.parse("l.1")) == (True, 6)
    assert properties.get({"l": [5, 6]}, properties.parse('l["01"]')) == (False, None)
    assert properties.parse_for_set("msg.a.b") == ["a", "b"] and properties.parse("msg.a") == ["msg", "a"]
    beyond = str(jsvalues.MAX_ARRAY_INDEX + 1)  # JavaScript: a named property of an array, JSON drops it
    obj = {"l": [5]}
    properties.set_value(obj, ["l", beyond], 1)
    assert obj == {"l": [5]} and properties.get(obj, ["l", beyond]) == (False, None)


def test_javascript_readings_of_text_and_values():
    parse_ints = {"5x": 5, " 7": 7, "\u00a012": 12, "0x10": 16, "-0x10": -16, "+3": 3, "1e3": 1, "-0": 0,
                  "abc": None, "": None, "0x": None, "x1": None}
    assert {text: jsvalues.parse_int(text) for text in parse_ints} == parse_ints
    numbers = {"100": 100, " 51 ": 51, "0x40": 64, "0b11": 3, "1e3": 1000, ".5": 0.5, "5.": 5, "": 0,
               "Infinity": math.inf, "-Infinity": -math.inf, "abc": None, "1_0": None, "-0x10": None,
               "--1": None, "\u20281\u3000": 1}
    assert {text: jsvalues.number(text) for text in numbers} == numbers
    values = (None, False, 0, 0.0, "", [], {}, "0", True, 1)
    assert [v for v in values if jsvalues.falsy(v)] == [None, False, 0, 0.0, ""]


@pytest.mark.parametrize("limit, cursor, window", [
    (None, None, (30, 0)), ("0", None, (1000, 0)), ("abc", None, (1000, 0)), ("5x", None, (5, 0)),
    ("0x10", None, (16, 0)), ("-1", None, (SQL_INTEGER_MAX, 0)), ("2", "3", (2, 3)), ("2", "3.5", (2, 3)),
    ("2", " 4 ", (2, 4)), ("2", "", (2, 0)), ("2", "0", (2, 0)), ("2", "abc", (2, SQL_INTEGER_MAX)),
    ("2", "0x1", (2, SQL_INTEGER_MAX)), ("2", "1e400", (2, SQL_INTEGER_MAX)), ("2", "-1e400", (2, 0))])
def test_cache_pages_read_limit_and_cursor_as_upstream_does(limit, cursor, window):
    """`parseInt(limit) || 1000` (a negative limit: SQLite's LIMIT -1, none); a cursor SQLite
    compares as a number when it reads as one, else as text, past every row id."""
    assert page_window(limit, cursor) == window


# routes, against a node ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def platform():
    p = FakePlatform()
    yield p
    p.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def ff(request, tmp_path_factory, platform):
    """A node with the context store in SQLite, then the same tests with PostgreSQL."""
    folder = tmp_path_factory.mktemp("ffc")
    conf = folder / "flowforge-storage.yml"
    server = PostgresServer() if request.param == "postgres" else None
    conf.write_text(f"base_url: {platform.url}\n" + (server.config() if server else ""))
    node = Node(folder / "data", "--flowfuse-config", str(conf)).start()
    yield node
    node.stop()
    if server is not None:
        server.stop()


JSON = {"Content-Type": "application/json"}
_projects = itertools.count(1)


@pytest.fixture
def ctx(ff, platform):
    """(client, base URL) for a fresh project whose token carries a generous context quota."""
    project = f"cp{next(_projects)}"
    token = platform.issue(f"tok-{project}", project, context=1 << 20)
    c = httpx.Client(base_url=ff.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    yield c, f"/v1/context/{project}"
    c.close()


def test_set_get_keys_delete(ctx):
    c, base = ctx
    r = c.post(f"{base}/global", json=[{"key": "x", "value": {"foo": "bar"}}, {"key": "y.y", "value": 100}])
    assert (r.status_code, r.json()) == (200, {})
    asked = [("key", "x"), ("key", "y.y"), ("key", "nope"), ("key", "x.foo.deeper")]
    r = c.get(f"{base}/global", params=asked)
    assert r.json() == [{"key": "x", "value": {"foo": "bar"}}, {"key": "y.y", "value": 100},
                        {"key": "nope"}, {"key": "x.foo.deeper"}]
    assert c.get(f"{base}/global/keys").json() == ["x", "y"]
    c.post(f"{base}/global", json=[{"key": "x"}, {"key": "n", "value": None}])  # no value deletes
    assert c.get(f"{base}/global/keys").json() == ["y", "n"]
    assert c.get(f"{base}/global", params={"key": "n"}).json() == [{"key": "n", "value": None}]
    deleted = c.delete(f"{base}/global")
    assert (deleted.status_code, deleted.content, deleted.headers["content-length"]) == (200, b"", "0")
    assert c.get(f"{base}/global", params={"key": "y"}).json() == []
    assert c.get(f"{base}/never", params={"key": "a"}).json() == []
    assert c.get(f"{base}/global/keys").json() == []


def test_bad_requests(ctx):
    c, base = ctx
    assert c.post(f"{base}/global", json={"key": "x"}).status_code == 400
    assert c.post(f"{base}/global", json=[{"value": 1}]).status_code == 400
    for garbled in (b"{nope", b'[{"key": "n", "value": NaN}]', b'[{"key": "n", "value": -Infinity}]',
                    b'[{"key": "n", "value": 1e400}]', b'[{"key": "n", "value": [-1.5e999]}]'):
        r = c.post(f"{base}/global", content=garbled, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, garbled
    assert c.get(f"{base}/global", params={"key": "n"}).json() in ([], [{"key": "n"}])
    r = c.post(f"{base}/global", json=[{"key": "x.[].x", "value": 1}])
    assert r.status_code == 400
    assert r.json()["code"] == "INVALID_EXPR" and r.json()["error"].startswith("Invalid property expression")
    assert c.get(f"{base}/global").status_code == 400  # no key
    assert c.get(f"{base}/global", params={"key": ".{}"}).json()["code"] == "INVALID_EXPR"
    assert c.post(f"{base}/global", json=[]).status_code == 200
    items = b'[{"key":"f","value":1}]'
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    form = c.post(f"{base}/global", content=items, headers=form_type)
    assert (form.status_code, form.json()["code"]) == (415, "FST_ERR_CTP_INVALID_MEDIA_TYPE")
    text = c.post(f"{base}/global", content=items, headers={"Content-Type": "text/plain"})
    assert text.status_code == 400  # a string to upstream's handler, not an array
    assert c.get(f"{base}/global", params={"key": "f"}).json() in ([], [{"key": "f"}])


def test_sets_and_deletes_take_paths_as_node_reds_set_message_property_does(ctx):
    c, base = ctx
    items = [{"key": "msg.m", "value": 1}, {"key": "l", "value": [1, 2, 3]}, {"key": "l[0]"},
             {"key": "a.1.b", "value": "v"}]
    assert c.post(f"{base}/paths", json=items).status_code == 200
    got = c.get(f"{base}/paths", params=[("key", "m"), ("key", "l"), ("key", "a"), ("key", "msg")]).json()
    assert got == [{"key": "m", "value": 1}, {"key": "l", "value": [2, 3]},
                   {"key": "a", "value": [None, {"b": "v"}]}, {"key": "msg"}]
    assert c.post(f"{base}/cache/paths", json={"msg.x": 2}).status_code == 200
    assert c.get(f"{base}/paths/keys").json() == ["x"]
    items = [{"key": "b", "value": {"z": 1, "10": 2, "2": 3}}, {"key": "07", "value": 4},
             {"key": "3", "value": 5}]
    assert c.post(f"{base}/order", json=items).status_code == 200  # JavaScript's: indices first, ascending
    assert c.get(f"{base}/order/keys").json() == ["3", "b", "07"]
    got = c.get(f"{base}/order", params={"key": "b"})
    assert got.content == b'[{"key":"b","value":{"2":3,"10":2,"z":1}}]'


def test_clean_keeps_global_and_listed_flows_and_nodes(ctx):
    c, base = ctx
    for scope in ("global", "flowA", "flowB", "node1:flowA", "node2:flowB"):
        c.post(f"{base}/{scope}", json=[{"key": "k", "value": scope}])
    cleaned = c.post(f"{base}/clean", json=["flowA", "node2"])
    assert (cleaned.status_code, cleaned.content) == (200, b"")
    kept = {s for s in ("global", "flowA", "flowB", "node1:flowA", "node2:flowB")
            if c.get(f"{base}/{s}/keys").json()}
    assert kept == {"global", "flowA", "node2:flowB"}


def test_cache_routes(ctx):
    c, base = ctx
    for i in range(3):
        c.post(f"{base}/s{i}", json=[{"key": "i", "value": i}])
    page = c.get(f"{base}/cache", params={"limit": 2}).json()
    assert page["count"] == 3 and [d["scope"] for d in page["data"]] == ["s0", "s1"]
    rest = c.get(f"{base}/cache", params={"limit": 2, "cursor": page["meta"]["next_cursor"]}).json()
    assert [d["scope"] for d in rest["data"]] == ["s2"] and "next_cursor" not in rest["meta"]
    for limit in ("0", "-1", "abc", "5x"):  # upstream: parseInt(limit) || 1000, a negative one is none
        page = c.get(f"{base}/cache", params={"limit": limit}).json()
        assert (page["meta"], len(page["data"])) == ({}, 3), limit
    first = c.get(f"{base}/cache", params={"limit": 1}).json()["meta"]["next_cursor"]
    for cursor, after in (("abc", []), (f"{first}.5", ["s1", "s2"]), ("", ["s0", "s1", "s2"])):
        page = c.get(f"{base}/cache", params={"limit": 5, "cursor": cursor}).json()
        assert ([d["scope"] for d in page["data"]], page["count"]) == (after, 3), cursor
    assert c.post(f"{base}/cache/s1", json={"whole": "new"}).json() == {}
    assert c.get(f"{base}/s1/keys").json() == ["whole"]
    assert c.post(f"{base}/cache/s1", json=[1]).status_code == 400


def test_context_quota(ff, platform):
    token = platform.issue("tok-cq", "cq", context=30)
    with httpx.Client(base_url=ff.url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.post("/v1/context/cq/global", json=[{"key": "a", "value": "x" * 10}]).status_code == 200
        r = c.post("/v1/context/cq/global", json=[{"key": "b", "value": "y" * 25}])
        assert (r.status_code, r.json()) == (413, {"error": "Over Quota", "code": "over_quota", "limit": 30})
        assert c.get("/v1/context/cq/global/keys").json() == ["a"]
        swap = [{"key": "a"}, {"key": "b", "value": "y" * 12}]  # net change +2: allowed
        assert c.post("/v1/context/cq/global", json=swap).status_code == 200
    default = platform.issue("tok-cd", "cd")  # no context quota from the platform: upstream's 1000
    with httpx.Client(base_url=ff.url, headers={"Authorization": f"Bearer {default}"}) as c:
        assert c.post("/v1/context/cd/global", json=[{"key": "a", "value": "x" * 1000}]).status_code == 200
        assert c.post("/v1/context/cd/global", json=[{"key": "b", "value": "y"}]).status_code == 413


def test_a_cache_write_sets_its_keys_as_paths_and_counts_their_sizes_against_the_quota(ff, platform):
    token = platform.issue("tok-cc", "cc", context=30)
    with httpx.Client(base_url=ff.url, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.post("/v1/context/cc/cache/global", json={"a": "y" * 23}).status_code == 200  # 23 <= 30
        # 24 - 31 < 0 by the items' measure, but the project, stored in 31 bytes, is past its
        # quota: it may not grow (else such writes grew it for ever)
        r = c.post("/v1/context/cc/cache/global", json={"a": "y" * 24})
        assert (r.status_code, r.json()["code"]) == (413, "over_quota")
        assert c.post("/v1/context/cc/cache/global", json={"a": "y" * 20}).status_code == 200  # shrinks
        assert c.post("/v1/context/cc/cache/global", json={"a": "y" * 23}).status_code == 200  # 23 - 28
        r = c.post("/v1/context/cc/cache/flowA", json={"b": "z"})  # the project holds 31 already
        assert (r.status_code, r.json()["code"]) == (413, "over_quota")
        assert c.post("/v1/context/cc/cache/global", json={}).status_code == 200
        assert c.post("/v1/context/cc/cache/flowA", json={"a.b": 1, "c[1]": 2}).status_code == 200
        assert c.get("/v1/context/cc/flowA/keys").json() == ["a", "c"]
        got = c.get("/v1/context/cc/flowA", params={"key": ["a.b", "c"]}).json()
        assert got == [{"key": "a.b", "value": 1}, {"key": "c", "value": [None, 2]}]
        r = c.post("/v1/context/cc/cache/flowA", json={"x.[].x": 1})
        assert (r.status_code, r.json()["code"]) == (400, "INVALID_EXPR")
        assert c.get("/v1/context/cc/flowA/keys").json() == ["a", "c"]


def test_projects_are_isolated_and_concurrent_sets_all_land(ff, platform, ctx):
    c, base = ctx
    other = platform.issue("tok-iso", "iso", context=1 << 20)
    with httpx.Client(base_url=ff.url, headers={"Authorization": f"Bearer {other}"}) as d:
        d.post("/v1/context/iso/global", json=[{"key": "secret", "value": 1}])
        assert c.get("/v1/context/iso/global", params={"key": "secret"}).status_code == 401

    def put(i: int) -> None:
        with httpx.Client(base_url=ff.url, headers=c.headers) as e:
            assert e.post(f"{base}/busy", json=[{"key": f"k{i}", "value": i}]).status_code == 200

    threads = [threading.Thread(target=put, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.get(f"{base}/busy/keys").json()) == sorted(f"k{i}" for i in range(30))


def test_context_survives_a_restart(ff, platform):
    token = platform.issue("tok-rs", "rs", context=1 << 20)
    headers = {"Authorization": f"Bearer {token}"}
    httpx.post(f"{ff.url}/v1/context/rs/flow1", json=[{"key": "kept", "value": [1, 2]}], headers=headers)
    ff.stop()
    ff.start()
    r = httpx.get(f"{ff.url}/v1/context/rs/flow1", params={"key": "kept"}, headers=headers)
    assert r.json() == [{"key": "kept", "value": [1, 2]}]


@pytest.mark.parametrize("scope", ["..", "%2e%2e", "a%5cb", "a%00b", "a%2fb", "a%2Fkeys", "s" * 300])
def test_hostile_scopes_are_refused_and_change_nothing(ff, ctx, scope):
    c, base = ctx
    assert c.post(f"{base}/global", json=[{"key": "kept", "value": 1}]).status_code == 200
    headers = {"Authorization": c.headers["Authorization"], "Content-Type": "application/json"}
    status, body = ff.raw_request("POST", f"{base}/{scope}", b'[{"key":"x","value":2}]', headers)
    assert status == 400
    assert json.loads(body)["code"] == "FST_ERR_VALIDATION"
    assert c.get(f"{base}/global", params={"key": "kept"}).json() == [{"key": "kept", "value": 1}]
    for method, path in (("GET", f"{base}/{scope}?key=a"), ("GET", f"{base}/{scope}/keys"),
                         ("DELETE", f"{base}/{scope}")):
        status, body = ff.raw_request(method, path, b"", headers)
        assert (status, json.loads(body)["code"]) == (400, "FST_ERR_VALIDATION"), (method, path)


def test_paging_past_any_number_is_an_empty_page(ctx):
    c, base = ctx
    c.post(f"{base}/s", json=[{"key": "i", "value": 1}])
    for huge in ("99999999999999999999999", "9223372036854775808"):
        r = c.get(f"{base}/cache", params={"cursor": huge})
        assert (r.status_code, r.json()["data"]) == (200, [])
        r = c.get(f"{base}/cache", params={"limit": huge})
        assert (r.status_code, [d["scope"] for d in r.json()["data"]]) == (200, ["s"])


def test_json_nested_too_deeply_is_a_400_and_stores_nothing(ctx):
    c, base = ctx
    deep_key = ".".join(["a"] * 2000)
    deep_value = "[" * 100_000 + "]" * 100_000
    answers = [
        c.post(f"{base}/d", json=[{"key": deep_key, "value": 1}]),
        c.post(f"{base}/d", content=f'[{{"key":"k","value":{deep_value}}}]', headers=JSON),
        c.post(f"{base}/cache/d", content=f'{{"k":{deep_value}}}', headers=JSON),
        c.post(f"{base}/clean", content=deep_value, headers=JSON),
    ]
    assert [(r.status_code, r.json()["code"]) for r in answers] == [(400, "FST_ERR_VALIDATION")] * 4
    assert c.get(f"{base}/d/keys").json() == []


def test_a_lone_surrogate_is_stored_and_read_back_as_upstream_does(ctx):
    c, base = ctx
    body = '[{"key":"odd","value":"a\\ud800b"},{"key":"pair","value":"\\ud83d\\ude00"}]'
    assert c.post(f"{base}/global", content=body, headers=JSON).status_code == 200
    r = c.get(f"{base}/global", params=[("key", "odd"), ("key", "pair")])
    assert r.status_code == 200
    assert json.loads(r.text) == [{"key": "odd", "value": "a\ud800b"}, {"key": "pair", "value": "\U0001F600"}]


def test_an_array_index_past_the_quota_is_refused_before_anything_is_padded(ff, platform):
    token = platform.issue("tok-sparse", "sparse", context=1000)
    with httpx.Client(base_url=ff.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        r = c.post("/v1/context/sparse/global", json=[{"key": "yy[20000000]", "value": "x"}])
        assert (r.status_code, r.json()["code"]) == (413, "over_quota")
        many = [{"key": f"k{i}[999]", "value": 1} for i in range(50)]  # each index below the quota
        assert c.post("/v1/context/sparse/global", json=many).status_code == 413
        assert c.get("/v1/context/sparse/global/keys").json() == []
        assert c.post("/v1/context/sparse/global", json=[{"key": "yy[3]", "value": "x"}]).status_code == 200
        r = c.get("/v1/context/sparse/global", params={"key": "yy"})
        assert r.json() == [{"key": "yy", "value": [None, None, None, "x"]}]
        assert c.post("/v1/context/sparse/global", json=[{"key": "p[150]", "value": 1}]).status_code == 200
        padded = c.post("/v1/context/sparse/global", json=[{"key": "q[100]", "value": 1}])  # 500 B of nulls
        assert padded.status_code == 413


def test_a_msg_key_is_measured_as_given_as_upstream_does(ff, platform):
    """Upstream measures `msg.m` at `msg.m` (nothing there: the whole value counts), then sets `m`."""
    token = platform.issue("tok-msg-measure", "msg-measure", context=150)
    with httpx.Client(base_url=ff.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        base = "/v1/context/msg-measure/global"
        assert c.post(base, json=[{"key": "m", "value": "x" * 100}]).status_code == 200  # 108 stored
        r = c.post(base, json=[{"key": "msg.m", "value": "z" * 50}])  # 108 + 50 > 150
        assert (r.status_code, r.json()["code"]) == (413, "over_quota")
        assert c.post(base, json=[{"key": "msg.m", "value": "z" * 40}]).status_code == 200
        assert c.get(base, params={"key": "m"}).json() == [{"key": "m", "value": "z" * 40}]


def test_a_name_spelling_an_index_pads_an_array_no_further_than_an_index_may(ff, platform):
    """`l.3000000` and `l["3000000"]` name an element of an array as JavaScript does, so they
    pad it: bounded as `l[3000000]` is (they passed every bound: a 15 MB scope, or 2 s of work
    before the quota said no)."""
    no_quota = platform.issue("tok-named-pad", "named-pad", context=0)
    tight = platform.issue("tok-named-pad-q", "named-pad-q", context=1000)
    for token, project, status in ((no_quota, "named-pad", 400), (tight, "named-pad-q", 413)):
        with httpx.Client(base_url=ff.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            base = f"/v1/context/{project}/global"
            assert c.post(base, json=[{"key": "l", "value": []}]).status_code == 200
            for key in ("l.3000000", 'l["3000000"]', "l.2999999.x"):
                assert c.post(base, json=[{"key": key, "value": 1}]).status_code == status, (project, key)
            assert c.get(base, params={"key": "l"}).json() == [{"key": "l", "value": []}]
            past_indices = c.post(base, json=[{"key": "l.5000000000.x", "value": 1}])  # a name: JSON drops it
            assert past_indices.status_code == 200, past_indices.text
            assert c.get(base, params={"key": "l"}).json() == [{"key": "l", "value": []}]
            assert c.post(base, json=[{"key": "l.2", "value": 1}]).status_code == 200
            assert c.get(base, params={"key": "l"}).json() == [{"key": "l", "value": [None, None, 1]}]


def test_a_scope_nests_at_most_200_levels_and_what_is_stored_reads_back(ctx):
    """Nested near Python's recursion limit, a scope was stored, then could not be read back:
    every context request of its project a 500."""
    c, base = ctx
    r = c.post(f"{base}/deep", json=[{"key": ".".join(["a"] * 970), "value": 1}])
    assert (r.status_code, r.json()["code"]) == (400, "FST_ERR_VALIDATION")
    nested: object = 1
    for _ in range(200):
        nested = [nested]
    assert c.post(f"{base}/cache/deep", json={"k": nested}).status_code == 400  # 201 levels
    assert c.post(f"{base}/deep", json=[{"key": ".".join(["a"] * 200), "value": 1}]).status_code == 200
    assert c.post(f"{base}/deep", json=[{"key": ".".join(["a"] * 200), "value": [1]}]).status_code == 400
    assert c.get(f"{base}/deep/keys").json() == ["a"]
    assert c.get(f"{base}/cache").status_code == 200


def test_the_quota_counts_a_string_as_javascript_does(ff, platform):
    """Upstream measures in UTF-16 code units: an emoji counts 2."""
    token = platform.issue("tok-emoji", "emoji")  # the default quota: 1000
    with httpx.Client(base_url=ff.url, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post("/v1/context/emoji/global", json=[{"key": "e", "value": "\U0001F600" * 600}])
        assert (r.status_code, r.json()["code"]) == (413, "over_quota")
        smile = "\U0001F600"
        r = c.post("/v1/context/emoji/global", json=[{"key": "e", "value": smile * 400}])
        assert r.status_code == 200
        r = c.post("/v1/context/emoji/global", json=[{"key": "f", "value": "\U0001F600" * 100}])
        assert r.status_code == 413  # 800 + 200 + the JSON around them, measured back from the store
