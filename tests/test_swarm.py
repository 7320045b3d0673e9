"""Replication between real `edgefiles serve` processes on loopback: names, rollout, Bitswap."""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import gen
from edgefiles.node.cid import RAW, make_cid, parse, to_str
from edgefiles.replication.namesync import bucket_of
from nodeproc import Node, free_port, start_star, wait_until

pytestmark = pytest.mark.timeout(240)
TESTS = Path(__file__).parent


@pytest.fixture
def swarm(tmp_path):
    """make(n, *extra) starts n nodes sharing one swarm key; the first is everyone's bootstrap."""
    key = tmp_path / "swarm.key"
    key.write_text("ab" * 32 + "\n")
    started: list[Node] = []

    def make(count: int, *extra: str, key_file: Path = key) -> list[Node]:
        nodes = []
        for _ in range(count):
            peers = ["--peer", started[0].swarm_addr] if started else []
            n = Node(tmp_path / f"n{len(started)}", "--swarm-key", str(key_file), *peers, *extra).start()
            started.append(n)
            nodes.append(n)
        return nodes

    yield make
    for n in started:
        n.stop()


def host_get(node: Node, name: str, path: str = "/") -> httpx.Response:
    return httpx.get(f"{node.url}{path}", headers={"Host": f"{name}.actyx.localhost"}, timeout=30)


def names(node: Node) -> dict[str, dict]:
    with node.client() as c:
        return {n["name"]: n for n in c.get("/api/v2/names").json()}


def set_name(node: Node, name: str, cid: str) -> None:
    with node.client() as c:
        assert c.put(f"/api/v2/files/{name}", content=cid).status_code == 200


def complete_on(node: Node, name: str, cid: str) -> bool:
    entry = names(node).get(name)
    return bool(entry and entry["cid"] == cid and entry["complete"])


def site(version: str, big: int = 3 << 20) -> list[tuple[str, bytes]]:
    return [("index.html", f"<h1>{version}</h1>".encode()), ("app.js", gen(version, big))]


def upload(node: Node, files: list[tuple[str, bytes]]) -> str:
    r = node.upload(files)
    assert r.status_code == 200, r.text
    return r.text


def peers_of(node: Node) -> list[str]:
    with node.client() as c:
        return c.get("/api/v2/node/info").json()["peers"]


def members_connected(nodes: list[Node]) -> None:
    for n in nodes:
        wait_until(lambda n=n: len(peers_of(n)) >= len(nodes) - 1, what=f"{n.url} to see its peers")


def test_named_upload_rolls_out_and_follows_repoint_and_delete(swarm):
    a, b, c = swarm(3)
    members_connected([a, b, c])
    v1 = site("v1")
    cid1 = upload(a, v1)
    set_name(a, "shop", cid1)
    for n in (b, c):
        wait_until(lambda n=n: complete_on(n, "shop", cid1), what="rollout of v1")
        assert names(n)["shop"]["missing"] == 0
        with n.client() as client:
            (status,) = [r for r in client.get("/api/v2/node/info").json()["rollout"] if r["name"] == "shop"]
        assert status == {"name": "shop", "cid": cid1, "complete": True, "missing": 0}
        assert host_get(n, "shop").content == b"<h1>v1</h1>"
        assert host_get(n, "shop", "/app.js").content == v1[1][1]

    v2 = site("v2", big=40 << 20)
    cid2 = upload(a, v2)
    seen: list[tuple[int, bytes]] = []
    seen_js: list[tuple[int, bytes, bool]] = []  # app.js, and whether v2 was incomplete on B then
    stop = threading.Event()

    def poll() -> None:  # while v2 is fetched, B keeps serving a whole app: v1, then v2
        host = {"Host": "shop.actyx.localhost"}
        with b.client() as api, httpx.Client(base_url=b.url, headers=host, timeout=30) as site_b:
            while not stop.is_set():
                (entry,) = [n for n in api.get("/api/v2/names").json() if n["name"] == "shop"]
                v2_incomplete = entry["cid"] == cid2 and not entry["complete"]
                r, js = site_b.get("/"), site_b.get("/app.js")
                seen.append((r.status_code, r.content))
                seen_js.append((js.status_code, js.content, v2_incomplete))

    poller = threading.Thread(target=poll)
    poller.start()
    set_name(a, "shop", cid2)
    try:
        for n in (b, c):
            wait_until(lambda n=n: complete_on(n, "shop", cid2), timeout=120, what="rollout of v2")
    finally:
        stop.set()
        poller.join()
    assert {status for status, _ in seen} == {200}
    assert {body for _, body in seen} <= {b"<h1>v1</h1>", b"<h1>v2</h1>"}
    assert {status for status, _, _ in seen_js} == {200}
    assert all(body in (v1[1][1], v2[1][1]) for _, body, _ in seen_js)  # whole files, never a mix
    assert any(body == v1[1][1] for _, body, v2_incomplete in seen_js if v2_incomplete), \
        "no poll saw the previous app.js served while the new version was incomplete"
    assert host_get(b, "shop").content == b"<h1>v2</h1>"
    assert host_get(b, "shop", "/app.js").content == v2[1][1]

    with a.client() as client:
        assert client.delete("/api/v2/files/shop").status_code == 200
    for n in (b, c):
        wait_until(lambda n=n: host_get(n, "shop").status_code == 404, what="delete to spread")
        assert "shop" not in names(n)


