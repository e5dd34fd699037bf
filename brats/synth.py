"""A generated BraTS-like cohort built on a real brain, so nothing depends on downloading BraTS.

The anatomy is the MNI152 2009a symmetric template that ships inside nilearn's wheel (its
grey matter, white matter, CSF and brain-mask maps, 197 x 233 x 189 at 1 mm), read with
nibabel from the installed package; nothing is fetched. Each case:

* places the template brain in the output box with a mild random scale, rotation and shift
  (the brain always fits), skull-stripped like BraTS: exactly zero outside the brain;
* gives each modality its own tissue contrast by mixing the tissue probabilities with
  per-tissue intensities (T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR: CSF suppressed,
  GM > WM; T1ce: like T1 plus an enhancing rim);
* grows one tumor at a random white-matter position: an ellipsoid deformed by smooth seeded
  noise, with a necrotic core (label 1, dark on T1ce), an enhancing rim (ET, bright on T1ce)
  and a larger edema (label 2, bright on T2 and FLAIR) that spreads along white matter;
  with probability ``p_no_enhancing`` the core does not enhance and is all label 1;
* applies a smooth multiplicative bias field, Rician noise and a small intensity scale per
  modality, then rounds to ``int16``.

Everything is seeded: case ``i`` draws from ``SeedSequence([seed, i])`` only, so generating it
alone gives the same bytes as generating it inside a cohort, and files are gzipped with
mtime 0. :func:`write_faulty_case` writes the corrupt inputs the reliability tests need.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import importlib.util
import os
import posixpath
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brats.cases import MODALITIES, validate_case_id
from brats.labels import ED, ET, NCR, LabelConvention, to_disk
from brats.storage import resolve, write_bytes_atomic

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

FAULTS: Final = (
    "truncated_gzip",
    "not_nifti",
    "empty_file",
    "missing_modality",
    "shape_mismatch",
    "affine_mismatch",
    "nan",
    "inf",
    "all_zero",
    "huge_header",
    "stray_label",
)
"""Faults :func:`write_faulty_case` can write (RELIABILITY.md rows 9 to 11)."""

HUGE_SHAPE: Final = (4096, 4096, 4096)
"""What the ``huge_header`` file declares: 4096^3 float32 = 256 GiB, in a file under 1 KiB."""

_TEMPLATE_DIR: Final = ("datasets", "data")
_TEMPLATE_NAME: Final = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
_TEMPLATE_SPACING_MM: Final = 1.0

# BraTS 2023 file-name tokens for the canonical modalities (the same table brats.cases reads).
_TOKENS_2023: Final = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}

# Mean intensity per tissue class, in BraTS-like scanner units. Columns: CSF, GM, WM, edema,
# enhancing tumor, necrosis, non-enhancing tumor core.
_TISSUES: Final = ("csf", "gm", "wm", "edema", "enhancing", "necrosis", "non_enhancing")
_CONTRAST: Final[dict[str, tuple[float, ...]]] = {
    "flair": (120.0, 540.0, 400.0, 900.0, 720.0, 420.0, 820.0),
    "t1": (210.0, 470.0, 650.0, 390.0, 470.0, 220.0, 380.0),
    "t1ce": (230.0, 500.0, 670.0, 410.0, 1300.0, 200.0, 420.0),
    "t2": (1550.0, 820.0, 560.0, 1180.0, 900.0, 1400.0, 1050.0),
}

# Faults damage one file; which one is part of the fixture's contract (see fault_file_name).
_FAULT_TARGET: Final = {fault: "t1" for fault in FAULTS} | {
    "missing_modality": "t1ce",
    "stray_label": "seg",
}


@dataclass(frozen=True)
class SynthConfig:
    """How to generate a cohort.

    Attributes:
        shape: output grid ``(D, H, W)`` in voxels (axis 0 runs right-to-left, axis 1
            anterior-to-posterior, axis 2 inferior-to-superior, as in BraTS).
        field_of_view_mm: physical size of the grid; spacing is ``field_of_view_mm / shape``,
            so a small grid holds the same whole brain at a coarser spacing.
        convention: on-disk naming and labels: ``"brats2020"`` (``<id>_flair.nii.gz``, ET = 4)
            or ``"brats2023"`` (``<id>-t2f.nii.gz``, ET = 3).
        compress: write ``.nii.gz`` (True) or ``.nii``.
        seed: cohort seed; case ``i`` depends only on ``(seed, i)``.
        p_no_enhancing: probability that a tumor has no enhancing part.
        labeled: write a segmentation file.
        noise: Rician noise sigma as a fraction of each modality's white-matter intensity.
        bias: standard deviation of the log bias field across the brain.
        intensity_jitter: per-case, per-modality intensity scale in ``1 +- intensity_jitter``.
        scale_range: range of the random brain scale (capped so the brain fits the box).
        max_rotation_deg: largest random rotation about each axis.
        max_shift_mm: largest random shift along each axis.
    """

    shape: tuple[int, int, int] = (240, 240, 155)
    field_of_view_mm: tuple[float, float, float] = (240.0, 240.0, 155.0)
    convention: LabelConvention | str = LabelConvention.BRATS2020
    compress: bool = True
    seed: int = 0
    p_no_enhancing: float = 0.1
    labeled: bool = True
    noise: float = 0.03
    bias: float = 0.1
    intensity_jitter: float = 0.1
    scale_range: tuple[float, float] = (0.9, 1.0)
    max_rotation_deg: float = 4.0
    max_shift_mm: float = 4.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "convention", LabelConvention(self.convention))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "field_of_view_mm", tuple(float(f) for f in self.field_of_view_mm))
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise ValueError(f"shape must be three sizes of at least 8, got {self.shape}")
        if len(self.field_of_view_mm) != 3 or min(self.field_of_view_mm) <= 0:
            raise ValueError(
                f"field_of_view_mm must be three positive sizes, got {self.field_of_view_mm}"
            )
        if self.seed < 0:
            raise ValueError("seed must be non-negative")
        if not 0.0 <= self.p_no_enhancing <= 1.0:
            raise ValueError("p_no_enhancing must be a probability")
        lo, hi = self.scale_range
        if not 0.0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm: field of view / shape."""
        fov, shape = self.field_of_view_mm, self.shape
        return (fov[0] / shape[0], fov[1] / shape[1], fov[2] / shape[2])

    @property
    def label_convention(self) -> LabelConvention:
        return LabelConvention(self.convention)


