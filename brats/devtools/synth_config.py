"""What a generated cohort is (:class:`SynthConfig`), what one generated case holds
(:class:`SynthCase`), and how each label scheme's release names its cases and files
(:func:`case_id_for`, :func:`file_name`): ``BraTS20_Training_001/
BraTS20_Training_001_flair.nii.gz``; ``BraTS-GLI-00001-000/BraTS-GLI-00001-000-t2f.nii.gz``
(2023; ``-100``, a post-treatment time point, for gli2024; ``BraTS-MET-``, ``BraTS-PED-``);
``BraTS-MEN-RT-0001-1/BraTS-MEN-RT-0001-1_t1c.nii.gz`` and ``..._gtv.nii.gz``, as the BraTS
2024 MEN-RT release names them. :mod:`brats.devtools.synth` generates and writes the cases.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from brats.devtools.sites import SITES, SiteProfile
from brats.devtools.template import F64
from brats.options import option
from brats.volume.labels import SCHEMES, LabelScheme, SchemeError
from brats.volume.resample import as_spacing, resampled_shape

# BraTS 2023 file-name tokens for the canonical modalities (the same table brats.io.cases reads).
_TOKENS_2023: Final = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}


@dataclass(frozen=True)
class _Naming:
    """How a scheme's release names its cases and files: ``case_id`` formats the index,
    ``sep`` joins the id and a file's token, ``tokens`` maps canonical image names to the
    release's (``None``: the canonical names)."""

    case_id: str
    sep: str
    tokens: dict[str, str] | None


_NAMING: Final[dict[str, _Naming]] = {
    "brats2020": _Naming("BraTS20_Training_{:03d}", "_", None),
    "brats2023": _Naming("BraTS-GLI-{:05d}-000", "-", _TOKENS_2023),
    "met2023": _Naming("BraTS-MET-{:05d}-000", "-", _TOKENS_2023),
    "men2023": _Naming("BraTS-MEN-{:05d}-000", "-", _TOKENS_2023),
    # BraTS 2024 post-treatment glioma: time points -100, -101, ...
    "gli2024": _Naming("BraTS-GLI-{:05d}-100", "-", _TOKENS_2023),
    "met2024": _Naming("BraTS-MET-{:05d}-000", "-", _TOKENS_2023),
    "ped2024": _Naming("BraTS-PED-{:05d}-000", "-", _TOKENS_2023),
    # BraTS 2024 MEN-RT: BraTS-MEN-RT-0292-1/BraTS-MEN-RT-0292-1_t1c.nii.gz, ..._gtv.nii.gz
    "menrt2024": _Naming("BraTS-MEN-RT-{:04d}-1", "_", _TOKENS_2023),
}


_SHARES: Final = (
    "p_no_enhancing",
    "p_multifocal",
    "p_small",
    "p_cavity",
    "p_cavity_only",
    "p_cyst",
)


