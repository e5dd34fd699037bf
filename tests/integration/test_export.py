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
from brats.io.artifact import load_models, save_artifact, save_ensemble
from brats.io.export import (
    ExportConfig,
    ExportError,
    check_window,
    export_model,
    run_onnx,
    run_saved_model,
)
from brats.io.model_card import ModelInfo
from brats.network.unet import build_unet, main_output, nnunet_config

UNET = nnunet_config(base_filters=4, depth=2)
INFO = ModelInfo(unet=UNET, patch_size=(16, 16, 16), target_spacing=(1.0, 1.0, 1.0), tta=True)


def _model(where: Path, seed: int) -> str:
    import keras

    keras.utils.set_random_seed(seed)
    save_artifact(build_unet(UNET), INFO, str(where))
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
    for key in ("modalities", "patch_size", "label_scheme", "target_spacing", "tta", "unet"):
        assert card[key] == source[key], key
    # Dynamic spatial axes and batch: another window than the one it was checked on.
    window = np.random.default_rng(1).standard_normal((2, 24, 16, 32, 4)).astype(np.float32)
    got = run_onnx(str(out / "model.onnx"), window)
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
    folds = [_model(tmp_path / f"fold{i}", i) for i in range(2)]
    save_ensemble(folds, INFO, str(tmp_path / "ensemble"))
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
        assert (
            json.loads((out / fold["folder"] / "model.json").read_text())["version"]
            == fold["version"]
        )
        np.testing.assert_allclose(run_onnx(str(onnx), window), _keras(folds[i], window), atol=1e-3)
    # Two folds with other weights give other files.
    assert card["folds"][0]["version"] != card["folds"][1]["version"]


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
