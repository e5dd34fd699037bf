"""The generated cohort's tumor: one glioma-like lesion grown among a case's brain voxels.

An ellipsoid deformed by smooth seeded noise, with a necrotic core (label 1), an enhancing
rim (ET) and a larger edema (label 2) that spreads along white matter; a tumor without
enhancement has an all-necrotic core. Everything is computed per brain voxel, ``(N,)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brats.devtools.template import F32, F64
from brats.volume.labels import ED, ET, NCR


@dataclass(frozen=True)
class Tumor:
    """Per brain voxel ``(N,)`` arrays: internal label, soft memberships and texture."""

    label: npt.NDArray[np.uint8]
    edema: F32
    core: F32
    necrosis: F32
    texture: F32


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
) -> Tumor:
    """Place and grow one tumor among the brain voxels (``world``, ``mni``: ``(N, 3)`` mm)."""
    coarse = float(spacing.max())
    # Radii in mm, floored at the voxel size so every class has voxels on a coarse grid.
    r_necrosis = max(rng.uniform(3.0, 12.0), 1.5 * coarse)
    r_core = r_necrosis + max(rng.uniform(2.5, 7.0), 1.5 * coarse)
    r_edema = max(r_core * rng.uniform(1.4, 2.3), r_core + 2.0 * coarse)
    aspect = np.exp(rng.normal(0.0, 0.15, 3))
    aspect /= np.prod(aspect) ** (1.0 / 3.0)
    axes = Rotation.random(random_state=rng).as_matrix()

    # Centre: a white-matter voxel above the tentorium, away from the midline and the edge of
    # the brain (MNI mm), so tumors look supratentorial like most adult gliomas. The centre is
    # a voxel centre, which keeps the necrotic core non-empty on any grid.
    wm = tissue[:, 2]
    good = (wm > 0.6) & (np.abs(mni[:, 0]) > 12) & (np.abs(mni[:, 0]) < 50)
    good &= (mni[:, 1] > -75) & (mni[:, 1] < 45) & (mni[:, 2] > -5) & (mni[:, 2] < 50)
    candidates = np.flatnonzero(good)
    if candidates.size == 0:
        candidates = np.flatnonzero(wm >= wm.max())
    centre = world[rng.choice(candidates)]

    lam = (0.8 * r_core, 2.5 * r_core)
    amp_necrosis, amp_core, amp_edema = 0.25, 0.2, 0.3
    # Noise is clipped to +-2.5 sd, which bounds how far a boundary can reach.
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
    return Tumor(label, out["edema"], out["core"], out["necrosis"], out["tex"])


def keep_connected_to_core(
    tumor: Tumor, points: tuple[npt.NDArray[np.intp], ...], shape: tuple[int, int, int]
) -> None:
    """Drop edema islands that CSF cut off from the core (in place): one connected tumor.

    Their edema membership goes too, so no unlabeled bright patch is left in the images.
    """
    label = np.zeros(shape, dtype=np.uint8)
    label[points] = tumor.label
    components, _ = ndimage.label(label > 0)
    keep = np.unique(components[np.isin(label, (NCR, ET))])
    dropped = ~np.isin(components[points], keep[keep > 0]) & (tumor.label > 0)
    tumor.label[dropped] = 0
    tumor.edema[dropped] = 0.0
