"""The HTML pieces every section of the report page uses: escaping, numbers, embedded
pictures, error notes, and the region cases are ranked by."""

from __future__ import annotations

import base64
import html
import re
from typing import Final

from brats.storage import redact
from brats.volume.labels import SchemeLike, scheme_named

_URI = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_MAX_NOTE_CHARS: Final = 300


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt(value: float | None, digits: int) -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}"


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def rank_region(scheme: SchemeLike | None = None) -> str:
    """The region whose Dice ranks the cases (the table's order, the thumbnails): the
    scheme's first (WT for BraTS glioma)."""
    return next(iter(scheme_named(scheme).regions))


def describe(err: BaseException) -> str:
    """``Type: message`` with URIs redacted and the length bounded."""
    text = _URI.sub(lambda m: redact(m.group(0)), str(err))
    if len(text) > _MAX_NOTE_CHARS:
        text = text[:_MAX_NOTE_CHARS] + "..."
    return f"{type(err).__name__}: {text}"
