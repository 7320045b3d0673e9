"""The Bitswap planner on its own: which peer is asked for which block, on a simulated
clock and network (tests/bitswap_sim.py), without trio, a store or sockets."""

from __future__ import annotations

from bitswap_sim import ME, ROOT, Sim, SimPeer, leaf
from edgefiles.replication.bitswap import message as bm
from edgefiles.replication.bitswap.planner import PARK_QUIET_MIN, PARK_TIMEOUT, PEER_WINDOW, Planner
from edgefiles.replication.bitswap.server import LOOKUP_BLOCKS, lookup_groups
from hypothesis import given, settings
from hypothesis import strategies as st

KINDS = ["honest", "legacy", "lying", "silent"]


@st.composite
def swarms(draw):
    """Peers of every kind; a keeper (honest or 1.0) holds every wanted block and stays;
    the others hold some, some leave (and maybe come back) midway, some fetch the same DAG."""
    wanted = [leaf(i) for i in range(draw(st.integers(1, 150)))]
    keeper = SimPeer("keeper", holds=set(wanted), kind=draw(st.sampled_from(["honest", "legacy"])))
    others = [SimPeer(f"p{i}", kind=kind, member=draw(st.booleans()))
              for i, kind in enumerate(draw(st.lists(st.sampled_from(KINDS), max_size=4)))]
    for peer in others:
        peer.holds = {c for c in wanted if draw(st.booleans())}
        if peer.kind == "honest" and draw(st.booleans()):  # fetches the same DAG, slowly or never
            missing = [c for c in wanted if c not in peer.holds]
            peer.gets = {c: draw(st.floats(0, 20)) for c in missing if draw(st.booleans())}
    names = [p.name for p in others]
    leaving = draw(st.lists(st.tuples(st.sampled_from(names), st.floats(0, 30), st.booleans()),
                            max_size=3)) if names else []
    return wanted, [keeper, *others], leaving


@settings(max_examples=150, deadline=None)
@given(swarms(), st.sampled_from([0.0005, 0.002, 0.05]), st.integers(0, 2**32))
def test_every_want_is_met_by_a_peer_that_has_it_within_the_window(swarm, delay, seed):
    wanted, peers, leaving = swarm
    sim = Sim(peers, delay=delay, seed=seed)
    for peer in peers:
        if peer.gets:
            sim.planner.peer_asked(peer.name, ROOT)
    for name, when, back in leaving:
        sim.at(when, sim.leave, name)
        if back:
            sim.at(when + 1, sim.join, name)
    sim.want(wanted, root=ROOT)
    sim.run(until=300)
    assert set(sim.received) == set(wanted), f"{len(wanted) - len(sim.received)} wants never met"
    for cid, name in sim.received.items():
        assert cid in sim.peers[name].holds  # from a peer that has it, never made up
    stayed = {p.name for p in peers} - {name for name, _, _ in leaving}
    for peer in peers:
        assert peer.most_want_blocks <= PEER_WINDOW
        assert sim.planner.outstanding(peer.name) == 0  # nothing left asked once all is met
        if peer.name in stayed:  # and nothing left in its ledger either: want-haves included
            assert not peer.ledger, f"{peer.name} ({peer.kind}) still keeps {len(peer.ledger)} of our wants"


@given(st.integers(1, 200), st.integers(1, 4))
@settings(max_examples=50, deadline=None)
def test_want_blocks_outstanding_at_one_peer_never_exceed_the_window(count, holders):
    """Parked wants included: every leaf is the share of a fetcher that does not have it yet."""
    owner = SimPeer("owner", gets={leaf(i): 5.0 for i in range(count)})
    peers = [owner, *(SimPeer(f"h{i}", holds={leaf(i) for i in range(count)}) for i in range(holders))]
    sim = Sim(peers)
    sim.planner.peer_asked("owner", ROOT)
    sim.want([leaf(i) for i in range(count)], root=ROOT)
    sim.run(until=300)
    assert len(sim.received) == count
    assert all(p.most_want_blocks <= PEER_WINDOW for p in peers)
    if count >= PEER_WINDOW * 3:  # the owner's share alone fills its window
        assert owner.most_want_blocks == PEER_WINDOW


