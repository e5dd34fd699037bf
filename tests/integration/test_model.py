"""The 3D U-Net: the seed's architecture by default, configurable, shape-agnostic in space."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from brats.network.unet import (
    LEAKY_SLOPE,
    NNUNET_CONFIG,
    SEED_CONFIG,
    SpatialShapeError,
    UNetConfig,
    build_unet,
    check_spatial_shape,
    copy_weights,
    forward_flops,
    logits,
    main_output,
    nnunet_config,
)

SEED_PARAMS = 5_645_828
"""``model.summary()`` total of the seed's network (3 input channels)."""


@pytest.fixture(autouse=True)
def _seeded() -> None:
    keras.utils.set_random_seed(0)


def _layers(model: keras.Model, kind: type) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if type(layer) is kind]


def _expected_params(config: UNetConfig) -> int:
    """Parameters counted by hand from the architecture: kernels plus biases."""
    f, c = config.filters, config.in_channels
    total = 0
    for level in range(config.depth + 1):
        c_in = c if level == 0 else f[level - 1]
        total += 27 * c_in * f[level] + f[level] + 27 * f[level] * f[level] + f[level]
    for level in range(config.depth):
        total += 8 * f[level + 1] * f[level] + f[level]  # transposed convolution
        total += 27 * 2 * f[level] * f[level] + f[level] + 27 * f[level] * f[level] + f[level]
    return total + f[0] * config.n_classes + config.n_classes


def test_seed_config_is_the_seed_network() -> None:
    model = build_unet(SEED_CONFIG)
    assert model.count_params() == SEED_PARAMS == _expected_params(SEED_CONFIG)
    assert model.input_shape == (None, None, None, None, 3)
    convs = _layers(model, keras.layers.Conv3D)
    assert len(convs) == 2 * 9 + 1
    for conv in convs[:-1]:
        assert conv.kernel_size == (3, 3, 3) and conv.padding == "same"
        assert conv.activation is keras.activations.relu
        assert isinstance(conv.kernel_initializer, keras.initializers.HeUniform)
    assert [conv.filters for conv in convs[:-1:2]] == [16, 32, 64, 128, 256, 128, 64, 32, 16]
    ups = _layers(model, keras.layers.Conv3DTranspose)
    assert [(u.filters, u.kernel_size, u.strides) for u in ups] == [
        (f, (2, 2, 2), (2, 2, 2)) for f in (128, 64, 32, 16)
    ]
    assert len(_layers(model, keras.layers.MaxPooling3D)) == 4
    rates = {layer.name: layer.rate for layer in _layers(model, keras.layers.Dropout)}
    assert rates == {
        "enc0_dropout": 0.1,
        "enc1_dropout": 0.1,
        "enc2_dropout": 0.2,
        "enc3_dropout": 0.2,
        "bottleneck_dropout": 0.3,
        "dec3_dropout": 0.2,
        "dec2_dropout": 0.2,
        "dec1_dropout": 0.1,
        "dec0_dropout": 0.1,
    }
    head = convs[-1]
    assert head.kernel_size == (1, 1, 1) and head.filters == 4
    assert model.layers[-1].activation is keras.activations.softmax


def test_project_default_takes_four_modalities() -> None:
    model = build_unet()
    assert model.input_shape == (None, None, None, None, 4)
    assert model.count_params() == _expected_params(UNetConfig())


@pytest.mark.parametrize(
    ("base_filters", "depth", "in_channels", "spatial"),
    [
        (4, 2, 4, (16, 16, 16)),
        (2, 3, 3, (16, 24, 32)),
        (8, 1, 1, (6, 4, 2)),
        (3, 4, 2, (16, 16, 32)),
    ],
)
def test_builds_at_several_sizes_and_channel_counts(
    base_filters: int, depth: int, in_channels: int, spatial: tuple[int, int, int]
) -> None:
    config = UNetConfig(base_filters=base_filters, depth=depth, in_channels=in_channels)
    model = build_unet(config)
    assert model.count_params() == _expected_params(config)
    x = np.random.default_rng(0).normal(size=(2, *spatial, in_channels)).astype(np.float32)
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, *spatial, 4)
    assert y.dtype == np.float32
    assert y.min() >= 0.0
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)


