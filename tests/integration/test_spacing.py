"""Scans as they come, through the jobs: ingest stores a mixed cohort at one spacing, and the
segmentation job predicts a case of another spacing at the model's and writes its mask in
the case's own geometry, its record saying both spacings."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest

from brats.devtools.synth import SynthConfig, generate_cohort
from brats.ingest.job import IngestConfig, ingest
from brats.ingest.prepare import PreprocessConfig
from brats.ingest.shards import read_shards
from brats.io.artifact import save_artifact
from brats.io.model_card import ModelInfo
from brats.network.unet import UNetConfig, build_unet
from brats.report.records import read_record
from brats.segment.job import SegmentConfig, segment
from brats.storage import resolve
from tests.helpers import FINE_MM, THICK_MM, mixed_spacing_cohort

FINE, THICK = FINE_MM, THICK_MM


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Three cases at FINE, a fourth (case 4) with slices twice as thick."""
    root = tmp_path_factory.mktemp("mixed")
    return str(root), mixed_spacing_cohort(root)


def test_ingest_stores_a_mixed_cohort_at_its_median_spacing(mixed, tmp_path, ray_session):
    root, ids = mixed
    out = tmp_path / "normalized"
    manifest = ingest(IngestConfig(cohort=root, out=str(out))).manifest
    assert manifest["spacing"] == {
        "median": list(FINE),
        "target": list(FINE),
        "rule": "median",
        "cases_read": 4,
        "cases_resampled": 1,
    }
    entries = {c["case_id"]: c for c in manifest["cases"]}
    thick = entries[ids[3]]
    assert thick["file_spacing"] == list(THICK) and thick["file_shape"] == [40, 40, 13]
    assert thick["spacing"] == list(FINE) and thick["crop"]["start"] == [0, 0, 0]
    assert all(entries[i]["file_spacing"] == entries[i]["spacing"] == list(FINE) for i in ids[:3])
    rows = {r["case_id"]: r for r in read_shards(resolve(str(out)), ids)}
    size = thick["crop"]["shape"]
    assert list(rows[ids[3]]["image"].shape) == [4, *size] and size[2] % 2 == 0
    assert list(rows[ids[3]]["label"].shape) == size
    # --target-spacing wins over the median: now the three fine cases are resampled.
    given = ingest(
        IngestConfig(
            cohort=root,
            out=str(tmp_path / "thick"),
            preprocess=PreprocessConfig(target_spacing=THICK),
        )
    ).manifest
    assert given["spacing"]["rule"] == "given" and given["spacing"]["cases_resampled"] == 3
    assert {tuple(c["spacing"]) for c in given["cases"]} == {THICK}


def test_the_job_predicts_at_the_models_spacing_and_writes_in_the_cases(
    mixed, tmp_path, ray_session
):
    """A model at FINE segments the thick case on a FINE grid of its brain box and writes
    its mask on the case's 13 slices with the case's affine; the record says the case's
    spacing and the one it was predicted at. The fine case is predicted on its own grid."""
    import keras

    root, ids = mixed
    keras.utils.set_random_seed(1)
    unet = UNetConfig(base_filters=4, depth=2)
    model = str(tmp_path / "model")
    save_artifact(
        build_unet(unet), ModelInfo(unet=unet, patch_size=(16, 16, 16), target_spacing=FINE), model
    )
    out = tmp_path / "seg"
    result = segment(SegmentConfig(cohort=root, model=model, out=str(out)))
    assert (result.done, result.failed) == (4, [])
    thick = read_record(resolve(str(out)), ids[3])
    assert thick is not None
    assert thick.spacing == pytest.approx(list(THICK)) and thick.shape == [40, 40, 13]
    assert thick.predicted_spacing == pytest.approx(list(FINE))
    fine = read_record(resolve(str(out)), ids[0])
    assert fine is not None
    assert fine.predicted_spacing is None and fine.spacing == pytest.approx(list(FINE))
    stored = json.loads((out / "records" / f"{ids[0]}.json").read_text())
    assert "predicted_spacing" not in stored  # as records of before
    written = (out / "masks" / f"{ids[3]}.nii.gz").read_bytes()
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(written))
    source = nib.load(f"{root}/{ids[3]}/{ids[3]}_flair.nii.gz")
    assert mask.shape == source.shape == (40, 40, 13)
    np.testing.assert_allclose(mask.affine, source.affine)
    np.testing.assert_allclose(mask.header.get_zooms(), THICK)


