"""The one predictor (brats.segment.predictor) with real TensorFlow: its three levels agree,
and the app and the segmentation job, both through it, write the same mask bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brats.app import segment_upload
from brats.devtools.synth import SynthConfig, generate_cohort
from brats.ingest.prepare import PreprocessConfig, prepare_case
from brats.io.artifact import save_artifact
from brats.io.cases import discover
from brats.io.model_card import ModelInfo
from brats.io.nifti import read_case
from brats.network.unet import UNetConfig, build_unet, nnunet_config
from brats.segment.job import SegmentConfig, segment
from brats.segment.predictor import Predictor, PredictSettings, export_mask
from brats.storage import resolve
from brats.train.worker import validate
from brats.volume.labels import BRATS2020, ET, NCR, regions_to_labels
from brats.volume.postprocess import Postprocessing

SHAPE = (32, 32, 24)
TTA_AND_SMALL_ET = PredictSettings(flip_tta=True, min_et_voxels=4)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictor-cohort")
    generate_cohort(root, 2, SynthConfig(shape=SHAPE, seed=13))
    return resolve(str(root))


@pytest.fixture(scope="module")
def ragged_model(tmp_path_factory, cohort):
    """An untrained, seeded U-Net whose output biases are centred on a case, so that its
    labels are ragged noise over every class: any difference in crop, normalization, windows
    or postprocessing would show in the mask."""
    import keras

    keras.utils.set_random_seed(5)
    unet = UNetConfig(base_filters=4, depth=2)
    info = ModelInfo(unet=unet, patch_size=(16, 16, 16))
    model = build_unet(unet)
    case = discover(cohort).cases[0]
    image = prepare_case(read_case(case, cohort, modalities=info.modalities), PreprocessConfig())
    window = np.moveaxis(np.asarray(image.image, np.float32), 0, -1)[None, :16, :16, :16]
    logits = np.asarray(keras.Model(model.input, model.get_layer("logits").output)(window))
    layer = model.get_layer("logits")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias - logits.reshape(-1, unet.n_classes).mean(axis=0)])
    where = str(tmp_path_factory.mktemp("ragged"))
    save_artifact(model, info, where)
    return where


def test_the_levels_build_on_each_other(cohort, ragged_model):
    predictor = Predictor.from_artifact(ragged_model, TTA_AND_SMALL_ET)
    case = discover(cohort).cases[0]
    done = predictor.segment_files(case, cohort)
    prepared = done.prepared
    probabilities = predictor.probabilities(prepared.image)
    assert probabilities.shape == (4, *prepared.image.shape[1:])
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    crop_labels = predictor.labels(prepared.image)
    np.testing.assert_array_equal(crop_labels, np.argmax(probabilities, axis=0))
    labels = predictor.segment(prepared)
    assert labels.shape == SHAPE and labels.dtype == np.uint8
    np.testing.assert_array_equal(done.labels, labels)
    # A case without a word on its scheme gets its names' (BraTS 2020: ET written as 4).
    assert done.mask == export_mask(labels, prepared, BRATS2020)
    # Postprocessing is the only step between the crop's labels and the case's.
    assert (crop_labels == ET).sum() > (labels == ET).sum() > 0
    assert (labels[prepared.crop.slices] == NCR).sum() > (crop_labels == NCR).sum()
    raw = np.stack([done.volumes.images[m] for m in predictor.info.modalities])
    np.testing.assert_array_equal(predictor.segment_volume(raw), labels)
    with pytest.raises(ValueError, match="for a model of 4 channels"):
        predictor.segment_volume(raw[:3])


def test_app_and_job_write_byte_identical_masks_with_tta_and_small_et(
    cohort, ragged_model, tmp_path, ray_session
):
    out = tmp_path / "segmented"
    config = SegmentConfig(
        cohort=cohort.uri, model=ragged_model, out=str(out), predict=TTA_AND_SMALL_ET
    )
    result = segment(config)
    assert (result.done, result.failed) == (2, [])
    predictor = Predictor.from_artifact(ragged_model, TTA_AND_SMALL_ET)
    plain = Predictor.from_artifact(ragged_model)
    for case in discover(cohort).cases:
        files = [Path(case.images[m]) for m in ("t2", "t1ce", "flair", "t1")]
        uploaded = segment_upload(predictor, files)
        job_mask = (out / "masks" / f"{case.case_id}.nii.gz").read_bytes()
        assert uploaded.mask == job_mask
        assert segment_upload(plain, files).mask != job_mask  # TTA and small ET did something


def test_training_validation_scores_the_predictors_labels(cohort, ragged_model):
    predictor = Predictor.from_artifact(ragged_model)
    rows = []
    for case in discover(cohort).cases:
        prepared = prepare_case(
            read_case(case, cohort, modalities=predictor.preprocess.modalities),
            predictor.preprocess,
        )
        rows.append({"image": prepared.image, "label": prepared.label})
    scores = validate(predictor, rows)
    regions = ("WT", "TC", "ET")
    assert set(scores) == {
        *(f"val_dice_{r}" for r in regions),
        "val_dice_mean",
        *(f"val_post_dice_{r}" for r in regions),
        "postprocessing",
    }
    rules = Postprocessing.from_dict(json.loads(scores.pop("postprocessing")))
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    # WT is decided first, on the raw labels: a rule exactly when it raises WT's Dice.
    raised = scores["val_post_dice_WT"] > scores["val_dice_WT"]
    assert scores["val_post_dice_WT"] >= scores["val_dice_WT"]
    assert ("WT" in rules.rules) == raised
    perfect = [{"image": r["image"], "label": predictor.labels(r["image"])} for r in rows]
    assert validate(predictor, perfect)["val_dice_mean"] == 1.0
    assert validate(predictor, []) == {}


def test_a_region_model_is_decoded_from_its_sigmoids_the_nnunet_way(tmp_path, cohort):
    import keras

    keras.utils.set_random_seed(6)
    unet = nnunet_config(base_filters=4, depth=2)
    model = build_unet(unet)
    save_artifact(model, ModelInfo(unet=unet, patch_size=(16, 16, 16)), str(tmp_path / "m"))
    predictor = Predictor.from_artifact(str(tmp_path / "m"))
    case = discover(cohort).cases[0]
    prepared = predictor.segment_files(case, cohort).prepared
    probabilities = predictor.probabilities(prepared.image)
    assert probabilities.shape == (3, *prepared.image.shape[1:])
    labels = predictor.labels(prepared.image)
    np.testing.assert_array_equal(labels, regions_to_labels(probabilities))
    # Not an argmax over the three channels, which would give classes 0..2 and never ET.
    assert not np.array_equal(labels, np.argmax(probabilities, axis=0))


def test_flip_tta_runs_when_the_model_says_so_unless_the_settings_say_otherwise(
    tmp_path, cohort, ragged_model
):
    from dataclasses import replace

    from brats.io.artifact import load_artifact

    loaded = load_artifact(resolve(ragged_model))
    assert not loaded.card.info.tta  # a model.json without "tta" predicts without flips
    save_artifact(loaded.model, replace(loaded.card.info, tta=True), str(tmp_path / "tta"))
    prepared = (
        Predictor.from_artifact(ragged_model)
        .segment_files(discover(cohort).cases[0], cohort)
        .prepared
    )
    image = prepared.image

    def probabilities(model: str, tta: str) -> np.ndarray:
        predictor = Predictor.from_artifact(model, PredictSettings.with_tta(tta))
        assert predictor.flip_tta == (tta == "on" or (tta == "model" and model != ragged_model))
        return predictor.probabilities(image)

    with_flips = probabilities(ragged_model, "on")
    without = probabilities(ragged_model, "off")
    assert not np.allclose(with_flips, without, atol=1e-4)  # the ragged model is not symmetric
    np.testing.assert_array_equal(probabilities(ragged_model, "model"), without)
    np.testing.assert_array_equal(probabilities(str(tmp_path / "tta"), "model"), with_flips)
    np.testing.assert_array_equal(probabilities(str(tmp_path / "tta"), "off"), without)


def test_a_model_saved_before_label_schemes_still_loads_and_segments_alike(
    cohort, ragged_model, tmp_path
):
    """A model.json of before (``label_convention``, no ``n_regions``) reads as that scheme and
    segments byte for byte as the same model with today's model.json."""
    import json
    import shutil

    old = tmp_path / "old-model"
    shutil.copytree(ragged_model, old)
    meta = json.loads((old / "model.json").read_text())
    meta.pop("label_scheme")
    meta["label_convention"] = "brats2020"
    meta["unet"].pop("n_regions")
    (old / "model.json").write_text(json.dumps(meta))
    before, now = Predictor.from_artifact(str(old)), Predictor.from_artifact(ragged_model)
    assert before.info.label_scheme == BRATS2020 and before.info.unet.n_regions == 3
    case = discover(cohort).cases[0]
    done_before, done_now = before.segment_files(case, cohort), now.segment_files(case, cohort)
    np.testing.assert_array_equal(done_before.labels, done_now.labels)
    assert done_before.mask == done_now.mask  # BraTS 2020 names: ET written as 4 by both


