"""How often each case has been handed to a model actor: a case that kills every actor it
meets is failed after :data:`MAX_ATTEMPTS`, not retried forever.

Ray Data restarts a model actor that dies (out of memory on one huge scan, a crash inside a
kernel, a lost node) and retries its batch on another, without limit. That is right for a
lost node and wrong for a case that brings down any process that segments it. So, before the
network runs on a case, the actor counts the attempt in ``out/_attempts/<case_id>`` (one small
file; a case is in one actor at a time); a case found already at the limit becomes a failed
record instead of another crash, and the job goes on. The marker is removed once the actor is
done with the case, whatever the outcome, and the job clears the folder when it starts, so a
count never outlives the job that made it (a driver killed mid-run leaves markers that the
next run clears).
"""

from __future__ import annotations

import contextlib
from typing import Final

from brats.io.cases import validate_case_id
from brats.storage import Location, write_bytes_atomic

ATTEMPTS: Final = "_attempts"
"""The folder under ``out`` holding one counter per case in flight."""
MAX_ATTEMPTS: Final = 3
"""Model-actor attempts a case gets before it is failed."""


class Attempts:
    """The attempt counters of one job's output folder."""

    def __init__(self, out: Location, limit: int = MAX_ATTEMPTS) -> None:
        self.folder = out.child(ATTEMPTS)
        self.limit = limit

    def _path(self, case_id: str) -> str:
        return self.folder.join(validate_case_id(case_id))

    def begin(self, case_id: str) -> int | None:
        """Count one more attempt at ``case_id`` and return its number (1 first); ``None``
        when the case has had ``limit`` attempts already (it is then not counted again)."""
        fs = self.folder.filesystem()
        path = self._path(case_id)
        try:
            done = int(fs.cat_file(path).decode().strip() or 0)
        except FileNotFoundError:
            done = 0
        if done >= self.limit:
            return None
        write_bytes_atomic(fs, path, f"{done + 1}\n".encode())
        return done + 1

    def end(self, case_id: str) -> None:
        """Forget ``case_id``'s count (the actor finished with it, either way)."""
        with contextlib.suppress(FileNotFoundError):
            self.folder.filesystem().rm(self._path(case_id))

    def clear(self) -> None:
        """Forget every count (the job does this when it starts)."""
        fs = self.folder.filesystem()
        if fs.exists(self.folder.path):
            fs.rm(self.folder.path, recursive=True)

    def exhausted_error(self, case_id: str) -> str:
        """The failed record's reason for a case refused by :meth:`begin`."""
        return (
            f"case {case_id}: the model actor's process died each of the {self.limit} times it "
            "segmented this case (out of memory, a crash in the runtime, or its node lost); "
            "not tried again"
        )
