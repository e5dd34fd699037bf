"""The row schema of prepared cases, and the Ray Data stage that reads a cohort into rows.

Shape of the read stage:

    discover cases (driver, one listing) -> one row per case (:func:`case_to_row`)
      -> map: read the case's files in one worker, validate, crop, normalize
         (:func:`load_and_prepare`); errors become failure rows, never exceptions
      -> optionally, in the same worker, a function of the prepared row (the ingest job
         writes the case's shard there, so no tensor crosses the object store)

A prepared row (:data:`PREPARED_COLUMNS`) holds a :class:`~brats.ingest.prepare.PreparedCase`
as Ray Data tensor and scalar columns, plus ``status`` (:data:`~brats.report.status.DONE` or
:data:`~brats.report.status.FAILED`; rows of older versions said ``"ok"`` for done), ``error``
and ``error_file`` (the failure's message and file, empty for a good case) and ``read_s``
(seconds the read took). :func:`prepared_to_row` and :func:`failure_row` write that schema;
:func:`row_to_prepared` reads it back, from a streamed row or a stored shard alike.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from brats.errors import CaseError
from brats.ingest.prepare import PreparedCase, PreprocessConfig, prepare_case, resample_prepared
from brats.io.cases import Case, Discovery, Naming, discover
from brats.io.nifti import read_case
from brats.report.status import DONE, FAILED
from brats.storage import Location, redact
from brats.volume.geometry import CropBox

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

Row = dict[str, Any]
RowFunction = Callable[[Row], Row]

PREPARED_COLUMNS: Final = (
    "case_id",
    "status",
    "error",
    "error_file",
    "image",
    "label",
    "labeled",
    "crop_start",
    "crop_stop",
    "source_shape",
    "affine",
    "spacing",
    "label_scheme",
    "checksums",
    "header",
    "resampled_from",
)
"""Every column of a prepared row, in order (``read_s`` is added by the read stage)."""


def case_to_row(case: Case) -> Row:
    """A discovered case as a plain row (what travels into the Ray Data read tasks)."""
    spec = {
        "images": case.images,
        "seg": case.seg,
        "naming": case.naming.value,
        "extra": list(case.extra),
    }
    return {"case_id": case.case_id, "case": json.dumps(spec)}


def row_to_case(row: Mapping[str, Any]) -> Case:
    """Inverse of :func:`case_to_row`."""
    spec = json.loads(row["case"])
    return Case(
        case_id=str(row["case_id"]),
        images=dict(spec["images"]),
        seg=spec["seg"],
        naming=Naming(spec["naming"]),
        extra=tuple(spec["extra"]),
    )


def prepared_to_row(prepared: PreparedCase) -> Row:
    """A prepared case as a row of :data:`PREPARED_COLUMNS` with status ``done``."""
    labeled = prepared.label is not None
    return {
        "case_id": prepared.case_id,
        "status": DONE,
        "error": "",
        "error_file": "",
        "image": prepared.image,
        "label": prepared.label if prepared.label is not None else np.zeros((0, 0, 0), np.uint8),
        "labeled": labeled,
        "crop_start": np.asarray(prepared.crop.start, np.int32),
        "crop_stop": np.asarray(prepared.crop.stop, np.int32),
        "source_shape": np.asarray(prepared.crop.shape, np.int32),
        "affine": np.asarray(prepared.affine, np.float64),
        "spacing": np.asarray(prepared.spacing, np.float64),
        "label_scheme": prepared.label_scheme,
        "checksums": json.dumps(prepared.checksums, sort_keys=True),
        "header": prepared.header,
        # The files' geometry, where the case was resampled; empty where it is the same.
        "resampled_from": json.dumps(
            {"spacing": list(prepared.file_spacing), "shape": list(prepared.file_shape or ())}
        )
        if prepared.file_spacing is not None
        else "",
    }


def failure_row(case_id: str, err: CaseError, n_channels: int, dtype: str) -> Row:
    """A failed case as a row of :data:`PREPARED_COLUMNS`: status ``failed``, the error, empty
    tensors and no scheme."""
    nowhere = CropBox((0, 0, 0), (0, 0, 0), (0, 0, 0))
    image = np.zeros((n_channels, 0, 0, 0), dtype)
    empty = PreparedCase(case_id, image, None, nowhere, np.eye(4), (1.0, 1.0, 1.0), "")
    row = prepared_to_row(empty)
    row.update(status=FAILED, error=str(err), error_file=err.file or "")
    return row


def row_to_prepared(row: Mapping[str, Any]) -> PreparedCase:
    """The :class:`PreparedCase` of a good row (streamed, or read from a shard, which keeps
    no header)."""
    return PreparedCase(
        case_id=str(row["case_id"]),
        image=np.asarray(row["image"]),
        label=np.asarray(row["label"], dtype=np.uint8) if bool(row["labeled"]) else None,
        crop=CropBox(_ints(row["crop_start"]), _ints(row["crop_stop"]), _ints(row["source_shape"])),
        affine=np.asarray(row["affine"], dtype=np.float64),
        spacing=_floats(row["spacing"]),
        label_scheme=str(row.get("label_scheme", row.get("convention", ""))),
        checksums=dict(json.loads(str(row["checksums"]))),
        header=bytes(row.get("header") or b""),
        **resampled_from(str(row.get("resampled_from") or "")),
    )


def resampled_from(text: str) -> dict[str, Any]:
    """``file_spacing`` and ``file_shape`` of a row's ``resampled_from`` column (the files'
    geometry of a resampled case), as tuples; an empty dict for a case not resampled."""
    if not text:
        return {}
    files = json.loads(text)
    return {"file_spacing": _floats(files["spacing"]), "file_shape": _ints(files["shape"])}


def _ints(values: Any) -> tuple[int, int, int]:
    a, b, c = (int(v) for v in values)
    return (a, b, c)


def _floats(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def load_and_prepare(row: Row, *, cohort: Location, config: PreprocessConfig) -> Row:
    """Read, validate and prepare the case of a :func:`case_to_row` row, resampled to
    ``config.target_spacing`` when it has one (:func:`~brats.ingest.prepare.resample_prepared`).

    Returns a prepared row, or a failure row naming the case, the file and the reason; never
    raises for a bad case. ``read_s`` says how long it took.
    """
    case = row_to_case(row)
    began = time.perf_counter()
    try:
        volumes = read_case(
            case,
            cohort,
            modalities=config.modalities,
            scheme=config.scheme,
            limits=config.limits,
        )
        prepared = prepare_case(volumes, config)
        if config.target_spacing is not None:
            prepared = resample_prepared(prepared, config.target_spacing, config.dtype)
        out = prepared_to_row(prepared)
    except CaseError as err:
        # Bad input is the driver's to report (one line per failed case); here it is detail.
        log.debug("%s", err)
        out = failure_row(case.case_id, err, len(config.modalities), config.dtype)
    except Exception as err:  # a bug or an I/O failure must still name its case
        wrapped = CaseError(case.case_id, None, f"{type(err).__name__}: {err}")
        log.exception("%s", wrapped)
        out = failure_row(case.case_id, wrapped, len(config.modalities), config.dtype)
    out["read_s"] = time.perf_counter() - began
    return out


def _read_and_finish(
    row: Row, *, cohort: Location, config: PreprocessConfig, finish: RowFunction | None
) -> Row:
    prepared = load_and_prepare(row, cohort=cohort, config=config)
    return finish(prepared) if finish is not None else prepared


class CaseReader:
    """A Ray Data actor that reads cases one after another (see :func:`read_cohort`)."""

    def __init__(
        self, *, cohort: Location, config: PreprocessConfig, finish: RowFunction | None
    ) -> None:
        self._read = functools.partial(
            _read_and_finish, cohort=cohort, config=config, finish=finish
        )

    def __call__(self, row: Row) -> Row:
        return self._read(row)


def read_cohort(
    cohort: Location,
    config: PreprocessConfig,
    *,
    discovery: Discovery | None = None,
    readers: int | None = None,
    finish: RowFunction | None = None,
) -> tuple[ray.data.Dataset, Discovery]:
    """The lazy Ray Dataset of prepared rows of a cohort (one per case, failures included).

    Listing happens here, once, on the driver (unless ``discovery`` is given); each case's
    files are then read together by one worker, and cases load in parallel.

    Args:
        cohort: the cohort root.
        config: how cases are read and prepared.
        discovery: the cases to read, when the caller has listed (and filtered) them.
        readers: ``None`` reads each case in its own Ray task, which suits a pipeline whose
            pace is set downstream (segmentation's model actors). A number reads through a
            pool of up to that many reader actors instead, for jobs whose pace is the read:
            an actor always has its next case queued, where Ray Data's polling left a task
            per case idle between cases (``python jobs/benchmark.py ingest`` measures both).
        finish: turns each prepared row into the row the Dataset yields, in the worker that
            prepared it.

    Raises:
        FileNotFoundError: the cohort root is missing, or holds no case.
    """
    import ray.data

    found = discovery if discovery is not None else discover(cohort)
    rows = [case_to_row(c) for c in found.cases]
    if not rows:
        raise FileNotFoundError(f"no cases found under {redact(cohort.uri)}")
    items = ray.data.from_items(rows, override_num_blocks=len(rows))
    if readers is None:
        read = functools.partial(_read_and_finish, cohort=cohort, config=config, finish=finish)
        return items.map(read, num_cpus=1), found
    ds = items.map(
        CaseReader,  # type: ignore[arg-type]  # a class runs as an actor pool
        fn_constructor_kwargs={"cohort": cohort, "config": config, "finish": finish},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, readers)),
        num_cpus=1,
    )
    return ds, found
