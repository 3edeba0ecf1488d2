"""A dependency-free progress bar for the long steps of ``churnwatch train`` (on stderr).

On a terminal it redraws one line (``\\r``); otherwise (logs, CI) it writes a line at most every
10% so files stay readable. ``Progress(..., stream=None)`` is silent.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 28


class Progress:
    def __init__(self, label: str, total: int, *, stream: TextIO | None = sys.stderr):
        self.label, self.total, self.stream = label, max(total, 1), stream
        self.done = 0
        self.started = time.monotonic()
        self._tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self._last_decile = -1
        self._last_draw = 0.0

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        self._draw()

    def _draw(self, final: bool = False) -> None:
        if self.stream is None:
            return
        frac = self.done / self.total
        now = time.monotonic()
        if self._tty:
            if not final and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            filled = int(frac * WIDTH)
            bar = "#" * filled + "-" * (WIDTH - filled)
            self.stream.write(f"\r{self.label:<22} [{bar}] {frac:6.1%} {now - self.started:6.1f} s")
            if final:
                self.stream.write("\n")
        else:
            decile = int(frac * 10)
            if decile == self._last_decile and not final:
                return
            if final and decile == self._last_decile == 10:
                return
            self._last_decile = decile
            self.stream.write(f"{self.label}: {frac:.0%} ({self.done:,}/{self.total:,}, "
                              f"{now - self.started:.1f} s)\n")
        self.stream.flush()

    def close(self) -> None:
        self.done = self.total
        self._draw(final=True)

    def __enter__(self) -> Progress:
        self._draw()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        elif self.stream is not None and self._tty:
            self.stream.write("\n")
