"""Writing a segmented case: its mask, then its record; a case that failed gets a failed record.

The labels come from the model actors in the case's source grid
(:meth:`brats.segment.predictor.Predictor.segment`); here they become the mask's bytes
(:func:`~brats.segment.predictor.export_mask`), are scored against the ground truth when
there is one, and are written. Nothing here runs the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from brats.errors import InvalidCaseIdError
from brats.ingest.prepare import PreparedCase
from brats.ingest.rows import Row, row_to_prepared
from brats.io.cases import Rejected, validate_case_id
from brats.io.nifti import encode_fractions, header_from_bytes
from brats.report.records import (
    MAPS,
    PROBABILITIES,
    UNCERTAINTY,
    CaseFailure,
    CaseRecord,
    list_outputs,
    map_key,
    mask_key,
    now,
    read_record,
    record_key,
    write_record,
)
from brats.report.status import DONE, FAILED, is_done
from brats.segment.predictor import export_mask
from brats.storage import Location, write_bytes_atomic
from brats.volume.geometry import paste_back
from brats.volume.labels import LabelScheme
from brats.volume.metrics import evaluate_case
from brats.volume.postprocess import region_volumes_ml

log = logging.getLogger(__name__)

CaseHook = Callable[[str], None]
"""Called with a case id; fault injection for the reliability tests
(:mod:`brats.devtools.faults`)."""


def write_case_outputs(
    row: Row,
    *,
    out: Location,
    settings: Mapping[str, Any],
    scheme: LabelScheme,
    maps: tuple[str, ...] = (),
    write_hook: CaseHook | None = None,
) -> dict[str, Any]:
    """Ray Data ``map``: write a predicted row's maps, then its mask, then its record; return
    a small row ``{case_id, status, written, error}``.

    ``row`` is a prepared row (:mod:`brats.ingest.rows`) with what the model actor added
    (:class:`brats.segment.actor.CaseSegmenter`: ``pred``, ``(D, H, W) uint8`` labels in the
    source grid, the uncertainty, timings, and the crop-grid ``probabilities`` and
    ``entropy_map`` of the ``maps`` asked for). The maps are pasted back into the source
    grid and written in the case's geometry (:func:`brats.io.nifti.encode_fractions`); the
    mask is written in ``scheme``'s values and the case scored in its regions. A row that
    failed upstream gets a ``failed`` record. The case's earlier record (another model's,
    other settings') is removed before any map or mask is written, so no reader sees an old
    ``done`` record beside a new mask; an exception while writing therefore leaves no record
    (and, writes being whole-object, nothing half-written at a key): the case is reported
    failed now and redone next run.
    """
    case_id = str(row["case_id"])
    began = time.perf_counter()
    version = str(row.get("model_version", ""))
    try:
        if not is_done(row["status"]):
            message, file = str(row["error"]), str(row["error_file"]) or None
            failure = CaseFailure(file, _reason(message, case_id, file), message)
            record = CaseRecord.failed(
                case_id,
                failure,
                model_version=version,
                settings=dict(settings),
                timings={"read_s": float(row.get("read_s", 0.0))},
            )
            write_record(out, record)
            return _summary(record)
        prepared = row_to_prepared(row)
        labels = np.asarray(row["pred"], dtype=np.uint8)
        mask = export_mask(labels, prepared, scheme)
        metrics = None
        if prepared.label is not None:
            truth = paste_back(prepared.label, prepared.crop)
            metrics = evaluate_case(labels, truth, prepared.spacing, scheme=scheme)
        _remove_record(out, case_id)
        if write_hook is not None:
            write_hook(case_id)
        written = _write_maps(out, case_id, _maps(row, prepared, maps, scheme))
        write_bytes_atomic(out.filesystem(), out.join(mask_key(case_id)), mask)
        record = CaseRecord(
            case_id=case_id,
            status=DONE,
            model_version=version,
            settings=dict(settings),
            input_checksums=prepared.checksums,
            label_scheme=scheme.name,
            created=now(),
            mask=mask_key(case_id),
            shape=list(prepared.crop.shape),
            spacing=list(prepared.spacing),
            timings={
                "read_s": float(row.get("read_s", 0.0)),
                "predict_s": float(row["predict_s"]),
                "write_s": time.perf_counter() - began,
            },
            region_volumes_ml=region_volumes_ml(labels, prepared.spacing, scheme),
            metrics=metrics,
            precision=str(row.get("precision") or "float32"),
            uncertainty=_uncertainty(row),
            maps=written,
            predicted_spacing=json.loads(str(row.get("resampled_to") or "null")),
            backend=str(row.get("backend") or "keras"),
        )
        write_record(out, record)
        return _summary(record)
    except Exception as err:  # storage or bug: no record, the case is redone next run
        log.exception("case %s: writing outputs failed", case_id)
        message = f"case {case_id}: {type(err).__name__}: {err}"
        return {"case_id": case_id, "status": FAILED, "written": False, "error": message}


def _remove_record(out: Location, case_id: str) -> None:
    """Remove ``records/<case>.json`` if there is one (a delete; none there is no error)."""
    with contextlib.suppress(FileNotFoundError):
        out.filesystem().rm(out.join(record_key(case_id)))


def _uncertainty(row: Row) -> dict[str, float] | None:
    score = float(row.get("uncertainty", np.nan))
    if not np.isfinite(score):
        return None
    return {
        "score": round(score, 6),
        "agreement": round(float(row["agreement"]), 6),
        "entropy": round(float(row["entropy"]), 6),
        "models": int(row["models"]),
    }


def _write_maps(out: Location, case_id: str, maps: Mapping[str, bytes]) -> dict[str, str]:
    """Write each map; return ``{folder: key}`` of those written."""
    written = {}
    for folder, data in maps.items():
        written[folder] = map_key(folder, case_id)
        write_bytes_atomic(out.filesystem(), out.join(written[folder]), data)
    return written


def remove_unasked_maps(out: Location, case_ids: Iterable[str], asked: tuple[str, ...]) -> int:
    """Remove the maps of ``case_ids`` in the folders not ``asked`` for (an earlier run's,
    perhaps of another model), so that what lies beside a redone case's mask is what its
    record lists: one listing per such folder, then a delete per map found. Returns how
    many were removed."""
    fs = out.filesystem()
    ids = set(case_ids)
    removed = 0
    for folder in MAPS:
        if folder in asked:
            continue
        for case_id in sorted(ids & set(list_outputs(out, folder, ".nii.gz"))):
            fs.rm(out.join(map_key(folder, case_id)))
            removed += 1
    return removed


def _maps(
    row: Row, prepared: PreparedCase, maps: tuple[str, ...], scheme: LabelScheme
) -> dict[str, bytes]:
    """NIfTI bytes of each map asked for, in the case's source grid and geometry: the
    probabilities with one map per output along the 4th axis (outside the brain crop: 0,
    and 1 for a softmax's background), the uncertainty as one 3D map (0 outside)."""
    header = header_from_bytes(prepared.header)
    encoded = {}
    if PROBABILITIES in maps:
        names = str(row["output_names"]).split()
        cropped = np.asarray(row["probabilities"], dtype=np.float32)
        full = paste_back(cropped, prepared.crop)
        if names[0] == "background":
            full[0] = paste_back(cropped[0], prepared.crop, fill=1.0)
        description = f"brats {scheme.name} probabilities: {' '.join(names)}"
        encoded[PROBABILITIES] = encode_fractions(
            np.moveaxis(full, 0, -1), header, description=description[:79]
        )
    if UNCERTAINTY in maps:
        full = paste_back(np.asarray(row["entropy_map"], dtype=np.float32), prepared.crop)
        encoded[UNCERTAINTY] = encode_fractions(
            full, header, description="brats uncertainty: normalized entropy"
        )
    return encoded


def record_rejected(
    rejected: list[Rejected], out: Location, *, model_version: str, settings: Mapping[str, Any]
) -> list[dict[str, str]]:
    """Folders discovery could not make a case of: logged, returned as failures
    ``{case_id, error}``, and given a failed record when their name is a valid case id (so
    the report lists them too). A record an earlier run wrote for the same error is kept."""
    failed = []
    for item in rejected:
        message = f"case {item.name}: {item.reason}"
        log.warning("rejected %s", message)
        failed.append({"case_id": item.name, "error": message})
        try:
            case_id = validate_case_id(item.name)
        except InvalidCaseIdError:
            continue
        failure = CaseFailure(None, item.reason, message)
        previous = read_record(out, case_id)
        if previous is not None and previous.error == failure:
            continue  # rewriting it would only change "created"
        record = CaseRecord.failed(
            case_id, failure, model_version=model_version, settings=dict(settings)
        )
        write_record(out, record)
    return failed


def _reason(message: str, case_id: str, file: str | None) -> str:
    """The reason part of ``case <id>: <file>: <reason>``."""
    prefix = f"case {case_id}: " + (f"{file}: " if file else "")
    return message[len(prefix) :] if message.startswith(prefix) else message


def _summary(record: CaseRecord) -> dict[str, Any]:
    return {
        "case_id": record.case_id,
        "status": record.status,
        "written": True,
        "error": record.error.message if record.error is not None else "",
    }
