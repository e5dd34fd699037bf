"""Finding label volumes whatever their naming, and pairing them by case id (file names only:
nothing here reads a volume)."""

from __future__ import annotations

from pathlib import Path

import pytest

from brats.evaluate.pairing import Pair, find_label_files, pair_files
from brats.storage import resolve


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def _found(root: Path) -> dict[str, str]:
    files = find_label_files(resolve(str(root))).files
    return {case: str(Path(path).relative_to(root)) for case, path in files.items()}


def test_every_naming_of_a_label_volume(tmp_path):
    _touch(
        tmp_path,
        # BraTS 2020 and 2023 case folders: their images are not labels
        "BraTS20_Training_001/BraTS20_Training_001_seg.nii.gz",
        "BraTS20_Training_001/BraTS20_Training_001_flair.nii.gz",
        "BraTS20_Training_001/BraTS20_Training_001_t1ce.nii.gz",
        "BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz",
        "BraTS-GLI-00000-000/BraTS-GLI-00000-000-t2f.nii.gz",
        # case 355's odd name, in a folder with its images
        "BraTS20_Training_355/W39_1998.09.19_Segm.nii",
        "BraTS20_Training_355/BraTS20_Training_355_t2.nii",
        # flat <case>.nii.gz (nnU-Net, MONAI, brats segment's masks/), and <case>_seg
        "BraTS-GLI-00001-000.nii.gz",
        "masks/BraTS20_Training_002.nii.gz",
        "case-7_seg.nii.gz",
        # never data
        ".hidden/BraTS20_Training_003.nii.gz",
        "__MACOSX/BraTS20_Training_004.nii.gz",
        "notes.txt",
    )
    assert _found(tmp_path) == {
        "BraTS20_Training_001": "BraTS20_Training_001/BraTS20_Training_001_seg.nii.gz",
        "BraTS-GLI-00000-000": "BraTS-GLI-00000-000/BraTS-GLI-00000-000-seg.nii.gz",
        "BraTS20_Training_355": "BraTS20_Training_355/W39_1998.09.19_Segm.nii",
        "BraTS-GLI-00001-000": "BraTS-GLI-00001-000.nii.gz",
        "BraTS20_Training_002": "masks/BraTS20_Training_002.nii.gz",
        "case-7": "case-7_seg.nii.gz",
    }


def test_two_files_for_one_case_and_bad_names_are_refused(tmp_path):
    _touch(tmp_path, "A.nii.gz", "A_seg.nii.gz", "-bad.nii.gz", "B.nii.gz")
    found = find_label_files(resolve(str(tmp_path)))
    assert list(found.files) == ["B"]
    reasons = {r.name: r.reason for r in found.rejected}
    assert "two label files" in reasons["A"]
    assert "-bad.nii.gz" in reasons


def test_a_segment_output_s_per_voxel_maps_are_not_predictions(tmp_path):
    """--pred at a ``brats segment`` output: masks/ holds the labels; probabilities/ and
    uncertainty/ hold maps of the same names, never a second label file. Two label files
    elsewhere are refused, named relative to the root."""
    _touch(
        tmp_path,
        "masks/C1.nii.gz",
        "masks/C2.nii.gz",
        "probabilities/C1.nii.gz",
        "uncertainty/C1.nii.gz",
        "uncertainty/C9.nii.gz",
        "postprocessed/C2.nii.gz",
    )
    found = find_label_files(resolve(str(tmp_path)))
    assert _found(tmp_path) == {"C1": "masks/C1.nii.gz"}
    assert [(r.name, r.reason) for r in found.rejected] == [
        ("C2", "two label files: masks/C2.nii.gz and postprocessed/C2.nii.gz")
    ]


def test_pairs_by_case_id_with_missing_and_orphan_predictions(tmp_path):
    _touch(
        tmp_path / "truth",
        "C1/C1_seg.nii.gz",
        "C1/C1_flair.nii.gz",
        "C2/C2_seg.nii.gz",
        "C2/C2_t1.nii.gz",
    )
    _touch(tmp_path / "pred", "C1.nii.gz", "C9.nii.gz")
    truths = find_label_files(resolve(str(tmp_path / "truth")))
    preds = find_label_files(resolve(str(tmp_path / "pred")))
    pairs, orphans = pair_files(preds, truths)
    assert [(p.case_id, p.pred is not None) for p in pairs] == [("C1", True), ("C2", False)]
    assert isinstance(pairs[0], Pair) and pairs[0].truth.endswith("C1/C1_seg.nii.gz")
    assert orphans == ["C9"]


def test_a_root_that_does_not_exist_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        find_label_files(resolve(str(tmp_path / "nowhere")))
