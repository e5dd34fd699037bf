"""Tests for brats.report: table, summary, deterministic files, HTML, thumbnails, S3."""

from __future__ import annotations

import base64
import io
import json
import random
import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from matplotlib.image import imread

from brats.metrics import METRIC_KEYS, evaluate_case, volume_diagonal
from brats.report import (
    EMPTY_RULES,
    REPORT_FILES,
    TABLE_SCHEMA,
    ReportError,
    axial_slice_with_most_tumor,
    report_table,
    summarize,
    write_report,
)
from brats.storage import resolve
from tests.conftest import s3fs_client

VERSION_A = "a" * 64
VERSION_B = "b" * 64
REGIONS = ("WT", "TC", "ET")


def metrics(dice_wt: float, *, dice_tc: float = 0.7, dice_et: float = 0.6, hd: float = 4.0):
    values = dict.fromkeys(METRIC_KEYS, 0.5)
    values.update({"dice_WT": dice_wt, "dice_TC": dice_tc, "dice_ET": dice_et})
    values.update({"hd95_WT": hd, "hd95_TC": hd + 1.0, "hd95_ET": hd + 2.0})
    return values


def done(case_id: str, case_metrics: dict | None, version: str = VERSION_A) -> dict:
    return {
        "case_id": case_id,
        "status": "done",
        "model_version": version,
        "mask": f"masks/{case_id}.nii.gz",
        "convention": "brats2020",
        "input_checksums": {f"{case_id}_flair.nii.gz": "0" * 64},
        "shape": [16, 16, 8],
        "spacing": [1.0, 1.0, 1.0],
        "timings": {"read_s": 0.5, "predict_s": 2.0, "write_s": 0.25},
        "region_volumes_ml": {"WT": 12.5, "TC": 4.0, "ET": 1.5},
        "metrics": case_metrics,
        "error": None,
        "created": "2026-11-25T12:00:00+00:00",
        "extra_key_from_a_newer_job": {"ignored": True},
    }


def failed(case_id: str, file: str | None, reason: str) -> dict:
    where = f"{file}: " if file else ""
    return {
        "case_id": case_id,
        "status": "failed",
        "model_version": VERSION_A,
        "mask": None,
        "convention": None,
        "input_checksums": {},
        "shape": None,
        "spacing": None,
        "timings": {"read_s": 0.1, "predict_s": 0.0, "write_s": 0.0},
        "region_volumes_ml": None,
        "metrics": None,
        "error": {"file": file, "reason": reason, "message": f"case {case_id}: {where}{reason}"},
        "created": "2026-11-25T12:00:01+00:00",
    }


def cohort() -> list[dict]:
    """Five cases with ground truth, one without, one failed; two model versions."""
    return [
        done("case_e", metrics(0.91, dice_tc=0.80, dice_et=0.70, hd=3.0)),
        done("case_a", metrics(0.42, dice_tc=0.10, dice_et=0.00, hd=40.0)),
        done("case_c", metrics(0.77, dice_tc=0.66, dice_et=1.00, hd=7.5), version=VERSION_B),
        done("case_b", metrics(0.63, dice_tc=0.55, dice_et=0.35, hd=12.0)),
        done("case_d", metrics(0.85, dice_tc=0.71, dice_et=0.52, hd=5.0)),
        done("case_nogt", None),
        failed("case_bad", "case_bad_t1.nii.gz", "truncated gzip"),
    ]


def tiny_volumes(tumour_slice: int, with_truth: bool = True):
    """A (16, 16, 8) image with a three-class tumour that is largest on ``tumour_slice``."""
    image = np.zeros((16, 16, 8), dtype=np.float32)
    image[2:14, 2:14, :] = 1.0 + np.linspace(0, 1, 12)[:, None, None]
    pred = np.zeros(image.shape, dtype=np.uint8)
    pred[4:12, 4:12, :] = 2
    pred[6:10, 6:10, :] = 1
    pred[7:9, 7:9, :] = 3
    pred[:, :, [s for s in range(8) if s != tumour_slice]] = 0
    pred[5:7, 5:7, 0] = 2  # a smaller tumour elsewhere
    truth = None
    if with_truth:
        truth = np.zeros(image.shape, dtype=np.uint8)
        truth[3:11, 5:13, :] = 2
    return image, pred, truth


