"""Case discovery over a cohort root (local or S3) and case-id validation.

Layouts understood (``.nii`` and ``.nii.gz`` alike):

* BraTS 2020 (also 2018/2019/2021 names):
  ``BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii.gz``; labels ET = 4.
  The real 2020 training case 355 names its segmentation ``W39_1998.09.19_Segm.nii``: a
  single leftover file with "seg" in its name is taken as the segmentation.
* BraTS 2023 and 2024 (also 2021 challenge releases on Synapse):
  ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t2f,t1n,t1c,t2w,seg}.nii.gz``; the meningioma
  radiotherapy release: ``BraTS-MEN-RT-0000-1/BraTS-MEN-RT-0000-1_{t1c,gtv}.nii.gz``.
* Unlabeled cases (no segmentation), and a flat folder holding the files of many cases.

What the labels mean is not a file's business: the cohort's label scheme is resolved once
(:mod:`brats.io.schemes`). A case folder whose files do not give every modality is still
returned: reading it fails with
a message naming the missing file, so it is reported rather than silently dropped.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from brats.errors import InvalidCaseIdError
from brats.storage import Location

MODALITIES: Final = ("flair", "t1", "t1ce", "t2")
"""Canonical modality names, in the default channel order."""

SEED_MODALITIES: Final = ("flair", "t1ce", "t2")
"""The ``seed`` preset's three channels, in its order."""


class Naming(StrEnum):
    """How a cohort names its files: BraTS 2020's ``<id>_t1ce.nii.gz`` or BraTS 2023's
    ``<id>-t1c.nii.gz`` (which the 2024 releases keep). Naming says nothing certain about
    labels: :func:`brats.io.schemes.resolve_scheme` decides those once per cohort."""

    BRATS2020 = "brats2020"
    BRATS2023 = "brats2023"


_SUFFIXES: Final[dict[str, tuple[str, Naming | None]]] = {
    # file-name token -> (canonical modality or "seg", naming it implies); every release
    # names the segmentation "seg" (meningioma radiotherapy: "gtv"), so it implies none.
    "flair": ("flair", Naming.BRATS2020),
    "t1": ("t1", Naming.BRATS2020),
    "t1ce": ("t1ce", Naming.BRATS2020),
    "t2": ("t2", Naming.BRATS2020),
    "seg": ("seg", None),
    "gtv": ("seg", None),
    "t2f": ("flair", Naming.BRATS2023),
    "t1n": ("t1", Naming.BRATS2023),
    "t1c": ("t1ce", Naming.BRATS2023),
    "t2w": ("t2", Naming.BRATS2023),
}
_NAMES_2023: Final = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}

_CASE_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
_NIFTI_RE: Final = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_TOKEN_RE: Final = re.compile(r"^(?P<prefix>.+?)[_-](?P<token>[A-Za-z0-9]+)$")


def validate_case_id(name: str) -> str:
    """Return ``name`` if it is safe to use as a case id, else raise InvalidCaseIdError.

    A case id becomes a file name and an object key, so it must match
    ``[A-Za-z0-9][A-Za-z0-9._-]*`` (at most 128 characters) and must not contain ``..``.
    That rules out separators, absolute paths, percent-escapes, spaces and non-ASCII names.
    """
    if not isinstance(name, str) or not _CASE_ID_RE.fullmatch(name) or ".." in name:
        raise InvalidCaseIdError(f"invalid case id {name!r}: use letters, digits, '.', '_', '-'")
    return name


@dataclass(frozen=True)
class Case:
    """One case as found in storage: its id, its files and the naming it uses.

    Attributes:
        case_id: validated id (the case folder's name).
        images: canonical modality -> filesystem path, for the modalities found.
        seg: path of the segmentation, or ``None`` for an unlabeled case.
        naming: how its files are named.
        extra: NIfTI files in the folder that matched nothing (reported, never read).
    """

    case_id: str
    images: dict[str, str]
    seg: str | None
    naming: Naming
    extra: tuple[str, ...] = ()

    def expected_name(self, modality: str) -> str:
        """The file name a missing modality would have, for error messages."""
        if self.naming is Naming.BRATS2023:
            return f"{self.case_id}-{_NAMES_2023[modality]}.nii.gz"
        return f"{self.case_id}_{modality}.nii.gz"