def _at_spacing(model: str, where: Path, spacing: list[float] | None) -> str:
    """A copy of ``model`` whose model.json says it was trained at ``spacing``."""
    import shutil

    shutil.copytree(model, where)
    meta = json.loads((where / "model.json").read_text())
    meta["target_spacing"] = spacing
    (where / "model.json").write_text(json.dumps(meta))
    return str(where)


def test_a_case_at_the_models_spacing_is_segmented_byte_for_byte_as_before(
    cohort, ragged_model, tmp_path
):
    """A model that says its spacing is the case's gives the very mask of a model that does
    not say (as every model before spacing was recorded), and its json reads back."""
    case = discover(cohort).cases[0]
    old = Predictor.from_artifact(ragged_model, TTA_AND_SMALL_ET)
    assert old.info.target_spacing is None
    spacing = list(old.segment_files(case, cohort).prepared.spacing)
    same = Predictor.from_artifact(
        _at_spacing(ragged_model, tmp_path / "same", spacing), TTA_AND_SMALL_ET
    )
    assert same.info.target_spacing == pytest.approx(tuple(spacing))
    done, before = same.segment_files(case, cohort), old.segment_files(case, cohort)
    assert same.resampling(done.prepared) is None
    assert same.predicted_spacing(done.prepared) == done.prepared.spacing
    assert done.mask == before.mask
    np.testing.assert_array_equal(done.assessment.probabilities, before.assessment.probabilities)


