"""The report's HTML page: the cases to review first, statistics, box plots, a bounded case
table, thumbnails.

The page stays the same size whatever the cohort's: its case table holds at most
:data:`MAX_CASE_ROWS` cases (:func:`table_rows`: all of them in a small cohort, else the
failed ones and the lowest Dice WT first) and links ``report.csv``, written beside it, for
the rest. The box plots draw every case as a point, in a picture of fixed size.

Everything per region follows the run's label scheme (:class:`brats.volume.labels.LabelScheme`,
BraTS glioma when none is given), which the page names: its regions' statistics, plots and
columns, its colours and legend in the thumbnails. Cases are ranked by the Dice of the
scheme's first region (WT, or GTV for meningioma radiotherapy).

Every text that comes from a cohort (case ids, file names, reasons) is escaped
(:mod:`brats.report.markup`). The pictured sections are :mod:`brats.report.gallery`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from brats.report.figures import box_plot_png
from brats.report.gallery import OverlayLoader, drawer, html_review, html_thumbnails
from brats.report.markup import esc, fmt, img, rank_region
from brats.report.status import FAILED
from brats.report.tables import EMPTY_RULES, STATISTICS, STATISTICS_NOTE, column_values
from brats.volume.labels import SCHEMES, LabelScheme, SchemeLike, interchangeable, scheme_named

_CSS: Final = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
td.text, th.text { text-align: left; }
tr.failed { background: #fde8e8; }
.note { color: #8a4b00; }
.thumbs { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
.review img { width: 24em; }
.swatch { display: inline-block; width: 1em; height: 1em; vertical-align: middle;
          margin: 0 0.3em 0 1em; border: 1px solid #555; }
code { word-break: break-all; }
"""


def render_html(
    rows: list[dict[str, Any]],
    summary: Mapping[str, Any],
    overlay: OverlayLoader | None,
    n_thumbnails: int,
    *,
    scheme: SchemeLike | None = None,
) -> str:
    """The whole page, from report rows (:func:`brats.report.tables.report_row`) and their
    summary, both of ``scheme``; ``overlay`` (or ``None``: no pictures) draws the
    ``n_thumbnails`` worst and best cases by Dice of the scheme's first region (WT), and
    (with ``n_thumbnails > 0``) every case of the "review first" table: the most uncertain
    cases (:func:`brats.report.tables.review_first`), shown when any record has an
    uncertainty. The case table shows :func:`table_rows` and links ``report.csv`` (the page
    is meant to lie beside it, as :func:`brats.report.write.write_report` writes it)."""
    s = scheme_named(scheme)
    draw = None if overlay is None or n_thumbnails == 0 else drawer(overlay, s)
    counts = summary["counts"]
    title = (
        f"BraTS segmentation report: {counts['cases']} cases, {counts['done']} done, "
        f"{counts['failed']} failed, {counts['with_ground_truth']} with ground truth"
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        _html_versions(summary["model_versions"]),
        _html_precisions(summary["precisions"], summary.get("backends", [])),
        _html_scheme(s, rows),
        html_review(rows, draw, s),
        f"<p>{esc(EMPTY_RULES)}</p>",
        _html_statistics(summary["regions"]),
        _html_plots(rows, s),
        _html_detection(summary["detection"]),
        _html_cases(rows, s),
    ]
    if draw is not None:
        parts.append(html_thumbnails(rows, draw, n_thumbnails, s))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _html_versions(versions: list[str]) -> str:
    if not versions:
        return "<p>Model version: none recorded.</p>"
    listed = ", ".join(f"<code>{esc(v)}</code>" for v in versions)
    if len(versions) == 1:
        return f"<p>Model version: {listed}</p>"
    return f'<p class="note">Records from {len(versions)} model versions: {listed}</p>'


METRIC_NAMES: Final = {
    "dice": "Dice",
    "hd95": "HD95 (mm)",
    "lesion_dice": "lesion-wise Dice",
    "lesion_hd95": "lesion-wise HD95 (mm)",
    "nsd": "NSD",
}
"""How the page names the summary's metrics."""


