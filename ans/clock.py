"""Hybrid logical clock: wall-clock milliseconds plus a counter; never goes backwards. And
the durations people write (`24h`)."""

from __future__ import annotations

import re
import time


class HybridClock:
    def __init__(self, last: tuple[int, int] = (0, 0)):
        self.last = last

    def tick(self, wall_ms: int | None = None) -> tuple[int, int]:
        wall = wall_ms if wall_ms is not None else now_ms()
        ms, counter = self.last
        self.last = (wall, 0) if wall > ms else (ms, counter + 1)
        return self.last

    def observe(self, remote: tuple[int, int], wall_ms: int | None = None) -> None:
        """Move past a clock seen on another node's record."""
        wall = wall_ms if wall_ms is not None else now_ms()
        top = max(wall, self.last[0], remote[0])
        if top == self.last[0] == remote[0]:
            counter = max(self.last[1], remote[1]) + 1
        elif top == self.last[0]:
            counter = self.last[1] + 1
        elif top == remote[0]:
            counter = remote[1] + 1
        else:
            counter = 0
        self.last = (top, counter)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.ASCII)  # digits 0-9 only
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(text: str) -> float:
    """Seconds of `24h`, `30m`, `15s`, `500ms`, `2d` or plain seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 24h, 30m, 15s)")
    return float(match.group(1)) * _UNITS[match.group(2)]
