"""Model artifact: round trip, tampered files refused, the seed preset's HDF5 import."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import h5py
import keras
import numpy as np
import numpy.typing as npt
import pytest

from brats.io.artifact import load_artifact, read_model_card, save_artifact
from brats.io.model_card import (
    FORMAT,
    META_FILE,
    MODEL_FILE,
    SEED_INFO,
    ArtifactError,
    ModelInfo,
)
from brats.io.seed_model import import_seed_hdf5
from brats.network.unet import SEED_CONFIG, UNetConfig, build_unet, nnunet_config
from brats.volume.labels import BRATS2020, GLI2024
from brats.volume.normalize import Normalization

TINY = UNetConfig(base_filters=4, depth=2)
MANIFEST_HASH = hashlib.sha256(b"a cohort manifest").hexdigest()


@pytest.fixture(autouse=True)
def _seeded() -> None:
    keras.utils.set_random_seed(0)


def _input(channels: int, spatial: tuple[int, int, int] = (16, 16, 16)) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(2, *spatial, channels)).astype(np.float32)


def _info(**overrides: object) -> ModelInfo:
    values: dict[str, object] = {
        "unet": TINY,
        "patch_size": (16, 16, 16),
        "label_scheme": BRATS2020,
        "manifest_hash": MANIFEST_HASH,
        "metrics": {"dice_WT": 0.91, "hd95_WT": 4.5, "epochs": 3},
        "training": {"run": "test", "learning_rate": 1e-3, "patch_size": [16, 16, 16]},
    }
    values.update(overrides)
    return ModelInfo(**values)  # type: ignore[arg-type]


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, keras.Model]:
    model = build_unet(TINY)
    out = tmp_path / "model"
    save_artifact(model, _info(), str(out))
    return out, model


def _rewrite_version(folder: Path, data: bytes) -> None:
    """What an attacker who controls both files does: make model.json name the new bytes."""
    meta = json.loads((folder / META_FILE).read_text())
    meta["version"] = hashlib.sha256(data).hexdigest()
    (folder / META_FILE).write_text(json.dumps(meta))


# --- round trip -----------------------------------------------------------------------------


def test_round_trip_same_predictions_and_json(exported: tuple[Path, keras.Model]) -> None:
    out, model = exported
    loaded = load_artifact(str(out))
    x = _input(4)
    np.testing.assert_array_equal(loaded.model.predict_on_batch(x), model.predict_on_batch(x))
    weights = (out / MODEL_FILE).read_bytes()
    assert loaded.version == hashlib.sha256(weights).hexdigest()
    meta = json.loads((out / META_FILE).read_text())
    assert meta["format"] == FORMAT and meta["version"] == loaded.version
    assert meta["weights_file"] == MODEL_FILE
    assert meta["unet"] == TINY.to_dict()
    assert meta["modalities"] == ["flair", "t1", "t1ce", "t2"]
    assert meta["normalization"] == "zscore"
    assert meta["label_scheme"]["name"] == "brats2020"
    assert meta["label_scheme"]["classes"][2] == {
        "name": "ET",
        "value": 4,
        "colour": [255, 215, 0],
        "text": "enhancing tumor",
    }
    assert meta["patch_size"] == [16, 16, 16]
    assert meta["manifest_hash"] == MANIFEST_HASH
    assert meta["metrics"] == {"dice_WT": 0.91, "hd95_WT": 4.5, "epochs": 3.0}
    assert meta["training"]["learning_rate"] == 1e-3
    assert meta["keras_version"] == keras.__version__
    assert loaded.card.info == _info()
    assert read_model_card(str(out)) == loaded.card


def test_a_deep_supervision_model_exports_its_full_resolution_network(tmp_path: Path) -> None:
    unet = nnunet_config(base_filters=4, depth=3)
    training = build_unet(unet, deep_supervision=True)
    save_artifact(training, _info(unet=unet), str(tmp_path / "model"))
    loaded = load_artifact(str(tmp_path / "model"))
    assert len(loaded.model.outputs) == 1 and loaded.card.info.unet.output == "regions"
    x = _input(4)
    full = keras.ops.convert_to_numpy(training(x, training=False)[0])
    np.testing.assert_allclose(loaded.model.predict_on_batch(x), full, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "model" / META_FILE).read_text())["unet"]["output"] == "regions"


def test_saving_drops_the_optimizer_and_keeps_the_weights(tmp_path: Path) -> None:
    model = build_unet(TINY)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    x = _input(4, (8, 8, 8))
    y = keras.utils.to_categorical(np.zeros((2, 8, 8, 8)), 4)
    model.train_on_batch(x, y)
    card = save_artifact(model, _info(), str(tmp_path))
    model.save(tmp_path / "compiled.keras")
    for path, has_optimizer in (
        (tmp_path / "compiled.keras", True),
        (tmp_path / MODEL_FILE, False),
    ):
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
                assert ("optimizer" in weights) is has_optimizer
            assert bool(config.get("compile_config")) is has_optimizer
    loaded = load_artifact(str(tmp_path))
    assert loaded.version == card.version
    np.testing.assert_array_equal(loaded.model.predict_on_batch(x), model.predict_on_batch(x))


def test_load_can_override_the_precision(exported: tuple[Path, keras.Model]) -> None:
    out, model = exported
    loaded = load_artifact(str(out), mixed_precision="mixed_bfloat16")
    assert loaded.model.layers[1].compute_dtype == "bfloat16"
    assert loaded.card.info.unet.mixed_precision is False  # the card says what was stored
    x = _input(4)
    np.testing.assert_allclose(
        loaded.model.predict_on_batch(x), model.predict_on_batch(x), atol=0.05
    )


@pytest.mark.integration
def test_round_trip_through_s3(s3_bucket: str, s3_endpoint: str) -> None:
    from brats.storage import resolve

    model = build_unet(TINY)
    where = resolve(f"{s3_bucket}/runs/r1/model", s3_endpoint=s3_endpoint)
    card = save_artifact(model, _info(), where)
    loaded = load_artifact(where)
    assert loaded.version == card.version
    assert loaded.uri == f"{s3_bucket}/runs/r1/model"
    x = _input(4)
    np.testing.assert_array_equal(loaded.model.predict_on_batch(x), model.predict_on_batch(x))


def test_save_refuses_a_model_that_is_not_the_described_architecture(tmp_path: Path) -> None:
    model = build_unet(UNetConfig(base_filters=8, depth=2))
    with pytest.raises(ArtifactError, match="does not match the architecture"):
        save_artifact(model, _info(), str(tmp_path))
    assert not (tmp_path / MODEL_FILE).exists() and not (tmp_path / META_FILE).exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"modalities": ("flair", "t1ce", "t2")}, "3 modalities .* 4 input channels"),
        ({"modalities": ("flair", "t1", "t1", "t2")}, "distinct"),
        ({"patch_size": (16, 16, 18)}, "divisible by 2\\*\\*depth = 4"),
        ({"patch_size": (16, 16)}, "\\(D, H, W\\)"),
        ({"manifest_hash": "abc"}, "64 hex digits"),
        ({"metrics": {"dice_WT": float("nan")}}, "finite"),
        ({"metrics": {"dice_WT": "0.9"}}, "number"),
        ({"normalization": "robust"}, "robust"),
        ({"label_scheme": GLI2024}, "gli2024 has 5 classes and 4 region outputs"),
        ({"training": {"when": object()}}, "JSON-ready"),
    ],
)
def test_model_info_rejects_bad_values(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _info(**overrides)


def test_model_info_round_trips_through_json() -> None:
    info = _info(normalization=Normalization.MINMAX, label_scheme=None)
    assert ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    assert SEED_INFO.modalities == ("flair", "t1ce", "t2")
    assert SEED_INFO.label_scheme is BRATS2020
    gli = _info(unet=replace(TINY, n_classes=5, n_regions=4), label_scheme=GLI2024)
    assert ModelInfo.from_dict(json.loads(json.dumps(gli.to_dict()))) == gli
    with pytest.raises(ValueError, match="unknown fields"):
        ModelInfo.from_dict({**info.to_dict(), "loss": "dice"})
    flipped = replace(info, tta=True)
    assert ModelInfo.from_dict(json.loads(json.dumps(flipped.to_dict()))).tta
    older = {k: v for k, v in info.to_dict().items() if k != "tta"}
    assert ModelInfo.from_dict(older).tta is False  # a model.json from before it was stored
    with pytest.raises(ValueError, match="tta must be true or false"):
        ModelInfo.from_dict({**info.to_dict(), "tta": "yes"})


def test_a_model_json_from_before_label_schemes_reads_as_its_convention() -> None:
    before = {k: v for k, v in _info().to_dict().items() if k != "label_scheme"}
    unet = {k: v for k, v in before["unet"].items() if k != "n_regions"}  # no n_regions then
    for convention, scheme in (("brats2020", BRATS2020), (None, None)):
        info = ModelInfo.from_dict({**before, "unet": unet, "label_convention": convention})
        assert info.label_scheme is scheme and info.unet.n_regions == 3
        assert info.scheme.name == (convention or "brats2023")


# --- tampering ---------------------------------------------------------------------------------


def _flip_one_byte(folder: Path) -> None:
    data = bytearray((folder / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / MODEL_FILE).write_bytes(bytes(data))


def _swap_in_another_model(folder: Path) -> None:
    other = folder.parent / "other"
    save_artifact(build_unet(TINY), _info(), str(other))
    (folder / MODEL_FILE).write_bytes((other / MODEL_FILE).read_bytes())


def _truncate(folder: Path) -> None:
    data = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(data[: len(data) - 100])


def _edit_json_version(folder: Path) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    meta["version"] = hashlib.sha256(b"another model").hexdigest()
    (folder / META_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "tamper", [_flip_one_byte, _swap_in_another_model, _truncate, _edit_json_version]
)
def test_tampered_model_is_refused(
    exported: tuple[Path, keras.Model], tamper: Callable[[Path], None]
) -> None:
    out, _ = exported
    tamper(out)
    with pytest.raises(ArtifactError, match=r"model\.keras: sha256 .* differs from version"):
        load_artifact(str(out))


def test_missing_or_foreign_files_are_refused(exported: tuple[Path, keras.Model]) -> None:
    out, _ = exported
    meta = (out / META_FILE).read_text()
    (out / META_FILE).write_text(json.dumps({"format": "brats-cohort/1"}))
    with pytest.raises(ArtifactError, match="not a brats model"):
        load_artifact(str(out))
    (out / META_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(str(out))
    (out / META_FILE).write_text(meta.replace('"depth": 2', '"depth": 2.5'))
    with pytest.raises(ArtifactError, match="depth"):
        load_artifact(str(out))
    (out / META_FILE).write_text(meta)
    (out / MODEL_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"model\.keras: no such file"):
        load_artifact(str(out))
    (out / META_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"model\.json: no such file"):
        load_artifact(str(out))


def test_an_hdf5_model_is_never_loaded_even_with_a_matching_hash(
    exported: tuple[Path, keras.Model], tmp_path: Path
) -> None:
    out, model = exported
    model.save(tmp_path / "whole.h5")  # a legacy whole-model HDF5 file
    data = (tmp_path / "whole.h5").read_bytes()
    (out / MODEL_FILE).write_bytes(data)
    _rewrite_version(out, data)
    with pytest.raises(ArtifactError, match="not a Keras 3 archive"):
        load_artifact(str(out))


def test_an_archive_whose_weights_are_not_hdf5_is_refused(
    exported: tuple[Path, keras.Model],
) -> None:
    out, _ = exported
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"\x80\x04 not hdf5")
    (out / MODEL_FILE).write_bytes(sink.getvalue())
    _rewrite_version(out, sink.getvalue())
    with pytest.raises(ArtifactError, match=r"model\.weights\.h5 is not HDF5"):
        load_artifact(str(out))


def test_weights_that_do_not_fit_the_json_architecture_are_refused(
    exported: tuple[Path, keras.Model],
) -> None:
    out, _ = exported
    meta = json.loads((out / META_FILE).read_text())
    meta["unet"]["base_filters"] = 8
    (out / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="weights do not fit the architecture"):
        load_artifact(str(out))


def test_a_lambda_layer_in_the_archive_never_runs(
    exported: tuple[Path, keras.Model], tmp_path: Path
) -> None:
    """The archive's own config is never deserialized: its Lambda's code cannot run."""
    out, model = exported
    sentinel = tmp_path / "lambda-ran"
    hostile_fn = eval(f"lambda t: (open({str(sentinel)!r}, 'w').close(), t)[1]")
    inputs = keras.Input((None, None, None, 4))
    hostile = keras.Model(inputs, keras.layers.Lambda(hostile_fn)(inputs))
    assert sentinel.exists()  # building it ran the function: the probe works
    sentinel.unlink()
    hostile.save(tmp_path / "hostile.keras")
    # Keras' config (with the Lambda) and our weights in one archive; json made to match.
    with zipfile.ZipFile(tmp_path / "hostile.keras") as src:
        hostile_config = src.read("config.json")
    sink = io.BytesIO()
    with (
        zipfile.ZipFile(out / MODEL_FILE) as good,
        zipfile.ZipFile(sink, "w") as mixed,
    ):
        for name in good.namelist():
            mixed.writestr(name, hostile_config if name == "config.json" else good.read(name))
    data = sink.getvalue()
    (out / MODEL_FILE).write_bytes(data)
    _rewrite_version(out, data)
    with pytest.raises(ValueError, match=r"(?i)lambda"):
        keras.models.load_model(out / MODEL_FILE, safe_mode=True)  # it is a hostile file
    loaded = load_artifact(str(out))
    assert not sentinel.exists()
    x = _input(4)
    np.testing.assert_array_equal(loaded.model.predict_on_batch(x), model.predict_on_batch(x))


# --- the seed's HDF5 ---------------------------------------------------------------------------


def _seed_unet(channels: int = 3) -> keras.Model:
    """The seed's ``simple_unet_model``, layer for layer, with Keras' default layer names."""
    L = keras.layers

    def conv(filters: int) -> keras.layers.Layer:
        return L.Conv3D(
            filters, (3, 3, 3), activation="relu", kernel_initializer="he_uniform", padding="same"
        )

    inputs = L.Input((16, 16, 16, channels))  # the seed's was (128, 128, 128, 3)
    c1 = conv(16)(L.Dropout(0.1)(conv(16)(inputs)))
    c2 = conv(32)(L.Dropout(0.1)(conv(32)(L.MaxPooling3D((2, 2, 2))(c1))))
    c3 = conv(64)(L.Dropout(0.2)(conv(64)(L.MaxPooling3D((2, 2, 2))(c2))))
    c4 = conv(128)(L.Dropout(0.2)(conv(128)(L.MaxPooling3D((2, 2, 2))(c3))))
    c5 = conv(256)(L.Dropout(0.3)(conv(256)(L.MaxPooling3D((2, 2, 2))(c4))))
    x = c5
    for filters, skip, rate in ((128, c4, 0.2), (64, c3, 0.2), (32, c2, 0.1), (16, c1, 0.1)):
        up = L.Conv3DTranspose(filters, (2, 2, 2), strides=(2, 2, 2), padding="same")(x)
        x = conv(filters)(L.Dropout(rate)(conv(filters)(L.concatenate([up, skip]))))
    outputs = L.Conv3D(4, (1, 1, 1), activation="softmax")(x)
    return keras.Model(inputs=[inputs], outputs=[outputs])


def _write_keras2_hdf5(model: keras.Model, path: Path, *, whole_model: bool) -> None:
    """The file Keras 2 wrote: ``model.save`` (under ``model_weights``) or ``save_weights``.

    Weight names carry Keras 2's ``<layer>/<weight>:0`` form; the model config names a
    Lambda layer, which the import must never look at.
    """
    with h5py.File(path, "w") as f:
        group = f.create_group("model_weights") if whole_model else f
        if whole_model:
            f.attrs["keras_version"] = b"2.9.0"
            f.attrs["backend"] = b"tensorflow"
            f.attrs["model_config"] = json.dumps(
                {"class_name": "Functional", "config": {"layers": [{"class_name": "Lambda"}]}}
            ).encode()
        group.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        group.attrs["keras_version"] = b"2.9.0"
        group.attrs["backend"] = b"tensorflow"
        for layer in model.layers:
            layer_group = group.create_group(layer.name)
            names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
            layer_group.attrs["weight_names"] = [n.encode() for n in names]
            for name, weight in zip(names, layer.weights, strict=True):
                layer_group.create_dataset(name, data=keras.ops.convert_to_numpy(weight))


@pytest.mark.parametrize("layout", ["keras2_model_save", "keras2_save_weights", "legacy_save"])
def test_seed_hdf5_imports_with_the_same_predictions(tmp_path: Path, layout: str) -> None:
    seed = _seed_unet()
    source = tmp_path / "brats_3d.hdf5"
    if layout == "legacy_save":
        seed.save(source)  # Keras' own legacy HDF5 writer
    else:
        _write_keras2_hdf5(seed, source, whole_model=layout == "keras2_model_save")
    card = import_seed_hdf5(str(source), str(tmp_path / "model"))
    loaded = load_artifact(str(tmp_path / "model"))
    assert loaded.card == card
    assert card.info.unet == SEED_CONFIG
    assert card.info.modalities == ("flair", "t1ce", "t2")
    assert card.info.normalization is Normalization.MINMAX
    assert card.info.label_scheme is BRATS2020
    assert card.info.training["imported_from"] == "brats_3d.hdf5"
    assert card.info.training["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    x = _input(3)
    expected = seed.predict_on_batch(x)
    np.testing.assert_allclose(loaded.model.predict_on_batch(x), expected, rtol=0, atol=1e-6)
    # The network is shape-agnostic: the imported model takes other sizes than the seed's.
    assert loaded.model.predict_on_batch(_input(3, (32, 16, 48))).shape == (2, 32, 16, 48, 4)


def test_seed_import_refuses_a_file_of_another_architecture(tmp_path: Path) -> None:
    four_channels = _seed_unet(channels=4)
    source = tmp_path / "brats_3d.hdf5"
    _write_keras2_hdf5(four_channels, source, whole_model=True)
    with pytest.raises(ArtifactError, match=r"brats_3d\.hdf5: weights do not fit"):
        import_seed_hdf5(str(source), str(tmp_path / "model"))
    assert not (tmp_path / "model").exists()


def test_seed_import_refuses_files_that_are_not_keras_hdf5(tmp_path: Path) -> None:
    not_hdf5 = tmp_path / "brats_3d.hdf5"
    not_hdf5.write_bytes(b"\x80\x04 a pickle, say")
    with pytest.raises(ArtifactError, match="not an HDF5 file"):
        import_seed_hdf5(str(not_hdf5), str(tmp_path / "model"))
    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ArtifactError, match="layer_names"):
        import_seed_hdf5(str(bare), str(tmp_path / "model"))
    with pytest.raises(ArtifactError, match="cannot read"):
        import_seed_hdf5(str(tmp_path / "missing.hdf5"), str(tmp_path / "model"))
