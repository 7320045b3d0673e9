"""Write transactions of tasks cancelled at any moment leave the database usable and the
in-memory mirrors (after-commit callbacks) in step with what was committed."""

from __future__ import annotations

import asyncio
import random

from edgefiles.node.db import open_db


def test_cancelled_writers_never_leave_a_transaction_open(tmp_path):
    async def main() -> None:
        db = await open_db(tmp_path / "state.sqlite")
        mirrored: set[str] = set()

        async def write(key: str) -> None:
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO state VALUES (?, ?)", (key, b"x"))
                db.after_commit.append(lambda: mirrored.add(key))

        rng = random.Random(7)
        cancelled = 0
        for i in range(300):
            task = asyncio.create_task(write(f"k{i}"))
            for _ in range(rng.randrange(12)):  # cancel at a different step each time
                await asyncio.sleep(0)
            cancelled += task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await write("after")  # would fail with "cannot start a transaction within a transaction"
        stored = {key for (key,) in await db.fetchall("SELECT key FROM state")}
        await db.close()
        assert cancelled > 100
        assert stored == mirrored and "after" in stored
        assert 0 < len(stored) < 301  # some were cancelled before they wrote, some after

    asyncio.run(main())
