"""The name registry on a real SQLite file: persistence, clock, rejected records."""

import asyncio
import logging

from edgefiles.ans import record
from edgefiles.ans.clock import now_ms
from edgefiles.ans.registry import Registry
from edgefiles.node.db import open_db
from edgefiles.node.identity import NodeKey

ME = NodeKey(b"\x07" * 32)
PEER = NodeKey(b"\x08" * 32)
CID = b"\x01\x55\x12\x20" + b"\x11" * 32


def run(coro):
    return asyncio.run(coro)


async def _open(path):
    db = await open_db(path)
    reg = Registry(db, ME)
    await reg.load()
    return db, reg


def test_names_and_clock_survive_reopen(tmp_path):
    async def scenario():
        db, reg = await _open(tmp_path / "s.sqlite")
        first = await reg.write("app", CID)
        await reg.write("gone", CID)
        await reg.write("gone", None)
        last = reg.clock.last
        await db.close()
        db, reg = await _open(tmp_path / "s.sqlite")
        assert reg.get("app").cid == CID
        assert reg.get("gone") is None
        assert reg.clock.last >= last
        again = await reg.write("app", CID)
        assert again.clock > first.clock
        await db.close()

    run(scenario())


def test_remote_records_merge_and_bad_ones_are_dropped(tmp_path, caplog):
    async def scenario():
        db, reg = await _open(tmp_path / "s.sqlite")
        mine = await reg.write("shared", CID)
        newer = record.sign(PEER, "", "shared", None, (mine.clock[0] + 1, 0))
        assert await reg.apply([newer]) == [newer]
        assert reg.get("shared") is None  # a newer remote tombstone wins
        older = record.sign(PEER, "", "shared", CID, (mine.clock[0] - 1, 0))
        assert await reg.apply([older]) == []
        future = record.sign(PEER, "", "future", CID, (now_ms() + 10 * 60 * 1000, 0))
        forged = record.NameRecord("", "forged", CID, (1, 0), PEER.peer_id_bytes, b"\x00" * 64)
        with caplog.at_level(logging.WARNING):
            for _ in range(50):  # a skewed or hostile peer resending: counted, logged once each
                assert await reg.apply([future, forged]) == []
        assert caplog.text.count("ahead of ours") == 1 and caplog.text.count("bad signatures") == 1
        assert (reg.future_records, reg.bad_records) == (50, 50)
        assert reg.get("future") is None and reg.get("forged") is None
        await db.close()

    run(scenario())


def test_writes_hold_after_the_wall_clock_steps_back(tmp_path):
    """An NTP step back leaves the node's clock (which never goes back) ahead of its wall clock:
    its own writes carry that clock and must still land, before and after a restart. They were
    acknowledged and then dropped as "a record from a clock >5 min ahead"."""
    async def scenario():
        db, reg = await _open(tmp_path / "s.sqlite")
        try:
            await reg.write("app", CID)
            reg.clock.last = (now_ms() + 10 * 60_000, 0)  # as if the wall clock had just stepped back
            await reg.write("new", CID)
            await reg.write("app", None)
            assert reg.get("new") is not None and reg.get("app") is None
        finally:
            await db.close()
        db, reg = await _open(tmp_path / "s.sqlite")
        try:
            await reg.write("later", CID)
            assert [reg.get(n) is not None for n in ("later", "new", "app")] == [True, True, False]
        finally:
            await db.close()

    run(scenario())