@dataclass(frozen=True)
class SynthCase:
    """One generated case, in memory.

    Attributes:
        case_id: e.g. ``BraTS20_Training_001`` or ``BraTS-GLI-00001-000``.
        index: the case index its randomness derives from.
        images: canonical modality (``flair``, ``t1``, ``t1ce``, ``t2``) -> ``(D, H, W) int16``,
            non-negative, zero outside the brain.
        label: ``(D, H, W) uint8`` internal classes ``{0, 1, 2, 3}`` (ground truth even when the
            case is written unlabeled).
        affine: ``(4, 4) float64`` voxel -> RAS mm, ``diag(-s0, -s1, s2)`` centred on the grid.
        enhancing: whether the tumor has an enhancing part.
    """

    case_id: str
    index: int
    images: dict[str, npt.NDArray[np.int16]]
    label: npt.NDArray[np.uint8]
    affine: F64
    enhancing: bool


# --------------------------------------------------------------------------------------------
# Names


def case_id_for(index: int, convention: LabelConvention | str) -> str:
    """The BraTS-style id of case ``index`` (``BraTS20_Training_001``, ``BraTS-GLI-00001-000``)."""
    if index < 0:
        raise ValueError(f"case index must be non-negative, got {index}")
    if LabelConvention(convention) is LabelConvention.BRATS2023:
        return f"BraTS-GLI-{index:05d}-000"
    return f"BraTS20_Training_{index:03d}"


