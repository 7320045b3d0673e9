"""Prompt locks and semaphores: taken with no checkpoint when free, exclusive when not,
handed on in the order asked, and a waiter cancelled in line costs the others nothing."""

from __future__ import annotations

import pytest
import trio
from edgefiles.replication.prompt_sync import PromptLock, PromptSemaphore
from trio.testing import MockClock, assert_no_checkpoints, wait_all_tasks_blocked


def test_a_free_prompt_lock_is_taken_without_a_checkpoint_and_still_excludes():
    async def run() -> None:
        lock = PromptLock()
        with assert_no_checkpoints():  # trio.Lock lets every runnable task go first
            async with lock:
                pass
        inside = most_inside = 0

        async def contender() -> None:
            nonlocal inside, most_inside
            async with lock:
                inside += 1
                most_inside = max(most_inside, inside)
                await trio.sleep(0.01)
                inside -= 1

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(contender)
        assert most_inside == 1 and not lock.locked() and trio.current_time() >= 0.2

    trio.run(run, clock=MockClock(autojump_threshold=0))


def test_a_held_lock_goes_to_waiters_in_order_past_one_cancelled_in_line():
    order: list[str] = []

    async def run() -> None:
        lock = PromptLock()
        await lock.acquire()

        async def waiter(name: str) -> None:
            async with lock:
                order.append(name)

        with trio.fail_after(10):  # a lock handed to nobody would hang here
            await _in_line(lock, waiter)
        assert not lock.locked()

    trio.run(run)
    assert order == ["first", "third"]


async def _in_line(lock: PromptLock, waiter) -> None:
    """"first" and "third" wait for `lock` (held by the caller), a second waiter between them
    is cancelled in line, then the caller lets go."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, "first")
        await wait_all_tasks_blocked()
        gone = trio.CancelScope()
        nursery.start_soon(_waiting_in, gone, lock)
        await wait_all_tasks_blocked()
        nursery.start_soon(waiter, "third")
        await wait_all_tasks_blocked()
        gone.cancel()
        await wait_all_tasks_blocked()
        lock.release()


async def _waiting_in(scope: trio.CancelScope, lock: PromptLock) -> None:
    with scope:
        await lock.acquire()
        lock.release()  # never reached: cancelled while in line


def test_only_the_owner_releases_and_nobody_takes_it_twice():
    async def run() -> None:
        lock = PromptLock()
        with pytest.raises(RuntimeError):
            lock.release()
        await lock.acquire()
        with pytest.raises(RuntimeError):
            await lock.acquire()
        lock.release()

    trio.run(run)


def test_a_semaphore_with_tokens_gives_them_without_a_checkpoint_then_makes_callers_wait():
    async def run() -> None:
        tokens = PromptSemaphore(2)
        with assert_no_checkpoints():
            await tokens.acquire()
            await tokens.acquire()
        assert tokens.value == 0
        got = trio.Event()

        async def third() -> None:
            async with tokens:
                got.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(third)
            await wait_all_tasks_blocked()
            assert not got.is_set()
            tokens.release()
        assert got.is_set() and tokens.value == 1

    trio.run(run)
