"""The evaluation job's pieces that need no Ray: which lesion-wise settings a run scores with,
and one pair scored by :func:`brats.evaluate.job.score_pair` on real NIfTI files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats.cli import evaluate_parser
from brats.evaluate.job import EvaluateConfig, EvaluateError, evaluation_scheme, score_pair
from brats.evaluate.pairing import find_label_files
from brats.options import parse_config
from brats.storage import resolve
from brats.volume.labels import BRATS2020, BRATS2023, MET2023, MET2024, to_internal
from brats.volume.metrics import evaluate_case


def _config(*flags: str, **fields) -> EvaluateConfig:
    args = evaluate_parser().parse_args(["--pred", "p", "--truth", "t", "--out", "o", *flags])
    return replace(parse_config(EvaluateConfig, args), **fields)


def _save(path: Path, seg: np.ndarray, pixdim: tuple[float, float, float] = (1, 1, 1)) -> str:
    """``seg`` as a NIfTI file whose header says ``pixdim`` and nothing else about space."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(seg, None)
    image.header.set_qform(None, code=0)
    image.header.set_sform(None, code=0)
    image.header["pixdim"][1:4] = pixdim
    nib.save(image, str(path))
    return str(path)


def _scored(config: EvaluateConfig, case: str, truth: str, pred: str) -> tuple[dict, dict]:
    """:func:`score_pair`'s row for one pair, and the record it wrote under ``config.out``."""
    pair = {"case_id": case, "truth": truth, "pred": pred}
    row = score_pair(pair, out=resolve(config.out), config=config)
    record = json.loads((Path(config.out) / "records" / f"{case}.json").read_text())
    return row, record


def test_only_the_lesion_flags_replace_each_region_s_rules():
    assert _config("--lesion-metric", "brats2024").lesion_settings is None
    assert _config("--nsd-tolerance-mm", "0.5").lesion_settings is None
    for flag, value in (("--dilation", "2"), ("--min-lesion-mm3", "9"), ("--penalty-mm", "9")):
        chosen = _config(flag, value, "--nsd-tolerance-mm", "0.5").lesion_settings
        assert chosen is not None and chosen.nsd_tolerance_mm == 0.5


def test_the_nsd_tolerance_reaches_scoring_and_keeps_the_2024_rules(tmp_path):
    """A 27 mm^3 metastasis missed: the 2024 rules (lesions over 2 mm^3) count it whatever
    the NSD tolerance; the 2023 glioma default (over 50 mm^3) would not."""
    seg = np.zeros((24, 24, 24), np.uint8)
    seg[3:6, 3:6, 3:6] = 3  # ET, missed
    seg[12:20, 12:20, 12:20] = 3  # ET, found one voxel short
    guess = np.zeros_like(seg)
    guess[12:20, 12:20, 12:19] = 3
    truth, pred = (
        _save(tmp_path / "t" / "C1.nii.gz", seg),
        _save(tmp_path / "p" / "C1.nii.gz", guess),
    )
    config = _config(
        "--lesion-metric", "brats2024", "--nsd-tolerance-mm", "0.5",
        pred=str(tmp_path / "p"), truth=str(tmp_path / "t"), out=str(tmp_path / "out"),
        scheme=MET2024,
    )  # fmt: skip
    row, record = _scored(config, "C1", truth, pred)
    assert row["status"] == "done"
    metrics = record["metrics"]
    p, t = to_internal(guess, MET2024), to_internal(seg, MET2024)
    kw = {"scheme": MET2024, "lesion_metric": "brats2024"}
    assert metrics == pytest.approx(evaluate_case(p, t, (1, 1, 1), nsd_tolerance_mm=0.5, **kw))
    assert metrics["lesion_fn_ET"] == 1.0
    assert metrics["nsd_ET"] < evaluate_case(p, t, (1, 1, 1), **kw)["nsd_ET"]


