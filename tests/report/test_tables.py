"""The report's tables and summary (brats.report.tables): columns, statistics, determinism."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest

from brats.report.tables import (
    EMPTY_RULES,
    SUMMARY_METRICS,
    TABLE_SCHEMA,
    VOLUME_COLUMNS,
    report_row,
    report_table,
    summarize,
    table_schema,
    volume_columns,
)
from brats.report.write import REPORT_FILES, write_report
from brats.storage import resolve
from brats.volume.labels import DEFAULT, GLI2024, PED2024, scheme_from_dict
from brats.volume.metrics import METRIC_KEYS, evaluate_case, metric_keys, volume_diagonal
from tests.helpers import (
    VERSION_A,
    VERSION_B,
    done_record,
    failed_record,
    report_cohort,
    report_metrics,
)
from tests.report.scheme_records import scheme_record

REGIONS = ("WT", "TC", "ET")


def test_table_columns_and_rows():
    table = report_table(report_cohort())
    assert table.schema == TABLE_SCHEMA
    assert table.column_names[:7] == [
        "case_id",
        "status",
        "model_version",
        "label_scheme",
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
    assert (c["model_version"], c["label_scheme"], c["mask"]) == (
        VERSION_B,
        "brats2020",
        "masks/case_c.nii.gz",
    )
    assert c["created"] == "2026-11-25T12:00:00+00:00"
    assert report_table([]).num_rows == 0


def test_summary_statistics_match_numpy():
    records = report_cohort()
    summary = summarize(records)
    assert summary["counts"] == {"cases": 7, "done": 6, "failed": 1, "with_ground_truth": 5}
    graded = [r.metrics for r in records if r.metrics is not None]
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
    poisoned = report_metrics(float("nan"), dice_tc=float("inf"))
    records = [
        done_record("x1", poisoned),
        done_record("x2", report_metrics(0.5)),
        done_record("x3", None),
    ]
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

    nothing = summarize([done_record("y", None), failed_record("z", None, "no FLAIR")])
    json.dumps(nothing, allow_nan=False)
    assert nothing["regions"] == {r: dict.fromkeys(SUMMARY_METRICS) for r in REGIONS}
    assert nothing["detection"] == {r: {"tp": 0, "fp": 0, "fn": 0} for r in REGIONS}

    written = write_report(records, resolve(str(tmp_path)))

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in summary.json")

    with open(written["summary.json"]) as fh:
        json.load(fh, parse_constant=refuse)


def test_files_are_byte_identical_in_any_record_order(tmp_path):
    records = report_cohort()
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)
    assert [r.case_id for r in shuffled] != [r.case_id for r in records]
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
        f'"{c}"' for c in sorted(r.case_id for r in records)
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
    records = [failed_record(cid, file, reason) for cid, (file, reason) in hostile.items()]
    records.append(done_record("fine", report_metrics(0.8)))
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


# --- label schemes ---------------------------------------------------------------------


def test_the_default_scheme_is_brats_glioma_and_the_summary_says_so():
    records = report_cohort()
    assert table_schema() == table_schema(DEFAULT) == TABLE_SCHEMA
    assert VOLUME_COLUMNS == volume_columns("brats2023") == tuple(f"volume_{r}_ml" for r in REGIONS)
    assert report_table(records).equals(report_table(records, scheme=DEFAULT))
    summary = summarize(records)
    assert summary == summarize(records, scheme="brats2023")
    assert list(summary["regions"]) == list(summary["detection"]) == list(REGIONS)
    assert summary["label_scheme"]["name"] == "brats2023"
    assert summary["label_scheme"]["regions"] == {"WT": ["NETC", "SNFH", "ET"],
                                                  "TC": ["NETC", "ET"], "ET": ["ET"]}  # fmt: skip


def test_a_gli2024_report_has_resection_cavity_columns_and_statistics(tmp_path):
    records = [
        scheme_record("g1", GLI2024, 0.9),
        scheme_record("g2", GLI2024, 0.5),
        scheme_record("g3", GLI2024, None),
        failed_record("g4", None, "no FLAIR"),
    ]
    table = report_table(records, scheme=GLI2024)
    assert table.schema == table_schema(GLI2024) != TABLE_SCHEMA
    for column in ("dice_RC", "hd95_RC", "lesion_dice_RC", "dice_class4", "volume_RC_ml"):
        assert column in table.column_names and column not in TABLE_SCHEMA.names, column
    assert set(metric_keys(GLI2024)) <= set(table.column_names)
    assert table.column("dice_RC").to_pylist() == [0.9, 0.5, None, None]
    assert table.column("volume_RC_ml").to_pylist() == [6.0, 6.0, 6.0, None]
    assert table.column("label_scheme").to_pylist() == ["gli2024"] * 3 + [None]

    summary = summarize(records, scheme=GLI2024)
    assert list(summary["regions"]) == ["WT", "TC", "ET", "NETC", "SNFH", "RC"]
    rc = summary["regions"]["RC"]["dice"]
    assert (rc["n"], rc["mean"], rc["min"], rc["max"]) == (2, pytest.approx(0.7), 0.5, 0.9)
    assert summary["detection"]["RC"] == {"tp": 2, "fp": 0, "fn": 0}
    assert summary["label_scheme"]["name"] == "gli2024"
    assert scheme_from_dict(summary["label_scheme"]) == GLI2024

    written = write_report(records, resolve(str(tmp_path)), scheme=GLI2024)
    with open(written["summary.json"]) as fh:
        assert json.load(fh)["label_scheme"]["regions"]["RC"] == ["RC"]
    assert pq.read_table(written["report.parquet"]).equals(table)
    with open(written["report.csv"]) as fh:
        assert '"dice_RC"' in fh.readline()


def test_a_ped2024_summary_is_in_its_six_regions():
    records = [scheme_record("p1", PED2024, 0.8), scheme_record("p2", PED2024, 0.6)]
    summary = summarize(records, scheme=PED2024)
    regions = ["WT", "TC", "ET", "NETC", "CC", "ED"]
    assert list(summary["regions"]) == list(summary["detection"]) == regions
    assert summary["regions"]["CC"]["dice"]["mean"] == pytest.approx(0.7)
    assert summary["label_scheme"]["name"] == "ped2024"
    assert summary["label_scheme"]["regions"]["TC"] == ["ET", "NETC", "CC"]
    assert report_table(records, scheme=PED2024).column("volume_ED_ml").to_pylist() == [6.0, 6.0]
    # The same records read as BraTS glioma have no figures for CC or ED to show.
    assert "CC" not in summarize(records)["regions"]


def test_uncertainty_columns_and_the_cases_to_review_first():
    from brats.report.tables import UNCERTAINTY_COLUMNS, review_first

    records = report_cohort()
    scores = {"case_e": 0.2, "case_a": 0.9, "case_c": 0.5, "case_b": 0.9, "case_nogt": 1.3}
    records = [
        replace(r, uncertainty={"score": scores[r.case_id], "agreement": 0.75, "entropy": 0.1,
                                "models": 5})
        if r.case_id in scores else r
        for r in records
    ]  # fmt: skip
    table = report_table(records)
    assert set(UNCERTAINTY_COLUMNS) <= set(table.column_names)
    rows = {r["case_id"]: r for r in table.to_pylist()}
    assert rows["case_a"]["uncertainty"] == 0.9 and rows["case_a"]["fold_agreement"] == 0.75
    assert rows["case_d"]["uncertainty"] is None  # a record from before uncertainty
    order = [r["case_id"] for r in review_first([report_row(r) for r in records], n=4)]
    assert order == ["case_nogt", "case_a", "case_b", "case_c"]  # ties by case id
    summary = summarize(records)
    assert [r["case_id"] for r in summary["review_first"]] == [*order, "case_e"]
    assert summary["review_first"][0] == {"case_id": "case_nogt", "uncertainty": 1.3}
