"""The contents of ``model.json``: what a trained network is and how to feed it.

``model.json`` sits beside ``model.keras`` in a model folder (see :mod:`brats.io.artifact`)::

    {"format": "brats-model/1",
     "version": "<sha256 of model.keras>", "weights_file": "model.keras",
     "created": "...", "keras_version": "3.x",
     "unet": {... UNetConfig.to_dict(): the architecture ...},
     "modalities": ["flair", "t1", "t1ce", "t2"], "normalization": "zscore",
     "patch_size": [128, 128, 128],
     "label_scheme": {... LabelScheme.to_dict() ...} | null,
     "manifest_hash": "<hash of the training cohort's manifest>" | null,
     "metrics": {"dice_WT": ..., ...},
     "postprocessing": {"WT": "largest", "ET": 30, ...},
     "training": {... the training config, or the imported file ...}}

Reading it needs no TensorFlow: the architecture is plain data until a network is built. A
``model.json`` written before label schemes says ``"label_convention": "brats2020"`` (or
``"brats2023"``, or null) instead; it reads as that built-in scheme (null: BraTS glioma).

A model exported for serving (:mod:`brats.io.export`) has the same ``model.json`` with
``"format": "brats-export/1"``, ``export_format`` (``onnx`` or ``saved_model``), ``opset``,
``source_version`` (the Keras model's version), and ``weights_file`` ``model.onnx`` or
``saved_model`` (a folder), whose bytes the version hashes (:func:`files_version`).

An ensemble of cross-validation folds has one ``model.json`` too, with ``"kind": "ensemble"``
and ``"folds": [{"folder": "fold_0", "version": "<its sha256>"}, ...]`` instead of
``weights_file``; each fold is a complete model folder beside it, and the version is
:func:`ensemble_version` of the folds. The rest describes the whole: the folds' common
architecture, inputs and scheme, the ensemble's figures and postprocessing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final

from brats.errors import BratsError
from brats.io.cases import MODALITIES, SEED_MODALITIES
from brats.network.unet import SEED_CONFIG, UNetConfig, check_spatial_shape
from brats.volume.labels import (
    BRATS2020,
    DEFAULT,
    LabelScheme,
    SchemeError,
    scheme_from_dict,
    scheme_named,
)
from brats.volume.normalize import Normalization
from brats.volume.postprocess import Postprocessing
from brats.volume.resample import as_spacing

FORMAT: Final = "brats-model/1"
EXPORT_FORMAT: Final = "brats-export/1"
"""``format`` of an exported model's ``model.json``."""
MODEL_FILE: Final = "model.keras"
META_FILE: Final = "model.json"
ONNX_FILE: Final = "model.onnx"
SAVED_MODEL_DIR: Final = "saved_model"
EXPORTS: Final = {"onnx": ONNX_FILE, "saved_model": SAVED_MODEL_DIR}
"""Each export format and the file (or folder) its weights are in."""
_JSON_ONLY_KEYS: Final = (
    "format",
    "version",
    "weights_file",
    "created",
    "keras_version",
    "kind",
    "folds",
    "export_format",
    "opset",
    "source_version",
)
ENSEMBLE: Final = "ensemble"
"""The ``kind`` of a ``model.json`` that describes an ensemble of folds."""


class ArtifactError(BratsError, ValueError):
    """A model artifact that cannot be used: missing, malformed, or not what its json says."""


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``: the version id of a ``model.keras``."""
    return hashlib.sha256(data).hexdigest()


def files_version(files: Mapping[str, bytes]) -> str:
    """The version id of exported weights: the sha256 of one file's bytes; of several (a
    SavedModel's folder), of their names and hashes in name order."""
    if len(files) == 1:
        return sha256_hex(next(iter(files.values())))
    lines = "".join(f"{name} {sha256_hex(data)}\n" for name, data in sorted(files.items()))
    return sha256_hex(lines.encode())


