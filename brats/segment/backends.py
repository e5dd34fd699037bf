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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from brats.errors import BratsError
from brats.segment.sliding_window import Predict

if TYPE_CHECKING:
    import keras

    from brats.io.model_card import ModelCard

BACKENDS: Final = ("auto", "keras", "onnxruntime")
RUNTIMES: Final = ("keras", "onnxruntime")
"""What ``auto`` resolves to: the runtimes themselves."""
ONNX_EXTRA: Final = "pip install 'brats-ray[onnx]'"


class BackendError(BratsError, ValueError):
    """A backend that cannot run this model here (not installed, or not its format)."""


def resolve_backend(asked: str, card: ModelCard) -> str:
    """The runtime (:data:`RUNTIMES`) that runs ``card``'s model when ``asked`` for
    (:data:`BACKENDS`; see the module for ``auto``).

    Raises:
        BackendError: a SavedModel export (served by TensorFlow Serving, not segmented
            here), an ONNX export asked to run in Keras, or an unknown backend.
    """
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
        BackendError: ONNX Runtime is not installed.
    """
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(f"ONNX Runtime is not installed: {ONNX_EXTRA}") from None
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=onnx_providers())


def onnx_predict(model: bytes | str, threads: int = 0) -> Predict:
    """An ONNX model as a :data:`~brats.segment.sliding_window.Predict` (ONNX Runtime)."""
    session = onnx_session(model, threads)
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
