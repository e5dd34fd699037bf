"""The generated cohort's tumor: lesions grown among a case's brain voxels.

A glioma-like lesion (a *focus*) is an ellipsoid deformed by smooth seeded noise, with a
necrotic core (label 1), an enhancing rim (ET) and a larger edema (label 2) that spreads along
white matter; a tumor without enhancement has an all-necrotic core. How big a focus grows is a
:class:`TumorSize`. A multifocal tumor is two foci grown apart (:func:`grow_tumor` with
``away_from``) and merged with :func:`merge_tumors`. After treatment its cores can be
resected (:func:`resect`: a fluid-filled cavity, label :data:`CAVITY`, with or without a rim
of residual tumor); a paediatric tumor can hold a cyst (:func:`add_cyst`, :data:`CYST`); a
meningioma (:func:`grow_meningioma`, :data:`MENINGIOMA`) is a different lesion altogether, an
enhancing mass against the brain's surface.

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


def _smooth_noise(
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
    fields = [np.clip(_smooth_noise(rng, xyz, lam), -2.5, 2.5) for _ in range(4)]
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
    inside, local, box = _tumor_box(tumor, points, shape)
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
    inside, local, box = _tumor_box(tumor, points, shape)
    label = np.zeros(box, dtype=np.uint8)
    label[local] = tumor.label[inside]
    components, _ = ndimage.label(label > 0)
    keep = np.unique(components[np.isin(label, (NCR, ET))])
    dropped = inside[~np.isin(components[local], keep[keep > 0]) & (tumor.label[inside] > 0)]
    tumor.label[dropped] = 0
    tumor.edema[dropped] = 0.0


def _tumor_box(
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
# After treatment, cysts, meningiomas


def resect(
    rng: np.random.Generator,
    tumor: Tumor,
    points: tuple[npt.NDArray[np.intp], ...],
    shape: tuple[int, int, int],
    spacing: F64,
    *,
    residual: bool,
) -> Tumor:
    """The tumor after surgery: each tumor core becomes a resection cavity (:data:`CAVITY`),
    fluid where the core was, inside the edema (which stays, as the non-enhancing FLAIR
    hyperintensity around a cavity does).

    With ``residual`` a rim of the core survives around the cavity: the core's outer
    ``1.5..3.5`` mm (at least a voxel), keeping its labels (enhancing rim, non-enhancing core).
    Without it the whole core is gone: the case is cavity and edema alone (no tumor core, no
    enhancement), and nothing renders as tumor core any more. Run it after
    :func:`keep_one_core_per_focus` and :func:`keep_connected_to_core`, which find lesions by
    their cores.
    """
    inside, local, box = _tumor_box(tumor, points, shape)
    core = np.isin(tumor.label, (NCR, ET))
    depth = _depth(core, inside, local, box, spacing)
    wall = max(float(rng.uniform(1.5, 3.5)), float(spacing.max())) if residual else 0.0
    cavity = depth > wall
    if not cavity.any() and depth.max() > 0.0:  # a core too thin for a rim: its middle
        cavity = depth >= depth.max()
    fluid = cavity.astype(np.float32)
    label = tumor.label.copy()
    label[cavity] = CAVITY
    necrosis = np.where(cavity, np.float32(0.0), tumor.necrosis)
    core_membership = tumor.core if residual else np.zeros_like(tumor.core)
    if not residual:
        necrosis = np.zeros_like(tumor.necrosis)
    return Tumor(
        label, tumor.edema, core_membership, necrosis, tumor.texture, tumor.foci, fluid, CAVITY
    )


def add_cyst(
    rng: np.random.Generator,
    tumor: Tumor,
    points: tuple[npt.NDArray[np.intp], ...],
    shape: tuple[int, int, int],
    world: F64,
    spacing: F64,
) -> Tumor:
    """A cyst (:data:`CYST`) in the first focus: a ball of fluid about as wide as the focus's
    core or wider (a paediatric tumour's cyst is often larger than its solid part), kept a
    wall's width (at least a voxel) inside the tumor. Edema in that wall becomes necrotic,
    non-enhancing core, so the cyst is enclosed by tumor core. Run it after
    :func:`keep_one_core_per_focus` and :func:`keep_connected_to_core`."""
    inside, local, box = _tumor_box(tumor, points, shape)
    in_tumor = tumor.label > 0
    depth = _depth(in_tumor, inside, local, box, spacing)
    wall = max(float(rng.uniform(1.0, 2.5)), float(spacing.max()))
    main = tumor.foci[0] if tumor.foci else None
    core = np.isin(tumor.label, (NCR, ET))
    centre = main.centre if main is not None else world[core | in_tumor].mean(axis=0)
    reach = main.core_reach if main is not None else float(depth.max())
    radius = float(rng.uniform(0.9, 1.4)) * max(reach, float(spacing.max()))
    distance2 = np.sum((world - centre) ** 2, axis=1)
    cyst = (distance2 <= radius**2) & (depth > wall)
    if not cyst.any():  # a tumor too thin for a walled cyst: its deepest voxel
        cyst = depth >= depth.max()
    enclosing = ndimage.distance_transform_edt(
        ~_grid(cyst, inside, local, box), sampling=tuple(spacing)
    )
    ring = np.zeros(cyst.size, dtype=bool)
    ring[inside] = enclosing[local] <= wall
    ring &= in_tumor & ~cyst & (tumor.label == ED)
    necrosis = tumor.necrosis.copy()
    necrosis[ring] = 1.0
    fluid = np.zeros(depth.size, dtype=np.float32)
    fluid[cyst] = 1.0
    label = tumor.label.copy()
    label[ring] = NCR
    label[cyst] = CYST
    return Tumor(label, tumor.edema, tumor.core, necrosis, tumor.texture, tumor.foci, fluid, CYST)


def _grid(
    mask: npt.NDArray[np.bool_],
    inside: npt.NDArray[np.intp],
    local: tuple[npt.NDArray[np.intp], ...],
    box: tuple[int, ...],
) -> npt.NDArray[np.bool_]:
    """A per-brain-voxel ``mask`` on the tumor's box grid (``_tumor_box``)."""
    grid = np.zeros(box, dtype=bool)
    grid[local] = mask[inside]
    return grid


def grow_meningioma(
    rng: np.random.Generator,
    world: F64,
    mni: F64,
    depth: F32,
    spacing: F64,
    *,
    small: bool = False,
) -> Tumor:
    """A meningioma (:data:`MENINGIOMA`): a round, slightly lobulated enhancing mass based on
    the dura, so it sits against the brain's surface and pushes into it.

    ``depth`` is each brain voxel's distance (mm) to the outside of the brain. The mass is a
    deformed ball whose centre lies just outside the surface, above a seeded surface voxel
    over the convexity; its part inside the brain (the skull-stripped image holds nothing
    else) is the lesion, one connected piece. Radius ``8..22`` mm (``small``: ``4..9``),
    floored at two voxels.
    """
    coarse = float(spacing.max())
    radius = max(float(rng.uniform(*((4.0, 9.0) if small else (8.0, 22.0)))), 2.0 * coarse)
    surface = depth <= 1.5 * coarse
    candidates = np.flatnonzero(surface & (mni[:, 2] > 5.0) & (mni[:, 2] < 70.0))
    if candidates.size == 0:
        candidates = np.flatnonzero(surface) if surface.any() else np.arange(depth.size)
    anchor = int(rng.choice(candidates))
    outward = world[anchor] - world.mean(axis=0)
    outward /= max(float(np.linalg.norm(outward)), 1e-6)
    centre = world[anchor] + outward * radius * float(rng.uniform(0.2, 0.5))
    aspect = np.exp(rng.normal(0.0, 0.1, 3))
    aspect /= np.prod(aspect) ** (1.0 / 3.0)
    axes = Rotation.random(random_state=rng).as_matrix()
    amp = 0.12
    reach = radius * float(aspect.max()) * float(np.exp(2.5 * amp)) + coarse
    near = np.flatnonzero(np.sum((world - centre) ** 2, axis=1) < reach**2)
    xyz = world[near] - centre
    field = np.clip(_smooth_noise(rng, xyz, (0.8 * radius, 2.5 * radius)), -2.5, 2.5)
    rho = np.linalg.norm((xyz @ axes) / aspect, axis=1) * np.exp(-amp * field)
    z = np.clip((rho - radius) / (0.3 * float(spacing.min())), -60.0, 60.0)
    membership = (1.0 / (1.0 + np.exp(z))).astype(np.float32)

    n = world.shape[0]
    label = np.zeros(n, dtype=np.uint8)
    label[near[membership > 0.5]] = MENINGIOMA
    label[anchor] = MENINGIOMA  # the anchor lies inside the ball; on any grid it is tumor
    mass = np.zeros(n, dtype=np.float32)
    mass[near] = membership
    mass[anchor] = max(float(mass[anchor]), 1.0)
    texture = np.zeros(n, dtype=np.float32)
    texture[near] = 0.5 * field  # enhances homogeneously
    focus = Focus(np.asarray(centre, dtype=np.float64), anchor, radius, reach)
    none = np.zeros(n, dtype=np.float32)
    return Tumor(label, none, mass, none.copy(), texture, (focus,))


def keep_connected_to_anchor(
    tumor: Tumor, points: tuple[npt.NDArray[np.intp], ...], shape: tuple[int, int, int]
) -> None:
    """Keep only the lesion voxels connected to the first focus's centre voxel (in place):
    where the brain's surface folds, a ball against it can cut into it twice."""
    inside, local, box = _tumor_box(tumor, points, shape)
    grid = np.zeros(box, dtype=bool)
    grid[local] = tumor.label[inside] > 0
    components, _ = ndimage.label(grid)
    component = np.zeros(tumor.label.size, dtype=np.int32)
    component[inside] = components[local]
    keep = int(component[tumor.foci[0].centre_index])
    dropped = (tumor.label > 0) & (component != keep)
    tumor.label[dropped] = 0
    tumor.core[dropped] = 0.0


def brain_depth(brain: npt.NDArray[np.bool_], spacing: tuple[float, float, float]) -> F32:
    """Distance (mm) of every brain voxel of the ``(D, H, W)`` mask to the outside of the
    brain, ``(N,)`` in the order of ``np.nonzero(brain)``."""
    return ndimage.distance_transform_edt(brain, sampling=spacing)[brain].astype(np.float32)


def _depth(
    mask: npt.NDArray[np.bool_],
    inside: npt.NDArray[np.intp],
    local: tuple[npt.NDArray[np.intp], ...],
    box: tuple[int, ...],
    spacing: F64,
) -> F32:
    """Per brain voxel, the distance (mm) of a ``mask`` voxel to the nearest voxel outside the
    mask (0 outside it), computed in the tumor's box (``_tumor_box``), which holds the mask."""
    grid = _grid(mask, inside, local, box)
    depth = np.zeros(mask.size, dtype=np.float32)
    if grid.any():
        depth[inside] = ndimage.distance_transform_edt(grid, sampling=tuple(spacing))[local]
    return depth