TRAIN_GRID = SynthConfig(shape=(48, 48, 32), field_of_view_mm=(240.0, 240.0, 160.0), seed=11)
"""Training cases at 5 mm isotropic."""
OTHER_GRIDS = {"1x1x3": (5.0, 5.0, 15.0), "0.5x0.5x1": (2.5, 2.5, 5.0)}
"""The same held-out anatomy acquired as 1 x 1 x 3 mm and 0.5 x 0.5 x 1 mm scans are to a
1 mm model: slices three times as thick, and voxels half as wide in plane."""


@pytest.mark.integration
def test_a_trained_model_segments_the_same_anatomy_alike_at_other_spacings(tmp_path, ray_session):
    """A small model trained at 5 mm (16 cases, 8 epochs, one worker: held-out WT Dice 0.84)
    segments six held-out cases generated at 5 mm, at 5 x 5 x 15 mm and at 2.5 x 2.5 x 5 mm:
    each mask is on its case's own grid, and the mean WT Dice against each grid's truth is
    within 0.03 of the same-grid figure. Without resampling (the model not knowing its
    spacing) the thick-slice scans lose more than that."""
    from brats.io.artifact import load_models
    from brats.io.cases import discover
    from brats.segment.predictor import Predictor, PredictSettings
    from brats.train.config import TrainConfig
    from brats.train.job import train
    from brats.volume.labels import DEFAULT
    from brats.volume.metrics import dice

    generate_cohort(tmp_path / "raw", 16, TRAIN_GRID)
    grids = {"same": None, **OTHER_GRIDS}
    for name, spacing in grids.items():
        generate_cohort(tmp_path / name, 6, replace(TRAIN_GRID, spacing_mm=spacing), start=1001)
    trained = train(
        TrainConfig(
            data=str(tmp_path / "raw"),
            storage=str(tmp_path / "runs"),
            name="five-mm",
            epochs=8,
            learning_rate=3e-3,
            num_workers=1,
            cpus_per_worker=2,
            patch_size=(32, 32, 32),
            base_filters=8,
            depth=3,
            batch_size=2,
            patches_per_case=8,
            seed=0,
        )
    )
    assert trained.model is not None
    settings = PredictSettings(no_tta=True)
    model = Predictor.from_artifact(trained.model, settings)
    assert model.info.target_spacing == pytest.approx((5.0, 5.0, 5.0))
    card, loaded = load_models(resolve(trained.model))
    unaware = Predictor(
        [m.model for m in loaded], replace(card.info, target_spacing=None), settings
    )

    def mean_wt(predictor: Predictor, name: str) -> float:
        cohort = resolve(str(tmp_path / name))
        scores = []
        for case in discover(cohort).cases:
            done = predictor.segment_files(case, cohort)
            truth = np.zeros(done.prepared.crop.shape, np.uint8)
            truth[done.prepared.crop.slices] = done.prepared.label
            assert done.labels.shape == done.volumes.label.shape  # the case's own grid
            wt = DEFAULT.region_classes("WT")
            scores.append(dice(np.isin(done.labels, wt), np.isin(truth, wt)))
        return float(np.mean(scores))

    same = mean_wt(model, "same")
    assert same > 0.6
    others = {name: mean_wt(model, name) for name in OTHER_GRIDS}
    blind = mean_wt(unaware, "1x1x3")
    print(f"held-out WT Dice: same grid {same:.3f}, {others}, 1x1x3 unresampled {blind:.3f}")
    assert all(v == pytest.approx(same, abs=0.03) for v in others.values()), others
    assert blind < same - 0.03
