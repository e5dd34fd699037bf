"""A cohort's spacing (brats.ingest.fingerprint) and the resampling of a training case to it
(brats.ingest.prepare.resample_prepared, through the reader's row function)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brats.devtools.synth import generate_cohort
from brats.ingest.fingerprint import cohort_fingerprint
from brats.ingest.prepare import PreprocessConfig
from brats.ingest.rows import case_to_row, load_and_prepare, row_to_prepared
from brats.io.cases import discover
from brats.io.nifti import Limits
from brats.storage import resolve
from brats.volume.resample import resampled_shape
from tests.helpers import FINE_MM, THICK_MM, mixed_spacing_cohort, spacing_grid

FINE, THICK = FINE_MM, THICK_MM
GRID = spacing_grid()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Three cases at FINE and a fourth (case 4) at THICK."""
    root = tmp_path_factory.mktemp("mixed")
    mixed_spacing_cohort(root)
    return resolve(str(root))


def test_the_fingerprint_reads_one_header_per_case_and_takes_the_median(mixed, tmp_path):
    cases = discover(mixed).cases
    found = cohort_fingerprint(cases, "flair", mixed, Limits())
    assert found.spacings[cases[3].case_id] == pytest.approx(THICK)
    assert found.shapes[cases[0].case_id] == (40, 40, 26)
    assert found.shapes[cases[3].case_id] == (40, 40, 13)
    assert found.target == pytest.approx(FINE) and found.rule == "median"
    assert found.resampled() == [cases[3].case_id]
    assert found.to_dict() == {
        "median": pytest.approx(list(FINE)),
        "target": pytest.approx(list(FINE)),
        "rule": "median",
        "cases_read": 4,
        "cases_resampled": 1,
    }
    given = cohort_fingerprint(cases, "flair", mixed, Limits(), given=THICK)
    assert given.rule == "given" and len(given.resampled()) == 3
    # A header that does not parse leaves its case out (reading it later says why).
    broken = tmp_path / "broken"
    generate_cohort(broken, 2, GRID)
    first = discover(resolve(str(broken))).cases[0]
    with open(first.images["flair"], "wb") as fh:
        fh.write(b"not a nifti")
    left = cohort_fingerprint(
        discover(resolve(str(broken))).cases, "flair", resolve(str(broken)), Limits()
    )
    assert first.case_id not in left.spacings and len(left.spacings) == 1


def test_a_thick_slice_case_is_stored_at_the_cohorts_spacing_over_the_same_anatomy(mixed, tmp_path):
    """Case 4 at THICK, prepared for a FINE cohort: its image and label are on a FINE grid
    of its brain box, placed in the world where the box was, and its label is the anatomy
    case 4 has when it is generated at FINE itself (WT Dice >= 0.85 after 12 -> 6 mm)."""
    config = PreprocessConfig(target_spacing=FINE)
    thick = discover(mixed).cases[3]
    row = load_and_prepare(case_to_row(thick), cohort=mixed, config=config)
    assert row["status"] == "done", row["error"]
    prepared = row_to_prepared(row)
    assert prepared.spacing == FINE and prepared.file_spacing == pytest.approx(THICK)
    assert prepared.file_shape == (40, 40, 13) and prepared.header == b""
    assert json.loads(row["resampled_from"])["shape"] == [40, 40, 13]
    size = prepared.crop.size
    assert prepared.crop.start == (0, 0, 0) and prepared.crop.shape == size
    assert prepared.image.shape == (4, *size) and prepared.image.dtype == np.float16
    assert prepared.label is not None and prepared.label.shape == size
    unresampled = load_and_prepare(case_to_row(thick), cohort=mixed, config=PreprocessConfig())
    box = row_to_prepared(unresampled).crop.size
    assert size == resampled_shape(box, THICK, FINE) and size[2] == 2 * box[2]

    # The same case generated at FINE: its label, where the resampled box sits on its grid.
    again = tmp_path / "fine"
    generate_cohort(again, 1, GRID, start=4)
    fine_cohort = resolve(str(again))
    fine = row_to_prepared(
        load_and_prepare(
            case_to_row(discover(fine_cohort).cases[0]), cohort=fine_cohort, config=config
        )
    )
    assert fine.file_spacing is None and fine.spacing == pytest.approx(FINE)  # not resampled
    full = np.zeros(fine.crop.shape, np.uint8)
    full[fine.crop.slices] = fine.label
    corner = np.linalg.solve(fine.affine, prepared.affine @ np.array([0.0, 0.0, 0.0, 1.0]))[:3]
    start = np.rint(corner).astype(int)
    np.testing.assert_allclose(corner, start, atol=1e-6)  # on the FINE grid's voxels
    placed = full[tuple(slice(a, a + n) for a, n in zip(start, size, strict=True))]
    truth, moved = placed > 0, prepared.label > 0
    assert 2 * (truth & moved).sum() / (truth.sum() + moved.sum()) >= 0.85
    assert set(np.unique(prepared.label)) == set(np.unique(fine.label))


def test_a_case_at_the_target_is_prepared_exactly_as_without_one(mixed):
    case = discover(mixed).cases[0]
    with_target = load_and_prepare(
        case_to_row(case), cohort=mixed, config=PreprocessConfig(target_spacing=FINE)
    )
    without = load_and_prepare(case_to_row(case), cohort=mixed, config=PreprocessConfig())
    assert with_target["resampled_from"] == without["resampled_from"] == ""
    for key in ("image", "label", "affine", "spacing", "crop_start", "source_shape"):
        np.testing.assert_array_equal(with_target[key], without[key])
