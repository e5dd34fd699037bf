"""The model artifact: ``model.keras`` + ``model.json`` in one folder (local or ``s3://``).

* ``model.keras``: the Keras 3 archive of the U-Net (uncompiled: weights and Keras' own
  config). Only its weights are ever read back.
* ``model.json``: what a user of the model needs, written after ``model.keras``::

      {"format": "brats-model/1",
       "version": "<sha256 of model.keras>", "weights_file": "model.keras",
       "created": "...", "keras_version": "3.x",
       "unet": {... UNetConfig.to_dict(): the architecture ...},
       "modalities": ["flair", "t1", "t1ce", "t2"], "normalization": "zscore",
       "patch_size": [128, 128, 128],
       "label_convention": "brats2020" | "brats2023" | null,
       "manifest_hash": "<hash of the training cohort's manifest>" | null,
       "metrics": {"dice_WT": ..., ...},
       "training": {... the training config, or the imported file ...}}

Loading (:func:`load_artifact`) reads ``model.json``, hashes the bytes of ``model.keras`` and
refuses them when the hash is not the json's ``version`` (a changed, swapped or truncated
file; RELIABILITY row 13). It then builds the network *in code* from the json's architecture
(:func:`brats.model.build_unet`) and loads the weights only: no model config, layer or
function from the file is ever deserialized, so a ``Lambda`` layer or a pickled object in a
user's file never runs, and HDF5 whole-model files are never loaded.

The seed's trained network (``brats_3d.hdf5``, a Keras 2 HDF5 file of the same architecture
with 3 input channels) becomes an artifact through :func:`import_seed_hdf5`, the same way:
the architecture is built in code and only the weight arrays are read from the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
import tempfile
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Final

import h5py
import keras

from brats.cases import MODALITIES, SEED_MODALITIES
from brats.errors import BratsError
from brats.labels import LabelConvention
from brats.model import SEED_CONFIG, UNetConfig, build_unet, check_spatial_shape
from brats.preprocess import Normalization
from brats.storage import Location, StorageError, read_bytes, redact, resolve, write_bytes_atomic

FORMAT: Final = "brats-model/1"
MODEL_FILE: Final = "model.keras"
META_FILE: Final = "model.json"
MAX_MODEL_BYTES: Final = 2 << 30
"""Largest ``model.keras`` (or seed HDF5) read; the default U-Net's is about 23 MB."""
MAX_META_BYTES: Final = 16 << 20
_KERAS_WEIGHTS_ENTRY: Final = "model.weights.h5"
_JSON_ONLY_KEYS: Final = ("format", "version", "weights_file", "created", "keras_version")


class ArtifactError(BratsError, ValueError):
    """A model artifact that cannot be used: missing, malformed, or not what its json says."""


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``: the version id of a ``model.keras``."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """What a trained network is and how to feed it: everything in ``model.json`` but the hash.

    Attributes:
        unet: the U-Net's architecture, rebuilt from this at load time.
        modalities: input channels in order (names from :data:`brats.cases.MODALITIES`);
            their count must be ``unet.in_channels``.
        normalization: the intensity normalization the inputs had in training
            (:class:`brats.preprocess.Normalization`).
        patch_size: training patch ``(D, H, W)``; inference windows default to it.
        label_convention: the on-disk label convention of the training cohort, or ``None``
            when unknown or mixed (the network itself always predicts internal classes 0..3).
        manifest_hash: the ``hash`` of the cohort manifest the model was trained on (64 hex
            digits), or ``None`` (an imported model).
        metrics: final validation figures, finite numbers (e.g. ``dice_WT``).
        training: JSON-ready notes on where the model came from: the training config, or the
            imported file and its sha256.
    """

    unet: UNetConfig = field(default_factory=UNetConfig)
    modalities: tuple[str, ...] = MODALITIES
    normalization: Normalization | str = Normalization.ZSCORE
    patch_size: tuple[int, int, int] = (128, 128, 128)
    label_convention: LabelConvention | str | None = None
    manifest_hash: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)

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
        if self.label_convention is not None:
            object.__setattr__(self, "label_convention", LabelConvention(self.label_convention))
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        convention = self.label_convention
        return {
            "unet": self.unet.to_dict(),
            "modalities": list(self.modalities),
            "normalization": Normalization(self.normalization).value,
            "patch_size": list(self.patch_size),
            "label_convention": None if convention is None else LabelConvention(convention).value,
            "manifest_hash": self.manifest_hash,
            "metrics": dict(self.metrics),
            "training": dict(self.training),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelInfo:
        """Build from :meth:`to_dict` output; raises ``ValueError``, ``KeyError`` or
        ``TypeError`` on bad data, and ``ValueError`` on unknown keys (a newer format)."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown fields {unknown}")
        patch = tuple(int(s) for s in data["patch_size"])
        return cls(
            unet=UNetConfig.from_dict(dict(data["unet"])),
            modalities=tuple(data["modalities"]),
            normalization=data["normalization"],
            patch_size=patch,  # type: ignore[arg-type]  # length checked in __post_init__
            label_convention=data.get("label_convention"),
            manifest_hash=data.get("manifest_hash"),
            metrics=dict(data.get("metrics") or {}),
            training=dict(data.get("training") or {}),
        )


