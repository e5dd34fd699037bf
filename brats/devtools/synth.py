"""A generated BraTS-like cohort built on a real brain, so nothing depends on downloading BraTS.

The anatomy is the MNI152 2009a symmetric template that ships inside nilearn's wheel (its
grey matter, white matter, CSF and brain-mask maps, 197 x 233 x 189 at 1 mm), read with
nibabel from the installed package; nothing is fetched. Each case:

* places the template brain in the output box with a mild random scale, rotation and shift
  (the brain always fits), skull-stripped like BraTS: exactly zero outside the brain;
* gives each modality its own tissue contrast by mixing the tissue probabilities with
  per-tissue intensities (T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR: CSF suppressed,
  GM > WM; T1ce: like T1 plus an enhancing rim);
* grows a tumor at a random white-matter position: an ellipsoid deformed by smooth seeded
  noise, with a necrotic core (label 1, dark on T1ce), an enhancing rim (ET, bright on T1ce)
  and a larger edema (label 2, bright on T2 and FLAIR) that spreads along white matter;
  in a share ``p_no_enhancing`` of cases the core does not enhance and is all label 1 (like a
  lower-grade glioma), in a share ``p_small`` the tumor is small, and in a share
  ``p_multifocal`` a second, smaller lesion grows elsewhere in the white matter. The shares
  are exact, not drawn per case (:func:`~brats.devtools.tumor.has_kind`): any run of ``n``
  consecutive cases holds ``floor(n p)`` or ``ceil(n p)`` of each kind, so an 8-case
  held-out set has its 2 non-enhancing tumours as the training cohort has its quarter;
* follows a *label scheme* (``convention``, ``brats synth --label-scheme``): its file names,
  its labels on disk and the kinds of lesion it has. ``brats2020`` and ``brats2023`` are the
  glioma above; ``gli2024`` and ``met2024`` are post-treatment: a share ``p_cavity`` of cases
  has had its tumor core resected (a fluid-filled cavity, RC), and a share ``p_cavity_only``
  of those has no residual tumor core at all (cavity and edema only); ``met2024`` grows
  smaller metastasis-like lesions; ``ped2024`` relabels the glioma as paediatric (ET, NETC,
  ED) and gives a share ``p_cyst`` of tumors a cyst (CC) inside the core; ``menrt2024`` is a
  meningioma against the brain's surface, rendered on T1ce alone, its one label the GTV.
  Names per scheme (:func:`case_id_for`, :func:`file_name`): ``BraTS20_Training_001/
  BraTS20_Training_001_flair.nii.gz``; ``BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz``
  (2023; ``-100``, a post-treatment time point, for gli2024; ``BraTS-MET-``, ``BraTS-PED-``);
  ``BraTS-MEN-RT-0001-1/BraTS-MEN-RT-0001-1_t1c.nii.gz`` and ``..._gtv.nii.gz``, as the
  BraTS 2024 MEN-RT release names them;
* renders the images as the acquisition *site* (a :class:`~brats.devtools.sites.SiteProfile`)
  would: its tissue contrasts and gamma, its slice thickness, a smooth multiplicative bias
  field, Rician noise and a small intensity scale per modality, then rounds to ``int16``.
  The site changes only the images: a case's anatomy and labels are the same at every site.

Everything is seeded: case ``i`` draws from ``SeedSequence([seed, i])`` only (its kinds from
``(seed, i)`` too), so generating it alone gives the same bytes as generating it inside a
cohort, and files are gzipped with mtime 0. Its five child streams are the placement, the
(first) tumor (or the meningioma), the intensities, the variety draws (small, multifocal and
the second lesion) and the treatment (the cavity's wall, the cyst); the site draws nothing of
its own, so the same index renders the same anatomy at every site. A BraTS 2020 or 2023
cohort never uses the fifth stream, so it is what it was before schemes came. The config,
the case and the names live in :mod:`brats.devtools.synth_config`, the template in
:mod:`brats.devtools.template`, the tumor model in :mod:`brats.devtools.tumor` and
:mod:`brats.devtools.treatment`, the sites in :mod:`brats.devtools.sites`, and the corrupt
inputs the reliability tests need in :func:`brats.devtools.faults.write_faulty_case`.
"""

from __future__ import annotations

import argparse
import gzip
import os
import posixpath
from dataclasses import dataclass, field, replace
from typing import Final

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brats.devtools.sites import render
from brats.devtools.synth_config import (
    SynthCase,
    SynthConfig,
    case_id_for,
    file_name,
    output_affine,
)
from brats.devtools.template import F64, Template, template_for
from brats.devtools.treatment import (
    add_cyst,
    brain_depth,
    grow_meningioma,
    keep_connected_to_anchor,
    resect,
)
from brats.devtools.tumor import (
    CAVITY,
    CYST,
    MENINGIOMA,
    METASTASIS,
    SATELLITE,
    SMALL,
    TYPICAL,
    grow_tumor,
    has_kind,
    keep_connected_to_core,
    keep_one_core_per_focus,
    kind_ordinal,
    kind_phases,
    merge_tumors,
)
from brats.io.cases import validate_case_id
from brats.options import option
from brats.storage import resolve, write_bytes_atomic
from brats.volume.labels import (
    ED,
    ET,
    NCR,
    LabelScheme,
    scheme_named,
    to_disk,
)
from brats.volume.resample import (
    resample_image,
    resample_labels,
    same_spacing,
)