@dataclass(frozen=True)
class ModelInfo:
    """What a trained network is and how to feed it: everything in ``model.json`` but the hash.

    Attributes:
        unet: the U-Net's architecture, rebuilt from this at load time.
        modalities: input channels in order (names from :data:`brats.io.cases.MODALITIES`);
            their count must be ``unet.in_channels``.
        normalization: the intensity normalization the inputs had in training
            (:class:`brats.volume.normalize.Normalization`).
        patch_size: training patch ``(D, H, W)``; inference windows default to it.
        label_scheme: the label scheme of the training cohort: what the network's outputs
            mean and how masks are written; ``None`` for a model that does not say (BraTS
            glioma, :data:`brats.volume.labels.DEFAULT`, written in the cohort's own values).
            Its classes and regions must match ``unet.n_classes`` and ``unet.n_regions``.
        manifest_hash: the ``hash`` of the cohort manifest the model was trained on (64 hex
            digits), or ``None`` (an imported model).
        metrics: final validation figures, finite numbers (e.g. ``dice_WT``).
        postprocessing: the component rules chosen on the validation cases
            (:class:`brats.volume.postprocess.Postprocessing`), which the predictor applies;
            empty (none) for models trained before they were chosen.
        training: JSON-ready notes on where the model came from: the training config, or the
            imported file and its sha256.
        tta: whether the predictor averages the outputs over the 8 axis flips unless told
            otherwise (the recipe's choice; ``False`` for models that do not say).
        target_spacing: the voxel size in mm the network was trained at; the predictor
            resamples a case at another spacing to it and the probabilities back
            (:mod:`brats.volume.resample`). ``None`` for a model that does not know (trained
            before spacing was recorded, or on cases of several spacings): cases are
            predicted on their own grid, as before.
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    modalities: tuple[str, ...] = MODALITIES
    normalization: Normalization | str = Normalization.ZSCORE
    patch_size: tuple[int, int, int] = (128, 128, 128)
    label_scheme: LabelScheme | None = None
    manifest_hash: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    postprocessing: Mapping[str, str | int] = field(default_factory=dict)
    tta: bool = False
    target_spacing: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        modalities = tuple(self.modalities)
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or len(set(modalities)) != len(modalities):
            raise ValueError(
                f"modalities must be distinct names from {MODALITIES}, got {modalities}"
            )
        if len(modalities) != self.unet.in_channels:
            raise ValueError(
                f"{len(modalities)} modalities {list(modalities)} for a network with "
                f"{self.unet.in_channels} input channels"
            )
        object.__setattr__(self, "modalities", modalities)
        object.__setattr__(self, "normalization", Normalization(self.normalization))
        scheme = self.scheme
        if (scheme.n_classes, len(scheme.decode)) != (self.unet.n_classes, self.unet.n_regions):
            raise ValueError(
                f"label scheme {scheme.name} has {scheme.n_classes} classes and "
                f"{len(scheme.decode)} region outputs; the network has {self.unet.n_classes} "
                f"and {self.unet.n_regions}"
            )
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be (D, H, W), got {self.patch_size!r}")
        patch = check_spatial_shape(self.patch_size, self.unet.depth)
        object.__setattr__(self, "patch_size", patch)
        digest = self.manifest_hash
        if digest is not None and not _is_sha256(digest):
            raise ValueError(f"manifest_hash must be 64 hex digits, got {digest!r}")
        metrics = {}
        for key, value in self.metrics.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"metric {key!r} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"metric {key!r} is {value}; model.json holds finite numbers")
            metrics[str(key)] = float(value)
        object.__setattr__(self, "metrics", metrics)
        training = dict(self.training)
        try:
            json.dumps(training, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"training notes must be JSON-ready: {exc}") from None
        object.__setattr__(self, "training", training)
        rules = Postprocessing.from_dict(self.postprocessing, self.scheme)  # validates
        object.__setattr__(self, "postprocessing", rules.to_dict())
        if self.target_spacing is not None:
            object.__setattr__(self, "target_spacing", as_spacing(self.target_spacing))

    @property
    def scheme(self) -> LabelScheme:
        """The label scheme of the network's outputs (the default glioma one when unknown)."""
        return self.label_scheme or DEFAULT

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        scheme = self.label_scheme
        return {
            "unet": self.unet.to_dict(),
            "modalities": list(self.modalities),
            "normalization": Normalization(self.normalization).value,
            "patch_size": list(self.patch_size),
            "label_scheme": None if scheme is None else scheme.to_dict(),
            "manifest_hash": self.manifest_hash,
            "metrics": dict(self.metrics),
            "training": dict(self.training),
            "postprocessing": dict(self.postprocessing),
            "tta": self.tta,
            "target_spacing": None if self.target_spacing is None else list(self.target_spacing),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Build from :meth:`to_dict` output; raises ``ValueError``, ``KeyError`` or
        ``TypeError`` on bad data, and ``ValueError`` on unknown keys (a newer format)."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)} - {"label_convention"})
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        patch = tuple(int(s) for s in data["patch_size"])
        return cls(
            unet=UNetConfig.from_dict(dict(data["unet"])),
            modalities=tuple(data["modalities"]),
            normalization=data["normalization"],
            patch_size=patch,  # type: ignore[arg-type]  # length checked in __post_init__
            label_scheme=_scheme(data),
            manifest_hash=data.get("manifest_hash"),
            metrics=dict(data.get("metrics") or {}),
            training=dict(data.get("training") or {}),
            postprocessing=dict(data.get("postprocessing") or {}),
            tta=_flag(data.get("tta", False)),
            target_spacing=data.get("target_spacing"),
        )


def _scheme(data: Mapping[str, Any]) -> LabelScheme | None:
    """The ``label_scheme`` of a ``model.json``, or the built-in one an older file's
    ``label_convention`` names."""
    given = data.get("label_scheme", data.get("label_convention"))
    if given is None:
        return None
    try:
        return scheme_named(given) if isinstance(given, str) else scheme_from_dict(given)
    except SchemeError as exc:
        raise ValueError(str(exc)) from None


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"tta must be true or false, got {value!r}")
    return value