def test_a_lying_peers_wants_move_to_honest_peers():
    wanted = [leaf(i) for i in range(20)]
    liar = SimPeer("liar", kind="lying")
    honest = SimPeer("honest", holds=set(wanted))
    sim = Sim([liar, honest], seed=1)
    sim.want(wanted)
    sim.planner.plan(0.0)
    for cid in wanted:  # both say HAVE; the liar is as attractive as anyone at first
        sim.planner.have("liar", cid)
        sim.planner.have("honest", cid)
    sim.planner.take_outgoing()
    sim.planner.plan(0.0)
    asked = sim.planner.take_outgoing()
    at_liar = {w.cid for w in asked.get("liar", []) if w.want_type == bm.WANT_BLOCK}
    assert at_liar, "with equal loads, some blocks go to each holder"
    sim.planner.lying("liar", 0.1)
    assert sim.planner.outstanding("liar") == 0
    sim.planner.plan(0.1)
    moved = sim.planner.take_outgoing()
    assert {w.cid for w in moved["liar"]} == at_liar and all(w.cancel for w in moved["liar"])
    assert at_liar <= {w.cid for w in moved["honest"] if w.want_type == bm.WANT_BLOCK}
    sim.run(until=60)
    assert set(sim.received) == set(wanted) and set(sim.received.values()) == {"honest"}


@given(st.integers(4, 60), st.floats(0.01, PARK_TIMEOUT / 2))
@settings(max_examples=40, deadline=None)
def test_a_share_owner_that_leaves_has_its_leaves_planned_again(count, leaves_at):
    """Leaves parked at another fetcher move on once it leaves, well before PARK_TIMEOUT."""
    wanted = [leaf(i) for i in range(count)]
    owner = SimPeer("owner", gets={c: 1e9 for c in wanted})  # would never get them itself
    source = SimPeer("source", holds=set(wanted))
    sim = Sim([owner, source])
    sim.planner.peer_asked("owner", ROOT)
    sim.want(wanted, root=ROOT)
    sim.planner.plan(0.0)
    parked = {w.cid for w in sim.planner.take_outgoing().get("owner", []) if w.want_type == bm.WANT_BLOCK}
    assert parked == {c for c in wanted if sim.planner.share_owner(c, ROOT, 0.0) == "owner"}
    sim.at(leaves_at, sim.leave, "owner")
    sim.run(until=leaves_at + PARK_TIMEOUT / 2)
    assert set(sim.received) == set(wanted)
    assert {sim.received[c] for c in parked} <= {"source"}


def test_a_bitswap_1_0_peer_is_asked_for_blocks_once_others_had_time_to_say_have():
    wanted = [leaf(i) for i in range(5)]
    sim = Sim([SimPeer("old", holds=set(wanted), kind="legacy"), SimPeer("new")])
    sim.planner.peer_is_legacy("old")
    sim.want(wanted)
    sim.planner.plan(0.0)
    first = sim.planner.take_outgoing()
    assert all(w.want_type == bm.WANT_HAVE for w in first["new"]) and "old" not in {
        p for p, ws in first.items() if any(w.want_type == bm.WANT_BLOCK for w in ws)}
    sim.run(until=30)
    assert set(sim.received.values()) == {"old"} and len(sim.received) == 5


def test_a_share_ring_is_the_same_on_every_fetcher():
    fetchers = ["a", "b", "c"]
    owners = []
    for me in fetchers:
        planner = Planner(me, str.encode)
        for other in fetchers:
            if other != me:
                planner.peer_joined(other)
                planner.peer_asked(other, ROOT)
        owners.append([planner.share_owner(leaf(i), ROOT, 0.0) or me for i in range(100)])
    assert owners[0] == owners[1] == owners[2]
    assert set(owners[0]) == set(fetchers)


