"""Named operations on predicted label volumes: small-ET relabeling, per-region component
rules chosen on validation cases, and region volumes.

Labels are ``(D, H, W) uint8`` internal classes (see :mod:`brats.volume.labels`).

A :class:`Postprocessing` holds one rule per region output of the label scheme (WT, TC, ET
for BraTS glioma): ``"largest"`` keeps only the largest connected component, an integer ``N``
drops components under ``N`` voxels, ``"below:N"`` drops the whole region when it has fewer
than ``N`` voxels in all (BraTS's "enhancing tumour to core below a volume"), and a missing
region is left alone. Voxels a rule
removes from a region fall back to the class the region around it paints
(:func:`fallback`: ET -> necrotic core, TC -> edema, WT -> background), so the labels stay a
valid nesting WT >= TC >= ET. :func:`choose_postprocessing` picks the rules as nnU-Net does: for
each region in turn, the candidate that raises the mean validation Dice of that region,
if any does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from brats.volume.labels import LabelScheme, SchemeLike, scheme_named
from brats.volume.lesions import LesionSettings, lesion_scores, region_settings

Rule = str | int
"""``"largest"``, or a minimum component size in voxels."""
CANDIDATE_RULES: Final[tuple[Rule, ...]] = (10, 30, 100, 300, 1000, "largest")
"""What :func:`choose_postprocessing` tries for each region, besides doing nothing: from the
rule that removes least to the one that removes most, so that among rules with the same
validation Dice the one that removes least wins. Removing a false-positive speck scores the
same under every rule that removes it, but "largest" also removes the second focus of any
multifocal tumor the few validation cases happen to lack."""
VOLUME_RULES: Final[tuple[Rule, ...]] = (
    "below:10",
    "below:30",
    "below:100",
    "below:300",
    "below:1000",
)
"""Whole-region thresholds, tried after :data:`CANDIDATE_RULES` where there are enough cases
to choose one (cross-validation's pooled out-of-fold predictions): a region predicted with
fewer voxels in all is taken for a false positive. For ET this is the relabelling of a small
enhancing volume as core that BraTS entries tune on cross-validation; a tumour without
enhancement then scores ET Dice 1 instead of 0."""


def fallback(region: str, scheme: SchemeLike | None = None) -> int:
    """The internal class a voxel removed from ``region`` gets: the class painted by the
    nearest earlier region output that holds ``region`` (:attr:`LabelScheme.decode`), else
    background. Glioma: ET -> necrotic core, TC -> edema, WT -> background."""
    s = scheme_named(scheme)
    inner = set(s.regions[region])
    order = [r for r, _ in s.decode]
    for outer, cls in reversed(s.decode[: order.index(region)]):
        if inner <= set(s.regions[outer]):
            return s.class_index(cls)
    return 0


def _output_regions(scheme: LabelScheme) -> dict[str, tuple[int, ...]]:
    return {r: scheme.region_classes(r) for r in scheme.output_regions}


MIN_GAIN: Final = 1e-3
"""A rule is adopted only if it raises the region's mean validation Dice by more than this."""


def small_et_to_necrosis(
    labels: npt.NDArray[np.uint8], min_voxels: int, scheme: SchemeLike | None = None
) -> npt.NDArray[np.uint8]:
    """Relabel enhancing-tumor components smaller than ``min_voxels`` as the class around
    them (:func:`fallback`; the necrotic core for BraTS glioma).

    Tiny ET specks are the commonest false positive on cases without enhancement, and ET Dice
    punishes them hardest (an empty truth scores 0 against any ET). Components are
    face-connected (6-connectivity). ``min_voxels <= 0``, or a scheme without an ``ET``
    region output, returns ``labels`` itself; otherwise the result is a new array.
    """
    s = scheme_named(scheme)
    if min_voxels <= 0 or "ET" not in s.output_regions:
        return labels
    et = s.class_index("ET")
    if not np.any(labels == et):
        return labels
    components, n = ndimage.label(labels == et)
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    small = np.flatnonzero(sizes < min_voxels)
    small = small[small > 0]
    out = labels.copy()
    out[np.isin(components, small)] = fallback("ET", s)
    return out


@dataclass(frozen=True)
class Postprocessing:
    """One component rule per region output, applied in the scheme's decode order (WT, then
    TC, then ET; see the module)."""

    rules: Mapping[str, Rule] = field(default_factory=dict)
    scheme: LabelScheme = field(default_factory=lambda: scheme_named(None), compare=False)

    def __post_init__(self) -> None:
        rules = dict(self.rules)
        regions = self.scheme.output_regions
        for region, rule in rules.items():
            if region not in regions:
                raise ValueError(f"unknown region {region!r}; expected one of {list(regions)}")
            if (
                rule != "largest"
                and _below(rule) is None
                and (isinstance(rule, bool) or not isinstance(rule, int) or rule < 1)
            ):
                raise ValueError(
                    f"rule for {region} must be 'largest', a positive voxel count or "
                    f"'below:<voxels>', got {rule!r}"
                )
        object.__setattr__(self, "rules", {r: rules[r] for r in regions if r in rules})

    def apply(self, labels: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """The postprocessed labels: ``labels`` itself when there is no rule, else a new
        array."""
        out = labels
        for region, rule in self.rules.items():
            out = apply_rule(out, region, rule, self.scheme)
        return out

    def to_dict(self) -> dict[str, Rule]:
        """JSON-ready ``{region: rule}``; :meth:`from_dict` inverts it."""
        return dict(self.rules)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Rule] | None, scheme: SchemeLike | None = None
    ) -> Postprocessing:
        return cls(dict(data or {}), scheme_named(scheme))