@dataclass(frozen=True)
class SynthConfig:
    """How to generate a cohort.

    Attributes:
        shape: output grid ``(D, H, W)`` in voxels (axis 0 runs right-to-left, axis 1
            anterior-to-posterior, axis 2 inferior-to-superior, as in BraTS).
        field_of_view_mm: physical size of the grid; spacing is ``field_of_view_mm / shape``,
            so a small grid holds the same whole brain at a coarser spacing.
        spacing_mm: the voxel size the case is acquired at (``--spacing``), ``None``: the
            grid's. The anatomy is always drawn on ``shape`` (so case ``i`` is the same brain
            and tumour at every spacing) and then written on the grid of this spacing over
            the same field of view (:attr:`acquired_shape`): images averaged over the larger
            voxels (a Gaussian of the downsampling) and interpolated, labels resampled as
            nnU-Net resamples segmentations. ``(3.75, 3.75, 7.5)`` with the demo's
            ``64 x 64 x 48``: the demo's anatomy in 24 slices instead of 48.
        convention: the label scheme (``--label-scheme``), the name of a built-in one
            (:data:`~brats.volume.labels.SCHEMES`; a :class:`LabelScheme` is taken by its
            name): the file names, the labels on disk, the images written and the kinds of
            lesion (see the module docstring). ``"brats2020"`` (``<id>_flair.nii.gz``, ET = 4)
            or ``"brats2023"`` (``<id>-t2f.nii.gz``, ET = 3) are the glioma of before.
        compress: write ``.nii.gz`` (True) or ``.nii``.
        seed: cohort seed; case ``i`` depends only on ``(seed, i)``.
        p_no_enhancing: share of tumors with no enhancing part (the core is all necrosis,
            label 1), like a lower-grade glioma. This and the two shares below are exact over
            consecutive case indices (:func:`~brats.devtools.tumor.has_kind`), not drawn per case.
        p_multifocal: share of cases with two separate tumors: a second, smaller
            lesion at another white-matter position, farther from the first than the first's
            edema radius and far enough that the two cores never touch (edema may merge). Both
            follow the same label rules and share ``enhancing``.
        p_small: share of cases whose tumor is small (necrosis radius 2-5 mm instead of
            3-12 mm, a thinner rim, less edema; a meningioma of radius 4-9 mm instead of
            8-22 mm); on a coarse grid the radii are still floored at the voxel size, so
            every class keeps voxels.
        p_cavity: share of post-treatment cases (schemes with a resection cavity, RC:
            ``gli2024``, ``met2024``) whose tumor core was resected: a fluid-filled cavity
            where the core was, dark on T1 and FLAIR, bright on T2, not enhancing.
        p_cavity_only: share of those resected cases with no tumor core left (cavity and
            edema only, no enhancement); the others keep a thin rim of residual tumor
            (enhancing or not) around the cavity. Exact over consecutive resected cases.
        p_cyst: share of ``ped2024`` tumors with a cyst (CC) inside the tumor core: fluid,
            bright on T2, dark on T1, not enhancing, walled in by the core.
        site: the acquisition site, a key of :data:`SITES`: how the images look (contrast,
            gamma, slice thickness, bias, noise). It never changes the anatomy or the labels:
            case ``i`` has the same label volume and brain mask at every site.
        labeled: write a segmentation file.
        noise: override of the site's Rician noise sigma (a fraction of each modality's
            white-matter intensity); ``None``: the site's.
        bias: override of the site's log bias-field standard deviation; ``None``: the site's.
        intensity_jitter: override of the site's per-case, per-modality intensity scale
            range ``1 +- intensity_jitter``; ``None``: the site's.
        scale_range: range of the random brain scale (capped so the brain fits the box).
        max_rotation_deg: largest random rotation about each axis.
        max_shift_mm: largest random shift along each axis.
    """

    shape: tuple[int, int, int] = option(
        (240, 240, 155),
        metavar=("D", "H", "W"),
        help="output grid; the field of view stays 240 x 240 x 155 mm",
    )
    field_of_view_mm: tuple[float, float, float] = (240.0, 240.0, 155.0)
    spacing_mm: tuple[float, float, float] | None = option(
        None,
        flag="--spacing",
        metavar=("X", "Y", "Z"),
        help="acquire the cases at this voxel size in mm: the anatomy of --shape's grid, "
        "written on the grid of this spacing over the same field of view (e.g. thicker "
        "slices: the same tumours, fewer slices)",
    )
    convention: str = option(
        "brats2020",
        flag="--label-scheme",
        choices=tuple(SCHEMES),
        help="label scheme: file names, label values on disk, images and kinds of lesion",
    )
    compress: bool = option(True, flag="--nii", help="write .nii instead of .nii.gz")
    seed: int = option(0, help="cohort seed; case i depends only on (seed, i)")
    p_no_enhancing: float = option(0.25, help="share of tumors with no enhancing part")
    p_multifocal: float = option(0.15, help="share of cases with two separate tumors")
    p_small: float = option(0.15, help="share of cases whose tumor is small")
    p_cavity: float = option(0.5, help="share of cases with a resection cavity (gli2024, met2024)")
    p_cavity_only: float = option(
        0.25, help="share of resected cases with no tumor core left (gli2024, met2024)"
    )
    p_cyst: float = option(0.5, help="share of tumors with a cyst (ped2024)")
    site: str = option(
        "a",
        choices=tuple(SITES),
        help="acquisition site the images look like (the labels are the same at every site)",
    )
    labeled: bool = True
    noise: float | None = None
    bias: float | None = None
    intensity_jitter: float | None = None
    scale_range: tuple[float, float] = (0.9, 1.0)
    max_rotation_deg: float = 4.0
    max_shift_mm: float = 4.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "convention", _naming_key(self.convention))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "field_of_view_mm", tuple(float(f) for f in self.field_of_view_mm))
        if self.spacing_mm is not None:
            object.__setattr__(self, "spacing_mm", as_spacing(self.spacing_mm))
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise ValueError(f"shape must be three sizes of at least 8, got {self.shape}")
        if len(self.field_of_view_mm) != 3 or min(self.field_of_view_mm) <= 0:
            raise ValueError(
                f"field_of_view_mm must be three positive sizes, got {self.field_of_view_mm}"
            )
        if self.seed < 0:
            raise ValueError("seed must be non-negative")
        for name in _SHARES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a share in [0, 1], got {getattr(self, name)}")
        if self.site not in SITES:
            raise ValueError(f"unknown site {self.site!r}; the sites are {', '.join(SITES)}")
        for name in ("noise", "bias", "intensity_jitter"):
            value = getattr(self, name)
            if value is not None and value < 0.0:
                raise ValueError(f"{name} must be None (the site's) or non-negative, got {value}")
        if self.intensity_jitter is not None and self.intensity_jitter >= 1.0:
            raise ValueError(f"intensity_jitter must be below 1, got {self.intensity_jitter}")

    @property
    def acquired_shape(self) -> tuple[int, int, int]:
        """The grid the files have: ``shape``, or the field of view at ``spacing_mm``."""
        if self.spacing_mm is None:
            return self.shape
        return resampled_shape(self.shape, self.spacing, self.spacing_mm)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm of the anatomy's grid: field of view / shape."""
        fov, shape = self.field_of_view_mm, self.shape
        return (fov[0] / shape[0], fov[1] / shape[1], fov[2] / shape[2])

    @property
    def scheme(self) -> LabelScheme:
        """The label scheme (:attr:`convention`) as a :class:`LabelScheme`."""
        return SCHEMES[self.convention]

    @property
    def profile(self) -> SiteProfile:
        """The site's profile with this config's ``noise``/``bias``/``intensity_jitter``
        overrides applied."""
        base = SITES[self.site]
        return replace(
            base,
            noise=base.noise if self.noise is None else self.noise,
            bias=base.bias if self.bias is None else self.bias,
            intensity_jitter=(
                base.intensity_jitter if self.intensity_jitter is None else self.intensity_jitter
            ),
        )