def html_of(written: dict[str, str]) -> str:
    with open(written["report.html"], encoding="utf-8") as fh:
        return fh.read()


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_table_columns_and_rows():
    table = report_table(cohort())
    assert table.schema == TABLE_SCHEMA
    assert table.column_names[:7] == [
        "case_id",
        "status",
        "model_version",
        "convention",
        "mask",
        "error_file",
        "error_reason",
    ]
    assert set(METRIC_KEYS) <= set(table.column_names)
    for name in ("volume_WT_ml", "volume_TC_ml", "volume_ET_ml", "read_s", "predict_s"):
        assert name in table.column_names
    rows = {row["case_id"]: row for row in table.to_pylist()}
    assert table.column("case_id").to_pylist() == sorted(rows)

    bad = rows["case_bad"]
    assert (bad["status"], bad["error_file"], bad["error_reason"]) == (
        "failed",
        "case_bad_t1.nii.gz",
        "truncated gzip",
    )
    assert bad["error_message"] == "case case_bad: case_bad_t1.nii.gz: truncated gzip"
    assert bad["mask"] is None and bad["volume_WT_ml"] is None
    assert all(bad[key] is None for key in METRIC_KEYS)

    nogt = rows["case_nogt"]
    assert nogt["status"] == "done" and nogt["error_reason"] is None
    assert all(nogt[key] is None for key in METRIC_KEYS)
    assert (nogt["volume_WT_ml"], nogt["predict_s"]) == (12.5, 2.0)

    c = rows["case_c"]
    assert (c["dice_WT"], c["dice_ET"], c["hd95_TC"]) == (0.77, 1.0, 8.5)
    assert (c["model_version"], c["convention"], c["mask"]) == (
        VERSION_B,
        "brats2020",
        "masks/case_c.nii.gz",
    )
    assert c["created"] == "2026-11-25T12:00:00+00:00"
    assert report_table([]).num_rows == 0


def test_summary_statistics_match_numpy():
    records = cohort()
    summary = summarize(records)
    assert summary["counts"] == {"cases": 7, "done": 6, "failed": 1, "with_ground_truth": 5}
    graded = [r["metrics"] for r in records if r["metrics"] is not None]
    for region in REGIONS:
        for metric in ("dice", "hd95"):
            values = np.array([m[f"{metric}_{region}"] for m in graded])
            stats = summary["regions"][region][metric]
            assert stats["n"] == 5
            assert stats["mean"] == pytest.approx(np.mean(values))
            assert stats["median"] == pytest.approx(np.median(values))
            assert stats["std"] == pytest.approx(np.std(values))
            assert (stats["min"], stats["max"]) == (values.min(), values.max())
    assert summary["failed"] == [
        {"case_id": "case_bad", "file": "case_bad_t1.nii.gz", "reason": "truncated gzip"}
    ]
    assert summary["model_versions"] == [VERSION_A, VERSION_B]
    assert summary["empty_rules"] == EMPTY_RULES


def test_empty_rules_state_what_the_metrics_compute():
    empty = np.zeros((4, 5, 6), dtype=np.uint8)
    tumour = empty.copy()
    tumour[1:3, 1:3, 1:3] = 3
    spacing = (1.0, 2.0, 0.5)
    both_empty = evaluate_case(empty, empty, spacing)
    one_empty = evaluate_case(empty, tumour, spacing)
    assert (both_empty["dice_ET"], both_empty["hd95_ET"]) == (1.0, 0.0)
    assert one_empty["dice_ET"] == 0.0
    assert one_empty["hd95_ET"] == pytest.approx(volume_diagonal(empty.shape, spacing))
    assert "Both masks empty (nothing predicted, nothing there): Dice 1 and HD95 0" in EMPTY_RULES
    assert "One mask empty: Dice 0 and HD95 = the volume diagonal in mm" in EMPTY_RULES


