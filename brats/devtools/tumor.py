"""The generated cohort's tumor: lesions grown among a case's brain voxels.

A glioma-like lesion (a *focus*) is an ellipsoid deformed by smooth seeded noise, with a
necrotic core (label 1), an enhancing rim (ET) and a larger edema (label 2) that spreads along
white matter; a tumor without enhancement has an all-necrotic core. How big a focus grows is a
:class:`TumorSize`. A multifocal tumor is two foci grown apart (:func:`grow_tumor` with
``away_from``) and merged with :func:`merge_tumors`. What treatment makes of a tumor (a
resection cavity, :data:`CAVITY`), a paediatric tumor's cyst (:data:`CYST`) and the
meningioma (:data:`MENINGIOMA`) are :mod:`brats.devtools.treatment`'s.

The labels here are the tumor model's *tissues*: 1-3 are the BraTS 2020/2023 internal classes
and 4-6 the tissues later schemes add; :mod:`brats.devtools.synth` maps them to a label
scheme's classes. Everything is computed per brain voxel, ``(N,)``. Which cases of a cohort
get which kind of tumor (no enhancement, multifocal, small, resected, cystic) is
:func:`has_kind`'s exact share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brats.devtools.template import F32, F64
from brats.volume.labels import ED, ET, NCR

# The tissues beyond the 2020/2023 glioma classes (NCR 1, ED 2, ET 3).
CAVITY: Final = 4
"""A resection cavity: fluid where a tumor core was removed."""
CYST: Final = 5
"""A cyst inside a tumor core: fluid-filled, non-enhancing."""
MENINGIOMA: Final = 6
"""An extra-axial, enhancing meningioma."""


@dataclass(frozen=True)
class TumorSize:
    """Ranges (mm) a focus's radii are drawn from, before the voxel-size floors.

    Attributes:
        necrosis_mm: radius of the necrotic core.
        rim_mm: thickness of the tumor core around the necrosis (the enhancing rim).
        edema_ratio: edema radius as a multiple of the core radius.
    """

    necrosis_mm: tuple[float, float]
    rim_mm: tuple[float, float]
    edema_ratio: tuple[float, float]


TYPICAL: Final = TumorSize(necrosis_mm=(3.0, 12.0), rim_mm=(2.5, 7.0), edema_ratio=(1.4, 2.3))
SMALL: Final = TumorSize(necrosis_mm=(2.0, 5.0), rim_mm=(1.5, 3.5), edema_ratio=(1.4, 2.0))
# The second lesion of a multifocal tumor: smaller than a typical one.
SATELLITE: Final = TumorSize(necrosis_mm=(2.0, 7.0), rim_mm=(2.0, 5.0), edema_ratio=(1.4, 2.1))
# A brain metastasis: a small ring-enhancing lesion with much edema for its size.
METASTASIS: Final = TumorSize(necrosis_mm=(1.5, 6.0), rim_mm=(1.5, 4.0), edema_ratio=(1.8, 3.0))


# Entropy words after the seed for the kinds' phases: a three-word key, which no case's
# ``SeedSequence([seed, index])`` can equal.
_KIND_KEY: Final = (0x6B696E64, 0)


def kind_phases(seed: int, n: int = 3) -> tuple[float, ...]:
    """Where in ``[0, 1)`` the cohort ``seed`` starts the patterns of its ``n`` kinds (no
    enhancement, multifocal, small, then resected, resected without residual tumor and
    cystic): seeded and independent, so the kinds do not line up. The first three are the
    same whatever ``n``."""
    phases = np.random.default_rng([seed, *_KIND_KEY]).random(n)
    return tuple(float(p) for p in phases)


def kind_ordinal(index: int, share: float, phase: float) -> int:
    """How many cases of the kind (:func:`has_kind` with ``share`` and ``phase``) come before
    case ``index``, counted from index 0: consecutive cases of the kind have consecutive
    ordinals, so a kind *within* a kind (``has_kind(ordinal, ...)``) has its exact share
    of them too."""
    return int(np.floor(index * share + phase))


def has_kind(index: int, share: float, phase: float) -> bool:
    """Whether case ``index`` is of a kind with this ``share`` of a cohort: a low-discrepancy
    assignment, so any ``n`` consecutive indices hold ``floor(n * share)`` or
    ``ceil(n * share)`` such cases (share 0: none; share 1: all). ``phase`` in ``[0, 1)``
    shifts which indices they are."""
    return int(np.floor((index + 1) * share + phase)) > int(np.floor(index * share + phase))


@dataclass(frozen=True)
class Focus:
    """Where one lesion sits: its centre (world mm, ``(3,)``, and which brain voxel that is),
    its edema radius and the farthest any of its tumor-core voxels can be from the centre
    (mm)."""

    centre: F64
    centre_index: int
    r_edema: float
    core_reach: float


@dataclass(frozen=True)
class Tumor:
    """Per brain voxel ``(N,)`` arrays: internal label, soft memberships and texture, and the
    foci the tumor was grown from."""

    label: npt.NDArray[np.uint8]
    edema: F32
    core: F32
    necrosis: F32
    texture: F32
    foci: tuple[Focus, ...] = ()
    fluid: F32 | None = None
    """Membership of fluid, rendered over everything else; ``None``: no fluid."""
    fluid_tissue: int = CAVITY
    """Which fluid it is: :data:`CAVITY` or :data:`CYST` (they look alike, not the same)."""


def smooth_noise(
    rng: np.random.Generator, xyz: F64, wavelength: tuple[float, float], waves: int = 6
) -> F32:
    """Smooth random field with unit variance at points ``xyz`` ``(M, 3)`` mm -> ``(M,)``.

    A sum of plane waves with random directions, wavelengths and phases: smooth, seeded and
    evaluated only where needed, at any grid resolution.
    """
    directions = rng.normal(size=(waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    k = directions * (2.0 * np.pi / rng.uniform(*wavelength, size=(waves, 1)))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=waves)
    field = np.cos(xyz @ k.T + phase).sum(axis=1) * np.sqrt(2.0 / waves)
    return field.astype(np.float32)


def grow_tumor(
    rng: np.random.Generator,
    world: F64,
    mni: F64,
    tissue: F32,
    spacing: F64,
    enhancing: bool,
    *,
    size: TumorSize = TYPICAL,
    away_from: Sequence[Focus] = (),
) -> Tumor:
    """Place and grow one focus among the brain voxels (``world``, ``mni``: ``(N, 3)`` mm).

    ``away_from`` are foci already grown: the new centre is farther from each than its edema
    radius, and far enough that the two tumor cores cannot touch (when the brain has no such
    white-matter voxel, the one farthest from them).
    """
    coarse = float(spacing.max())
    # Radii in mm, floored at the voxel size so every class has voxels on a coarse grid.
    r_necrosis = max(rng.uniform(*size.necrosis_mm), 1.5 * coarse)
    r_core = r_necrosis + max(rng.uniform(*size.rim_mm), 1.5 * coarse)
    r_edema = max(r_core * rng.uniform(*size.edema_ratio), r_core + 2.0 * coarse)
    aspect = np.exp(rng.normal(0.0, 0.15, 3))
    aspect /= np.prod(aspect) ** (1.0 / 3.0)
    axes = Rotation.random(random_state=rng).as_matrix()
    amp_necrosis, amp_core, amp_edema = 0.25, 0.2, 0.3
    # Noise is clipped to +-2.5 sd, which bounds how far a boundary can reach.
    core_reach = r_core * float(aspect.max()) * float(np.exp(2.5 * amp_core))

    # Centre: a white-matter voxel above the tentorium, away from the midline and the edge of
    # the brain (MNI mm), so tumors look supratentorial like most adult gliomas. The centre is
    # a voxel centre, which keeps the necrotic core non-empty on any grid.
    wm = tissue[:, 2]
    good = (wm > 0.6) & (np.abs(mni[:, 0]) > 12) & (np.abs(mni[:, 0]) < 50)
    good &= (mni[:, 1] > -75) & (mni[:, 1] < 45) & (mni[:, 2] > -5) & (mni[:, 2] < 50)
    candidates = np.flatnonzero(good)
    if candidates.size == 0:
        candidates = np.flatnonzero(wm >= wm.max())
    if away_from:
        candidates = _apart(candidates, world, away_from, core_reach + 2.0 * coarse)
    centre_index = int(rng.choice(candidates))
    centre = world[centre_index]

    lam = (0.8 * r_core, 2.5 * r_core)
    reach = r_edema * aspect.max() * np.exp(2.5 * amp_edema + 0.25)
    near = np.flatnonzero(np.sum((world - centre) ** 2, axis=1) < reach**2)
    xyz = world[near] - centre
    fields = [np.clip(smooth_noise(rng, xyz, lam), -2.5, 2.5) for _ in range(4)]
    radius = np.linalg.norm((xyz @ axes) / aspect, axis=1).astype(np.float32)

    def membership(
        r0: float, amp: float, field: F32, softness: float, bias: F32 | float = 0.0
    ) -> F32:
        # Deformed radius: the boundary sits at r0 * exp(amp * noise + bias).
        rho = radius * np.exp(-amp * field - bias)
        # Clipped: far from the boundary the logistic is 0 or 1 either way, and exp overflows.
        z = np.clip((rho - r0) / softness, -60.0, 60.0)
        return (1.0 / (1.0 + np.exp(z))).astype(np.float32)

    sharp = 0.3 * float(spacing.min())
    necrosis = membership(r_necrosis, amp_necrosis, fields[0], sharp)
    core = membership(r_core, amp_core, fields[1], sharp)
    # Edema spreads along white matter and fades out gradually.
    edema = membership(r_edema, amp_edema, fields[2], 0.1 * r_edema, 0.4 * (wm[near] - 0.5))
    parenchyma = tissue[near, 1] + tissue[near, 2]

    in_core = core > 0.5
    in_necrosis = (necrosis > 0.5) & in_core
    in_tumor = in_core | ((edema > 0.5) & (parenchyma > 0.5))
    local = np.zeros(near.size, dtype=np.uint8)
    local[in_tumor] = ED
    local[in_core] = ET if enhancing else NCR
    local[in_necrosis] = NCR

    n = world.shape[0]
    out = {name: np.zeros(n, dtype=np.float32) for name in ("edema", "core", "necrosis", "tex")}
    out["edema"][near] = np.maximum(edema * parenchyma, core)
    out["core"][near] = core
    out["necrosis"][near] = np.minimum(necrosis, core)
    out["tex"][near] = fields[3]
    label = np.zeros(n, dtype=np.uint8)
    label[near] = local
    focus = Focus(np.array(centre, dtype=np.float64), centre_index, float(r_edema), core_reach)
    return Tumor(label, out["edema"], out["core"], out["necrosis"], out["tex"], (focus,))


def _apart(
    candidates: npt.NDArray[np.intp], world: F64, foci: Sequence[Focus], reach: float
) -> npt.NDArray[np.intp]:
    """The candidates far enough from every focus: beyond its edema radius, and beyond its
    core reach plus ``reach`` (the new core's reach and a margin), so the cores stay apart;
    if none is, the one with the most room."""
    room = np.full(candidates.size, np.inf)
    for focus in foci:
        distance = np.linalg.norm(world[candidates] - focus.centre, axis=1)
        room = np.minimum(room, distance - max(focus.r_edema, focus.core_reach + reach))
    far = candidates[room > 0]
    return far if far.size else candidates[[int(np.argmax(room))]]


# Which label wins where two foci overlap: necrosis, then enhancing, then edema (as inside one).
_PRECEDENCE: Final = np.zeros(256, dtype=np.uint8)
_PRECEDENCE[[ED, ET, NCR]] = (1, 2, 3)


def merge_tumors(first: Tumor, second: Tumor) -> Tumor:
    """One tumor of two grown among the same voxels: memberships are the larger of the two,
    labels their union with NCR over ET over edema, texture the more tumorous focus's."""
    rank = _PRECEDENCE[first.label] >= _PRECEDENCE[second.label]
    return Tumor(
        np.where(rank, first.label, second.label),
        np.maximum(first.edema, second.edema),
        np.maximum(first.core, second.core),
        np.maximum(first.necrosis, second.necrosis),
        np.where(second.edema > first.edema, second.texture, first.texture),
        first.foci + second.foci,
    )


def keep_one_core_per_focus(
    tumor: Tumor, points: tuple[npt.NDArray[np.intp], ...], shape: tuple[int, int, int]
) -> None:
    """Turn tumor-core islands into edema (in place): each focus's core is one connected
    component, the one around its centre, so a case has as many core lesions as foci.

    The deformed boundary can pinch off a blob of core (or, on a coarse grid, a voxel that
    touches the core only diagonally). Such an island becomes edema, and its soft core and
    necrosis memberships go (with the fringe around it), so it looks like the edema it is
    labeled: bright on T2 and FLAIR, not enhancing.
    """
    inside, local, box = tumor_box(tumor, points, shape)
    grid = np.zeros(box, dtype=bool)
    grid[local] = np.isin(tumor.label[inside], (NCR, ET))
    components, _ = ndimage.label(grid)
    component = np.zeros(tumor.label.size, dtype=np.int32)
    component[inside] = components[local]
    kept = [int(component[f.centre_index]) for f in tumor.foci]
    in_kept = np.isin(component, kept) & (component > 0)
    island = (component > 0) & ~in_kept
    if not island.any():
        return
    tumor.label[island] = ED
    grid[:] = False
    grid[local] = island[inside]
    fringe = inside[ndimage.binary_dilation(grid)[local] & ~in_kept[inside]]
    tumor.core[fringe] = 0.0
    tumor.necrosis[fringe] = 0.0


def keep_connected_to_core(
    tumor: Tumor, points: tuple[npt.NDArray[np.intp], ...], shape: tuple[int, int, int]
) -> None:
    """Drop edema islands that CSF cut off from the cores (in place): every tumor voxel stays
    connected to a tumor core (any focus's), so each focus is one connected lesion.

    Their edema membership goes too, so no unlabeled bright patch is left in the images.
    """
    inside, local, box = tumor_box(tumor, points, shape)
    label = np.zeros(box, dtype=np.uint8)
    label[local] = tumor.label[inside]
    components, _ = ndimage.label(label > 0)
    keep = np.unique(components[np.isin(label, (NCR, ET))])
    dropped = inside[~np.isin(components[local], keep[keep > 0]) & (tumor.label[inside] > 0)]
    tumor.label[dropped] = 0
    tumor.edema[dropped] = 0.0


def tumor_box(
    tumor: Tumor, points: tuple[npt.NDArray[np.intp], ...], shape: tuple[int, int, int]
) -> tuple[npt.NDArray[np.intp], tuple[npt.NDArray[np.intp], ...], tuple[int, ...]]:
    """The tumor's bounding box grown by a voxel (clipped to the grid): which brain voxels lie
    in it (indices into ``points``), their coordinates in the box, and its shape. Labeling
    components there is exact (nothing outside is tumor) and much cheaper than the grid."""
    tumor_voxels = np.flatnonzero(tumor.label)
    if tumor_voxels.size == 0:
        return tumor_voxels, tuple(p[:0] for p in points), (1, 1, 1)
    lo = [max(int(p[tumor_voxels].min()) - 1, 0) for p in points]
    hi = [min(int(p[tumor_voxels].max()) + 2, n) for p, n in zip(points, shape, strict=True)]
    within = np.ones(points[0].size, dtype=bool)
    for p, a, b in zip(points, lo, hi, strict=True):
        within &= (p >= a) & (p < b)
    inside = np.flatnonzero(within)
    local = tuple(p[inside] - a for p, a in zip(points, lo, strict=True))
    return inside, local, tuple(b - a for a, b in zip(lo, hi, strict=True))


# --------------------------------------------------------------------------------------------