def test_one_model_serves_any_valid_spatial_size() -> None:
    model = build_unet(UNetConfig(base_filters=2, depth=2))
    for spatial in ((8, 8, 8), (12, 20, 4), (32, 8, 16)):
        y = model.predict_on_batch(np.zeros((1, *spatial, 4), np.float32))
        assert y.shape == (1, *spatial, 4)


def test_output_is_deterministic_at_inference_and_stochastic_in_training() -> None:
    model = build_unet(UNetConfig(base_filters=4, depth=2))
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 8, 4)).astype(np.float32)
    a = keras.ops.convert_to_numpy(model(x, training=False))
    b = keras.ops.convert_to_numpy(model(x, training=False))
    c = keras.ops.convert_to_numpy(model(x, training=True))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)  # dropout is active in training only


@pytest.mark.parametrize(
    ("normalization", "layer_type", "groups"),
    [
        ("batch", keras.layers.BatchNormalization, None),
        ("group", keras.layers.GroupNormalization, 8),
        ("instance", keras.layers.GroupNormalization, 16),
    ],
)
def test_normalization_layers(normalization: str, layer_type: type, groups: int | None) -> None:
    config = UNetConfig(base_filters=16, depth=1, normalization=normalization)
    model = build_unet(config)
    norms = _layers(model, layer_type)
    assert len(norms) == 2 * (2 * config.depth + 1)
    if groups is not None:
        assert norms[0].groups == groups  # 16 channels: 8 groups, or one per channel
    convs = _layers(model, keras.layers.Conv3D)
    assert all(not conv.use_bias for conv in convs[:-1])
    assert convs[-1].use_bias
    assert len(_layers(model, keras.layers.ReLU)) == len(norms)
    x = np.random.default_rng(2).normal(size=(2, 4, 4, 4, 4)).astype(np.float32)
    y = keras.ops.convert_to_numpy(model(x, training=True))
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)


def test_mixed_bfloat16_computes_in_bfloat16_and_outputs_float32() -> None:
    config = UNetConfig(base_filters=4, depth=2, mixed_precision="mixed_bfloat16")
    model = build_unet(config)
    conv = _layers(model, keras.layers.Conv3D)[0]
    assert conv.compute_dtype == "bfloat16"
    assert all(w.dtype == "float32" for w in model.weights)
    x = np.random.default_rng(3).normal(size=(1, 8, 8, 8, 4)).astype(np.float32)
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)


def test_mixed_float16_policy_per_layer_with_a_float32_softmax() -> None:
    # float16 3D pooling has no CPU kernel in TensorFlow: check the policies, not a forward.
    config = UNetConfig(base_filters=4, depth=2, mixed_precision=True)
    assert config.dtype_policy == "mixed_float16"
    assert UNetConfig(mixed_precision="mixed_float16") == UNetConfig(mixed_precision=True)
    model = build_unet(config)
    policies = {layer.name: layer.dtype_policy.name for layer in model.layers[1:]}
    assert policies.pop("probabilities") == "float32"
    assert set(policies.values()) == {"mixed_float16"}
    assert all(w.dtype == "float32" for w in model.weights)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is untouched


