"""Losses against hand-computed values, the seed's formula, and a few real training steps."""

from __future__ import annotations

import keras
import numpy as np
import numpy.typing as npt
import pytest
import tensorflow as tf

from brats.network.unet import UNetConfig, build_unet
from brats.train.config import LOSS_NAMES
from brats.train.losses import (
    LOSSES,
    SMOOTH,
    DiceFocalLoss,
    categorical_crossentropy,
    categorical_focal_loss,
    deep_supervision_loss,
    deep_supervision_weights,
    dice_loss,
    get_loss,
    soft_dice,
    to_regions,
)
from brats.volume.labels import one_hot

F32 = npt.NDArray[np.float32]


def _np(x: object) -> npt.NDArray[np.float64]:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float64)


def _random_case(seed: int, shape: tuple[int, ...] = (2, 4, 4, 4)) -> tuple[F32, F32]:
    rng = np.random.default_rng(seed)
    y_true = one_hot(rng.integers(0, 4, size=shape))
    logits = rng.normal(size=(*shape, 4))
    y_pred = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return y_true, y_pred.astype(np.float32)


def _as_output(name: str, probs: F32) -> F32:
    """What the loss ``name`` scores: class probabilities, or their regions for dice_bce."""
    return _np(to_regions(probs)).astype(np.float32) if name == "dice_bce" else probs


def test_soft_dice_by_hand() -> None:
    # One image of two voxels, two classes.
    y_true = np.array([[[[[1, 0], [0, 1]]]]], dtype=np.float32)  # (1, 1, 1, 2, 2)
    y_pred = np.array([[[[[0.8, 0.2], [0.4, 0.6]]]]], dtype=np.float32)
    s = 1e-5
    expected = [(2 * 0.8 + s) / (1 + 1.2 + s), (2 * 0.6 + s) / (1 + 0.8 + s)]
    np.testing.assert_allclose(_np(soft_dice(y_true, y_pred, smooth=s)), expected, rtol=1e-6)
    loss = dice_loss(y_true, y_pred, smooth=s, class_weights=[0.5, 2.0])
    # Weights scale each class's Dice and are not renormalized (segmentation_models).
    assert float(_np(loss)) == pytest.approx(1 - (0.5 * expected[0] + 2.0 * expected[1]) / 2)


def test_dice_pools_the_batch_unless_per_image() -> None:
    y_true, y_pred = _random_case(0)
    t, p = y_true.astype(np.float64), y_pred.astype(np.float64)
    pooled = (2 * (t * p).sum(axis=(0, 1, 2, 3)) + SMOOTH) / (
        t.sum(axis=(0, 1, 2, 3)) + p.sum(axis=(0, 1, 2, 3)) + SMOOTH
    )
    per_image = (2 * (t * p).sum(axis=(1, 2, 3)) + SMOOTH) / (
        t.sum(axis=(1, 2, 3)) + p.sum(axis=(1, 2, 3)) + SMOOTH
    )
    np.testing.assert_allclose(_np(soft_dice(y_true, y_pred)), pooled, rtol=1e-5)
    np.testing.assert_allclose(_np(soft_dice(y_true, y_pred, per_image=True)), per_image, rtol=1e-5)
    assert per_image.shape == (2, 4)


def test_smooth_makes_an_absent_class_score_one() -> None:
    y_true = one_hot(np.zeros((1, 2, 2, 2), dtype=np.uint8))
    dice = _np(soft_dice(y_true, y_true))
    np.testing.assert_allclose(dice, 1.0)  # class 0 exact, classes 1..3 are s / s


def test_cross_entropy_and_focal_by_hand() -> None:
    y_true, y_pred = _random_case(1)
    p_true = (y_true * y_pred).sum(axis=-1).astype(np.float64)
    assert float(_np(categorical_crossentropy(y_true, y_pred))) == pytest.approx(
        float(np.mean(-np.log(p_true))), rel=1e-5
    )
    focal = -0.25 * (1 - p_true) ** 2 * np.log(p_true)
    # segmentation_models averages over every element, the class axis included.
    assert float(_np(categorical_focal_loss(y_true, y_pred))) == pytest.approx(
        float(focal.sum() / y_true.size), rel=1e-5
    )


