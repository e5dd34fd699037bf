"""Portable models (brats.io.export): ONNX and SavedModel exports of a real (tiny) model and of
an ensemble, run in ONNX Runtime and TensorFlow on windows of other sizes, their cards, and
the self-check."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from brats.cli import main
from brats.io.artifact import load_models, save_artifact, save_ensemble, verify_artifact
from brats.io.export import (
    ExportConfig,
    ExportError,
    check_window,
    export_model,
    run_onnx,
    run_saved_model,
)
from brats.io.model_card import ArtifactError, ModelInfo
from brats.network.unet import build_unet, main_output, nnunet_config
from brats.segment.backends import BackendError
from brats.segment.predictor import Predictor, PredictSettings

UNET = nnunet_config(base_filters=4, depth=2)
INFO = ModelInfo(unet=UNET, patch_size=(16, 16, 16), target_spacing=(1.0, 1.0, 1.0), tta=True)


def _model(where: Path, seed: int, info: ModelInfo = INFO) -> str:
    import keras

    keras.utils.set_random_seed(seed)
    save_artifact(build_unet(UNET), info, str(where))
    return str(where)


def _keras(model: str, window: np.ndarray) -> np.ndarray:
    _, loaded = load_models(model)
    return np.asarray(main_output(loaded[0].model)(window, training=False))


def test_an_onnx_export_runs_any_window_in_onnx_runtime_and_names_itself(tmp_path):
    model = _model(tmp_path / "model", 0)
    out = tmp_path / "onnx"
    result = export_model(ExportConfig(model=model, format="onnx", out=str(out)))
    assert result.max_difference <= 1e-3 and result.files == ("model.onnx", "model.json")
    card = json.loads((out / "model.json").read_text())
    assert card["export_format"] == "onnx" and card["opset"] == 17
    assert card["version"] == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert card["version"] == result.version and card["weights_file"] == "model.onnx"
    source = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["source_version"] == source["version"]
    for key in ("modalities", "patch_size", "target_spacing", "tta", "unet"):
        assert card[key] == source[key], key
    # A model that does not name its scheme is exported with the one it predicts in, so a
    # server reading only the card knows what values to write.
    assert source["label_scheme"] is None and card["label_scheme"]["name"] == "brats2023"
    # Dynamic spatial axes and batch: another window than the one it was checked on.
    window = np.random.default_rng(1).standard_normal((2, 24, 16, 32, 4)).astype(np.float32)
    got = run_onnx((out / "model.onnx").read_bytes(), window)
    assert got.shape == (2, 24, 16, 32, 3)  # the main output only: three region sigmoids
    np.testing.assert_allclose(got, _keras(model, window), atol=1e-3)


def test_a_saved_model_export_serves_the_same_probabilities(tmp_path):
    model = _model(tmp_path / "model", 0)
    out = tmp_path / "saved"
    result = export_model(ExportConfig(model=model, format="saved_model", out=str(out)))
    assert (out / "saved_model" / "saved_model.pb").is_file()
    card = json.loads((out / "model.json").read_text())
    assert card["export_format"] == "saved_model" and card["opset"] is None
    assert card["version"] == result.version and len(result.version) == 64
    window = np.random.default_rng(2).standard_normal((1, 16, 32, 16, 4)).astype(np.float32)
    got = run_saved_model(str(out / "saved_model"), window)
    np.testing.assert_allclose(got, _keras(model, window), atol=1e-5)


def test_an_ensemble_exports_one_file_per_fold_and_its_card(tmp_path):
    own = [replace(INFO, metrics={"val_dice_mean": 0.5 + i / 10}) for i in range(2)]
    folds = [_model(tmp_path / f"fold{i}", i, own[i]) for i in range(2)]
    save_ensemble(folds, replace(INFO, metrics={"oof_dice_WT": 0.9}), str(tmp_path / "ensemble"))
    out = tmp_path / "exported"
    assert main(["export", "--model", str(tmp_path / "ensemble"), "--out", str(out)]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["kind"] == "ensemble" and [f["folder"] for f in card["folds"]] == [
        "fold_0",
        "fold_1",
    ]
    window = check_window(INFO)
    for i, fold in enumerate(card["folds"]):
        onnx = out / fold["folder"] / "model.onnx"
        assert fold["version"] == hashlib.sha256(onnx.read_bytes()).hexdigest()
        fold_card = json.loads((out / fold["folder"] / "model.json").read_text())
        assert fold_card["version"] == fold["version"]
        assert fold_card["metrics"] == {"val_dice_mean": 0.5 + i / 10}  # the fold's own
        np.testing.assert_allclose(
            run_onnx(onnx.read_bytes(), window), _keras(folds[i], window), atol=1e-3
        )
    # Two folds with other weights give other files.
    assert card["folds"][0]["version"] != card["folds"][1]["version"]
    # The predictor averages the exported folds (or the first --max-folds) as it does Keras's.
    assert Predictor.from_artifact(str(out)).n_models == 2
    one = Predictor.from_artifact(str(out), PredictSettings(max_folds=1, no_tta=True))
    image = np.random.default_rng(4).standard_normal((4, 20, 24, 18)).astype(np.float32)
    keras_fold = Predictor.from_artifact(folds[0], PredictSettings(no_tta=True))
    np.testing.assert_allclose(one.probabilities(image), keras_fold.probabilities(image), atol=1e-4)


def test_the_predictor_runs_an_export_or_a_converted_keras_model_in_onnx_runtime(tmp_path):
    """``--backend auto`` runs an ONNX export in ONNX Runtime and a Keras model in Keras;
    ``onnxruntime`` converts a Keras model in memory. All three give the same
    probabilities; what a backend cannot run is refused, naming what to do."""
    model = _model(tmp_path / "model", 3)
    out = tmp_path / "onnx"
    exported = export_model(ExportConfig(model=model, out=str(out)))
    served = Predictor.from_artifact(str(out))
    converted = Predictor.from_artifact(model, PredictSettings(backend="onnxruntime"))
    keras_run = Predictor.from_artifact(model)
    assert (served.backend, converted.backend, keras_run.backend) == (
        "onnxruntime",
        "onnxruntime",
        "keras",
    )
    assert served.version == exported.version and served.precision == "float32"
    assert converted.version == keras_run.version != served.version
    image = np.random.default_rng(5).standard_normal((4, 20, 24, 18)).astype(np.float32)
    reference = keras_run.probabilities(image)  # the model says tta: flips in every backend
    for other in (served, converted):
        np.testing.assert_allclose(other.probabilities(image), reference, atol=1e-4)
    assert verify_artifact(str(out)).export == "onnx"
    with pytest.raises(BackendError, match="runs in ONNX Runtime, not Keras"):
        Predictor.from_artifact(str(out), PredictSettings(backend="keras"))
    with pytest.raises(BackendError, match="bfloat16 needs --backend keras"):
        Predictor.from_artifact(str(out), PredictSettings(precision="bfloat16"))
    with pytest.raises(ArtifactError, match="an onnx export, not a Keras model"):
        load_models(str(out))
    export_model(ExportConfig(model=model, out=str(tmp_path / "saved"), format="saved_model"))
    assert verify_artifact(str(tmp_path / "saved")).export == "saved_model"
    with pytest.raises(BackendError, match="SavedModel export is for TensorFlow Serving"):
        Predictor.from_artifact(str(tmp_path / "saved"))
    # An ensemble is made of Keras models (an ensemble is exported as a whole).
    with pytest.raises(ArtifactError, match="an onnx export; an ensemble is made of Keras"):
        save_ensemble([str(out), model], INFO, str(tmp_path / "mixed"))
    # A changed model.onnx is refused as a changed model.keras is.
    (out / "model.onnx").write_bytes((out / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match=r"model\.onnx: sha256 .* differs"):
        Predictor.from_artifact(str(out))


def test_an_export_that_does_not_reproduce_its_model_is_not_written(tmp_path, monkeypatch):
    """The check compares the real export with Keras on one window: asked for agreement no
    export can give (a negative tolerance), the export stops before any file lands under
    OUT, saying by how much it differed."""
    import brats.io.export as export

    model = _model(tmp_path / "model", 0)
    monkeypatch.setattr(export, "TOLERANCE", -1.0)
    out = tmp_path / "refused"
    with pytest.raises(
        ExportError, match=r"differs from the Keras model by .* nothing was written"
    ):
        export_model(ExportConfig(model=model, format="onnx", out=str(out)))
    assert not out.exists()
    with pytest.raises(ValueError, match="format must be one of"):
        ExportConfig(model=model, format="tflite", out=str(out))
    assert replace(ExportConfig(model=model, out=str(out)), format="saved_model").format