def file_name(case_id: str, kind: str, config: SynthConfig) -> str:
    """File name of a modality (canonical name) or ``"seg"`` for a case under ``config``."""
    if kind not in (*MODALITIES, "seg"):
        raise ValueError(f"unknown file kind {kind!r}")
    ext = ".nii.gz" if config.compress else ".nii"
    if config.label_convention is LabelConvention.BRATS2023:
        return f"{case_id}-{_TOKENS_2023[kind]}{ext}"
    return f"{case_id}_{kind}{ext}"


def fault_file_name(case_id: str, fault: str, config: SynthConfig) -> str:
    """The file that :func:`write_faulty_case` damages (or leaves out) for ``fault``."""
    _check_fault(fault)
    return file_name(case_id, _FAULT_TARGET[fault], config)


# --------------------------------------------------------------------------------------------
# Template


@dataclass(frozen=True)
class _Template:
    """Tissue maps on a (possibly coarsened) template grid.

    ``tissue`` is ``(3, X, Y, Z) float32`` CSF/GM/WM fractions summing to 1 in the brain,
    ``mask`` ``(X, Y, Z) float32`` in [0, 1], ``affine`` template voxel -> MNI mm, and
    ``brain_lo``/``brain_hi`` the brain's bounding box in MNI mm.
    """

    tissue: F32
    mask: F32
    affine: F64
    brain_lo: F64
    brain_hi: F64