def test_never_nan(tmp_path):
    poisoned = metrics(float("nan"), dice_tc=float("inf"))
    records = [done("x1", poisoned), done("x2", metrics(0.5)), done("x3", None)]
    summary = summarize(records)
    json.dumps(summary, allow_nan=False)
    assert summary["regions"]["WT"]["dice"]["n"] == 1  # the NaN is left out, not averaged
    assert summary["regions"]["TC"]["dice"] == {
        "n": 1,
        "mean": 0.7,
        "median": 0.7,
        "std": 0.0,
        "min": 0.7,
        "max": 0.7,
    }
    table = report_table(records)
    assert table.column("dice_WT").to_pylist() == [None, 0.5, None]

    nothing = summarize([done("y", None), failed("z", None, "no FLAIR")])
    json.dumps(nothing, allow_nan=False)
    assert nothing["regions"] == {r: {"dice": None, "hd95": None} for r in REGIONS}

    written = write_report(records, resolve(str(tmp_path)))

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in summary.json")

    with open(written["summary.json"]) as fh:
        json.load(fh, parse_constant=refuse)


def test_files_are_byte_identical_in_any_record_order(tmp_path):
    records = cohort()
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)
    assert [r["case_id"] for r in shuffled] != [r["case_id"] for r in records]
    first = write_report(records, resolve(str(tmp_path / "one")))
    second = write_report(shuffled, resolve(str(tmp_path / "two")))
    assert sorted(first) == sorted(REPORT_FILES)
    for name in ("report.parquet", "report.csv", "summary.json"):
        with open(first[name], "rb") as a, open(second[name], "rb") as b:
            assert a.read() == b.read(), name
    assert pq.read_table(first["report.parquet"]).equals(report_table(records))
    with open(first["report.csv"]) as fh:
        lines = fh.read().splitlines()
    assert lines[0].startswith('"case_id","status","model_version"')
    assert [line.split(",")[0] for line in lines[1:]] == [
        f'"{c}"' for c in sorted(r["case_id"] for r in records)
    ]
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_csv_cells_never_open_like_a_formula(tmp_path):
    """A file name or reason from the cohort cannot become a spreadsheet formula in the CSV;
    the Parquet report keeps the text as it was."""
    import csv

    hostile = {
        "case_a": ('=HYPERLINK("http://x","y").nii.gz', "+cmd|' /C calc'!A0"),
        "case_b": ("@SUM(1+1)", "-2+3"),
    }
    records = [failed(cid, file, reason) for cid, (file, reason) in hostile.items()]
    records.append(done("fine", metrics(0.8)))
    written = write_report(records, resolve(str(tmp_path)))
    with open(written["report.csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@")), (row["case_id"], value)
    by_id = {r["case_id"]: r for r in rows}
    assert by_id["case_a"]["error_file"] == "'" + hostile["case_a"][0]
    assert by_id["case_b"]["error_file"] == "'@SUM(1+1)"
    table = pq.read_table(written["report.parquet"]).to_pylist()
    kept = {r["case_id"]: r["error_file"] for r in table}
    assert kept["case_a"] == hostile["case_a"][0] and kept["case_b"] == "@SUM(1+1)"


def test_html_escapes_hostile_text(tmp_path):
    hostile_id = '<script>alert("id")</script>'
    records = [
        done(hostile_id, metrics(0.3)),
        done("fine", metrics(0.8)),
        failed("case_x", '<img src=x onerror="alert(1)">', "<script>alert('reason')</script>"),
    ]

    def overlay(case_id: str):
        return tiny_volumes(4)

    page = html_of(write_report(records, resolve(str(tmp_path)), overlay=overlay))
    assert "<script" not in page
    assert "onerror=" not in page.replace("onerror=&quot;", "")
    assert "&lt;script&gt;alert(&quot;id&quot;)&lt;/script&gt;" in page
    assert "&lt;script&gt;alert(&#x27;reason&#x27;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert page.count("<img") == 2 + 2  # two box plots, two thumbnails


def test_html_title_counts_and_versions(tmp_path):
    page = html_of(write_report(cohort(), resolve(str(tmp_path))))
    title = "7 cases, 6 done, 1 failed, 5 with ground truth"
    assert re.search(f"<title>[^<]*{title}</title>", page)
    assert f"<code>{VERSION_A}</code>" in page and f"<code>{VERSION_B}</code>" in page
    assert "Records from 2 model versions" in page
    assert "Dice 1 and HD95 0" in page
    assert page.count('<tr class="failed">') == 1
    assert page.count("<img") == 2  # box plots only: no overlay loader


