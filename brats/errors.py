"""Errors that name what went wrong and where: the case, the file and the reason."""

from __future__ import annotations


class BratsError(Exception):
    """Base class for errors raised by brats."""


class CaseError(BratsError):
    """A case cannot be used. The batch layer turns this into a failed record.

    The message always reads ``case <id>: <file>: <reason>`` so that a log line alone says
    which case, which file and why.
    """

    def __init__(self, case_id: str, file: str | None, reason: str) -> None:
        self.case_id = case_id
        self.file = file
        self.reason = reason
        where = f"{file}: " if file else ""
        super().__init__(f"case {case_id}: {where}{reason}")

    def to_dict(self) -> dict[str, str | None]:
        return {"case_id": self.case_id, "file": self.file, "reason": self.reason}

    def __reduce__(self) -> tuple[type[CaseError], tuple[str, str | None, str]]:
        # Keep the fields when Ray ships the exception between processes.
        return (CaseError, (self.case_id, self.file, self.reason))


class InvalidCaseIdError(BratsError, ValueError):
    """A name that cannot be used as a case id (it would become an unsafe path or key)."""
