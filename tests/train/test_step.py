"""The training step in each precision: what computes in what, and that it learns alike."""

from __future__ import annotations

import numpy as np
import pytest


def _steps(precision: str, x: np.ndarray, y: np.ndarray, n: int = 3) -> tuple[object, list[float]]:
    import tensorflow as tf

    from brats.train.config import TrainConfig
    from brats.train.schedule import step_progress
    from brats.train.worker import build_step

    config = TrainConfig(
        data="-", storage="-", patch_size=(16, 16, 16), base_filters=4, depth=2, seed=3,
        learning_rate=1e-2, precision=precision,
    )  # fmt: skip
    model, optimizer, step = build_step(config, tf.distribute.get_strategy(), precision)
    at = [tf.constant(step_progress(0, i, 10, 1)) for i in range(n)]
    losses = [float(step(tf.constant(x), tf.constant(y), at[i])) for i in range(n)]
    return (model, optimizer), losses


def _batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 16, 16, 4)).astype(np.float32)
    labels = np.zeros((2, 16, 16, 16), np.int64)
    labels[:, 4:12, 4:12, 4:12] = 2
    labels[:, 6:10, 6:10, 6:10] = 1
    labels[:, 7:9, 7:9, 7:9] = 3
    x[..., 0] += labels  # learnable: FLAIR brighter in the tumor
    return x, np.eye(4, dtype=np.float32)[labels]


def test_a_bfloat16_step_computes_in_bfloat16_keeps_float32_weights_and_tracks_float32() -> None:
    x, y = _batch()
    _, losses32 = _steps("float32", x, y)
    (model16, optimizer), losses16 = _steps("bfloat16", x, y)
    convs = [layer for layer in model16.layers if "conv" in type(layer).__name__.lower()]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    assert all(v.dtype == "float32" for v in model16.trainable_variables)
    assert model16.output[0].dtype == "float32"  # the probabilities the loss sees
    assert not hasattr(optimizer, "dynamic_scale")  # bfloat16 needs no loss scaling
    # Same initial weights (seeded), same batches: the loss curves agree to bfloat16's
    # precision, and both go down.
    np.testing.assert_allclose(losses16, losses32, rtol=0.03)
    assert losses16[-1] < losses16[0] and losses32[-1] < losses32[0]


def test_float16_without_a_gpu_is_refused_before_anything_is_built() -> None:
    from brats.network.precision import PrecisionError, resolve_precision

    # TensorFlow has no float16 3D pooling kernel on CPUs: say so, do not fail mid-graph.
    with pytest.raises(PrecisionError, match="float16 needs a CUDA GPU"):
        resolve_precision("float16", gpu=None)
    assert resolve_precision("float16", gpu=(8, 0)) == "float16"


@pytest.mark.parametrize("precision", ["bf16", "mixed_bfloat16", ""])
def test_train_config_refuses_an_unknown_precision(precision: str) -> None:
    from brats.train.config import TrainConfig

    with pytest.raises(ValueError, match="precision"):
        TrainConfig(data="-", storage="-", precision=precision)


def test_a_worker_computes_on_its_reserved_cpus_rounded_up_and_never_on_none():
    from brats.train.worker import compute_threads

    assert [compute_threads(c) for c in (0.0, 0.25, 0.5, 1.0, 1.5, 4.0)] == [1, 1, 1, 1, 2, 4]
