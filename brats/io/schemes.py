"""Which label scheme a cohort is in: named by the user, or decided once for the whole cohort.

:func:`load_scheme` reads ``--label-scheme``: a built-in name (:data:`brats.volume.labels.
SCHEMES`) or a small JSON file (local or ``s3://``) holding a user scheme.

:func:`resolve_scheme` decides, once per dataset and never per file:

1. ``--label-scheme`` wins.
2. BraTS 2020 file names (``_t1ce``, ``_flair``, ...) mean ``brats2020``.
3. A ``*_gtv`` truth file or the ``BraTS-MEN-RT`` prefix means ``menrt2024``.
4. ``BraTS-PED`` names with a 4 anywhere in the cohort's truth mean ``ped2024``; without one
   the cohort could be BraTS 2023 or 2024 paediatric, which read 1 and 3 differently: stop.
5. Other 2023-style names with no 4 anywhere mean ``brats2023``, but ``met2023`` when every
   prefix is ``BraTS-MET`` and ``men2023`` when every one is ``BraTS-MEN`` (the same labels,
   scored with the 2023 metastasis or meningioma lesion-wise settings); with a 4,
   ``BraTS-GLI`` means ``gli2024`` and ``BraTS-MET`` means ``met2024``.

The prefix is that of the cases named ``BraTS-...`` (``BraTS-GLI-02000-101`` ->
``BraTS-GLI``); a case named otherwise in the same cohort takes the cohort's scheme.
6. Anything else with a 4 stops before any case is read, naming ``--label-scheme`` and the
   candidate schemes.

Under 2023-style names a 4 is never read as enhancing tumour. The label evidence (the values
the truth files hold) is read only when the names leave the question open
(:func:`cohort_label_values`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from brats.errors import BratsError, CaseError
from brats.io.cases import Case, Naming
from brats.io.nifti import Limits, read_file
from brats.storage import Location, StorageError, read_bytes, resolve
from brats.volume.labels import (
    BRATS2020,
    BRATS2023,
    GLI2024,
    MEN2023,
    MENRT2024,
    MET2023,
    MET2024,
    PED2024,
    SCHEMES,
    LabelError,
    LabelScheme,
    SchemeError,
    interchangeable,
    labels_present,
    scheme_from_json,
    scheme_named,
)

FLAG: Final = "--label-scheme"
_READERS: Final = 8
"""Truth files read at once when the label evidence is needed (the reads are I/O bound)."""
_MAX_SCHEME_BYTES: Final = 64 * 1024


class SchemeUnresolved(BratsError, SchemeError):
    """The cohort's names and labels do not say which scheme it is in: pass ``--label-scheme``."""


@dataclass(frozen=True)
class Resolved:
    """A cohort's scheme and why: ``"--label-scheme"``, ``"file names"`` or ``"names and
    labels"``."""

    scheme: LabelScheme
    reason: str


def load_scheme(
    arg: str | LabelScheme | None, *, s3_endpoint: str | None = None
) -> LabelScheme | None:
    """``--label-scheme``'s value as a scheme: a built-in name, or the path (local or ``s3://``)
    of a JSON file (:func:`brats.volume.labels.scheme_from_dict`). ``None`` passes through.

    Raises:
        SchemeError: an unknown name, a file that cannot be read, or a bad scheme (named).
    """
    if arg is None or isinstance(arg, LabelScheme):
        return arg
    text = str(arg)
    if text in SCHEMES:
        return SCHEMES[text]
    if not text.lower().endswith(".json"):
        scheme_named(text)  # raises, listing the built-in names
    try:
        location = resolve(text, s3_endpoint=s3_endpoint)
        raw = read_bytes(location.filesystem(), location.path, max_bytes=_MAX_SCHEME_BYTES)
    except (OSError, StorageError) as err:
        raise SchemeError(f"label scheme file {text}: cannot read ({err})") from None
    return scheme_from_json(raw, what=f"label scheme file {posixpath.basename(text)}")


def scheme_arg(value: str) -> str:
    """argparse type of ``--label-scheme``: a built-in name or a ``.json`` path (checked when
    read)."""
    if value not in SCHEMES and not value.lower().endswith(".json"):
        scheme_named(value)
    return value


def _prefix(case_id: str) -> str:
    """``"BraTS-GLI-02000-101" -> "BraTS-GLI"``, ``"BraTS-MEN-RT-0001-1" -> "BraTS-MEN-RT"``."""
    parts = case_id.split("-")
    words = [p for p in parts if not p.isdigit()]
    return "-".join(words)