SEED_INFO: Final = ModelInfo(
    unet=SEED_CONFIG,
    modalities=SEED_MODALITIES,
    normalization=Normalization.MINMAX,
    patch_size=(128, 128, 128),
    label_convention=LabelConvention.BRATS2020,
    training={
        "source": "the seed repository's brats_3d.hdf5",
        "note": "BraTS 2020, 128^3 crops, min-max scaling (the seed scaled per slice), "
        "Dice(class weights 0.25) + focal loss",
    },
)
"""How the seed's network was trained: 3 channels (FLAIR, T1ce, T2), BraTS 2020 labels."""


@dataclass(frozen=True)
class ModelCard:
    """The contents of a ``model.json``: the description plus the version and when it was made.

    Attributes:
        info: the network and how to feed it.
        version: sha256 hex of the ``model.keras`` bytes; names this model in records.
        created: ISO 8601 UTC time of the export.
        keras_version: Keras version that wrote ``model.keras``.
    """

    info: ModelInfo
    version: str
    created: str
    keras_version: str

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT,
            "version": self.version,
            "weights_file": MODEL_FILE,
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
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            found = document.get("format") if isinstance(document, dict) else None
            raise ArtifactError(f"{where}: not a brats model ({FORMAT!r} expected, got {found!r})")
        version = document.get("version")
        if not isinstance(version, str) or not _is_sha256(version):
            raise ArtifactError(f"{where}: 'version' must be the sha256 of {MODEL_FILE}")
        if document.get("weights_file", MODEL_FILE) != MODEL_FILE:
            raise ArtifactError(f"{where}: weights_file must be {MODEL_FILE!r}")
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
        )


@dataclass(frozen=True)
class LoadedModel:
    """A verified model, ready for ``predict``: the network, its card and where it came from."""

    model: keras.Model
    card: ModelCard
    uri: str

    @property
    def version(self) -> str:
        return self.card.version


def save_artifact(model: keras.Model, info: ModelInfo, where: str | Location) -> ModelCard:
    """Export ``model`` as ``model.keras`` + ``model.json`` under the folder ``where``.

    The weights are copied into a fresh, uncompiled network built from ``info.unet``,
    so the file holds no optimizer state and a model that does not match its description is
    caught here, not at inference. ``model.keras`` is written first and ``model.json`` last,
    each atomically: a reader sees either the old artifact, or a json whose hash does not
    match (refused), or the new artifact -- never a half-written file taken for a model.

    Args:
        model: a trained U-Net (compiled or not, any precision policy).
        info: the description stored in ``model.json``.
        where: a folder path or URI (``s3://bucket/prefix`` included).

    Returns:
        The card written to ``model.json``; ``card.version`` is the sha256 of ``model.keras``.

    Raises:
        ArtifactError: the model's weights do not fit ``info.unet``.
    """
    loc = _location(where)
    clean = build_unet(info.unet)
    try:
        clean.set_weights(model.get_weights())
    except ValueError as exc:
        raise ArtifactError(
            f"model {model.name!r} does not match the architecture to be stored "
            f"({info.unet}): {exc}"
        ) from None
    with tempfile.TemporaryDirectory(prefix="brats-artifact-") as tmp:
        path = os.path.join(tmp, MODEL_FILE)
        clean.save(path)
        with open(path, "rb") as fh:
            data = fh.read()
    card = ModelCard(
        info=info,
        version=sha256_hex(data),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        keras_version=keras.__version__,
    )
    fs = loc.filesystem()
    write_bytes_atomic(fs, loc.join(MODEL_FILE), data)
    write_bytes_atomic(fs, loc.join(META_FILE), card.to_json())
    return card