def test_a_case_at_another_spacing_is_predicted_at_the_models_and_decoded_on_its_own(
    cohort, ragged_model, tmp_path
):
    """The model's spacing has slices half as thick as the case's: the network sees the
    brain box resampled to it, the probabilities come back to the case's grid before they
    are decoded, and the mask is in the case's own geometry."""
    from brats.volume.resample import resample_image, resample_probabilities, resampled_shape

    case = discover(cohort).cases[0]
    plain = Predictor.from_artifact(ragged_model)
    own = plain.segment_files(case, cohort).prepared
    target = [own.spacing[0], own.spacing[1], own.spacing[2] / 2]
    finer = Predictor.from_artifact(_at_spacing(ragged_model, tmp_path / "finer", target))
    done = finer.segment_files(case, cohort)
    resampling = finer.resampling(done.prepared)
    box = done.prepared.crop.size
    assert resampling is not None and resampling.axis is None
    assert resampling.shape == resampled_shape(box, own.spacing, target)
    assert resampling.shape[2] == 2 * box[2] and resampling.source == box
    assert finer.predicted_spacing(done.prepared) == pytest.approx(tuple(target))
    assert done.assessment.resampled_to == pytest.approx(tuple(target))
    # By hand: resample, predict, resample back, decode, paste back and postprocess.
    on_model = resample_image(done.prepared.image, resampling.shape, None)
    back = resample_probabilities(finer.probabilities(on_model), box, None)
    np.testing.assert_allclose(done.assessment.probabilities, back, atol=1e-6)
    expected = finer.postprocess(finer.decode(back), done.prepared.crop)
    np.testing.assert_array_equal(done.labels, expected)
    np.testing.assert_array_equal(finer.segment(done.prepared), expected)
    assert done.labels.shape == SHAPE
    # Its own geometry: the mask's header places it where the case's images are.
    import gzip

    import nibabel as nib

    mask = nib.Nifti1Image.from_bytes(gzip.decompress(done.mask))
    np.testing.assert_allclose(mask.affine, done.volumes.affine)
    assert mask.shape == SHAPE
    # Not the same as predicting on the case's own grid (the resampling did something).
    assert not np.array_equal(done.labels, plain.segment(own))
    # The app, through the same predictor: the same mask, and it says where it predicted.
    uploaded = segment_upload(finer, [Path(p) for p in case.images.values()])
    assert uploaded.mask == done.mask
    assert uploaded.predicted_spacing == pytest.approx(tuple(target))
    assert segment_upload(plain, [Path(p) for p in case.images.values()]).predicted_spacing is None


