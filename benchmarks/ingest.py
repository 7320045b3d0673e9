"""Ingest benchmark: `edgefiles cid`, HTTP upload, small files, server memory — each as a ratio
against a baseline measured in the same run on the same bytes — and `edgefiles get` of the small
files' folder (one verified CAR, written out) against `cp -r` of it (shutil.copytree, in process:
the command's start and its token request are in its figure, not in the baseline's).

    python benchmarks/ingest.py [--size-mib 1024] [--small-files 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadgen  # noqa: E402
from nodeproc import Node  # noqa: E402

MIB = 1 << 20


def make_file(path: Path, size: int) -> None:
    rng = random.Random(42)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MIB)
            f.write(rng.randbytes(n))
            left -= n


def time_hashlib(path: Path) -> float:
    data = path.read_bytes()
    t = time.perf_counter()
    hashlib.sha256(data).digest()
    elapsed = time.perf_counter() - t
    del data
    return elapsed


def time_cid_command(path: Path) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "edgefiles", "cid", str(path)],
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - t, out.stdout.strip()


def settle() -> None:
    """Flush everything dirty first, so no timing pays for an earlier one's writeback."""
    os.sync()
    time.sleep(0.5)


def time_write_fdatasync(path: Path, target: Path) -> float:
    settle()
    t = time.perf_counter()
    with open(path, "rb") as src, open(target, "wb") as dst:
        while piece := src.read(4 * MIB):
            dst.write(piece)
        dst.flush()
        os.fdatasync(dst.fileno())
    elapsed = time.perf_counter() - t
    target.unlink()
    return elapsed


def raw_upload(node: Node, files: list[tuple[str, Path]]) -> tuple[float, str]:
    """A fast sender (sendfile) so the server, not the client, sets the pace."""
    elapsed, status, body = loadgen.post_form_files(node.port, "/api/v2/files",
                                                    {"Authorization": f"Bearer {node.token()}"}, files, "f")
    if status != 200:
        raise RuntimeError(f"upload failed: {status} {body[:300]}")
    return elapsed, body


def time_get_command(node: Node, cid: str, out: Path) -> float:
    """Seconds of `edgefiles get CID -o OUT` against the node, the whole command."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "edgefiles", "get", cid, "-o", str(out), "--node", node.url,
                    "--no-progress"], check=True, capture_output=True)
    return time.perf_counter() - started


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="each timing is the median of this many")
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    args = parser.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="edgefiles-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    size = args.size_mib * MIB
    big = work / "big.bin"
    make_file(big, size)
    results: dict[str, object] = {"size_mib": args.size_mib, "cores": os.cpu_count(), "rounds": args.rounds}
    try:
        t_hash = median([time_hashlib(big) for _ in range(args.rounds)])
        cid_runs = [time_cid_command(big) for _ in range(args.rounds)]
        t_cid, cid = median([t for t, _ in cid_runs]), cid_runs[0][1]
        results["hashlib_sha256_one_core_s"] = round(t_hash, 3)
        results["edgefiles_cid_command_s"] = round(t_cid, 3)
        results["cid_vs_hashlib_ratio"] = round(t_hash / t_cid, 2)
        results["cid_command_MBps"] = round(size / t_cid / 1e6)

        writes, uploads, rss = [], [], []
        for i in range(args.rounds):  # a fresh node each round: nothing deduplicated
            writes.append(time_write_fdatasync(big, work / "copy.bin"))
            node = Node(work / f"node{i}").start()
            settle()
            try:
                t_upload, uploaded = raw_upload(node, [("big.bin", big)])
                assert uploaded == cid, (uploaded, cid)
                uploads.append(t_upload)
                rss.append(peak_rss_mb(node.proc.pid))
            finally:
                node.stop()
                shutil.rmtree(work / f"node{i}", ignore_errors=True)
        t_write, t_upload = median(writes), median(uploads)
        results["write_fdatasync_s"] = round(t_write, 3)
        results["http_upload_s"] = round(t_upload, 3)
        results["upload_vs_write_fdatasync_ratio"] = round(t_write / t_upload, 2)
        results["upload_MBps"] = round(size / t_upload / 1e6)
        results["write_fdatasync_MBps"] = round(size / t_write / 1e6)
        results["server_peak_rss_MB_during_big_upload"] = round(max(rss), 1)

        small_dir = work / "small"
        small_dir.mkdir()
        rng = random.Random(7)
        small = []
        for i in range(args.small_files):
            p = small_dir / f"file-{i:05d}.txt"
            p.write_bytes(rng.randbytes(rng.randint(1024, 8192)))
            small.append((f"site/{p.name}", p))
        node = Node(work / "small-node").start()
        try:
            t_small, folder_cid = raw_upload(node, small)
            gets, copies = [], []
            for i in range(args.rounds):
                gets.append(time_get_command(node, folder_cid, work / f"got{i}"))
                started = time.perf_counter()
                shutil.copytree(small_dir, work / f"copied{i}")
                copies.append(time.perf_counter() - started)
        finally:
            node.stop()
        results["small_files"] = args.small_files
        results["small_files_upload_s"] = round(t_small, 3)
        results["small_files_per_s"] = round(args.small_files / t_small)
        results["small_files_get_command_s"] = round(median(gets), 3)
        results["cp_r_s"] = round(median(copies), 3)
        results["get_vs_cp_r_ratio"] = round(median(copies) / median(gets), 2)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