def test_concurrent_writes_of_one_name_converge_everywhere(swarm):
    nodes = swarm(3)
    members_connected(nodes)
    cids = [upload(n, [("x.txt", f"from {i}".encode())]) for i, n in enumerate(nodes)]
    for round_ in range(5):
        pairs = zip(nodes, cids, strict=True)
        threads = [threading.Thread(target=set_name, args=(n, "race", cid)) for n, cid in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        def agreed() -> str | None:
            seen = {names(n).get("race", {}).get("cid") for n in nodes}
            return seen.pop() if len(seen) == 1 and None not in seen else None

        winner = wait_until(agreed, what=f"agreement in round {round_}")
        assert winner in cids
        for n in nodes:  # until the winner is complete, a node may still serve the previous one
            wait_until(lambda n=n, w=winner: complete_on(n, "race", w), what="winner fetched")
        assert {host_get(n, "race").content for n in nodes} == {f"from {cids.index(winner)}".encode()}


def test_node_that_was_offline_catches_up(swarm):
    a, b, c = swarm(3)
    members_connected([a, b, c])
    c.stop()
    first = upload(a, [("f.txt", b"first")])
    second = upload(a, [("g.txt", b"second")])
    set_name(a, "one", first)
    set_name(b, "two", first)
    set_name(a, "one", second)
    with b.client() as client:
        client.delete("/api/v2/files/two")
    c.start()
    wait_until(lambda: complete_on(c, "one", second), what="C to catch up")
    assert "two" not in names(c)
    assert host_get(c, "one").content == b"second"


def test_rollout_completes_from_each_other_after_the_origin_dies(swarm):
    a, b, c = swarm(3)
    members_connected([a, b, c])
    left, right = gen("left", 4 << 20), gen("right", 4 << 20)
    root = upload(a, [("left.bin", left), ("right.bin", right)])
    # unnamed content is fetched on demand: B reads one half through A, C the other
    with b.client() as client:
        assert client.get(f"/api/v2/files/{root}/left.bin").content == left
    with c.client() as client:
        assert client.get(f"/api/v2/files/{root}/right.bin").content == right
    a.stop(signal.SIGKILL)
    set_name(b, "halves", root)
    for n in (b, c):
        wait_until(lambda n=n: complete_on(n, "halves", root), timeout=60, what="rollout without A")
        assert host_get(n, "halves", "/right.bin").content == right
        assert host_get(n, "halves", "/left.bin").content == left


def metric(node: Node, name: str) -> float:
    text = httpx.get(f"{node.url}/metrics").text
    match = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def rogue(mode: str, data: Path, key: Path, port: int, peer: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(TESTS / "lying_peer.py"), mode, str(data), str(key),
         f"/ip4/127.0.0.1/tcp/{port}", peer],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_malformed_messages_from_a_member_are_refused_and_harmless(swarm, tmp_path):
    a, b = swarm(2)
    members_connected([a, b])
    (tmp_path / "rogue").mkdir()
    bad = rogue("garbage", tmp_path / "rogue", tmp_path / "swarm.key", free_port(), a.swarm_addr)
    try:
        assert bad.stdout.readline().startswith("rogue ready")
        wait_until(lambda: bad.stdout.readline().startswith("garbage sent"), what="the garbage to be sent")
        cid = upload(a, [("after.txt", b"still replicating")])
        set_name(a, "after", cid)
        wait_until(lambda: complete_on(b, "after", cid), what="replication after the garbage")
        assert host_get(b, "after").content == b"still replicating"
        assert set(names(a)) == {"after"}  # the forged record was dropped
        log = a.output()
        assert "closing bitswap stream" in log
        assert "bad name table" in log or "bad signature" in log
        assert a.proc.poll() is None
    finally:
        bad.kill()
        bad.wait()


def test_a_flooding_member_is_held_to_its_limits_and_the_swarm_goes_on(swarm, tmp_path):
    """Huge want lists, hundreds of streams held open, a stream of endless messages and a
    table of forged records: each limit is hit, counted and logged once, and the node goes on
    serving its honest peer."""
    a, b = swarm(2, "--peer-max-wants", "4096", "--peer-max-streams", "16", "--peer-max-messages", "500")
    members_connected([a, b])
    (tmp_path / "rogue").mkdir()
    bad = rogue("flood", tmp_path / "rogue", tmp_path / "swarm.key", free_port(), a.swarm_addr)
    try:
        assert bad.stdout.readline().startswith("rogue ready")
        wait_until(lambda: "flood sent" in bad.stdout.readline(), timeout=60, what="the flood to be sent")
        wait_until(lambda: all(limit_hits(a, kind) >= 1 for kind in ("wants", "streams", "messages",
                                                                      "bad_records")),
                   timeout=30, what=f"the limits to be hit: {[limit_hits(a, k) for k in LIMITS]}")
        cid = upload(a, site("after the flood"))
        set_name(a, "after", cid)
        wait_until(lambda: complete_on(b, "after", cid), what="replication after the flood")
        assert host_get(b, "after").status_code == 200 and "forged-0" not in names(a)
        log = a.output()
        for kind in ("wants", "streams", "messages"):  # once a minute per peer, not once a message
            assert log.count(f"over its {kind} limit") == 1, kind
        assert log.count("bad signatures") == 1 and a.proc.poll() is None  # 20,000 of them, one line
        assert limit_hits(b, "wants") == limit_hits(b, "messages") == 0  # the honest peer was never held
    finally:
        bad.kill()
        bad.wait()


LIMITS = ("connections", "streams", "wants", "inflight", "messages", "records", "bad_records")


def limit_hits(node: Node, kind: str) -> float:
    with node.client() as c:
        for line in c.get("/metrics").text.splitlines():
            if line.startswith(f'edgefiles_peer_limit_hits_total{{limit="{kind}"}}'):
                return float(line.split()[-1])
    return 0.0


def test_blocks_still_on_the_way_when_a_rollout_is_called_off_do_not_brand_their_peer_a_liar(swarm):
    """A name moved away from a DAG mid-rollout cancels the rollout's wants; the blocks already
    sent for them arrive all the same. They were asked for: the peer that sent them is no liar."""
    a, b = swarm(2)
    names = ("app0", "app1", "app2")
    # a DAG per round: B keeps the blocks of a rollout called off, and a second rollout of the
    # same DAG could find too few left to fetch to be seen under way
    bigs = {name: upload(a, [("data.bin", gen(f"called off {name}", 32 << 20))]) for name in names}
    small = upload(a, [("index.html", b"<p>small</p>")])
    wait_until(lambda: peers_of(b), what="B to meet A")
    for name in names:
        big = bigs[name]
        under_way = metric(b, "edgefiles_bitswap_received_bytes") + (4 << 20)
        set_name(a, name, big)
        wait_until(lambda: metric(b, "edgefiles_bitswap_received_bytes") > under_way,  # noqa: B023
                   interval=0.01, what="B's rollout to be under way")
        set_name(a, name, small)
        wait_until(lambda: complete_on(b, name, small), what="B to roll out the small app")  # noqa: B023
    time.sleep(1)  # the blocks in flight land
    assert metric(b, "edgefiles_bitswap_rejected_blocks") == 0
    assert "matches no CID we asked for" not in b.output()


def test_blocks_from_a_lying_peer_are_dropped_and_fetched_elsewhere(swarm, tmp_path):
    (a,) = swarm(1)
    payload = gen("truth", 24 << 20)
    cid = upload(a, [("data.bin", payload)])
    a.stop()  # the liar gets a copy of A's store; A stays down until B has met the liar
    liar_dir = tmp_path / "liar"
    subprocess.run(["cp", "-r", str(a.data), str(liar_dir)], check=True)
    liar_port = free_port()
    liar = rogue("lie", liar_dir, tmp_path / "swarm.key", liar_port, a.swarm_addr)
    try:
        line = liar.stdout.readline()
        assert line.startswith("rogue ready"), line
        (b,) = swarm(1, "--peer", line.split()[2])  # and A's address, as everyone's bootstrap
        set_name(b, "truth", cid)
        wait_until(lambda: metric(b, "edgefiles_bitswap_rejected_blocks") > 0, what="B to reject a block")
        assert not complete_on(b, "truth", cid)
        a.start()
        wait_until(lambda: complete_on(b, "truth", cid), timeout=90, what="rollout from the honest peer")
        assert hashlib.sha256(host_get(b, "truth").content).digest() == hashlib.sha256(payload).digest()
        assert "matches no CID we asked for" in b.output()
    finally:
        liar.kill()
        liar.wait()


def test_a_reader_asks_for_leaves_only_the_peer_that_sent_their_parent(swarm, tmp_path):
    """Reading a file by CID that only A holds, B asks every peer whether it has the root,
    and then asks A alone for the rest: a member that holds nothing hears of nothing else."""
    a, b = swarm(2)
    members_connected([a, b])
    (tmp_path / "bystander").mkdir()
    bystander = rogue("bystander", tmp_path / "bystander", tmp_path / "swarm.key", free_port(), b.swarm_addr)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(bystander.stdout.readline, "")), daemon=True)
    try:
        assert bystander.stdout.readline().startswith("rogue ready")
        reader.start()
        wait_until(lambda: len(peers_of(b)) >= 2, what="B to meet the bystander")
        tries = iter(range(1000))

        def bystander_asked_for_a_new_file() -> bool:  # then B counts it among its block peers
            content = f"warm-up {next(tries)}".encode()
            cid = upload(a, [("warm.txt", content)])
            with b.client() as c:
                assert c.get(f"/api/v2/files/{cid}", timeout=60).content == content
            time.sleep(0.3)
            return any(parse(cid).hex() in line for line in list(lines))

        wait_until(bystander_asked_for_a_new_file, what="B to ask the bystander")
        lines.clear()
        payload = gen("read by cid", 3 << 20)  # 12 leaves under one file node
        root = upload(a, [("data.bin", payload)])
        with b.client() as c:
            r = c.get(f"/api/v2/files/{root}", timeout=60)
        assert r.status_code == 200 and r.content == payload, r.text[:300]
        wait_until(lambda: any(parse(root).hex() in line for line in list(lines)), what="the root's want")
        time.sleep(0.5)  # anything asked late would have arrived by now
        asked = {line.split()[2] for line in list(lines) if line.startswith("want ")}
        assert asked == {parse(root).hex()}, f"{len(asked)} blocks asked of a peer that holds nothing"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_peer_without_the_swarm_key_gets_nothing(swarm, tmp_path):
    (a,) = swarm(1)
    cid = upload(a, [("secret.txt", b"members only")])
    set_name(a, "secret", cid)
    other_key = tmp_path / "other.key"
    other_key.write_text("cd" * 32 + "\n")
    (outsider,) = swarm(1, key_file=other_key)
    wait_until(lambda: f"refused peer {outsider.peer_id}" in a.output(), what="A to refuse the outsider")
    assert names(outsider) == {}
    with outsider.client() as client:
        started = time.time()
        assert client.get(f"/api/v2/files/{cid}").status_code == 404
        assert time.time() - started < 5  # no member peer: 404 at once, not after the fetch timeout
        assert client.get("/api/v2/node/info").json()["peers"] == []