def test_ipfs_peers_that_are_not_members_take_no_share():
    planner = Planner("me", str.encode)
    planner.peer_joined("helia", member=False)
    planner.peer_asked("helia", ROOT)
    assert all(planner.share_owner(leaf(i), ROOT, 0.0) is None for i in range(50))


def test_a_parked_want_moves_on_once_its_owner_goes_quiet():
    """An owner that fetches its share but never gets it (stalled) holds our wants only for a
    quiet spell, not for PARK_TIMEOUT."""
    wanted = [leaf(i) for i in range(40)]
    owner = SimPeer("owner", gets={c: 1e9 for c in wanted})
    sim = Sim([owner, SimPeer("source", holds=set(wanted))])
    sim.planner.peer_asked("owner", ROOT)
    sim.want(wanted, root=ROOT)
    sim.run(until=PARK_TIMEOUT)
    assert set(sim.received) == set(wanted)
    assert sim.now < PARK_QUIET_MIN + 0.5, f"parked wants waited {sim.now:.2f} s for a silent owner"


def test_a_parked_want_moves_on_at_once_when_its_owner_does_not_fetch_it():
    """An owner that counts the leaf as another fetcher's share says so (DONT_HAVE to a member's
    parked want): the want goes to a holder within a few round trips."""
    wanted = [leaf(i) for i in range(40)]
    sim = Sim([SimPeer("owner"), SimPeer("source", holds=set(wanted))])
    sim.planner.peer_asked("owner", ROOT)
    sim.want(wanted, root=ROOT)
    sim.run(until=PARK_TIMEOUT)
    assert set(sim.received) == set(wanted) and set(sim.received.values()) == {"source"}
    assert sim.now < 0.05, f"parked wants waited {sim.now:.3f} s for an owner that does not fetch them"


def test_parked_wants_wait_for_an_owner_that_keeps_sending():
    """An owner fetching its share sends us a block every few milliseconds: our wants parked
    there wait for it, so the origin serves each block about once."""
    wanted = [leaf(i) for i in range(120)]
    ring = Planner(ME, str.encode)  # the split every fetcher computes
    ring.peer_joined("owner")
    ring.peer_asked("owner", ROOT)
    owned = [c for c in wanted if ring.share_owner(c, ROOT, 0.0) == "owner"]
    owner = SimPeer("owner", gets={c: 0.01 * i for i, c in enumerate(owned)})
    sim = Sim([owner, SimPeer("source", holds=set(wanted))])
    sim.planner.peer_asked("owner", ROOT)
    sim.want(wanted, root=ROOT)
    sim.run(until=60)
    assert set(sim.received) == set(wanted)
    from_owner = {c for c, peer in sim.received.items() if peer == "owner"}
    assert len(from_owner) >= 0.9 * len(owned), f"{len(from_owner)} of {len(owned)} shares from their owner"


@given(st.lists(st.sampled_from([bm.WANT_BLOCK, bm.WANT_HAVE]), max_size=300))
def test_the_server_reads_a_big_want_list_in_growing_groups(kinds):
    """Blocks leave while the next ones are read: the asks are cut, in order, into groups of
    1, 2, 4, ... and then LOOKUP_BLOCKS want-blocks, want-haves riding along; every group
    but the last is full."""
    asks = [(bytes([i % 256, i // 256]), (b"", bm.Want(b"", want_type=kind))) for i, kind in enumerate(kinds)]
    groups = lookup_groups(asks)
    assert [ask for group in groups for ask in group] == asks
    for i, group in enumerate(groups):
        size = min(2 ** i, LOOKUP_BLOCKS)
        blocks = sum(want.want_type == bm.WANT_BLOCK for _, (_, want) in group)
        assert group and blocks <= size
        assert blocks == size or i == len(groups) - 1
