"""The Storage API against the Files API in the same run, on one node.

Big objects: a --mib MiB file (fresh random bytes every round) uploaded and downloaded
through `POST /api/v2/files` / `GET /api/v2/files/<cid>` and through `POST
/api/v1/storage/upload` / `GET /api/v1/storage/objects/<name>` (sealed with AES-256-GCM on
the way in, opened on the way out), --rounds rounds, the two APIs' order alternating; p50
and p99 of each, and the Storage API's medians as ratios of the Files API's (target >= 0.7).

Small objects: 4 KiB uploads per second on 8 connections through the Storage API, against
the FlowFuse facade's 4 KiB writes on the same node in the same run (target >= 0.8): of
one body over and over, as benchmarks/flowfuse.py writes (its blocks dedupe after the
first), and of fresh bytes every write (as sealed uploads always are); --rounds rounds after
2,000 warm-up writes each, the phases' order turning. The clients are `loadgen.py` (plain
sockets, sendfile).

Replication: a 64 KiB object uploaded on one node of two until the other serves its bytes,
against the same bytes uploaded and named through the Files API (--replication-rounds
rounds, p50 and p99).

    python benchmarks/storage_api.py [--mib 256] [--rounds 5] [--requests 2000] [--replication-rounds 50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402
from fake_platform import FakePlatform  # noqa: E402
from nodeproc import Node, two_members, wait_until  # noqa: E402

CONNECTIONS = 8
BOUNDARY = "benchboundary"
S = "/api/v1/storage"


def admin(node: Node, *args: str) -> dict:
    command = [sys.executable, "-m", "edgefiles", "admin", *args, "--data", str(node.data), "--json"]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def write_random(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))


def files_api_round(node: Node, path: Path) -> tuple[float, float]:
    auth = {"Authorization": f"Bearer {node.token()}"}
    up, status, body = loadgen.post_form_files(node.port, "/api/v2/files", auth, [("big.bin", path)])
    assert status == 200, body
    down, size = loadgen.get_to(node.port, f"/api/v2/files/{body.strip()}", auth)
    assert size == path.stat().st_size
    return up, down


def storage_round(node: Node, token: str, path: Path) -> tuple[float, float]:
    auth = {"Authorization": f"Bearer {token}"}
    up, status, body = loadgen.post_form_files(node.port, f"{S}/upload", auth, [("big.bin", path)])
    assert status == 201, body
    name = json.loads(body)["data"]["object_name"]
    down, size = loadgen.get_to(node.port, f"{S}/objects/{name}", auth)
    assert size == path.stat().st_size
    httpx.delete(f"{node.url}{S}/objects/{name}", headers=auth)
    return up, down


def spread(seconds: list[float], mib: int) -> dict:
    """MiB/s at the median and at the 99th percentile of the times (the slow end)."""
    p99 = loadgen.percentile(seconds, 0.99)
    return {"p50_MiB_s": round(mib / statistics.median(seconds), 1), "p99_MiB_s": round(mib / p99, 1)}


def big(root: Path, mib: int, rounds: int) -> dict:
    node = Node(root / "big", "--storage-org-quota", "64GiB").start()
    try:
        token = admin(node, "user", "add", "--email", "bench@bench.test", "--org", "bench")["token"]
        legs = ("files_up", "files_down", "storage_up", "storage_down")
        times: dict[str, list[float]] = {k: [] for k in legs}
        sample = root / "sample.bin"
        write_random(sample, mib)
        files_api_round(node, sample), storage_round(node, token, sample)  # warm-up, not counted
        for i in range(rounds):
            write_random(sample, mib)
            legs = [("files", lambda: files_api_round(node, sample)),
                    ("storage", lambda: storage_round(node, token, sample))]
            for kind, run in legs if i % 2 == 0 else legs[::-1]:
                up, down = run()
                times[f"{kind}_up"].append(up)
                times[f"{kind}_down"].append(down)
        out: dict = {"object_MiB": mib, "rounds": rounds, "cores": os.cpu_count()}
        out.update({key: spread(values, mib) for key, values in times.items()})
        for way in ("up", "down"):
            out[f"storage_{way}_vs_files_api"] = round(
                statistics.median(times[f"files_{way}"]) / statistics.median(times[f"storage_{way}"]), 2)
        return out
    finally:
        node.stop()


def small(root: Path, n: int, rounds: int) -> dict:
    body = os.urandom(4096)
    platform = FakePlatform()
    token = platform.issue("bench", "proj", file=10 << 30, context=1 << 30)
    conf = root / "flowforge-storage.yml"
    conf.write_text(f"base_url: {platform.url}\n")
    node = Node(root / "small", "--flowfuse-config", str(conf)).start()
    try:
        user = admin(node, "user", "add", "--email", "small@bench.test", "--org", "bench")["token"]
        ff = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        storage = {"Authorization": f"Bearer {user}",
                   "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        httpx.get(f"{node.url}/v1/quota/team/proj", headers={"Authorization": f"Bearer {token}"})
        form = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="r.bin"\r\n\r\n'
                .encode() + body + f"\r\n--{BOUNDARY}--\r\n".encode())

        def flowfuse(prefix: str, count: int, bodies: list[bytes] | None = None) -> dict:
            return loadgen.run(node.port, count, CONNECTIONS, lambda i: loadgen.request_bytes(
                "POST", f"/v1/files/team/proj/{prefix}/f{i}", ff, bodies[i] if bodies else body))

        def uploads(count: int) -> dict:
            return loadgen.run(node.port, count, CONNECTIONS,
                               lambda i: loadgen.request_bytes("POST", f"{S}/upload", storage, form))

        flowfuse("old", 2000), uploads(2000)
        out: dict = {"requests_per_phase": n, "connections": CONNECTIONS}
        runs: dict[str, list[dict]] = {"flowfuse_write_4KiB": [], "flowfuse_write_4KiB_fresh_bytes": [],
                                       "storage_upload_4KiB": []}
        for r in range(rounds):  # the phases' order turns each round: the store grows as they run
            fresh = [os.urandom(4096) for _ in range(n)]  # bytes no other write has: nothing dedupes
            phases = [("flowfuse_write_4KiB", lambda r=r: flowfuse(f"same{r}", n)),
                      ("flowfuse_write_4KiB_fresh_bytes", lambda r=r, f=fresh: flowfuse(f"fresh{r}", n, f)),
                      ("storage_upload_4KiB", lambda: uploads(n))]
            for name, phase in phases[r % 3:] + phases[:r % 3]:
                runs[name].append(phase())
        for name, results in runs.items():
            rates = sorted(x["per_s"] for x in results)
            out[name] = {"per_s_p50": statistics.median(rates), "per_s_min": rates[0],
                         "latency_p50_ms": statistics.median(x["p50_ms"] for x in results)}
        for base in ("flowfuse_write_4KiB", "flowfuse_write_4KiB_fresh_bytes"):
            out[f"storage_upload_vs_{base}"] = round(
                out["storage_upload_4KiB"]["per_s_p50"] / out[base]["per_s_p50"], 2)
        return out
    finally:
        node.stop()
        platform.close()


def replication(root: Path, rounds: int) -> dict:
    """An object uploaded on node A, until node B serves its bytes (its record gossiped, its
    blocks fetched over Bitswap, opened with the organization's key from the accounts), next
    to the same bytes uploaded and named through the Files API until B serves the name."""
    root.mkdir(parents=True)
    with two_members(root) as (a, b):
        user = admin(a, "user", "add", "--email", "r@bench.test", "--org", "bench")
        auth = {"Authorization": f"Bearer {user['token']}"}
        wait_until(lambda: httpx.get(f"{b.url}{S}/usage", headers=auth).status_code == 200, what="accounts")
        storage, files = [], []
        for i in range(rounds + 1):  # the first of each is a warm-up
            data = os.urandom(64 << 10)
            started = time.perf_counter()
            made = httpx.post(f"{a.url}{S}/upload", headers=auth, files={"file": ("r.bin", data)}).json()
            _until_served(f"{b.url}{S}/objects/{made['data']['object_name']}", auth, data)
            storage.append(time.perf_counter() - started)
            started = time.perf_counter()
            cid = a.upload([("r.bin", data)]).text.strip()
            with a.client() as c:
                c.put(f"/api/v2/files/bench-{i}", content=cid)
            _until_served(f"{b.url}/api/v2/files/bench-{i}", {"Authorization": f"Bearer {b.token()}"}, data)
            files.append(time.perf_counter() - started)
    out: dict = {"replication_rounds": rounds}
    for kind, times in (("storage_object", storage[1:]), ("files_api_named", files[1:])):
        ordered = sorted(times)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        out[f"{kind}_on_second_node_ms"] = {"p50": round(statistics.median(ordered) * 1000, 1),
                                            "p99": round(p99 * 1000, 1)}
    out["storage_vs_files_api_replication_p50"] = round(
        out["files_api_named_on_second_node_ms"]["p50"] / out["storage_object_on_second_node_ms"]["p50"], 2)
    return out


def _until_served(url: str, headers: dict[str, str], data: bytes, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(url, headers=headers)
        if answer.status_code == 200 and answer.content == data:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not served in {timeout} s: {answer.status_code}")
        time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--replication-rounds", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefiles-storage-") as tmp:
        result = big(Path(tmp), args.mib, args.rounds)
        result.update(small(Path(tmp), args.requests, args.rounds))
        result.update(replication(Path(tmp) / "swarm", args.replication_rounds))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
