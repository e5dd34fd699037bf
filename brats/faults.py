"""Fault injection for rehearsing failures: the reliability tests use it, and so can a person
checking a real cluster's recovery (``jobs/train.py`` never installs one by itself).

A hook is a small picklable object that Ray ships to every training worker, which calls it
at the start of every epoch (see :data:`brats.training.EpochHook`).
"""

from __future__ import annotations

import hashlib
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


def chosen(case_id: str, rate: float, seed: int) -> bool:
    """A seeded, stable choice of about ``rate`` of all case ids (same ids every run)."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


@dataclass(frozen=True)
class CrashOnCases:
    """Kill the process (``os._exit``) the first time it handles a chosen case.

    Used as the segmentation job's predict hook, it kills the model actor mid-batch (Ray
    Data restarts it and retries the batch). A case is chosen when :func:`chosen` says so;
    ``marker_dir`` remembers which cases already crashed once, across processes.
    """

    rate: float
    seed: int
    marker_dir: str

    def __call__(self, case_id: str) -> None:
        if not chosen(case_id, self.rate, self.seed):
            return
        marker = os.path.join(self.marker_dir, f"{case_id}.crashed")
        if os.path.exists(marker):
            return
        with open(marker, "w") as fh:
            fh.write("crashed\n")
        os._exit(19)


@dataclass(frozen=True)
class RaiseOnCases:
    """Raise ``OSError`` for the listed cases: a write that breaks halfway, say."""

    cases: tuple[str, ...]

    def __call__(self, case_id: str) -> None:
        if case_id in self.cases:
            raise OSError(f"injected failure while writing case {case_id}")
