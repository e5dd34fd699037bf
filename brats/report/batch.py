"""What every job that writes per-case records and a report shares (segment, evaluate).

- :class:`JobConfig`: the settings of the output side (``--out``, ``--s3-endpoint``,
  ``--fail-on-error`` and the NIfTI :class:`~brats.io.nifti.Limits`); a job's config
  inherits them and adds its own inputs.
- :class:`JobError`: the job cannot run at all. A bad case never raises: it becomes a failed
  record.
- :class:`JobResult`: what a run did, its exit code and the summary the command line prints.
- :func:`write_job_report`: the report of the records, with thumbnails drawn from the files a
  job names for each case (:class:`CaseFiles`).
"""

from __future__ import annotations

import functools
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from brats.errors import BratsError, CaseError
from brats.io.nifti import Limits, Volume, read_file
from brats.options import option
from brats.report.records import CaseRecord
from brats.storage import S3_ENDPOINT_HELP, Location
from brats.volume.labels import DEFAULT, LabelError, LabelScheme, to_internal


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """The output side of a records-and-report job; a job's config inherits these fields
    (keyword-only, so the job's own required fields may come without defaults)."""

    out: str = option(help="output folder: local or s3://")
    s3_endpoint: str | None = option(None, help=S3_ENDPOINT_HELP)
    fail_on_error: bool = option(False, help="exit 1 when any case failed")
    limits: Limits = field(default_factory=Limits)


class JobError(BratsError, RuntimeError):
    """The job cannot run at all (a refused model, a folder that cannot be listed)."""


class JobResult(ABC):
    """What one run of a job did; a job's result is a frozen dataclass with these fields.

    Attributes:
        out: the output folder, credentials redacted.
        done: cases this run finished.
        failed: ``{case_id, error}`` of every case that failed.
        report: ``{file name: URI}`` of the report files written (empty when none was).
        seconds: how long the run took.
    """

    out: str
    done: int
    failed: list[dict[str, Any]]
    report: dict[str, str]
    seconds: float

    def succeeded(self) -> bool:
        """Whether the run counts as a success at all: here, some case was done by it."""
        return self.done > 0

    def exit_code(self, *, fail_on_error: bool = False) -> int:
        """1 when asked to fail on any error and one happened, or when nothing succeeded
        (:meth:`succeeded`); else 0."""
        if fail_on_error and self.failed:
            return 1
        return 0 if self.succeeded() else 1

    @abstractmethod
    def counts(self) -> dict[str, Any]:
        """The job's own keys of :meth:`summary`, in the order they are printed."""

    def summary(self) -> dict[str, Any]:
        """The JSON document the command prints: ``status`` ``"ok"`` (the job ran), ``out``,
        :meth:`counts`, ``failed``, ``report`` and ``seconds`` (to 0.1 s)."""
        return {
            "status": "ok",
            "out": self.out,
            **self.counts(),
            "failed": self.failed,
            "report": self.report,
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class VolumeFile:
    """One NIfTI file of a case.

    Attributes:
        root: the folder it lies under (its filesystem reads ``path``).
        path: the file's path on that filesystem.
        scheme: for a label volume, the label scheme its values are in (resolved once for
            the dataset, never guessed per file).
    """

    root: Location
    path: str
    scheme: LabelScheme = DEFAULT


@dataclass(frozen=True)
class CaseFiles:
    """The files the thumbnails of one case are drawn from.

    Attributes:
        flair: the image drawn under the labels.
        pred: the predicted labels; ``None`` draws an empty prediction.
        truth: the ground-truth labels; ``None`` draws none.
    """

    flair: VolumeFile
    pred: VolumeFile | None
    truth: VolumeFile | None


CaseFinder = Callable[[str], CaseFiles]
"""``case_id -> CaseFiles``; raises :class:`~brats.errors.CaseError` for a case it cannot
draw (the report shows the reason in place of the picture)."""

Overlay = tuple[npt.NDArray[np.floating], npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None]


def read_labels(
    file: VolumeFile, case_id: str, limits: Limits
) -> tuple[Volume, npt.NDArray[np.uint8], str]:
    """A label file's volume, its internal classes and the sha256 of its bytes.

    Raises:
        CaseError: naming the file, when it cannot be read, breaks ``limits`` or holds labels
            outside its scheme.
    """
    volume, digest = read_file(file.root.filesystem(), file.path, case_id=case_id, limits=limits)
    try:
        labels = to_internal(volume.data, file.scheme)
    except LabelError as err:
        raise CaseError(case_id, posixpath.basename(file.path), str(err)) from None
    return volume, labels, digest


def load_case(case_id: str, *, find: CaseFinder, limits: Limits) -> Overlay:
    """FLAIR (``float32``), prediction and truth (internal classes) of the files
    ``find(case_id)`` names; a missing prediction is all background.

    Raises:
        CaseError: the case has nothing to draw, or one of its files cannot be used.
    """
    files = find(case_id)
    fs = files.flair.root.filesystem()
    flair = read_file(fs, files.flair.path, case_id=case_id, limits=limits)[0]
    image = flair.data.astype(np.float32)
    truth = None if files.truth is None else read_labels(files.truth, case_id, limits)[1]
    if files.pred is None:
        return image, np.zeros(image.shape if truth is None else truth.shape, np.uint8), truth
    return image, read_labels(files.pred, case_id, limits)[1], truth


def write_job_report(
    records: Sequence[CaseRecord],
    out: Location,
    *,
    find: CaseFinder | None,
    limits: Limits,
    scheme: LabelScheme = DEFAULT,
) -> dict[str, str]:
    """Write the report of ``records`` under ``out`` (:func:`brats.report.write.write_report`).

    Args:
        records: the records to report, in any order.
        out: the run folder.
        find: where each pictured case's files are; ``None`` leaves the thumbnails out. A
            case it (or reading its files) fails for gets a note in place of its picture.
        limits: what each file read for a thumbnail may declare.
        scheme: the label scheme of the records' figures and the drawn labels.

    Returns:
        ``{file name: URI}`` of the report files written.
    """
    from brats.report.write import write_report

    overlay = None if find is None else functools.partial(load_case, find=find, limits=limits)
    return write_report(records, out, overlay=overlay, scheme=scheme)
