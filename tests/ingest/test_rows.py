"""The prepared-row schema and the per-case read (brats.ingest.rows), without Ray."""

from __future__ import annotations

import numpy as np
import pytest

from brats.devtools.faults import write_faulty_case
from brats.devtools.synth import SynthConfig, generate_cohort
from brats.errors import CaseError
from brats.ingest.prepare import PreprocessConfig
from brats.ingest.rows import (
    PREPARED_COLUMNS,
    case_to_row,
    failure_row,
    load_and_prepare,
    prepared_to_row,
    row_to_case,
    row_to_prepared,
)
from brats.io.cases import discover
from brats.storage import resolve

CONFIG = SynthConfig(shape=(24, 24, 16), seed=3)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("rows")
    generate_cohort(root, 1, CONFIG)
    write_faulty_case(root, "Bad_nan", "nan", CONFIG)
    return resolve(str(root))


def test_a_case_travels_as_a_row_and_back(cohort):
    for case in discover(cohort).cases:
        assert row_to_case(case_to_row(case)) == case


def test_a_prepared_row_holds_the_whole_case(cohort):
    good = next(c for c in discover(cohort).cases if c.case_id != "Bad_nan")
    row = load_and_prepare(case_to_row(good), cohort=cohort, config=PreprocessConfig())
    assert row["status"] == "done" and row["read_s"] > 0
    assert set(row) == {*PREPARED_COLUMNS, "read_s"}
    prepared = row_to_prepared(row)
    assert prepared.case_id == good.case_id and prepared.label is not None
    assert prepared.image.shape[0] == 4 and prepared.image.dtype == np.float16
    assert prepared.crop.shape == CONFIG.shape
    assert prepared.spacing == pytest.approx(CONFIG.spacing)
    assert len(prepared.header) == 348 and len(prepared.checksums) == 5
    # A second trip through the row schema changes nothing.
    again = row_to_prepared(prepared_to_row(prepared))
    np.testing.assert_array_equal(again.image, prepared.image)
    np.testing.assert_array_equal(again.label, prepared.label)
    assert (again.crop, again.header, again.checksums) == (
        prepared.crop,
        prepared.header,
        prepared.checksums,
    )


def test_a_bad_case_becomes_a_failure_row_that_names_it(cohort):
    bad = next(c for c in discover(cohort).cases if c.case_id == "Bad_nan")
    row = load_and_prepare(case_to_row(bad), cohort=cohort, config=PreprocessConfig())
    assert set(row) == {*PREPARED_COLUMNS, "read_s"}
    assert row["status"] == "failed" and row["error_file"] == "Bad_nan_t1.nii.gz"
    assert row["error"].startswith("case Bad_nan: Bad_nan_t1.nii.gz: ")
    assert "non-finite" in row["error"] and row["image"].shape == (4, 0, 0, 0)
    unlabeled = failure_row("x", CaseError("x", None, "gone"), 3, "float32")
    assert unlabeled["error_file"] == "" and unlabeled["image"].dtype == np.float32