def test_dice_focal_is_the_seed_loss() -> None:
    """``sm.losses.DiceLoss(class_weights=[0.25] * 4) + sm.losses.CategoricalFocalLoss()``."""
    y_true, y_pred = _random_case(2)
    t, p = y_true.astype(np.float64), y_pred.astype(np.float64)
    axes = (0, 1, 2, 3)
    dice = (2 * (t * p).sum(axis=axes) + 1e-5) / (t.sum(axis=axes) + p.sum(axis=axes) + 1e-5)
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    focal = np.mean(-t * 0.25 * (1 - pc) ** 2 * np.log(pc))
    expected = 1 - np.mean(0.25 * dice) + focal
    assert float(_np(get_loss("dice_focal")(y_true, y_pred))) == pytest.approx(expected, rel=1e-5)


def test_dice_ce_is_the_sum_of_its_parts() -> None:
    y_true, y_pred = _random_case(3)
    expected = _np(dice_loss(y_true, y_pred)) + 0.5 * _np(categorical_crossentropy(y_true, y_pred))
    loss = get_loss("dice_ce", ce_weight=0.5)
    assert float(_np(loss(y_true, y_pred))) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_is_near_zero_when_right_and_worse_when_wrong(name: str) -> None:
    y_true, y_pred = _random_case(4)
    loss = get_loss(name)
    perfect = float(_np(loss(y_true, _as_output(name, y_true))))
    random = float(_np(loss(y_true, _as_output(name, y_pred))))
    wrong = float(_np(loss(y_true, _as_output(name, np.roll(y_true, 1, axis=-1)))))
    floor = 0.75 if name == "dice_focal" else 0.0  # the seed's 0.25 weights: 1 - dice / 4
    assert perfect == pytest.approx(floor, abs=1e-4)
    assert perfect < random < wrong


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_compute_in_float32_for_mixed_precision_outputs(name: str) -> None:
    y_true, y_pred = _random_case(5)
    y_pred = _as_output(name, y_pred)
    loss = get_loss(name)
    reference = float(_np(loss(y_true, y_pred)))
    half = keras.ops.cast(y_pred, "bfloat16")
    value = loss(y_true, half)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(_np(value)) == pytest.approx(reference, rel=2e-2)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_serialize_by_name(name: str) -> None:
    loss = get_loss(name, smooth=1e-3) if name != "cce" else get_loss(name, epsilon=1e-6)
    assert loss.get_config()["name"] == name
    config = keras.saving.serialize_keras_object(loss)
    again = keras.saving.deserialize_keras_object(config)  # registered by name
    assert type(again) is type(loss)
    assert again.get_config() == loss.get_config()


def test_get_loss_rejects_an_unknown_name() -> None:
    with pytest.raises(
        ValueError, match=r"unknown loss 'focal'.*'cce', 'dice', 'dice_bce', 'dice_ce'"
    ):
        get_loss("focal")
    assert isinstance(get_loss("dice_ce"), LOSSES["dice_ce"])
    assert DiceFocalLoss().class_weights == (0.25, 0.25, 0.25, 0.25)


def _learnable_batch() -> tuple[F32, F32]:
    """Two 16^3 cases whose labels follow from the intensities: a network can learn them."""
    rng = np.random.default_rng(0)
    labels = np.zeros((2, 16, 16, 16), dtype=np.uint8)
    labels[0, 3:11, 3:11, 3:11] = 2
    labels[0, 5:9, 5:9, 5:9] = 1
    labels[0, 6:8, 6:8, 6:8] = 3
    labels[1, 6:14, 4:12, 2:10] = 2
    labels[1, 8:12, 6:10, 4:8] = 3
    means = np.array([[0, 0, 0, 0], [1, -1, 0, 1], [0, 1, 1, 0], [1, 1, -1, -1]], np.float32)
    image = means[labels] + rng.normal(scale=0.3, size=(*labels.shape, 4))
    return image.astype(np.float32), one_hot(labels)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_few_training_steps_reduce_each_loss(name: str) -> None:
    keras.utils.set_random_seed(0)
    x, y = _learnable_batch()
    output = "regions" if name == "dice_bce" else "softmax"
    model = build_unet(UNetConfig(base_filters=4, depth=2, dropout=False, output=output))
    loss = get_loss(name)
    optimizer = keras.optimizers.Adam(learning_rate=3e-3)
    before = float(_np(loss(y, model(x, training=False))))
    for _ in range(8):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        grads = tape.gradient(value, model.trainable_weights)
        optimizer.apply(grads, model.trainable_weights)
    after = float(_np(loss(y, model(x, training=False))))
    assert np.isfinite(after)
    assert after < before - 0.02 * abs(before), (before, after)