def _html_precisions(precisions: list[str], backends: list[str]) -> str:
    if not precisions:
        return ""
    runtime = f"; runtime: {esc(', '.join(backends))}" if backends else ""
    return f"<p>Network precision: {esc(', '.join(precisions))}{runtime}</p>"


def _html_scheme(scheme: LabelScheme, rows: list[dict[str, Any]]) -> str:
    """Which label scheme the figures are in, its regions, and a note on records that say
    another scheme whose labels mean something else."""
    regions = ", ".join(
        region if members == (region,) else f"{region} = {' + '.join(members)}"
        for region, members in scheme.regions.items()
    )
    text = f"<p>Label scheme: <code>{esc(scheme.name)}</code>; regions {esc(regions)}.</p>"
    others = [
        name
        for name in sorted({row["label_scheme"] for row in rows} - {None, scheme.name})
        if name not in SCHEMES or not interchangeable(SCHEMES[name], scheme)
    ]
    if others:
        listed = ", ".join(f"<code>{esc(n)}</code>" for n in others)
        text += (
            f'\n<p class="note">Records in label scheme {listed}: their figures are read here '
            f"as {esc(scheme.name)}'s regions.</p>"
        )
    return text


_LESION_SETTINGS: Final = {
    "glioma": "BraTS 2023",
    "metastasis": "BraTS metastasis settings",
    "paediatric": "BraTS paediatric settings",
    "meningioma_rt": "BraTS meningioma radiotherapy settings",
    "meningioma": "BraTS 2023 meningioma settings",
}


def _html_statistics(regions: Mapping[str, Mapping[str, Any]]) -> str:
    header = "".join(f"<th>{name}</th>" for name in ("n", *STATISTICS))
    lines = [f'<table><tr><th class="text">metric</th>{header}</tr>']
    for region, metrics in regions.items():
        for metric, stats in metrics.items():
            label = f"{METRIC_NAMES.get(metric, metric)} {region}"
            if stats is None:
                cells = f'<td colspan="{len(STATISTICS) + 1}">no case with ground truth</td>'
            else:
                digits = 1 if "hd95" in metric else 3
                values = (str(stats["n"]), *(f"{stats[s]:.{digits}f}" for s in STATISTICS))
                cells = "".join(f"<td>{v}</td>" for v in values)
            lines.append(f'<tr><td class="text">{esc(label)}</td>{cells}</tr>')
    lines.append(f"</table><p>{esc(STATISTICS_NOTE)}</p>")
    return "\n".join(lines)


def _html_plots(rows: list[dict[str, Any]], scheme: LabelScheme) -> str:
    if not any(row["has_metrics"] for row in rows):
        return '<p class="note">No case has ground truth: no Dice or HD95 to plot.</p>'
    parts = ["<h2>Dice and HD95 per region</h2>"]
    lesion_wise = f"lesion-wise, {_LESION_SETTINGS.get(scheme.lesion_task, scheme.lesion_task)}"
    for prefix, heading in (("", "whole volume"), ("lesion_", lesion_wise)):
        dice = {r: column_values(rows, f"{prefix}dice_{r}") for r in scheme.regions}
        hd95 = {r: column_values(rows, f"{prefix}hd95_{r}") for r in scheme.regions}
        if not any(dice.values()):
            continue  # records from before lesion-wise metrics
        parts += [
            f"<h3>{esc(heading)}</h3>",
            img(box_plot_png(dice, "Dice", (0.0, 1.02)), f"Dice box plot per region, {heading}"),
            img(box_plot_png(hd95, "HD95 (mm)", None), f"HD95 box plot per region, {heading}"),
        ]
    return "\n".join(parts)


def _html_detection(detection: Mapping[str, Mapping[str, int]]) -> str:
    """Lesion-wise true positives, false positives and false negatives per region."""
    lines = [
        "<h2>Lesion detection</h2>",
        '<table><tr><th class="text">region</th><th>TP lesions</th><th>FP components</th>'
        "<th>FN lesions</th></tr>",
    ]
    for region, counts in detection.items():
        cells = "".join(f"<td>{int(counts[c])}</td>" for c in ("tp", "fp", "fn"))
        lines.append(f'<tr><td class="text">{esc(region)}</td>{cells}</tr>')
    lines.append("</table>")
    return "\n".join(lines)