@dataclass(frozen=True)
class Rejected:
    """A folder or file group that could not become a case, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    cases: list[Case] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def nifti_stem(filename: str) -> str | None:
    """``"a_t1.nii.gz" -> "a_t1"``; ``None`` for a file that is not NIfTI by name."""
    match = _NIFTI_RE.search(filename)
    return filename[: match.start()] if match else None


def parse_name(stem: str) -> tuple[str, str, Naming | None] | None:
    """``"BraTS20_Training_001_t1ce" -> ("BraTS20_Training_001", "t1ce", BRATS2020)``."""
    match = _TOKEN_RE.match(stem)
    if not match:
        return None
    known = _SUFFIXES.get(match["token"].lower())
    if known is None:
        return None
    return match["prefix"], known[0], known[1]


def discover(root: Location) -> Discovery:
    """Find every case under ``root`` (recursively), sorted by case id."""
    fs = root.filesystem()
    if not fs.exists(root.path):
        raise FileNotFoundError(f"cohort root not found: {root.uri}")
    base = root.path.rstrip("/")
    files = [
        p
        for p in fs.find(root.path)
        if nifti_stem(posixpath.basename(p)) and not is_hidden(p[len(base) :])
    ]
    return group_cases(files, base)


def is_hidden(relative: str) -> bool:
    """Dot files and macOS archive leftovers (``._x``, ``__MACOSX/``) are never data."""
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.split("/"))


def group_cases(paths: Iterable[str], root: str) -> Discovery:
    """Group NIfTI paths into cases: one case per folder, or per name prefix in ``root`` itself."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        by_folder[posixpath.dirname(path)].append(path)

    found = Discovery()
    for folder, folder_files in sorted(by_folder.items()):
        if folder.rstrip("/") == root:
            groups = _group_flat(folder_files, found.rejected)
        else:
            groups = {posixpath.basename(folder): folder_files}
        for name, group in sorted(groups.items()):
            try:
                case_id = validate_case_id(name)
            except InvalidCaseIdError as err:
                found.rejected.append(Rejected(name, str(err)))
                continue
            case = _make_case(case_id, group)
            if isinstance(case, Rejected):
                found.rejected.append(case)
            else:
                found.cases.append(case)
    found.cases.sort(key=lambda c: c.case_id)
    duplicates = {i for i, n in Counter(c.case_id for c in found.cases).items() if n > 1}
    if duplicates:
        found.rejected.extend(
            Rejected(i, "case id found in more than one folder") for i in duplicates
        )
        found.cases[:] = [c for c in found.cases if c.case_id not in duplicates]
    return found


def _group_flat(files: list[str], rejected: list[Rejected]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for path in files:
        stem = nifti_stem(posixpath.basename(path)) or ""
        parsed = parse_name(stem)
        if parsed is None:
            rejected.append(Rejected(posixpath.basename(path), "file name names no modality"))
            continue
        groups[parsed[0]].append(path)
    return groups


def _make_case(case_id: str, files: list[str]) -> Case | Rejected:
    images: dict[str, str] = {}
    seg: str | None = None
    namings: set[Naming] = set()
    leftovers: list[str] = []
    for path in sorted(files):
        base = posixpath.basename(path)
        parsed = parse_name(nifti_stem(base) or "")
        if parsed is None:
            leftovers.append(path)
            continue
        _, kind, naming = parsed
        if naming is not None:
            namings.add(naming)
        if kind == "seg":
            if seg is not None:
                return Rejected(case_id, f"two segmentation files: {seg} and {path}")
            seg = path
        elif kind in images:
            return Rejected(case_id, f"two files for {kind}: {images[kind]} and {path}")
        else:
            images[kind] = path
    seg_like = [p for p in leftovers if "seg" in posixpath.basename(p).lower()]
    if seg is None and len(seg_like) == 1:
        # BraTS 2020 training case 355 names its segmentation W39_1998.09.19_Segm.nii.
        seg = seg_like[0]
        leftovers.remove(seg)
    if not images and seg is None:
        return Rejected(case_id, "no file names a modality")
    if len(namings) > 1:
        return Rejected(case_id, "file names mix BraTS 2020 and 2023 naming")
    chosen = namings.pop() if namings else Naming.BRATS2020
    return Case(case_id, images, seg, chosen, tuple(leftovers))