@dataclass(frozen=True)
class SynthCase:
    """One generated case, in memory.

    Attributes:
        case_id: e.g. ``BraTS20_Training_001``, ``BraTS-GLI-00001-000``,
            ``BraTS-MEN-RT-0001-1``.
        index: the case index its randomness derives from.
        images: canonical image name -> ``(D, H, W) int16``, non-negative, zero outside the
            brain: the scheme's images (``flair``, ``t1``, ``t1ce``, ``t2``; ``menrt2024``:
            ``t1ce`` alone).
        label: ``(D, H, W) uint8`` internal classes of the scheme (``0..len(classes)``;
            ground truth even when the case is written unlabeled).
        affine: ``(4, 4) float64`` voxel -> RAS mm, ``diag(-s0, -s1, s2)`` centred on the grid.
        enhancing: whether the tumor has an enhancing part.
        foci: how many separate tumors the case has (1, or 2 when multifocal).
        small: whether the tumor was drawn small.
        site: the acquisition site the images were rendered for.
        scheme: the label scheme's name.
        cavity: whether the tumor core was resected (a resection cavity).
        residual: whether tumor core is left (always, unless resected without residue).
        cyst: whether the tumor holds a cyst.
    """

    case_id: str
    index: int
    images: dict[str, npt.NDArray[np.int16]]
    label: npt.NDArray[np.uint8]
    affine: F64
    enhancing: bool
    foci: int = 1
    small: bool = False
    site: str = "a"
    scheme: str = "brats2020"
    cavity: bool = False
    residual: bool = True
    cyst: bool = False


def case_id_for(index: int, convention: LabelScheme | str) -> str:
    """The BraTS-style id of case ``index`` in a label scheme (``BraTS20_Training_001``,
    ``BraTS-GLI-00001-000``, ``BraTS-GLI-00001-100``, ``BraTS-MET-00001-000``,
    ``BraTS-PED-00001-000``, ``BraTS-MEN-RT-0001-1``)."""
    if index < 0:
        raise ValueError(f"case index must be non-negative, got {index}")
    return _naming(convention).case_id.format(index)


def file_name(case_id: str, kind: str, config: SynthConfig) -> str:
    """File name of one of the scheme's images (canonical name) or of its segmentation
    (``"seg"``, or the scheme's own truth suffix, ``"gtv"``) for a case under ``config``."""
    scheme = config.scheme
    if kind == scheme.truth:
        kind = "seg"
    if kind not in (*scheme.images, "seg"):
        raise ValueError(
            f"unknown file kind {kind!r} for scheme {scheme.name}: its files are "
            f"{[*scheme.images, scheme.truth]}"
        )
    naming = _naming(scheme)
    token = scheme.truth if kind == "seg" else (naming.tokens or {}).get(kind, kind)
    ext = ".nii.gz" if config.compress else ".nii"
    return f"{case_id}{naming.sep}{token}{ext}"


def _naming_key(scheme: LabelScheme | str) -> str:
    """The built-in scheme's name; :class:`SchemeError` for any other."""
    name = scheme.name if isinstance(scheme, LabelScheme) else str(scheme)
    if name not in _NAMING:
        raise SchemeError(
            f"unknown label scheme {name!r}: brats synth writes the built-in schemes only "
            f"({', '.join(SCHEMES)})"
        )
    return name


def _naming(scheme: LabelScheme | str) -> _Naming:
    return _NAMING[_naming_key(scheme)]


def output_affine(config: SynthConfig) -> F64:
    """BraTS-like ``(4, 4)`` affine: ``diag(-s0, -s1, s2)``, grid centre at world (0, 0, 0)."""
    spacing = np.asarray(config.spacing)
    rot = np.diag(spacing * np.array([-1.0, -1.0, 1.0]))
    centre = (np.asarray(config.shape, dtype=np.float64) - 1.0) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = rot
    affine[:3, 3] = -rot @ centre
    return affine