# The tumor model's tissues (brats.devtools.tumor) -> the class each scheme labels them with.
_TISSUE_CLASSES: Final[dict[str, dict[int, str]]] = {
    "brats2020": {NCR: "NCR", ED: "ED", ET: "ET"},
    "brats2023": {NCR: "NETC", ED: "SNFH", ET: "ET"},
    "met2023": {NCR: "NETC", ED: "SNFH", ET: "ET"},
    "men2023": {NCR: "NETC", ED: "SNFH", ET: "ET"},
    "gli2024": {NCR: "NETC", ED: "SNFH", ET: "ET", CAVITY: "RC"},
    "met2024": {NCR: "NETC", ED: "SNFH", ET: "ET", CAVITY: "RC"},
    "ped2024": {NCR: "NETC", ED: "ED", ET: "ET", CYST: "CC"},
    "menrt2024": {MENINGIOMA: "GTV"},
}


def tissue_table(scheme: LabelScheme | str) -> npt.NDArray[np.uint8]:
    """A 256-entry table from the tumor model's tissues to the scheme's internal classes
    (the identity on NCR, ED and ET for BraTS 2020 and 2023)."""
    s = scheme_named(scheme)
    table = np.zeros(256, dtype=np.uint8)
    for tissue, name in _TISSUE_CLASSES[s.name].items():
        table[tissue] = s.class_index(name)
    return table


# --------------------------------------------------------------------------------------------
# Generation


def generate_case(index: int, config: SynthConfig = SynthConfig()) -> SynthCase:
    """Generate case ``index`` of the cohort ``config`` describes (deterministic).

    Returns:
        a :class:`SynthCase` with the scheme's ``(D, H, W) int16`` images, a
        ``(D, H, W) uint8`` internal label volume and a ``(4, 4) float64`` affine,
        ``(D, H, W) = config.shape``.
    """
    # The first three streams are what they were before the fourth (variety) was added, and
    # the first four what they were before the fifth (treatment).
    streams = np.random.SeedSequence([config.seed, index]).spawn(5)
    geo_rng, tumor_rng, intensity_rng, variety_rng, treatment_rng = (
        np.random.default_rng(s) for s in streams
    )
    scheme = config.scheme
    classes = {c.name for c in scheme.classes}
    spacing = np.asarray(config.spacing)
    affine = output_affine(config)
    template = template_for(config.spacing)

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

    # The kinds once were these draws; they still happen, so every later draw of the streams
    # (the tumor's shape, the second lesion) is what it was.
    tumor_rng.random()
    variety_rng.random(2)
    phases = kind_phases(config.seed, 6)
    enhancing = not has_kind(index, config.p_no_enhancing, phases[0])
    multifocal = has_kind(index, config.p_multifocal, phases[1])
    small = has_kind(index, config.p_small, phases[2])
    cavity = "RC" in classes and has_kind(index, config.p_cavity, phases[3])
    residual = not (
        cavity
        and has_kind(
            kind_ordinal(index, config.p_cavity, phases[3]), config.p_cavity_only, phases[4]
        )
    )
    cyst = "CC" in classes and has_kind(index, config.p_cyst, phases[5])
    if "GTV" in classes:
        depth = brain_depth(brain, config.spacing)
        tumor = grow_meningioma(tumor_rng, world, mni, depth, spacing, small=small)
        keep_connected_to_anchor(tumor, points, config.shape)
        enhancing, multifocal = True, False
    else:
        typical = METASTASIS if scheme.lesion_task == "metastasis" else TYPICAL
        size = SMALL if small else typical
        tumor = grow_tumor(tumor_rng, world, mni, tissue, spacing, enhancing, size=size)
        if multifocal:
            second = grow_tumor(
                variety_rng,
                world,
                mni,
                tissue,
                spacing,
                enhancing,
                size=SMALL if small else (typical if typical is METASTASIS else SATELLITE),
                away_from=tumor.foci,
            )
            tumor = merge_tumors(tumor, second)
        keep_one_core_per_focus(tumor, points, config.shape)
        keep_connected_to_core(tumor, points, config.shape)
        if cavity:
            tumor = resect(treatment_rng, tumor, points, config.shape, spacing, residual=residual)
            enhancing = enhancing and residual
        if cyst:
            tumor = add_cyst(treatment_rng, tumor, points, config.shape, world, spacing)
    values = render(
        intensity_rng,
        tissue,
        tumor,
        world,
        points,
        config.profile,
        config.spacing[2],
        enhancing,
        scheme.images,
    )

    images: dict[str, npt.NDArray[np.int16]] = {}
    for modality in scheme.images:
        vol = np.zeros(config.shape, dtype=np.int16)
        vol[points] = values[modality]
        images[modality] = vol
    label = np.zeros(config.shape, dtype=np.uint8)
    label[points] = tissue_table(scheme)[tumor.label]
    if config.spacing_mm is not None and not same_spacing(config.spacing, config.spacing_mm):
        images, label, affine = acquire(images, label, config)
    case_id = case_id_for(index, scheme)
    return SynthCase(
        case_id,
        index,
        images,
        label,
        affine,
        enhancing,
        len(tumor.foci),
        small,
        config.site,
        scheme.name,
        cavity,
        residual,
        cyst,
    )


