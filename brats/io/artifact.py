"""The model artifact: ``model.keras`` + ``model.json`` in one folder (local or ``s3://``).

* ``model.keras``: the Keras 3 archive of the U-Net (uncompiled: weights and Keras' own
  config). Only its weights are ever read back.
* ``model.json``: the :class:`~brats.io.model_card.ModelCard`, written after ``model.keras``.

Loading (:func:`load_artifact`) reads ``model.json``, hashes the bytes of ``model.keras`` and
refuses them when the hash is not the json's ``version`` (a changed, swapped or truncated
file). It then builds the network *in code* from the json's architecture
(:func:`brats.network.unet.build_unet`) and loads the weights only: no model config, layer or
function from the file is ever deserialized, so a ``Lambda`` layer or a pickled object in a
user's file never runs, and HDF5 whole-model files are never loaded.

The ``seed`` preset's published network (``brats_3d.hdf5``, a Keras 2 HDF5 file) becomes an
artifact through :func:`brats.io.seed_model.import_seed_hdf5`, the same way.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from brats.io.model_card import (
    META_FILE,
    MODEL_FILE,
    ArtifactError,
    FoldRef,
    ModelCard,
    ModelInfo,
    ensemble_version,
    files_version,
    sha256_hex,
)
from brats.network.unet import build_unet, copy_weights
from brats.storage import Location, StorageError, read_bytes, redact, resolve, write_bytes_atomic

if TYPE_CHECKING:
    import h5py
    import keras

MAX_MODEL_BYTES: Final = 2 << 30
"""Largest ``model.keras`` (or seed HDF5) read; the default U-Net's is about 23 MB."""
MAX_META_BYTES: Final = 16 << 20
_KERAS_WEIGHTS_ENTRY: Final = "model.weights.h5"


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

    The weights are copied by layer name into a fresh, uncompiled network built from
    ``info.unet`` (the inference form: a training model's deep-supervision heads stay
    behind), so the file holds no optimizer state and a model that does not match its
    description is caught here, not at inference. ``model.keras`` is written first and
    ``model.json`` last, each atomically: a reader sees either the old artifact, or a json
    whose hash does not match (refused), or the new artifact -- never a half-written file
    taken for a model.

    Args:
        model: a trained U-Net (compiled or not, any precision policy, with or without its
            deep-supervision heads).
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
        copy_weights(model, clean)
    except ValueError as exc:
        raise ArtifactError(
            f"model {model.name!r} does not match the architecture to be stored "
            f"({info.unet}): {exc}"
        ) from None
    import keras

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
    """The card of an artifact whose ``model.keras`` matches its ``model.json`` (no TF work);
    of an ensemble, once every fold's does and is the version its card lists.

    Raises:
        ArtifactError: a missing or malformed file, or a ``model.keras`` whose sha256 differs
            from the json's ``version``.
    """
    loc = _location(where)
    card = read_model_card(loc)
    for fold in card.folds:
        _fold_card(loc, card, fold, _verified(loc.child(fold.folder))[0])
    return card if card.folds else _verified(loc, card)[0]


def save_ensemble(
    folds: Sequence[str | Location], info: ModelInfo, where: str | Location
) -> ModelCard:
    """Copy the model folders ``folds`` (each verified) into ``where/fold_<i>/`` and write the
    ensemble's ``model.json`` (``info`` describing the whole) last: a reader sees the old
    ensemble, a json whose folds do not match (refused), or the new one.

    Raises:
        ArtifactError: a fold that is not a verified artifact, or one whose architecture,
            inputs or scheme differ from ``info``'s.
    """
    loc = _location(where)
    fs = loc.filesystem()
    refs = []
    for i, source in enumerate(folds):
        card, data = _verified(_location(source))
        if card.export is not None:
            raise ArtifactError(
                f"{redact(_location(source).uri)}: an {card.export} export; an ensemble is "
                "made of Keras models (brats export exports the ensemble)"
            )
        ref = FoldRef(f"fold_{i}", card.version)
        target = loc.child(ref.folder)
        write_bytes_atomic(fs, target.join(MODEL_FILE), data)
        write_bytes_atomic(fs, target.join(META_FILE), card.to_json())
        refs.append(ref)
    card = ModelCard(
        info=info,
        version=ensemble_version(refs),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        keras_version="",
        folds=tuple(refs),
    )
    for ref in refs:
        _fold_card(loc, card, ref, read_model_card(loc.child(ref.folder)))
    write_bytes_atomic(fs, loc.join(META_FILE), card.to_json())
    return card


def load_models(
    where: str | Location,
    *,
    mixed_precision: bool | str | None = None,
    max_folds: int | None = None,
    card: ModelCard | None = None,
) -> tuple[ModelCard, list[LoadedModel]]:
    """The card of a model folder and its networks: one for a model, the first ``max_folds``
    (default all) folds of an ensemble, each verified as :func:`load_artifact` verifies.
    ``card``: the folder's card, when the caller has read it (it is not read again).

    Raises:
        ArtifactError: as :func:`load_artifact`, for the folder or any fold, or a fold that is
            not what the ensemble's card lists.
    """
    loc = _location(where)
    card = card or read_model_card(loc)
    if card.export is not None:
        raise ArtifactError(
            f"{redact(loc.uri)}: an {card.export} export, not a Keras model: an ONNX export "
            "runs in ONNX Runtime (--backend onnxruntime or auto), a SavedModel in a "
            "TensorFlow server"
        )
    if not card.folds:
        loaded = load_artifact(loc, mixed_precision=mixed_precision)
        return loaded.card, [loaded]
    models = []
    for fold in card.folds[: max_folds or None]:
        one = load_artifact(loc.child(fold.folder), mixed_precision=mixed_precision)
        _fold_card(loc, card, fold, one.card)
        models.append(one)
    return card, models