def test_a_peer_with_another_key_is_redialled_with_backoff_and_logged_once(swarm, tmp_path):
    """A node started with the wrong swarm key is a mistake to mend, not a network to wait for:
    it was redialled four times a second, each refusal a warning on both sides."""
    (a,) = swarm(1)
    other_key = tmp_path / "other.key"
    other_key.write_text("cd" * 32 + "\n")
    (outsider,) = swarm(1, key_file=other_key)
    wait_until(lambda: refused(a) >= 1, what="A to refuse the outsider")
    first = refused(a)
    time.sleep(8)
    assert refused(a) - first <= 3  # dials 2, 4, 8 s apart (was ~30 in 8 s)
    for node in (a, outsider):
        assert node.output().count("refused peer") == 1, node.output()


def test_a_peer_address_with_another_peer_id_is_one_line_that_says_so(tmp_path):
    """A node whose data folder was made anew has a new peer id; its peers' --peer still names
    the old one. libp2p wrote four ERROR lines for every redial (75,000 a day), and the one
    warning of ours did not say why."""
    a = Node(tmp_path / "a").start()
    b = Node(tmp_path / "b").start()
    stale = f"/ip4/127.0.0.1/tcp/{a.swarm_port}/p2p/{b.peer_id}"  # A's address, another node's id
    c = Node(tmp_path / "c", "--peer", stale, "--swarm-key", str(tmp_path / "a" / "swarm.key")).start()
    try:
        wait_until(lambda: "cannot reach peer" in c.output(), what="the dial to fail")
        time.sleep(8)  # a few redials
        log = c.output()
        assert log.count("cannot reach peer") == 1 and "the secure handshake failed" in log, log
        assert "another peer id" in log and "ERROR" not in log, log
    finally:
        for node in (a, b, c):
            node.stop()