def test_config_round_trips_through_json() -> None:
    config = UNetConfig(
        base_filters=8,
        depth=3,
        in_channels=3,
        dropout_rates=(0.0, 0.1, 0.2, 0.3),
        normalization="instance",
        mixed_precision="mixed_bfloat16",
    )
    again = UNetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert UNetConfig.from_dict(UNetConfig().to_dict()) == UNetConfig()
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        UNetConfig.from_dict({**config.to_dict(), "attention_gates": True})
    # A model.json written before activation, output and deep_supervision existed.
    old = {k: v for k, v in UNetConfig().to_dict().items()}
    for key in ("activation", "output", "deep_supervision"):
        old.pop(key)
    assert UNetConfig.from_dict(old) == UNetConfig()
    assert UNetConfig.from_dict(NNUNET_CONFIG.to_dict()) == NNUNET_CONFIG


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_filters": 0}, "base_filters"),
        ({"depth": 2.0}, "depth"),
        ({"in_channels": True}, "in_channels"),
        ({"n_classes": 1}, "at least 2"),
        ({"normalization": "layer"}, "normalization"),
        ({"dropout_rates": (0.1, 0.2)}, "depth \\+ 1 = 5"),
        ({"dropout_rates": (0.1, 0.1, 0.2, 0.2, 1.0)}, "in \\[0, 1\\)"),
        ({"mixed_precision": "float16"}, "mixed_precision"),
        ({"mixed_precision": 1}, "mixed_precision"),
        ({"activation": "gelu"}, "activation"),
        ({"output": "sigmoid"}, "output"),
        ({"depth": 2, "deep_supervision": 2}, "deep_supervision"),
        ({"deep_supervision": True}, "deep_supervision"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UNetConfig(**kwargs)  # type: ignore[arg-type]


def test_dropout_schedules() -> None:
    assert UNetConfig(depth=3).level_dropout == (0.1, 0.2, 0.2, 0.3)
    assert UNetConfig(depth=2).level_dropout == (0.1, 0.2, 0.3)
    assert UNetConfig(dropout=False).level_dropout == (0.0,) * 5
    plain = build_unet(UNetConfig(base_filters=2, depth=2, dropout=False))
    assert not _layers(plain, keras.layers.Dropout)


def test_check_spatial_shape_names_the_axis_and_the_size_to_pad_to() -> None:
    assert check_spatial_shape((128, 128, 128)) == (128, 128, 128)
    with pytest.raises(SpatialShapeError, match=r"axis 2 is 155 \(pad to 160\)"):
        check_spatial_shape((240, 240, 155))
    with pytest.raises(SpatialShapeError, match=r"axis 0 is 0 \(pad to 4\)"):
        check_spatial_shape((0, 4, 4), depth=2)


def test_forward_flops_by_hand() -> None:
    # Level sizes 8 and 1 voxels, filters 2 and 4, 1 input channel, 2 classes.
    config = UNetConfig(base_filters=2, depth=1, in_channels=1, n_classes=2)
    flops = forward_flops(config, (2, 2, 2))
    conv = 2 * 27 * (8 * (1 * 2 + 2 * 2) + 1 * (2 * 4 + 4 * 4) + 8 * (4 * 2 + 2 * 2))
    assert flops == {
        "conv": conv,
        "transpose": 2 * 8 * 1 * 4 * 2,
        "head": 2 * 8 * 2 * 2,
        "total": conv + 128 + 64,
    }
    with pytest.raises(SpatialShapeError):
        forward_flops(config, (3, 2, 2))


def test_forward_flops_match_the_built_layers() -> None:
    """Recount from every convolution's real output shape in a forward pass."""
    config = UNetConfig(base_filters=4, depth=3, in_channels=3)
    model = build_unet(config)
    convs = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv3D | keras.layers.Conv3DTranspose)
    ]
    probe = keras.Model(model.input, [layer.output for layer in convs])
    spatial = (16, 8, 24)
    outputs = probe.predict_on_batch(np.zeros((1, *spatial, 3), np.float32))
    total = 0
    for layer, out in zip(convs, outputs, strict=True):
        kernel = layer.kernel.shape  # (kd, kh, kw, in, out) or (kd, kh, kw, out, in)
        voxels = int(np.prod(out.shape[1:4]))
        macs_per_voxel = int(np.prod(kernel))
        if isinstance(layer, keras.layers.Conv3DTranspose):
            macs_per_voxel //= 8  # each output voxel sees one tap of the 2x2x2 kernel
        total += 2 * voxels * macs_per_voxel
    assert forward_flops(config, spatial)["total"] == total


def test_group_normalization_uses_fewer_groups_when_a_level_is_narrow() -> None:
    model = build_unet(UNetConfig(base_filters=4, depth=1, normalization="group"))
    groups = {layer.name: layer.groups for layer in _layers(model, keras.layers.GroupNormalization)}
    assert groups["enc0_norm1"] == 4 and groups["bottleneck_norm1"] == 8


