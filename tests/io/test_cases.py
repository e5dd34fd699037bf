import pytest

from brats.errors import InvalidCaseIdError
from brats.io.cases import Naming, discover, group_cases, validate_case_id
from brats.storage import resolve

ROOT = "/data"


def files(case, names):
    return [f"{ROOT}/{case}/{n}" for n in names]


@pytest.mark.parametrize("name", ["BraTS20_Training_001", "BraTS-GLI-00000-000", "a", "x.y_z-1"])
def test_valid_case_ids(name):
    assert validate_case_id(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/abs",
        "a/b",
        "%2e%2e",
        "..",
        "a..b",
        "caf\u00e9",
        "with space",
        "",
        ".hidden",
        "-dash",
        "a\\b",
        "x" * 200,
        "a\x00b",
    ],
)
def test_hostile_case_ids_are_rejected(name):
    with pytest.raises(InvalidCaseIdError):
        validate_case_id(name)


def test_brats2020_layout():
    cid = "BraTS20_Training_001"
    found = group_cases(
        files(cid, [f"{cid}_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2", "seg")]), ROOT
    )
    (case,) = found.cases
    assert case.case_id == cid
    assert set(case.images) == {"flair", "t1", "t1ce", "t2"}
    assert case.images["t1ce"].endswith("_t1ce.nii.gz")
    assert case.seg.endswith("_seg.nii.gz")
    assert case.naming is Naming.BRATS2020


def test_brats2023_layout_and_nii():
    cid = "BraTS-GLI-00000-000"
    found = group_cases(
        files(cid, [f"{cid}-{m}.nii" for m in ("t2f", "t1n", "t1c", "t2w", "seg")]), ROOT
    )
    (case,) = found.cases
    assert case.images == {
        "flair": f"{ROOT}/{cid}/{cid}-t2f.nii",
        "t1": f"{ROOT}/{cid}/{cid}-t1n.nii",
        "t1ce": f"{ROOT}/{cid}/{cid}-t1c.nii",
        "t2": f"{ROOT}/{cid}/{cid}-t2w.nii",
    }
    assert case.naming is Naming.BRATS2023


def test_case_355_segmentation_name():
    cid = "BraTS20_Training_355"
    names = [f"{cid}_{m}.nii" for m in ("flair", "t1", "t1ce", "t2")] + ["W39_1998.09.19_Segm.nii"]
    (case,) = group_cases(files(cid, names), ROOT).cases
    assert case.seg == f"{ROOT}/{cid}/W39_1998.09.19_Segm.nii"
    assert case.extra == ()


def test_unlabeled_and_missing_modality_are_kept_for_reporting():
    a = files("A", ["A_flair.nii.gz", "A_t1.nii.gz", "A_t1ce.nii.gz", "A_t2.nii.gz"])
    b = files("B", ["B_flair.nii.gz", "B_t1.nii.gz", "B_t2.nii.gz", "B_seg.nii.gz"])
    found = group_cases(a + b, ROOT)
    assert [c.case_id for c in found.cases] == ["A", "B"]
    assert found.cases[0].seg is None
    assert "t1ce" not in found.cases[1].images
    assert found.cases[1].expected_name("t1ce") == "B_t1ce.nii.gz"


def test_flat_layout_groups_by_prefix():
    paths = [f"{ROOT}/{c}_{m}.nii.gz" for c in ("P1", "P2") for m in ("flair", "t1", "t1ce", "t2")]
    found = group_cases([*paths, f"{ROOT}/notes.nii.gz"], ROOT)
    assert [c.case_id for c in found.cases] == ["P1", "P2"]
    assert [r.name for r in found.rejected] == ["notes.nii.gz"]


def test_bad_folders_are_rejected_with_reasons():
    paths = (
        files("bad name", ["x_flair.nii.gz"])
        + files("dup", ["dup_t1.nii.gz", "dup_t1.nii"])
        + files("mixed", ["mixed_flair.nii.gz", "mixed-t1n.nii.gz"])
    )
    found = group_cases(paths, ROOT)
    assert not found.cases
    reasons = {r.name: r.reason for r in found.rejected}
    assert "invalid case id" in reasons["bad name"]
    assert "two files for t1" in reasons["dup"]
    assert "mix" in reasons["mixed"]


def test_meningioma_radiotherapy_names_read_as_t1c_and_its_gtv_truth():
    cid = "BraTS-MEN-RT-0001-1"
    (case,) = group_cases(files(cid, [f"{cid}_t1c.nii.gz", f"{cid}_gtv.nii.gz"]), ROOT).cases
    assert case.case_id == cid and set(case.images) == {"t1ce"}
    assert case.seg is not None and case.seg.endswith("_gtv.nii.gz")
    assert case.naming is Naming.BRATS2023


def test_discover_on_local_folder(tmp_path):
    for cid in ("c2", "c1"):
        (tmp_path / "nested" / cid).mkdir(parents=True)
        for m in ("flair", "t1", "t1ce", "t2"):
            (tmp_path / "nested" / cid / f"{cid}_{m}.nii.gz").write_bytes(b"x")
        (tmp_path / "nested" / cid / "readme.txt").write_text("ignored")
    found = discover(resolve(str(tmp_path)))
    assert [c.case_id for c in found.cases] == ["c1", "c2"]
    with pytest.raises(FileNotFoundError):
        discover(resolve(str(tmp_path / "missing")))


def test_macos_leftovers_and_dot_files_are_not_data(tmp_path):
    from brats.devtools.synth import SynthConfig, generate_cohort

    generate_cohort(tmp_path, 1, SynthConfig(shape=(16, 16, 16), seed=0))
    case = next(tmp_path.iterdir())
    (case / f"._{case.name}_flair.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble
    shadow = tmp_path / "__MACOSX" / case.name
    shadow.mkdir(parents=True)
    (shadow / f"._{case.name}_t1.nii.gz").write_bytes(b"\x00")
    (tmp_path / ".trash" / "X").mkdir(parents=True)
    (tmp_path / ".trash" / "X" / "X_flair.nii.gz").write_bytes(b"")
    found = discover(resolve(str(tmp_path)))
    assert [c.case_id for c in found.cases] == [case.name] and not found.rejected
