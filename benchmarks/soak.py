"""Soak: a swarm of real nodes under a steady mixed load for minutes, on loopback.

    python benchmarks/soak.py [--minutes 10] [--nodes 4] [--rate 40] \
        [--mix upload=3,read=5,rename=2,flowfuse=3] [--kill-every 0]

One client thread per node sends requests at `--rate` per second in all, drawn from `--mix`:
uploads (1-64 KiB, every 40th of 2 MiB), reads by CID of any earlier upload from any node
(the bytes are compared), renames (an app name moved to an earlier upload, which every node
then rolls out), and FlowFuse writes, appends and reads. With `--kill-every S`, a random node
other than the first is killed with SIGKILL every S seconds and restarted (its client pauses
meanwhile; reads avoid uploads only it holds while it is down).

Reported: requests served by kind with p50/p99 latency, error answers (none is asked for, so
any is a failure), faults injected and crashes survived, data lost (every acknowledged upload
read back from every node at the end, and FlowFuse files and names compared across nodes),
and each node's resident memory per minute: the last minute's peak must stay within 10 % of
the second minute's. Exit status 0 when all of that holds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fake_platform import FakePlatform  # noqa: E402
from nodeproc import Node, start_star, wait_until  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402

KINDS = ("upload", "read", "rename", "flowfuse")
NAMES = 8  # app names moved around
FF_FILES = 6
OCTET = {"Content-Type": "application/octet-stream"}
FF_TOKEN = "tok-soak"


@dataclass
class Op:
    """One request about to be sent: from which client, with what."""

    index: int  # the node's
    files: httpx.Client  # with an app token
    ff: httpx.Client  # with a FlowFuse token
    rng: random.Random
    count: int  # requests this client sent


class Soak:
    def __init__(self, nodes: list[Node], rate: float, mix: dict[str, int], seed: int):
        self.nodes = nodes
        self.rate = rate
        self.kinds = [k for k in KINDS for _ in range(mix.get(k, 0))]
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.uploads: dict[str, tuple[bytes, int]] = {}  # CID -> (bytes, node that took it)
        self.flowfuse: dict[str, bytes] = {}  # path -> what the last acknowledged write left
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.down: set[int] = set()
        self.faults = 0
        self.stop = threading.Event()

    # the load -----------------------------------------------------------------------------
    def client_loop(self, index: int) -> None:
        node = self.nodes[index]
        rng = random.Random(self.rng.random())
        period = len(self.nodes) / self.rate
        next_at = time.monotonic()
        files = ff = None
        count = 0
        while not self.stop.is_set():
            next_at += rng.expovariate(1 / period)
            time.sleep(max(0.0, next_at - time.monotonic()))
            if index in self.down:
                files = ff = None
                continue
            if files is None:
                files, ff = (_client(node, token) for token in (node.token(), FF_TOKEN))
            kind = rng.choice(self.kinds)
            count += 1
            started = time.perf_counter()
            try:
                done = getattr(self, f"_{kind}")(Op(index, files, ff, rng, count))
            except httpx.TransportError as exc:
                if index in self.down:
                    continue  # killed under us: a fault we injected
                done = f"{type(exc).__name__}: {exc}"
            if done is True:
                with self.lock:
                    self.latency[kind].append(time.perf_counter() - started)
            elif done:
                with self.lock:
                    self.errors.append(f"{kind} on node {index}: {done}")

    def _upload(self, op: Op) -> bool | str:
        data = os.urandom(2 << 20 if op.count % 40 == 0 else op.rng.randint(1 << 10, 64 << 10))
        r = op.files.post("/api/v2/files", files=[("file", ("f.bin", data))])
        if r.status_code != 200:
            return f"{r.status_code} {r.text[:200]}"
        with self.lock:
            self.uploads[r.text] = (data, op.index)
        return True

    def _reachable_upload(self, rng: random.Random) -> str | None:
        """An upload whose node is up (its blocks may be only there); None before the first."""
        with self.lock:
            choices = [cid for cid, (_, holder) in self.uploads.items() if holder not in self.down]
        return rng.choice(choices) if choices else None

    def _read(self, op: Op) -> bool | str | None:
        cid = self._reachable_upload(op.rng)
        if cid is None:
            return None
        r = op.files.get(f"/api/v2/files/{cid}")
        if r.status_code != 200 or r.content != self.uploads[cid][0]:
            return f"{cid}: {r.status_code}, {len(r.content)} bytes"
        return True

    def _rename(self, op: Op) -> bool | str | None:
        cid = self._reachable_upload(op.rng)
        if cid is None:
            return None
        r = op.files.put(f"/api/v2/files/app-{op.rng.randrange(NAMES)}", content=cid)
        return True if r.status_code in (200, 204) else f"{r.status_code} {r.text[:200]}"

    def _flowfuse(self, op: Op) -> bool | str:
        path = f"/v1/files/soak/proj/f{op.rng.randrange(FF_FILES)}.txt"
        if op.rng.random() < 0.5:
            r = op.ff.get(path)
            return True if r.status_code in (200, 404) else f"read {r.status_code} {r.text[:200]}"
        piece = secrets.token_hex(op.rng.randint(4, 400)).encode()
        r = op.ff.post(path, content=piece, headers=OCTET)
        return True if r.status_code == 200 else f"write {r.status_code} {r.text[:200]}"

    # faults -------------------------------------------------------------------------------
    def kill_loop(self, every: float) -> None:
        rng = random.Random(self.rng.random())
        while not self.stop.wait(every):
            victim = rng.randrange(1, len(self.nodes))
            self.down.add(victim)
            time.sleep(0.2)  # its client notices before the node goes
            self.nodes[victim].stop(signal.SIGKILL)
            self.faults += 1
            try:
                self.nodes[victim].start()
            except RuntimeError as exc:  # stays down: agree() then reports what it could not reach
                with self.lock:
                    self.errors.append(f"node {victim} did not come back after SIGKILL: {str(exc)[-2000:]}")
                return
            self.down.discard(victim)


def _client(node: Node, token: str) -> httpx.Client:
    return httpx.Client(base_url=node.url, timeout=60, headers={"Authorization": f"Bearer {token}"})


def rss_mb(node: Node) -> float:
    try:
        for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def agree(soak: Soak) -> list[str]:
    """What the nodes disagree on, or lost, once the load has stopped."""
    problems = []
    clients = [_client(n, n.token()) for n in soak.nodes]
    try:
        def same_names() -> bool:
            tables = [sorted((e["name"], e["cid"], e["complete"]) for e in c.get("/api/v2/names").json())
                      for c in clients]
            return all(t == tables[0] for t in tables) and all(complete for _, _, complete in tables[0])

        try:
            wait_until(same_names, timeout=120, interval=0.5, what="every node to hold the same names")
        except AssertionError as exc:
            tables = [{e["name"]: (e["cid"][-8:], e["complete"]) for e in c.get("/api/v2/names").json()}
                      for c in clients]
            differ = {name: [t.get(name) for t in tables] for name in set().union(*tables)
                      if len({str(t.get(name)) for t in tables}) > 1 or not all(t[name][1] for t in tables)}
            peers = [sorted(p[-6:] for p in c.get("/api/v2/node/info").json()["peers"]) for c in clients]
            ids = [n.peer_id[-6:] for n in soak.nodes]
            problems.append(f"{exc}: {differ}; nodes {ids} see peers {peers}")
        for cid, (data, _) in soak.uploads.items():
            for i, c in enumerate(clients):
                r = c.get(f"/api/v2/files/{cid}")
                if r.status_code != 200 or r.content != data:
                    problems.append(f"upload {cid} lost or changed on node {i}: {r.status_code}")
        for k in range(FF_FILES):
            path = f"/v1/files/soak/proj/f{k}.txt"
            views = [_client(n, FF_TOKEN).get(path) for n in soak.nodes]
            if len({(r.status_code, r.content) for r in views}) > 1:
                seen = [(r.status_code, len(r.content), r.content[-12:]) for r in views]
                problems.append(f"FlowFuse file {path} differs between nodes: {seen}")
    finally:
        for c in clients:
            c.close()
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--rate", type=float, default=40.0, help="requests per second, all clients together")
    p.add_argument("--mix", default="upload=3,read=5,rename=2,flowfuse=3", help="kind=weight,...")
    p.add_argument("--kill-every", type=float, default=0.0, metavar="SECONDS",
                   help="SIGKILL and restart a random node (not the first) this often; 0: never")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", metavar="DIR", help="run the nodes in DIR and keep their data and logs")
    args = p.parse_args()
    mix = {k: int(v) for k, v in (part.split("=") for part in args.mix.split(","))}

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        root = Path(args.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        platform = FakePlatform()
        platform.issue(FF_TOKEN, "proj")
        config = root / "flowforge-storage.yml"
        config.write_text(f"base_url: {platform.url}\nhost: 127.0.0.1\nport: 3001\n")
        key = root / "swarm.key"
        key.write_text(secrets.token_hex(32) + "\n")
        nodes = start_star(root, args.nodes, key, "--flowfuse-config", str(config))
        soak = Soak(nodes, args.rate, mix, args.seed)
        memory: list[list[float]] = []  # per sample: each node's RSS
        threads = [threading.Thread(target=soak.client_loop, args=(i,)) for i in range(len(nodes))]
        if args.kill_every > 0:
            threads.append(threading.Thread(target=soak.kill_loop, args=(args.kill_every,)))
        started = time.monotonic()
        for t in threads:
            t.start()
        try:
            while time.monotonic() - started < args.minutes * 60:
                memory.append([rss_mb(n) for n in nodes])
                rss = " ".join(f"{m:.0f}" for m in memory[-1])
                print(f"\r{(time.monotonic() - started) / 60:5.1f} min  "
                      f"{sum(len(v) for v in soak.latency.values())} requests  {len(soak.errors)} errors  "
                      f"RSS {rss} MiB", end="", file=sys.stderr, flush=True)
                time.sleep(5)
        finally:
            soak.stop.set()
            for t in threads:
                t.join()
            print(file=sys.stderr)
        try:
            problems = agree(soak)
        except Exception:  # an answer the check could not read is a failure too, and the report still due
            problems = [f"checking the nodes failed:\n{traceback.format_exc()[-3000:]}"]
        for n in nodes:
            n.stop()
        platform.close()
    return report(args, soak, memory, problems)


def report(args: argparse.Namespace, soak: Soak, memory: list[list[float]], problems: list[str]) -> int:
    per_minute = 12  # samples
    minutes = [memory[i : i + per_minute] for i in range(0, len(memory), per_minute)]
    second, last = minutes[min(1, len(minutes) - 1)], minutes[-1]
    peaks = [(max(s[n] for s in second), max(s[n] for s in last)) for n in range(len(soak.nodes))]
    flat = all(end <= start * 1.10 for start, end in peaks) if len(minutes) >= 3 else None
    summary = {
        "minutes": args.minutes, "nodes": len(soak.nodes), "rate": args.rate,
        "requests": {k: len(v) for k, v in soak.latency.items()},
        "latency_ms": {k: {"p50": round(statistics.median(v) * 1000, 1),
                           "p99": round(loadgen.percentile(v, 0.99) * 1000, 1)}
                       for k, v in soak.latency.items() if v},
        "errors": len(soak.errors), "error_samples": soak.errors[:10],
        "faults_injected": soak.faults, "crashes_survived": soak.faults,
        "uploads_checked": len(soak.uploads), "data_lost": len(problems), "problems": problems[:10],
        "rss_mib_start": [round(m, 1) for m in memory[0]], "rss_mib_end": [round(m, 1) for m in memory[-1]],
        "rss_peak_second_minute_vs_last": [[round(a, 1), round(b, 1)] for a, b in peaks],
        "memory_flat": flat,
    }
    print(json.dumps(summary, indent=2))
    ok = not soak.errors and not problems and flat is not False
    print("soak:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