def test_model_benchmark_reports_flops_and_rates() -> None:
    from brats.benchmarks import model as bench

    settings = bench.ModelBenchmark(
        size=16, channels=3, base_filters=4, depth=2, repeats=1, matmul_n=128, preset="seed"
    )  # fmt: skip
    figures = bench.run(settings)
    config = UNetConfig(base_filters=4, depth=2, in_channels=3)
    assert set(figures["variants"]) == {"float32", "mixed_bfloat16"}
    assert figures["variants"]["float32"]["forward_speedup"] == 1.0
    assert all(v["train_step_s"] > 0 for v in figures["variants"].values())
    flops = forward_flops(config, (16, 16, 16))["total"]
    assert figures["forward_gflop_per_step"] == round(flops / 1e9, 2)
    assert figures["train_gflop_per_step"] == round(3 * flops / 1e9, 2)
    assert figures["input_shape"] == [1, 16, 16, 16, 3]
    assert figures["forward_s"] > 0 and figures["train_step_s"] > 0
    assert set(figures["matmul_gflops"]) == {"numpy", "tensorflow"}
    best = max(figures["matmul_gflops"].values())
    assert figures["train_vs_matmul"] == pytest.approx(figures["train_gflops"] / best, rel=0.05)


def test_nnunet_preset_network() -> None:
    config = nnunet_config(base_filters=4, depth=3)
    assert (config.normalization, config.activation, config.output) == (
        "instance",
        "leaky_relu",
        "regions",
    )
    assert config.deep_supervision == 1 and config.n_outputs == 3 and not any(config.level_dropout)
    assert NNUNET_CONFIG.deep_supervision == 2  # every decoder level but the two coarsest
    model = build_unet(config)
    assert not _layers(model, keras.layers.Dropout) and not _layers(model, keras.layers.ReLU)
    norms = _layers(model, keras.layers.GroupNormalization)
    leaky = _layers(model, keras.layers.LeakyReLU)
    assert len(norms) == len(leaky) == 2 * (2 * 3 + 1)
    # One group per channel: instance normalization.
    assert {n.groups for n in norms} == set(config.filters)
    assert all(layer.negative_slope == pytest.approx(LEAKY_SLOPE) for layer in leaky)
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 8, 4)).astype(np.float32)
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert y.shape == (2, 8, 8, 8, 3) and ((y > 0) & (y < 1)).all()
    assert not np.allclose(y.sum(axis=-1), 1.0)  # independent sigmoids, not a softmax


@pytest.mark.filterwarnings("error:The structure of `inputs`:UserWarning")  # called as built
def test_deep_supervision_heads_are_for_training_only() -> None:
    config = nnunet_config(base_filters=4, depth=3)
    training = build_unet(config, deep_supervision=True)
    x = np.random.default_rng(5).normal(size=(1, 16, 16, 16, 4)).astype(np.float32)
    full, level1 = (keras.ops.convert_to_numpy(o) for o in training(x, training=False))
    assert full.shape == (1, 16, 16, 16, 3) and level1.shape == (1, 8, 8, 8, 3)
    # The inference network: the full-resolution output, same weights, heads left behind.
    inference = build_unet(config)
    assert len(inference.weights) == len(training.weights) - 2
    copy_weights(training, inference)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(inference(x, training=False)), full, rtol=1e-5, atol=1e-6
    )
    shared = main_output(training)
    assert len(shared.outputs) == 1 and main_output(inference) is inference
    np.testing.assert_allclose(keras.ops.convert_to_numpy(shared(x)), full, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="dec1_logits"):
        copy_weights(inference, training)


@pytest.mark.filterwarnings("error:The structure of `inputs`:UserWarning")  # called as built
def test_logits_are_what_each_output_is_the_sigmoid_of() -> None:
    config = nnunet_config(base_filters=4, depth=3)
    training = build_unet(config, deep_supervision=True)
    x = np.random.default_rng(6).normal(size=(1, 16, 16, 16, 4)).astype(np.float32)
    probabilities = [keras.ops.convert_to_numpy(o) for o in training(x, training=False)]
    under = logits(training)
    assert under.weights == training.weights  # the same variables, nothing copied
    z = [keras.ops.convert_to_numpy(o) for o in under(x, training=False)]
    assert [a.shape for a in z] == [p.shape for p in probabilities]
    for a, p in zip(z, probabilities, strict=True):
        np.testing.assert_allclose(1 / (1 + np.exp(-a)), p, rtol=1e-5, atol=1e-6)
    single = keras.ops.convert_to_numpy(logits(build_unet(config))(x, training=False))
    assert single.shape == (1, 16, 16, 16, 3)
