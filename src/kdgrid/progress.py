"""Log lines for long steps: timestamps, throughput and ETA, written to stderr (the rule's log)."""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def rate_text(per_second: float) -> str:
    """Three significant digits at any scale: 33.8, 338, 3.38k, 33.8k, 3.38M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k"), (1.0, "")):
        value = per_second / scale
        digits = 0 if value >= 99.95 else 1 if value >= 9.995 else 2
        if float(f"{value:.3g}") >= 1 or scale == 1.0:  # rounded first: 999.6 is 1.00k, 999 is 999
            return f"{value:.{digits}f}{suffix}"
    raise AssertionError("unreachable")


class Progress:
    """Counts steps toward `total` and tokens (or sentences) since the last report."""

    def __init__(self, what: str, total: int, done: int = 0, unit: str = "tok"):
        self.what, self.total, self.done, self.unit = what, total, done, unit
        self.start_done = done
        self.start = self.last = time.perf_counter()
        self.items = 0

    def step(self, n: int = 1, tokens: int = 0) -> None:
        self.done += n
        self.items += tokens

    def report(self, extra: str = "") -> None:
        now = time.perf_counter()
        rate = self.items / max(now - self.last, 1e-9)
        per_step = (now - self.start) / max(self.done - self.start_done, 1)
        eta = per_step * max(self.total - self.done, 0)
        pct = 100.0 * self.done / max(self.total, 1)
        log(f"{self.what} {self.done}/{self.total} ({pct:.0f}%) | {extra + ' | ' if extra else ''}"
            f"{rate_text(rate)} {self.unit}/s | elapsed {clock(now - self.start)} | ETA {clock(eta)}")
        self.last, self.items = now, 0
