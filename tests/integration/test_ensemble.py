"""An ensemble of folds as one model: its card, its checks, and the predictor averaging it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from brats.io.artifact import (
    load_artifact,
    load_models,
    read_model_card,
    save_artifact,
    save_ensemble,
    verify_artifact,
)
from brats.io.model_card import META_FILE, MODEL_FILE, ArtifactError, ModelInfo, ensemble_version
from brats.network.unet import nnunet_config
from brats.segment.predictor import Predictor, PredictSettings, Resampling
from brats.volume.labels import BRATS2023
from brats.volume.resample import resample_labels
from brats.volume.uncertainty import foreground_probability, tumour_entropy

INFO = ModelInfo(
    unet=nnunet_config(base_filters=4, depth=2),
    patch_size=(16, 16, 16),
    label_scheme=BRATS2023,
    metrics={"val_dice_WT": 0.8},
    tta=True,
)


def _folds(tmp_path: Path, n: int = 3) -> list[Path]:
    """``n`` exported models of the same architecture with different (seeded) weights."""
    from brats.network.unet import build_unet

    out = []
    for i in range(n):
        keras.utils.set_random_seed(i)
        folder = tmp_path / "runs" / f"fold_{i}" / "model"
        save_artifact(
            build_unet(INFO.unet), replace(INFO, metrics={"val_dice_WT": 0.7 + i / 10}), str(folder)
        )
        out.append(folder)
    return out


def test_an_ensemble_is_one_folder_and_one_version_over_its_folds(tmp_path: Path) -> None:
    folds = _folds(tmp_path)
    card = save_ensemble([str(f) for f in folds], INFO, str(tmp_path / "model"))
    assert card.is_ensemble and [f.folder for f in card.folds] == ["fold_0", "fold_1", "fold_2"]
    versions = [read_model_card(str(f)).version for f in folds]
    assert [f.version for f in card.folds] == versions
    assert card.version == ensemble_version(card.folds) and card.version not in versions
    document = json.loads((tmp_path / "model" / META_FILE).read_text())
    assert document["kind"] == "ensemble" and "weights_file" not in document
    for i, fold in enumerate(folds):  # each fold's artifact copied byte for byte
        copy = tmp_path / "model" / f"fold_{i}"
        assert (copy / MODEL_FILE).read_bytes() == (fold / MODEL_FILE).read_bytes()
    assert (
        read_model_card(str(tmp_path / "model")) == card == verify_artifact(str(tmp_path / "model"))
    )
    loaded_card, models = load_models(str(tmp_path / "model"), max_folds=2)
    assert loaded_card == card and [m.version for m in models] == versions[:2]
    with pytest.raises(ArtifactError, match="an ensemble of 3 folds, not one model"):
        load_artifact(str(tmp_path / "model"))


def test_a_changed_fold_or_card_is_refused(tmp_path: Path) -> None:
    folds = _folds(tmp_path, 2)
    where = tmp_path / "model"
    save_ensemble([str(f) for f in folds], INFO, str(where))
    fold = where / "fold_1"
    (fold / MODEL_FILE).write_bytes((folds[0] / MODEL_FILE).read_bytes())
    (fold / META_FILE).write_bytes((folds[0] / META_FILE).read_bytes())  # a whole other fold
    with pytest.raises(ArtifactError, match=r"fold_1: version .* is not the .* the ensemble lists"):
        verify_artifact(str(where))
    document = json.loads((where / META_FILE).read_text())
    document["folds"][1]["version"] = document["folds"][0]["version"]  # card edited to match
    (where / META_FILE).write_text(json.dumps(document))
    with pytest.raises(ArtifactError, match="'version' is not the ensemble's"):
        read_model_card(str(where))


def test_folds_of_another_architecture_or_scheme_do_not_make_an_ensemble(tmp_path: Path) -> None:
    folds = _folds(tmp_path, 2)
    other = replace(INFO, unet=nnunet_config(base_filters=8, depth=2))
    refused = "fold_0: its architecture, inputs \\(spacing included\\) or label scheme"
    with pytest.raises(ArtifactError, match=refused):
        save_ensemble([str(f) for f in folds], other, str(tmp_path / "model"))
    # Folds trained at one spacing are not an ensemble said to be at another.
    with pytest.raises(ArtifactError, match=refused):
        save_ensemble(
            [str(f) for f in folds],
            replace(INFO, target_spacing=(2.0, 2.0, 2.0)),
            str(tmp_path / "model"),
        )
    assert not (tmp_path / "model" / META_FILE).exists()


def test_the_predictor_averages_the_folds_probabilities_window_by_window(tmp_path: Path) -> None:
    folds = _folds(tmp_path)
    save_ensemble([str(f) for f in folds], INFO, str(tmp_path / "model"))
    image = np.random.default_rng(0).normal(size=(4, 24, 20, 28)).astype(np.float32)
    settings = PredictSettings.with_tta("off", overlap=0.5)
    each = [Predictor.from_artifact(str(f), settings).probabilities(image) for f in folds]
    ensemble = Predictor.from_artifact(str(tmp_path / "model"), settings)
    assert (
        ensemble.n_models == 3
        and ensemble.version == read_model_card(str(tmp_path / "model")).version
    )
    np.testing.assert_allclose(ensemble.probabilities(image), np.mean(each, axis=0), atol=1e-5)
    flips = PredictSettings.with_tta("on", overlap=0.5, max_folds=2)  # TTA per fold, then mean
    two = Predictor.from_artifact(str(tmp_path / "model"), flips)
    flipped = [Predictor.from_artifact(str(f), flips).probabilities(image) for f in folds[:2]]
    np.testing.assert_allclose(two.probabilities(image), np.mean(flipped, axis=0), atol=1e-5)
    assert two.settings.output_settings()["max_folds"] == 2
    assert "max_folds" not in settings.output_settings()  # old records still match


def test_an_assessment_is_the_ensembles_probabilities_and_how_much_its_folds_agree(
    tmp_path: Path,
) -> None:
    folds = _folds(tmp_path, 2)
    save_ensemble([str(f) for f in folds], INFO, str(tmp_path / "model"))
    image = np.random.default_rng(1).normal(size=(4, 20, 20, 20)).astype(np.float32)
    settings = PredictSettings.with_tta("off")
    ensemble = Predictor.from_artifact(str(tmp_path / "model"), settings)
    assessed = ensemble.assess(image)
    np.testing.assert_allclose(assessed.probabilities, ensemble.probabilities(image), atol=1e-5)
    np.testing.assert_array_equal(assessed.labels, ensemble.labels(image))
    masks = [Predictor.from_artifact(str(f), settings).labels(image) > 0 for f in folds]
    both, total = int((masks[0] & masks[1]).sum()), int(masks[0].sum() + masks[1].sum())
    assert assessed.agreement == pytest.approx(2 * both / total if total else 1.0)
    # The entropy is the tumour's (any tumour class), over every voxel a fold calls tumour.
    outer = ensemble.info.scheme.outer_outputs
    foreground = foreground_probability(assessed.probabilities, ensemble.output_kind, outer)
    union = masks[0] | masks[1] | (assessed.labels > 0)
    assert union.sum() > (assessed.labels > 0).sum()  # the folds' band is wider than the mean's
    assert assessed.entropy == pytest.approx(tumour_entropy(foreground, union), abs=1e-6)
    assert assessed.entropy != pytest.approx(tumour_entropy(foreground, assessed.labels > 0))
    assert assessed.uncertainty == pytest.approx(1 - assessed.agreement + assessed.entropy)
    one = Predictor.from_artifact(str(folds[0]), settings).assess(image)
    assert one.agreement == 1.0 and one.uncertainty == pytest.approx(one.entropy)
    own = foreground_probability(one.probabilities, ensemble.output_kind, outer)
    assert one.entropy == pytest.approx(tumour_entropy(own, one.labels > 0), abs=1e-6)
    # Resampled back to a finer source grid: the union goes with the probabilities.
    back = Resampling(spacing=(2.0, 2.0, 2.0), shape=(20, 20, 20), source=(20, 20, 30), axis=None)
    fine = ensemble.assess(image, back)
    assert fine.labels.shape == (20, 20, 30) and fine.agreement == assessed.agreement
    band = resample_labels((masks[0] | masks[1]).astype(np.uint8), (20, 20, 30), None) > 0
    inside = band | (fine.labels > 0)
    fg = foreground_probability(fine.probabilities, ensemble.output_kind, outer)
    assert fine.entropy == pytest.approx(tumour_entropy(fg, inside), abs=1e-6)
