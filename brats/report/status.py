"""The words a case's status takes in ingest rows, the cohort manifest, records and reports.

A case is :data:`DONE` (its output was written: a shard, a mask, a record of its scores) or
:data:`FAILED`. Ingest rows and the manifest's ``counts`` said ``"ok"`` (:data:`OLD_DONE`) for
done before these words were shared; readers take that word as :data:`DONE`, writers never
write it.
"""

from __future__ import annotations

from typing import Final

DONE: Final = "done"
FAILED: Final = "failed"
OLD_DONE: Final = "ok"
"""What ingest rows and manifest counts said for :data:`DONE` before; read, never written."""


def read_status(word: object) -> str:
    """The current word for a status read from rows or files: :data:`OLD_DONE` becomes
    :data:`DONE`; any other word is returned as text, unchanged."""
    text = str(word)
    return DONE if text == OLD_DONE else text


def is_done(word: object) -> bool:
    """Whether a status (current or old word, ``str`` or a numpy string) says done."""
    return read_status(word) == DONE
