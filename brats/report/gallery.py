"""The report page's pictured sections: the cases to review first (the most uncertain) and
the worst and best cases by Dice, each case drawn once however many sections show it.

The pictures come from :mod:`brats.report.figures`; a case whose files cannot be drawn gets a
note in place of its picture, never a broken report.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from brats.report.figures import TRUTH_OUTLINE_COLOUR, label_colours, overlay_png
from brats.report.markup import describe, esc, fmt, img, rank_region
from brats.report.tables import review_first
from brats.volume.labels import LabelScheme

logger = logging.getLogger(__name__)

OverlayLoader = Callable[
    [str],
    tuple[npt.NDArray[np.floating], npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None],
]
"""``case_id -> (image, predicted labels, ground-truth labels or None)``.

``image`` is a ``(D, H, W)`` float volume (e.g. FLAIR); the labels are ``(D, H, W) uint8``
internal classes of the report's scheme (``{0, 1, 2, 3}`` for BraTS glioma; see
:mod:`brats.volume.labels`), in the image's geometry.
"""


Drawer = Callable[[str], tuple[bytes, int]]
"""``case_id -> (PNG, axial slice index)`` of the case's overlay."""


def drawer(overlay: OverlayLoader, scheme: LabelScheme) -> Drawer:
    """The overlay PNG of a case, drawn once however many sections picture it."""

    @functools.cache
    def draw(case_id: str) -> tuple[bytes, int]:
        image, pred, truth = overlay(case_id)
        return overlay_png(image, pred, truth, scheme)

    return draw


REVIEW_NOTE: Final = (
    "Uncertainty = (1 - the folds' mean pairwise Dice of the whole tumour) + the mean "
    "normalized entropy of the averaged probabilities inside the predicted tumour, in [0, 2]; "
    "for one model, the entropy alone. Higher: look first."
)


def html_review(rows: list[dict[str, Any]], draw: Drawer | None, scheme: LabelScheme) -> str:
    """The most uncertain cases, most uncertain first, each with its picture; empty when no
    record has an uncertainty."""
    chosen = review_first(rows)
    if not chosen:
        return ""
    first = next(iter(scheme.regions))
    rank = rank_region(scheme)
    scored = any(row[f"dice_{rank}"] is not None for row in chosen)
    heads = ["#", "case", "uncertainty", "fold agreement", "tumour entropy", f"{first} (ml)"]
    heads += [f"Dice {rank}"] if scored else []
    heads += ["picture"] if draw is not None else []
    header = "".join(
        f'<th class="text">{h}</th>' if h in ("case", "picture") else f"<th>{esc(h)}</th>"
        for h in heads
    )
    lines = [
        f"<h2>Review first: the {len(chosen)} most uncertain cases</h2>",
        f"<p>{esc(REVIEW_NOTE)}</p>",
        f'<table class="review"><tr>{header}</tr>',
    ]
    for i, row in enumerate(chosen, start=1):
        cells = [
            f"<td>{i}</td>",
            f'<td class="text">{esc(row["case_id"])}</td>',
            f"<td>{fmt(row['uncertainty'], 3)}</td>",
            f"<td>{fmt(row['fold_agreement'], 3)}</td>",
            f"<td>{fmt(row['tumor_entropy'], 3)}</td>",
            f"<td>{fmt(row[f'volume_{first}_ml'], 1)}</td>",
        ]
        if scored:
            cells.append(f"<td>{fmt(row[f'dice_{rank}'], 3)}</td>")
        if draw is not None:
            picture, index = _picture(row["case_id"], draw)
            where = "" if index is None else f"<br>axial slice {index}"
            cells.append(f'<td class="text">{picture}{where}</td>')
        lines.append(f"<tr>{''.join(cells)}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _picture(case_id: str, draw: Drawer) -> tuple[str, int | None]:
    """The case's overlay as an ``<img>`` and its slice, or a note saying why there is none
    and ``None``."""
    try:
        png, index = draw(case_id)
    # The loader is the caller's code (storage, NIfTI, shapes): any failure costs this one
    # picture, never the report.
    except Exception as err:
        reason = describe(err)
        logger.warning("report: no thumbnail for case %s: %s", case_id, reason)
        return f'<p class="note">No thumbnail: {esc(reason)}</p>', None
    return img(png, f"case {case_id}, axial slice {index}"), index


def html_thumbnails(rows: list[dict[str, Any]], draw: Drawer, n: int, scheme: LabelScheme) -> str:
    rank = rank_region(scheme)
    key = f"dice_{rank}"
    ranked = sorted(
        (row for row in rows if row[key] is not None),
        key=lambda row: (row[key], row["case_id"]),
    )
    if not ranked:
        return ""
    worst = ranked[:n]
    # A case is pictured once: with few cases, "best" holds those that are not among "worst".
    shown = {id(row) for row in worst}
    best = [row for row in reversed(ranked) if id(row) not in shown][:n]
    parts = [f"<h2>Worst and best cases by Dice {esc(rank)}</h2>", _html_legend(scheme)]
    for heading, chosen in (("Worst", worst), ("Best", best)):
        if chosen:
            figures = "".join(_html_thumbnail(row, draw, scheme) for row in chosen)
            parts.append(f'<h3>{heading}</h3><div class="thumbs">{figures}</div>')
    return "\n".join(parts)


def _html_legend(scheme: LabelScheme) -> str:
    colours = label_colours(scheme)
    names = {c: f"{text} ({c})" for c, text in scheme.legend().items()}
    items = [
        f'<span class="swatch" style="background:{colours[c]}"></span>{esc(names[c])}'
        for c in names
    ]
    items.append(
        f'<span class="swatch" style="border:2px solid {TRUTH_OUTLINE_COLOUR}"></span>'
        f"ground-truth {esc(_outline_name(scheme))} outline"
    )
    return (
        "<p>Left: the image on the axial slice (last axis) with the most predicted tumor; "
        "right: the prediction over it, filled in the label colours.<br>" + "".join(items) + "</p>"
    )


def _outline_name(scheme: LabelScheme) -> str:
    """What the ground-truth outline (every labelled voxel) shows: the region of every class."""
    every = {c.name for c in scheme.classes}
    for region, members in scheme.regions.items():
        if set(members) == every:
            return "whole-tumor" if region == "WT" else region
    return "labelled (any class)"


def _html_thumbnail(row: dict[str, Any], draw: Drawer, scheme: LabelScheme) -> str:
    rank = rank_region(scheme)
    caption = f"{esc(row['case_id'])}: Dice {esc(rank)} {fmt(row[f'dice_{rank}'], 3)}"
    picture, index = _picture(row["case_id"], draw)
    if index is None:
        return f"<figure><figcaption>{caption}</figcaption>{picture}</figure>"
    return f"<figure>{picture}<figcaption>{caption}, axial slice {index}</figcaption></figure>"