def refused(node) -> int:
    text = httpx.get(f"{node.url}/metrics").text
    return int(float(next(line.split()[-1] for line in text.splitlines()
                          if line.startswith("edgefiles_peers_refused_total"))))


def test_allowed_peer_exchanges_blocks_but_never_names(tmp_path):
    key_a, key_e = tmp_path / "a.key", tmp_path / "e.key"
    key_a.write_text("01" * 32)
    key_e.write_text("02" * 32)
    a = Node(tmp_path / "a", "--swarm-key", str(key_a)).start()
    e = None
    try:
        # peer ids are derived from node.key: start E once to learn its id
        e = Node(tmp_path / "e", "--swarm-key", str(key_e)).start()
        e_id = e.peer_id
        e.stop()
        a.stop()
        a = Node(tmp_path / "a", "--swarm-key", str(key_a), "--allow-peer", e_id,
                 api_port=a.port, swarm_port=a.swarm_port).start()
        e = Node(tmp_path / "e", "--swarm-key", str(key_e), "--allow-peer", a.peer_id, "--peer", a.swarm_addr,
                 api_port=e.port, swarm_port=e.swarm_port).start()
        cid = upload(a, [("shared.txt", b"blocks for an IPFS peer")])
        set_name(a, "private", cid)
        with e.client() as client:
            r = wait_until(lambda: (x := client.get(f"/api/v2/files/{cid}")).status_code == 200 and x,
                           what="E to fetch by CID")
            assert r.content == b"blocks for an IPFS peer"
        # a member joining now gets the table, and a later name by gossip: when it has both,
        # E, connected all along, would have had them too, were names ever sent to it
        c = Node(tmp_path / "c", "--swarm-key", str(key_a), "--peer", a.swarm_addr).start()
        try:
            set_name(a, "later", cid)
            wait_until(lambda: set(names(c)) == {"private", "later"}, what="member C to get both names")
            assert names(e) == {}
        finally:
            c.stop()
    finally:
        a.stop()
        if e is not None:
            e.stop()


