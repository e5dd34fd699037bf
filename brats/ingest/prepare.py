"""How a validated case becomes network input: the settings and the prepared case.

The math lives in :func:`brats.volume.normalize.prepare_volume`; this module ties it to a
case's files (:class:`brats.io.nifti.CaseVolumes`) and keeps what is needed to write a
prediction back in the case's own geometry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from brats.io.cases import MODALITIES, Discovery
from brats.io.model_card import ModelInfo
from brats.io.nifti import CaseVolumes, Limits
from brats.io.schemes import check_images, load_scheme, resolve_cohort_scheme
from brats.options import internal, option
from brats.storage import Location
from brats.volume.geometry import CropBox
from brats.volume.labels import LabelScheme
from brats.volume.normalize import Normalization, prepare_volume
from brats.volume.resample import (
    as_spacing,
    resample_image,
    resample_labels,
    resampled_shape,
    same_spacing,
    separate_axis,
)

DTYPES = ("float16", "float32")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a case becomes a network input. Stored in the cohort manifest and in model.json."""

    modalities: tuple[str, ...] = option(
        MODALITIES, help="channels in order (FLAIR, T1ce, T2 alone: flair,t1ce,t2)"
    )
    normalization: Normalization = option(
        Normalization.ZSCORE, help="per-modality intensity normalization"
    )
    crop_to_brain: bool = option(True, flag="--no-crop", help="keep the full grid")
    crop_margin: int = 0
    dtype: str = option(
        "float16", choices=DTYPES, help="stored image type (float16 halves the cohort's size)"
    )
    label_scheme: str | None = option(
        None,
        metavar="SCHEME",
        help="the cohort's label scheme: brats2020, brats2023, gli2024, met2024, ped2024, "
        "menrt2024, or a JSON file of your own (default: from the names and labels of the "
        "whole cohort)",
    )
    target_spacing: tuple[float, float, float] | None = option(
        None,
        metavar=("X", "Y", "Z"),
        help="resample every case to this voxel size in mm (default: the cohort's own, by "
        "nnU-Net's rule: the median spacing, or a finer slice spacing where the median is "
        "anisotropic; brats.volume.resample)",
    )
    limits: Limits = field(default_factory=Limits)
    scheme: LabelScheme | None = internal()
    """The scheme the cohort was resolved to (:mod:`brats.io.schemes`), set by the jobs before
    any case is read; ``None`` (library use) reads each case as :func:`brats.io.nifti.read_case`
    does without one."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct names from {MODALITIES}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}")
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "normalization", Normalization(self.normalization))
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", as_spacing(self.target_spacing))

    @classmethod
    def for_model(cls, info: ModelInfo, *, limits: Limits | None = None) -> PreprocessConfig:
        """How cases are prepared for a trained network: its modalities and normalization,
        the cohort defaults for the rest. Never a ``target_spacing``: a case to segment is
        read on its own grid, where its mask is written, and the predictor resamples it
        (:meth:`brats.segment.predictor.Predictor.resampling`)."""
        return cls(
            modalities=info.modalities,
            normalization=Normalization(info.normalization),
            limits=limits or Limits(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "modalities": list(self.modalities),
            "normalization": self.normalization.value,
            "crop_to_brain": self.crop_to_brain,
            "crop_margin": self.crop_margin,
            "dtype": self.dtype,
            "label_scheme": self.scheme.name if self.scheme else self.label_scheme,
            "target_spacing": None if self.target_spacing is None else list(self.target_spacing),
        }

    def with_scheme(self, scheme: LabelScheme) -> PreprocessConfig:
        """This config with the cohort's resolved scheme."""
        return replace(self, scheme=scheme)


@dataclass(frozen=True)
class PreparedCase:
    """A case ready for a network, with what it takes to put a prediction back.

    Attributes:
        case_id: the validated case id.
        image: ``(C, d, h, w)`` normalized, cropped to ``crop``, in the cohort's dtype; a
            ``(C, 0, 0, 0)`` array where only the geometry travels (after prediction).
        label: ``(d, h, w) uint8`` internal classes in the same crop, or ``None``.
        crop: where ``image`` sits in the source grid.
        affine: ``(4, 4)`` voxel to world (mm) of the source grid.
        spacing: voxel size in mm per axis.
        label_scheme: the name of the label scheme ``label`` was read in.
        checksums: file name -> sha256 of the bytes as stored.
        header: the source NIfTI header (``binaryblock``), empty when there is none (or
            the case was resampled); a mask written back copies its geometry.
        file_spacing: the voxel size of the case's files when the case was resampled to
            ``spacing`` (:func:`resample_prepared`), else ``None`` (the same).
        file_shape: the shape of the case's files when it was resampled, else ``None``.
    """

    case_id: str
    image: npt.NDArray[np.floating]
    label: npt.NDArray[np.uint8] | None
    crop: CropBox
    affine: npt.NDArray[np.float64]
    spacing: tuple[float, float, float]
    label_scheme: str
    checksums: dict[str, str] = field(default_factory=dict)
    header: bytes = b""
    file_spacing: tuple[float, float, float] | None = None
    file_shape: tuple[int, int, int] | None = None


