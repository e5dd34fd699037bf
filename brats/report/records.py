"""One record per segmented case, and where a segmentation run keeps its outputs.

    OUT/probabilities/<case>.nii.gz   with --save-probabilities: the region (or class)
                               probabilities, one map per output along the 4th axis
    OUT/uncertainty/<case>.nii.gz     with --save-uncertainty: the per-voxel uncertainty
    OUT/masks/<case>.nii.gz    the mask, written after those maps
    OUT/records/<case>.json    the case's :class:`CaseRecord`, written after its mask
    OUT/report.*               the report over every record in OUT
    OUT/_SUCCESS               written last: the model version and a digest of the records

Every object is written whole (:func:`brats.storage.write_bytes_atomic`), so a record that
says ``done`` always has its mask, and a case whose write broke has no record.

Record schema 2 added the ``schema`` key. Records written before it (schema 1) have the same
fields without that key, read unchanged, and serialize back to the very document they were
read from, so their digest, and the skip check of the next run, do not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Final

from brats.errors import BratsError, InvalidCaseIdError
from brats.io.cases import validate_case_id
from brats.report.status import DONE, FAILED
from brats.storage import Location, StorageError, json_bytes, read_bytes, redact, write_bytes_atomic

log = logging.getLogger(__name__)

RECORD_SCHEMA: Final = 2
"""The schema version this code writes (see the module docstring)."""
MASKS: Final = "masks"
RECORDS: Final = "records"
PROBABILITIES: Final = "probabilities"
UNCERTAINTY: Final = "uncertainty"
MAPS: Final = (PROBABILITIES, UNCERTAINTY)
"""The folders of the optional per-voxel maps, each ``<folder>/<case>.nii.gz``."""
SUCCESS: Final = "_SUCCESS"
MAX_RECORD_BYTES: Final = 1 << 20


_STORED_WHEN_SET: Final = (
    "notes",
    "precision",
    "uncertainty",
    "maps",
    "predicted_spacing",
    "backend",
)
"""Fields added after schema 2 that a record stores only when set, so that a record written
before them serializes back to the very document it was read from."""


class RecordError(BratsError, ValueError):
    """A stored record that cannot be read as a :class:`CaseRecord`."""


@dataclass(frozen=True)
class CaseFailure:
    """Why a case failed: the file (if one is to blame), the reason, and the whole message
    (``case <id>: <file>: <reason>``)."""

    file: str | None
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "reason": self.reason, "message": self.message}


@dataclass(frozen=True)
class CaseRecord:
    """What the segmentation job did with one case (``records/<case>.json``).

    Attributes:
        case_id: the validated case id.
        status: :data:`~brats.report.status.DONE` (a mask was written) or
            :data:`~brats.report.status.FAILED`.
        model_version: sha256 of the model's ``model.keras``.
        settings: the output settings that decided the mask's bytes; a run with other
            settings redoes the case.
        input_checksums: file name -> sha256 of the case's files as read.
        label_scheme: the name of the label scheme the mask is written (and the case scored)
            in, ``None`` when failed. Records written before schemes say ``convention``,
            read as this.
        created: ISO 8601 UTC time the record was made.
        mask: the mask's key under OUT, ``None`` when failed.
        shape: the source grid ``(D, H, W)``, ``None`` when failed.
        spacing: voxel size in mm, ``None`` when failed.
        timings: seconds spent reading, predicting and writing (what is known).
        region_volumes_ml: predicted volume of each region of the scheme in ml, ``None`` when
            failed.
        metrics: every key of :data:`brats.volume.metrics.METRIC_KEYS` against the case's
            ground truth, ``None`` without ground truth or when failed.
        error: why it failed, ``None`` when done.
        notes: what a reader should know about how the case was scored (the evaluation
            job: a prediction that was missing).
        precision: the precision the network ran in for this mask (``float32``,
            ``bfloat16``, ``float16``); ``None`` for records without a prediction and for
            those written before it was recorded (float32).
        uncertainty: how sure the prediction is (:mod:`brats.volume.uncertainty`):
            ``score`` (what a reviewer sorts by, in [0, 2]), ``agreement`` (the folds' mean
            pairwise Dice of the whole tumour; 1 for one model), ``entropy`` (the mean
            normalized entropy inside the predicted tumour) and ``models`` (networks
            averaged); ``None`` without a prediction and for records from before it.
        maps: the per-voxel maps written beside the mask, ``{folder: key under OUT}``
            (:data:`MAPS`); empty when none was asked for.
        predicted_spacing: the voxel size in mm the network saw the case at: the model's
            when the case was resampled to it (``spacing`` stays the case's own, where the
            mask is); ``None`` when it was predicted on its own grid, failed, or was
            recorded before resampling existed.
        backend: the runtime the network ran in for this mask (``keras``, ``onnxruntime``;
            :mod:`brats.segment.backends`); ``None`` without a prediction and for records
            written before backends (Keras).
        schema: the schema version the record was written with.
        extra: keys this version does not know (from a newer job), kept as they were.
    """

    case_id: str
    status: str
    model_version: str
    settings: dict[str, Any]
    input_checksums: dict[str, str] = field(default_factory=dict)
    label_scheme: str | None = None
    created: str = ""
    mask: str | None = None
    shape: list[int] | None = None
    spacing: list[float] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    region_volumes_ml: dict[str, float] | None = None
    metrics: dict[str, float] | None = None
    error: CaseFailure | None = None
    notes: list[str] = field(default_factory=list)
    precision: str | None = None
    uncertainty: dict[str, float] | None = None
    maps: dict[str, str] = field(default_factory=dict)
    predicted_spacing: list[float] | None = None
    backend: str | None = None
    schema: int = RECORD_SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_case_id(self.case_id)
        if self.status not in (DONE, FAILED):
            raise RecordError(f"case {self.case_id}: status {self.status!r} is not done/failed")
        if (self.status == FAILED) != (self.error is not None):
            raise RecordError(f"case {self.case_id}: a failed record, and only one, has an error")

    @classmethod
    def failed(
        cls,
        case_id: str,
        error: CaseFailure,
        *,
        model_version: str,
        settings: dict[str, Any],
        input_checksums: Mapping[str, str] | None = None,
        timings: Mapping[str, float] | None = None,
    ) -> CaseRecord:
        """A record of a case that could not be segmented, made now."""
        return cls(
            case_id=case_id,
            status=FAILED,
            model_version=model_version,
            settings=dict(settings),
            input_checksums=dict(input_checksums or {}),
            created=now(),
            timings=dict(timings or {}),
            error=error,
        )

    @property
    def done(self) -> bool:
        return self.status == DONE

    def is_done_for(self, version: str, settings: Mapping[str, Any]) -> bool:
        """Whether this record says the case is done with this model and these settings (the
        caller checks that the mask exists)."""
        return self.done and self.model_version == version and self.settings == dict(settings)

    def to_dict(self) -> dict[str, Any]:
        """The record as stored: JSON-ready, ``extra`` keys included, ``schema`` left out of
        a schema 1 record (so it is the document it was read from)."""
        document: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name in ("extra", "schema", "error"):
                continue
            if f.name in _STORED_WHEN_SET and not getattr(self, f.name):
                continue
            if f.name == "label_scheme" and "convention" in self.extra:
                continue  # a record from before schemes keeps its one word for it
            document[f.name] = getattr(self, f.name)
        document["error"] = None if self.error is None else self.error.to_dict()
        if self.schema >= 2:
            document["schema"] = self.schema
        return document

    def to_json(self) -> bytes:
        return json_bytes(self.to_dict())

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> CaseRecord:
        """Read a stored record of any schema up to :data:`RECORD_SCHEMA`.

        Raises:
            RecordError: not a record (no valid case id or status, a malformed error), or a
                schema newer than this code reads.
        """
        if not isinstance(document, Mapping):
            raise RecordError(f"a record is a JSON object, not {type(document).__name__}")
        schema = document.get("schema", 1)
        if not isinstance(schema, int) or not 1 <= schema <= RECORD_SCHEMA:
            raise RecordError(f"record schema {schema!r}: this brats reads 1..{RECORD_SCHEMA}")
        known = {f.name for f in fields(cls)} - {"extra", "schema"}
        values = {k: document[k] for k in known if k in document}
        if "convention" in document and "label_scheme" not in document:
            # Written before schemes: read as label_scheme, stored back as it was (extra).
            values["label_scheme"] = document["convention"]
        missing = sorted({"case_id", "status", "model_version", "settings"} - set(values))
        if missing:
            raise RecordError(f"record {document.get('case_id')!r} has no {', '.join(missing)}")
        error = values.pop("error", None)
        if error is not None:
            if not isinstance(error, Mapping) or not isinstance(error.get("reason"), str):
                raise RecordError(f"record {values['case_id']!r}: malformed error {error!r}")
            values["error"] = CaseFailure(
                file=error.get("file"), reason=error["reason"], message=str(error.get("message"))
            )
        extra = {k: document[k] for k in document if k not in known and k != "schema"}
        try:
            return cls(**values, schema=schema, extra=extra)
        except (InvalidCaseIdError, TypeError) as err:
            raise RecordError(f"record {values.get('case_id')!r}: {err}") from None


def now() -> str:
    """The time records carry: ISO 8601 UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def mask_key(case_id: str) -> str:
    """``masks/<case>.nii.gz`` (the case id validated first)."""
    return map_key(MASKS, case_id)