def test_loss_names_are_the_losses_of_the_training_module():
    """The names the CLI offers (no TensorFlow needed) are the losses that exist."""
    assert tuple(LOSSES) == LOSS_NAMES


def test_regions_of_one_hot_classes() -> None:
    labels = np.array([0, 1, 2, 3])
    regions = _np(to_regions(one_hot(labels)))
    # WT = {1, 2, 3}, TC = {1, 3}, ET = {3}
    np.testing.assert_array_equal(regions, [[0, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 1]])


def test_region_loss_is_dice_plus_bce_per_region() -> None:
    y_true, probs = _random_case(6)
    regions = _np(to_regions(y_true))
    y_pred = _as_output("dice_bce", probs).astype(np.float64)
    dice = (2 * (regions * y_pred).sum(axis=(0, 1, 2, 3)) + SMOOTH) / (
        regions.sum(axis=(0, 1, 2, 3)) + y_pred.sum(axis=(0, 1, 2, 3)) + SMOOTH
    )
    p = np.clip(y_pred, 1e-7, 1 - 1e-7)
    bce = -(regions * np.log(p) + (1 - regions) * np.log(1 - p)).mean()
    value = float(_np(get_loss("dice_bce")(y_true, y_pred.astype(np.float32))))
    assert value == pytest.approx(1 - dice.mean() + bce, rel=1e-5)


def test_region_loss_from_logits_is_the_same_loss_where_nothing_saturates() -> None:
    y_true, _ = _random_case(8)
    z = np.random.default_rng(8).normal(scale=3.0, size=(*y_true.shape[:-1], 3))
    p = (1 / (1 + np.exp(-z))).astype(np.float32)
    on_logits = get_loss("dice_bce", from_logits=True)(y_true, z.astype(np.float32))
    assert float(_np(on_logits)) == pytest.approx(float(_np(get_loss("dice_bce")(y_true, p))), 1e-5)


def test_a_saturated_region_output_still_learns_from_logits() -> None:
    """A region pushed far below zero everywhere: the clipped probability gives no gradient
    (it stays dead), the logits give ``sigmoid(z) - y`` at every voxel of the region."""
    y_true = one_hot(np.full((1, 2, 2, 2), 3))  # every voxel ET (so WT, TC, ET)
    z = tf.Variable(np.full((1, 2, 2, 2, 3), -30.0, dtype=np.float32))
    with tf.GradientTape(persistent=True) as tape:
        on_logits = get_loss("dice_bce", from_logits=True)(y_true, z)
        on_probabilities = get_loss("dice_bce")(y_true, tf.sigmoid(z))
    learns = _np(tape.gradient(on_logits, z))
    dead = _np(tape.gradient(on_probabilities, z))
    assert (learns <= -0.99 / learns.size).all()  # d mean(BCE) / dz = (sigmoid(z) - 1) / n
    assert (np.abs(dead) < 1e-9).all()


def test_deep_supervision_weights_halve_per_level_and_sum_to_one() -> None:
    assert deep_supervision_weights(1) == (1.0,)
    weights = deep_supervision_weights(3)
    assert weights == pytest.approx((4 / 7, 2 / 7, 1 / 7))


def test_deep_supervision_scores_each_level_against_the_pooled_target() -> None:
    rng = np.random.default_rng(7)
    y_true = one_hot(rng.integers(0, 4, size=(2, 8, 8, 8)))
    full = rng.uniform(size=(2, 8, 8, 8, 3)).astype(np.float32)
    half = rng.uniform(size=(2, 4, 4, 4, 3)).astype(np.float32)
    loss = get_loss("dice_bce")
    pooled = y_true.reshape(2, 4, 2, 4, 2, 4, 2, 4).mean(axis=(2, 4, 6))
    expected = 2 / 3 * _np(loss(y_true, full)) + 1 / 3 * _np(loss(pooled, half))
    got = _np(deep_supervision_loss(loss, y_true, [full, half]))
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    assert float(_np(deep_supervision_loss(loss, y_true, full))) == pytest.approx(
        float(_np(loss(y_true, full)))
    )
