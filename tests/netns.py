"""Network namespaces for tests: nodes in namespaces of their own, joined by veth pairs or
one bridge, their APIs on links to the root namespace; nftables rules in a node's namespace
drop its swarm packets (all of them: a partition; some at random: a lossy link). Needs root
(CI runs as root); everything is removed by `Network.close`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from nodeproc import Node, wait_until


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class NsNode(Node):
    """A node inside a network namespace, its API on the link to the root namespace."""

    def __init__(self, data, ns: str, api_ip: str, swarm_ip: str, *extra: str):
        super().__init__(data, *extra, api_port=4454, swarm_port=4001)
        self.ns, self.api_ip, self.swarm_ip = ns, api_ip, swarm_ip
        self.url = f"http://{api_ip}:4454"

    def command(self) -> list[str]:
        return [
            "ip", "netns", "exec", self.ns,
            sys.executable, "-m", "edgefiles", "serve", "--data", str(self.data),
            "--api", f"{self.api_ip}:4454", "--swarm", f"/ip4/{self.swarm_ip}/tcp/4001", *self.extra,
        ]


class Network:
    """Namespaces and the veth pairs between them, all removed by `close`."""

    def __init__(self, subnet: int):
        if os.geteuid() != 0:
            pytest.fail("this test needs root to create network namespaces (CI runs as root)")
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"10.{subnet}"
        self.namespaces: list[str] = []
        self.links = 0

    def namespace(self) -> str:
        ns = f"ef{len(self.namespaces)}{self.tag}"
        ip("netns", "add", ns)
        self.namespaces.append(ns)
        ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def link(self, a: str | None, b: str) -> tuple[str, str]:
        """A /30 between two namespaces (a None: the root namespace); their addresses."""
        n = self.links
        self.links += 1
        end_a, end_b = f"e{self.tag}{n}a", f"e{self.tag}{n}b"
        addr_a, addr_b = f"{self.prefix}.{n}.1", f"{self.prefix}.{n}.2"
        on_a = [] if a is None else ["-n", a]
        ip("link", "add", end_a, *([] if a is None else ["netns", a]), "type", "veth",
           "peer", "name", end_b, "netns", b)
        ip(*on_a, "addr", "add", f"{addr_a}/30", "dev", end_a)
        ip("-n", b, "addr", "add", f"{addr_b}/30", "dev", end_b)
        ip(*on_a, "link", "set", end_a, "up")
        ip("-n", b, "link", "set", end_b, "up")
        return addr_a, addr_b

    def set_link(self, ns: str, addr: str, up: bool) -> None:
        """Bring the link end holding `addr` in `ns` up or down."""
        n = int(addr.split(".")[2])
        end = f"e{self.tag}{n}{'a' if addr.endswith('.1') else 'b'}"
        ip("-n", ns, "link", "set", end, "up" if up else "down")

    def switch(self) -> None:
        """A bridge in a namespace of its own, for `attach`."""
        self.switch_ns = self.namespace()
        ip("-n", self.switch_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch_ns, "link", "set", "br0", "up")
        self.ports = 0
        self.port_of: dict[str, tuple[str, str, str]] = {}  # address -> (namespace, its end, the bridge's)

    def attach(self, ns: str) -> str:
        """A port of the bridge into `ns`; the address it got there (one /24 for all ports)."""
        self.ports += 1
        here, there = f"p{self.tag}{self.ports}s", f"p{self.tag}{self.ports}n"
        ip("link", "add", here, "netns", self.switch_ns, "type", "veth", "peer", "name", there, "netns", ns)
        ip("-n", self.switch_ns, "link", "set", here, "master", "br0")
        ip("-n", self.switch_ns, "link", "set", here, "up")
        addr = f"{self.prefix}.200.{self.ports}"
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", there)
        ip("-n", ns, "link", "set", there, "up")
        self.port_of[addr] = (ns, there, here)
        return addr

    def throttle(self, addr: str, rate: str) -> None:
        """The bridge port of `addr` carries at most `rate` (e.g. "2mbit") each way (tc's token
        bucket: this kernel has no netem to delay with)."""
        ns, there, here = self.port_of[addr]
        for where, dev in ((ns, there), (self.switch_ns, here)):
            tbf = ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "32kbit",
                   "latency", "400ms"]
            subprocess.run(["ip", "netns", "exec", where, *tbf], check=True, capture_output=True)

    def drop(self, ns: str, peers: list[str], every: int = 1) -> None:
        """Drop swarm packets between `ns` and these addresses, both ways: all of them (every
        1), or one in `every` at random (a lossy link). `heal` takes the rules away."""
        rule = "drop" if every == 1 else f"numgen random mod {every} 0 drop"
        addrs = ", ".join(peers)
        script = (f"table inet faults {{\n chain in {{ type filter hook input priority 0; "
                  f"ip saddr {{ {addrs} }} {rule}; }}\n chain out {{ type filter hook output priority 0; "
                  f"ip daddr {{ {addrs} }} {rule}; }}\n}}\n")
        self.heal(ns)
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script.encode(), check=True,
                       capture_output=True)

    def heal(self, ns: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "faults"],
                       capture_output=True)

    def close(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for n in range(self.links):  # ends in the root namespace
            subprocess.run(["ip", "link", "del", f"e{self.tag}{n}a"], capture_output=True)


def ns_node(net: Network, data, swarm_ip: str, ns: str, *extra: str) -> NsNode:
    _, api_ip = net.link(None, ns)
    return NsNode(data, ns, api_ip, swarm_ip, *extra)


def names(node: Node) -> dict[str, str]:
    with node.client() as c:
        return {n["name"]: n["cid"] for n in c.get("/api/v2/names").json()}




def swarm_of_four(network: Network, tmp_path, *extra: str) -> tuple[list[NsNode], list[str], list[str]]:
    """Four nodes, all dialling the first; (nodes, their namespaces, their swarm addresses)."""
    network.switch()
    key = tmp_path / "swarm.key"
    key.write_text("d3" * 32)
    spaces = [network.namespace() for _ in range(4)]
    addrs = [network.attach(ns) for ns in spaces]
    nodes: list[NsNode] = []
    for i, (ns, addr) in enumerate(zip(spaces, addrs, strict=True)):
        peers = ["--peer", nodes[0].swarm_addr] if nodes else []
        nodes.append(ns_node(network, tmp_path / f"n{i}", addr, ns, "--swarm-key", str(key), *peers, *extra))
        nodes[-1].start()
    wait_until(lambda: all(len(peers_of(n)) == 3 for n in nodes), timeout=60, what="a full mesh")
    return nodes, spaces, addrs


def peers_of(node: NsNode) -> list[str]:
    with node.client() as c:
        return c.get("/api/v2/node/info").json()["peers"]


def named(node: NsNode, name: str, files: list[tuple[str, bytes]]) -> str:
    cid = node.upload(files).text
    with node.client() as c:
        assert c.put(f"/api/v2/files/{name}", content=cid).status_code == 200
    return cid


def serves(node: NsNode, path: str, data: bytes) -> bool:
    with node.client() as c:
        r = c.get(f"/api/v2/files/{path}")
        return r.status_code == 200 and r.content == data


def complete(node: NsNode, name: str) -> bool:
    with node.client() as c:
        return any(e["name"] == name and e["complete"] for e in c.get("/api/v2/names").json())
