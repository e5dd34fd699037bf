"""The lesions of a mask, found as the BraTS lesion-wise code finds them (the steps are
numbered as in :mod:`brats.volume.lesions`, which scores them): truth lesions merged by
dilation (step 1), predicted lesions merged the same way and the small ones dropped (steps 6
and 7), and lesions regrouped across tissues (step 10); each lesion as a box of the mask and,
within it, its voxels and its dilated mask."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
from scipy import ndimage

_DILATION_ELEMENT: Final = ndimage.generate_binary_structure(3, 2)  # 18-connected
_COMPONENTS: Final = ndimage.generate_binary_structure(3, 3)  # 26-connected
_CELL: Final = 8
"""Smallest side of the cells :func:`truth_lesions` pools the truth into to find its lesions."""

Box = tuple[slice, slice, slice]
Mask = npt.NDArray[np.bool_]


class PartRules(Protocol):
    """How lesions are found: the fields of :class:`brats.volume.lesions.LesionSettings` that
    steps 1, 6 and 7 read."""

    @property
    def dilation(self) -> int: ...
    @property
    def merge_predictions(self) -> bool: ...
    @property
    def min_prediction_voxels(self) -> int: ...
    @property
    def min_prediction_mm3(self) -> float: ...


def _too_small(voxels: int, settings: PartRules, voxel_mm3: float) -> bool:
    """Whether step 7 removes a predicted lesion of ``voxels`` voxels."""
    if voxels <= settings.min_prediction_voxels:
        return True
    return settings.min_prediction_mm3 > 0 and voxels <= settings.min_prediction_mm3 / voxel_mm3


def _prediction_parts(p: Mask, settings: PartRules) -> Iterator[tuple[Box, Mask, Mask]]:
    """Each predicted lesion before step 7 as ``(box, voxels, dilated)``, as :func:`truth_lesions`
    gives truth lesions: merged by the dilation (step 6), or the plain 26-components."""
    if settings.merge_predictions:
        yield from truth_lesions(p, settings.dilation)
        return
    labels, _ = ndimage.label(p, structure=_COMPONENTS)
    for k, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is not None:
            component = labels[found] == k
            yield _box([(s.start, s.stop) for s in found]), component, component


def predicted_lesions(
    p: Mask, settings: PartRules, voxel_mm3: float
) -> tuple[npt.NDArray[np.int32], int]:
    """The predicted lesions of ``p`` (steps 2, 6 and 7) as labels ``1..n``, and ``n``."""
    dropping = settings.min_prediction_voxels > 0 or settings.min_prediction_mm3 > 0
    if not settings.merge_predictions and not dropping:
        labels, n = ndimage.label(p, structure=_COMPONENTS)
        return labels, int(n)
    labels = np.zeros(p.shape, dtype=np.int32)
    n = 0
    for where, voxels, _ in _prediction_parts(p, settings):
        if not _too_small(int(np.count_nonzero(voxels)), settings, voxel_mm3):
            n += 1
            labels[where][voxels] = n
    return labels, n


@dataclass(frozen=True)
class Part:
    """One lesion of one tissue before step 10: its box, its voxels and dilated mask within
    the box, and the position of the dilated mask's first voxel in raster order."""

    where: Box
    voxels: Mask
    reach: Mask
    first: tuple[int, ...]


def tissue_parts(mask: Mask, settings: PartRules, voxel_mm3: float | None) -> list[Part]:
    """The lesions of one tissue, numbered (listed) in raster order of their dilated masks:
    truth lesions (step 1), or with ``voxel_mm3`` predicted ones (steps 6 and 7)."""
    found = (
        truth_lesions(mask, settings.dilation)
        if voxel_mm3 is None
        else _prediction_parts(mask, settings)
    )
    parts: list[Part] = []
    for where, voxels, reach in found:
        if voxel_mm3 is not None and _too_small(int(np.count_nonzero(voxels)), settings, voxel_mm3):
            continue
        first = np.unravel_index(int(np.argmax(reach)), reach.shape)
        position = tuple(int(i) + s.start for i, s in zip(first, where, strict=True))
        parts.append(Part(where, voxels, reach, position))
    parts.sort(key=lambda part: part.first)
    return parts


