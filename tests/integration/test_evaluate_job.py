"""``brats evaluate`` on real NIfTI files with a real local Ray, on local folders and on a moto
S3 bucket: every naming, both label conventions, and each kind of bad input as a failed record
while the other cases are scored."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats.cli import run_evaluate
from brats.evaluate.job import MISSING_PREDICTION, EvaluateConfig, EvaluateError, evaluate
from brats.report.write import REPORT_FILES
from brats.volume.labels import to_internal
from brats.volume.metrics import evaluate_case
from tests.helpers import s3fs_client

SHAPE = (24, 24, 16)
SPACING = (1.0, 1.0, 2.0)
AFFINE = np.diag([*SPACING, 1.0])


def _labels(size: float, et: int) -> np.ndarray:
    """A tumour of edema radius ``size`` voxels with a core and an enhancing rim, and a
    satellite lesion; ET written as ``et`` (4 for BraTS 2020, 3 for BraTS 2023)."""
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    r = np.sqrt((z - 9) ** 2 + (y - 9) ** 2 + (2 * (x - 6)) ** 2) * 7 / size
    seg = np.zeros(SHAPE, np.uint8)
    seg[r < 7] = 2
    seg[r < 4] = et
    seg[r < 2] = 1
    seg[21:24, 21:24, 13:16] = 2  # a satellite lesion, 27 voxels = 54 mm^3
    return seg


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Truth: a BraTS 2020 cohort (folders with _seg and a FLAIR). Predictions: flat, in the
    same values, one shifted by a voxel, with every kind of trouble beside the good ones."""
    root = tmp_path_factory.mktemp("evaluate")
    truth, pred = root / "truth", root / "pred"
    arrays = {}
    for i in range(1, 7):
        case = f"BraTS20_Training_00{i}"
        seg = _labels(6 + i / 6, et=4)
        _save(truth / case / f"{case}_seg.nii.gz", seg)
        _save(truth / case / f"{case}_flair.nii.gz", (seg * 100 + 50).astype(np.int16))
        guess = seg.copy()
        if i == 2:  # one voxel off
            guess[1:], guess[0] = seg[:-1], 0
        if i == 1:
            guess[0:2, 0:2, 0:2] = 2  # a false-positive blob
        arrays[case] = (guess, seg)
        if i == 3:
            continue  # no prediction: scored as an empty mask
        if i == 4:  # other geometry
            _save(pred / f"{case}.nii.gz", guess[:, :, :-1])
        elif i == 5:  # a label no convention has
            _save(pred / f"{case}.nii.gz", np.where(guess == 1, 7, guess).astype(np.uint8))
        elif i == 6:  # cut short
            good = _save(pred / f"{case}.nii.gz", guess).read_bytes()
            (pred / f"{case}.nii.gz").write_bytes(good[: len(good) // 2])
        else:
            _save(pred / f"{case}.nii.gz", guess)
    _save(pred / "BraTS20_Training_099.nii.gz", _labels(7, et=4))  # no truth
    return truth, pred, arrays


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))}


