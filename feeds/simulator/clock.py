"""Simulated time: the mapping to wall-clock time (``speed``) and the timers venues set in simulated time."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable


class SimClock:
    """Simulated microseconds since the epoch; ``speed`` simulated seconds pass per wall second."""

    def __init__(self, start_us: int, speed: float) -> None:
        self.start_us = start_us
        self.speed = speed
        self.wall0 = time.monotonic()
        self.frozen = False
        """Held at ``start_us`` (``--hold``) until the engine releases it."""

    def now_us(self) -> int:
        if self.frozen:
            return self.start_us
        return self.start_us + int((time.monotonic() - self.wall0) * 1e6 * self.speed)

    def now_ms(self) -> int:
        return self.now_us() // 1000

    def wall_at(self, t_us: int) -> float:
        """``time.monotonic()`` value at which simulated time ``t_us`` is due."""
        return self.wall0 + (t_us - self.start_us) / 1e6 / self.speed


class Timers:
    """Callbacks due at simulated times, run by the pacing loop in time order (ties: in the order set)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Callable[[int], None]]] = []
        self._n = itertools.count()

    def at(self, t_us: int, fn: Callable[[int], None]) -> None:
        heapq.heappush(self._heap, (t_us, next(self._n), fn))

    def next_time(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def run_next(self) -> None:
        t, _, fn = heapq.heappop(self._heap)
        fn(t)