def _components(mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """Face-connected components of ``mask`` and their sizes (index 0: the background)."""
    components, n = ndimage.label(mask)
    return components, np.bincount(components.ravel(), minlength=n + 1)


def _below(rule: Rule) -> int | None:
    """The threshold of a ``"below:N"`` rule (``N`` a positive integer), else ``None``."""
    if not isinstance(rule, str) or not rule.startswith("below:"):
        return None
    digits = rule[len("below:") :]
    return int(digits) if digits.isdigit() and int(digits) > 0 else None


def _kept(sizes: npt.NDArray[np.int64], rule: Rule) -> npt.NDArray[np.bool_]:
    """Which components (by index; 0 is never kept) a rule keeps."""
    keep = np.zeros(sizes.size, dtype=bool)
    if sizes.size > 1:
        threshold = _below(rule)
        if threshold is not None:
            keep[1:] = int(sizes[1:].sum()) >= threshold
        elif rule == "largest":
            keep[1 + int(np.argmax(sizes[1:]))] = True
        else:
            keep[1:] = sizes[1:] >= int(rule)
    return keep


def apply_rule(
    labels: npt.NDArray[np.uint8], region: str, rule: Rule, scheme: SchemeLike | None = None
) -> npt.NDArray[np.uint8]:
    """Remove the components of ``region`` that ``rule`` does not keep; they take the class
    :func:`fallback` names. Returns a new array."""
    s = scheme_named(scheme)
    mask = np.isin(labels, s.region_classes(region))
    components, sizes = _components(mask)
    removed = mask & ~_kept(sizes, rule)[components]
    out = labels.copy()
    out[removed] = fallback(region, s)
    return out


def choose_postprocessing(
    cases: Iterable[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]],
    candidates: Sequence[Rule] = CANDIDATE_RULES,
    scheme: SchemeLike | None = None,
    *,
    spacings: Sequence[Sequence[float]] | None = None,
) -> tuple[Postprocessing, dict[str, float]]:
    """The rules that raise the mean score of the cases, chosen region by region in the
    scheme's decode order (WT, TC, ET): for each, the first of ``candidates`` with the highest
    mean, if it beats doing nothing by more than :data:`MIN_GAIN`.

    Args:
        cases: ``(predicted, true)`` label volumes of the validation cases.
        candidates: rules to try for each region.
        scheme: the labels' scheme (default BraTS glioma).
        spacings: each case's voxel size in mm: then the score is lesion-wise Dice (the 2023
            challenges' definition, the scheme's lesion task: what BraTS ranks by), where
            a false-positive speck costs a whole lesion; without, volume Dice.

    Returns:
        The chosen :class:`Postprocessing` and the mean score per region after it
        (``{"WT": ..., "TC": ..., "ET": ...}``; two empty masks score 1).
    """
    s = scheme_named(scheme)
    pairs = [(np.asarray(p), np.asarray(t)) for p, t in cases]
    if spacings is not None and len(spacings) != len(pairs):
        raise ValueError(f"{len(spacings)} spacings for {len(pairs)} cases")
    chosen: dict[str, Rule] = {}
    scores: dict[str, float] = {}
    for region, classes in _output_regions(s).items():
        tables = []
        for pred, truth in pairs:
            mask = np.isin(pred, classes)
            components, sizes = _components(mask)
            true = np.isin(truth, classes)
            hits = np.bincount(components[true], minlength=sizes.size)
            tables.append((components, sizes, hits, true))
        options: list[Rule | None] = [None, *candidates]
        if spacings is None:
            means = [float(np.mean([_dice_of(t, rule) for t in tables])) for rule in options]
        else:
            settings = region_settings(s.lesion_task, "brats2023", region)
            means = [
                float(
                    np.mean(
                        [
                            _lesion_dice_of(t, rule, sp, settings)
                            for t, sp in zip(tables, spacings, strict=True)
                        ]
                    )
                )
                for rule in options
            ]
        best = int(np.argmax(means))
        if best and means[best] > means[0] + MIN_GAIN:
            chosen[region] = candidates[best - 1]
            pairs = [(apply_rule(p, region, candidates[best - 1], s), t) for p, t in pairs]
            scores[region] = means[best]
        else:
            scores[region] = means[0]
    return Postprocessing(chosen, s), scores