def test_unknown_cid_waits_for_the_fetch_timeout_then_404(swarm):
    a, b = swarm(1) + swarm(1, "--fetch-timeout", "2")
    members_connected([a, b])
    missing = to_str(make_cid(RAW, b"no node has this"))
    with b.client() as client:
        started = time.time()
        assert client.get(f"/api/v2/files/{missing}").status_code == 404
        assert 1.8 < time.time() - started < 10


def test_a_restarted_peer_is_redialled_within_seconds(tmp_path):
    key = tmp_path / "swarm.key"
    key.write_text("ef" * 32)
    b = Node(tmp_path / "b", "--swarm-key", str(key)).start()
    a = Node(tmp_path / "a", "--swarm-key", str(key), "--peer", b.swarm_addr).start()
    try:
        members_connected([a, b])
        b.stop(signal.SIGKILL)
        time.sleep(2)  # A's redials fail meanwhile (libp2p alone would then wait 60 s)
        b.start()  # B does not dial A: A must come back by itself
        started = time.time()
        members_connected([a, b])
        assert time.time() - started < 15
    finally:
        a.stop()
        b.stop()


def test_names_written_on_a_node_just_restarted_reach_every_node(swarm):
    """A node killed and restarted under the same identity writes names at once: they reach
    the others even before gossip has re-formed around it (the soak with kills found such
    writes stranded on the restarted node for good)."""
    a, b, c = swarm(3)
    cid = upload(a, site("v1", big=0))
    for round_ in range(3):
        for i in range(40):  # gossip messages numbered ahead of the clock: a restart reuses numbers
            set_name(c, f"before-{i}", cid)
        c.stop(signal.SIGKILL)
        c.start()
        members_connected([a, b, c])
        fresh = f"fresh-{round_}"
        set_name(c, fresh, cid)
        for node in (a, b):
            wait_until(lambda node=node, fresh=fresh: fresh in names(node), timeout=20,
                       what=f"the name written right after restart {round_} to reach {node.url}")


