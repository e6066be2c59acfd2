"""Progress on stderr while a level runs: a redrawn bar when stderr is a
terminal, else one line per level (logs and CI output stay readable). It only
reads the counters the workers bump; it never slows them down."""

from __future__ import annotations

import time
from typing import TextIO

BAR_WIDTH = 24
REDRAW_S = 0.1


class ProgressDisplay:
    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._label = ""
        self._measure_ns = 0
        self._warmup_s = 0.0
        self._duration_s: float | None = None
        self._quota: int | None = None
        self._drawn_at = 0.0
        self._width = 0

    def begin(
        self,
        *,
        concurrency: int,
        processes: int,
        measure_ns: int,
        warmup_s: float,
        duration_s: float | None,
        quota: int | None,
    ) -> None:
        self._label = f"concurrency {concurrency}"
        self._measure_ns = measure_ns
        self._warmup_s = warmup_s
        self._duration_s = duration_s
        self._quota = quota
        if not self._tty:
            amount = f"{quota} requests" if quota is not None else f"{duration_s:g} s"
            warmup = f"{warmup_s:g} s warmup, then " if warmup_s else ""
            self._stream.write(
                f"mlserve bench: {self._label} ({processes} process"
                f"{'es' if processes > 1 else ''}): {warmup}{amount}\n"
            )
            self._stream.flush()

    def tick(self, measured: int, warmup: int) -> None:
        if not self._tty:
            return
        now = time.monotonic()
        if now - self._drawn_at < REDRAW_S:
            return
        self._drawn_at = now
        elapsed_s = (time.monotonic_ns() - self._measure_ns) / 1e9
        if elapsed_s < 0:
            text = (
                f"{self._label}: warmup {self._warmup_s + elapsed_s:4.1f}/"
                f"{self._warmup_s:g} s  {warmup:,} requests"
            )
        else:
            if self._quota is not None:
                fraction = measured / self._quota if self._quota else 1.0
                where = f"{measured:,}/{self._quota:,} requests"
            else:
                assert self._duration_s is not None
                fraction = elapsed_s / self._duration_s
                where = f"{min(elapsed_s, self._duration_s):5.1f}/{self._duration_s:g} s  "
                where += f"{measured:,} requests"
            filled = round(BAR_WIDTH * min(1.0, fraction))
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            rate = measured / elapsed_s if elapsed_s > 0 else 0.0
            text = f"{self._label}: [{bar}] {where}  {rate:,.0f} req/s"
        self._draw(text)

    def end(self) -> None:
        """Clear the bar so the result row lands on a clean line."""
        if self._tty and self._width:
            self._draw("")
            self._stream.write("\r")
            self._stream.flush()
            self._width = 0

    def _draw(self, text: str) -> None:
        padding = " " * max(0, self._width - len(text))
        self._stream.write(f"\r{text}{padding}")
        self._stream.flush()
        self._width = len(text)
