"""Network faults on real links: four nodes on one bridge, each in a network namespace of its
own, and nftables rules in their namespaces that drop swarm packets (all of them: a partition
or a peer gone silent; one in three at random: a lossy link). Timings are the benchmark's
business; these tests ask only that the swarm ends where it must."""

from __future__ import annotations

import os
import time

import pytest
from netns import Network, complete, named, names, serves, swarm_of_four
from nodeproc import wait_until

pytestmark = pytest.mark.timeout(300)


def split(network: Network, spaces: list[str], addrs: list[str], left: list[int]) -> None:
    for i, ns in enumerate(spaces):
        other = [addrs[j] for j in range(4) if (j in left) != (i in left)]
        network.drop(ns, other)


def heal_all(network: Network, spaces: list[str]) -> None:
    for ns in spaces:
        network.heal(ns)


def test_a_partitioned_swarm_of_four_heals_and_converges_on_every_name(network, tmp_path):
    nodes, spaces, addrs = swarm_of_four(network, tmp_path)
    a, b, c, d = nodes
    try:
        named(a, "shared", [("v.txt", b"before")])
        wait_until(lambda: all("shared" in names(n) for n in nodes), what="the name everywhere")
        split(network, spaces, addrs, left=[0, 1])
        named(a, "left", [("l.txt", b"written on the left")])
        named(c, "right", [("r.txt", b"written on the right")])
        named(a, "shared", [("v.txt", b"left's version")])
        time.sleep(0.05)
        later = named(d, "shared", [("v.txt", b"right's version, written later")])
        wait_until(lambda: "left" in names(b) and "right" in names(d), what="each side to agree within")
        assert "right" not in names(a) and "left" not in names(c)
        heal_all(network, spaces)
        wait_until(lambda: all(names(n) == names(a) and len(names(n)) == 3 for n in nodes), timeout=120,
                   what="every node to hold every name after the heal")
        assert names(b)["shared"] == later  # the last writer wins on both sides
        for n in nodes:
            wait_until(lambda n=n: serves(n, "left", b"written on the left")
                       and serves(n, "right", b"written on the right"), timeout=60,
                       what="content from the other side")
    finally:
        for n in nodes:
            n.stop()


def test_a_rollout_cut_by_a_partition_completes_once_it_heals(network, tmp_path):
    nodes, spaces, addrs = swarm_of_four(network, tmp_path)
    a = nodes[0]
    app = os.urandom(48 << 20)
    try:
        named(a, "big", [("app.bin", app)])
        wait_until(lambda: "big" in names(nodes[3]), what="the name to reach the others")
        split(network, spaces, addrs, left=[0])  # the origin alone, the others mid-transfer
        time.sleep(3)
        assert not all(complete(n, "big") for n in nodes[1:]), "the transfer was over before the cut"
        heal_all(network, spaces)
        for n in nodes[1:]:
            wait_until(lambda n=n: complete(n, "big"), timeout=120, what=f"{n.swarm_ip} to complete")
            assert serves(n, "big", app)
    finally:
        for n in nodes:
            n.stop()


@pytest.mark.parametrize("fault", ["lossy", "slow", "silent"])
def test_a_bad_link_to_one_peer_does_not_hold_back_a_fetch_others_can_serve(network, tmp_path, fault):
    """An app named on A is fetched by B, C and D at once, each asking the others for their
    shares, while D's link to B loses one packet in three, or B's link carries 2 Mbit/s, or
    D's link to B goes silent (no reset, nothing: a peer that stopped answering) in the middle
    of the transfer. D completes all the same."""
    nodes, spaces, addrs = swarm_of_four(network, tmp_path, "--fetch-timeout", "5")
    a, b, c, d = nodes
    app = os.urandom(48 << 20)
    try:
        if fault == "lossy":
            network.drop(spaces[3], [addrs[1]], every=3)
        if fault == "slow":
            network.throttle(addrs[1], "2mbit")
        named(a, "app", [("app.bin", app)])
        if fault == "silent":
            wait_until(lambda: "app" in names(d), what="D to start fetching")
            network.drop(spaces[3], [addrs[1]])
            assert not complete(d, "app"), "the transfer was over before B went silent"
        for n in (c, d) if fault == "slow" else (b, c, d):  # a slow B takes its time itself
            wait_until(lambda n=n: complete(n, "app"), timeout=180, what=f"{n.swarm_ip} to complete")
        assert serves(d, "app", app)
    finally:
        for n in nodes:
            n.stop()