def test_the_size_guard_holds_at_the_models_spacing(cohort, ragged_model, tmp_path):
    """A model at a spacing so fine that the case's brain box would grow past the voxel limit
    is refused before anything is allocated, naming the case, a file and both spacings."""
    from brats.errors import CaseError

    case = discover(cohort).cases[0]
    tiny = Predictor.from_artifact(_at_spacing(ragged_model, tmp_path / "tiny", [0.05] * 3))
    with pytest.raises(CaseError, match="over the limit") as caught:
        tiny.segment_files(case, cohort)
    assert caught.value.case_id == case.case_id
    assert caught.value.file and caught.value.file.endswith(".nii.gz")
    assert "0.05 x 0.05 x 0.05 mm" in str(caught.value)


def test_the_model_actor_keeps_a_refused_cases_file_in_its_record(cohort, ragged_model, tmp_path):
    """A case the predictor refuses (its size guard, a CaseError) fails in the model actor
    with the predictor's own message and file, whole, and its record names that file."""
    from brats.ingest.rows import case_to_row, load_and_prepare
    from brats.report.records import read_record
    from brats.segment.actor import CaseSegmenter
    from brats.segment.writer import write_case_outputs
    from brats.volume.labels import BRATS2023

    case = discover(cohort).cases[0]
    tiny = _at_spacing(ragged_model, tmp_path / "tiny", [0.05] * 3)
    actor = CaseSegmenter(tiny, None, PredictSettings())
    row = load_and_prepare(case_to_row(case), cohort=cohort, config=actor.predictor.preprocess)
    # A one-row numpy batch as Ray Data hands it over: strings as fixed-width arrays (an
    # empty error_file is "<U1"), the header's bytes as objects.
    batch = {k: np.asarray([v], dtype=object if k == "header" else None) for k, v in row.items()}
    assert batch["error_file"].dtype == np.dtype("<U1")
    out = actor(batch)
    assert out["status"][0] == "failed"
    file = str(out["error_file"][0])
    assert file.startswith(case.case_id) and file.endswith(".nii.gz")
    assert str(out["error"][0]).startswith(f"case {case.case_id}: {file}: its brain box")
    assert "prediction failed" not in str(out["error"][0])
    written = resolve(str(tmp_path / "out"))
    result = write_case_outputs(
        {k: v[0] for k, v in out.items()}, out=written, settings={}, scheme=BRATS2023
    )
    assert result["status"] == "failed" and result["written"]
    record = read_record(written, case.case_id)
    assert record is not None and record.error is not None
    assert record.error.file == file
    assert record.error.reason.startswith("its brain box")
    assert "over the limit" in record.error.reason


def test_a_case_whose_attempts_cannot_be_counted_fails_alone(cohort, ragged_model, tmp_path):
    """Counting a case's attempts is storage I/O: where it fails (here the counter's key is a
    folder), that case fails, naming why, and the batch's other case is segmented."""
    from brats.ingest.rows import case_to_row, load_and_prepare
    from brats.segment.actor import CaseSegmenter

    cases = discover(cohort).cases[:2]
    out_folder = tmp_path / "out"  # the job's output: the counts go under its _attempts/
    attempts = out_folder / "_attempts"
    (attempts / cases[0].case_id).mkdir(parents=True)  # neither read nor written as a count
    (attempts / cases[0].case_id / "x").write_text("")
    actor = CaseSegmenter(ragged_model, None, PredictSettings(), attempts=resolve(str(out_folder)))
    rows = [
        load_and_prepare(case_to_row(c), cohort=cohort, config=actor.predictor.preprocess)
        for c in cases
    ]
    batch = {}  # as Ray Data hands a batch over: arrays (and the header's bytes) as objects
    for key in rows[0]:
        values = [r[key] for r in rows]
        if key == "header" or isinstance(values[0], np.ndarray):
            batch[key] = np.empty(len(values), dtype=object)
            batch[key][:] = values
        else:
            batch[key] = np.asarray(values)
    out = actor(batch)
    assert list(out["status"]) == ["failed", "done"]
    assert str(out["error"][0]).startswith(f"case {cases[0].case_id}: its attempts cannot be")
    assert out["pred"][1].size > 0 and out["pred"][0].size == 0
    assert not (attempts / cases[1].case_id).exists()  # counted, then forgotten
