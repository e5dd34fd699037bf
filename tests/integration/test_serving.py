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

from brats.devtools.synth import SynthConfig, generate_cohort
from brats.io.cases import discover
from brats.io.export import ExportConfig, export_model
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


def test_an_onnx_export_served_without_brats_gives_the_jobs_mask(tmp_path):
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, 2, SynthConfig(shape=(32, 32, 24), seed=31))
    model = Path(train_tiny_model(cohort, str(tmp_path / "model"), seed=1))
    # The card says more than the tiny training chose: a spacing coarser than the cases' (so
    # both sides resample there and back), flips and a component rule.
    location = resolve(str(cohort))
    first = discover(location).cases[0].images["flair"]
    target = [
        round(float(z) * f, 4)
        for z, f in zip(nib.load(first).header.get_zooms(), (1.5, 1.25, 1.5), strict=True)
    ]
    card = json.loads((model / "model.json").read_text())
    card |= {"target_spacing": target, "tta": True, "postprocessing": {"WT": "largest"}}
    (model / "model.json").write_text(json.dumps(card))
    export_model(ExportConfig(model=str(model), out=str(tmp_path / "onnx")))

    predictor = Predictor.from_artifact(str(model))  # Keras
    differing = voxels = 0
    for case in discover(location).cases:
        expected = predictor.segment_files(case, location)
        assert expected.assessment.resampled_to == tuple(target)
        images = [case.images[m] for m in card["modalities"]]
        out = tmp_path / f"{case.case_id}.nii.gz"
        subprocess.run(
            [
                sys.executable,
                "-c",
                RUN_WITHOUT_BRATS,
                str(SCRIPT),
                str(tmp_path / "onnx"),
                str(out),
                *images,
            ],
            check=True,
            timeout=120,
        )
        (tmp_path / "job.nii.gz").write_bytes(expected.mask)
        job, served = nib.load(tmp_path / "job.nii.gz"), nib.load(out)
        np.testing.assert_allclose(served.affine, job.affine)
        a, b = np.asarray(job.dataobj), np.asarray(served.dataobj)
        assert a.shape == b.shape and np.any(a == 4)  # BraTS 2020 values: ET is 4 on disk
        differing, voxels = differing + int(np.count_nonzero(a != b)), voxels + a.size
    assert differing <= 0.001 * voxels
