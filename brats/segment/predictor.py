"""The one way a volume is segmented: a trained model, its outputs decoded into labels.

A :class:`Predictor` holds one network and what it was trained on (its
:class:`~brats.io.model_card.ModelInfo`) and serves three levels, each built on the one below:

* **arrays**: :meth:`Predictor.probabilities` maps a network input ``(C, D, H, W)`` to
  ``(K, D, H, W) float32`` probabilities (K classes of a softmax, or the 3 region sigmoids;
  sliding window of the training patch size, Gaussian blending, flip TTA when the model's
  recipe or the settings ask for it);
  :meth:`Predictor.labels` decodes them into ``(D, H, W) uint8`` internal classes on the
  same grid;
* **a prepared case**: :meth:`Predictor.segment` gives the labels in the case's source grid
  (pasted back from the brain crop), postprocessed (:mod:`brats.volume.postprocess`);
  :meth:`Predictor.segment_volume` does the same for raw channels that come without files;
* **files**: :meth:`Predictor.segment_files` reads a case's NIfTI files and gives its labels
  and its mask: NIfTI bytes in the case's own geometry and the run's label scheme
  (:func:`export_mask`).

The segmentation job's model actors, the app and training validation all predict through
it, so a change to prediction (precision, outputs, TTA, postprocessing) is made here once.
TensorFlow is imported when a predictor is made, not when this module is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from brats.errors import CaseError
from brats.ingest.prepare import PreparedCase, PreprocessConfig, prepare_case
from brats.io.cases import Case
from brats.io.model_card import ModelInfo
from brats.io.nifti import CaseVolumes, Limits, encode_mask, header_from_bytes, read_case
from brats.io.schemes import names_scheme
from brats.network.precision import at_precision, resolve_precision
from brats.segment.backends import (
    keras_predict,
    mean_predict,
    onnx_networks,
    onnx_precision,
    onnx_predict,
    resolve_backend,
)
from brats.segment.settings import PredictSettings
from brats.segment.sliding_window import Predict, sliding_window_predict
from brats.storage import Location, resolve
from brats.volume.geometry import CropBox, paste_back
from brats.volume.labels import LabelScheme, regions_to_labels, to_disk
from brats.volume.normalize import prepare_volume
from brats.volume.postprocess import Postprocessing, small_et_to_necrosis
from brats.volume.resample import (
    resample_image,
    resample_labels,
    resample_probabilities,
    resampled_shape,
    same_spacing,
    separate_axis,
)
from brats.volume.uncertainty import (
    entropy_map,
    foreground_probability,
    pairwise_dice,
    tumour_entropy,
    uncertainty_score,
)

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Assessment:
    """A network input's probabilities ``(K, D, H, W)``, their labels ``(D, H, W)`` (on the
    input's grid, before postprocessing), and how sure they are
    (:mod:`brats.volume.uncertainty`): ``agreement`` of the folds, ``entropy`` of the
    tumour they predict, and ``uncertainty``, the score a reviewer sorts by; ``resampled_to``,
    the model's spacing where the network saw the input resampled to it, else ``None``."""

    probabilities: npt.NDArray[np.float32]
    labels: npt.NDArray[np.uint8]
    agreement: float
    entropy: float
    uncertainty: float
    resampled_to: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class SegmentedCase:
    """A case segmented from its files: what was read, what the network saw, the result.

    Attributes:
        volumes: the case's validated volumes as read (raw intensities).
        prepared: the network input and the geometry to write back.
        labels: ``(D, H, W) uint8`` internal classes in the source grid.
        mask: the mask as NIfTI bytes (:func:`export_mask`).
        assessment: the probabilities on the network's grid (the brain crop) and how sure
            they are (:meth:`Predictor.assess`).
    """

    volumes: CaseVolumes
    prepared: PreparedCase
    labels: npt.NDArray[np.uint8]
    mask: bytes
    assessment: Assessment


