"""A cohort's fingerprint: each case's voxel spacing and shape, read from one header per case
before any case is prepared, and the spacing the cohort is stored (and a model trained) at.

nnU-Net plans from such a fingerprint; here it decides one thing, the target spacing
(:func:`brats.volume.resample.target_spacing`), so that ingest resamples every case whose
files are at another spacing once, while it prepares it, and a model records the spacing it
was trained at.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from brats.errors import CaseError
from brats.io.cases import Case
from brats.io.nifti import Limits, parse_header
from brats.storage import Location
from brats.volume.resample import Spacing, as_spacing, same_spacing, target_spacing

log = logging.getLogger(__name__)

HEADER_BYTES: Final = 64 << 10
"""What is read of each file: a NIfTI header is 348 bytes, gzipped or not, before its
extensions; 64 KiB holds it with room to spare."""
_READERS: Final = 16


@dataclass(frozen=True)
class Fingerprint:
    """Each readable case's spacing (mm) and shape, from its first image's header, and the
    target the cohort is resampled to.

    Attributes:
        spacings: case id -> voxel size per axis.
        shapes: case id -> voxels per axis.
        target: the spacing every case is stored at.
        rule: where ``target`` came from: ``given`` (``--target-spacing``), ``median`` or
            ``anisotropic`` (nnU-Net's finer slice spacing), ``none`` (no header read).
    """

    spacings: dict[str, Spacing]
    shapes: dict[str, tuple[int, int, int]]
    target: Spacing | None
    rule: str

    @property
    def median(self) -> Spacing | None:
        """The median spacing per axis, ``None`` without a case."""
        if not self.spacings:
            return None
        return as_spacing(np.median(np.asarray(list(self.spacings.values())), axis=0).tolist())

    def resampled(self) -> list[str]:
        """The cases whose files are not at the target."""
        if self.target is None:
            return []
        return [c for c, s in self.spacings.items() if not same_spacing(s, self.target)]

    def to_dict(self) -> dict[str, Any]:
        """What the manifest records (``spacing``): median, target, rule, cases resampled."""
        median = self.median
        return {
            "median": None if median is None else list(median),
            "target": None if self.target is None else list(self.target),
            "rule": self.rule,
            "cases_read": len(self.spacings),
            "cases_resampled": len(self.resampled()),
        }


def read_geometry(
    case: Case, modality: str, cohort: Location, limits: Limits
) -> tuple[Spacing, tuple[int, int, int]] | None:
    """A case's spacing and shape from the header of its ``modality`` file, or ``None`` when
    the file is missing or its header does not parse (reading the case later says why)."""
    path = case.images.get(modality)
    if path is None:
        return None
    try:
        raw = cohort.filesystem().cat_file(path, start=0, end=HEADER_BYTES)
        header, shape, _, _ = parse_header(
            bytes(raw), case_id=case.case_id, file=path, limits=limits
        )
        zooms = header.get_zooms()[:3]
        spacing = as_spacing(zooms)
    except (CaseError, OSError, ValueError):
        return None
    return spacing, (int(shape[0]), int(shape[1]), int(shape[2]))


def cohort_fingerprint(
    cases: Sequence[Case],
    modality: str,
    cohort: Location,
    limits: Limits,
    given: Sequence[float] | None = None,
) -> Fingerprint:
    """Read every case's geometry (a header each, in threads) and decide the target spacing:
    ``given`` when set, else nnU-Net's rule over the cases read."""
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        found = list(pool.map(lambda c: read_geometry(c, modality, cohort, limits), cases))
    spacings = {c.case_id: g[0] for c, g in zip(cases, found, strict=True) if g is not None}
    shapes = {c.case_id: g[1] for c, g in zip(cases, found, strict=True) if g is not None}
    if given is not None:
        return Fingerprint(spacings, shapes, as_spacing(given), "given")
    if not spacings:
        return Fingerprint(spacings, shapes, None, "none")
    target = target_spacing(list(spacings.values()), list(shapes.values()))
    median = np.median(np.asarray(list(spacings.values())), axis=0)
    rule = "median" if same_spacing(target, median) else "anisotropic"
    return Fingerprint(spacings, shapes, target, rule)