def resolve_scheme(
    cases: Sequence[Case],
    given: LabelScheme | None,
    label_values: Callable[[], frozenset[int]],
) -> Resolved:
    """The cohort's scheme by the rules of the module docstring.

    Args:
        cases: the cohort's cases (from :func:`brats.io.cases.discover`).
        given: ``--label-scheme``, or ``None``.
        label_values: the values in every truth file of the cohort; called only when the
            names leave the scheme open.

    Raises:
        SchemeUnresolved: the cohort could be in more than one scheme.
    """
    if given is not None:
        return Resolved(given, FLAG)
    if not cases:
        return Resolved(BRATS2023, "no cases")
    namings = {c.naming for c in cases}
    truth_suffixes = {_suffix(c.seg) for c in cases if c.seg is not None}
    # The challenge's prefixes decide; a case named otherwise (a renamed or broken folder)
    # rides along with the dataset it sits in. No BraTS prefix at all: the ids themselves.
    prefixes = {_prefix(c.case_id) for c in cases if c.case_id.startswith("BraTS-")} or {
        _prefix(c.case_id) for c in cases
    }
    if namings == {Naming.BRATS2020}:
        return Resolved(BRATS2020, "file names")
    if len(namings) > 1:
        raise SchemeUnresolved(
            f"the cohort mixes BraTS 2020 and 2023 file names; pass {FLAG} "
            f"({' or '.join(SCHEMES)}) or split it"
        )
    if "gtv" in truth_suffixes or prefixes == {"BraTS-MEN-RT"}:
        return Resolved(MENRT2024, "file names")
    has_four = 4 in label_values()
    if prefixes == {"BraTS-PED"}:
        if has_four:
            return Resolved(PED2024, "names and labels")
        raise SchemeUnresolved(
            f"BraTS-PED cases without a 4 could be BraTS 2023 (1 NETC, 2 SNFH, 3 ET) or "
            f"2024 paediatric (1 ET, 2 NETC, 3 CC), which read 1 and 3 differently; pass "
            f"{FLAG} brats2023 or {FLAG} ped2024"
        )
    prefix = next(iter(prefixes)) if len(prefixes) == 1 else ""
    if not has_four:
        by_2023_prefix = {"BraTS-MET": MET2023, "BraTS-MEN": MEN2023}
        return Resolved(by_2023_prefix.get(prefix, BRATS2023), "names and labels")
    by_prefix = {"BraTS-GLI": GLI2024, "BraTS-MET": MET2024}
    if prefix in by_prefix:
        return Resolved(by_prefix[prefix], "names and labels")
    candidates = ", ".join(s.name for s in (GLI2024, MET2024, PED2024) if 4 in s.disk_values)
    raise SchemeUnresolved(
        f"the cohort's truth holds a 4 under BraTS 2023-style names ({_show(prefixes)}), "
        f"which no built-in scheme reads without being told: pass {FLAG} with one of "
        f"{candidates}, or a JSON file for your own labels (a 4 is never read as enhancing "
        f"tumour under these names; BraTS 2020 names its files _t1ce, _flair)"
    )


def _suffix(path: str) -> str:
    stem = posixpath.basename(path).split(".")[0]
    return stem.replace("-", "_").rsplit("_", 1)[-1].lower()


def _show(prefixes: Iterable[str]) -> str:
    names = sorted(prefixes)
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def cohort_label_values(
    cases: Sequence[Case], location: Location, limits: Limits | None = None
) -> frozenset[int]:
    """Every value the cohort's truth files hold (a file that cannot be read adds nothing:
    reading the case later reports it, naming the file)."""

    def values(case: Case) -> frozenset[int]:
        assert case.seg is not None
        try:
            volume, _ = read_file(
                location.filesystem(), case.seg, case_id=case.case_id, limits=limits or Limits()
            )
            return labels_present(volume.data)
        except (CaseError, LabelError):
            return frozenset()

    labelled = [c for c in cases if c.seg is not None]
    seen: set[int] = set()
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        for found in pool.map(values, labelled):
            seen |= found
    return frozenset(seen)


def resolve_cohort_scheme(
    cases: Sequence[Case],
    location: Location,
    given: LabelScheme | None,
    limits: Limits | None = None,
) -> Resolved:
    """:func:`resolve_scheme` with the label evidence read from ``location`` when needed."""
    return resolve_scheme(cases, given, lambda: cohort_label_values(cases, location, limits))


def names_scheme(cases: Sequence[Case], model: LabelScheme) -> LabelScheme:
    """The scheme a model's masks are written in for cases whose truth says nothing: BraTS
    2020's values for BraTS 2020 file names when the model's classes read like it (a glioma
    model), else the model's own."""
    legacy = bool(cases) and all(c.naming is Naming.BRATS2020 for c in cases)
    return BRATS2020 if legacy and interchangeable(BRATS2020, model) else model


def check_images(scheme: LabelScheme, modalities: Sequence[str]) -> None:
    """Raise :class:`SchemeError` when ``modalities`` asks for images the scheme's cases lack
    (meningioma radiotherapy has only T1c)."""
    missing = [m for m in modalities if m not in scheme.images]
    if missing:
        raise SchemeError(
            f"scheme {scheme.name} has only the images {list(scheme.images)}; "
            f"--modalities asks for {missing} too (pass --modalities {','.join(scheme.images)})"
        )