@dataclass(frozen=True)
class Resampling:
    """A case's way to the model's spacing and back (:meth:`Predictor.resampling`)."""

    spacing: tuple[float, float, float]
    """The model's spacing, which the network sees."""
    shape: tuple[int, int, int]
    """The brain box's shape at it."""
    source: tuple[int, int, int]
    """The brain box's shape on the case's own grid, where probabilities go back to."""
    axis: int | None
    """The slice axis resampled on its own (:func:`brats.volume.resample.separate_axis`)."""


def _mm(spacing: Sequence[float]) -> str:
    return " x ".join(f"{s:g}" for s in spacing)


class Predictor:
    """A network (or an ensemble's) and the way to segment with it (see the module docstring).

    Args:
        model: the Keras U-Net (``(B, d, h, w, C)`` in, ``(B, d, h, w, K)`` probabilities out;
            of a deep-supervision model, the full-resolution output is used), an ONNX model's
            bytes (an export's ``model.onnx``: the same network's main output), or the folds
            of an ensemble (all of one kind), whose outputs are averaged per window
            (:func:`~brats.segment.backends.mean_predict`).
        info: what the network was trained on; its ``patch_size`` is the window, its
            ``modalities`` and ``normalization`` prepare raw input.
        settings: overlap, TTA, postprocessing, precision, backend, windows per call. ONNX
            bytes always run in ONNX Runtime; Keras models run in Keras, or in ONNX Runtime
            (converted and checked first) with ``backend="onnxruntime"``.
        version: the model's version id (the sha256 of its ``model.keras`` or
            ``model.onnx``), for records; empty for a network not yet exported (training
            validation).

    Raises:
        BackendError: ONNX Runtime asked for and not installed, or asked for at a precision
            other than float32 (it runs the float32 network).
    """

    def __init__(
        self,
        model: keras.Model | bytes | Sequence[keras.Model] | Sequence[bytes],
        info: ModelInfo,
        settings: PredictSettings | None = None,
        *,
        version: str = "",
    ) -> None:
        self.info = info
        self.settings = settings or PredictSettings()
        self.version = version
        self.n_outputs = int(info.unet.n_outputs)
        self.flip_tta = self.settings.tta == "on" or (self.settings.tta == "model" and info.tta)
        """Whether outputs are averaged over the 8 axis flips (``settings.tta`` resolved)."""
        models: list[Any] = (
            [model] if isinstance(model, bytes) or not isinstance(model, Sequence) else list(model)
        )
        self.n_models = len(models)
        """Networks averaged: 1, or an ensemble's folds in use."""
        exported = all(isinstance(m, bytes) for m in models)
        self.backend = (
            "onnxruntime" if exported or self.settings.backend == "onnxruntime" else "keras"
        )
        """The runtime the network runs in here (``keras`` or ``onnxruntime``)."""
        self.providers: list[str] = []
        """ONNX Runtime's execution providers in use (empty for Keras)."""
        if self.backend == "keras":
            self.precision = resolve_precision(self.settings.precision)
            """The precision the network runs in here (``settings.precision`` resolved)."""
            self.forwards: list[Predict] = [
                keras_predict(at_precision(m, info.unet, self.precision)) for m in models
            ]
            """Each network's forward pass (an ensemble's folds, in order)."""
        else:
            self.precision = onnx_precision(self.settings.precision)
            sessions = onnx_networks(models, info)
            self.providers = list(sessions[0].get_providers())
            self.forwards = [onnx_predict(s) for s in sessions]
        self.forward: Predict = mean_predict(self.forwards)
        """The forward pass: windows ``(B, d, h, w, C)`` in, float32 outputs out."""

    @classmethod
    def from_artifact(
        cls,
        where: str | Location,
        settings: PredictSettings | None = None,
        *,
        s3_endpoint: str | None = None,
    ) -> Predictor:
        """Load a model folder, or an ensemble's (its first ``settings.max_folds`` folds): a
        Keras model (:func:`brats.io.artifact.load_models`) or an ONNX export
        (:func:`brats.io.artifact.load_onnx`), in the runtime ``settings.backend`` resolves
        to (:func:`~brats.segment.backends.resolve_backend`), refusing one whose weights do
        not match its json (``ArtifactError``) or that the backend cannot run
        (``BackendError``)."""
        from brats.io.artifact import load_models, load_onnx, read_model_card

        location = where if isinstance(where, Location) else resolve(where, s3_endpoint=s3_endpoint)
        settings = settings or PredictSettings()
        card = read_model_card(location)
        resolve_backend(settings.backend, card, settings.precision)  # what it cannot run
        if card.export is not None:
            card, networks = load_onnx(location, max_folds=settings.max_folds, card=card)
            return cls(networks, card.info, settings, version=card.version)
        card, loaded = load_models(location, max_folds=settings.max_folds, card=card)
        return cls([m.model for m in loaded], card.info, settings, version=card.version)

    @property
    def postprocessing(self) -> Postprocessing:
        """The component rules stored with the model (chosen on its validation cases)."""
        return Postprocessing.from_dict(self.info.postprocessing, self.info.scheme)

    @property
    def preprocess(self) -> PreprocessConfig:
        """How raw cases are prepared for this network (its modalities and normalization)."""
        return PreprocessConfig.for_model(self.info)

    # --- arrays ---------------------------------------------------------------------------

    def probabilities(
        self, image: npt.NDArray[np.floating], forward: Predict | None = None
    ) -> npt.NDArray[np.float32]:
        """``(C, D, H, W)`` network input (prepared, any spatial size) -> ``(K, D, H, W)
        float32`` probabilities, blended over the sliding windows (of ``forward``: default
        :attr:`forward`, the ensemble's mean)."""
        return sliding_window_predict(
            np.asarray(image, dtype=np.float32),
            forward or self.forward,
            self.info.patch_size,
            n_classes=self.n_outputs,
            overlap=self.settings.overlap,
            batch_size=self.settings.batch_size,
            flip_tta=self.flip_tta,
        )

    def assess(self, image: npt.NDArray[np.floating], back: Resampling | None = None) -> Assessment:
        """The probabilities of a network input, their labels, and how sure they are: each
        network's probabilities on their own (the same forward passes as
        :meth:`probabilities`, whose mean they are, blending being linear), the folds'
        agreement on the tumour (:func:`~brats.volume.uncertainty.pairwise_dice` of their
        labels' foreground, on the network's grid; 1 for one model) and the tumour's entropy
        (:func:`~brats.volume.uncertainty.tumour_entropy` of the mean's
        :func:`~brats.volume.uncertainty.foreground_probability`, over the union of the
        folds' tumours and the mean's), before postprocessing. With ``back``, ``image`` is on
        the model's grid; the mean probabilities and the union are resampled to
        ``back.source`` before they are decoded (and the entropy taken)."""
        each = [self.probabilities(image, forward) for forward in self.forwards]
        mean = each[0] if len(each) == 1 else np.stack(each).mean(axis=0, dtype=np.float32)
        # One network agrees with itself: its labels are the mean's, decoded once.
        masks = [self.decode(p) > 0 for p in each] if len(each) > 1 else []
        agreement = pairwise_dice(masks) if masks else 1.0
        union = np.logical_or.reduce(masks) if masks else None
        if back is not None:
            mean = resample_probabilities(mean, back.source, back.axis)
            if union is not None:
                union = resample_labels(union.astype(np.uint8), back.source, back.axis) > 0
        labels = self.decode(mean)
        inside = labels > 0 if union is None else union | (labels > 0)
        outer = self.info.scheme.outer_outputs
        entropy = tumour_entropy(foreground_probability(mean, self.output_kind, outer), inside)
        score = uncertainty_score(agreement, entropy)
        spacing = None if back is None else back.spacing
        return Assessment(mean, labels, agreement, entropy, score, spacing)

    @property
    def output_kind(self) -> str:
        """What the network's outputs are: ``regions`` (one sigmoid per region output) or
        ``softmax`` (one probability per class)."""
        return "regions" if self.info.unet.output == "regions" else "softmax"

    @property
    def output_names(self) -> tuple[str, ...]:
        """The name of each output channel, in order: the scheme's region outputs (WT, TC,
        ET, ...), or its classes with ``background`` first for a softmax."""
        scheme = self.info.scheme
        if self.output_kind == "regions":
            return scheme.output_regions
        return ("background", *(c.name for c in scheme.classes))

    def entropy_map(self, assessment: Assessment) -> npt.NDArray[np.float32]:
        """The per-voxel uncertainty of an assessment, on its grid: the normalized entropy of
        the averaged probabilities (:func:`~brats.volume.uncertainty.entropy_map`), which is
        high where the folds disagree as well as where each is unsure."""
        return entropy_map(assessment.probabilities, self.output_kind)

    def decode(self, probabilities: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
        """``(K, D, H, W)`` outputs -> ``(D, H, W) uint8`` internal classes: the most probable
        class of a softmax, or nnU-Net's decoding of region sigmoids in the model's scheme
        (:func:`brats.volume.labels.regions_to_labels`)."""
        if self.info.unet.output == "regions":
            return regions_to_labels(probabilities, scheme=self.info.scheme)
        return np.argmax(probabilities, axis=0).astype(np.uint8)

    def labels(self, image: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
        """``(C, D, H, W)`` network input -> ``(D, H, W) uint8`` internal classes on the same
        grid, before postprocessing."""
        return self.decode(self.probabilities(image))

    # --- a prepared case ------------------------------------------------------------------

    def postprocess(self, labels: npt.NDArray[np.uint8], crop: CropBox) -> npt.NDArray[np.uint8]:
        """Labels decoded on a network input cropped at ``crop`` -> labels in the source grid
        (``crop.shape``), postprocessed (the model's component rules unless
        ``postprocess="none"``, then small-ET relabeling); background outside the crop."""
        pasted = paste_back(labels, crop)
        if self.settings.postprocess == "model":
            pasted = self.postprocessing.apply(pasted)
        return small_et_to_necrosis(pasted, self.settings.min_et_voxels, self.info.scheme)

    def segment_cropped(
        self, image: npt.NDArray[np.floating], crop: CropBox
    ) -> npt.NDArray[np.uint8]:
        """Labels of a network input cropped at ``crop``, in the source grid
        (:meth:`postprocess`)."""
        return self.postprocess(self.labels(image), crop)

    def resampling(self, prepared: PreparedCase) -> Resampling | None:
        """How a prepared case reaches the model's spacing (:attr:`ModelInfo.target_spacing
        <brats.io.model_card.ModelInfo>`): its brain box's shape there and the slice axis
        resampled on its own; ``None`` when the model does not know its spacing or the case is
        at it already (:func:`~brats.volume.resample.same_spacing`), and nothing is resampled.

        Raises:
            brats.errors.CaseError: the resampled box would have more voxels than
                ``Limits.max_voxels`` (checked before anything is allocated).
        """
        target = self.info.target_spacing
        if target is None or same_spacing(prepared.spacing, target):
            return None
        shape = resampled_shape(prepared.crop.size, prepared.spacing, target)
        voxels = int(np.prod(shape, dtype=np.int64))
        if voxels > self.preprocess.limits.max_voxels:
            files = [f for f in prepared.checksums if "seg" not in f]
            raise CaseError(
                prepared.case_id,
                files[0] if files else None,
                f"its brain box of {list(prepared.crop.size)} voxels at "
                f"{_mm(prepared.spacing)} mm would be {list(shape)} = {voxels} voxels at the "
                f"model's {_mm(target)} mm, over the limit of "
                f"{self.preprocess.limits.max_voxels}",
            )
        axis = separate_axis(prepared.spacing, target)
        return Resampling(target, shape, prepared.crop.size, axis)

    def predicted_spacing(self, prepared: PreparedCase) -> tuple[float, float, float]:
        """The spacing the network sees a prepared case at: the model's, or the case's own
        where nothing is resampled."""
        resampling = self.resampling(prepared)
        return prepared.spacing if resampling is None else resampling.spacing

    def segment(self, prepared: PreparedCase) -> npt.NDArray[np.uint8]:
        """A prepared case's ``(D, H, W) uint8`` internal classes in its source grid: on the
        model's spacing when it has one (:meth:`resampling`; the probabilities resampled back
        before they are decoded), else on the case's own."""
        resampling = self.resampling(prepared)
        if resampling is None:
            return self.segment_cropped(prepared.image, prepared.crop)
        on_model = resample_image(prepared.image, resampling.shape, resampling.axis)
        back = resample_probabilities(
            self.probabilities(on_model), resampling.source, resampling.axis
        )
        return self.postprocess(self.decode(back), prepared.crop)

    def segment_assessed(self, prepared: PreparedCase) -> tuple[npt.NDArray[np.uint8], Assessment]:
        """A prepared case's labels in its source grid (as :meth:`segment`, from the same
        forward passes) and its :class:`Assessment` on the brain box of the source grid."""
        resampling = self.resampling(prepared)
        if resampling is None:
            assessment = self.assess(prepared.image)
        else:
            on_model = resample_image(prepared.image, resampling.shape, resampling.axis)
            assessment = self.assess(on_model, resampling)
        return self.postprocess(assessment.labels, prepared.crop), assessment

    def segment_volume(self, channels: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
        """Raw ``(C, D, H, W)`` intensities in the model's modality order (no files, e.g. an
        uploaded array) -> ``(D, H, W) uint8`` internal classes, prepared as a cohort is.

        Raises:
            ValueError: the channel count is not the model's.
        """
        modalities = self.info.modalities
        if channels.ndim != 4 or channels.shape[0] != len(modalities):
            raise ValueError(
                f"image of shape {channels.shape} for a model of {len(modalities)} channels "
                f"({', '.join(modalities)}); expected (C, D, H, W)"
            )
        config = self.preprocess
        image, _, box = prepare_volume(
            list(channels), config.normalization, crop_to_brain=config.crop_to_brain,
            margin=config.crop_margin, dtype=config.dtype,
        )  # fmt: skip
        return self.segment_cropped(image, box)

    # --- files ----------------------------------------------------------------------------

    def segment_files(
        self,
        case: Case,
        cohort: Location,
        *,
        limits: Limits | None = None,
        scheme: LabelScheme | None = None,
    ) -> SegmentedCase:
        """Read, validate and segment a case's files; its truth (if any) is read, and its
        mask written, in ``scheme`` (it must be :func:`~brats.volume.labels.interchangeable`
        with the model's; default: :func:`brats.io.schemes.names_scheme`, as the segment job
        writes a cohort without truth).

        Raises:
            brats.errors.CaseError: a file that cannot be used (naming the case, the file
                and the reason).
        """
        config = self.preprocess
        written = scheme or names_scheme([case], self.info.scheme)
        volumes = read_case(
            case,
            cohort,
            modalities=config.modalities,
            scheme=written,
            limits=limits or config.limits,
        )
        prepared = prepare_case(volumes, config)
        labels, assessment = self.segment_assessed(prepared)
        mask = export_mask(labels, prepared, written)
        return SegmentedCase(volumes, prepared, labels, mask, assessment)


def export_mask(
    labels: npt.NDArray[np.uint8], prepared: PreparedCase, scheme: LabelScheme
) -> bytes:
    """Gzipped NIfTI bytes of ``(D, H, W)`` internal labels in the case's geometry (its
    header's qform, sform and voxel sizes), written in ``scheme``'s values on disk. The same
    labels always give the same bytes."""
    disk = to_disk(labels, scheme)
    return encode_mask(disk, header_from_bytes(prepared.header))
