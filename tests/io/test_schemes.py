"""Label schemes resolved once per cohort: the flag, the names, the labels across the cohort."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from brats.io.cases import Case, Naming, discover
from brats.io.schemes import (
    SchemeUnresolved,
    cohort_label_values,
    load_scheme,
    resolve_cohort_scheme,
    resolve_scheme,
)
from brats.storage import resolve
from brats.volume.labels import BRATS2023, GLI2024, MEN2023, MET2023, SchemeError


def _case(case_id: str, naming: Naming = Naming.BRATS2023, truth: str = "seg") -> Case:
    sep = "_" if naming is Naming.BRATS2020 or truth == "gtv" else "-"
    return Case(case_id, {}, f"/c/{case_id}/{case_id}{sep}{truth}.nii.gz", naming)


def _never() -> frozenset[int]:
    raise AssertionError("the labels were read although the names decide")


def _values(*values: int):
    return lambda: frozenset(values)


@pytest.mark.parametrize(
    ("cases", "values", "expected"),
    [
        ([_case("BraTS20_Training_001", Naming.BRATS2020)], None, "brats2020"),
        ([_case("BraTS-MEN-RT-0001-1", truth="gtv")], None, "menrt2024"),
        ([_case("BraTS-GLI-00001-000"), _case("BraTS-GLI-00002-000")], (0, 1, 2, 3), "brats2023"),
        ([_case("BraTS-GLI-02000-101")], (0, 1, 2, 3, 4), "gli2024"),
        ([_case("BraTS-MET-00001-000")], (0, 2, 4), "met2024"),
        ([_case("BraTS-PED-00001-000")], (0, 1, 4), "ped2024"),
        ([_case("BraTS-SSA-00001-000")], (0, 1, 2, 3), "brats2023"),
    ],
)
def test_the_names_and_the_cohorts_labels_decide(cases, values, expected):
    labels = _never if values is None else _values(*values)
    assert resolve_scheme(cases, None, labels).scheme.name == expected


@pytest.mark.parametrize(
    ("prefix", "expected", "task"),
    [
        ("BraTS-MET", MET2023, "metastasis"),
        ("BraTS-MEN", MEN2023, "meningioma"),
        ("BraTS-GLI", BRATS2023, "glioma"),
        ("BraTS-SSA", BRATS2023, "glioma"),
    ],
)
def test_a_2023_cohort_is_scored_with_its_challenge_s_lesion_settings(prefix, expected, task):
    """BraTS 2023 metastasis and pre-operative meningioma carry the glioma's labels (no 4) but
    are scored with their own lesion-wise settings (BraTS-2023-Metrics eval.py, by
    challenge_name): the prefix decides, the labels only rule out a 4."""
    cases = [_case(f"{prefix}-00001-000"), _case(f"{prefix}-00002-000"), _case("renamed")]
    resolved = resolve_scheme(cases, None, _values(0, 1, 2, 3))
    assert resolved.scheme is expected and resolved.scheme.lesion_task == task
    assert resolved.reason == "names and labels"


def test_the_2023_metastasis_and_meningioma_schemes_stop_at_their_own_cohorts():
    mixed = [_case("BraTS-MET-00001-000"), _case("BraTS-MEN-00001-000")]
    assert resolve_scheme(mixed, None, _values(0, 1, 2, 3)).scheme is BRATS2023
    men_rt = [_case("BraTS-MEN-RT-0001-1")]  # by its prefix alone, whatever its truth's suffix
    assert resolve_scheme(men_rt, None, _never).scheme.name == "menrt2024"
    with_four = [_case("BraTS-MET-00001-000")]
    assert resolve_scheme(with_four, None, _values(0, 1, 4)).scheme.name == "met2024"
    with pytest.raises(SchemeUnresolved, match="ped2024"):
        resolve_scheme([_case("BraTS-PED-00001-000")], None, _values(0, 1, 2, 3))


def test_folders_named_otherwise_ride_along_with_the_challenges_prefix():
    cases = [_case("BraTS-GLI-00001-100"), _case("Broken_missing"), _case("old-copy")]
    assert resolve_scheme(cases, None, _values(0, 2, 4)).scheme is GLI2024


def test_the_flag_wins_and_nothing_is_read():
    cases = [_case("BraTS-GLI-00001-000")]
    assert resolve_scheme(cases, GLI2024, _never).scheme is GLI2024


def test_a_4_under_2023_names_is_refused_naming_the_flag_and_the_candidates():
    cases = [_case("BraTS-XYZ-00001-000"), _case("BraTS-XYZ-00002-000")]
    with pytest.raises(SchemeUnresolved) as caught:
        resolve_scheme(cases, None, _values(0, 1, 2, 4))
    message = str(caught.value)
    assert "--label-scheme" in message
    assert all(name in message for name in ("gli2024", "met2024", "ped2024"))


def test_a_4_in_a_mixed_glioma_and_metastasis_cohort_is_refused():
    cases = [_case("BraTS-GLI-00001-100"), _case("BraTS-MET-00001-000")]
    with pytest.raises(SchemeUnresolved, match="--label-scheme"):
        resolve_scheme(cases, None, _values(0, 1, 4))


def test_paediatric_without_a_4_could_be_2023_or_2024_so_it_asks():
    with pytest.raises(SchemeUnresolved, match="brats2023 or --label-scheme ped2024"):
        resolve_scheme([_case("BraTS-PED-00001-000")], None, _values(0, 1, 2, 3))


def test_mixed_2020_and_2023_names_ask_for_the_scheme():
    cases = [_case("A", Naming.BRATS2020), _case("BraTS-GLI-00001-000")]
    with pytest.raises(SchemeUnresolved, match="mixes"):
        resolve_scheme(cases, None, _never)


def _write_seg(folder, case_id, values):
    (folder / case_id).mkdir(parents=True)
    data = np.zeros((4, 4, 4), np.uint8)
    data.flat[: len(values)] = values
    for name, array in ((f"{case_id}-t1c.nii.gz", data + 1), (f"{case_id}-seg.nii.gz", data)):
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(folder / case_id / name))


def test_the_label_evidence_is_every_truth_file_of_the_cohort(tmp_path):
    _write_seg(tmp_path, "BraTS-GLI-00001-100", [1, 2])
    _write_seg(tmp_path, "BraTS-GLI-00002-100", [2, 4])  # a cavity, no enhancing tumour
    root = resolve(str(tmp_path))
    found = discover(root)
    assert cohort_label_values(found.cases, root) == {0, 1, 2, 4}
    assert resolve_cohort_scheme(found.cases, root, None).scheme is GLI2024


def test_a_cohort_without_a_4_reads_as_brats2023(tmp_path):
    _write_seg(tmp_path, "BraTS-GLI-00001-000", [1, 2, 3])
    root = resolve(str(tmp_path))
    assert resolve_cohort_scheme(discover(root).cases, root, None).scheme is BRATS2023


def test_load_scheme_takes_a_built_in_name_or_a_json_file(tmp_path):
    assert load_scheme("ped2024").name == "ped2024"  # type: ignore[union-attr]
    assert load_scheme(None) is None
    with pytest.raises(SchemeError, match="unknown label scheme 'brats2019'"):
        load_scheme("brats2019")
    mine = {
        "name": "inhouse",
        "classes": [{"name": "TUMOR", "value": 7}, {"name": "CYST", "value": 9}],
        "regions": {"ALL": ["TUMOR", "CYST"], "CYST": ["CYST"]},
        "decode": [["ALL", "TUMOR"], ["CYST", "CYST"]],
    }
    path = tmp_path / "inhouse.json"
    path.write_text(json.dumps(mine))
    scheme = load_scheme(str(path))
    assert scheme is not None and scheme.disk_values == (0, 7, 9)
    assert scheme.output_regions == ("ALL", "CYST")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"classes": [{"name": "A", "value": 1}, {"name": "B", "value": 1}]}, "values ['1']"),
        ({"regions": {"ALL": ["A", "NOPE"]}}, "unknown classes ['NOPE']"),
        ({"decode": [["XX", "A"]]}, "unknown region 'XX'"),
        ({"decode": [["ALL", "A"]]}, "never paints classes ['B']"),
        ({"colour": 1}, "unknown keys ['colour']"),
        ({"images": ["pet"]}, "images must be distinct names"),
    ],
)
def test_a_bad_user_scheme_names_the_bad_entry(tmp_path, change, named):
    scheme = {
        "name": "mine",
        "classes": [{"name": "A", "value": 1}, {"name": "B", "value": 2}],
        "regions": {"ALL": ["A", "B"], "B": ["B"]},
        "decode": [["ALL", "A"], ["B", "B"]],
    } | change
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(scheme))
    with pytest.raises(SchemeError) as caught:
        load_scheme(str(path))
    assert named in str(caught.value) and "mine.json" in str(caught.value)
