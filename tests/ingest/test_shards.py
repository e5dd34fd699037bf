"""Shards and the cohort manifest (brats.ingest.shards) in the shared status words, with
rows and manifests of older versions (which said "ok" for done) still read."""

from __future__ import annotations

import json

import numpy as np

from brats.errors import CaseError
from brats.ingest.prepare import PreparedCase, PreprocessConfig
from brats.ingest.rows import failure_row, prepared_to_row, row_to_prepared
from brats.ingest.shards import (
    MANIFEST,
    MANIFEST_FORMAT,
    SHARD_COLUMNS,
    build_manifest,
    load_manifest,
    read_shard,
    shard_keys,
    write_case_shard,
    write_manifest,
)
from brats.io.cases import Case, Discovery, Naming
from brats.storage import resolve
from brats.volume.geometry import CropBox


def prepared(case_id: str) -> PreparedCase:
    image = np.arange(2 * 4 * 4 * 3, dtype=np.float16).reshape(2, 4, 4, 3)
    label = np.zeros((4, 4, 3), np.uint8)
    label[1:3, 1:3, 1] = 2
    crop = CropBox((1, 1, 1), (5, 5, 4), (6, 6, 5))
    return PreparedCase(
        case_id, image, label, crop, np.eye(4), (1.0, 1.0, 2.0), "brats2020",
        {f"{case_id}_flair.nii.gz": "0" * 64},
    )  # fmt: skip


def entries(out, first_status: str) -> list[dict]:
    good = prepared_to_row(prepared("Good_1"))
    good["status"] = first_status
    bad = failure_row("Bad_1", CaseError("Bad_1", "Bad_1_t1.nii.gz", "truncated"), 2, "float16")
    return [write_case_shard(row, out=out) for row in (good, bad)]


def manifest_of(out, first_status: str) -> dict:
    found = Discovery(cases=[Case(i, {}, None, Naming.BRATS2020) for i in ("Good_1", "Bad_1")])
    cohort = resolve("cohort-not-read")
    return build_manifest(entries(out, first_status), found, cohort, PreprocessConfig())


def test_new_rows_say_done_and_the_manifest_counts_done(tmp_path):
    out = resolve(str(tmp_path))
    assert prepared_to_row(prepared("Good_1"))["status"] == "done"
    manifest = manifest_of(out, "done")
    assert manifest["counts"] == {"found": 2, "done": 1, "failed": 1, "rejected": 0}
    assert [c["case_id"] for c in manifest["cases"]] == ["Good_1"]
    (failure,) = manifest["failures"]
    assert failure == {
        "case_id": "Bad_1",
        "file": "Bad_1_t1.nii.gz",
        "reason": "case Bad_1: Bad_1_t1.nii.gz: truncated",
    }


def test_a_row_saying_ok_is_written_as_done(tmp_path):
    out = resolve(str(tmp_path))
    good, bad = entries(out, "ok")
    assert (good["status"], bad["status"]) == ("done", "failed")
    assert good["shard"] == "shards/Good_1.parquet" and bad["shard"] == ""
    assert "status" not in SHARD_COLUMNS  # shards never stored a status word
    (row,) = read_shard(out, good["shard"])
    back = row_to_prepared(row)
    assert back.case_id == "Good_1" and np.array_equal(back.image, prepared("Good_1").image)
    assert manifest_of(out, "ok")["counts"]["done"] == 1


def test_a_manifest_written_before_reads_its_ok_count_as_done(tmp_path):
    out = resolve(str(tmp_path))
    write_case_shard(prepared_to_row(prepared("Good_1")), out=out)
    old = manifest_of(out, "done")
    old["counts"] = {"found": 2, "ok": 1, "failed": 1, "rejected": 0}  # as older versions wrote
    (tmp_path / MANIFEST).write_text(json.dumps(old))
    loaded = load_manifest(out)
    assert loaded["format"] == MANIFEST_FORMAT
    assert loaded["counts"] == {"found": 2, "done": 1, "failed": 1, "rejected": 0}
    assert list(loaded["counts"]) == ["found", "done", "failed", "rejected"]
    assert shard_keys(out, ["Good_1"]) == {"Good_1": "shards/Good_1.parquet"}


def test_a_new_manifest_reads_back_unchanged(tmp_path):
    out = resolve(str(tmp_path))
    manifest = manifest_of(out, "done")
    write_manifest(out, manifest)
    assert load_manifest(out) == manifest