@pytest.mark.integration
def test_scores_every_pair_and_records_each_bad_file(folders, ray_session, tmp_path):
    truth, pred, arrays = folders
    out = tmp_path / "eval"
    result = evaluate(EvaluateConfig(pred=str(pred), truth=str(truth), out=str(out), name="mine"))
    records = _records(out)
    assert sorted(records) == [f"BraTS20_Training_00{i}" for i in range(1, 7)] + [
        "BraTS20_Training_099"
    ]
    # The good pairs: the figures of evaluate_case on the same labels, at the truth's spacing.
    for case in ("BraTS20_Training_001", "BraTS20_Training_002"):
        guess, seg = arrays[case]
        want = evaluate_case(
            to_internal(guess, "brats2020"), to_internal(seg, "brats2020"), SPACING
        )
        assert records[case]["metrics"] == pytest.approx(want)
        assert (
            records[case]["model_version"] == "mine"
            and records[case]["label_scheme"] == "brats2020"  # from the truth's 2020 names
        )
        assert records[case]["spacing"] == list(SPACING)
    first = records["BraTS20_Training_001"]["metrics"]
    assert first["lesion_fp_WT"] == 1.0 and first["lesion_tp_WT"] == 2.0  # tumour + satellite
    assert first["lesion_dice_WT"] == pytest.approx(2 / 3) and first["dice_WT"] > 0.97
    # A missing prediction is scored as empty, and says so.
    missing = records["BraTS20_Training_003"]
    assert missing["status"] == "done" and missing["notes"] == [MISSING_PREDICTION]
    assert missing["metrics"]["dice_WT"] == 0.0 and missing["metrics"]["lesion_fn_WT"] == 2.0
    assert result.missing_predictions == ["BraTS20_Training_003"]
    # Each bad file: a failed record naming the file and the reason.
    reasons = {
        case: (records[case]["error"]["file"], records[case]["error"]["reason"])
        for case in records
        if records[case]["status"] == "failed"
    }
    assert reasons["BraTS20_Training_004"][0] == "BraTS20_Training_004.nii.gz"
    assert "differs from the truth (24, 24, 16)" in reasons["BraTS20_Training_004"][1]
    assert "labels [7]" in reasons["BraTS20_Training_005"][1]
    assert reasons["BraTS20_Training_006"][0] == "BraTS20_Training_006.nii.gz"
    assert (
        "truncated" in reasons["BraTS20_Training_006"][1]
        or "gzip" in reasons["BraTS20_Training_006"][1]
    )
    assert reasons["BraTS20_Training_099"] == (
        "BraTS20_Training_099.nii.gz",
        "no ground truth has this case id",
    )
    assert (result.cases, result.done) == (6, 3) and len(result.failed) == 4
    # The nightly job's outputs, _SUCCESS vouching for these records.
    assert all((out / name).exists() for name in (*REPORT_FILES, "_SUCCESS"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["detection"]["WT"] == {"tp": 4, "fp": 1, "fn": 2}
    assert summary["notes"] == [{"case_id": "BraTS20_Training_003", "notes": MISSING_PREDICTION}]
    assert summary["regions"]["ET"]["lesion_dice"]["n"] == 3
    page = (out / "report.html").read_text()
    assert "Lesion detection" in page and "lesion-wise, BraTS 2023" in page
    assert page.count("<img") == 4 + 3  # two box-plot pairs; the 3 scored cases' thumbnails


@pytest.mark.integration
def test_a_forced_scheme_and_lesion_settings(folders, ray_session, tmp_path):
    truth, pred, _ = folders
    out = tmp_path / "forced"
    evaluate(
        EvaluateConfig(pred=str(pred), truth=str(truth), out=str(out), label_scheme="brats2023")
    )
    records = _records(out)
    # The truth writes ET as 4, which BraTS 2023 does not have: never read as ET.
    assert "labels [4]" in records["BraTS20_Training_001"]["error"]["reason"]
    assert "brats2023 scheme [0, 1, 2, 3]" in records["BraTS20_Training_001"]["error"]["reason"]
    # Metastasis-style settings keep the satellite's core-free edema and every speck.
    loose = tmp_path / "loose"
    code = run_evaluate(
        ["--pred", str(pred), "--truth", str(truth), "--out", str(loose), "--dilation", "1",
         "--min-lesion-mm3", "2", "--penalty-mm", "100"]
    )  # fmt: skip
    assert code == 0
    record = _records(loose)["BraTS20_Training_003"]
    assert record["settings"]["dilation"] == 1 and record["settings"]["penalty_mm"] == 100.0
    assert record["metrics"]["lesion_hd95_WT"] == 100.0


@pytest.mark.integration
def test_predictions_and_truth_on_s3(folders, ray_session, s3_bucket, s3_endpoint, tmp_path):
    truth, pred, _ = folders
    fs = s3fs_client(s3_endpoint)
    bucket = s3_bucket.removeprefix("s3://")
    fs.put(str(truth), f"{bucket}/truth", recursive=True)
    fs.put(str(pred), f"{bucket}/pred", recursive=True)
    evaluate(EvaluateConfig(pred=str(pred), truth=str(truth), out=str(tmp_path / "local")))
    result = evaluate(
        EvaluateConfig(
            pred=f"{s3_bucket}/pred",
            truth=f"{s3_bucket}/truth",
            out=f"{s3_bucket}/eval",
            s3_endpoint=s3_endpoint,
        )
    )
    assert (result.cases, result.done) == (6, 3)
    listed = {p.rsplit("/", 1)[-1] for p in fs.ls(f"{bucket}/eval")}
    assert listed == {*REPORT_FILES, "_SUCCESS", "records"}
    remote = json.loads(fs.cat_file(f"{bucket}/eval/summary.json"))
    local = json.loads((tmp_path / "local" / "summary.json").read_text())
    assert remote["regions"] == local["regions"] and remote["detection"] == local["detection"]
    record = json.loads(fs.cat_file(f"{bucket}/eval/records/BraTS20_Training_002.json"))
    assert record["metrics"] == _records(tmp_path / "local")["BraTS20_Training_002"]["metrics"]


# --- label schemes -------------------------------------------------------------------------


def _post_treatment(root: Path, case: str, truth_seg: np.ndarray, pred_seg: np.ndarray):
    _save(root / "truth" / case / f"{case}-seg.nii.gz", truth_seg)
    _save(root / "truth" / case / f"{case}-t2f.nii.gz", (truth_seg * 100 + 50).astype(np.int16))
    _save(root / "pred" / f"{case}.nii.gz", pred_seg)


@pytest.mark.integration
def test_a_cavity_without_enhancing_tumour_scores_rc_not_et(ray_session, tmp_path):
    """The post-treatment case ({0, 2, 4}) the per-file guess scored as a perfect ET."""
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:16, 4:16, 2:12] = 2  # edema
    seg[7:13, 7:13, 4:10] = 4  # the resection cavity inside it
    pred = seg.copy()
    pred[7:13, 7:10, 4:10] = 2  # half the cavity predicted as edema
    _post_treatment(tmp_path, "BraTS-GLI-00001-100", seg, pred)
    out = tmp_path / "eval"
    evaluate(
        EvaluateConfig(pred=str(tmp_path / "pred"), truth=str(tmp_path / "truth"), out=str(out))
    )
    record = _records(out)["BraTS-GLI-00001-100"]
    assert record["label_scheme"] == "gli2024"  # a 4 under BraTS-GLI names
    metrics = record["metrics"]
    cavity, found = int((seg == 4).sum()), int(((seg == 4) & (pred == 4)).sum())
    assert metrics["dice_RC"] == pytest.approx(2 * found / (cavity + found))  # by hand: 2/3
    assert metrics["dice_ET"] == 1.0 and metrics["hd95_ET"] == 0.0  # no ET on either side
    assert metrics["dice_TC"] == 1.0  # no core either: the cavity is no tumour core
    edema = (seg == 2) | (seg == 4)
    wt_truth, wt_pred = seg == 2, pred == 2
    assert metrics["dice_WT"] == pytest.approx(
        2 * (wt_truth & wt_pred).sum() / (wt_truth.sum() + wt_pred.sum())
    )
    assert edema.sum() > wt_truth.sum()  # WT leaves the cavity out
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["regions"]) == {"WT", "TC", "ET", "NETC", "SNFH", "RC"}
    assert summary["label_scheme"]["name"] == "gli2024"