def map_key(folder: str, case_id: str) -> str:
    """``<folder>/<case>.nii.gz`` (the case id validated first): a mask, or one of the
    :data:`MAPS`."""
    return posixpath.join(folder, f"{validate_case_id(case_id)}.nii.gz")


def record_key(case_id: str) -> str:
    """``records/<case>.json`` (the case id validated first)."""
    return posixpath.join(RECORDS, f"{validate_case_id(case_id)}.json")


def write_record(out: Location, record: CaseRecord) -> None:
    """Write ``record`` whole at its key under ``out``."""
    write_bytes_atomic(out.filesystem(), out.join(record_key(record.case_id)), record.to_json())


def read_record(out: Location, case_id: str) -> CaseRecord | None:
    """The record of ``case_id`` under ``out``; ``None`` when there is none, or when it cannot
    be read (logged: the case will be redone)."""
    path = out.join(record_key(case_id))
    try:
        raw = read_bytes(out.filesystem(), path, max_bytes=MAX_RECORD_BYTES)
        return CaseRecord.from_dict(json.loads(raw))
    except FileNotFoundError:
        return None
    except (OSError, StorageError, ValueError) as err:
        log.warning("case %s: unreadable record %s (%s); redoing it", case_id, path, err)
        return None


def list_outputs(out: Location, folder: str, suffix: str) -> dict[str, int]:
    """``{case id: size in bytes}`` of the files in ``OUT/folder`` named ``<case id><suffix>``,
    from one listing. Other names are skipped and logged."""
    fs = out.filesystem()
    path = out.join(folder)
    if not fs.exists(path):
        return {}
    found = {}
    for entry in fs.ls(path, detail=True):
        name = posixpath.basename(str(entry["name"]).rstrip("/"))
        if entry.get("type") != "file" or not name.endswith(suffix):
            continue
        try:
            found[validate_case_id(name[: -len(suffix)])] = int(entry.get("size") or 0)
        except InvalidCaseIdError:
            log.warning("ignoring %s in %s: not a case's output", name, redact(path))
    return found


