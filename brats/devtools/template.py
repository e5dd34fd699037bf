"""The MNI152 2009a template the generated cohort is built on, read from nilearn's wheel.

Its grey-matter, white-matter, CSF and brain-mask maps (197 x 233 x 189 at 1 mm) are read
with nibabel from the installed package; nothing is fetched, and nilearn is never imported.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_TEMPLATE_DIR: Final = ("datasets", "data")
_TEMPLATE_NAME: Final = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
_TEMPLATE_SPACING_MM: Final = 1.0


@dataclass(frozen=True)
class Template:
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
def _load_template() -> Template:
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
    return Template(tissue.astype(np.float32), mask, affine, np.minimum(lo, hi), np.maximum(lo, hi))


@functools.lru_cache(maxsize=4)
def template_for(spacing: tuple[float, float, float]) -> Template:
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
    return Template(tissue, prep(full.mask), affine, full.brain_lo, full.brain_hi)
