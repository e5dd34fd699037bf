"""Sliding-window prediction: coverage, blending and shapes, with a model that is a formula."""

from __future__ import annotations

import numpy as np
import pytest

from brats.segment.sliding_window import (
    gaussian_importance,
    sliding_window_predict,
    window_starts,
)


def softmax_of_intensity(batch: np.ndarray) -> np.ndarray:
    """A 'model' whose answer at each voxel depends only on that voxel: class = round(x) % 4."""
    logits = -((batch[..., :1] - np.arange(4)) ** 2) * 10.0
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("shape", [(1, 37, 29, 21), (1, 8, 40, 16), (2, 16, 16, 16)])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_voxelwise_model_is_reproduced_exactly_on_any_shape(shape, blend):
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, shape[1:])
    image = np.zeros(shape, np.float32)
    image[0] = truth
    calls = []

    def predict(batch):
        calls.append(batch.shape)
        return softmax_of_intensity(batch)

    probs = sliding_window_predict(
        image, predict, (16, 16, 16), n_classes=4, overlap=0.5, blend=blend, batch_size=3
    )
    assert probs.shape == (4, *shape[1:]) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(probs, axis=0), truth)
    assert all(c[0] <= 3 and c[1:4] == (16, 16, 16) for c in calls)


def test_blending_averages_overlapping_windows_with_the_importance_map():
    # A model that answers with a constant per call: the blend is a weighted mean of them.
    image = np.zeros((1, 24, 16, 16), np.float32)
    answers = iter([0.2, 0.8])

    def predict(batch):
        p = next(answers)
        out = np.empty((*batch.shape[:4], 2), np.float32)
        out[..., 0], out[..., 1] = p, 1 - p
        return out

    probs = sliding_window_predict(image, predict, (16, 16, 16), n_classes=2, batch_size=1)
    w = gaussian_importance((16, 16, 16))
    # Windows start at 0 and 8 along axis 0; voxel 12 lies at offset 12 and 4 in them.
    expected = (0.2 * w[12, 8, 8] + 0.8 * w[4, 8, 8]) / (w[12, 8, 8] + w[4, 8, 8])
    assert probs[0, 12, 8, 8] == pytest.approx(expected, rel=1e-5)
    assert probs[0, 2, 8, 8] == pytest.approx(0.2) and probs[0, 22, 8, 8] == pytest.approx(0.8)


def test_window_starts_cover_the_axis_flush_with_the_end():
    assert window_starts(37, 16, 0.5) == [0, 8, 16, 21]
    assert window_starts(16, 16, 0.5) == [0]
    assert window_starts(10, 16, 0.5) == [0]
    assert window_starts(64, 16, 0.0) == [0, 16, 32, 48]


def test_gaussian_is_peaked_and_positive():
    w = gaussian_importance((16, 16, 16))
    assert w.max() == 1.0 and w.min() >= 1e-3
    assert w[8, 8, 8] > w[4, 8, 8] > w[0, 0, 0]


def test_flip_tta_of_a_flip_equivariant_model_changes_nothing():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 4, (1, 20, 20, 20)).astype(np.float32)
    plain = sliding_window_predict(image, softmax_of_intensity, (16, 16, 16), n_classes=4)
    tta = sliding_window_predict(
        image, softmax_of_intensity, (16, 16, 16), n_classes=4, flip_tta=True
    )
    np.testing.assert_allclose(plain, tta, atol=1e-6)


def test_bad_arguments_are_refused():
    image = np.zeros((1, 16, 16, 16), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(image, softmax_of_intensity, (16, 16, 16), n_classes=4, overlap=1)
    with pytest.raises(ValueError, match="blend"):
        sliding_window_predict(
            image, softmax_of_intensity, (16, 16, 16), n_classes=4, blend="median"
        )
