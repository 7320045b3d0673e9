"""A name's target as the read routes get it: on the loop only when it is known to be complete
here; otherwise by `resolve`, which finds out (and serves a target still being fetched)."""

from __future__ import annotations

import asyncio

from conftest import open_names


def test_a_target_is_at_hand_only_once_known_complete_here(tmp_path):
    async def scenario() -> None:
        a, b = await open_names(tmp_path)
        try:
            app = await a.core.import_bytes(b"<h1>app</h1>")
            await a.core.commit(app.batch, [app.root])
            await a.set("app", app.root)
            assert a.resolved_at_hand("unset") is None and await asyncio.to_thread(a.resolve, "unset") is None
            assert await asyncio.to_thread(a.resolve, "app") == app.root  # surveyed: complete
            assert a.resolved_at_hand("app") == app.root

            await b.registry.apply([a.registry.get("app")])  # B knows the name, not the blocks
            assert b.resolved_at_hand("app") is None
            assert await asyncio.to_thread(b.resolve, "app") == app.root  # served while fetched
            assert b.resolved_at_hand("app") is None
            transfer = b.core.store.batch()  # as Bitswap stores a fetched block
            transfer.put_many([(app.root, a.core.store.get(app.root))], bulk=True)
            await asyncio.to_thread(b.core.store.commit, transfer)
            assert await asyncio.to_thread(b.resolve, "app") == app.root
            assert b.resolved_at_hand("app") == app.root

            await a.delete("app")
            assert a.resolved_at_hand("app") is None and await asyncio.to_thread(a.resolve, "app") is None
        finally:
            for names in (a, b):
                await names.core.close()

    asyncio.run(scenario())