def acquire(
    images: dict[str, npt.NDArray[np.int16]], label: npt.NDArray[np.uint8], config: SynthConfig
) -> tuple[dict[str, npt.NDArray[np.int16]], npt.NDArray[np.uint8], F64]:
    """A case drawn on ``config.shape`` as acquired at ``config.spacing_mm`` over the same
    field of view: each image blurred by a Gaussian of sigma ``(f - 1) / 2`` voxels along an
    axis made ``f`` times coarser (what a larger voxel averages), interpolated linearly onto
    :attr:`SynthConfig.acquired_shape` and zero outside the brain; the label resampled per
    class (:func:`brats.volume.resample.resample_labels`); the affine centred as before."""
    assert config.spacing_mm is not None
    shape = config.acquired_shape
    factors = [a / b for a, b in zip(config.spacing_mm, config.spacing, strict=True)]
    sigma = [max(0.0, (f - 1.0) / 2.0) for f in factors]
    first = next(iter(images.values()))
    brain = resample_labels((first > 0).astype(np.uint8), shape, None) > 0
    acquired = {}
    for modality, volume in images.items():
        smooth = ndimage.gaussian_filter(volume.astype(np.float32), sigma, mode="nearest")
        out = resample_image(smooth, shape, None, order=1)
        acquired[modality] = np.clip(np.rint(out), 1, np.iinfo(np.int16).max).astype(np.int16)
        acquired[modality][~brain] = 0
    grid = replace(config, shape=shape, spacing_mm=None, field_of_view_mm=_fov(shape, config))
    return acquired, resample_labels(label, shape, None), output_affine(grid)


def _fov(shape: tuple[int, int, int], config: SynthConfig) -> tuple[float, float, float]:
    assert config.spacing_mm is not None
    a, b, c = (n * s for n, s in zip(shape, config.spacing_mm, strict=True))
    return (a, b, c)


def _placement(
    rng: np.random.Generator, template: Template, config: SynthConfig, affine: F64
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
    template: Template, vox_to_tpl: F64, shape: tuple[int, int, int]
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


def case_files(case: SynthCase, config: SynthConfig, *, seg: bool) -> dict[str, bytes]:
    """Every file of ``case`` as ``{file name: NIfTI bytes}``: the scheme's images, and the
    segmentation (in the scheme's labels on disk) only when ``seg``."""
    files = {
        file_name(case.case_id, m, config): encode_nifti(
            case.images[m], case.affine, compress=config.compress
        )
        for m in config.scheme.images
    }
    if seg:
        disk = to_disk(case.label, config.scheme)
        files[file_name(case.case_id, "seg", config)] = encode_nifti(
            disk, case.affine, compress=config.compress
        )
    return files


def write_files(root: str | os.PathLike[str], case_id: str, files: dict[str, bytes]) -> str:
    """Write ``files`` (``{name: bytes}``) into ``root/<case_id>/``; return that folder's URI."""
    location = resolve(os.fspath(root)).child(validate_case_id(case_id))
    fs = location.filesystem()
    for name, data in files.items():
        write_bytes_atomic(fs, posixpath.join(location.path, name), data)
    return location.uri


def write_case(
    root: str | os.PathLike[str], case: SynthCase, config: SynthConfig = SynthConfig()
) -> str:
    """Write ``root/<id>/<id>_<modality>.nii.gz`` (or the scheme's names) and return the
    folder.

    ``root`` is a local folder or an ``s3://`` URI. The segmentation is written in the
    scheme's labels on disk, and only when ``config.labeled``.
    """
    return write_files(root, case.case_id, case_files(case, config, seg=config.labeled))


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
# The command


def add_convention_flag(parser: argparse.ArgumentParser, dest: str = "synth.convention") -> None:
    """Add ``--convention``, the flag ``--label-scheme`` had before label schemes, to a parser
    built from :class:`SynthCommand`: it takes the two glioma schemes it always took and sets
    the same field."""
    parser.add_argument(
        "--convention",
        dest=dest,
        choices=["brats2020", "brats2023"],
        default="brats2020",
        help="older name of --label-scheme, brats2020 or brats2023 only (default: brats2020)",
    )


@dataclass(frozen=True)
class SynthCommand:
    """Everything ``brats synth`` takes."""

    out: str = option(positional=True, help="cohort root: local folder or s3://bucket/prefix")
    cases: int = option(8, help="labeled cases")
    synth: SynthConfig = field(default_factory=SynthConfig)
    unlabeled: int = option(0, help="extra cases without a seg")
    start: int = option(1, help="index of the first case")
