"""The cohort segmentation report: tables and a summary from the per-case records.

:func:`report_row` turns a record into a row of :func:`table_schema` and :func:`summarize`
makes ``summary.json``'s document, both in the run's label scheme
(:class:`brats.volume.labels.LabelScheme`: its regions name the metric, volume and statistics
columns; BraTS glioma, WT, TC and ET, when none is given); :mod:`brats.report.write` writes
them with the HTML. The same records in any order give byte-identical Parquet, CSV and
JSON: nothing in them depends on the time of writing or on the order of the input.

No Ray and no TensorFlow here: numpy and pyarrow (and matplotlib for the HTML's figures).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq

from brats.report.records import DONE, FAILED, CaseRecord
from brats.volume.labels import DEFAULT, SchemeLike, scheme_named
from brats.volume.metrics import metric_keys

STATISTICS: Final = ("mean", "median", "std", "min", "max")
SUMMARY_METRICS: Final = ("dice", "hd95", "lesion_dice", "lesion_hd95", "nsd")
DETECTION: Final = ("tp", "fp", "fn")
"""Lesion counts the summary totals per region (``lesion_tp_WT``, ...)."""

EMPTY_RULES: Final = (
    "Empty masks never give NaN. Both masks empty (nothing predicted, nothing there): "
    "Dice 1 and HD95 0 mm, the prediction is exactly right. One mask empty: Dice 0 and "
    "HD95 = the volume diagonal in mm, sqrt(sum((shape * spacing) ** 2)) (373.13 mm for "
    "240 x 240 x 155 at 1 mm), the largest distance two voxels of the volume can have, so a "
    "miss scores as the worst possible distance and stays finite. Lesion-wise (BraTS "
    "2023): a missed lesion and a false-positive component each score Dice 0 and HD95 "
    "374 mm; a case with no lesion and no false positive scores Dice 1 and HD95 0."
)
"""The empty-mask rules of :mod:`brats.volume.metrics`, stated in every summary and HTML report."""

STATISTICS_NOTE: Final = (
    "Statistics are over the cases with ground truth; std is the population standard "
    "deviation (ddof 0)."
)

_TEXT_COLUMNS: Final = (
    "case_id",
    "status",
    "model_version",
    "label_scheme",
    "mask",
    "error_file",
    "error_reason",
    "error_message",
)
TIMING_COLUMNS: Final = ("read_s", "predict_s", "write_s")
UNCERTAINTY_COLUMNS: Final = ("uncertainty", "fold_agreement", "tumor_entropy")
"""A record's ``uncertainty`` ``score``, ``agreement`` and ``entropy``
(:class:`~brats.report.records.CaseRecord`), null for records without one."""
REVIEW_FIRST: Final = 10
"""How many cases ``summary.json``'s ``review_first`` and the page's table name."""


def volume_columns(scheme: SchemeLike | None = None) -> tuple[str, ...]:
    """``volume_<REGION>_ml`` for each region of ``scheme``, in report order."""
    return tuple(f"volume_{region}_ml" for region in scheme_named(scheme).regions)


def table_schema(scheme: SchemeLike | None = None) -> pa.Schema:
    """Columns of :func:`report_table` for ``scheme``, in order: text, the scheme's
    :func:`~brats.volume.metrics.metric_keys`, its :func:`volume_columns`, timings, text."""
    numbers = (
        *metric_keys(scheme), *volume_columns(scheme), *UNCERTAINTY_COLUMNS, *TIMING_COLUMNS
    )  # fmt: skip
    return pa.schema(
        [
            *((name, pa.string()) for name in _TEXT_COLUMNS),
            *((name, pa.float64()) for name in numbers),
            ("created", pa.string()),
            ("notes", pa.string()),
            ("precision", pa.string()),
            ("backend", pa.string()),
        ]
    )


VOLUME_COLUMNS: Final = volume_columns(DEFAULT)
""":func:`volume_columns` of the default (BraTS glioma) scheme."""
TABLE_SCHEMA: Final = table_schema(DEFAULT)
"""Columns of :func:`report_table` for the default (BraTS glioma) scheme, in order."""


def report_table(records: Sequence[CaseRecord], *, scheme: SchemeLike | None = None) -> pa.Table:
    """One row per record, sorted by case id, with the columns of :func:`table_schema`.

    Metrics are null for a case without metrics (failed, or no ground truth); a value that is
    missing, not a number or not finite is null too, so the table never holds NaN.
    """
    return pa.Table.from_pylist(
        [report_row(r, scheme=scheme) for r in sorted_records(records)],
        schema=table_schema(scheme),
    )


def summarize(records: Sequence[CaseRecord], *, scheme: SchemeLike | None = None) -> dict[str, Any]:
    """Cohort summary, JSON-ready and never NaN.

    Returns:
        ``counts`` (``cases``, ``done``, ``failed``, ``with_ground_truth``);
        ``label_scheme``: the scheme the figures are in (:meth:`LabelScheme.to_dict`);
        ``regions``: for each of the scheme's regions (WT, TC, ET for BraTS glioma) and each
        of :data:`SUMMARY_METRICS` the ``n``, mean, median, std, min and max over the cases
        with metrics, or ``None`` when no case has that metric; ``detection``: per region
        the lesion-wise ``tp``, ``fp`` and ``fn`` summed over the cases (0 for records from
        before lesion-wise metrics); ``failed``: ``[{case_id, file, reason}]`` sorted by
        case id; ``notes``: ``[{case_id, notes}]`` of the cases that have any;
        ``review_first``: ``[{case_id, uncertainty}]`` of the :data:`REVIEW_FIRST` most
        uncertain done cases (:func:`review_first`), most uncertain first;
        ``model_versions``, ``precisions`` and ``backends`` (what the network ran in):
        sorted unique;
        ``empty_rules`` and ``statistics`` (what the numbers mean).
    """
    rows = [report_row(r, scheme=scheme) for r in sorted_records(records)]
    return summarize_rows(rows, scheme=scheme)


# --- records -> rows -------------------------------------------------------------------


def sorted_records(records: Sequence[CaseRecord]) -> list[CaseRecord]:
    # The whole record breaks ties, so duplicate case ids still sort the same in any order.
    return sorted(
        records, key=lambda r: (r.case_id, json.dumps(r.to_dict(), sort_keys=True, default=str))
    )


def report_row(record: CaseRecord, *, scheme: SchemeLike | None = None) -> dict[str, Any]:
    """A record as one report row: :func:`table_schema`'s columns for ``scheme`` and
    ``has_metrics``.

    A metric, volume or timing that is missing, not a number or not finite is ``None`` (so is
    a key of another scheme's region that the record does not have).
    """
    s = scheme_named(scheme)
    error = record.error
    metrics = record.metrics
    row: dict[str, Any] = {
        "case_id": record.case_id,
        "status": record.status,
        "model_version": record.model_version,
        "label_scheme": record.label_scheme,
        "mask": record.mask,
        "error_file": None if error is None else _text(error.file),
        "error_reason": None if error is None else error.reason,
        "error_message": None if error is None else error.message,
        "has_metrics": isinstance(metrics, Mapping),
    }
    row.update({key: _number(_mapping(metrics).get(key)) for key in metric_keys(s)})
    volumes = _mapping(record.region_volumes_ml)
    row.update({f"volume_{r}_ml": _number(volumes.get(r)) for r in s.regions})
    sure = _mapping(record.uncertainty)
    for column, key in zip(UNCERTAINTY_COLUMNS, ("score", "agreement", "entropy"), strict=True):
        row[column] = _number(sure.get(key))
    timings = _mapping(record.timings)
    row.update({key: _number(timings.get(key)) for key in TIMING_COLUMNS})
    row["created"] = _text(record.created)
    row["notes"] = "; ".join(record.notes) or None
    row["precision"] = record.precision
    row["backend"] = record.backend
    return row


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# --- summary ---------------------------------------------------------------------------


def summarize_rows(
    rows: list[dict[str, Any]], *, scheme: SchemeLike | None = None
) -> dict[str, Any]:
    """:func:`summarize` of report rows (:func:`report_row` of the same ``scheme``)."""
    s = scheme_named(scheme)
    with_metrics = [row for row in rows if row["has_metrics"]]
    return {
        "counts": {
            "cases": len(rows),
            "done": sum(row["status"] == DONE for row in rows),
            "failed": sum(row["status"] == FAILED for row in rows),
            "with_ground_truth": len(with_metrics),
        },
        "label_scheme": s.to_dict(),
        "regions": {
            region: {
                metric: _statistics(column_values(with_metrics, f"{metric}_{region}"))
                for metric in SUMMARY_METRICS
            }
            for region in s.regions
        },
        "detection": {
            region: {
                count: int(sum(column_values(with_metrics, f"lesion_{count}_{region}")))
                for count in DETECTION
            }
            for region in s.regions
        },
        "failed": [
            {"case_id": row["case_id"], "file": row["error_file"], "reason": row["error_reason"]}
            for row in rows
            if row["status"] == FAILED
        ],
        "notes": [
            {"case_id": row["case_id"], "notes": row["notes"]} for row in rows if row["notes"]
        ],
        "review_first": [
            {"case_id": row["case_id"], "uncertainty": row["uncertainty"]}
            for row in review_first(rows)
        ],
        "model_versions": sorted({row["model_version"] for row in rows} - {None}),
        "precisions": sorted({row["precision"] for row in rows} - {None}),
        "backends": sorted({row["backend"] for row in rows} - {None}),
        "empty_rules": EMPTY_RULES,
        "statistics": STATISTICS_NOTE,
    }


def review_first(rows: Iterable[dict[str, Any]], n: int = REVIEW_FIRST) -> list[dict[str, Any]]:
    """The ``n`` done cases a reviewer should look at first: the highest ``uncertainty``
    (ties by case id); cases without a score are left out."""
    scored = [row for row in rows if row["status"] == DONE and row["uncertainty"] is not None]
    return sorted(scored, key=lambda row: (-row["uncertainty"], row["case_id"]))[:n]


def column_values(rows: Iterable[dict[str, Any]], key: str) -> list[float]:
    """The non-null values of ``key`` over report rows."""
    return [row[key] for row in rows if row[key] is not None]


def _statistics(values: list[float]) -> dict[str, float | int] | None:
    """``n``, mean, median, population std, min and max of finite values; None when empty."""
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {
        "n": int(arr.size),
        "mean": float(np.mean(arr)),
        "median": float(np.median(arr)),
        "std": float(np.std(arr)),
        "min": float(np.min(arr)),
        "max": float(np.max(arr)),
    }


# --- serialization ---------------------------------------------------------------------


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def _inert_cell(value: str | None) -> str | None:
    """A text cell a spreadsheet will not run: one that opens like a formula gets a ``'``."""
    if value and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_bytes(table: pa.Table) -> bytes:
    """The report as CSV, text cells made inert (file names and reasons come from the cohort).

    ``report.parquet`` keeps every value as it is.
    """
    columns = [
        pa.array([_inert_cell(v) for v in column.to_pylist()], pa.string())
        if pa.types.is_string(column.type)
        else column
        for column in table.columns
    ]
    sink = pa.BufferOutputStream()
    pyarrow.csv.write_csv(pa.table(columns, names=table.column_names), sink)
    return bytes(sink.getvalue().to_pybytes())
