"""Training losses, in Keras 3 ops (backend independent).

A loss is differentiable and batched; the exact per-case metrics of a report live in
:mod:`brats.volume.metrics`. Every function here takes

* ``y_true``: one-hot labels, ``(B, D, H, W, K) float`` channels last (see
  :func:`brats.volume.labels.one_hot`), and
* ``y_pred``: softmax probabilities, same shape (the U-Net's float32 output), or, for the
  region loss ``"dice_bce"``, ``(B, D, H, W, 3)`` sigmoid probabilities of WT, TC and ET,

and returns a scalar loss, averaged over the batch (the Dice terms pool the batch, as the
``seed`` preset's ``segmentation_models`` losses did with ``per_image=False``). Computation is
float32 whatever the inputs' dtype, so mixed-precision models get the same loss.

Names for :func:`get_loss` (:data:`brats.train.config.LOSS_NAMES`): ``"cce"``, ``"dice"``,
``"dice_ce"`` (the ``seed`` preset's default), ``"dice_focal"`` (the ``seed`` tutorial's
``DiceLoss(class_weights=[0.25] * 4) + CategoricalFocalLoss()``, reproduced exactly) and
``"dice_bce"`` (the ``nnunet`` preset's: soft Dice + binary cross-entropy per region).
:func:`deep_supervision_loss` applies any of them to a deep-supervision model's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import keras
from keras import ops

from brats.volume.labels import REGIONS

EPSILON: Final = 1e-7
"""Probability clip before ``log`` (``keras.backend.epsilon()``, as the ``seed`` preset's
losses used)."""
SMOOTH: Final = 1e-5
"""Dice smoothing term (segmentation_models' default, the ``seed`` preset's value)."""
SEED_CLASS_WEIGHTS: Final = (0.25, 0.25, 0.25, 0.25)

_PACKAGE: Final = "brats"


def soft_dice(
    y_true: Any,
    y_pred: Any,
    *,
    smooth: float = SMOOTH,
    per_image: bool = False,
) -> Any:
    """Soft Dice per class: ``(2 Σ y p + s) / (Σ y + Σ p + s)``.

    Sums run over the spatial axes and, unless ``per_image``, the batch axis too.

    Returns:
        float32 tensor ``(K,)``, or ``(B, K)`` when ``per_image``.
    """
    y_true, y_pred = _float32(y_true), _float32(y_pred)
    axes = (1, 2, 3) if per_image else (0, 1, 2, 3)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * intersection + smooth) / (total + smooth)


def dice_loss(
    y_true: Any,
    y_pred: Any,
    *,
    class_weights: Sequence[float] | None = None,
    smooth: float = SMOOTH,
    per_image: bool = False,
) -> Any:
    """``1 - mean_k(w_k * dice_k)``: segmentation_models' ``DiceLoss`` formula.

    ``class_weights`` multiply each class's Dice before the mean over classes and are *not*
    renormalized (default all 1). The ``seed`` preset's weights of 0.25 therefore make its
    Dice term ``1 - mean_dice / 4``, in [0.75, 1]; that is kept so ``"dice_focal"`` trains as
    the ``seed`` preset did. Returns a float32 scalar.
    """
    dice = soft_dice(y_true, y_pred, smooth=smooth, per_image=per_image)
    if class_weights is not None:
        dice = dice * ops.convert_to_tensor(list(class_weights), dtype="float32")
    return 1.0 - ops.mean(dice)


def categorical_crossentropy(y_true: Any, y_pred: Any, *, epsilon: float = EPSILON) -> Any:
    """Mean over voxels (and the batch) of ``-Σ_k y_k log p_k``; returns a float32 scalar."""
    y_true, y_pred = _float32(y_true), _float32(y_pred)
    y_pred = ops.clip(y_pred, epsilon, 1.0 - epsilon)
    return ops.mean(-ops.sum(y_true * ops.log(y_pred), axis=-1))


def categorical_focal_loss(
    y_true: Any,
    y_pred: Any,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    epsilon: float = EPSILON,
) -> Any:
    """Focal loss ``-alpha * y * (1 - p)**gamma * log(p)``, as segmentation_models computes it.

    Note the mean runs over *every* element, class axis included (segmentation_models'
    ``CategoricalFocalLoss``), so the value is the per-voxel sum over classes divided by K.
    Returns a float32 scalar.
    """
    y_true, y_pred = _float32(y_true), _float32(y_pred)
    y_pred = ops.clip(y_pred, epsilon, 1.0 - epsilon)
    return ops.mean(-y_true * alpha * ops.power(1.0 - y_pred, gamma) * ops.log(y_pred))


def to_regions(y_true: Any, regions: Sequence[Sequence[int]] | None = None) -> Any:
    """One-hot classes ``(..., K)`` -> region memberships ``(..., R)``: the sum of each
    region's class channels, so soft (pooled) one-hot targets give soft regions. ``regions``
    are the internal classes of each region output
    (:meth:`brats.volume.labels.LabelScheme.output_classes`; default WT, TC, ET)."""
    y_true = _float32(y_true)
    chosen = regions if regions is not None else tuple(REGIONS.values())
    return ops.stack(
        [ops.sum(ops.take(y_true, list(c), axis=-1), axis=-1) for c in chosen],
        axis=-1,
    )


def binary_crossentropy(y_true: Any, y_pred: Any, *, epsilon: float = EPSILON) -> Any:
    """Mean over every element of ``-(y log p + (1 - y) log(1 - p))``; a float32 scalar."""
    y_true, y_pred = _float32(y_true), _float32(y_pred)
    y_pred = ops.clip(y_pred, epsilon, 1.0 - epsilon)
    return ops.mean(-(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred)))


def binary_crossentropy_from_logits(y_true: Any, logits: Any) -> Any:
    """:func:`binary_crossentropy` of ``sigmoid(logits)``, computed from the logits as
    ``max(z, 0) - z y + log(1 + exp(-|z|))`` (nnU-Net's ``BCEWithLogitsLoss``): exact where
    the sigmoid saturates, so its gradient ``sigmoid(z) - y`` never vanishes. A clipped
    probability has no gradient below the clip, so a region output pushed under it everywhere
    could never come back. Returns a float32 scalar."""
    y_true, z = _float32(y_true), _float32(logits)
    return ops.mean(ops.relu(z) - z * y_true + ops.log1p(ops.exp(-ops.abs(z))))


def deep_supervision_weights(n: int) -> tuple[float, ...]:
    """nnU-Net's weights for ``n`` outputs, finest first: halving per level, summing to 1."""
    raw = [0.5**i for i in range(n)]
    return tuple(w / sum(raw) for w in raw)


def deep_supervision_loss(loss: Any, y_true: Any, outputs: Any) -> Any:
    """``loss`` over a model's outputs: itself for one output; for the list ``[full, level 1,
    ...]`` of a deep-supervision model, the :func:`deep_supervision_weights` sum, each level
    scored against the one-hot target average-pooled to its grid (``2**L`` per axis)."""
    if not isinstance(outputs, list | tuple):
        return loss(y_true, outputs)
    total: Any = 0.0
    for level, (weight, output) in enumerate(
        zip(deep_supervision_weights(len(outputs)), outputs, strict=True)
    ):
        target = y_true
        if level:
            size = 2**level
            target = ops.average_pool(_float32(y_true), size, strides=size, padding="valid")
        total = total + weight * loss(target, output)
    return total


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CategoricalCE(keras.losses.Loss):
    """Categorical cross-entropy on softmax probabilities (:func:`categorical_crossentropy`)."""

    def __init__(self, epsilon: float = EPSILON, name: str = "cce", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.epsilon = epsilon

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return categorical_crossentropy(y_true, y_pred, epsilon=self.epsilon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SoftDiceLoss(keras.losses.Loss):
    """Soft Dice loss (:func:`dice_loss`)."""

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        smooth: float = SMOOTH,
        per_image: bool = False,
        name: str = "dice",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.class_weights = None if class_weights is None else tuple(map(float, class_weights))
        self.smooth = smooth
        self.per_image = per_image

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return dice_loss(
            y_true,
            y_pred,
            class_weights=self.class_weights,
            smooth=self.smooth,
            per_image=self.per_image,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "class_weights": None if self.class_weights is None else list(self.class_weights),
            "smooth": self.smooth,
            "per_image": self.per_image,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiceCELoss(SoftDiceLoss):
    """``dice_weight * dice_loss + ce_weight * categorical_crossentropy`` (nnU-Net's pairing)."""

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        smooth: float = SMOOTH,
        per_image: bool = False,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        epsilon: float = EPSILON,
        name: str = "dice_ce",
        **kwargs: Any,
    ) -> None:
        super().__init__(class_weights, smooth, per_image, name=name, **kwargs)
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.epsilon = epsilon

    def call(self, y_true: Any, y_pred: Any) -> Any:
        dice = super().call(y_true, y_pred)
        ce = categorical_crossentropy(y_true, y_pred, epsilon=self.epsilon)
        return self.dice_weight * dice + self.ce_weight * ce

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "dice_weight": self.dice_weight,
            "ce_weight": self.ce_weight,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiceFocalLoss(SoftDiceLoss):
    """The ``seed`` preset's loss: ``DiceLoss(class_weights=[0.25] * 4) + 1 *
    CategoricalFocalLoss()``."""

    def __init__(
        self,
        class_weights: Sequence[float] | None = SEED_CLASS_WEIGHTS,
        smooth: float = SMOOTH,
        per_image: bool = False,
        alpha: float = 0.25,
        gamma: float = 2.0,
        focal_weight: float = 1.0,
        epsilon: float = EPSILON,
        name: str = "dice_focal",
        **kwargs: Any,
    ) -> None:
        super().__init__(class_weights, smooth, per_image, name=name, **kwargs)
        self.alpha = alpha
        self.gamma = gamma
        self.focal_weight = focal_weight
        self.epsilon = epsilon

    def call(self, y_true: Any, y_pred: Any) -> Any:
        dice = super().call(y_true, y_pred)
        focal = categorical_focal_loss(
            y_true, y_pred, alpha=self.alpha, gamma=self.gamma, epsilon=self.epsilon
        )
        return dice + self.focal_weight * focal

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "gamma": self.gamma,
            "focal_weight": self.focal_weight,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RegionDiceBCELoss(keras.losses.Loss):
    """The ``nnunet`` preset's loss on region sigmoids: ``dice_weight * (1 - mean soft Dice of
    the region outputs) + bce_weight * binary cross-entropy``, Dice pooled over the batch as
    nnU-Net's batch Dice. ``y_true`` is one-hot classes (converted by :func:`to_regions` with
    ``regions``, the internal classes of each output; default WT, TC, ET). With
    ``from_logits``, ``y_pred`` is the outputs' logits (:func:`brats.network.unet.logits`),
    and the cross-entropy is :func:`binary_crossentropy_from_logits` (what training uses)."""

    def __init__(
        self,
        smooth: float = SMOOTH,
        regions: Sequence[Sequence[int]] | None = None,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        epsilon: float = EPSILON,
        from_logits: bool = False,
        name: str = "dice_bce",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.from_logits = from_logits
        self.smooth = smooth
        self.regions = None if regions is None else tuple(tuple(int(c) for c in r) for r in regions)
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight
        self.epsilon = epsilon

    def call(self, y_true: Any, y_pred: Any) -> Any:
        regions = to_regions(y_true, self.regions)
        if self.from_logits:
            probabilities = ops.sigmoid(_float32(y_pred))
            bce = binary_crossentropy_from_logits(regions, y_pred)
        else:
            probabilities = y_pred
            bce = binary_crossentropy(regions, y_pred, epsilon=self.epsilon)
        dice = 1.0 - ops.mean(soft_dice(regions, probabilities, smooth=self.smooth))
        return self.dice_weight * dice + self.bce_weight * bce

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "smooth": self.smooth,
            "regions": None if self.regions is None else [list(r) for r in self.regions],
            "dice_weight": self.dice_weight,
            "bce_weight": self.bce_weight,
            "epsilon": self.epsilon,
            "from_logits": self.from_logits,
        }


LOSSES: Final[dict[str, type[keras.losses.Loss]]] = {
    "cce": CategoricalCE,
    "dice": SoftDiceLoss,
    "dice_ce": DiceCELoss,
    "dice_focal": DiceFocalLoss,
    "dice_bce": RegionDiceBCELoss,
}


def get_loss(name: str, **kwargs: Any) -> keras.losses.Loss:
    """The loss called ``name`` (one of :data:`LOSSES`), built with ``kwargs``.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    try:
        cls = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None
    return cls(**kwargs)


def _float32(x: Any) -> Any:
    return ops.cast(x, "float32")
