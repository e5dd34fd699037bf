"""How an acquisition site renders a generated case's anatomy: tissue contrasts, gamma, slice
thickness, bias field, intensity scale and Rician noise (never the labels).

:data:`SITES` holds the named profiles; :func:`render` turns a case's tissue maps and tumor
into one intensity per brain voxel and modality. Every site makes the same random draws, so
the same case renders the same anatomy at every site.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from brats.devtools.template import F32, F64
from brats.devtools.tumor import CAVITY, CYST, Tumor
from brats.io.cases import MODALITIES

# Mean intensity per tissue class, in BraTS-like scanner units. Columns: CSF, GM, WM, edema,
# enhancing tumor, necrosis, non-enhancing tumor core.
CONTRAST: Final[dict[str, tuple[float, ...]]] = {
    "flair": (120.0, 540.0, 400.0, 900.0, 720.0, 420.0, 820.0),
    "t1": (210.0, 470.0, 650.0, 390.0, 470.0, 220.0, 380.0),
    "t1ce": (230.0, 500.0, 670.0, 410.0, 1300.0, 200.0, 420.0),
    "t2": (1550.0, 820.0, 560.0, 1180.0, 900.0, 1400.0, 1050.0),
}
# Fluid tissues, rendered over the rest: a resection cavity is CSF-like (dark on T1 and T1ce,
# bright on T2, dark on FLAIR though less suppressed than CSF); a tumor cyst holds
# proteinaceous fluid (a little brighter than CSF on T1 and FLAIR, brighter still on T2).
# Neither enhances. A meningioma renders as an enhancing core (the ET column). A site scales
# a fluid as it scales CSF.
FLUID: Final[dict[int, dict[str, float]]] = {
    CAVITY: {"flair": 170.0, "t1": 240.0, "t1ce": 250.0, "t2": 1500.0},
    CYST: {"flair": 330.0, "t1": 290.0, "t1ce": 300.0, "t2": 1650.0},
}


@dataclass(frozen=True)
class SiteProfile:
    """How one acquisition site's scanner renders the anatomy (never the labels).

    Attributes:
        description: a line on what the site stands for.
        noise: Rician noise sigma as a fraction of each modality's white-matter intensity.
        bias: standard deviation of the log bias field across the brain.
        intensity_jitter: per-case, per-modality intensity scale in ``1 +- intensity_jitter``.
        contrast: modality -> a factor per ``CONTRAST`` column (CSF, GM, WM, edema,
            enhancing, necrosis, non-enhancing core) that the site's tissue intensities are
            scaled by; a modality not listed keeps the reference contrast.
        gamma: modality -> ``g``: intensity becomes ``ref * (x / ref) ** g`` with ``ref`` the
            modality's brightest ``CONTRAST`` value; not listed: ``g = 1``.
        slice_thickness_mm: acquired slice thickness along axis 2 (``None``: as thin as the
            grid). Each slice then averages the signal over that thickness: a Gaussian blur
            along axis 2 with the variance a box of that thickness adds beyond the grid's own
            spacing, so it does nothing on a grid whose slices are already that thick.
    """

    description: str
    noise: float
    bias: float
    intensity_jitter: float
    contrast: Mapping[str, tuple[float, ...]] = field(default_factory=dict, hash=False)
    gamma: Mapping[str, float] = field(default_factory=dict, hash=False)
    slice_thickness_mm: float | None = None


# Acquisition sites. Columns of the contrast factors as in CONTRAST: CSF, GM, WM, edema,
# enhancing, necrosis, non-enhancing core. Each keeps the tissue order that identifies its
# modality (T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR: CSF dark, lesions bright).
SITES: Final[Mapping[str, SiteProfile]] = MappingProxyType(
    {
        "a": SiteProfile(
            description="the reference look: thin slices, mild noise and bias",
            noise=0.03,
            bias=0.1,
            intensity_jitter=0.1,
        ),
        "b": SiteProfile(
            description="another hospital: other contrasts and gamma, 5 mm slices, "
            "a stronger bias field and twice the noise",
            noise=0.06,
            bias=0.25,
            intensity_jitter=0.1,
            contrast=MappingProxyType(
                {
                    "flair": (1.25, 0.85, 1.0, 0.85, 1.15, 1.2, 0.9),
                    "t1": (1.2, 1.1, 0.95, 1.15, 1.2, 1.25, 0.85),
                    "t1ce": (1.2, 1.1, 0.95, 1.15, 0.8, 1.25, 0.85),
                    "t2": (0.85, 1.15, 1.2, 1.0, 1.15, 0.8, 0.85),
                }
            ),
            gamma=MappingProxyType({"flair": 1.2, "t1": 0.85, "t1ce": 0.9, "t2": 1.15}),
            slice_thickness_mm=5.0,
        ),
        "c": SiteProfile(
            description="a third scanner: little noise, but a strong gamma and contrasts "
            "that differ from both other sites",
            noise=0.015,
            bias=0.15,
            intensity_jitter=0.05,
            contrast=MappingProxyType(
                {
                    "flair": (0.8, 1.15, 0.85, 1.2, 0.85, 0.8, 1.15),
                    "t1": (0.8, 0.85, 1.15, 0.8, 0.85, 0.8, 1.2),
                    "t1ce": (0.8, 0.85, 1.15, 0.8, 1.25, 0.8, 1.2),
                    "t2": (1.2, 0.85, 0.8, 1.2, 0.85, 1.2, 1.15),
                }
            ),
            gamma=MappingProxyType({"flair": 0.8, "t1": 1.25, "t1ce": 1.2, "t2": 0.8}),
            slice_thickness_mm=3.0,
        ),
    }
)


def render(
    rng: np.random.Generator,
    tissue: F32,
    tumor: Tumor,
    world: F64,
    points: tuple[npt.NDArray[np.intp], ...],
    site: SiteProfile,
    slice_spacing_mm: float,
    enhancing: bool,
    modalities: tuple[str, ...] = MODALITIES,
) -> dict[str, npt.NDArray[np.int16]]:
    """Intensities ``(N,) int16`` per modality of ``modalities`` for the brain voxels
    (``points`` of the grid), as ``site`` renders them on a grid of ``slice_spacing_mm``
    along axis 2.

    Per modality: tissue contrast, the tumor (then its fluid, if it has any), the site's
    gamma, its slice thickness, the bias field, the intensity scale, Rician noise. Every site
    makes the same random draws, so the site changes only how a draw is used; a tumor without
    fluid makes no draw for it, so adding fluid to the model changed no earlier case.
    """
    blur = slice_blur_sigma(site.slice_thickness_mm, slice_spacing_mm)
    # Low-order polynomial in world mm: a smooth field across the head, like coil shading.
    u = (world / 100.0).astype(np.float32)
    basis = np.stack(
        [
            u[:, 0],
            u[:, 1],
            u[:, 2],
            u[:, 0] * u[:, 1],
            u[:, 0] * u[:, 2],
            u[:, 1] * u[:, 2],
            u[:, 0] ** 2,
            u[:, 1] ** 2,
            u[:, 2] ** 2,
        ],
        axis=1,
    )
    values: dict[str, npt.NDArray[np.int16]] = {}
    for modality in modalities:
        reference = CONTRAST[modality]
        factors = site.contrast.get(modality, (1.0,) * len(reference))
        csf, gm, wm, ed, et, nec, net = (
            v * f * rng.uniform(0.92, 1.08) for v, f in zip(reference, factors, strict=True)
        )
        image = tissue @ np.array([csf, gm, wm], dtype=np.float32)
        heterogeneity = 1.0 + 0.08 * tumor.texture
        core_value = (et if enhancing else net) * heterogeneity
        image += tumor.edema * (ed * heterogeneity - image)
        image += tumor.core * (core_value - image)
        image += tumor.necrosis * (nec * heterogeneity - image)
        if tumor.fluid is not None:
            fluid = FLUID[tumor.fluid_tissue][modality] * factors[0] * rng.uniform(0.92, 1.08)
            image += tumor.fluid * (np.float32(fluid) - image)
        gamma = site.gamma.get(modality, 1.0)
        if gamma != 1.0:
            top = np.float32(max(reference))
            image = top * (image / top) ** np.float32(gamma)
            wm = float(top) * (wm / float(top)) ** gamma
        if blur > 0.0:
            image = thicken(image, points, blur)
        coeffs = rng.normal(0.0, site.bias / 1.5, basis.shape[1]).astype(np.float32)
        image *= np.exp(basis @ coeffs)
        image *= np.float32(1.0 + rng.uniform(-1.0, 1.0) * site.intensity_jitter)
        sigma = np.float32(site.noise * wm)
        # Rician: magnitude of a complex signal with Gaussian noise on both channels.
        real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
        magnitude = np.sqrt(real * real + imag * imag)
        values[modality] = np.clip(np.rint(magnitude), 1, 32767).astype(np.int16)
    return values


def slice_blur_sigma(thickness_mm: float | None, spacing_mm: float) -> float:
    """Gaussian sigma in voxels along axis 2 that turns ``spacing_mm`` slices into
    ``thickness_mm`` ones: the variance of a box that thick beyond that of the grid's own."""
    if thickness_mm is None or thickness_mm <= spacing_mm:
        return 0.0
    return float(np.sqrt((thickness_mm**2 - spacing_mm**2) / 12.0) / spacing_mm)


def thicken(values: F32, points: tuple[npt.NDArray[np.intp], ...], sigma: float) -> F32:
    """Brain-voxel values ``(N,)`` blurred along axis 2 as thick slices would average them.

    The whole volume is filtered (zero outside the brain, so edge slices mix with the dark
    background as a skull-stripped thick-slice scan does) and read back at the brain voxels
    only: outside the brain it stays exactly zero. Only the brain's bounding box is filtered,
    which is exact since the filter pads with the zero the box is surrounded by.
    """
    lo = [int(p.min()) for p in points]
    hi = [int(p.max()) + 1 for p in points]
    box = np.zeros([b - a for a, b in zip(lo, hi, strict=True)], dtype=np.float32)
    local = tuple(p - a for p, a in zip(points, lo, strict=True))
    box[local] = values
    box = ndimage.gaussian_filter1d(box, sigma, axis=2, mode="constant", cval=0.0)
    return box[local]