def test_a_2023_metastasis_truth_is_scored_as_metastasis_against_a_glioma_model(tmp_path):
    """BraTS-MET truth without a 4 is met2023 (dilation 1, lesions over 2 mm^3), and a
    brats2023 model's predictions are read against it without refusal: a missed 27 mm^3
    metastasis is a missed lesion, which the glioma settings (over 50 mm^3) dropped."""
    seg = np.zeros((24, 24, 24), np.uint8)
    seg[3:6, 3:6, 3:6] = 3  # ET, missed
    seg[12:20, 12:20, 12:20] = 3  # ET, found
    guess = np.zeros_like(seg)
    guess[12:20, 12:20, 12:20] = 3
    case = "BraTS-MET-00001-000"
    truth = _save(tmp_path / "t" / case / f"{case}-seg.nii.gz", seg)
    pred = _save(tmp_path / "p" / f"{case}.nii.gz", guess)
    (tmp_path / "p" / "summary.json").write_text(json.dumps({"label_scheme": "brats2023"}))
    config = _config(pred=str(tmp_path / "p"), truth=str(tmp_path / "t"), out=str(tmp_path / "o"))
    roots = resolve(config.truth), resolve(config.pred)
    scheme, predicted = evaluation_scheme(config, roots[0], find_label_files(roots[0]), roots[1])
    assert scheme is MET2023 and predicted is None  # the same values: read alike
    row, record = _scored(replace(config, scheme=scheme), case, truth, pred)
    assert row["status"] == "done"
    assert record["metrics"]["lesion_fn_ET"] == 1.0 and record["metrics"]["lesion_tp_ET"] == 1.0
    assert record["settings"]["label_scheme"] == "met2023"
    # The record says whose rules scored it, not the flags' glioma defaults it did not use.
    assert record["settings"]["lesion_task"] == "metastasis"
    assert "dilation" not in record["settings"]
    (tmp_path / "p" / "summary.json").write_text(json.dumps({"label_scheme": "met2024"}))
    with pytest.raises(EvaluateError, match="mean different things"):
        evaluation_scheme(config, roots[0], find_label_files(roots[0]), roots[1])


def test_brats2023_predictions_are_read_in_their_own_values_against_brats2020_truth(tmp_path):
    """The two schemes mean the same classes, ET 4 on one side and 3 on the other: a segment
    output that says it wrote brats2023 is read as such and scored against BraTS 2020 truth
    (it was read in the truth's values, and every case with ET failed)."""
    seg = np.zeros((16, 16, 16), np.uint8)
    seg[2:14, 2:14, 2:14] = 2
    seg[4:12, 4:12, 4:12] = 1
    seg[6:10, 6:10, 6:10] = 4
    case = "BraTS20_Training_001"
    truth = _save(tmp_path / "t" / case / f"{case}_seg.nii.gz", seg)
    pred = _save(tmp_path / "p" / f"{case}.nii.gz", np.where(seg == 4, 3, seg).astype(np.uint8))
    (tmp_path / "p" / "summary.json").write_text(json.dumps({"label_scheme": "brats2023"}))
    config = _config(pred=str(tmp_path / "p"), truth=str(tmp_path / "t"), out=str(tmp_path / "o"))
    roots = resolve(config.truth), resolve(config.pred)
    scheme, predicted = evaluation_scheme(config, roots[0], find_label_files(roots[0]), roots[1])
    assert scheme is BRATS2020 and predicted is BRATS2023
    row, record = _scored(replace(config, scheme=scheme, pred_scheme=predicted), case, truth, pred)
    assert row["status"] == "done", row
    assert [record["metrics"][f"dice_{r}"] for r in ("WT", "TC", "ET")] == [1.0, 1.0, 1.0]
    assert record["label_scheme"] == "brats2020"


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
@pytest.mark.parametrize("side", ["truth", "prediction", "both"])
def test_a_label_file_whose_spacing_is_not_positive_is_a_failed_record(tmp_path, bad, side):
    """Read as it is (no header repair): a failed record naming the file, never a ValueError
    out of the Ray task; with both files alike, the truth (read first) is named."""
    seg = np.zeros((12, 12, 12), np.uint8)
    seg[3:8, 3:8, 3:8] = 2
    spacing = {"truth": (1.0, 1.0, 1.0), "prediction": (1.0, 1.0, 1.0)}
    for which in spacing if side == "both" else [side]:
        spacing[which] = (1.0, bad, 1.0)
    truth = _save(tmp_path / "t" / "C1-seg.nii.gz", seg, spacing["truth"])
    pred = _save(tmp_path / "p" / "C1.nii.gz", seg, spacing["prediction"])
    config = _config(
        pred=str(tmp_path / "p"), truth=str(tmp_path / "t"), out=str(tmp_path / "out"),
        scheme=BRATS2023,
    )  # fmt: skip
    row, record = _scored(config, "C1", truth, pred)
    assert row["status"] == "failed"
    assert record["status"] == "failed"
    name = "C1.nii.gz" if side == "prediction" else "C1-seg.nii.gz"
    assert record["error"]["file"] == name
    assert record["error"]["reason"].startswith("voxel size (pixdim) (1.0, ")
    assert record["error"]["reason"].endswith(", 1.0) is not positive and finite")
    assert row["error"].startswith(f"case C1: {name}: ")
