"""Writing a segmented case's outputs (brats.segment.writer), on real files, without Ray."""

from __future__ import annotations

import os

import pytest

from brats.devtools.synth import SynthConfig, generate_cohort
from brats.ingest.prepare import PreprocessConfig
from brats.ingest.rows import Row, case_to_row, load_and_prepare, row_to_prepared
from brats.io.cases import discover
from brats.report.records import mask_key, read_record, record_key
from brats.report.status import DONE, FAILED
from brats.segment.writer import write_case_outputs
from brats.storage import resolve
from brats.volume.geometry import paste_back
from brats.volume.labels import BRATS2023

CONFIG = SynthConfig(shape=(24, 24, 16), seed=3)


@pytest.fixture(scope="module")
def prepared_row(tmp_path_factory) -> Row:
    """A real case, read from its NIfTI files and prepared as the segment job's rows are."""
    root = tmp_path_factory.mktemp("writer-cohort")
    generate_cohort(root, 1, CONFIG)
    cohort = resolve(str(root))
    case = discover(cohort).cases[0]
    row = load_and_prepare(case_to_row(case), cohort=cohort, config=PreprocessConfig())
    assert row["status"] == DONE
    return row


def predicted(row: Row, version: str, *, extra_edema: bool = False) -> Row:
    """``row`` as the model actor leaves it: its truth as the labels (and, with
    ``extra_edema``, a bigger tumour: a corner of edema too)."""
    prepared = row_to_prepared(row)
    labels = paste_back(prepared.label, prepared.crop)
    if extra_edema:
        labels[:3, :3, :3] = 2
    return {**row, "pred": labels, "predict_s": 1.0, "model_version": version}


def test_a_redone_case_loses_its_old_record_before_its_new_mask_is_written(tmp_path, prepared_row):
    out = resolve(str(tmp_path / "out"))
    case_id = str(prepared_row["case_id"])
    first = write_case_outputs(
        predicted(prepared_row, "v1"), out=out, settings={}, scheme=BRATS2023
    )
    assert first["status"] == DONE and first["written"]
    old = read_record(out, case_id)
    assert old is not None and old.model_version == "v1" and old.is_done_for("v1", {})
    mask = tmp_path / "out" / mask_key(case_id)
    old_mask = mask.read_bytes()

    # Model v2's record cannot be written (a NaN timing: JSON refuses it) after its mask
    # was: the case is failed now, and no old record vouches for the new mask.
    broken = {**predicted(prepared_row, "v2", extra_edema=True), "predict_s": float("nan")}
    again = write_case_outputs(broken, out=out, settings={}, scheme=BRATS2023)
    assert again["status"] == FAILED and not again["written"]
    assert mask.read_bytes() != old_mask  # the new mask is there...
    assert not os.path.exists(tmp_path / "out" / record_key(case_id))  # ...and no record
    assert read_record(out, case_id) is None  # a rerun, with v1 or v2, redoes the case

    def storage_fails(_: str) -> None:
        raise OSError("503 SlowDown")

    # A write that fails before the mask (the fault hook) leaves no record either.
    write_case_outputs(predicted(prepared_row, "v1"), out=out, settings={}, scheme=BRATS2023)
    again = write_case_outputs(
        predicted(prepared_row, "v2"),
        out=out,
        settings={},
        scheme=BRATS2023,
        write_hook=storage_fails,
    )
    assert again["status"] == FAILED and "503 SlowDown" in again["error"]
    assert read_record(out, case_id) is None

    # Written again without a fault: the new record beside the new mask.
    done = write_case_outputs(
        predicted(prepared_row, "v2", extra_edema=True), out=out, settings={}, scheme=BRATS2023
    )
    assert done["status"] == DONE
    new = read_record(out, case_id)
    assert new is not None and new.model_version == "v2"
    assert new.region_volumes_ml["WT"] > old.region_volumes_ml["WT"]
    assert mask.read_bytes() != old_mask