def test_a_node_whose_store_fills_up_keeps_running_and_completes_once_it_has_room(swarm):
    a, b = swarm(1) + swarm(1, "--store-quota", "1MiB")
    members_connected([a, b])
    big = gen("too big for B", 3 << 20)
    cid = upload(a, [("big.bin", big)])
    set_name(a, "big", cid)
    wait_until(lambda: "cannot store fetched blocks" in b.output(), what="B to report its full store")
    # every block went out to B at least once, and B has taken stock: the transfer's other
    # messages failed meanwhile, and the log still says so once
    wait_until(lambda: metric(a, "edgefiles_bitswap_sent_bytes") >= len(big), what="A to send every block")
    # incomplete, and once the root is indexed (within a commit interval) the gap is known
    wait_until(lambda: (e := names(b)["big"]) and not e["complete"] and e["missing"] > 0,
               what="B to show the name incomplete with bytes missing")
    assert b.output().count("cannot store fetched blocks") == 1
    b.stop()
    b.extra = [x for x in b.extra if x not in ("--store-quota", "1MiB")]
    b.start()
    wait_until(lambda: complete_on(b, "big", cid), timeout=60, what="B to complete once it has room")
    with b.client() as client:
        assert client.get(f"/api/v2/files/{cid}").content == big


def test_remote_reads_by_cid_fetch_ahead_but_only_what_the_range_needs(swarm):
    a, b = swarm(2)
    members_connected([a, b])
    data = gen("a big file read from B", 24 << 20)
    root = upload(a, [("big.bin", data)])  # one file: its CID; unnamed, so B fetches only what it reads
    with b.client() as client:
        r = client.get(f"/api/v2/files/{root}", headers={"Range": "bytes=-1000"})
        assert r.status_code == 206 and r.content == data[-1000:]
        assert metric(b, "edgefiles_bitswap_received_bytes") < 2 << 20
        assert client.get(f"/api/v2/files/{root}").content == data
    received = metric(b, "edgefiles_bitswap_received_bytes")
    assert len(data) <= received < len(data) * 1.02  # read ahead, yet no block fetched twice