@pytest.mark.integration
def test_a_cohort_the_names_and_labels_leave_open_is_refused_before_scoring(ray_session, tmp_path):
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:8, 4:8, 2:6] = 4
    _post_treatment(tmp_path, "BraTS-XYZ-00001-000", seg, seg)
    out = tmp_path / "eval"
    config = EvaluateConfig(
        pred=str(tmp_path / "pred"), truth=str(tmp_path / "truth"), out=str(out)
    )
    with pytest.raises(EvaluateError) as caught:
        evaluate(config)
    assert "--label-scheme" in str(caught.value) and "gli2024" in str(caught.value)
    assert not (out / "records").exists()  # nothing scored wrongly


@pytest.mark.integration
def test_predictions_in_another_scheme_than_the_truth_stop_the_run_naming_both(
    ray_session, tmp_path
):
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:8, 4:8, 2:6] = 1
    _post_treatment(tmp_path, "BraTS-PED-00001-000", seg, seg)
    # A segment job's output: the masks in masks/, its summary.json beside them.
    (tmp_path / "pred").rename(tmp_path / "masks")
    (tmp_path / "pred").mkdir()
    (tmp_path / "masks").rename(tmp_path / "pred" / "masks")
    summary = json.dumps({"label_scheme": {"name": "gli2024"}})
    (tmp_path / "pred" / "summary.json").write_text(summary)
    config = EvaluateConfig(
        pred=str(tmp_path / "pred" / "masks"),
        truth=str(tmp_path / "truth"),
        out=str(tmp_path / "eval"),
        label_scheme="ped2024",
    )
    with pytest.raises(EvaluateError) as caught:
        evaluate(config)
    assert "gli2024" in str(caught.value) and "ped2024" in str(caught.value)


@pytest.mark.integration
def test_a_case_with_two_predictions_fails_naming_both_and_a_segment_output_is_read(
    ray_session, tmp_path
):
    """--pred at a ``brats segment`` output: the masks are the predictions, never the maps
    beside them; a case with a second label file (postprocessed/) is a failed record naming
    both files, not an empty prediction, and the other case is scored."""
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:12, 4:12, 2:8] = 2
    seg[6:10, 6:10, 3:7] = 3
    for case in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"):
        _save(tmp_path / "truth" / case / f"{case}-seg.nii.gz", seg)
        _save(tmp_path / "pred" / "masks" / f"{case}.nii.gz", seg)
        _save(tmp_path / "pred" / "probabilities" / f"{case}.nii.gz", seg.astype(np.float32))
        _save(tmp_path / "pred" / "uncertainty" / f"{case}.nii.gz", seg.astype(np.float32))
    _save(tmp_path / "pred" / "postprocessed" / "BraTS-GLI-00002-000.nii.gz", seg)
    out = tmp_path / "eval"
    result = evaluate(
        EvaluateConfig(pred=str(tmp_path / "pred"), truth=str(tmp_path / "truth"), out=str(out))
    )
    records = _records(out)
    scored = records["BraTS-GLI-00001-000"]
    assert scored["status"] == "done" and scored["metrics"]["dice_WT"] == 1.0
    assert not scored.get("notes")
    refused = records["BraTS-GLI-00002-000"]
    assert refused["status"] == "failed" and not refused.get("metrics")
    assert refused["error"]["reason"] == (
        "predictions: two label files: masks/BraTS-GLI-00002-000.nii.gz and "
        "postprocessed/BraTS-GLI-00002-000.nii.gz"
    )
    assert (result.cases, result.done, result.missing_predictions) == (2, 1, [])
    assert [f["case_id"] for f in result.failed] == ["BraTS-GLI-00002-000"]
    assert "case BraTS-GLI-00002-000: predictions: two label files" in result.failed[0]["error"]
