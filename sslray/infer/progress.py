"""A progress line for long embedding jobs: partitions done, tiles/s, ETA.

Printed to stderr (a terminal redraws one line; a log file gets a line every ``every_s``), so
a user watching thousands of slides sees that the job moves and when it will end, and a
resumed job says how much it had already done.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, n_units: int, done_units: int = 0, total_tiles: int | None = None, every_s: float = 5.0,
                 stream: TextIO | None = None, label: str = "embed") -> None:
        self.n_units, self.done_units, self.total_tiles = n_units, done_units, total_tiles
        self.tiles = 0
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self.label = label
        self.started = self._last = time.perf_counter()
        self._resumed_units = done_units
        self._tty = getattr(self.stream, "isatty", lambda: False)()

    def add_tiles(self, n: int) -> None:
        self.tiles += n
        self._maybe_show()

    def unit_done(self) -> None:
        self.done_units += 1
        self._maybe_show()

    def close(self) -> None:
        self.show(end="\n")

    def line(self) -> str:
        seconds = max(time.perf_counter() - self.started, 1e-9)
        rate = self.tiles / seconds
        parts = [f"{self.label}: {self.done_units}/{self.n_units} partitions", f"{self.tiles:,} tiles",
                 f"{rate:,.1f} tiles/s"]
        eta = self._eta(seconds, rate)
        if eta is not None:
            parts.append(f"ETA {_duration(eta)}")
        return ", ".join(parts)

    def show(self, end: str = "") -> None:
        text = self.line()
        self.stream.write(f"\r{text}{end}" if self._tty else f"{text}\n")
        self.stream.flush()
        self._last = time.perf_counter()

    def _maybe_show(self) -> None:
        if time.perf_counter() - self._last >= self.every_s:
            self.show()

    def _eta(self, seconds: float, rate: float) -> float | None:
        """By tiles when the total is known (a store), else by this run's partitions (slides)."""
        if self.total_tiles is not None and rate > 0:
            return max(self.total_tiles - self.tiles, 0) / rate
        finished_here = self.done_units - self._resumed_units
        if finished_here > 0:
            return (self.n_units - self.done_units) * seconds / finished_here
        return None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
