"""The cohort segmentation report, built from the per-case records of the segment job.

A record is a plain, JSON-ready dict (``records/<case>.json``)::

    case_id, status ("done" | "failed"), model_version, mask, convention, input_checksums,
    shape, spacing, timings {read_s, predict_s, write_s}, region_volumes_ml {WT, TC, ET},
    metrics (None without ground truth, else every key of brats.metrics.METRIC_KEYS),
    error (None, or {file, reason, message}), created

Unknown keys pass through and are ignored. :func:`write_report` writes four whole objects
under a run folder: ``report.parquet`` and ``report.csv`` (one row per case, sorted by case
id), ``summary.json`` (counts, Dice/HD95 statistics per region, failed cases) and
``report.html`` (box plots, a per-case table, thumbnails of the worst and best cases). The
same records in any order give byte-identical Parquet, CSV and JSON: nothing in them depends
on the time of writing or on the order of the input.

No Ray and no TensorFlow here: numpy, pyarrow and matplotlib (figures drawn on an Agg canvas
of their own, never through pyplot).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from brats.errors import BratsError
from brats.labels import CLASS_NAMES, ED, ET, NCR, REGIONS
from brats.metrics import METRIC_KEYS
from brats.storage import Location, redact, write_bytes_atomic

logger = logging.getLogger(__name__)

OverlayLoader = Callable[
    [str],
    tuple[npt.NDArray[np.floating], npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None],
]
"""``case_id -> (image, predicted labels, ground-truth labels or None)``.

``image`` is a ``(D, H, W)`` float volume (e.g. FLAIR); the labels are ``(D, H, W) uint8``
internal classes in ``{0, 1, 2, 3}`` (see :mod:`brats.labels`), in the image's geometry.
"""

REPORT_FILES: Final = ("report.parquet", "report.csv", "summary.json", "report.html")
STATISTICS: Final = ("mean", "median", "std", "min", "max")
SUMMARY_METRICS: Final = ("dice", "hd95")

EMPTY_RULES: Final = (
    "Empty masks never give NaN. Both masks empty (nothing predicted, nothing there): "
    "Dice 1 and HD95 0 mm, the prediction is exactly right. One mask empty: Dice 0 and "
    "HD95 = the volume diagonal in mm, sqrt(sum((shape * spacing) ** 2)) (373.13 mm for "
    "240 x 240 x 155 at 1 mm), the largest distance two voxels of the volume can have, so a "
    "miss scores as the worst possible distance and stays finite."
)
"""The empty-mask rules of :mod:`brats.metrics`, stated in every summary and HTML report."""

STATISTICS_NOTE: Final = (
    "Statistics are over the cases with ground truth; std is the population standard "
    "deviation (ddof 0)."
)

LABEL_COLOURS: Final[dict[int, str]] = {NCR: "#e41a1c", ED: "#2ca02c", ET: "#ffd700"}
"""Overlay colour per internal class: necrotic core red, edema green, enhancing tumor yellow."""
TRUTH_OUTLINE_COLOUR: Final = "#00e5ff"
OVERLAY_ALPHA: Final = 0.5

_TEXT_COLUMNS: Final = (
    "case_id",
    "status",
    "model_version",
    "convention",
    "mask",
    "error_file",
    "error_reason",
    "error_message",
)
VOLUME_COLUMNS: Final = tuple(f"volume_{region}_ml" for region in REGIONS)
TIMING_COLUMNS: Final = ("read_s", "predict_s", "write_s")

TABLE_SCHEMA: Final = pa.schema(
    [
        *((name, pa.string()) for name in _TEXT_COLUMNS),
        *((name, pa.float64()) for name in (*METRIC_KEYS, *VOLUME_COLUMNS, *TIMING_COLUMNS)),
        ("created", pa.string()),
    ]
)
"""Columns of :func:`report_table`, in order."""

_URI = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_MAX_NOTE_CHARS: Final = 300


class ReportError(BratsError, ValueError):
    """A record the report cannot place (no usable case id)."""


def report_table(records: Sequence[Mapping[str, Any]]) -> pa.Table:
    """One row per record, sorted by case id, with the columns of :data:`TABLE_SCHEMA`.

    Metrics are null for a case without metrics (failed, or no ground truth); a value that is
    missing, not a number or not finite is null too, so the table never holds NaN.
    """
    return pa.Table.from_pylist([_row(r) for r in _sorted(records)], schema=TABLE_SCHEMA)


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Cohort summary, JSON-ready and never NaN.

    Returns:
        ``counts`` (``cases``, ``done``, ``failed``, ``with_ground_truth``); ``regions``:
        for each of WT, TC, ET and each of ``dice``, ``hd95`` the ``n``, mean, median, std,
        min and max over the cases with metrics, or ``None`` when no case has that metric;
        ``failed``: ``[{case_id, file, reason}]`` sorted by case id; ``model_versions``: sorted
        unique; ``empty_rules`` and ``statistics`` (what the numbers mean).
    """
    rows = [_row(r) for r in _sorted(records)]
    return _summary(rows)