def test_nodes_in_step_swap_only_a_digest_when_they_meet_again(swarm):
    a, b = swarm(2)
    members_connected([a, b])
    cid = upload(a, [("f.txt", b"named twenty times")])
    for i in range(20):
        set_name(a, f"n{i}", cid)
    wait_until(lambda: len(names(b)) == 20, what="B to learn the names")
    sent = metric(a, "edgefiles_names_table_records_sent")
    exchanges = metric(a, "edgefiles_names_table_exchanges")
    b.stop()
    b.start()
    members_connected([a, b])
    # each offers its table to the other right after admission: wait until both exchanges ended
    wait_until(lambda: metric(a, "edgefiles_names_table_exchanges") >= exchanges + 2
               and metric(b, "edgefiles_names_table_exchanges") >= 2, what="the table exchanges")
    assert metric(a, "edgefiles_names_table_records_sent") == sent
    assert metric(b, "edgefiles_names_table_records_sent") == 0
    b.stop()
    set_name(a, "late", cid)  # B misses this one: the next exchange sends its bucket
    time.sleep(4)  # past gossipsub's history (3 heartbeats of 1 s): gossip cannot replay it
    b.start()
    wait_until(lambda: "late" in names(b), what="B to catch up through the exchange")
    bucket = [n for n in names(a) if bucket_of(("", n)) == bucket_of(("", "late"))]
    assert len(bucket) < 21  # else this test would not tell a bucket from the whole table
    assert len(bucket) <= metric(a, "edgefiles_names_table_records_sent") - sent < 21


def test_fetched_blocks_survive_collection_and_compaction_around_them(swarm):
    """Blocks written by transfers (past the page cache, in aligned chunks) are collected
    when nothing pins them, packs holding them are compacted, and named content stays intact."""
    a, b = swarm(1) + swarm(1, "--gc-above", "4MiB")
    members_connected([a, b])
    passing = [gen(f"read once {i}", 4 << 20) for i in range(3)]
    roots = [upload(a, [(f"p{i}.bin", data)]) for i, data in enumerate(passing)]
    with b.client() as client:
        for root, data in zip(roots, passing, strict=True):
            assert client.get(f"/api/v2/files/{root}").content == data  # fetched, unpinned
    app = site("kept", big=8 << 20)
    named = upload(a, app)
    set_name(a, "kept", named)
    wait_until(lambda: complete_on(b, "kept", named), timeout=60, what="the rollout to B")
    collected = re.compile(r"gc: freed [1-9]"), re.compile(r"compacted [1-9]")
    wait_until(lambda: all(r.search(b.output()) for r in collected),
               timeout=30, what="B to collect the blocks only reads used, and compact their pack")
    for path, data in app:
        assert host_get(b, "kept", f"/{path}").content == data
    with b.client() as client:  # collected, not lost: fetched again when read again
        assert client.get(f"/api/v2/files/{roots[0]}").content == passing[0]


def test_a_member_that_speaks_only_bitswap_1_0_still_serves_a_rollout(swarm, tmp_path):
    (a,) = swarm(1)
    payload = gen("served over bitswap 1.0", 6 << 20)
    cid = upload(a, [("data.bin", payload)])  # raw leaves: CIDv1 blocks that 1.0 sends bare
    a.stop()  # the old peer gets a copy of A's store; A stays down
    old_dir = tmp_path / "old"
    subprocess.run(["cp", "-r", str(a.data), str(old_dir)], check=True)
    old = rogue("legacy", old_dir, tmp_path / "swarm.key", free_port(), a.swarm_addr)
    try:
        line = old.stdout.readline()
        assert line.startswith("rogue ready"), line
        (b,) = swarm(1, "--peer", line.split()[2])
        set_name(b, "old", cid)
        wait_until(lambda: complete_on(b, "old", cid), timeout=60, what="rollout from the 1.0 peer")
        assert host_get(b, "old").content == payload
        assert metric(b, "edgefiles_bitswap_rejected_blocks") == 0
    finally:
        old.kill()
        old.wait()


