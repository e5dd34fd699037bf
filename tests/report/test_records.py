"""One record type (brats.report.records): today's schema, and records written before it.

``tests/data/records_v1/`` holds a done and a failed record exactly as the segmentation job
wrote them before records had a schema version (brats 0.1.0, 2026-11-25).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from brats.report.records import (
    RECORD_SCHEMA,
    CaseFailure,
    CaseRecord,
    RecordError,
    read_record,
    read_records,
    record_key,
    records_digest,
    success_matches,
    write_record,
    write_success,
)
from brats.storage import resolve

V1 = Path(__file__).resolve().parents[1] / "data" / "records_v1"


def v1(name: str) -> tuple[bytes, dict]:
    raw = (V1 / f"{name}.json").read_bytes()
    return raw, json.loads(raw)


def test_a_schema_1_record_reads_and_writes_back_byte_for_byte():
    raw, document = v1("done")
    record = CaseRecord.from_dict(document)
    assert record.schema == 1 and "schema" not in document
    assert record.done and record.case_id == "BraTS20_Training_001"
    assert record.metrics is not None and record.metrics["hd95_WT"] > 0
    assert record.to_dict() == document
    assert record.to_json() == raw  # the very bytes the old job wrote
    settings = document["settings"]
    assert record.is_done_for(document["model_version"], settings)
    assert not record.is_done_for("0" * 64, settings)
    assert not record.is_done_for(document["model_version"], {**settings, "flip_tta": False})


def test_a_failed_schema_1_record_keeps_its_error():
    raw, document = v1("failed")
    record = CaseRecord.from_dict(document)
    assert not record.done and record.mask is None
    assert record.error == CaseFailure(
        "Bad_nan_t1.nii.gz",
        "20 non-finite (NaN/Inf) voxels",
        "case Bad_nan: Bad_nan_t1.nii.gz: 20 non-finite (NaN/Inf) voxels",
    )
    assert record.to_json() == raw
    assert not record.is_done_for(document["model_version"], document["settings"])


def test_new_records_carry_the_schema_and_round_trip():
    failure = CaseFailure(None, "no FLAIR", "case c1: no FLAIR")
    record = CaseRecord.failed("c1", failure, model_version="a" * 64, settings={"x": 1})
    document = json.loads(record.to_json())
    assert document["schema"] == RECORD_SCHEMA == 2
    assert document["error"] == {"file": None, "reason": "no FLAIR", "message": "case c1: no FLAIR"}
    assert CaseRecord.from_dict(document) == record


def test_keys_from_a_newer_job_are_kept():
    _, document = v1("done")
    newer = {**document, "lesion_counts": {"WT": 2}}
    record = CaseRecord.from_dict(newer)
    # A record from before label schemes keeps its "convention" as it was, read as the scheme.
    assert record.extra == {"lesion_counts": {"WT": 2}, "convention": "brats2020"}
    assert record.label_scheme == "brats2020"
    assert record.to_dict() == newer


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"case_id": "../x"}, "invalid case id"),
        ({"status": "maybe"}, "not done/failed"),
        ({"schema": RECORD_SCHEMA + 1}, "reads 1..2"),
        ({"schema": "2"}, "reads 1..2"),
        ({"error": "broken"}, "malformed error"),
        ({"error": None, "status": "failed"}, "only one, has an error"),
    ],
)
def test_what_is_not_a_record_is_refused(change, message):
    _, document = v1("done")
    with pytest.raises(RecordError, match=message):
        CaseRecord.from_dict({**document, **change})


def test_a_record_needs_its_identity():
    _, document = v1("done")
    del document["model_version"], document["settings"]
    with pytest.raises(RecordError, match="has no model_version, settings"):
        CaseRecord.from_dict(document)
    with pytest.raises(RecordError, match="JSON object"):
        CaseRecord.from_dict([])  # type: ignore[arg-type]


def test_the_digest_is_the_one_schema_1_success_markers_hold():
    documents = [v1("failed")[1], v1("done")[1]]
    records = [CaseRecord.from_dict(d) for d in documents]
    # How _SUCCESS was computed before records had a schema version.
    blob = json.dumps(sorted(documents, key=lambda r: r["case_id"]), sort_keys=True).encode()
    assert records_digest(records) == hashlib.sha256(blob).hexdigest()
    assert records_digest(reversed(records)) == records_digest(records)


def test_the_store_skips_what_is_not_a_readable_record(tmp_path):
    out = resolve(str(tmp_path))
    good = CaseRecord.from_dict(v1("done")[1])
    write_record(out, good)
    folder = tmp_path / "records"
    (folder / "notes copy.json").write_text("{}")  # not a case id
    (folder / "Broken.json").write_text("{not json")
    (folder / "Other.json").write_bytes(good.to_json())  # names another case
    (folder / "Huge.json").write_bytes(b" " * (1 << 20) + b"{}")
    assert read_records(out) == {good.case_id: good}
    assert read_record(out, good.case_id) == good
    assert read_record(out, "Broken") is None and read_record(out, "Missing") is None
    assert (tmp_path / record_key(good.case_id)).read_bytes() == v1("done")[0]


def test_success_vouches_for_exactly_the_records(tmp_path):
    out = resolve(str(tmp_path))
    records = [CaseRecord.from_dict(v1(n)[1]) for n in ("done", "failed")]
    assert not success_matches(out, records)
    write_success(out, model_version="a" * 64, cases=2, records=records)
    assert success_matches(out, records)
    assert not success_matches(out, records[:1])
    assert json.loads((tmp_path / "_SUCCESS").read_text())["cases"] == 2
