"""Cross-validation folds: a cohort's labelled cases dealt into ``K`` folds, by case.

The split is deterministic (the case ids and ``seed`` decide it, nothing else) and stratified:
cases are grouped by which of the scheme's classes they hold (a tumour without enhancement,
one with a resection cavity, ...; :func:`stratum`), each group is shuffled by ``seed`` and
dealt round the folds in turn, the next group starting where the last one stopped. So every
fold gets its share of every kind of case, and fold sizes differ by at most one. Fold ``i``
validates on its own cases and trains on all the others (nnU-Net's five-fold
cross-validation, stratified as scikit-learn's ``StratifiedKFold`` would be on this key).

A manifest written before ingest counted each case's classes (``class_voxels``) has nothing
to stratify by: its cases form one group, still dealt evenly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

FOLDS_FILE: Final = "folds.json"
"""The folds of a cross-validated run, beside its ``fold_<i>/`` runs."""


def stratum(class_voxels: Mapping[str, int] | None) -> str:
    """The group a case is dealt with: the names of the classes it holds, joined by ``+``
    (``""`` for a case with no tumour, or one whose manifest entry has no counts)."""
    if not class_voxels:
        return ""
    return "+".join(name for name, voxels in class_voxels.items() if voxels > 0)


def make_folds(strata: Mapping[str, str], k: int, seed: int) -> list[list[str]]:
    """``k`` folds of the case ids in ``strata`` (``{case id: stratum}``), each sorted.

    Raises:
        ValueError: ``k`` below 2, or more folds than cases (a fold would validate on
            nothing).
    """
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    if len(strata) < k:
        raise ValueError(f"{len(strata)} labelled cases for {k} folds: every fold needs a case")
    groups: dict[str, list[str]] = {}
    for case_id in sorted(strata):
        groups.setdefault(strata[case_id], []).append(case_id)
    folds: list[list[str]] = [[] for _ in range(k)]
    turn = 0
    for key in sorted(groups):
        for case_id in sorted(groups[key], key=lambda c: _shuffle_key(c, seed)):
            folds[turn % k].append(case_id)
            turn += 1
    return [sorted(f) for f in folds]


def fold_split(folds: Sequence[Sequence[str]], i: int) -> dict[str, list[str]]:
    """Fold ``i``'s split: ``{"train": every other fold's cases, "val": its own}``, sorted.

    Raises:
        ValueError: ``i`` is not a fold.
    """
    if not 0 <= i < len(folds):
        raise ValueError(f"fold {i} is not one of the {len(folds)} folds (0..{len(folds) - 1})")
    train = sorted(c for j, f in enumerate(folds) if j != i for c in f)
    return {"train": train, "val": sorted(folds[i])}


def manifest_folds(manifest: Mapping[str, Any], k: int, seed: int) -> dict[str, Any]:
    """What ``folds.json`` holds for a cohort: its hash, ``k``, ``seed``, whether the split is
    stratified and the ``folds`` (:func:`make_folds` of its labelled cases)."""
    labeled = [c for c in manifest["cases"] if c.get("labeled")]
    strata = {c["case_id"]: stratum(c.get("class_voxels")) for c in labeled}
    return {
        "manifest_hash": manifest["hash"],
        "k": k,
        "seed": seed,
        "stratified": all("class_voxels" in c for c in labeled),
        "folds": make_folds(strata, k, seed),
    }


def _shuffle_key(case_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest()