def write_report(
    records: Sequence[Mapping[str, Any]],
    out: Location,
    *,
    overlay: OverlayLoader | None = None,
    n_thumbnails: int = 3,
) -> dict[str, str]:
    """Write ``report.parquet``, ``report.csv``, ``summary.json`` and ``report.html`` under ``out``.

    Every object is built in memory first and then written whole
    (:func:`brats.storage.write_bytes_atomic`), so a reader never sees half a report file.

    Args:
        records: the per-case records, in any order.
        out: the run folder (local or ``s3://``).
        overlay: loads the image and label volumes of a case for the thumbnails; ``None``
            leaves the thumbnails out. A loader that raises gives a note instead of a picture.
        n_thumbnails: how many worst and how many best cases by ``dice_WT`` to picture.

    Returns:
        ``{file name: URI}`` of the four objects written.
    """
    if n_thumbnails < 0:
        raise ValueError(f"n_thumbnails must be >= 0, got {n_thumbnails}")
    rows = [_row(r) for r in _sorted(records)]
    table = pa.Table.from_pylist(rows, schema=TABLE_SCHEMA)
    summary = _summary(rows)
    documents = {
        "report.parquet": _parquet_bytes(table),
        "report.csv": _csv_bytes(table),
        "summary.json": _json_bytes(summary),
        "report.html": _html(rows, summary, overlay, n_thumbnails).encode("utf-8"),
    }
    fs = out.filesystem()
    written: dict[str, str] = {}
    for name, data in documents.items():
        path = out.join(name)
        write_bytes_atomic(fs, path, data)
        written[name] = out.uri_of(path)
    logger.info("report for %d cases written to %s", len(rows), redact(out.uri))
    return written


