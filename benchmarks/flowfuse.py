"""The FlowFuse facade under load: 4 KiB file writes (into a project already holding 2,000
files), 4 KiB reads, context set and context get, 8 connections, 2,000 requests a phase; and
appending 1 KiB to a 100 MiB file. Baselines in the same run: write+fdatasync of each 4 KiB
file on the same disk (what a durable write costs at least) and GET /health (what the HTTP
stack and this client reach at best). The client is `loadgen.py` (lean, one asyncio loop).

    python benchmarks/flowfuse.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402
from fake_platform import FakePlatform  # noqa: E402
from nodeproc import Node  # noqa: E402

CONNECTIONS = 8
OCTET = {"Content-Type": "application/octet-stream"}
JSON = {"Content-Type": "application/json"}


def phase(node: Node, token: str, count: int, method: str, path, body=None) -> dict:
    """`count` requests over 8 keep-alive connections; path(i) and body(i) build request i."""
    auth = {"Authorization": f"Bearer {token}"}

    def make(i: int) -> bytes:
        data = body(i) if body else b""
        headers = {**auth, **(JSON if isinstance(data, str) else OCTET)} if body else auth
        raw = data.encode() if isinstance(data, str) else data
        return loadgen.request_bytes(method, path(i), headers, raw)

    return loadgen.run(node.port, count, CONNECTIONS, make)


def raw_disk(folder: Path, count: int) -> float:
    folder.mkdir()
    t = time.perf_counter()
    for i in range(count):
        with open(folder / f"f{i}", "wb") as f:
            f.write(os.urandom(4096))
            f.flush()
            os.fdatasync(f.fileno())
    return count / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    n = args.requests
    body = os.urandom(4096)
    platform = FakePlatform()
    token = platform.issue("bench", "proj", file=10 << 30, context=1 << 30)
    files = "/v1/files/team/proj"
    with tempfile.TemporaryDirectory(prefix="edgefiles-ff-") as tmp:
        root = Path(tmp)
        conf = root / "flowforge-storage.yml"
        conf.write_text(f"base_url: {platform.url}\n")
        node = Node(root / "data", "--flowfuse-config", str(conf)).start()
        try:
            result: dict = {"requests_per_phase": n, "connections": CONNECTIONS, "cores": os.cpu_count()}
            result["raw_disk_write_fdatasync_4KiB_per_s"] = round(raw_disk(root / "raw", n))
            # one request first: the platform's answer is cached 90 s, and the stand-in platform
            # shares this process with the load generator (a reply > 500 ms would be a 401)
            httpx.get(f"{node.url}/v1/quota/team/proj", headers={"Authorization": f"Bearer {token}"})
            phase(node, token, 2000, "POST", lambda i: f"{files}/old/f{i}", lambda i: body)
            result["write_4KiB"] = phase(
                node, token, n, "POST", lambda i: f"{files}/new/f{i}", lambda i: body
            )
            result["read_4KiB"] = phase(node, token, n, "GET", lambda i: f"{files}/new/f{i}")
            ctx = "/v1/context/proj"
            result["context_set"] = phase(
                node, token, n, "POST", lambda i: f"{ctx}/flow{i % 50}",
                lambda i: json.dumps([{"key": f"k{i}", "value": i}]),
            )
            result["context_get"] = phase(node, token, n, "GET", lambda i: f"{ctx}/flow{i % 50}?key=k{i}")
            result["health_baseline"] = phase(node, token, n, "GET", lambda i: "/health")
            result["write_ratio_vs_raw_disk"] = round(
                result["write_4KiB"]["per_s"] / result["raw_disk_write_fdatasync_4KiB_per_s"], 2
            )
            result.update(append_latency(node, token))
        finally:
            node.stop()
            platform.close()
    print(json.dumps(result, indent=2))


def append_latency(node: Node, token: str) -> dict:
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
        path = "/v1/files/team/proj/big.log"
        c.post(path, content=os.urandom(10 << 20), headers=OCTET).raise_for_status()
        for _ in range(9):  # grow it to 100 MiB (the body limit is 10 MiB a request)
            more = c.post(path, content=os.urandom(10 << 20), headers={**OCTET, "ff_mode": "append"})
            more.raise_for_status()
        times = []
        for _ in range(20):
            t = time.perf_counter()
            c.post(path, content=os.urandom(1024), headers={**OCTET, "ff_mode": "append"}).raise_for_status()
            times.append(time.perf_counter() - t)
        size = len(c.get(path).content)
    return {"append_1KiB_to_100MiB_p50_ms": round(statistics.median(times) * 1000, 2), "final_size": size}


if __name__ == "__main__":
    main()
