"""A streamed answer's chunks produced ahead on a thread: all of them, in order; an error
reaches the sender; a client that goes away stops the producer and closes its iterator. Runs
read ahead on a pool: in order, a failed one read again, no more than a window ahead."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from edgefiles.web.ahead import PLANNED_RUNS, RUNS_AHEAD, RunsAhead, in_chunks, produced_ahead
from edgefiles.web.content import _whole_or_cut_short
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=50), st.integers(1, 4))
def test_every_chunk_arrives_in_order(chunks, depth):
    async def consume() -> list[bytes]:
        return [chunk async for chunk in produced_ahead(iter(chunks), depth)]

    assert asyncio.run(consume()) == chunks


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(1, 1000))
def test_pieces_are_joined_whole_into_chunks_of_at_least_the_size(pieces, size):
    chunks = list(in_chunks(iter(pieces), size))
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(chunk) >= size for chunk in chunks[:-1])
    rest = list(pieces)
    for chunk in chunks:  # each chunk is whole pieces, and stops at the first that reaches the size
        held = []
        while len(b"".join(held)) < len(chunk):
            held.append(rest.pop(0))
        assert b"".join(held) == chunk
        assert chunk is chunks[-1] or len(b"".join(held[:-1])) < size
    assert not any(rest)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=40), st.integers(1, 1000))
def test_pieces_given_before_a_failure_are_all_sent_before_it(pieces, size):
    def failing():
        yield from pieces
        raise OSError("block gone")

    chunks = []
    with pytest.raises(OSError, match="block gone"):
        for chunk in in_chunks(failing(), size):
            chunks.append(chunk)
    assert b"".join(chunks) == b"".join(pieces)


def test_an_error_while_producing_reaches_the_consumer_after_what_came_before():
    def failing():
        yield b"first"
        raise ValueError("disk gone")

    async def consume() -> list[bytes]:
        got = []
        with pytest.raises(ValueError, match="disk gone"):
            async for chunk in produced_ahead(failing()):
                got.append(chunk)
        return got

    assert asyncio.run(consume()) == [b"first"]


def test_a_consumer_that_stops_early_stops_the_producer_and_closes_the_iterator():
    closed = threading.Event()
    produced = []

    def endless():
        try:
            n = 0
            while True:
                produced.append(n)
                yield b"x"
                n += 1
        finally:
            closed.set()

    async def consume_two() -> None:
        stream = produced_ahead(endless(), depth=2)
        async for _ in stream:
            if len(produced) >= 2:
                break
        await stream.aclose()
        await asyncio.get_running_loop().run_in_executor(None, closed.wait, 5)

    asyncio.run(consume_two())
    assert closed.is_set() and len(produced) <= 6


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 60), st.sets(st.integers(0, 59)))
def test_runs_read_ahead_arrive_in_order_and_a_run_failed_on_the_pool_is_read_with_fetch(count, failing):
    """Runs come whole and in order; one whose read fails on the pool is read again with
    `fetch` (off the pool), the others never are."""
    fetched: list[int] = []

    def read(run: int, fetch: bool, places: dict) -> bytes:
        if fetch:
            fetched.append(run)
        elif run in failing:
            raise LookupError(run)
        return run.to_bytes(2, "big")

    async def consume() -> list[bytes]:
        with ThreadPoolExecutor(2) as pool:
            runs = RunsAhead(iter(range(count)), read, pool, LookupError, _nowhere)
            return [chunk async for chunk in runs.chunks()]

    assert asyncio.run(consume()) == [run.to_bytes(2, "big") for run in range(count)]
    assert fetched == sorted(failing & set(range(count)))


def test_runs_are_read_no_further_ahead_than_the_window_of_a_consumer_that_stops():
    started: list[int] = []

    def read(run: int, fetch: bool, places: dict) -> bytes:
        started.append(run)
        return b"x"

    async def take_three() -> None:
        with ThreadPoolExecutor(2) as pool:
            chunks = RunsAhead(iter(range(1000)), read, pool, LookupError, _nowhere).chunks()
            for _ in range(3):
                await anext(chunks)
            await chunks.aclose()

    asyncio.run(take_three())
    assert max(started) < 3 + RUNS_AHEAD


def test_a_file_answer_left_after_its_first_run_reads_no_further():
    """The runs set under way before a file's answer starts are dropped when the client goes
    away after the first: only those already being read finish."""
    started: list[int] = []
    gate = threading.Event()

    def read(run: int, fetch: bool, places: dict) -> bytes:
        started.append(run)
        gate.wait(5)
        return b"x"

    async def leave_after_the_first_run() -> None:
        with ThreadPoolExecutor(2) as pool:
            rest = RunsAhead(iter(range(100)), read, pool, LookupError, _nowhere)
            rest.plan()  # runs 0-7 under way: two being read, six waiting for a thread
            body = _whole_or_cut_short(b"", 101, b"first", rest)
            assert await anext(body) == b"first"
            await body.aclose()
            gate.set()

    asyncio.run(leave_after_the_first_run())
    assert sorted(started) == [0, 1]


def _nowhere(runs: list) -> dict:
    """`locate` for runs that are no blocks of a store."""
    return {}


def test_where_runs_lie_is_looked_up_once_per_plan_and_reaches_every_read_and_retry():
    """One lookup for each PLANNED_RUNS runs planned, and a run's read (and its read again with
    `fetch`) is given that lookup's answer."""
    looked_up: list[list[int]] = []
    given: dict[tuple[int, bool], dict] = {}

    def locate(runs: list[int]) -> dict:
        looked_up.append(runs)
        return {run: len(looked_up) for run in runs}

    def read(run: int, fetch: bool, places: dict) -> bytes:
        given[run, fetch] = places
        if run == 20 and not fetch:
            raise LookupError(run)
        return b"x"

    async def consume() -> int:
        with ThreadPoolExecutor(2) as pool:
            runs = RunsAhead(iter(range(40)), read, pool, LookupError, locate)
            return len([chunk async for chunk in runs.chunks()])

    assert asyncio.run(consume()) == 40
    assert looked_up == [list(range(i, min(i + PLANNED_RUNS, 40))) for i in range(0, 40, PLANNED_RUNS)]
    assert all(places[run] == run // PLANNED_RUNS + 1 for (run, _), places in given.items())
    assert (20, True) in given
