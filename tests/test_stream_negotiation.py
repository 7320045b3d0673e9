"""Choosing an inbound stream's protocol in one read and one write: the listener's answers
whatever way the dialer's bytes are cut, the bytes after the choice left to the protocol, and
real py-libp2p hosts on loopback — a dialer that sends everything at once as Kubo and Helia
do, one that waits for each answer as py-libp2p does, and dialers that break the rules."""

from __future__ import annotations

import pytest
import trio
from edgefiles.replication import noise_io, yamux_tuning
from edgefiles.replication.stream_negotiation import (
    HEADER,
    ListenerNegotiation,
    NegotiationError,
    encode_line,
    next_line,
)
from hostpair import ECHO, connected, echo, read_all
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.custom_types import TProtocol

PROTOCOLS = (ECHO, "/test/other/2.0.0")


def answers_for(dialer_bytes: bytes, cuts: list[int]) -> tuple[bytes, int, str | None]:
    """Feed the listener the dialer's bytes as they would arrive in pieces cut at `cuts`."""
    negotiation = ListenerNegotiation(PROTOCOLS)
    received, taken_total, answers = bytearray(), 0, bytearray()
    for end in [*sorted(cuts), len(dialer_bytes)]:
        received += dialer_bytes[len(received) + taken_total:end]
        taken, answer = negotiation.feed(received)
        del received[:taken]
        taken_total += taken
        answers += answer
    return bytes(answers), taken_total, negotiation.chosen


TRIED = st.text(min_size=1, max_size=40).filter(lambda t: "\n" not in t and t != "ls")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.lists(TRIED, max_size=3), st.data())
def test_the_answer_and_the_choice_do_not_depend_on_how_the_bytes_are_cut(payload, tried, data):
    lines = [HEADER, *tried, ECHO]
    dialer = b"".join(encode_line(line) for line in lines)
    cuts = data.draw(st.lists(st.integers(0, len(dialer) + len(payload)), max_size=6))
    answers, taken, chosen = answers_for(dialer + payload, cuts)
    first = next((i for i, line in enumerate(lines) if i and line in PROTOCOLS), None)
    assert chosen == lines[first]
    assert taken == sum(len(encode_line(line)) for line in lines[: first + 1])  # the payload stays
    expected = [HEADER] + [line if line in PROTOCOLS else "na" for line in lines[1 : first + 1]]
    assert answers == b"".join(encode_line(line) for line in expected)


def test_a_line_is_not_taken_before_it_is_whole():
    line = encode_line(ECHO)
    for end in range(len(line)):
        assert next_line(line[:end]) is None
    assert next_line(line + b"rest") == (ECHO, len(line))


@pytest.mark.parametrize("dialer", [
    encode_line("/multistream/2.0.0"),  # another header
    b"\x05hello",  # no newline
    b"\x80\x80\x01",  # a length no negotiation message has
    b"\x00",  # an empty message
    bytes([3]) + b"\xff\xfe\n",  # not UTF-8
])
def test_a_dialer_that_breaks_the_protocol_gets_an_error(dialer):
    with pytest.raises(NegotiationError):
        ListenerNegotiation(PROTOCOLS).feed(dialer)


def test_ls_lists_the_protocols_and_negotiation_goes_on():
    answer = ListenerNegotiation(PROTOCOLS).feed(encode_line(HEADER) + encode_line("ls"))[1]
    assert answer == encode_line(HEADER) + encode_line("\n".join(sorted(PROTOCOLS)) + "\n")


# real hosts ------------------------------------------------------------------------------

async def with_listener(dialing) -> None:
    """Run `dialing(dialer, listener_id)` against a host that answers ECHO by echoing one
    read back and closing."""
    async with connected({ECHO: echo}) as (listener, dialer):
        with trio.fail_after(10):
            await dialing(dialer, listener.get_id())


def test_a_dialer_that_waits_for_each_answer_gets_its_protocol():
    async def dialing(dialer, listener_id) -> None:
        stream = await dialer.new_stream(listener_id, [TProtocol("/test/absent/1.0.0"), TProtocol(ECHO)])
        assert stream.get_protocol() == ECHO
        await stream.write(b"ping")
        assert await read_all(stream) == b"ping"

    trio.run(with_listener, dialing)


def test_a_dialer_that_sends_everything_at_once_gets_its_answers_with_the_reply(monkeypatch):
    """It did not wait for them: they leave with the next frame written on the connection
    (the echo, or whatever else the hosts say meanwhile), not in a write of their own."""
    writes: list[bytes] = []
    write_sealed = noise_io.write_sealed

    async def recorded(session, pieces) -> None:
        writes.append(b"".join(pieces))
        await write_sealed(session, pieces)

    monkeypatch.setattr(noise_io, "write_sealed", recorded)
    monkeypatch.setattr(yamux_tuning, "ACK_DELAY", 5.0)  # nothing leaves on a timer meanwhile

    async def dialing(dialer, listener_id) -> None:
        # identify is over: a read of its streams that would wait sends what is held back too,
        # and could take the answers out alone before the echo is written
        await trio.sleep(1)
        stream = await dialer.get_network().new_stream(listener_id)  # no negotiation of its own
        await stream.write(encode_line(HEADER) + encode_line("/test/absent/1.0.0") + encode_line(ECHO)
                           + b"payload right behind the choice")
        answers = encode_line(HEADER) + encode_line("na") + encode_line(ECHO)
        assert await read_all(stream) == answers + b"payload right behind the choice"
        (carried,) = [w for w in writes if answers in w]
        assert len(carried) > len(answers) + 2 * 12  # not alone, nor with only the stream's ACK

    trio.run(with_listener, dialing)


def test_a_dialer_that_sends_its_message_with_its_choice_then_waits_gets_the_answer_at_once(monkeypatch):
    """js-libp2p's optimistic dialer waits for our answer before it closes its side; the
    handler reads until it does: the held-back answer leaves before that read waits."""
    monkeypatch.setattr(yamux_tuning, "ACK_DELAY", 5.0)  # nothing leaves on a timer meanwhile
    got: list[bytes] = []

    async def read_to_end(stream) -> None:
        got.append(await read_all(stream))
        await stream.close()

    async def run() -> None:
        async with connected({"/test/drain/1": read_to_end}) as (listener, dialer):
            await trio.sleep(1)  # identify and the first RTT ping are over: nothing else to ride with
            stream = await dialer.get_network().new_stream(listener.get_id())
            with trio.fail_after(2):
                await stream.write(encode_line(HEADER) + encode_line("/test/drain/1") + b"message")
                answers = encode_line(HEADER) + encode_line("/test/drain/1")
                received = b""
                while len(received) < len(answers):
                    received += await stream.read(1 << 16)
                assert received == answers
                await stream.close()
                while not got:
                    await trio.sleep(0.01)

    trio.run(run)
    assert got == [b"message"]


def test_a_dialer_with_a_wrong_header_has_its_stream_reset_and_the_connection_lives_on():
    async def dialing(dialer, listener_id) -> None:
        stream = await dialer.get_network().new_stream(listener_id)
        await stream.write(encode_line("/multistream/0.9.0") + encode_line(ECHO))
        assert await read_all(stream) == b""
        again = await dialer.new_stream(listener_id, [TProtocol(ECHO)])
        await again.write(b"still here")
        assert await read_all(again) == b"still here"

    trio.run(with_listener, dialing)
