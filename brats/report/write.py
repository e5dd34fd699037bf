"""Writing a cohort's report: ``report.parquet`` and ``report.csv`` (one row per case, sorted
by case id, columns :func:`~brats.report.tables.table_schema` of the run's label scheme),
``summary.json`` (the scheme, counts, Dice/HD95 statistics per region, failed cases) and
``report.html`` (:mod:`brats.report.html`), each written whole."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import pyarrow as pa

from brats.report.gallery import OverlayLoader
from brats.report.html import render_html
from brats.report.records import CaseRecord
from brats.report.tables import (
    csv_bytes,
    parquet_bytes,
    report_row,
    sorted_records,
    summarize_rows,
    table_schema,
)
from brats.storage import Location, json_bytes, redact, write_bytes_atomic
from brats.volume.labels import SchemeLike, scheme_named

logger = logging.getLogger(__name__)

REPORT_FILES: Final = ("report.parquet", "report.csv", "summary.json", "report.html")


def write_report(
    records: Sequence[CaseRecord],
    out: Location,
    *,
    overlay: OverlayLoader | None = None,
    n_thumbnails: int = 3,
    scheme: SchemeLike | None = None,
) -> dict[str, str]:
    """Write ``report.parquet``, ``report.csv``, ``summary.json`` and ``report.html`` under ``out``.

    Every object is built in memory first and then written whole
    (:func:`brats.storage.write_bytes_atomic`), so a reader never sees half a report file.

    Args:
        records: the per-case records, in any order.
        out: the run folder (local or ``s3://``).
        overlay: loads the image and label volumes of a case for the thumbnails; ``None``
            leaves the thumbnails out. A loader that raises gives a note instead of a picture.
        n_thumbnails: how many worst and how many best cases by ``dice_WT`` (the Dice of the
            scheme's first region) to picture.
        scheme: the label scheme the records were scored in (its regions name the columns,
            statistics and plots; its colours paint the thumbnails); ``None``: BraTS glioma
            (:data:`brats.volume.labels.DEFAULT`).

    Returns:
        ``{file name: URI}`` of the four objects written.
    """
    if n_thumbnails < 0:
        raise ValueError(f"n_thumbnails must be >= 0, got {n_thumbnails}")
    s = scheme_named(scheme)
    rows = [report_row(r, scheme=s) for r in sorted_records(records)]
    table = pa.Table.from_pylist(rows, schema=table_schema(s))
    summary = summarize_rows(rows, scheme=s)
    page = render_html(rows, summary, overlay, n_thumbnails, scheme=s)
    documents = {
        "report.parquet": parquet_bytes(table),
        "report.csv": csv_bytes(table),
        "summary.json": json_bytes(summary),
        "report.html": page.encode("utf-8"),
    }
    fs = out.filesystem()
    written: dict[str, str] = {}
    for name, data in documents.items():
        path = out.join(name)
        write_bytes_atomic(fs, path, data)
        written[name] = out.uri_of(path)
    logger.info("report for %d cases written to %s", len(rows), redact(out.uri))
    return written
