"""A job's progress as a line at most every 30 s: done, failed, total, rate, time left.

Batch jobs (ingest, segment, evaluate) call :meth:`Progress.update` once per finished case.
Each failure is logged on its own line (a warning naming the case and the reason); the
progress line comes when the first case finishes, then at most every ``every_s`` seconds,
and once more at the end, so a night's log reads as a few lines per hour, whatever the
cohort's size::

    segment: 120/1000 cases (118 done, 2 failed), 0.41 cases/s, about 36 min left
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

EVERY_S = 30.0
"""Seconds between two progress lines."""


def duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``2 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class Progress:
    """Counts finished cases and logs the progress line (see the module docstring).

    Args:
        what: the job's name, first on the line (``"segment"``).
        total: cases the job will finish.
        log: where lines go (INFO; failures as WARNING).
        every_s: seconds between two lines.
        clock: a monotonic clock in seconds (tests pass their own).
    """

    def __init__(
        self,
        what: str,
        total: int,
        log: logging.Logger,
        *,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.log = log
        self.every_s = every_s
        self.clock = clock
        self.done = 0
        self.failed = 0
        self._began = clock()
        self._last: float | None = None

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def update(self, case_id: str, error: str | None = None) -> None:
        """One case finished: done, or failed with ``error``."""
        if error is None:
            self.done += 1
        else:
            self.failed += 1
            self.log.warning("%s: %s failed: %s", self.what, case_id, error)
        now = self.clock()
        if self._last is None or now - self._last >= self.every_s or self.finished == self.total:
            self._last = now
            self.log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """``what: finished/total cases (d done, f failed), rate, time left``."""
        now = self.clock() if now is None else now
        elapsed = max(now - self._began, 1e-9)
        rate = self.finished / elapsed
        text = (
            f"{self.what}: {self.finished}/{self.total} cases ({self.done} done, "
            f"{self.failed} failed), {rate:.2f} cases/s"
        )
        left = self.total - self.finished
        if left <= 0:
            return f"{text}, finished in {duration(elapsed)}"
        if rate > 0:
            return f"{text}, about {duration(left / rate)} left"
        return text