def axial_slice_with_most_tumor(
    pred: npt.NDArray[np.integer], truth: npt.NDArray[np.integer] | None = None
) -> int:
    """Index along the last axis of the ``(D, H, W)`` slice with the most predicted tumour.

    Ties go to the lowest index. With nothing predicted, the slice with the most ground-truth
    tumour; with neither, the middle slice.
    """
    for labels in (pred, truth):
        if labels is None:
            continue
        per_slice = np.count_nonzero(np.asarray(labels) != 0, axis=(0, 1))
        if per_slice.size and per_slice.max() > 0:
            return int(np.argmax(per_slice))
    return int(np.asarray(pred).shape[-1] // 2)


# --- records -> rows -------------------------------------------------------------------


def _sorted(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    for index, record in enumerate(records):
        case_id = record.get("case_id") if isinstance(record, Mapping) else None
        if not isinstance(case_id, str) or not case_id:
            raise ReportError(f"record {index} has no case_id string")
    # The whole record breaks ties, so duplicate case ids still sort the same in any order.
    return sorted(records, key=lambda r: (r["case_id"], json.dumps(r, sort_keys=True, default=str)))


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    error = _mapping(record.get("error"))
    metrics = record.get("metrics")
    volumes = _mapping(record.get("region_volumes_ml"))
    timings = _mapping(record.get("timings"))
    row: dict[str, Any] = {
        "case_id": record["case_id"],
        "status": _text(record.get("status")),
        "model_version": _text(record.get("model_version")),
        "convention": _text(record.get("convention")),
        "mask": _text(record.get("mask")),
        "error_file": _text(error.get("file")),
        "error_reason": _text(error.get("reason")),
        "error_message": _text(error.get("message")),
        "has_metrics": isinstance(metrics, Mapping),
    }
    row.update({key: _number(_mapping(metrics).get(key)) for key in METRIC_KEYS})
    row.update({f"volume_{r}_ml": _number(volumes.get(r)) for r in REGIONS})
    row.update({key: _number(timings.get(key)) for key in TIMING_COLUMNS})
    row["created"] = _text(record.get("created"))
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


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    with_metrics = [row for row in rows if row["has_metrics"]]
    return {
        "counts": {
            "cases": len(rows),
            "done": sum(row["status"] == "done" for row in rows),
            "failed": sum(row["status"] == "failed" for row in rows),
            "with_ground_truth": len(with_metrics),
        },
        "regions": {
            region: {
                metric: _statistics(_values(with_metrics, f"{metric}_{region}"))
                for metric in SUMMARY_METRICS
            }
            for region in REGIONS
        },
        "failed": [
            {"case_id": row["case_id"], "file": row["error_file"], "reason": row["error_reason"]}
            for row in rows
            if row["status"] == "failed"
        ],
        "model_versions": sorted({row["model_version"] for row in rows} - {None}),
        "empty_rules": EMPTY_RULES,
        "statistics": STATISTICS_NOTE,
    }


def _values(rows: Iterable[dict[str, Any]], key: str) -> list[float]:
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


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return bytes(sink.getvalue().to_pybytes())


_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def _inert_cell(value: str | None) -> str | None:
    """A text cell a spreadsheet will not run: one that opens like a formula gets a ``'``."""
    if value and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _csv_bytes(table: pa.Table) -> bytes:
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


def _json_bytes(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()


# --- HTML ------------------------------------------------------------------------------

_CSS: Final = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
td.text, th.text { text-align: left; }
tr.failed { background: #fde8e8; }
.note { color: #8a4b00; }
.thumbs { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
.swatch { display: inline-block; width: 1em; height: 1em; vertical-align: middle;
          margin: 0 0.3em 0 1em; border: 1px solid #555; }
code { word-break: break-all; }
"""


def _esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _html(
    rows: list[dict[str, Any]],
    summary: Mapping[str, Any],
    overlay: OverlayLoader | None,
    n_thumbnails: int,
) -> str:
    counts = summary["counts"]
    title = (
        f"BraTS segmentation report: {counts['cases']} cases, {counts['done']} done, "
        f"{counts['failed']} failed, {counts['with_ground_truth']} with ground truth"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        _html_versions(summary["model_versions"]),
        f"<p>{_esc(EMPTY_RULES)}</p>",
        _html_statistics(summary["regions"]),
        _html_plots(rows),
        _html_cases(rows),
    ]
    if overlay is not None and n_thumbnails > 0:
        parts.append(_html_thumbnails(rows, overlay, n_thumbnails))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_versions(versions: list[str]) -> str:
    if not versions:
        return "<p>Model version: none recorded.</p>"
    listed = ", ".join(f"<code>{_esc(v)}</code>" for v in versions)
    if len(versions) == 1:
        return f"<p>Model version: {listed}</p>"
    return f'<p class="note">Records from {len(versions)} model versions: {listed}</p>'


def _html_statistics(regions: Mapping[str, Mapping[str, Any]]) -> str:
    header = "".join(f"<th>{name}</th>" for name in ("n", *STATISTICS))
    lines = [f'<table><tr><th class="text">metric</th>{header}</tr>']
    for region, metrics in regions.items():
        for metric, stats in metrics.items():
            label = f"{'Dice' if metric == 'dice' else 'HD95 (mm)'} {region}"
            if stats is None:
                cells = f'<td colspan="{len(STATISTICS) + 1}">no case with ground truth</td>'
            else:
                digits = 3 if metric == "dice" else 1
                values = (str(stats["n"]), *(f"{stats[s]:.{digits}f}" for s in STATISTICS))
                cells = "".join(f"<td>{v}</td>" for v in values)
            lines.append(f'<tr><td class="text">{_esc(label)}</td>{cells}</tr>')
    lines.append(f"</table><p>{_esc(STATISTICS_NOTE)}</p>")
    return "\n".join(lines)


def _html_plots(rows: list[dict[str, Any]]) -> str:
    if not any(row["has_metrics"] for row in rows):
        return '<p class="note">No case has ground truth: no Dice or HD95 to plot.</p>'
    dice = {region: _values(rows, f"dice_{region}") for region in REGIONS}
    hd95 = {region: _values(rows, f"hd95_{region}") for region in REGIONS}
    return "\n".join(
        [
            "<h2>Dice and HD95 per region</h2>",
            _img(_box_plot_png(dice, "Dice", (0.0, 1.02)), "Dice box plot per region"),
            _img(_box_plot_png(hd95, "HD95 (mm)", None), "HD95 box plot per region"),
        ]
    )


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _html_cases(rows: list[dict[str, Any]]) -> str:
    heads = ["case", "status"]
    heads += [f"Dice {r}" for r in REGIONS] + [f"HD95 {r} (mm)" for r in REGIONS]
    heads += ["error reason", "error message"]
    text_heads = {"case", "status", "error reason", "error message"}
    header = "".join(
        f'<th class="text">{h}</th>' if h in text_heads else f"<th>{h}</th>" for h in heads
    )
    lines = ["<h2>Cases</h2>", f"<table><tr>{header}</tr>"]
    for row in rows:
        numbers = [_fmt(row[f"dice_{r}"], 3) for r in REGIONS]
        numbers += [_fmt(row[f"hd95_{r}"], 1) for r in REGIONS]
        cells = [
            f'<td class="text">{_esc(row["case_id"])}</td>',
            f'<td class="text">{_esc(row["status"])}</td>',
            *(f"<td>{n}</td>" for n in numbers),
            f'<td class="text">{_esc(row["error_reason"])}</td>',
            f'<td class="text">{_esc(row["error_message"])}</td>',
        ]
        css = ' class="failed"' if row["status"] == "failed" else ""
        lines.append(f"<tr{css}>{''.join(cells)}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _fmt(value: float | None, digits: int) -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}"


def _html_thumbnails(rows: list[dict[str, Any]], overlay: OverlayLoader, n: int) -> str:
    ranked = sorted(
        (row for row in rows if row["dice_WT"] is not None),
        key=lambda row: (row["dice_WT"], row["case_id"]),
    )
    if not ranked:
        return ""
    worst = ranked[:n]
    # A case is pictured once: with few cases, "best" holds those that are not among "worst".
    shown = {id(row) for row in worst}
    best = [row for row in reversed(ranked) if id(row) not in shown][:n]
    parts = ["<h2>Worst and best cases by Dice WT</h2>", _html_legend()]
    for heading, chosen in (("Worst", worst), ("Best", best)):
        if chosen:
            figures = "".join(_html_thumbnail(row, overlay) for row in chosen)
            parts.append(f'<h3>{heading}</h3><div class="thumbs">{figures}</div>')
    return "\n".join(parts)


def _html_legend() -> str:
    names = {NCR: "necrotic / non-enhancing core (1)", ED: "edema (2)", ET: "enhancing tumor (3)"}
    items = [
        f'<span class="swatch" style="background:{LABEL_COLOURS[c]}"></span>{_esc(names[c])}'
        for c in (NCR, ED, ET)
    ]
    items.append(
        f'<span class="swatch" style="border:2px solid {TRUTH_OUTLINE_COLOUR}"></span>'
        "ground-truth whole-tumor outline"
    )
    return (
        "<p>Left: the image on the axial slice (last axis) with the most predicted tumor; "
        "right: the prediction over it, filled in the label colours.<br>" + "".join(items) + "</p>"
    )


def _html_thumbnail(row: dict[str, Any], overlay: OverlayLoader) -> str:
    case_id = row["case_id"]
    caption = f"{_esc(case_id)}: Dice WT {_fmt(row['dice_WT'], 3)}"
    try:
        image, pred, truth = overlay(case_id)
        png, index = _overlay_png(image, pred, truth)
    # The loader is the caller's code (storage, NIfTI, shapes): any failure costs this one
    # picture, never the report.
    except Exception as err:
        reason = _describe(err)
        logger.warning("report: no thumbnail for case %s: %s", case_id, reason)
        return (
            f'<figure><figcaption>{caption}</figcaption><p class="note">No thumbnail: '
            f"{_esc(reason)}</p></figure>"
        )
    alt = f"case {case_id}, axial slice {index}"
    return (
        f"<figure>{_img(png, alt)}<figcaption>{caption}, axial slice {index}</figcaption></figure>"
    )


def _describe(err: BaseException) -> str:
    """``Type: message`` with URIs redacted and the length bounded."""
    text = _URI.sub(lambda m: redact(m.group(0)), str(err))
    if len(text) > _MAX_NOTE_CHARS:
        text = text[:_MAX_NOTE_CHARS] + "..."
    return f"{type(err).__name__}: {text}"


# --- figures ---------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    """A Figure drawn on its own Agg canvas: headless, and no pyplot or global backend state.

    (``matplotlib.use("Agg")`` would switch the backend of a running pyplot, e.g. the app's or
    a notebook's, from inside a library call.)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _box_plot_png(
    values: Mapping[str, list[float]], ylabel: str, ylim: tuple[float, float] | None
) -> bytes:
    """One box per region, with every case drawn as a point over it."""
    fig = _figure(5.0, 3.2)
    ax = fig.add_subplot()
    names = list(values)
    ax.boxplot([values[n] for n in names], tick_labels=names, showfliers=False)
    jitter = np.random.default_rng(0)
    for position, name in enumerate(names, start=1):
        ys = np.asarray(values[name], dtype=np.float64)
        xs = position + jitter.uniform(-0.12, 0.12, size=ys.size)
        ax.scatter(xs, ys, s=12, alpha=0.6, color="#1f77b4", zorder=3)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("region")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _overlay_png(
    image: npt.ArrayLike, pred: npt.ArrayLike, truth: npt.ArrayLike | None
) -> tuple[bytes, int]:
    """PNG of the ``(D, H, W)`` image on its most-tumour axial slice, bare and with labels.

    Returns the PNG and the slice index (last axis).
    """
    img = np.nan_to_num(np.asarray(image, dtype=np.float64))
    labels = np.asarray(pred)
    reference = None if truth is None else np.asarray(truth)
    for name, arr in (("prediction", labels), ("ground truth", reference)):
        if arr is not None and (img.ndim != 3 or arr.shape != img.shape):
            raise ValueError(f"image {img.shape} and {name} {arr.shape} must be one (D, H, W)")
        if arr is not None and arr.size and (arr.min() < 0 or arr.max() >= len(CLASS_NAMES)):
            raise ValueError(f"{name} holds labels outside 0..{len(CLASS_NAMES) - 1}")
    index = axial_slice_with_most_tumor(labels, reference)
    # (D, H, W)[:, :, k] is (D, H); transposed with origin "lower", D runs left to right.
    grey = img[:, :, index].T
    low, high = _grey_window(grey)
    fig = _figure(5.2, 2.8)
    bare, labelled = fig.subplots(1, 2)
    for ax in (bare, labelled):
        ax.imshow(grey, cmap="gray", vmin=low, vmax=high, origin="lower", interpolation="nearest")
        ax.set_axis_off()
    labelled.imshow(_label_rgba(labels[:, :, index].T), origin="lower", interpolation="nearest")
    if reference is not None:
        outline = (reference[:, :, index] != 0).T
        if outline.any() and not outline.all():
            labelled.contour(
                outline.astype(np.float64),
                levels=[0.5],
                colors=[TRUTH_OUTLINE_COLOUR],
                linewidths=1.0,
                origin="lower",
            )
    bare.set_title(f"slice {index}", fontsize=9)
    labelled.set_title("prediction" + (" + truth" if reference is not None else ""), fontsize=9)
    return _png(fig), index


def _grey_window(grey: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Display range: 1st..99th percentile of the non-zero (brain) voxels of the slice."""
    brain = grey[grey != 0]
    if brain.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(brain, [1.0, 99.0]))
    return (low, high) if high > low else (low, low + 1.0)


def _label_rgba(labels: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """``(H, W)`` internal labels -> ``(H, W, 4)`` RGBA, transparent where background."""
    from matplotlib.colors import to_rgba

    table = np.zeros((len(CLASS_NAMES), 4), dtype=np.float64)
    for label, colour in LABEL_COLOURS.items():
        table[label] = to_rgba(colour, alpha=OVERLAY_ALPHA)
    return table[labels.astype(np.intp)]