def read_model_card(where: str | Location) -> ModelCard:
    """Read and validate ``model.json`` only (cheap: for skip-if-done checks by version).

    Raises:
        ArtifactError: no ``model.json``, or one that does not validate.
    """
    loc = _location(where)
    raw = _read(loc, META_FILE, MAX_META_BYTES)
    return ModelCard.from_json(raw, f"{redact(loc.uri)}/{META_FILE}")


def verify_artifact(where: str | Location) -> ModelCard:
    """The card of an artifact whose ``model.keras`` matches its ``model.json`` (no TF work).

    Raises:
        ArtifactError: a missing or malformed file, or a ``model.keras`` whose sha256 differs
            from the json's ``version``.
    """
    return _verified(_location(where))[0]


def _verified(loc: Location) -> tuple[ModelCard, bytes]:
    card = read_model_card(loc)
    data = _read(loc, MODEL_FILE, MAX_MODEL_BYTES)
    digest = sha256_hex(data)
    if digest != card.version:
        raise ArtifactError(
            f"{redact(loc.uri)}/{MODEL_FILE}: sha256 {digest} differs from version "
            f"{card.version} in {META_FILE}; the file changed after export, refusing to load it"
        )
    return card, data


def load_artifact(
    where: str | Location, *, mixed_precision: bool | str | None = None
) -> LoadedModel:
    """Load a model exported by :func:`save_artifact`, refusing one that is not what it says.

    Args:
        where: the artifact's folder (path or URI).
        mixed_precision: override the stored compute precision (see
            :class:`brats.model.UNetConfig`); weights are float32 either way.

    Returns:
        The network (uncompiled; ``(B, D, H, W, C) float32`` in, ``(B, D, H, W, 4) float32``
        probabilities out), its card and the artifact's URI.

    Raises:
        ArtifactError: a missing or malformed file, a ``model.keras`` whose sha256 differs
            from the json's ``version``, a file that is not a Keras 3 archive, or weights that
            do not fit the json's architecture. The message names the file.
    """
    loc = _location(where)
    card, data = _verified(loc)
    model_uri = f"{redact(loc.uri)}/{MODEL_FILE}"
    weights = _archive_weights(data, model_uri)
    config = card.info.unet
    if mixed_precision is not None:
        config = replace(config, mixed_precision=mixed_precision)
    model = build_unet(config)
    try:
        with h5py.File(io.BytesIO(weights), "r") as f:
            _check_weight_shapes(f, model, model_uri)
    except OSError as exc:
        raise ArtifactError(f"{model_uri}: {_KERAS_WEIGHTS_ENTRY} is not HDF5 ({exc})") from None
    with tempfile.TemporaryDirectory(prefix="brats-artifact-") as tmp:
        # Keras reads weights from a local path; these are the very bytes just hashed.
        path = os.path.join(tmp, MODEL_FILE)
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            model.load_weights(path)
        except ValueError as exc:
            raise ArtifactError(
                f"{model_uri}: weights do not fit the architecture: {exc}"
            ) from None
    return LoadedModel(model=model, card=card, uri=redact(loc.uri))