def regroup(
    parts: Mapping[str, list[Part]], region: str, partners: Sequence[str]
) -> list[list[Part]]:
    """Step 10: the lesions of ``region`` regrouped through each of ``partners`` in turn."""
    own = parts[region]
    # A voxel of margin around each part: its box holds it (or ends where the frame does).
    near = [ndimage.binary_dilation(part.voxels, structure=_DILATION_ELEMENT) for part in own]
    groups: list[list[int]] = [[i] for i in range(len(own))]
    for partner in partners:
        others = parts[partner]
        if not own or not others:
            continue
        touched = [
            _touched(part.where, grown, others) for part, grown in zip(own, near, strict=True)
        ]
        joined: dict[int, list[int]] = {}
        regrouped: list[list[int]] = []
        for group in groups:
            numbers = set().union(*(touched[i] for i in group))
            if not numbers:
                regrouped.append(group)
                continue
            first = min(numbers)
            if first in joined:
                joined[first].extend(group)
            else:
                joined[first] = list(group)
                regrouped.append(joined[first])
        groups = regrouped
    return [[own[i] for i in group] for group in groups]


def _touched(where: Box, near: Mask, others: list[Part]) -> set[int]:
    """The numbers (1-based positions in ``others``) of the partner lesions that ``near``, a
    part's voxels grown by one 18-connected step within ``where``, reaches."""
    found: set[int] = set()
    for k, other in enumerate(others, start=1):
        common = _intersection(where, other.where)
        if common is not None and np.any(
            near[within(common, where)] & other.voxels[within(common, other.where)]
        ):
            found.add(k)
    return found


def _intersection(a: Box, b: Box) -> Box | None:
    """The box two boxes share, or ``None``."""
    bounds = [(max(s.start, t.start), min(s.stop, t.stop)) for s, t in zip(a, b, strict=True)]
    return _box(bounds) if all(lo < hi for lo, hi in bounds) else None


def merged(group: list[Part]) -> tuple[Box, Mask, Mask]:
    """One lesion made of ``group``'s parts, as ``(box, lesion, dilated)``."""
    if len(group) == 1:
        return group[0].where, group[0].voxels, group[0].reach
    around = union(*(part.where for part in group))
    lesion = np.zeros([s.stop - s.start for s in around], dtype=bool)
    reach = np.zeros_like(lesion)
    for part in group:
        inner = within(part.where, around)
        lesion[inner] |= part.voxels
        reach[inner] |= part.reach
    return around, lesion, reach


def truth_lesions(
    truth: npt.NDArray[np.bool_], iterations: int
) -> Iterator[tuple[Box, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]]:
    """Each truth lesion as ``(box, lesion, dilated)``: a box of ``truth``, and within it the
    lesion's truth voxels and its dilated mask (step 1 of the module docstring).

    Exact, at the cost of the lesions rather than of the box around all of them: ``truth`` is
    pooled into cells more than ``2 * iterations`` voxels wide, so that truth voxels in two
    cells that do not touch are too far apart for their dilations to meet. Each connected
    group of occupied cells is then dilated and split into components on its own, within its
    box grown by ``iterations + 1``.
    """
    cell = max(_CELL, 2 * iterations + 1)
    shape = truth.shape
    padded = np.pad(truth, [(0, -n % cell) for n in shape])
    d, h, w = (n // cell for n in padded.shape)
    occupied = padded.reshape(d, cell, h, cell, w, cell).any(axis=(1, 3, 5))
    groups, _ = ndimage.label(occupied, structure=_COMPONENTS)
    for group, found in enumerate(ndimage.find_objects(groups), start=1):
        if found is None:
            continue
        span = _box(
            [(s.start * cell, min(s.stop * cell, n)) for s, n in zip(found, shape, strict=True)]
        )
        where = _box(
            [(max(s.start - iterations - 1, 0), min(s.stop + iterations + 1, n))
             for s, n in zip(span, shape, strict=True)]
        )  # fmt: skip
        mine = (groups[found] == group).repeat(cell, 0).repeat(cell, 1).repeat(cell, 2)
        own = np.zeros([s.stop - s.start for s in where], dtype=bool)
        own[within(span, where)] = truth[span] & mine[_box([(0, s.stop - s.start) for s in span])]
        dilated = own
        if iterations:
            dilated = ndimage.binary_dilation(
                own, structure=_DILATION_ELEMENT, iterations=iterations
            )
        components, n = ndimage.label(dilated, structure=_COMPONENTS)
        for k in range(1, n + 1):
            component = components == k
            yield where, own & component, component


def _box(bounds: list[tuple[int, int]]) -> Box:
    return slice(*bounds[0]), slice(*bounds[1]), slice(*bounds[2])


def within(inner: Box, outer: Box) -> Box:
    """``inner`` in the coordinates of the box ``outer``, which holds it."""
    return _box([(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True)])


def union(*boxes: tuple[slice, ...] | None) -> tuple[slice, slice, slice]:
    """The smallest box holding every one of ``boxes`` (slices as ``find_objects`` gives)."""
    present = [b for b in boxes if b is not None]
    lo = [min(b[axis].start for b in present) for axis in range(3)]
    hi = [max(b[axis].stop for b in present) for axis in range(3)]
    return slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2])
