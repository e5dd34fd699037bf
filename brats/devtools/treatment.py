"""The generated cohort's lesions beyond the glioma of :mod:`brats.devtools.tumor`: a tumor
after treatment (:func:`resect`: its cores become a fluid-filled cavity, label
:data:`~brats.devtools.tumor.CAVITY`, with or without a rim of residual tumor), a paediatric
tumor's cyst (:func:`add_cyst`, :data:`~brats.devtools.tumor.CYST`), and a meningioma
(:func:`grow_meningioma`, :data:`~brats.devtools.tumor.MENINGIOMA`), a different lesion
altogether: an enhancing mass against the brain's surface. Computed per brain voxel, ``(N,)``,
as the tumor model is.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brats.devtools.template import F32, F64
from brats.devtools.tumor import CAVITY, CYST, MENINGIOMA, Focus, Tumor, smooth_noise, tumor_box
from brats.volume.labels import ED, ET, NCR


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
    :func:`keep_one_core_per_focus` and :func:`keep_connected_to_core` (both
    :mod:`brats.devtools.tumor`'s), which find lesions by their cores.
    """
    inside, local, box = tumor_box(tumor, points, shape)
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
    :func:`keep_one_core_per_focus` and :func:`keep_connected_to_core` (both
    :mod:`brats.devtools.tumor`'s)."""
    inside, local, box = tumor_box(tumor, points, shape)
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
    """A per-brain-voxel ``mask`` on the tumor's box grid (``tumor_box``)."""
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
    field = np.clip(smooth_noise(rng, xyz, (0.8 * radius, 2.5 * radius)), -2.5, 2.5)
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
    inside, local, box = tumor_box(tumor, points, shape)
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
    mask (0 outside it), computed in the tumor's box (``tumor_box``), which holds the mask."""
    grid = _grid(mask, inside, local, box)
    depth = np.zeros(mask.size, dtype=np.float32)
    if grid.any():
        depth[inside] = ndimage.distance_transform_edt(grid, sampling=tuple(spacing))[local]
    return depth
