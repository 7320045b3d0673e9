"""The Filestore facade under load, against the FlowFuse facade in the same run: 4 KiB
uploads (multipart, `Authorization: Thing <key>`) and 4 KiB downloads, 8 connections,
--requests a phase, next to the FlowFuse facade's 4 KiB writes and reads on the same node
(each facade's scope already holding 2,000 files). Plus key propagation: a thing key made on
node A, time until node B accepts it (--rounds rounds, p50 and p99). The client is
`loadgen.py`.

    python benchmarks/filestore.py [--requests 2000] [--rounds 30]
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


def multipart(name: str, data: bytes) -> bytes:
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n")
    return head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def phase(node: Node, auth: str, count: int, method: str, path, body=None, ctype: str | None = None) -> dict:
    headers = {"Authorization": auth, **({"Content-Type": ctype} if ctype else {})}
    return loadgen.run(node.port, count, CONNECTIONS,
                       lambda i: loadgen.request_bytes(method, path(i), headers, body(i) if body else b""))


def admin(node: Node, *args: str) -> dict:
    command = [sys.executable, "-m", "edgefiles", "admin", *args, "--data", str(node.data), "--json"]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def facades(root: Path, n: int) -> dict:
    body = os.urandom(4096)
    platform = FakePlatform()
    token = platform.issue("bench", "proj", file=10 << 30, context=1 << 30)
    root.mkdir(parents=True)
    conf = root / "flowforge-storage.yml"
    conf.write_text(f"base_url: {platform.url}\n")
    node = Node(root / "data", "--flowfuse-config", str(conf)).start()
    try:
        thing = f"Thing {admin(node, 'thing', 'add', 'bench', '--org', 'bench')['key']}"
        ff, files = f"Bearer {token}", "/v1/files/team/proj"
        httpx.get(f"{node.url}/v1/quota/team/proj", headers={"Authorization": ff})  # the platform's answer
        form, octets = f"multipart/form-data; boundary={BOUNDARY}", "application/octet-stream"
        phase(node, ff, 2000, "POST", lambda i: f"{files}/old/f{i}", lambda i: body, octets)
        old = lambda i: multipart(str(i), body)  # noqa: E731
        phase(node, thing, 2000, "POST", lambda i: "/filestore/files", old, form)
        out: dict = {"requests_per_phase": n, "connections": CONNECTIONS, "cores": os.cpu_count()}
        out["flowfuse_write_4KiB"] = phase(node, ff, n, "POST", lambda i: f"{files}/new/f{i}", lambda i: body,
                                           octets)
        out["filestore_upload_4KiB"] = phase(node, thing, n, "POST", lambda i: "/filestore/files",
                                             lambda i: multipart(f"new{i}", body), form)
        out["flowfuse_read_4KiB"] = phase(node, ff, n, "GET", lambda i: f"{files}/new/f{i}")
        out["filestore_download_4KiB"] = phase(node, thing, n, "GET", lambda i: f"/filestore/files/new{i}")
        for kind, base in (("upload", "flowfuse_write_4KiB"), ("download", "flowfuse_read_4KiB")):
            out[f"filestore_{kind}_vs_flowfuse"] = round(
                out[f"filestore_{kind}_4KiB"]["per_s"] / out[base]["per_s"], 2)
        return out
    finally:
        node.stop()
        platform.close()


def propagation(root: Path, rounds: int) -> dict:
    root.mkdir(parents=True)
    with two_members(root) as (a, b):
        wait_until(lambda: b.peer_id in httpx.get(f"{a.url}/api/v2/node/info",
                                                  headers={"Authorization": f"Bearer {a.token()}"}).text)
        times = []
        with httpx.Client(base_url=b.url) as on_b:
            for i in range(rounds):
                made = admin(a, "thing", "add", f"t{i}", "--org", "bench")  # through A's admin socket
                started = time.perf_counter()
                headers = {"Authorization": f"Thing {made['key']}"}
                while on_b.get("/filestore/files", headers=headers).status_code != 200:
                    time.sleep(0.002)
                times.append(time.perf_counter() - started)
        times.sort()
        p50, p99 = statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]
        return {"key_propagation_rounds": rounds, "key_propagation_p50_ms": round(p50 * 1000, 1),
                "key_propagation_p99_ms": round(p99 * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefiles-fs-") as tmp:
        result = facades(Path(tmp) / "facades", args.requests)
        result.update(propagation(Path(tmp) / "swarm", args.rounds))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