def scheme_config(
    config: PreprocessConfig, found: Discovery, cohort: Location, *, s3_endpoint: str | None
) -> PreprocessConfig:
    """``config`` with the cohort's label scheme resolved once, before any case is read
    (:func:`brats.io.schemes.resolve_scheme`), and the scheme's images as the channels when
    the default four were asked for (meningioma radiotherapy has T1c alone).

    Raises:
        brats.io.schemes.SchemeUnresolved: the names and labels leave the scheme open.
        brats.volume.labels.SchemeError: a bad ``--label-scheme``, or channels the scheme
            lacks.
    """
    given = load_scheme(config.label_scheme, s3_endpoint=s3_endpoint)
    resolved = resolve_cohort_scheme(found.cases, cohort, given, config.limits)
    log.info("label scheme %s (from the %s)", resolved.scheme.name, resolved.reason)
    config = config.with_scheme(resolved.scheme)
    if config.modalities == MODALITIES and resolved.scheme.images != MODALITIES:
        config = replace(config, modalities=resolved.scheme.images)
    check_images(resolved.scheme, config.modalities)
    return config


def prepare_case(volumes: CaseVolumes, config: PreprocessConfig) -> PreparedCase:
    """Stack, crop and normalize a validated case into network input (see
    :func:`brats.volume.normalize.prepare_volume`), in the case's own grid: the predictor
    resamples what it segments itself, so that it can write the mask back
    (:func:`resample_prepared` is the training cohort's step)."""
    image, label, box = prepare_volume(
        [volumes.images[m] for m in config.modalities],
        config.normalization,
        label=volumes.label,
        crop_to_brain=config.crop_to_brain,
        margin=config.crop_margin,
        dtype=config.dtype,
    )
    return PreparedCase(
        case_id=volumes.case_id,
        image=image,
        label=label,
        crop=box,
        affine=volumes.affine,
        spacing=volumes.spacing,
        label_scheme=volumes.scheme.name,
        checksums=volumes.checksums,
        header=bytes(volumes.header.binaryblock) if volumes.header is not None else b"",
    )


def resample_prepared(
    prepared: PreparedCase, target: tuple[float, float, float], dtype: str
) -> PreparedCase:
    """A prepared case (image and label) resampled to ``target`` spacing over its brain box,
    as a training cohort stores it; the case itself when it is at ``target`` already
    (:func:`brats.volume.resample.same_spacing`).

    The result is its own grid: ``crop`` the whole resampled box, ``spacing`` the target
    (the box's size is rounded to whole voxels, so the affine, which places the box's cells
    exactly over the source box, may differ from it by under half a voxel over the box),
    ``file_spacing`` and ``file_shape`` what the files had, and no header (a mask is never
    written on this grid). Images take third-order splines and labels nnU-Net's
    per-class linear resampling, a separate slice axis nearest neighbour
    (:mod:`brats.volume.resample`).
    """
    if same_spacing(prepared.spacing, target):
        return prepared
    box = prepared.crop
    shape = resampled_shape(box.size, prepared.spacing, target)
    axis = separate_axis(prepared.spacing, target)
    image = resample_image(prepared.image, shape, axis).astype(dtype, copy=False)
    label = None if prepared.label is None else resample_labels(prepared.label, shape, axis)
    factor = np.asarray(box.size, np.float64) / np.asarray(shape, np.float64)
    step = np.eye(4)
    step[:3, :3] = np.diag(factor)
    step[:3, 3] = np.asarray(box.start, np.float64) + 0.5 * factor - 0.5
    return replace(
        prepared,
        image=np.ascontiguousarray(image),
        label=label,
        crop=CropBox((0, 0, 0), shape, shape),
        affine=np.asarray(prepared.affine, np.float64) @ step,
        spacing=target,
        header=b"",
        file_spacing=prepared.spacing,
        file_shape=box.shape,
    )