def template_dir() -> Path:
    """Folder of nilearn's packaged MNI152 2009a files, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn is not installed; it ships the MNI152 template")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*_TEMPLATE_DIR)


def _read_map(name: str) -> tuple[F32, F64] | None:
    path = template_dir() / _TEMPLATE_NAME.format(name)
    if not path.is_file():
        return None
    img = nib.Nifti1Image.from_filename(path)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.max() > 1.5:  # some releases store the maps as 0..255
        data = data / np.float32(data.max())
    return data, np.asarray(img.affine, dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _load_template() -> _Template:
    """The full-resolution template (1 mm), read once per process."""
    gm_read, wm_read = _read_map("gm"), _read_map("wm")
    if gm_read is None or wm_read is None:
        raise FileNotFoundError(f"MNI152 grey/white-matter maps not found in {template_dir()}")
    (gm, affine), (wm, _) = gm_read, wm_read
    mask_read, csf_read = _read_map("brain_mask"), _read_map("csf")
    mask = mask_read[0] if mask_read else ((gm + wm) > 0.1).astype(np.float32)
    mask = ndimage.binary_fill_holes(mask > 0.5).astype(np.float32)
    # Whatever the mask holds that is neither GM nor WM is CSF (ventricles, sulci).
    csf = np.maximum(csf_read[0] if csf_read else 0.0, mask - gm - wm)
    tissue = np.stack([csf, gm, wm]).clip(0.0, 1.0) * mask
    total = tissue.sum(axis=0)
    tissue /= np.where(total > 0, total, 1.0)
    idx = np.argwhere(mask > 0.5)
    lo = nib.affines.apply_affine(affine, idx.min(axis=0))
    hi = nib.affines.apply_affine(affine, idx.max(axis=0))
    return _Template(
        tissue.astype(np.float32), mask, affine, np.minimum(lo, hi), np.maximum(lo, hi)
    )


@functools.lru_cache(maxsize=4)
def _template_for(spacing: tuple[float, float, float]) -> _Template:
    """The template prepared for an output spacing (cached per spacing, i.e. per shape).

    For a coarse output grid the maps are smoothed (anti-aliasing) and subsampled, so each
    case's resampling stays cheap and free of aliasing; at 1 mm they are used as they are.
    """
    full = _load_template()
    ratio = np.asarray(spacing) / _TEMPLATE_SPACING_MM
    if np.all(ratio < 1.5):
        return full
    sigma = np.where(ratio >= 1.5, 0.45 * ratio, 0.0)
    step = np.maximum(1, np.floor(ratio / 2)).astype(int)
    cut = tuple(slice(None, None, int(s)) for s in step)

    def prep(vol: F32) -> F32:
        return np.ascontiguousarray(ndimage.gaussian_filter(vol, sigma, mode="constant")[cut])

    affine = full.affine @ np.diag([*step.astype(float), 1.0])
    tissue = np.stack([prep(t) for t in full.tissue])
    return _Template(tissue, prep(full.mask), affine, full.brain_lo, full.brain_hi)


# --------------------------------------------------------------------------------------------
# Generation


def output_affine(config: SynthConfig) -> F64:
    """BraTS-like ``(4, 4)`` affine: ``diag(-s0, -s1, s2)``, grid centre at world (0, 0, 0)."""
    spacing = np.asarray(config.spacing)
    rot = np.diag(spacing * np.array([-1.0, -1.0, 1.0]))
    centre = (np.asarray(config.shape, dtype=np.float64) - 1.0) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = rot
    affine[:3, 3] = -rot @ centre
    return affine


def generate_case(index: int, config: SynthConfig = SynthConfig()) -> SynthCase:
    """Generate case ``index`` of the cohort ``config`` describes (deterministic).

    Returns:
        a :class:`SynthCase` with four ``(D, H, W) int16`` images, a ``(D, H, W) uint8``
        internal label volume and a ``(4, 4) float64`` affine, ``(D, H, W) = config.shape``.
    """
    streams = np.random.SeedSequence([config.seed, index]).spawn(3)
    geo_rng, tumor_rng, intensity_rng = (np.random.default_rng(s) for s in streams)
    spacing = np.asarray(config.spacing)
    affine = output_affine(config)
    template = _template_for(config.spacing)

    vox_to_tpl, mni_from_world = _placement(geo_rng, template, config, affine)
    brain = _resample_mask(template, vox_to_tpl, config.shape)
    points = np.nonzero(brain)
    vox = np.stack(points).astype(np.float64)  # (3, N) output voxel indices of brain voxels
    tpl_vox = vox_to_tpl[:3, :3] @ vox + vox_to_tpl[:3, 3:]
    tissue = np.stack(
        [ndimage.map_coordinates(t, tpl_vox, order=1, output=np.float32) for t in template.tissue],
        axis=1,
    )  # (N, 3) CSF, GM, WM
    tissue /= np.maximum(tissue.sum(axis=1, keepdims=True), np.float32(1e-3))
    world = (affine[:3, :3] @ vox + affine[:3, 3:]).T  # (N, 3) mm
    mni = world @ mni_from_world[:3, :3].T + mni_from_world[:3, 3]

    enhancing = bool(tumor_rng.random() >= config.p_no_enhancing)
    tumor = _grow_tumor(tumor_rng, world, mni, tissue, spacing, enhancing)
    _keep_connected_to_core(tumor, points, config.shape)
    values = _render(intensity_rng, tissue, tumor, world, config, enhancing)

    images: dict[str, npt.NDArray[np.int16]] = {}
    for modality in MODALITIES:
        vol = np.zeros(config.shape, dtype=np.int16)
        vol[points] = values[modality]
        images[modality] = vol
    label = np.zeros(config.shape, dtype=np.uint8)
    label[points] = tumor.label
    case_id = case_id_for(index, config.convention)
    return SynthCase(case_id, index, images, label, affine, enhancing)


def _placement(
    rng: np.random.Generator, template: _Template, config: SynthConfig, affine: F64
) -> tuple[F64, F64]:
    """Random similarity placing the brain in the box.

    Returns ``(vox_to_tpl, mni_from_world)``: output voxel -> template grid voxel, and output
    world mm -> MNI mm, both ``(4, 4) float64``.
    """
    angles = rng.uniform(-1.0, 1.0, 3) * config.max_rotation_deg
    rot = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    shift = rng.uniform(-1.0, 1.0, 3) * config.max_shift_mm
    scale = rng.uniform(*config.scale_range)
    # Cap the scale so the rotated brain's bounding box fits the field of view with a margin.
    corners = _corners(template.brain_lo, template.brain_hi)
    centre = (template.brain_lo + template.brain_hi) / 2.0
    extent = np.ptp((corners - centre) @ rot.T, axis=0)
    room = np.asarray(config.field_of_view_mm) - 2.0 * (config.max_shift_mm + 2.0)
    scale = min(scale, float(np.min(room / extent)))
    # world = scale * rot @ (mni - centre) + shift, inverted:
    # mni = centre + rot.T @ (world - shift) / scale
    mni_from_world = np.eye(4)
    mni_from_world[:3, :3] = rot.T / scale
    mni_from_world[:3, 3] = centre - rot.T @ shift / scale
    vox_to_tpl = np.linalg.inv(template.affine) @ mni_from_world @ affine
    return vox_to_tpl, mni_from_world


def _corners(lo: F64, hi: F64) -> F64:
    """The 8 corners ``(8, 3)`` of the box ``[lo, hi]``."""
    return np.array([np.where(bits, hi, lo) for bits in np.ndindex(2, 2, 2)], dtype=np.float64)


def _resample_mask(
    template: _Template, vox_to_tpl: F64, shape: tuple[int, int, int]
) -> npt.NDArray[np.bool_]:
    """The brain mask on the output grid, ``(D, H, W) bool``, resampled only over its box."""
    tpl_to_vox = np.linalg.inv(vox_to_tpl)
    # Only the brain's bounding box needs resampling; the rest of the grid stays zero.
    to_vox = tpl_to_vox @ np.linalg.inv(template.affine)
    box = _corners(template.brain_lo, template.brain_hi) @ to_vox[:3, :3].T + to_vox[:3, 3]
    start = np.clip(np.floor(box.min(axis=0)).astype(int) - 1, 0, shape)
    stop = np.clip(np.ceil(box.max(axis=0)).astype(int) + 2, 0, shape)
    sub_shape = tuple(int(b - a) for a, b in zip(start, stop, strict=True))
    offset = vox_to_tpl[:3, :3] @ start + vox_to_tpl[:3, 3]
    sub = ndimage.affine_transform(
        template.mask,
        vox_to_tpl[:3, :3],
        offset=offset,
        output_shape=sub_shape,
        order=1,
        mode="constant",
        cval=0.0,
        output=np.float32,
    )
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))] = sub > 0.5
    return mask


@dataclass(frozen=True)
class _Tumor:
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


def _grow_tumor(
    rng: np.random.Generator,
    world: F64,
    mni: F64,
    tissue: F32,
    spacing: F64,
    enhancing: bool,
) -> _Tumor:
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
    return _Tumor(label, out["edema"], out["core"], out["necrosis"], out["tex"])


def _keep_connected_to_core(
    tumor: _Tumor, points: tuple[npt.NDArray[np.intp], ...], shape: tuple[int, int, int]
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


def _render(
    rng: np.random.Generator,
    tissue: F32,
    tumor: _Tumor,
    world: F64,
    config: SynthConfig,
    enhancing: bool,
) -> dict[str, npt.NDArray[np.int16]]:
    """Intensities ``(N,) int16`` per modality for the brain voxels."""
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
    for modality in MODALITIES:
        csf, gm, wm, ed, et, nec, net = (v * rng.uniform(0.92, 1.08) for v in _CONTRAST[modality])
        image = tissue @ np.array([csf, gm, wm], dtype=np.float32)
        heterogeneity = 1.0 + 0.08 * tumor.texture
        core_value = (et if enhancing else net) * heterogeneity
        image += tumor.edema * (ed * heterogeneity - image)
        image += tumor.core * (core_value - image)
        image += tumor.necrosis * (nec * heterogeneity - image)
        coeffs = rng.normal(0.0, config.bias / 1.5, basis.shape[1]).astype(np.float32)
        image *= np.exp(basis @ coeffs)
        image *= np.float32(1.0 + rng.uniform(-1.0, 1.0) * config.intensity_jitter)
        sigma = np.float32(config.noise * wm)
        # Rician: magnitude of a complex signal with Gaussian noise on both channels.
        real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
        magnitude = np.sqrt(real * real + imag * imag)
        values[modality] = np.clip(np.rint(magnitude), 1, 32767).astype(np.int16)
    return values


# --------------------------------------------------------------------------------------------
# Writing


def encode_nifti(data: npt.NDArray[np.generic], affine: F64, *, compress: bool) -> bytes:
    """NIfTI-1 bytes of ``data`` (its own dtype, no scaling), gzipped with mtime 0 if asked."""
    img = nib.Nifti1Image(np.asarray(data), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(1.0, 0.0)
    raw: bytes = img.to_bytes()
    # Level 6 keeps a full-size case around a second; mtime 0 makes the bytes reproducible.
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw


def _case_files(case: SynthCase, config: SynthConfig, *, seg: bool) -> dict[str, bytes]:
    files = {
        file_name(case.case_id, m, config): encode_nifti(
            case.images[m], case.affine, compress=config.compress
        )
        for m in MODALITIES
    }
    if seg:
        disk = to_disk(case.label, config.label_convention)
        files[file_name(case.case_id, "seg", config)] = encode_nifti(
            disk, case.affine, compress=config.compress
        )
    return files


def _write_files(root: str | os.PathLike[str], case_id: str, files: dict[str, bytes]) -> str:
    location = resolve(os.fspath(root)).child(validate_case_id(case_id))
    fs = location.filesystem()
    for name, data in files.items():
        write_bytes_atomic(fs, posixpath.join(location.path, name), data)
    return location.uri


def write_case(
    root: str | os.PathLike[str], case: SynthCase, config: SynthConfig = SynthConfig()
) -> str:
    """Write ``root/<id>/<id>_<modality>.nii.gz`` (or the 2023 names) and return the folder.

    ``root`` is a local folder or an ``s3://`` URI. The segmentation is written in the
    config's label convention, and only when ``config.labeled``.
    """
    return _write_files(root, case.case_id, _case_files(case, config, seg=config.labeled))


def generate_cohort(
    root: str | os.PathLike[str],
    n_cases: int,
    config: SynthConfig = SynthConfig(),
    *,
    unlabeled: int = 0,
    start: int = 1,
) -> list[str]:
    """Write ``n_cases`` cases (indices ``start...``) then ``unlabeled`` cases without a
    segmentation (the following indices); return the case ids in order."""
    ids: list[str] = []
    plan = [(start + i, config) for i in range(n_cases)]
    no_seg = replace(config, labeled=False)
    plan += [(start + n_cases + i, no_seg) for i in range(unlabeled)]
    for index, case_config in plan:
        case = generate_case(index, case_config)
        write_case(root, case, case_config)
        ids.append(case.case_id)
    return ids


# --------------------------------------------------------------------------------------------
# Faults


def _check_fault(fault: str) -> None:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; expected one of {list(FAULTS)}")


def huge_header_nifti(affine: F64, *, compress: bool) -> bytes:
    """A valid NIfTI-1 header declaring ``HUGE_SHAPE`` float32 (256 GiB) plus 16 data bytes."""
    header = nib.Nifti1Header()
    header.set_data_shape(HUGE_SHAPE)
    header.set_data_dtype(np.float32)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    header["vox_offset"] = 352
    # 348-byte header, 4-byte empty extension flag, then far fewer bytes than declared.
    raw = header.binaryblock + b"\x00" * 4 + np.zeros(4, dtype=np.float32).tobytes()
    return gzip.compress(raw, mtime=0) if compress else raw


def write_faulty_case(
    root: str | os.PathLike[str], case_id: str, fault: str, config: SynthConfig = SynthConfig()
) -> str:
    """Write a case whose file :func:`fault_file_name` names carries ``fault``; return its folder.

    Faults (every other file of the case is valid):

    * ``truncated_gzip``: the T1 file cut in half (a cut gzip stream, or a cut ``.nii``);
    * ``not_nifti``: the T1 file is 4 KiB of random bytes (gzipped when ``compress``);
    * ``empty_file``: the T1 file has 0 bytes;
    * ``missing_modality``: no T1ce file;
    * ``shape_mismatch``: T1 has two extra slices along axis 2;
    * ``affine_mismatch``: T1's affine is shifted by 5 mm along x;
    * ``nan`` / ``inf``: T1 is float32 with some brain voxels NaN / +-Inf;
    * ``all_zero``: T1 is all zeros;
    * ``huge_header``: T1 is a tiny file whose header declares 4096^3 float32 (256 GiB);
    * ``stray_label``: the segmentation holds a label its convention lacks (3 in BraTS 2020,
      5 in BraTS 2023); written even when ``config.labeled`` is False.

    The content derives from ``(config.seed, case_id)``, so the same call writes the same bytes.
    """
    _check_fault(fault)
    case_id = validate_case_id(case_id)
    index = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:4], "big")
    case = replace(generate_case(index, config), case_id=case_id)
    rng = np.random.default_rng([config.seed, index, 1])
    files = _case_files(case, config, seg=config.labeled or fault == "stray_label")
    target = fault_file_name(case_id, fault, config)
    t1 = case.images["t1"]
    brain = np.argwhere(t1 > 0)
    some = tuple(brain[rng.choice(len(brain), size=min(20, len(brain)), replace=False)].T)

    def encode(data: npt.NDArray[np.generic], affine: F64 = case.affine) -> bytes:
        return encode_nifti(data, affine, compress=config.compress)

    if fault == "truncated_gzip":
        files[target] = files[target][: len(files[target]) // 2]
    elif fault == "not_nifti":
        garbage = rng.bytes(4096)
        files[target] = gzip.compress(garbage, mtime=0) if config.compress else garbage
    elif fault == "empty_file":
        files[target] = b""
    elif fault == "missing_modality":
        del files[target]
    elif fault == "shape_mismatch":
        files[target] = encode(np.pad(t1, ((0, 0), (0, 0), (0, 2))))
    elif fault == "affine_mismatch":
        shifted = case.affine.copy()
        shifted[0, 3] += 5.0
        files[target] = encode(t1, shifted)
    elif fault in ("nan", "inf"):
        bad = t1.astype(np.float32)
        bad[some] = np.nan if fault == "nan" else np.inf
        if fault == "inf":
            bad[tuple(ix[::2] for ix in some)] = -np.inf
        files[target] = encode(bad)
    elif fault == "all_zero":
        files[target] = encode(np.zeros_like(t1))
    elif fault == "huge_header":
        files[target] = huge_header_nifti(case.affine, compress=config.compress)
    elif fault == "stray_label":
        stray = 3 if config.label_convention is LabelConvention.BRATS2020 else 5
        seg = to_disk(case.label, config.label_convention)
        seg[some] = stray
        files[target] = encode(seg)
    return _write_files(root, case_id, files)


# --------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brats synth",
        description="Write a seeded BraTS-like cohort built on the MNI152 template.",
    )
    parser.add_argument("out", help="cohort root: local folder or s3://bucket/prefix")
    parser.add_argument("--cases", type=int, default=8, help="labeled cases (default 8)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[240, 240, 155],
        metavar=("D", "H", "W"),
        help="output grid; the field of view stays 240 x 240 x 155 mm (default 240 240 155)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--convention",
        choices=[c.value for c in LabelConvention],
        default="brats2020",
        help="file names and label values on disk (default brats2020)",
    )
    parser.add_argument("--unlabeled", type=int, default=0, help="extra cases without a seg")
    parser.add_argument("--start", type=int, default=1, help="index of the first case")
    parser.add_argument("--p-no-enhancing", type=float, default=0.1)
    parser.add_argument("--nii", action="store_true", help="write .nii instead of .nii.gz")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m brats.synth OUT --cases N --shape D H W --seed S --convention C``."""
    args = build_parser().parse_args(argv)
    config = SynthConfig(
        shape=(args.shape[0], args.shape[1], args.shape[2]),
        convention=args.convention,
        compress=not args.nii,
        seed=args.seed,
        p_no_enhancing=args.p_no_enhancing,
    )
    began = time.perf_counter()
    ids = generate_cohort(args.out, args.cases, config, unlabeled=args.unlabeled, start=args.start)
    elapsed = time.perf_counter() - began
    where = resolve(args.out).uri
    print(
        f"wrote {len(ids)} cases ({args.unlabeled} unlabeled, {config.label_convention.value}, "
        f"{'x'.join(map(str, config.shape))}) to {where} in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
