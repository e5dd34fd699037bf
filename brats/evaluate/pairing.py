"""Finding label volumes under a folder or ``s3://`` prefix and pairing predictions with
ground truth by case id, whatever the naming.

A label volume is a NIfTI file named in one of these ways (searched recursively; dot files,
``__MACOSX`` and the ``probabilities/`` and ``uncertainty/`` folders of a ``brats segment``
output skipped, since they hold per-voxel maps named ``<case>.nii.gz`` beside ``masks/``):

* ``<case>_seg.nii.gz`` or ``<case>-seg.nii.gz`` anywhere, which covers BraTS 2020 and 2023
  case folders (``BraTS20_Training_001/BraTS20_Training_001_seg.nii.gz``,
  ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz``);
* ``<case>.nii.gz`` (or ``.nii``): the flat layout nnU-Net, MONAI and ``brats segment``
  (``masks/<case>.nii.gz``) write;
* in a case folder that also holds the case's images, the one file with ``seg`` in its name
  (BraTS 2020 training case 355's ``W39_1998.09.19_Segm.nii``): the folder names the case.

Image files (``_flair``, ``_t1``, ``-t2f``, ...) are not label volumes and are passed over.
Case ids are validated before they become keys; a name that is not a valid case id, or two
files for one case, is a :class:`~brats.io.cases.Rejected` entry naming the file (both
files, relative to the root, for two).

What the files say of their labels is here too: a truth file as a case whose names the
scheme is resolved from (:func:`truth_case`), and the scheme a ``brats segment`` output
says its masks are in (:func:`predictions_scheme`).
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field

from brats.errors import InvalidCaseIdError
from brats.io.cases import (
    Case,
    Naming,
    Rejected,
    is_hidden,
    nifti_stem,
    parse_name,
    validate_case_id,
)
from brats.report.records import MAPS, MASKS
from brats.storage import Location, StorageError, read_bytes
from brats.volume.labels import LabelScheme, scheme_from_dict, scheme_named


@dataclass(frozen=True)
class LabelFiles:
    """The label volumes found under one root: ``{case id: path}`` and what was refused."""

    files: dict[str, str] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class Pair:
    """One case to score: its truth file and its prediction file (``None``: missing)."""

    case_id: str
    truth: str
    pred: str | None


def find_label_files(root: Location) -> LabelFiles:
    """Every label volume under ``root`` (see the module docstring), by case id.

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    fs = root.filesystem()
    if not fs.exists(root.path):
        raise FileNotFoundError(f"not found: {root.uri}")
    base = root.path.rstrip("/")
    by_folder: dict[str, list[str]] = defaultdict(list)
    for path in fs.find(root.path):
        relative = path[len(base) :]
        if nifti_stem(posixpath.basename(path)) and not _skipped(relative):
            by_folder[posixpath.dirname(path)].append(path)
    candidates: dict[str, list[str]] = defaultdict(list)
    rejected: list[Rejected] = []
    for folder, paths in sorted(by_folder.items()):
        for name, path in _label_files_in(folder, sorted(paths), is_root=folder == base):
            try:
                candidates[validate_case_id(name)].append(path)
            except InvalidCaseIdError as err:
                rejected.append(Rejected(posixpath.basename(path), str(err)))
    files: dict[str, str] = {}
    for case_id, paths in sorted(candidates.items()):
        if len(paths) > 1:
            a, b = (p[len(base) :].lstrip("/") for p in paths[:2])
            rejected.append(Rejected(case_id, f"two label files: {a} and {b}"))
        else:
            files[case_id] = paths[0]
    return LabelFiles(files, rejected)


def _skipped(relative: str) -> bool:
    """Whether a path below the root is never a label volume: hidden, or in a folder of
    per-voxel maps (:data:`~brats.report.records.MAPS`)."""
    return is_hidden(relative) or any(part in MAPS for part in relative.split("/")[:-1])


def _label_files_in(folder: str, paths: list[str], *, is_root: bool) -> list[tuple[str, str]]:
    """``(case name, path)`` of the label volumes among one folder's NIfTI files."""
    found: list[tuple[str, str]] = []
    plain: list[str] = []
    has_images = False
    for path in paths:
        stem = nifti_stem(posixpath.basename(path)) or ""
        parsed = parse_name(stem)
        if parsed is None:
            plain.append(path)
        elif parsed[1] == "seg":
            found.append((parsed[0], path))
        else:
            has_images = True
    seg_like = [p for p in plain if "seg" in posixpath.basename(p).lower()]
    if has_images and not is_root and not found and len(seg_like) == 1:
        return [(posixpath.basename(folder), seg_like[0])]
    if has_images and not is_root:
        return found  # a case folder: its other files are not labels
    found.extend((nifti_stem(posixpath.basename(p)) or "", p) for p in plain)
    return found


def pair_files(preds: LabelFiles, truths: LabelFiles) -> tuple[list[Pair], list[str]]:
    """Pairs for every truth case (``pred=None`` where no prediction has its id), sorted by
    case id, and the case ids of predictions that have no truth."""
    pairs = [Pair(c, path, preds.files.get(c)) for c, path in sorted(truths.files.items())]
    orphans = sorted(set(preds.files) - set(truths.files))
    return pairs, orphans


def truth_case(case_id: str, path: str) -> Case:
    """A truth file as a case for :func:`~brats.io.schemes.resolve_scheme`: BraTS 2020 naming
    for ``<id>_seg``, else 2023-style."""
    stem = posixpath.basename(path).split(".")[0].lower()
    naming = Naming.BRATS2020 if stem.endswith("_seg") else Naming.BRATS2023
    return Case(case_id, {}, path, naming)


def predictions_scheme(pred_root: Location) -> LabelScheme | None:
    """The scheme a ``brats segment`` output says its masks are in (its ``summary.json``, in
    ``--pred`` or, for the job's ``masks/`` folder, beside it), or ``None`` when it says none."""
    fs, folder = pred_root.filesystem(), pred_root.path.rstrip("/")
    places = [folder]
    if posixpath.basename(folder) == MASKS:
        places.append(posixpath.dirname(folder))
    for place in places:
        try:
            raw = read_bytes(fs, posixpath.join(place, "summary.json"), max_bytes=1 << 24)
            data = json.loads(raw).get("label_scheme")
            if isinstance(data, dict) and "classes" in data:
                return scheme_from_dict(data)
            name = data.get("name") if isinstance(data, dict) else data
            return scheme_named(name) if isinstance(name, str) else None
        except (OSError, StorageError, ValueError, AttributeError):
            continue
    return None