def load_onnx(
    where: str | Location, *, max_folds: int | None = None, card: ModelCard | None = None
) -> tuple[ModelCard, list[bytes]]:
    """The card of an ONNX export (:mod:`brats.io.export`) and its networks' ``model.onnx``
    bytes: one, or the first ``max_folds`` (default all) folds of an ensemble, each hashing
    to its card's version (and that to the version the ensemble lists). No TensorFlow.
    ``card``: the export's card, when the caller has read it (it is not read again).

    Raises:
        ArtifactError: not an ONNX export, or a file that is not what its card says.
    """
    loc = _location(where)
    card = card or read_model_card(loc)
    if card.export != "onnx":
        kind = "a Keras model" if card.export is None else f"an {card.export} export"
        raise ArtifactError(f"{redact(loc.uri)}: {kind}, not an ONNX export")
    if not card.folds:
        return card, [_verified(loc, card)[1]]
    networks = []
    for fold in card.folds[: max_folds or None]:
        one, data = _verified(loc.child(fold.folder))
        _fold_card(loc, card, fold, one)
        networks.append(data)
    return card, networks


def _fold_card(loc: Location, ensemble: ModelCard, fold: FoldRef, card: ModelCard) -> None:
    """Refuse a fold that is not the version the ensemble lists or does not take the same
    inputs and give the same outputs as the ensemble says."""
    where = f"{redact(loc.uri)}/{fold.folder}"
    if card.version != fold.version:
        raise ArtifactError(
            f"{where}: version {card.version} is not the {fold.version} the ensemble lists"
        )
    if card.export != ensemble.export:
        raise ArtifactError(f"{where}: not of the ensemble's kind ({ensemble.export or 'keras'})")
    mine, theirs = ensemble.info, card.info
    inputs = ("unet", "modalities", "normalization", "patch_size", "scheme", "target_spacing")
    if [getattr(mine, k) for k in inputs] != [getattr(theirs, k) for k in inputs]:
        raise ArtifactError(
            f"{where}: its architecture, inputs (spacing included) or label scheme differ "
            "from the ensemble's"
        )


def _verified(loc: Location, card: ModelCard | None = None) -> tuple[ModelCard, bytes]:
    """The card (``card`` if already read, else read) and the ``model.keras`` bytes of one
    model whose bytes hash to the card's version."""
    card = card or read_model_card(loc)
    if card.folds:
        raise ArtifactError(
            f"{redact(loc.uri)}: an ensemble of {len(card.folds)} folds, not one model "
            "(brats.io.artifact.load_models loads it)"
        )
    if card.export == "saved_model":  # a folder of files: hashed, never loaded here
        data = b""
        digest = files_version(_read_folder(loc, card.weights_file))
    else:
        data = _read(loc, card.weights_file, MAX_MODEL_BYTES)
        digest = sha256_hex(data)
    if digest != card.version:
        raise ArtifactError(
            f"{redact(loc.uri)}/{card.weights_file}: sha256 {digest} differs from version "
            f"{card.version} in {META_FILE}; the file changed after export, refusing to load it"
        )
    return card, data


def _read_folder(loc: Location, folder: str) -> dict[str, bytes]:
    """Every file under ``loc/folder``, by its path from ``loc`` (``folder/...``)."""
    base = loc.path.rstrip("/") + "/"
    try:
        found = sorted(loc.filesystem().find(loc.join(folder)))
    except FileNotFoundError:
        found = []
    names = [path[len(base) :] for path in found if path.startswith(base)]
    if not names:
        raise ArtifactError(f"{redact(loc.uri)}/{folder}: no such folder, or an empty one")
    return {name: _read(loc, name, MAX_MODEL_BYTES) for name in names}


def load_artifact(
    where: str | Location, *, mixed_precision: bool | str | None = None
) -> LoadedModel:
    """Load a model exported by :func:`save_artifact`, refusing one that is not what it says.

    Args:
        where: the artifact's folder (path or URI).
        mixed_precision: override the stored compute precision (see
            :class:`brats.network.unet.UNetConfig`); weights are float32 either way.

    Returns:
        The network (uncompiled; ``(B, D, H, W, C) float32`` in, ``(B, D, H, W, n_outputs)
        float32`` probabilities out), its card and the artifact's URI.

    Raises:
        ArtifactError: a missing or malformed file, a ``model.keras`` whose sha256 differs
            from the json's ``version``, a file that is not a Keras 3 archive, or weights that
            do not fit the json's architecture. The message names the file.
    """
    import h5py

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
            check_weight_shapes(f, model, model_uri)
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


def check_weight_shapes(group: h5py.Group, model: keras.Model, where: str) -> None:
    """Every array under ``group`` against the network's variables, by shape, from headers.

    Keras skips some mismatches with only a warning, and reads an array before comparing its
    shape; checking the headers first refuses a file that does not fit without reading any
    array, so a file declaring huge arrays costs nothing.
    """
    import h5py

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