def import_seed_hdf5(
    source: str | os.PathLike[str], where: str | Location, info: ModelInfo = SEED_INFO
) -> ModelCard:
    """Turn the seed's Keras 2 HDF5 model (``brats_3d.hdf5``) into an artifact under ``where``.

    The network of ``info.unet`` (the seed's by default) is built in code and the
    weight arrays are read from the file by layer order (how Keras matches legacy HDF5
    files; the U-Net creates its layers in the seed's order). The file's model config,
    training config and optimizer state are ignored. Both legacy layouts load: a whole model
    (``model.save``: weights under ``model_weights/<layer>/``) and ``save_weights``.

    Args:
        source: path or URI of the HDF5 file.
        where: folder for ``model.keras`` + ``model.json``.
        info: the imported model's description; the source file's name and sha256 are added
            to its ``training`` notes.

    Returns:
        The card written to ``model.json``.

    Raises:
        ArtifactError: not an HDF5 file, not a Keras HDF5 weights layout, or weights whose
            count or shapes do not fit the architecture.
    """
    src = resolve(os.fspath(source))
    name = redact(src.uri)
    try:
        data = read_bytes(src.filesystem(), src.path, max_bytes=MAX_MODEL_BYTES)
    except (FileNotFoundError, StorageError) as exc:
        raise ArtifactError(f"{name}: cannot read the seed model ({exc})") from None
    model = build_unet(info.unet)
    with tempfile.TemporaryDirectory(prefix="brats-seed-") as tmp:
        # The ".h5" suffix (not ".weights.h5", not ".keras") selects Keras' legacy loader.
        path = os.path.join(tmp, "seed.h5")
        with open(path, "wb") as fh:
            fh.write(data)
        if not h5py.is_hdf5(path):
            raise ArtifactError(f"{name}: not an HDF5 file")
        with h5py.File(path, "r") as f:
            group = f.get("model_weights", f)
            if "layer_names" not in group.attrs:
                raise ArtifactError(
                    f"{name}: no Keras 2 'layer_names' in the HDF5 file; expected a model "
                    "saved by Keras 2 model.save or save_weights"
                )
            _check_weight_shapes(group, model, name)
        try:
            model.load_weights(path)
        except ValueError as exc:
            raise ArtifactError(f"{name}: weights do not fit the architecture: {exc}") from None
    training = {
        **info.training,
        "imported_from": posixpath.basename(src.path),
        "source_sha256": sha256_hex(data),
    }
    return save_artifact(model, replace(info, training=training), where)


def _location(where: str | Location) -> Location:
    return where if isinstance(where, Location) else resolve(where)


def _read(loc: Location, name: str, max_bytes: int) -> bytes:
    try:
        return read_bytes(loc.filesystem(), loc.join(name), max_bytes=max_bytes)
    except FileNotFoundError:
        raise ArtifactError(f"{redact(loc.uri)}/{name}: no such file") from None
    except StorageError as exc:
        raise ArtifactError(f"{redact(loc.uri)}/{name}: {exc}") from None


def _archive_weights(data: bytes, where: str) -> bytes:
    """The weights file inside a ``.keras`` archive.

    Raises:
        ArtifactError: not a Keras 3 archive, or one whose weights unpack too large.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entry = archive.getinfo(_KERAS_WEIGHTS_ENTRY)
            if entry.file_size > MAX_MODEL_BYTES:
                raise ArtifactError(
                    f"{where}: {_KERAS_WEIGHTS_ENTRY} unpacks to {entry.file_size} bytes"
                )
            return archive.read(entry)
    except (zipfile.BadZipFile, KeyError):
        raise ArtifactError(
            f"{where}: not a Keras 3 archive with {_KERAS_WEIGHTS_ENTRY} "
            "(HDF5 and other model files are not loaded)"
        ) from None


def _check_weight_shapes(group: h5py.Group, model: keras.Model, where: str) -> None:
    """Every array under ``group`` against the network's variables, by shape, from headers.

    Keras skips some mismatches with only a warning, and reads an array before comparing its
    shape; checking the headers first refuses a file that does not fit without reading any
    array, so a file declaring huge arrays costs nothing.
    """
    stored: list[tuple[int, ...]] = []

    def collect(_: str, node: object) -> None:
        if isinstance(node, h5py.Dataset):
            stored.append(tuple(int(s) for s in node.shape))

    group.visititems(collect)
    expected = [tuple(int(s) for s in w.shape) for w in model.weights]
    if sorted(stored) != sorted(expected):
        extra = list((Counter(stored) - Counter(expected)).elements())[:3]
        missing = list((Counter(expected) - Counter(stored)).elements())[:3]
        raise ArtifactError(
            f"{where}: weights do not fit the architecture: the file holds {len(stored)} "
            f"arrays, the network {len(expected)}; shapes only in the file {extra}, only in "
            f"the network {missing}"
        )


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
