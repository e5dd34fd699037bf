"""What a benchmark measures of its own (driver) process: memory and listing calls."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

S3_PAGE: Final = 1000
"""Keys one S3 LIST request returns."""
LISTING_METHODS: Final = ("ls", "find", "glob", "exists")
"""The filesystem methods :class:`ListingCounter` counts."""


def memory_mb() -> dict[str, float]:
    """This process's ``VmRSS`` (resident now) and ``VmHWM`` (peak so far) in MB."""
    found = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
    return {"rss": round(found["VmRSS"], 1), "peak": round(found["VmHWM"], 1)}


@dataclass
class ListingCounter:
    """Counts this process's listing calls on the local filesystem while entered.

    ``calls`` per method counts the outermost calls only; ``folder_reads`` every ``ls``
    (those ``find`` makes included); ``entries`` what the listing calls returned;
    ``s3_list_pages`` the LIST requests the outermost ``ls``/``find``/``glob`` would need
    on S3. ``exists`` is a HEAD request on S3, not a listing: counted, not paged.
    """

    calls: dict[str, int] = field(default_factory=dict)
    folder_reads: int = 0
    entries: int = 0
    s3_list_pages: int = 0
    _depth: threading.local = field(default_factory=threading.local)

    def __enter__(self) -> ListingCounter:
        from fsspec.implementations.local import LocalFileSystem

        self._saved = {m: LocalFileSystem.__dict__.get(m) for m in LISTING_METHODS}
        for name in LISTING_METHODS:
            setattr(LocalFileSystem, name, self._wrap(name, getattr(LocalFileSystem, name)))
        return self

    def __exit__(self, *_: object) -> None:
        from fsspec.implementations.local import LocalFileSystem

        for name, saved in self._saved.items():
            if saved is None:
                delattr(LocalFileSystem, name)
            else:
                setattr(LocalFileSystem, name, saved)

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(fs: Any, *args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "n", 0)
            self._depth.n = depth + 1
            try:
                result = method(fs, *args, **kwargs)
            finally:
                self._depth.n = depth
            self.folder_reads += name == "ls"
            if depth == 0:
                self.calls[name] = self.calls.get(name, 0) + 1
                if name != "exists":
                    self.entries += len(result)
                    self.s3_list_pages += max(1, math.ceil(len(result) / S3_PAGE))
            return result

        return counted

    def figures(self) -> dict[str, Any]:
        counts = {k: getattr(self, k) for k in ("folder_reads", "entries", "s3_list_pages")}
        return {"calls": dict(sorted(self.calls.items())), **counts}


class RssSampler:
    """The largest ``VmRSS`` of this process while entered, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = memory_mb()["rss"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def read(self) -> float:
        """``VmRSS`` now, counted in :attr:`peak` too (so the peak is never below a read)."""
        rss = memory_mb()["rss"]
        self.peak = max(self.peak, rss)
        return rss

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.read()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.read()
