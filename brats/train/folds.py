"""Cross-validation folds: a cohort's labelled cases dealt into ``K`` folds, by case.

The split is deterministic (the case ids and ``seed`` decide it, nothing else) and stratified
on every class of the scheme at once. A case's :func:`stratum` is the set of classes it holds
(a tumour without enhancement is one without ``ET``, one with a resection cavity holds
``RC``, ...). The split first decides how many cases of each stratum each fold gets, then
which ones (each stratum's cases in an order ``seed`` shuffles):

* the counts start from dealing the strata round the folds in turn, which gives fold sizes
  that differ by at most one and every stratum within one of its share;
* then cases move between folds, one at a time from a larger fold to a smaller one or
  swapped in pairs, while that brings the folds closer to their share of every class, of
  every class's absence and of every stratum (the sum of squared differences from
  ``total / K`` over the folds). Sizes still differ by at most one.

So a class (or its absence) that spans several strata is balanced too, which dealing alone
does not do (two strata without enhancement could each land their one case in fold 0). On
60 seeded random cohorts shaped like BraTS 2024's (``tests/train/test_folds.py``) every
fold holds within one case of its share of every class and absence in 54, and within two in
all (dealing alone: 16, and 5 beyond two). No split can balance every class exactly in every
cohort. Fold ``i`` validates on its own cases and trains on all the others (nnU-Net's
five-fold cross-validation, stratified as in multi-label iterative stratification).

A manifest written before ingest counted each case's classes (``class_voxels``) has nothing
to stratify by: its cases form one group, still dealt evenly.
"""

from __future__ import annotations

import hashlib
import itertools
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
    """``k`` folds of the case ids in ``strata`` (``{case id: stratum}``), each sorted
    (module docstring).

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
    counts = _balanced_counts({s: len(ids) for s, ids in groups.items()}, k)
    folds: list[list[str]] = [[] for _ in range(k)]
    for name, ids in groups.items():
        shuffled = sorted(ids, key=lambda c: _shuffle_key(c, seed))
        for fold, count in zip(folds, counts, strict=True):
            fold += shuffled[: count[name]]
            shuffled = shuffled[count[name] :]
    return [sorted(f) for f in folds]


def _balanced_counts(sizes: Mapping[str, int], k: int) -> list[dict[str, int]]:
    """How many cases of each stratum each of ``k`` folds gets (module docstring): dealt in
    turn, then moved and swapped while the folds' squared distance from their share of every
    trait (stratum, class, class absent) falls."""
    names = sorted(sizes)
    held = {s: set(s.split("+")) - {""} for s in names}
    classes = sorted(set().union(*held.values()))
    traits = [[s] for s in names]
    for c in classes:
        traits += [[s for s in names if c in held[s]], [s for s in names if c not in held[s]]]
    traits = [t for t in traits if t]
    shares = [sum(sizes[s] for s in t) / k for t in traits]
    counts = [dict.fromkeys(names, 0) for _ in range(k)]
    turn = 0
    for name in names:
        for _ in range(sizes[name]):
            counts[turn % k][name] += 1
            turn += 1

    def cost(fold: dict[str, int]) -> float:
        pairs = zip(traits, shares, strict=True)
        return sum((sum(fold[s] for s in t) - share) ** 2 for t, share in pairs)

    def better(a: int, b: int, out: str, back: str | None) -> bool:
        """Move one ``out`` case from fold ``a`` to ``b`` (and one ``back`` from ``b`` to
        ``a``) if that lowers the cost; say whether it did."""
        before = cost(counts[a]) + cost(counts[b])
        counts[a][out] -= 1
        counts[b][out] += 1
        if back is not None:
            counts[b][back] -= 1
            counts[a][back] += 1
        if cost(counts[a]) + cost(counts[b]) < before - 1e-9:
            return True
        counts[a][out] += 1
        counts[b][out] -= 1
        if back is not None:
            counts[b][back] += 1
            counts[a][back] -= 1
        return False

    improved = True
    while improved:
        improved = False
        for a, b in itertools.permutations(range(k), 2):
            size_a, size_b = sum(counts[a].values()), sum(counts[b].values())
            for out in names:
                if counts[a][out] == 0:
                    continue
                if size_a > size_b and better(a, b, out, None):
                    improved = True
                    break
                for back in names:
                    movable = back != out and counts[a][out] and counts[b][back]
                    if movable and better(a, b, out, back):
                        improved = True
    return counts


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