Table = tuple[
    npt.NDArray[np.int32], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]
]
"""One case's region: predicted components, their sizes, their true voxels, the truth."""


def _lesion_dice_of(
    table: Table, rule: Rule | None, spacing: Sequence[float], settings: LesionSettings
) -> float:
    """Lesion-wise Dice of a region after ``rule``."""
    components, sizes, _, true = table
    keep = np.ones(sizes.size, dtype=bool) if rule is None else _kept(sizes, rule)
    keep[0] = False
    return lesion_scores(keep[components], true, spacing, settings).dice


def _dice_of(table: Table, rule: Rule | None) -> float:
    """Dice of a region after ``rule`` from its component sizes and true-voxel hits."""
    _, sizes, hits, true = table
    n_true = int(true.sum())
    keep = np.ones(sizes.size, dtype=bool) if rule is None else _kept(sizes, rule)
    keep[0] = False
    predicted = int(sizes[keep].sum())
    if predicted + n_true == 0:
        return 1.0
    return 2.0 * float(hits[keep].sum()) / (predicted + n_true)


def region_volumes_ml(
    labels: npt.NDArray[np.integer], spacing: Sequence[float], scheme: SchemeLike | None = None
) -> dict[str, float]:
    """Volume in ml of each of the scheme's regions (``{"WT": ml, "TC": ml, "ET": ml}`` for
    BraTS glioma) in a label volume with voxels of ``spacing`` mm."""
    s = scheme_named(scheme)
    voxel_ml = float(np.prod([float(x) for x in spacing])) / 1000.0
    return {
        region: float(np.isin(labels, s.region_classes(region)).sum()) * voxel_ml
        for region in s.regions
    }