MAX_CASE_ROWS: Final = 100
"""The most cases the page's table shows; ``report.csv`` holds them all."""
FULL_TABLE: Final = "report.csv"
"""The full case table, written beside the page and linked from it."""


def table_rows(
    rows: list[dict[str, Any]],
    bound: int = MAX_CASE_ROWS,
    *,
    scheme: SchemeLike | None = None,
) -> list[dict[str, Any]]:
    """The rows the page's case table shows, at most ``bound`` of them.

    Every row, in case-id order, when there are no more than ``bound``. Otherwise the ones
    a reader has to look at first: the failed cases (by case id), then the cases with the
    lowest Dice of :func:`rank_region` (WT; ties by case id), then, if room is left, the
    others by case id.
    """
    if len(rows) <= bound:
        return list(rows)
    key = f"dice_{rank_region(scheme)}"

    def urgency(row: dict[str, Any]) -> tuple[int, float, str]:
        if row["status"] == FAILED:
            return (0, 0.0, row["case_id"])
        if row[key] is not None:
            return (1, row[key], row["case_id"])
        return (2, 0.0, row["case_id"])

    return sorted(rows, key=urgency)[:bound]


def _html_cases(rows: list[dict[str, Any]], scheme: LabelScheme) -> str:
    shown = table_rows(rows, scheme=scheme)
    regions = list(scheme.regions)
    heads = ["case", "status"]
    heads += [f"Dice {r}" for r in regions] + [f"HD95 {r} (mm)" for r in regions]
    heads += [f"lesion Dice {r}" for r in regions]
    heads += ["error reason", "error message", "notes"]
    text_heads = {"case", "status", "error reason", "error message", "notes"}
    header = "".join(
        f'<th class="text">{h}</th>' if h in text_heads else f"<th>{h}</th>" for h in heads
    )
    lines = [
        "<h2>Cases</h2>",
        _cases_note(rows, shown, rank_region(scheme)),
        f"<table><tr>{header}</tr>",
    ]
    lines += [_case_row(row, regions) for row in shown]
    lines.append("</table>")
    return "\n".join(lines)


def _cases_note(rows: list[dict[str, Any]], shown: list[dict[str, Any]], rank: str) -> str:
    """What the table holds, and the link to the full table."""
    link = f'<a href="{FULL_TABLE}">{FULL_TABLE}</a>'
    if len(shown) == len(rows):
        return f"<p>All {len(rows)} cases, by case id; the same table as CSV: {link}.</p>"
    failed = sum(row["status"] == FAILED for row in rows)
    text = (
        f"<p>{len(shown)} of {len(rows)} cases: the failed ones first, then the lowest "
        f"Dice {rank}. Every case is in {link} (and report.parquet)."
    )
    hidden = failed - sum(row["status"] == FAILED for row in shown)
    if hidden:
        text += (
            f' <span class="note">{failed} cases failed; {hidden} of them are not in this '
            f"table: see {link} (status failed) or summary.json.</span>"
        )
    return text + "</p>"


def _case_row(row: dict[str, Any], regions: list[str]) -> str:
    numbers = [fmt(row[f"dice_{r}"], 3) for r in regions]
    numbers += [fmt(row[f"hd95_{r}"], 1) for r in regions]
    numbers += [fmt(row[f"lesion_dice_{r}"], 3) for r in regions]
    cells = [
        f'<td class="text">{esc(row["case_id"])}</td>',
        f'<td class="text">{esc(row["status"])}</td>',
        *(f"<td>{n}</td>" for n in numbers),
        f'<td class="text">{esc(row["error_reason"])}</td>',
        f'<td class="text">{esc(row["error_message"])}</td>',
        f'<td class="text">{esc(row["notes"])}</td>',
    ]
    css = ' class="failed"' if row["status"] == FAILED else ""
    return f"<tr{css}>{''.join(cells)}</tr>"
