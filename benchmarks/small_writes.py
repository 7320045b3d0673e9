"""Small uploads: 4 KiB files uploaded one per request over 8 connections (and over 1), against
the raw-disk baseline of writing each 4 KiB to its own file with an fdatasync, in the same run.

    python benchmarks/small_writes.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nodeproc import Node  # noqa: E402

SIZE = 4096


def raw_disk(folder: Path, count: int) -> float:
    folder.mkdir()
    t = time.perf_counter()
    for i in range(count):
        with open(folder / f"f{i}", "wb") as f:
            f.write(os.urandom(SIZE))
            f.flush()
            os.fdatasync(f.fileno())
    return count / (time.perf_counter() - t)


def uploads(node: Node, count: int, connections: int) -> tuple[float, float]:
    clients = [httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {node.token()}"})
               for _ in range(connections)]
    latencies: list[float] = []

    def one(i: int) -> None:
        t = time.perf_counter()
        r = clients[i % connections].post("/api/v2/files", files=[("f", (f"f{i}.bin", os.urandom(SIZE)))])
        latencies.append(time.perf_counter() - t)
        r.raise_for_status()

    t = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(one, range(count)))
    rate = count / (time.perf_counter() - t)
    for c in clients:
        c.close()
    return rate, sorted(latencies)[len(latencies) // 2] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgefiles-small-"))
    try:
        baseline = raw_disk(work / "raw", args.requests)
        node = Node(work / "node").start()
        try:
            rate8, p50_8 = uploads(node, args.requests, 8)
            rate1, p50_1 = uploads(node, args.requests // 4, 1)
        finally:
            node.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "requests": args.requests,
        "raw_disk_write_fdatasync_files_per_s": round(baseline),
        "uploads_per_s_8_connections": round(rate8),
        "p50_ms_8_connections": round(p50_8, 2),
        "ratio_8_connections_vs_raw_disk": round(rate8 / baseline, 2),
        "uploads_per_s_1_connection": round(rate1),
        "p50_ms_1_connection": round(p50_1, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
