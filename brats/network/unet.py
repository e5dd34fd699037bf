"""The 3D U-Net, built in Keras 3, and its architecture as plain data.

:class:`UNetConfig` with no arguments is the ``seed`` preset's network (the reference 3D
U-Net this project grew from): four encoder levels and a bottleneck with 16-32-64-128-256
filters, two 3x3x3 ``same`` convolutions with ReLU per level (he_uniform init) and dropout
between them (0.1/0.1/0.2/0.2/0.3 down, 0.2/0.2/0.1/0.1 up), 2x2x2 max pooling, 2x2x2
stride-2 transposed convolutions to upsample, skip connections by concatenation, and a 1x1x1
convolution with a softmax over 4 classes. It takes 4 channels by default (FLAIR, T1, T1ce,
T2), or the 3 it was first trained on (FLAIR, T1ce, T2; :data:`SEED_CONFIG`).

:data:`NNUNET_CONFIG` is the ``nnunet`` preset's network, nnU-Net's recipe for BraTS: instance
normalization and LeakyReLU(0.01) after every convolution, no dropout, three sigmoid outputs
(the overlapping regions WT, TC, ET) instead of a softmax, and deep supervision: extra
1x1x1 heads on the upper decoder levels, used by the training loss only.

Input is ``(batch, D, H, W, C) float32`` channels-last with free spatial size, so one model
serves training patches and sliding-window inference; every spatial size must be divisible
by ``2 ** depth`` (:func:`check_spatial_shape`). Output is ``(batch, D, H, W, n_outputs)``
probabilities, ``float32`` even under mixed precision: a softmax over ``n_classes`` classes,
or one sigmoid per region (``output="regions"``).

The layers are created in the ``seed`` preset's order, so the weighted layers line up one to
one with its Keras 2 HDF5 file (Keras loads legacy HDF5 weights by layer order, not by
name). Keras is imported when a network is built: the config alone (read from a
``model.json``, say) needs no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import keras
    from keras import KerasTensor

NORMALIZATIONS: Final = (None, "batch", "group", "instance")
ACTIVATIONS: Final = ("relu", "leaky_relu")
OUTPUTS: Final = ("softmax", "regions")
"""``softmax``: one probability per class, summing to 1. ``regions``: one independent sigmoid
per region output of the label scheme (:attr:`brats.volume.labels.LabelScheme.output_regions`;
WT, TC, ET for BraTS glioma)."""
LEAKY_SLOPE: Final = 0.01
"""LeakyReLU's negative slope (nnU-Net's)."""
SEED_LEVEL_DROPOUT: Final = (0.1, 0.1, 0.2, 0.2, 0.3)
"""The ``seed`` preset's dropout per level, top to bottleneck; a decoder level reuses its
encoder's."""
GROUPS: Final = 8
"""Channel groups for ``normalization="group"`` (fewer when a level has fewer filters)."""


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the 3D U-Net; stored in ``model.json`` through :meth:`to_dict`.

    Attributes:
        base_filters: filters of the top level; level ``i`` has ``base_filters * 2**i``.
        depth: number of encoder levels (poolings); the bottleneck is level ``depth``.
        in_channels: input modalities (4 by default; 3 for FLAIR, T1ce, T2).
        n_classes: internal classes of the label scheme, background included (softmax
            channels).
        n_regions: region outputs of the label scheme (sigmoid channels of ``regions``).
        dropout: whether to apply dropout at all.
        dropout_rates: dropout per level, top to bottleneck (``depth + 1`` values); ``None``
            means the ``seed`` preset's schedule (:data:`SEED_LEVEL_DROPOUT` for depth 4; for
            another depth, 0.1 on the upper half of the levels, 0.2 on the lower half, 0.3 at
            the bottleneck).
        normalization: ``None`` (the ``seed`` preset), ``"batch"``, ``"group"`` or
            ``"instance"``; placed between each convolution and its activation.
        activation: ``"relu"`` (the ``seed`` preset) or ``"leaky_relu"`` (slope
            :data:`LEAKY_SLOPE`).
        output: ``"softmax"`` over ``n_classes`` (the ``seed`` preset) or ``"regions"``: one
            sigmoid per BraTS region (:data:`OUTPUTS`).
        deep_supervision: extra output heads on decoder levels ``1..deep_supervision`` (a
            level ``L`` head is ``2**L`` times coarser); built only for training
            (:func:`build_unet` with ``deep_supervision=True``). At most ``depth - 1``.
        mixed_precision: the compute precision, set per layer (never as Keras' global policy);
            variables and the softmax output stay float32 whatever is chosen. ``False`` or
            ``"float32"``: float32 throughout (the ``seed`` preset). ``True`` or
            ``"mixed_float16"``: float16 compute, for GPUs (TensorFlow has no CPU float16
            kernel for 3D max pooling). ``"mixed_bfloat16"``: bfloat16 compute, for CPUs with
            AVX-512 BF16 or AMX, TPUs and Ampere or newer GPUs. Stored canonically as
            ``False``, ``True`` or ``"mixed_bfloat16"``.
    """

    base_filters: int = 16
    depth: int = 4
    in_channels: int = 4
    n_classes: int = 4
    n_regions: int = 3
    dropout: bool = True
    dropout_rates: tuple[float, ...] | None = None
    normalization: str | None = None
    mixed_precision: bool | str = False
    activation: str = "relu"
    output: str = "softmax"
    deep_supervision: int = 0

    def __post_init__(self) -> None:
        for name in ("base_filters", "depth", "in_channels", "n_classes", "n_regions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"UNetConfig.{name} must be a positive integer, got {value!r}")
        if self.n_classes < 2:
            raise ValueError("UNetConfig.n_classes must be at least 2 for a softmax")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"UNetConfig.normalization must be one of {NORMALIZATIONS}, "
                f"got {self.normalization!r}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"UNetConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if self.output not in OUTPUTS:
            raise ValueError(f"UNetConfig.output must be one of {OUTPUTS}, got {self.output!r}")
        heads = self.deep_supervision
        if not isinstance(heads, int) or isinstance(heads, bool) or not 0 <= heads < self.depth:
            raise ValueError(
                f"UNetConfig.deep_supervision must be an integer in [0, depth - 1 = "
                f"{self.depth - 1}], got {heads!r}"
            )
        if self.dropout_rates is not None:
            rates = tuple(float(r) for r in self.dropout_rates)
            if len(rates) != self.depth + 1 or not all(0.0 <= r < 1.0 for r in rates):
                raise ValueError(
                    f"UNetConfig.dropout_rates needs depth + 1 = {self.depth + 1} values "
                    f"in [0, 1), got {self.dropout_rates!r}"
                )
            object.__setattr__(self, "dropout_rates", rates)
        object.__setattr__(self, "mixed_precision", _canonical_precision(self.mixed_precision))

    @property
    def dtype_policy(self) -> str:
        """The Keras dtype policy of every layer but the float32 softmax."""
        if self.mixed_precision is True:
            return "mixed_float16"
        return "float32" if self.mixed_precision is False else str(self.mixed_precision)

    @property
    def n_outputs(self) -> int:
        """Output channels: ``n_classes`` for a softmax, one per region for ``regions``."""
        return self.n_classes if self.output == "softmax" else self.n_regions

    @property
    def filters(self) -> tuple[int, ...]:
        """Filters per level, top to bottleneck (``depth + 1`` values)."""
        return tuple(self.base_filters * 2**level for level in range(self.depth + 1))

    @property
    def level_dropout(self) -> tuple[float, ...]:
        """Dropout rate per level, top to bottleneck; all zero when ``dropout`` is off."""
        if not self.dropout:
            return (0.0,) * (self.depth + 1)
        if self.dropout_rates is not None:
            return self.dropout_rates
        if self.depth == len(SEED_LEVEL_DROPOUT) - 1:
            return SEED_LEVEL_DROPOUT
        half = self.depth // 2
        return (*(0.1 if level < half else 0.2 for level in range(self.depth)), 0.3)

    @property
    def divisor(self) -> int:
        """Every spatial size fed to the network must be a multiple of this (``2**depth``)."""
        return int(2**self.depth)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        out = asdict(self)
        if self.dropout_rates is not None:
            out["dropout_rates"] = list(self.dropout_rates)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error (a newer format)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown UNetConfig fields {unknown}")
        values = dict(data)
        if values.get("dropout_rates") is not None:
            values["dropout_rates"] = tuple(values["dropout_rates"])
        return cls(**values)


def _canonical_precision(value: object) -> bool | str:
    # bool first: True == 1 and False == 0, so a membership test alone would take ints.
    if isinstance(value, bool):
        return value
    if value in ("float32", "mixed_float16", "mixed_bfloat16"):
        return {"float32": False, "mixed_float16": True}.get(str(value), str(value))
    raise ValueError(
        "UNetConfig.mixed_precision must be False, True, 'float32', 'mixed_float16' or "
        f"'mixed_bfloat16', got {value!r}"
    )


SEED_CONFIG: Final = UNetConfig(in_channels=3)
"""The ``seed`` preset as it was first trained: 3 input channels (FLAIR, T1ce, T2)."""


def nnunet_config(**overrides: Any) -> UNetConfig:
    """The ``nnunet`` preset's network: instance normalization, LeakyReLU, no dropout, region
    sigmoids, and deep supervision on every decoder level but the two coarsest (nnU-Net gives
    the coarsest a weight of 0); ``overrides`` are :class:`UNetConfig` fields."""
    values: dict[str, Any] = {
        "normalization": "instance",
        "activation": "leaky_relu",
        "dropout": False,
        "output": "regions",
    } | overrides
    depth = int(values.get("depth", UNetConfig.depth))
    values.setdefault("deep_supervision", max(0, depth - 2))
    return UNetConfig(**values)


NNUNET_CONFIG: Final = nnunet_config()
"""The ``nnunet`` preset's default network (16-32-64-128-256 filters, 4 poolings)."""


class SpatialShapeError(ValueError):
    """A volume or patch whose spatial size the U-Net cannot take."""


def check_spatial_shape(shape: Sequence[int], depth: int = 4) -> tuple[int, ...]:
    """Check that every spatial size is a positive multiple of ``2 ** depth``.

    Args:
        shape: spatial sizes ``(D, H, W)`` (not the batch or channel axes).
        depth: the U-Net's number of poolings.

    Returns:
        The shape as a tuple of ints.

    Raises:
        SpatialShapeError: naming the offending axes and the nearest valid size to pad to.
    """
    sizes = tuple(int(s) for s in shape)
    divisor = 2**depth
    bad = [(axis, s) for axis, s in enumerate(sizes) if s < 1 or s % divisor]
    if bad:
        detail = ", ".join(
            f"axis {axis} is {s} (pad to {max(divisor, -(-s // divisor) * divisor)})"
            for axis, s in bad
        )
        raise SpatialShapeError(
            f"spatial shape {sizes} must be divisible by 2**depth = {divisor} on every axis: "
            f"{detail}"
        )
    return sizes


def build_unet(
    config: UNetConfig | None = None, *, deep_supervision: bool = False, name: str = "unet3d"
) -> keras.Model:
    """Build the 3D U-Net described by ``config`` (by default the ``seed`` preset's).

    Args:
        config: the architecture.
        deep_supervision: also build the ``config.deep_supervision`` extra heads (training).
            Every layer has a fixed name, and the heads add layers without renaming any, so
            weights copy by name between the two forms (:func:`copy_weights`).

    Returns:
        An uncompiled functional ``keras.Model`` mapping ``(B, D, H, W, in_channels) float32``
        to ``(B, D, H, W, n_outputs) float32`` probabilities; with ``deep_supervision`` and
        heads to build, to the list ``[full resolution, level 1, level 2, ...]``, where level
        ``L`` is ``(B, D/2**L, H/2**L, W/2**L, n_outputs)``.
    """
    import keras

    config = config or UNetConfig()
    dtype = config.dtype_policy
    rates = config.level_dropout
    inputs = keras.Input(shape=(None, None, None, config.in_channels), name="image")

    x: KerasTensor = inputs
    skips: list[KerasTensor] = []
    for level in range(config.depth):
        x = _conv_block(x, config, level, rates[level], dtype, f"enc{level}")
        skips.append(x)
        x = keras.layers.MaxPooling3D(2, dtype=dtype, name=f"enc{level}_pool")(x)
    x = _conv_block(x, config, config.depth, rates[config.depth], dtype, "bottleneck")
    heads: list[KerasTensor] = []
    for level in reversed(range(config.depth)):
        x = keras.layers.Conv3DTranspose(
            config.filters[level],
            2,
            strides=2,
            padding="same",
            dtype=dtype,
            name=f"dec{level}_up",
        )(x)
        x = keras.layers.Concatenate(axis=-1, dtype=dtype, name=f"dec{level}_concat")(
            [x, skips[level]]
        )
        x = _conv_block(x, config, level, rates[level], dtype, f"dec{level}")
        if deep_supervision and 1 <= level <= config.deep_supervision:
            heads.insert(0, _head(x, config, dtype, f"dec{level}_"))
    outputs = _head(x, config, dtype, "")
    if heads:
        return keras.Model(inputs, [outputs, *heads], name=name)
    return keras.Model(inputs, outputs, name=name)


def _head(x: KerasTensor, config: UNetConfig, dtype: str, prefix: str) -> KerasTensor:
    """1x1x1 convolution to ``n_outputs`` logits, then softmax or sigmoid in float32."""
    import keras

    logits = keras.layers.Conv3D(config.n_outputs, 1, dtype=dtype, name=f"{prefix}logits")(x)
    # Probabilities in float32 even under mixed precision: float16 loses the small classes
    # (ET is often < 0.1 % of a volume) and makes log() in the losses overflow.
    activation = "softmax" if config.output == "softmax" else "sigmoid"
    return keras.layers.Activation(activation, dtype="float32", name=f"{prefix}probabilities")(
        logits
    )


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy every weighted layer of ``target`` from the layer of the same name in ``source``
    (a training model's extra heads are left behind).

    Raises:
        ValueError: a layer of ``target`` missing from ``source``, or of another shape.
    """
    names = {layer.name for layer in source.layers}
    for layer in target.layers:
        if not layer.weights:
            continue
        if layer.name not in names:
            raise ValueError(f"layer {layer.name!r} is not in model {source.name!r}")
        layer.set_weights(source.get_layer(layer.name).get_weights())


def logits(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s layers and weights that returns the logits under each of its
    outputs (the ``*logits`` convolutions, before the float32 activation), in the same order:
    what a loss computed from logits trains."""
    import keras

    heads = [model.get_layer(name).input for name in model.output_names]
    outputs = heads if len(heads) > 1 else heads[0]
    return keras.Model(model.input, outputs, name=f"{model.name}_logits")


def main_output(model: keras.Model) -> keras.Model:
    """The full-resolution output alone: ``model`` itself, or, for a deep-supervision model,
    a model sharing its layers and weights with the extra heads left out."""
    import keras

    if len(model.outputs) == 1:
        return model
    return keras.Model(model.input, model.outputs[0], name=model.name)


def _conv_block(
    x: KerasTensor, config: UNetConfig, level: int, rate: float, dtype: str, name: str
) -> KerasTensor:
    """Two 3x3x3 convolutions + (normalization) + activation, with the level's dropout between."""
    import keras

    filters = config.filters[level]
    for i in (1, 2):
        if i == 2 and rate > 0:
            x = keras.layers.Dropout(rate, dtype=dtype, name=f"{name}_dropout")(x)
        plain = config.normalization is None
        # The seed preset's layers: the ReLU inside the convolution (its HDF5 layer order).
        fused = plain and config.activation == "relu"
        x = keras.layers.Conv3D(
            filters,
            3,
            padding="same",
            kernel_initializer="he_uniform",
            activation="relu" if fused else None,
            # A normalization's shift makes the bias redundant.
            use_bias=plain,
            dtype=dtype,
            name=f"{name}_conv{i}",
        )(x)
        if not plain:
            x = _normalization(config.normalization, filters, dtype, f"{name}_norm{i}")(x)
        if config.activation == "leaky_relu":
            x = keras.layers.LeakyReLU(LEAKY_SLOPE, dtype=dtype, name=f"{name}_lrelu{i}")(x)
        elif not fused:
            x = keras.layers.ReLU(dtype=dtype, name=f"{name}_relu{i}")(x)
    return x


def _normalization(kind: str | None, filters: int, dtype: str, name: str) -> keras.layers.Layer:
    import keras

    if kind == "batch":
        return keras.layers.BatchNormalization(dtype=dtype, name=name)
    if kind == "instance":
        return keras.layers.GroupNormalization(groups=-1, dtype=dtype, name=name)
    groups = GROUPS
    while filters % groups:
        groups //= 2
    return keras.layers.GroupNormalization(groups=groups, dtype=dtype, name=name)


def forward_flops(config: UNetConfig, spatial_shape: Sequence[int]) -> dict[str, int]:
    """Floating-point operations of one forward pass of one sample, from the layer shapes.

    Counts a multiply-add as 2 FLOPs. A 3x3x3 convolution costs ``2 * 27 * Cin * Cout`` per
    output voxel; a 2x2x2 stride-2 transposed convolution ``2 * 8 * Cin * Cout`` per *input*
    voxel (= ``2 * Cin * Cout`` per output voxel); the 1x1x1 head ``2 * Cin * Cout`` per
    voxel. Pooling, ReLU, bias, dropout, normalization and softmax are left out (they are
    memory-bound and well under 1 % of the total).

    Returns:
        ``{"conv": ..., "transpose": ..., "head": ..., "total": ...}`` FLOPs.
    """
    shape = check_spatial_shape(spatial_shape, config.depth)
    voxels = [
        (shape[0] >> level) * (shape[1] >> level) * (shape[2] >> level)
        for level in range(config.depth + 1)
    ]
    f = config.filters
    conv = 0
    for level in range(config.depth + 1):
        c_in = config.in_channels if level == 0 else f[level - 1]
        conv += 2 * 27 * voxels[level] * (c_in * f[level] + f[level] * f[level])
    transpose = 0
    for level in range(config.depth):
        transpose += 2 * 8 * voxels[level + 1] * f[level + 1] * f[level]
        # Decoder convolutions read the concatenation (2 * f) and write f.
        conv += 2 * 27 * voxels[level] * (2 * f[level] * f[level] + f[level] * f[level])
    head = 2 * voxels[0] * f[0] * config.n_outputs
    return {"conv": conv, "transpose": transpose, "head": head, "total": conv + transpose + head}
