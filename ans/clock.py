"""Hybrid logical clock: wall-clock milliseconds plus a counter; never goes backwards."""

from __future__ import annotations

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
