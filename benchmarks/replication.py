"""Replication between real node processes on loopback, against a raw libp2p stream baseline.

    python benchmarks/replication.py [--mib 256] [--updates 200]

1. baseline: one libp2p stream (Noise + Yamux) copying the same bytes between two processes,
   once plainly (the issue's baseline) and once used as our Bitswap uses it (views written,
   several Yamux frames taken per read), which is what the same transport can do at best;
2. A -> B: time from naming a DAG on A until B reports it complete;
3. on demand: B reads by CID a file only A has, as one HTTP response;
4. rollout A -> 4 nodes: time until all have it, bytes A served (Bitswap counter), peak RSS;
5. name propagation across 5 nodes: per update, time until each other node resolves it;
6. catch-up: B misses one update of a table of --table names while it is down (longer than
   gossip remembers), restarts: records A sent in the exchange against the table's size;
7. small apps: a star-started swarm of 4 (measured from the moment every node answers, mesh
   or not), --rounds rounds of a new 3 MiB app named from a random node, half of them
   repoints: time from the PUT's answer until every node's host route serves it (p50, p99);
8. mesh: --meshes fresh star starts of 6 nodes: how many are fully meshed within 5 s of the
   last node's ready line, and how long it took;
9. multi-node rollout: --multi-mib named on node 0 of 4: time until the last receiver is
   complete, against node 1 alone reading as much other content, held only by node 0, by CID.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nodeproc import Node, free_port, start_star, wait_until  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

MIB = 1 << 20
RAW_PROTOCOL = "/edgefiles-bench/raw/1.0.0"


# -- baseline: a raw libp2p stream between two processes ---------------------------------
def raw_receiver(port: int, coalesce: bool) -> None:
    import trio
    from edgefiles.replication.framing import COALESCE_BELOW, COALESCE_WAIT
    from edgefiles.replication.host import build_host
    from libp2p.custom_types import TProtocol
    from libp2p.network.stream.exceptions import StreamEOF
    from multiaddr import Multiaddr

    async def main() -> None:
        host = build_host(os.urandom(32))

        async def sink(stream) -> None:
            total = 0
            while True:
                try:
                    data = await stream.read(1 << 20)
                except StreamEOF:
                    break
                if not data:
                    break
                total += len(data)
                if coalesce and len(data) < COALESCE_BELOW:  # read as Bitswap reads
                    await trio.sleep(COALESCE_WAIT)
            await stream.write(str(total).encode())
            await stream.close()

        host.set_stream_handler(TProtocol(RAW_PROTOCOL), sink)
        async with host.run(listen_addrs=[Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")]):
            print(host.get_addrs()[0], flush=True)
            await trio.sleep_forever()

    trio.run(main)


def raw_stream_mbps(size: int, as_bitswap: bool = False) -> float:
    """`as_bitswap`: the stream used as our Bitswap uses it: views written, reads coalesced."""
    import trio
    from edgefiles.replication.host import build_host
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from multiaddr import Multiaddr

    flags = ["--coalesce"] if as_bitswap else []
    command = [sys.executable, __file__, "--raw-receiver", str(free_port()), *flags]
    receiver = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    addr = receiver.stdout.readline().strip()
    chunk = memoryview(os.urandom(MIB)) if as_bitswap else os.urandom(MIB)
    elapsed = 0.0

    async def main() -> None:
        nonlocal elapsed
        host = build_host(os.urandom(32))
        async with host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            info = info_from_p2p_addr(Multiaddr(addr))
            await host.connect(info)
            stream = await host.new_stream(info.peer_id, [TProtocol(RAW_PROTOCOL)])
            t = time.perf_counter()
            for _ in range(size // MIB):
                await stream.write(chunk)
            await stream.close()
            got = int(await stream.read(64))
            elapsed = time.perf_counter() - t
            assert got == size, got

    try:
        trio.run(main)
    finally:
        receiver.kill()
    return size / elapsed / 1e6


# -- nodes --------------------------------------------------------------------------------
def start_nodes(root: Path, count: int) -> list[Node]:
    root.mkdir(parents=True)
    key = root / "swarm.key"
    key.write_text(os.urandom(32).hex())
    nodes: list[Node] = []
    for i in range(count):
        peers = ["--peer", nodes[0].swarm_addr] if nodes else []
        nodes.append(Node(root / f"n{i}", "--swarm-key", str(key), *peers).start())
    for n in nodes:
        wait_until(lambda n=n: len(info(n)["peers"]) >= count - 1, timeout=60, what="peers")
    return nodes


_clients: dict[str, httpx.Client] = {}


def client(n: Node) -> httpx.Client:
    """One kept-alive client per node: a new httpx client costs ~20 ms of CPU (TLS setup)."""
    key = f"{n.url} {n.data}"  # a later node may get a port back, never the data directory
    if key not in _clients:
        _clients[key] = httpx.Client(base_url=n.url, headers=auth(n), timeout=600)
    return _clients[key]


def info(n: Node) -> dict:
    return client(n).get("/api/v2/node/info").json()


def auth(n: Node) -> dict:
    return {"Authorization": f"Bearer {n.token()}"}


def complete(n: Node, name: str) -> bool:
    entries = client(n).get("/api/v2/names").json()
    return any(e["name"] == name and e["complete"] for e in entries)


def counter(n: Node, metric: str) -> float:
    for line in client(n).get("/metrics").text.splitlines():
        if line.startswith(metric + "_total ") or line.startswith(metric + " "):
            return float(line.split()[1])
    return 0.0


def peak_rss_mb(n: Node) -> float:
    for line in Path(f"/proc/{n.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def upload_big(n: Node, path: Path) -> str:
    with open(path, "rb") as f:
        r = client(n).post("/api/v2/files", files=[("f", ("big.bin", f))])
    r.raise_for_status()
    os.sync()  # let the upload's writeback settle before timing the transfer
    return r.text


def name_and_wait(origin: Node, others: list[Node], name: str, cid: str) -> float:
    t = time.perf_counter()
    client(origin).put(f"/api/v2/files/{name}", content=cid).raise_for_status()
    for n in others:
        wait_until(lambda n=n: complete(n, name), timeout=900, interval=0.02, what="rollout")
    return time.perf_counter() - t


def transfer(root: Path, data: Path, size: int) -> dict:
    a, b = start_nodes(root / "pair", 2)
    try:
        cid = upload_big(a, data)
        seconds = name_and_wait(a, [b], "big", cid)
        # B's own log line times the fetch alone (no naming, gossip or polling around it)
        fetch = re.search(r"rollout of \S+ complete: fetched [0-9.]+ MiB in ([0-9.]+) s", b.output())
        return {
            "a_to_b_s": round(seconds, 2),
            "a_to_b_MiBps": round(size / MIB / seconds, 1),
            "b_fetch_only_MiBps": round(size / MIB / float(fetch.group(1)), 1) if fetch else None,
        }
    finally:
        for n in (a, b):
            n.stop()


def on_demand(root: Path, data: Path, size: int) -> dict:
    """B reads by CID a file only A has (unnamed): fetched block by block as the reader goes,
    with read-ahead."""
    a, b = start_nodes(root / "ondemand", 2)
    try:
        cid = upload_big(a, data)
        t = time.perf_counter()
        with client(b).stream("GET", f"/api/v2/files/{cid}") as r:
            got = sum(len(chunk) for chunk in r.iter_bytes(MIB))
        seconds = time.perf_counter() - t
        assert got == size, got
        return {"on_demand_read_s": round(seconds, 2), "on_demand_read_MiBps": round(size / MIB / seconds, 1)}
    finally:
        for n in (a, b):
            n.stop()


def rollout(root: Path, data: Path, size: int) -> dict:
    nodes = start_nodes(root / "five", 5)
    try:
        cid = upload_big(nodes[0], data)
        seconds = name_and_wait(nodes[0], nodes[1:], "big", cid)
        served = counter(nodes[0], "edgefiles_bitswap_sent_bytes")
        return {
            "rollout_to_4_s": round(seconds, 2),
            "origin_served_MiB": round(served / MIB, 1),
            "origin_served_vs_dag": round(served / size, 2),
            "peak_rss_MB_per_node": [round(peak_rss_mb(n), 1) for n in nodes],
        }
    finally:
        for n in nodes:
            n.stop()


def propagation(root: Path, updates: int) -> dict:
    nodes = start_nodes(root / "names", 5)
    origin, others = nodes[0], nodes[1:]
    try:
        cid = client(origin).post("/api/v2/files", files=[("f", ("x.txt", b"x"))]).text
        clients = [client(n) for n in others]
        origin_client = client(origin)
        latencies: list[float] = []
        for i in range(updates):
            # one thread polls the 4 nodes in turn (~1 ms a request): pollers on threads of
            # their own would fight the nodes for the 2 cores and inflate the figure
            name, waiting = f"p{i}", set(range(len(others)))
            sent = time.perf_counter()
            origin_client.put(f"/api/v2/files/{name}", content=cid).raise_for_status()
            while waiting:
                for k in list(waiting):
                    if clients[k].head(f"/api/v2/files/{name}").status_code == 200:
                        latencies.append(time.perf_counter() - sent)
                        waiting.discard(k)
            time.sleep(0.02)
        latencies.sort()
        return {
            "name_updates": updates,
            "propagation_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "propagation_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        }
    finally:
        for n in nodes:
            n.stop()


def catch_up(root: Path, table: int) -> dict:
    a, b = nodes = start_nodes(root / "catchup", 2)
    try:
        cid = client(a).post("/api/v2/files", files=[("f", ("x.txt", b"x"))]).text

        def put(i: int) -> None:
            client(a).put(f"/api/v2/files/t{i}", content=cid).raise_for_status()

        with ThreadPoolExecutor(8) as pool:  # each PUT commits alone: keep several in flight
            list(pool.map(put, range(table)))
        wait_until(lambda: len(client(b).get("/api/v2/names").json()) == table, timeout=300, what="B's table")
        b.stop()
        client(a).put("/api/v2/files/late", content=cid).raise_for_status()
        time.sleep(4)  # longer than gossipsub's history: only the exchange can bring it
        before = counter(a, "edgefiles_names_table_records_sent")
        started = time.perf_counter()
        b.start()
        wait_until(lambda: client(b).head("/api/v2/files/late").status_code == 200, timeout=120,
                   interval=0.02, what="B to catch up")
        caught_up = time.perf_counter() - started
        time.sleep(1)  # let an exchange on a second connection finish before counting
        sent = counter(a, "edgefiles_names_table_records_sent") - before
        return {
            "catch_up_table_names": table + 1,
            "catch_up_records_sent": int(sent),
            "catch_up_records_sent_vs_table": round(sent / (table + 1), 4),
            "catch_up_restart_to_resolved_s": round(caught_up, 2),
        }
    finally:
        for n in nodes:
            n.stop()


def star_start(root: Path, count: int) -> list[Node]:
    root.mkdir(parents=True)
    key = root / "swarm.key"
    key.write_text(os.urandom(32).hex())
    return start_star(root, count, key)


def small_app(version: str) -> list[tuple[str, bytes]]:
    return [("index.html", f"<h1>{version}</h1>".encode()), ("app.js", os.urandom(40_000)),
            ("style.css", f"body{{}} /* {version} */".encode()), ("asset.bin", os.urandom(3 * MIB))]


def small_rollouts(root: Path, rounds: int) -> dict:
    nodes = star_start(root / "small", 4)
    sites = [httpx.Client(base_url=n.url, timeout=60) for n in nodes]
    rng = random.Random(7)
    names: list[str] = []
    latencies: list[float] = []
    try:
        for r in range(rounds):
            version = f"v{r}-{os.urandom(4).hex()}"
            origin = rng.randrange(len(nodes))
            files = [("f", (path, data)) for path, data in small_app(version)]
            cid = client(nodes[origin]).post("/api/v2/files", files=files).text
            name = rng.choice(names) if names and r % 2 else f"app{r}"
            names += [] if name in names else [name]
            client(nodes[origin]).put(f"/api/v2/files/{name}", content=cid).raise_for_status()
            named = time.perf_counter()
            waiting, host = set(range(len(nodes))), {"Host": f"{name}.actyx.localhost"}
            while waiting:  # one thread, nodes in turn: pollers of their own would take the cores
                for k in list(waiting):
                    if version.encode() in sites[k].get("/", headers=host).content:
                        waiting.discard(k)
                if time.perf_counter() - named > 60:
                    raise RuntimeError(f"round {r}: nodes {sorted(waiting)} never served {name}")
                time.sleep(0.01)
            latencies.append(time.perf_counter() - named)
        return {
            "small_app_rounds": rounds,
            "small_app_rollout_p50_ms": round(loadgen.percentile(latencies, 0.5) * 1000),
            "small_app_rollout_p99_ms": round(loadgen.percentile(latencies, 0.99) * 1000),
            "small_app_rollout_max_ms": round(max(latencies) * 1000),
        }
    finally:
        for site in sites:
            site.close()
        for n in nodes:
            n.stop()


def meshes(root: Path, runs: int) -> dict:
    took: list[float] = []
    for run in range(runs):
        nodes = star_start(root / f"mesh{run}", 6)
        ready = time.perf_counter()
        ids = {n.peer_id for n in nodes}
        try:
            waiting = set(range(len(nodes)))
            while waiting and time.perf_counter() - ready < 5:
                waiting = {k for k in waiting if set(info(nodes[k])["peers"]) != ids - {nodes[k].peer_id}}
                time.sleep(0.02)
            if not waiting:
                took.append(time.perf_counter() - ready)
        finally:
            for n in nodes:
                n.stop()
    return {
        "mesh_runs": runs,
        "mesh_full_within_5s": len(took),
        "mesh_s_p50": round(loadgen.percentile(took, 0.5), 2) if took else None,
        "mesh_s_max": round(max(took), 2) if took else None,
    }


def multi_node(root: Path, mib: int) -> dict:
    nodes = start_nodes(root / "multi", 4)
    try:
        cids = []
        for tag in ("alone", "named"):
            path = root / f"{tag}.bin"
            with open(path, "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(MIB))
            cids.append(upload_big(nodes[0], path))
        alone, named = cids
        t = time.perf_counter()
        with client(nodes[1]).stream("GET", f"/api/v2/files/{alone}") as r:
            got = sum(len(chunk) for chunk in r.iter_bytes(MIB))
        single = time.perf_counter() - t
        assert got == mib * MIB, got
        sent_before = counter(nodes[0], "edgefiles_bitswap_sent_bytes")
        seconds = name_and_wait(nodes[0], nodes[1:], "multi", named)
        served = counter(nodes[0], "edgefiles_bitswap_sent_bytes") - sent_before
        return {
            "multi_node_mib": mib,
            "one_receiver_by_cid_s": round(single, 2),
            "three_receivers_rollout_s": round(seconds, 2),
            "multi_node_vs_one_receiver": round(seconds / single, 2),
            "multi_node_origin_served_vs_dag": round(served / (mib * MIB), 2),
        }
    finally:
        for n in nodes:
            n.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--table", type=int, default=5000, help="names in the catch-up table")
    parser.add_argument("--rounds", type=int, default=50, help="small-app rollouts")
    parser.add_argument("--meshes", type=int, default=30, help="star starts of 6 nodes")
    parser.add_argument("--multi-mib", type=int, default=128, help="the multi-node rollout's DAG")
    parser.add_argument("--parts", default="transfer,ondemand,rollout,names,catchup,small,mesh,multi",
                        help="measurements to run")
    parser.add_argument("--raw-receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--coalesce", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_receiver:
        raw_receiver(args.raw_receiver, args.coalesce)
        return
    size = args.mib * MIB
    with tempfile.TemporaryDirectory(prefix="edgefiles-bench-") as tmp:
        root = Path(tmp)
        data = root / "big.bin"
        with open(data, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MIB))
        result: dict = {"size_mib": args.mib, "cores": os.cpu_count()}
        parts = args.parts.split(",")
        if "transfer" in parts:
            result["raw_libp2p_stream_MBps"] = round(raw_stream_mbps(size), 1)
            result["raw_stream_as_bitswap_uses_it_MBps"] = round(raw_stream_mbps(size, as_bitswap=True), 1)
            result.update(transfer(root, data, size))
            a_to_b = result["a_to_b_MiBps"] * MIB / 1e6
            for key, raw in (("raw_stream", "raw_libp2p_stream_MBps"),
                             ("raw_stream_as_bitswap_uses_it", "raw_stream_as_bitswap_uses_it_MBps")):
                result[f"a_to_b_vs_{key}"] = round(a_to_b / result[raw], 2)
        if "ondemand" in parts:
            result.update(on_demand(root, data, size))
        if "rollout" in parts:
            result.update(rollout(root, data, size))
        if "names" in parts:
            result.update(propagation(root, args.updates))
        if "catchup" in parts:
            result.update(catch_up(root, args.table))
        if "small" in parts:
            result.update(small_rollouts(root, args.rounds))
        if "mesh" in parts:
            result.update(meshes(root, args.meshes))
        if "multi" in parts:
            result.update(multi_node(root, args.multi_mib))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
