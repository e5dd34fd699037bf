"""Portable models: a model folder exported as ONNX or a TensorFlow SavedModel.

``brats export --model M --format onnx|saved_model --out O`` writes, under ``O``:

* one model: ``model.onnx`` (or the ``saved_model/`` folder) and ``model.json``;
* an ensemble: ``fold_<i>/`` for each fold, as above, and a ``model.json`` of kind
  ``ensemble`` listing them.

What is exported is the network the predictor runs: the main output only (region sigmoids
or class softmax, no deep-supervision heads), channels last ``(B, D, H, W, C)`` in and
``(B, D, H, W, K)`` out, every axis but the channels dynamic, so any window fits. ONNX goes
through Keras 3's ``model.export(format="onnx")`` (tf2onnx: the ``onnx`` extra).

``model.json`` is the source card's description (:class:`~brats.io.model_card.ModelInfo`:
modalities, normalization, patch size, label scheme, target spacing, postprocessing) with
``export_format``, ``opset`` (ONNX), ``source_version`` (the Keras model's version) and a
``version`` that is the sha256 of the exported bytes (of a SavedModel, of its files' names
and hashes; of an ensemble, of its folds'), so a served model is named by what it is.

Every export checks itself before anything is written where a reader looks: the exported
network runs on one seeded window of the training patch size (ONNX Runtime, or TensorFlow
for a SavedModel) and must agree with Keras to within :data:`TOLERANCE`, else
:class:`ExportError` and nothing is left under ``O``.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from brats.errors import BratsError
from brats.io.model_card import (
    EXPORTS,
    META_FILE,
    ONNX_FILE,
    SAVED_MODEL_DIR,
    FoldRef,
    ModelCard,
    ensemble_version,
    files_version,
)
from brats.options import option
from brats.storage import S3_ENDPOINT_HELP, redact, resolve, write_bytes_atomic

if TYPE_CHECKING:
    import keras

    from brats.io.model_card import ModelInfo

FORMATS: Final = tuple(EXPORTS)
OPSET: Final = 17
"""The ONNX opset written (supported by ONNX Runtime 1.14 and later, TensorRT 8.6 and later)."""
TOLERANCE: Final = 1e-3
"""The largest difference between the exported network's outputs and Keras's on the check
window."""


ONNX_EXTRA: Final = "pip install 'brats-ray[onnx]'"


class ExportError(BratsError):
    """An export that does not reproduce its model, or that cannot be made."""


class OnnxRuntimeMissing(ExportError):
    """ONNX Runtime (the ``onnx`` extra) is not installed."""


@dataclass(frozen=True)
class ExportConfig:
    """Everything ``brats export`` and ``jobs/export.py`` take."""

    model: str = option(help="model folder (or an ensemble's), local or s3://")
    out: str = option(help="output folder, local or s3://")
    format: str = option("onnx", choices=FORMATS, help="what to export to")
    s3_endpoint: str | None = option(None, help=S3_ENDPOINT_HELP)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")


@dataclass(frozen=True)
class ExportResult:
    """Where the export went, its version and how far it was from Keras on the check
    window (the largest difference over every fold)."""

    out: str
    version: str
    max_difference: float
    files: tuple[str, ...]


def export_model(config: ExportConfig) -> ExportResult:
    """Export the model folder ``config.model`` (see the module).

    Raises:
        ExportError: the exported network disagrees with Keras by more than
            :data:`TOLERANCE`, or the runtime for the check is not installed.
        brats.io.artifact.ArtifactError: the model folder does not verify.
    """
    from brats.io.artifact import load_models

    source = resolve(config.model, s3_endpoint=config.s3_endpoint)
    out = resolve(config.out, s3_endpoint=config.s3_endpoint)
    card, loaded = load_models(source)
    exported: list[tuple[str, dict[str, bytes], str, float]] = []
    for i, model in enumerate(loaded):
        folder = f"fold_{i}" if card.is_ensemble else ""
        files, difference = _export_one(model.model, card.info, config.format)
        exported.append((folder, files, files_version(files), difference))
    written: list[str] = []
    fs = out.filesystem()
    for folder, files, _, _ in exported:
        for name, data in sorted(files.items()):
            key = posixpath.join(folder, name) if folder else name
            write_bytes_atomic(fs, out.join(key), data)
            written.append(key)
    folds = [FoldRef(folder, version) for folder, _, version, _ in exported]
    for (folder, _, version, _), fold in zip(exported, loaded, strict=True):
        if folder:  # a fold's card describes the fold, as its Keras card does
            document = _card(fold.card.info, config.format, version, fold.card.version)
            write_bytes_atomic(fs, out.join(f"{folder}/{META_FILE}"), document)
            written.append(f"{folder}/{META_FILE}")
    if card.is_ensemble:
        version = ensemble_version(folds)
        document = _card(card.info, config.format, version, card.version, folds=folds)
    else:
        version = folds[0].version
        document = _card(card.info, config.format, version, card.version)
    write_bytes_atomic(fs, out.join(META_FILE), document)  # the card last: it names the rest
    written.append(META_FILE)
    difference = max(d for *_, d in exported)
    return ExportResult(redact(out.uri), version, difference, tuple(written))


def _export_one(
    model: keras.Model, info: ModelInfo, export_format: str
) -> tuple[dict[str, bytes], float]:
    """The exported files of one network (name -> bytes, a SavedModel's under
    ``saved_model/``) and its largest difference from Keras on the check window."""
    from brats.network.unet import main_output

    network = main_output(model)
    window = check_window(info)
    expected = np.asarray(network(window, training=False), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="brats-export-") as tmp:
        if export_format == "onnx":
            path = os.path.join(tmp, ONNX_FILE)
            network.export(path, format="onnx", verbose=False, opset_version=OPSET)
            files = {ONNX_FILE: _read(path)}
            got = run_onnx(files[ONNX_FILE], window)
        else:
            path = os.path.join(tmp, SAVED_MODEL_DIR)
            network.export(path, format="tf_saved_model", verbose=False)
            got = run_saved_model(path, window)
            files = {
                posixpath.join(SAVED_MODEL_DIR, os.path.relpath(f, path).replace(os.sep, "/")): (
                    _read(f)
                )
                for f in _walk(path)
            }
    difference = float(np.max(np.abs(got - expected)))
    if not difference <= TOLERANCE:
        raise ExportError(
            f"the {export_format} export differs from the Keras model by {difference:.2e} on "
            f"the check window (over the {TOLERANCE:g} allowed): nothing was written"
        )
    return files, difference


def check_window(info: ModelInfo) -> npt.NDArray[np.float32]:
    """The seeded window every export is checked on: ``(1, *patch_size, channels)``,
    standard normal (what z-scored brain voxels look like)."""
    shape = (1, *info.patch_size, len(info.modalities))
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def onnx_bytes(model: keras.Model, info: ModelInfo) -> bytes:
    """``model``'s main output as ONNX bytes, checked against Keras as :func:`export_model`
    checks an export (what the predictor's ``onnxruntime`` backend runs a Keras model as).

    Raises:
        ExportError: as :func:`export_model`.
    """
    files, _ = _export_one(model, info, "onnx")
    return files[ONNX_FILE]


def run_onnx(model: bytes | str, window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """An ONNX model's output on ``window`` with ONNX Runtime (:func:`onnx_session`).

    Raises:
        OnnxRuntimeMissing: ONNX Runtime is not installed (the ``onnx`` extra).
    """
    session = onnx_session(model)
    name = session.get_inputs()[0].name
    return np.asarray(session.run(None, {name: window})[0], dtype=np.float32)


def onnx_providers() -> list[str]:
    """The execution providers a session uses: CUDA where ``onnxruntime-gpu`` is installed
    (instead of ``onnxruntime``) and sees a GPU, then the CPU."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def onnx_session(model: bytes | str, threads: int = 0) -> Any:
    """An ONNX Runtime session of an ONNX model's bytes (or file) on
    :func:`onnx_providers`, all graph optimizations on, ``threads`` intra-op threads on the
    CPU (0: ONNX Runtime's default, one per physical core), warnings only.

    Raises:
        OnnxRuntimeMissing: ONNX Runtime is not installed.
    """
    try:
        import onnxruntime
    except ImportError:
        raise OnnxRuntimeMissing(f"ONNX Runtime is not installed: {ONNX_EXTRA}") from None
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=onnx_providers())


def run_saved_model(path: str, window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A SavedModel's ``serve`` output on ``window`` with TensorFlow."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    return np.asarray(loaded.serve(tf.constant(window)), dtype=np.float32)


def _card(
    info: ModelInfo,
    export_format: str,
    version: str,
    source_version: str,
    *,
    folds: Sequence[FoldRef] = (),
) -> bytes:
    card = ModelCard(
        # The scheme written out even for a model that does not say (the default one), so
        # that a server reading only this card knows the label values to write.
        info=replace(info, label_scheme=info.scheme),
        version=version,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        keras_version="",
        folds=tuple(folds),
        export=export_format,
        opset=OPSET if export_format == "onnx" else None,
        source_version=source_version,
    )
    return card.to_json()


def _walk(root: str) -> list[str]:
    return sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names)


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()