SEED_INFO: Final = ModelInfo(
    unet=SEED_CONFIG,
    modalities=SEED_MODALITIES,
    normalization=Normalization.MINMAX,
    patch_size=(128, 128, 128),
    label_scheme=BRATS2020,
    training={
        "source": "brats_3d.hdf5, the seed preset's published weights",
        "note": "BraTS 2020, 128^3 crops, min-max scaling (first trained scaled per slice), "
        "Dice(class weights 0.25) + focal loss",
    },
)
"""How the ``seed`` preset's published network was trained: 3 channels (FLAIR, T1ce, T2),
BraTS 2020 labels, min-max scaling."""


@dataclass(frozen=True)
class FoldRef:
    """One model of an ensemble: the sub-folder holding its artifact and its version."""

    folder: str
    version: str


def ensemble_version(folds: Sequence[FoldRef]) -> str:
    """An ensemble's version id: sha256 of its folds' folders and versions, in order."""
    text = "\n".join(f"{f.folder} {f.version}" for f in folds)
    return sha256_hex(f"{ENSEMBLE}\n{text}".encode())


@dataclass(frozen=True)
class ModelCard:
    """The contents of a ``model.json``: the description plus the version and when it was made.

    Attributes:
        info: the network and how to feed it.
        version: sha256 hex of the ``model.keras`` bytes (of an ensemble:
            :func:`ensemble_version` of its folds); names this model in records.
        created: ISO 8601 UTC time of the export.
        keras_version: Keras version that wrote ``model.keras`` (empty for an ensemble).
        folds: an ensemble's models (``kind: ensemble`` in the json), each a complete artifact
            in its sub-folder with the same architecture, inputs and scheme as ``info``;
            empty for one model, whose weights are ``model.keras`` beside the json.
        export: ``None`` for a Keras model; ``onnx`` or ``saved_model`` for an export
            (:mod:`brats.io.export`), whose weights are :attr:`weights_file`.
        opset: the ONNX opset of an ONNX export, else ``None``.
        source_version: an export's Keras model's version (empty for a Keras model).
    """

    info: ModelInfo
    version: str
    created: str
    keras_version: str
    folds: tuple[FoldRef, ...] = ()
    export: str | None = None
    opset: int | None = None
    source_version: str = ""

    def __post_init__(self) -> None:
        if self.export is not None and self.export not in EXPORTS:
            raise ArtifactError(f"export_format must be one of {sorted(EXPORTS)}")

    @property
    def is_ensemble(self) -> bool:
        return bool(self.folds)

    @property
    def weights_file(self) -> str:
        """The file (a SavedModel: the folder) beside ``model.json`` that holds the weights."""
        return MODEL_FILE if self.export is None else EXPORTS[self.export]

    def to_json(self) -> bytes:
        head: dict[str, Any] = {
            "format": FORMAT if self.export is None else EXPORT_FORMAT,
            "version": self.version,
        }
        if self.export is not None:
            head |= {
                "export_format": self.export,
                "opset": self.opset,
                "source_version": self.source_version,
            }
        if self.folds:
            head |= {
                "kind": ENSEMBLE,
                "folds": [{"folder": f.folder, "version": f.version} for f in self.folds],
            }
        else:
            head["weights_file"] = self.weights_file
        document = {
            **head,
            "created": self.created,
            "keras_version": self.keras_version,
            **self.info.to_dict(),
        }
        return (json.dumps(document, indent=2, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> ModelCard:
        """Parse a ``model.json``; ``where`` names the file in error messages.

        Raises:
            ArtifactError: not JSON, not a brats model, or a field that does not validate.
        """
        try:
            document = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{where}: not valid JSON ({exc})") from None
        found = document.get("format") if isinstance(document, dict) else None
        if found not in (FORMAT, EXPORT_FORMAT):
            raise ArtifactError(f"{where}: not a brats model ({FORMAT!r} expected, got {found!r})")
        export = _export(document, where) if found == EXPORT_FORMAT else None
        weights = MODEL_FILE if export is None else EXPORTS[export]
        version = document.get("version")
        if not isinstance(version, str) or not _is_sha256(version):
            raise ArtifactError(f"{where}: 'version' must be the sha256 of {weights}")
        if document.get("weights_file", weights) != weights:
            raise ArtifactError(f"{where}: weights_file must be {weights!r}")
        folds = _folds(document, where)
        if folds and version != ensemble_version(folds):
            raise ArtifactError(f"{where}: 'version' is not the ensemble's (its folds changed)")
        info_fields = {k: v for k, v in document.items() if k not in _JSON_ONLY_KEYS}
        try:
            info = ModelInfo.from_dict(info_fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: {type(exc).__name__}: {exc}") from None
        return cls(
            info=info,
            version=version,
            created=str(document.get("created", "")),
            keras_version=str(document.get("keras_version", "")),
            folds=folds,
            export=export,
            opset=document.get("opset") if export == "onnx" else None,
            source_version=str(document.get("source_version") or ""),
        )


def _export(document: Mapping[str, Any], where: str) -> str:
    export = document.get("export_format")
    if export not in EXPORTS:
        raise ArtifactError(f"{where}: export_format must be one of {sorted(EXPORTS)}")
    opset = document.get("opset")
    if export == "onnx" and (isinstance(opset, bool) or not isinstance(opset, int)):
        raise ArtifactError(f"{where}: an ONNX export's opset must be a whole number")
    return str(export)


def _folds(document: Mapping[str, Any], where: str) -> tuple[FoldRef, ...]:
    """The folds of an ensemble's json (``()`` for one model's), validated: sub-folders named
    ``fold_<i>``, each once, with sha256 versions."""
    kind = document.get("kind")
    if kind is None:
        return ()
    entries = document.get("folds")
    if kind != ENSEMBLE or not isinstance(entries, list) or not entries:
        raise ArtifactError(f"{where}: 'kind' {kind!r} needs a list of 'folds' ({ENSEMBLE!r})")
    folds = []
    for entry in entries:
        folder = entry.get("folder") if isinstance(entry, dict) else None
        version = entry.get("version") if isinstance(entry, dict) else None
        if not (
            isinstance(folder, str)
            and folder.startswith("fold_")
            and folder[5:].isdigit()
            and isinstance(version, str)
            and _is_sha256(version)
        ):
            raise ArtifactError(f"{where}: bad fold entry {entry!r} (folder fold_<i>, sha256)")
        folds.append(FoldRef(folder, version))
    if len({f.folder for f in folds}) != len(folds):
        raise ArtifactError(f"{where}: a fold is listed twice")
    return tuple(folds)


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