@pytest.mark.parametrize("run", range(3))
def test_a_star_started_swarm_of_six_meshes_fully(tmp_path, run):
    """Five nodes started at once, each told only of the first: every one learns of every
    other (also those that joined at the same moment) and connects to it."""
    key = tmp_path / "swarm.key"
    key.write_text("c3" * 32)
    nodes = start_star(tmp_path, 6, key)
    try:
        ids = {n.peer_id for n in nodes}
        for n in nodes:
            wait_until(lambda n=n: set(peers_of(n)) == ids - {n.peer_id}, timeout=30,
                       what=f"{n.url} to connect to all five others")
    finally:
        for n in nodes:
            n.stop()


def test_a_small_app_follows_repoints_rollback_and_delete_on_a_star_started_swarm(tmp_path):
    """Four nodes switched on at once (mesh or not): a 3 MiB app named on node 0 is served byte
    for byte by every node; repointed from three other nodes in turn, each version likewise;
    rolled back to the first, served at once by every node from what it holds (no fetch);
    deleted, gone everywhere. Nothing waits for a timeout: each step within the fetch timeout."""
    key = tmp_path / "swarm.key"
    key.write_text("d5" * 32)
    nodes = start_star(tmp_path, 4, key)
    step = 15  # the fetch timeout: no version may take longer anywhere

    def served_everywhere(name: str, files: list[tuple[str, bytes]]) -> None:
        for n in nodes:
            for path, data in files:
                wait_until(lambda n=n, p=path, d=data: host_get(n, name, f"/{p}").content == d,
                           timeout=step, interval=0.02, what=f"{n.url} to serve {path} of {name}")

    try:
        versions = []
        for k, writer in enumerate(nodes):  # named on node 0, repointed from nodes 1, 2 and 3
            app = [("index.html", f"<h1>v{k}</h1>".encode()), ("app.js", gen(f"js {k}", 40_000)),
                   ("style.css", f"h1 {{ order: {k} }}".encode()), ("asset.bin", gen(f"asset {k}", 3 << 20))]
            cid = upload(writer, app)
            set_name(writer, "small", cid)
            served_everywhere("small", app)
            versions.append((cid, app))
        for n in nodes:  # every rollout finished: nothing of them is still on its way
            wait_until(lambda n=n: complete_on(n, "small", versions[-1][0]), timeout=step,
                       what="the last rollout")
        fetched = [metric(n, "edgefiles_bitswap_received_bytes") for n in nodes]
        first_cid, first_app = versions[0]
        set_name(nodes[2], "small", first_cid)  # a rollback to what every node still holds
        for n in nodes:
            wait_until(lambda n=n: names(n)["small"]["cid"] == first_cid, timeout=step, what="the rollback")
            assert [host_get(n, "small", f"/{p}").content for p, _ in first_app] == [d for _, d in first_app]
        assert [metric(n, "edgefiles_bitswap_received_bytes") for n in nodes] == fetched
        with nodes[3].client() as client:
            assert client.delete("/api/v2/files/small").status_code == 200
        for n in nodes:
            wait_until(lambda n=n: host_get(n, "small").status_code == 404, timeout=step, what="the delete")
    finally:
        for n in nodes:
            n.stop()


def test_a_peer_given_by_host_name_is_joined(tmp_path):
    """`--peer /dns4/<host>/tcp/<port>/p2p/<id>`: an edge box is often known by its name. The
    node resolves it when it dials (it was taken, then dialled as it was and never reached)."""
    key = tmp_path / "swarm.key"
    key.write_text("ab" * 32 + "\n")
    a = Node(tmp_path / "a", "--swarm-key", str(key)).start()
    port = a.swarm_addr.split("/tcp/")[1].split("/")[0]
    b = Node(tmp_path / "b", "--swarm-key", str(key), "--peer", f"/dns4/localhost/tcp/{port}/p2p/{a.peer_id}")
    try:
        b.start()
        wait_until(lambda: peers_of(b) == [a.peer_id], what="B to join A by its host name")
    finally:
        b.stop()
        a.stop()
