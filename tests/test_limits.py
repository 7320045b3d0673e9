"""The per-peer limiter, pure: rates hold over any schedule, limits count hits and log once
a minute per peer and limit."""

from __future__ import annotations

import logging

from edgefiles.replication.limits import BURST_SECONDS, PeerLimiter, PeerLimits
from hypothesis import given
from hypothesis import strategies as st


@given(st.lists(st.tuples(st.floats(0, 0.5), st.integers(1, 40)), max_size=200), st.floats(1, 500))
def test_a_peer_never_gets_more_than_its_rate_and_one_burst(schedule, rate):
    limiter = PeerLimiter(PeerLimits(messages=rate))
    now = taken = 0.0
    for wait, count in schedule:
        now += wait
        if limiter.take("messages", "peer", count, now):
            taken += count
    assert taken <= rate * (now + BURST_SECONDS) + 1e-6


def test_an_idle_peer_gets_its_burst_back_and_others_are_not_charged():
    limiter = PeerLimiter(PeerLimits(records=10))
    assert limiter.take("records", "a", 20, 0.0) and not limiter.take("records", "a", 1, 0.0)
    assert limiter.take("records", "b", 20, 0.0)  # a's flood costs b nothing
    assert limiter.take("records", "a", 20, 2.0) and limiter.hits["records"] == 1


def test_hits_are_counted_each_time_and_logged_once_a_minute_per_peer(caplog):
    limiter = PeerLimiter(PeerLimits(wants=100))
    with caplog.at_level(logging.WARNING, logger="edgefiles.limits"):
        assert not limiter.over("wants", "a", 100, 0.0)
        for t in range(50):
            assert limiter.over("wants", "a", 101, float(t))
        limiter.over("wants", "b", 500, 1.0)
        limiter.over("wants", "a", 101, 61.0)
    assert limiter.hits["wants"] == 52
    assert [r.getMessage().split()[1] for r in caplog.records] == ["a", "b", "a"]


def test_a_gossip_origin_is_logged_as_the_peer_id_every_other_line_shows(caplog):
    """Gossip names a message's origin by the raw bytes of its id: the warning showed them as
    b'\\x00$\\x08...', where every other line shows 12D3KooW..."""
    from libp2p.peer.id import ID

    peer = ID.from_base58("12D3KooWBWB59PG57qS5GQ3qnBf8pGf9WKqgpFjZmqc9KaeKSQ68")
    limiter = PeerLimiter(PeerLimits(records=1))
    with caplog.at_level(logging.WARNING, logger="edgefiles.limits"):
        limiter.take("records", peer.to_bytes(), 1000, 0.0)
    assert f"peer {peer.to_base58()} is over its records limit" in caplog.text