def read_records(out: Location) -> dict[str, CaseRecord]:
    """Every record under ``OUT/records`` (this run's and earlier ones), by case id: one
    listing, then one batched read (S3 fetches them concurrently).

    A file there whose name is not a case id (``notes copy.json``) is skipped and logged, and
    so is an unreadable, oversized or malformed one (its case is redone).
    """
    fs = out.filesystem()
    sizes = list_outputs(out, RECORDS, ".json")
    wanted = []
    for case_id, size in sizes.items():
        if size > MAX_RECORD_BYTES:
            log.warning("case %s: record of %d bytes is over the limit; redoing it", case_id, size)
            continue
        wanted.append(out.join(record_key(case_id)))
    records: dict[str, CaseRecord] = {}
    if not wanted:
        return records
    for path, raw in fs.cat(sorted(wanted), on_error="omit").items():
        case_id = posixpath.basename(str(path))[: -len(".json")]
        try:
            record = CaseRecord.from_dict(json.loads(raw))
        except ValueError as err:
            log.warning("case %s: unreadable record (%s); redoing it", case_id, err)
            continue
        if record.case_id != case_id:
            log.warning("case %s: its record names case %s; redoing it", case_id, record.case_id)
            continue
        records[case_id] = record
    return records


def records_digest(records: Iterable[CaseRecord]) -> str:
    """sha256 of the records as stored, in case-id order: what ``_SUCCESS`` vouches for."""
    documents = sorted((r.to_dict() for r in records), key=lambda d: d["case_id"])
    return hashlib.sha256(json.dumps(documents, sort_keys=True).encode()).hexdigest()


def write_success(
    out: Location, *, model_version: str, cases: int, records: Iterable[CaseRecord]
) -> None:
    """``_SUCCESS``: the model version, the number of cases, the records' digest and the time."""
    success = {
        "model_version": model_version,
        "cases": cases,
        "records_digest": records_digest(records),
        "finished": now(),
    }
    write_bytes_atomic(out.filesystem(), out.join(SUCCESS), json_bytes(success))


def success_matches(out: Location, records: Iterable[CaseRecord]) -> bool:
    """Whether ``_SUCCESS`` exists and vouches for exactly these records."""
    try:
        raw = read_bytes(out.filesystem(), out.join(SUCCESS), max_bytes=MAX_RECORD_BYTES)
        success = json.loads(raw)
    except (OSError, StorageError, ValueError):
        return False
    return isinstance(success, dict) and success.get("records_digest") == records_digest(records)


def clear_success(out: Location) -> None:
    """Remove ``_SUCCESS`` (a run that changes the outputs does this first)."""
    fs = out.filesystem()
    if fs.exists(out.join(SUCCESS)):
        fs.rm(out.join(SUCCESS))