def test_thumbnails_of_worst_and_best_cases(tmp_path):
    calls: list[str] = []

    def overlay(case_id: str):
        calls.append(case_id)
        return tiny_volumes(5)

    page = html_of(write_report(cohort(), resolve(str(tmp_path)), overlay=overlay, n_thumbnails=2))
    # by dice_WT: a 0.42, b 0.63, c 0.77, d 0.85, e 0.91; the no-ground-truth case never shows
    assert calls == ["case_a", "case_b", "case_e", "case_d"]
    assert page.count("<img") == 2 + 4
    assert page.count("axial slice 5</figcaption>") == 4
    assert "necrotic / non-enhancing core (1)" in page and "enhancing tumor (3)" in page

    thumbnail = imread(io.BytesIO(embedded_pngs(page)[2]))[..., :3]
    r, g, b = (thumbnail[..., i].astype(float) for i in range(3))
    assert np.any(r - g > 0.3), "no necrotic core in red"
    assert np.any(g - r > 0.15), "no edema in green"
    assert np.any((r - b > 0.3) & (g - b > 0.3)), "no enhancing tumour in yellow"
    assert np.any((b - r > 0.5) & (g - r > 0.5)), "no cyan ground-truth outline"


def test_overlay_failure_leaves_a_note(tmp_path):
    def overlay(case_id: str):
        if case_id == "case_a":
            raise FileNotFoundError("s3://user:hunter2@bucket/case_a.nii.gz?X-Amz-Signature=abc")
        if case_id == "case_e":
            image, pred, truth = tiny_volumes(5)
            return image, pred[:, :, :4], truth  # a shape the report must refuse
        return tiny_volumes(5)

    written = write_report(cohort(), resolve(str(tmp_path)), overlay=overlay, n_thumbnails=2)
    assert sorted(written) == sorted(REPORT_FILES)
    page = html_of(written)
    assert page.count("<img") == 2 + 2
    assert "No thumbnail: FileNotFoundError: s3://bucket/case_a.nii.gz" in page
    assert "hunter2" not in page and "Signature" not in page
    assert "No thumbnail: ValueError: image (16, 16, 8) and prediction (16, 16, 4)" in page


def test_no_ground_truth_skips_plots_and_thumbnails(tmp_path):
    def overlay(case_id: str):
        raise AssertionError("no case has metrics: overlay must not be called")

    records = [done("p", None), done("q", None), failed("r", None, "no FLAIR")]
    page = html_of(write_report(records, resolve(str(tmp_path)), overlay=overlay))
    assert "<img" not in page
    assert "No case has ground truth" in page
    assert "Worst and best" not in page


def test_axial_slice_with_most_tumor():
    _, pred, truth = tiny_volumes(6)
    assert axial_slice_with_most_tumor(pred, truth) == 6
    empty = np.zeros_like(pred)
    assert axial_slice_with_most_tumor(empty, truth) == 0  # truth fills every slice: first
    truth[:, :, 3] = 1
    assert axial_slice_with_most_tumor(empty, truth) == 3
    assert axial_slice_with_most_tumor(empty, None) == 4


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ReportError, match="record 1 has no case_id"):
        report_table([done("a", None), {"status": "done"}])
    with pytest.raises(ValueError, match="n_thumbnails"):
        write_report([], resolve(str(tmp_path)), n_thumbnails=-1)
    assert not list(tmp_path.iterdir())


def test_report_over_s3(s3_bucket, s3_endpoint):
    out = resolve(f"{s3_bucket}/runs/r1", s3_endpoint=s3_endpoint)
    written = write_report(cohort(), out, overlay=lambda case_id: tiny_volumes(2))
    assert written == {name: f"{s3_bucket}/runs/r1/{name}" for name in REPORT_FILES}
    fs = s3fs_client(s3_endpoint)
    bucket = s3_bucket.removeprefix("s3://")
    assert sorted(fs.ls(f"{bucket}/runs/r1")) == sorted(
        f"{bucket}/runs/r1/{n}" for n in REPORT_FILES
    )
    summary = json.loads(fs.cat_file(f"{bucket}/runs/r1/summary.json"))
    assert summary == summarize(cohort())
    page = fs.cat_file(f"{bucket}/runs/r1/report.html").decode()
    assert page.count("<img") == 2 + 5


def test_imports_neither_ray_nor_tensorflow():
    code = (
        "import sys, brats.report\n"
        "loaded = {'ray', 'tensorflow', 'keras', 'matplotlib.pyplot'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
