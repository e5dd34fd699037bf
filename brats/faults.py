"""Fault injection for rehearsing failures: the reliability tests use it, and so can a person
checking a real cluster's recovery (``jobs/train.py`` never installs one by itself).

A hook is a small picklable object that Ray ships to every training worker, which calls it
at the start of every epoch (see :data:`brats.training.EpochHook`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EpochLog:
    """Append ``"<epoch> <rank>"`` to a local file at every epoch start (what ran, in order)."""

    path: str

    def __call__(self, epoch: int, rank: int) -> None:
        with open(self.path, "a") as fh:
            fh.write(f"{epoch} {rank}\n")


@dataclass(frozen=True)
class CrashAtEpoch:
    """Kill the worker process (``os._exit``, no cleanup) when ``rank`` starts ``epoch``.

    Attributes:
        epoch: 0-based epoch at whose start the worker dies.
        rank: the world rank that dies.
        marker: a file counting crashes so far; after ``times`` crashes the hook is harmless,
            so a restarted worker goes on. ``times=-1`` crashes every time.
        log: also record every epoch start here (an :class:`EpochLog` path), if given.
    """

    epoch: int
    rank: int
    marker: str
    times: int = 1
    log: str | None = None

    def __call__(self, epoch: int, rank: int) -> None:
        if self.log:
            EpochLog(self.log)(epoch, rank)
        if epoch != self.epoch or rank != self.rank:
            return
        done = os.path.getsize(self.marker) if os.path.exists(self.marker) else 0
        if self.times < 0 or done < self.times:
            with open(self.marker, "a") as fh:
                fh.write("x")
            os._exit(17)
