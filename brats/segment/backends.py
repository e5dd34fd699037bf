"""The runtimes a :class:`~brats.segment.predictor.Predictor` runs its network in.

``--backend`` (segment, the app, the benchmarks) takes one of :data:`BACKENDS`:

* ``keras``: the Keras model in TensorFlow (``model.keras``), at any ``--precision``;
* ``onnxruntime``: ONNX Runtime (the ``onnx`` extra), float32. An ONNX export
  (``brats export --format onnx``) runs as it is; a Keras model is converted first, in memory,
  and checked as an export is (:func:`brats.io.export.onnx_bytes`, about 10 s a network);
* ``auto`` (the default): ONNX Runtime for an ONNX export (the only runtime that can run
  it, and what a deployment without TensorFlow has), else Keras: on this project's CPUs
  TensorFlow's forward pass is faster than ONNX Runtime's on the same network
  (``python jobs/benchmark.py model --backends keras,onnxruntime``; figures in the README),
  and no GPU measurement has shown otherwise yet (``benchmark.py gpu --backends``).

Whatever runs the network, the sliding window, flip TTA, fold averaging, decoding and
postprocessing are the predictor's, the same for every backend: a backend is a
:data:`~brats.segment.sliding_window.Predict`, windows ``(B, d, h, w, C)`` in, float32
outputs ``(B, d, h, w, K)`` out.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from brats.errors import BratsError
from brats.io.export import ONNX_EXTRA, ExportError, onnx_bytes, onnx_session
from brats.segment.sliding_window import Predict

if TYPE_CHECKING:
    import keras

    from brats.io.model_card import ModelCard, ModelInfo

BACKENDS: Final = ("auto", "keras", "onnxruntime")
RUNTIMES: Final = ("keras", "onnxruntime")
"""What ``auto`` resolves to: the runtimes themselves."""


class BackendError(BratsError, ValueError):
    """A backend that cannot run this model here (not installed, or not its format)."""


def resolve_backend(asked: str, card: ModelCard, precision: str = "float32") -> str:
    """The runtime (:data:`RUNTIMES`) that runs ``card``'s model when ``asked`` for
    (:data:`BACKENDS`; see the module for ``auto``) at ``precision``; cheap (nothing is
    loaded), so a job checks it before any case is touched.

    Raises:
        BackendError: a SavedModel export (served by TensorFlow Serving, not segmented
            here), an ONNX export asked to run in Keras, ONNX Runtime at a precision other
            than float32 (or ``auto``), ONNX Runtime (or, to convert a Keras model, tf2onnx)
            not installed, or an unknown backend.
    """
    runtime = _runtime(asked, card)
    if runtime == "onnxruntime":
        onnx_precision(precision)
        needed = ["onnxruntime"] + (["tf2onnx"] if card.export is None else [])
        missing = [name for name in needed if importlib.util.find_spec(name) is None]
        if missing:
            raise BackendError(f"{', '.join(missing)} not installed: {ONNX_EXTRA}")
    return runtime


def onnx_precision(asked: str) -> str:
    """The precision ONNX Runtime runs at when ``asked`` for one: float32 (for ``float32``
    and ``auto``).

    Raises:
        BackendError: any other precision.
    """
    if asked not in ("float32", "auto"):
        raise BackendError(
            f"ONNX Runtime runs the float32 network; --precision {asked} needs --backend keras"
        )
    return "float32"


def _runtime(asked: str, card: ModelCard) -> str:
    if asked not in BACKENDS:
        raise BackendError(f"backend must be one of {BACKENDS}, got {asked!r}")
    if card.export == "saved_model":
        raise BackendError(
            "a SavedModel export is for TensorFlow Serving; segment with the Keras model or "
            "an ONNX export"
        )
    if card.export == "onnx":
        if asked == "keras":
            raise BackendError(
                "an ONNX export runs in ONNX Runtime, not Keras: --backend onnxruntime or auto"
            )
        return "onnxruntime"
    return "keras" if asked == "auto" else asked


def onnx_networks(models: Sequence[Any], info: ModelInfo) -> list[Any]:
    """An ONNX Runtime session (:func:`brats.io.export.onnx_session`) of each network: ONNX
    bytes as they are, a Keras model converted first (:func:`brats.io.export.onnx_bytes`).

    Raises:
        BackendError: ONNX Runtime or tf2onnx is not installed, or a conversion does not
            reproduce its Keras model.
    """
    try:
        return [onnx_session(m if isinstance(m, bytes) else onnx_bytes(m, info)) for m in models]
    except (ExportError, ImportError) as err:
        raise BackendError(f"running the model in ONNX Runtime: {err}") from None


def onnx_predict(session: Any) -> Predict:
    """An ONNX Runtime session as a :data:`~brats.segment.sliding_window.Predict`."""
    name = session.get_inputs()[0].name

    def forward(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out = session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float32)

    return forward


def keras_predict(model: keras.Model) -> Predict:
    """A Keras model as a :data:`~brats.segment.sliding_window.Predict`: one traced
    ``tf.function`` forward pass of its main output without dropout, numpy in and out."""
    import tensorflow as tf

    from brats.network.unet import main_output

    network = main_output(model)

    @tf.function(reduce_retracing=True)
    def forward(x: Any) -> Any:
        return network(x, training=False)

    return lambda x: np.asarray(forward(tf.constant(x)), dtype=np.float32)


def mean_predict(forwards: Sequence[Predict]) -> Predict:
    """One forward pass that is the mean of ``forwards``' outputs on the same windows: an
    ensemble's probabilities averaged window by window, before anything is decoded (so
    sliding-window blending and flip TTA see the ensemble as one network)."""
    if len(forwards) == 1:
        return forwards[0]

    def forward(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        total = forwards[0](x)
        for more in forwards[1:]:
            total = total + more(x)
        return total / np.float32(len(forwards))

    return forward
