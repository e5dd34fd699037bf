"""Serving an exported model without brats: ``examples/serve_onnx.py`` (ONNX Runtime, NumPy,
SciPy and nibabel only) segments a case from the export's ``model.json`` alone, as the
predictor does: resampled to the model's spacing, flip TTA, the model's postprocessing, the
mask in the case's geometry and the scheme's values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats.devtools.synth import SynthConfig, generate_cohort
from brats.io.artifact import save_artifact, save_ensemble
from brats.io.cases import SEED_MODALITIES, discover
from brats.io.export import ExportConfig, export_model
from brats.io.model_card import ModelInfo
from brats.network.unet import UNetConfig, build_unet
from brats.segment.predictor import Predictor
from brats.storage import resolve
from tests.helpers import train_tiny_model

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "serve_onnx.py"
RUN_WITHOUT_BRATS = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stop:
    assert not stop.code, stop.code
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"brats", "tensorflow", "keras"})
assert not loaded, f"the server imported {loaded}"
"""


def _spacing_times(location, factors):
    first = discover(location).cases[0].images["flair"]
    zooms = nib.load(first).header.get_zooms()
    return [round(float(z) * f, 4) for z, f in zip(zooms, factors, strict=True)]


def _edit_card(model: Path, **values) -> dict:
    card = json.loads((model / "model.json").read_text()) | values
    (model / "model.json").write_text(json.dumps(card))
    return card


def _served_against_predicted(tmp_path, model: Path, location, *args: str) -> tuple[int, int]:
    """Export ``model``, serve every case of ``location`` with the example (``args`` added)
    in a process that must not import brats, TensorFlow or Keras, and compare with the
    predictor's masks of the Keras model: ``(voxels differing, voxels)``."""
    export = tmp_path / f"{model.name}-onnx"
    export_model(ExportConfig(model=str(model), out=str(export)))
    predictor = Predictor.from_artifact(str(model))  # Keras
    differing = voxels = 0
    for case in discover(location).cases:
        expected = predictor.segment_files(case, location)
        assert expected.assessment.resampled_to == predictor.info.target_spacing
        images = [case.images[m] for m in predictor.info.modalities]
        out = tmp_path / f"{case.case_id}.nii.gz"
        command = [sys.executable, "-c", RUN_WITHOUT_BRATS, str(SCRIPT), str(export), str(out)]
        subprocess.run([*command, *images, *args], check=True, timeout=120)
        (tmp_path / "job.nii.gz").write_bytes(expected.mask)
        job, served = nib.load(tmp_path / "job.nii.gz"), nib.load(out)
        np.testing.assert_allclose(served.affine, job.affine)
        a, b = np.asarray(job.dataobj), np.asarray(served.dataobj)
        assert a.shape == b.shape and np.any(a == 4)  # BraTS 2020 values: ET is 4 on disk
        differing, voxels = differing + int(np.count_nonzero(a != b)), voxels + a.size
    return differing, voxels


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-cohort")
    generate_cohort(root, 2, SynthConfig(shape=(32, 32, 24), seed=31))
    return root


def test_a_region_model_served_without_brats_gives_the_jobs_mask(tmp_path, cohort):
    """z-score, region sigmoids, flips, a component rule, a spacing coarser than the
    cases' (so both sides resample there and back)."""
    model = Path(train_tiny_model(cohort, str(tmp_path / "model"), seed=1))
    location = resolve(str(cohort))
    target = _spacing_times(location, (1.5, 1.25, 1.5))
    _edit_card(model, target_spacing=target, tta=True, postprocessing={"WT": "largest"})
    differing, voxels = _served_against_predicted(tmp_path, model, location)
    assert differing <= 0.001 * voxels


def test_a_softmax_ensemble_at_thick_slices_served_without_brats_gives_the_jobs_mask(
    tmp_path, cohort
):
    """The seed preset's kind of model: min-max scaling, a softmax over classes, 3 channels;
    two folds averaged; a target with slices 4 times thicker (nearest neighbour along them);
    a model that names no scheme, written as the job writes BraTS 2020-named cases."""
    import keras

    location = resolve(str(cohort))
    target = _spacing_times(location, (1.0, 1.0, 4.0))
    unet = UNetConfig(base_filters=4, depth=2, in_channels=3)
    info = ModelInfo(
        unet=unet,
        modalities=SEED_MODALITIES,
        normalization="minmax",
        patch_size=(16, 16, 16),
        target_spacing=target,
    )
    folds = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        folds.append(str(tmp_path / f"fold{seed}"))
        save_artifact(build_unet(unet), info, folds[-1])
    save_ensemble(folds, info, str(tmp_path / "ensemble"))
    differing, voxels = _served_against_predicted(
        tmp_path, tmp_path / "ensemble", location, "--values", "brats2020"
    )
    assert differing <= 0.001 * voxels
