"""IPFS interop benchmark, each figure against a baseline measured in the same run.

    python benchmarks/interop.py [--mib 1024] [--rounds 3] [--parts car]

car: a node exports a file of --mib as a CAR over HTTP (every block read from the store and
     verified against its CID; page cache warm: one uncounted export first), against one core
     of hashlib.sha256 over the same bytes. Medians of --rounds.
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nodeproc import Node  # noqa: E402

MIB = 1 << 20


def write_random(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))


def upload(node: Node, path: Path) -> str:
    with open(path, "rb") as f, node.client() as client:
        r = client.post("/api/v2/files", files=[("f", (path.name, f))], timeout=600)
    r.raise_for_status()
    return r.text


def time_car_export(node: Node, cid: str) -> tuple[float, int]:
    """Seconds to receive the whole CAR on a plain socket (a client that costs next to nothing)."""
    request = (f"GET /api/v2/files/{cid}?format=car HTTP/1.1\r\nHost: bench\r\n"
               f"Authorization: Bearer {node.token()}\r\nConnection: close\r\n\r\n").encode()
    buf = bytearray(4 * MIB)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", node.port)) as s:
        s.sendall(request)
        got = 0
        while n := s.recv_into(buf):
            got += n
    return time.perf_counter() - started, got


def car_export(work: Path, mib: int, rounds: int) -> dict:
    data_path = work / "car.bin"
    write_random(data_path, mib)
    data = data_path.read_bytes()
    node = Node(work / "car-node").start()
    try:
        cid = upload(node, data_path)
        time_car_export(node, cid)  # warm: blocks written past the page cache are read once
        hashing, exporting = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            hashlib.sha256(data).digest()
            hashing.append(time.perf_counter() - started)
            seconds, got = time_car_export(node, cid)
            assert got > mib * MIB, got
            exporting.append(seconds)
    finally:
        node.stop()
    hash_s, car_s = statistics.median(hashing), statistics.median(exporting)
    return {
        "car_mib": mib,
        "hashlib_one_core_s": round(hash_s, 3),
        "car_export_s": round(car_s, 3),
        "car_export_MBps": round(mib * MIB / car_s / 1e6),
        "car_export_vs_hashlib": round(hash_s / car_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="car", help="measurements to run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgefiles-interop-"))
    result: dict = {"cores": os.cpu_count()}
    try:
        if "car" in args.parts.split(","):
            result.update(car_export(work, args.mib, args.rounds))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
