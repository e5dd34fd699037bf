"""Tests for brats.synth: the generated cohort and the corrupt-input fixtures."""

from __future__ import annotations

import gzip
import io
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from brats.cases import MODALITIES, discover
from brats.labels import ED, ET, NCR, LabelConvention, LabelError, to_internal
from brats.storage import resolve
from brats.synth import (
    FAULTS,
    HUGE_SHAPE,
    SynthCase,
    SynthConfig,
    case_id_for,
    fault_file_name,
    file_name,
    generate_case,
    generate_cohort,
    main,
    write_case,
    write_faulty_case,
)

SMALL = SynthConfig(shape=(48, 48, 48), seed=7, p_no_enhancing=0.0)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _header(path: Path) -> nib.Nifti1Header:
    """Parse only the 348-byte header: never the data the header declares."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        block = fh.read(348)
    return nib.Nifti1Header.from_fileobj(io.BytesIO(block), check=False)


def _data(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


@pytest.fixture(scope="module")
def case() -> SynthCase:
    return generate_case(2, SMALL)


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    ids = generate_cohort(tmp_path / "a", 2, SMALL)
    assert generate_cohort(tmp_path / "b", 2, SMALL) == ids
    for cid in ids:
        assert _files(tmp_path / "a" / cid) == _files(tmp_path / "b" / cid)


def test_case_alone_equals_case_in_cohort(tmp_path: Path) -> None:
    ids = generate_cohort(tmp_path / "all", 3, SMALL, start=4)
    (alone,) = generate_cohort(tmp_path / "one", 1, SMALL, start=6)
    assert alone == ids[2] == case_id_for(6, "brats2020") == "BraTS20_Training_006"
    assert _files(tmp_path / "all" / alone) == _files(tmp_path / "one" / alone)


def test_different_seeds_and_cases_differ(case: SynthCase) -> None:
    other_seed = generate_case(2, SynthConfig(shape=SMALL.shape, seed=8, p_no_enhancing=0.0))
    other_case = generate_case(3, SMALL)
    for other in (other_seed, other_case):
        assert not np.array_equal(other.images["flair"], case.images["flair"])
        assert not np.array_equal(other.label, case.label)


def test_shapes_dtypes_and_affine(tmp_path: Path) -> None:
    config = SynthConfig(shape=(32, 40, 24), seed=1)
    synth = generate_case(1, config)
    assert set(synth.images) == set(MODALITIES)
    brain = synth.images["t1"] > 0
    for image in synth.images.values():
        assert image.shape == (32, 40, 24) and image.dtype == np.int16
        assert image.min() >= 0 and 100 < image.max() < 5000
        assert np.array_equal(image > 0, brain)  # skull-stripped: one support for all
    assert synth.label.dtype == np.uint8 and set(np.unique(synth.label)) <= {0, 1, 2, 3}
    assert not np.any(synth.label[~brain])
    # Whole 240 x 240 x 155 mm field of view at a coarser spacing, LPS like BraTS, centred.
    spacing = (7.5, 6.0, 155 / 24)
    assert np.allclose(synth.affine[:3, :3], np.diag([-spacing[0], -spacing[1], spacing[2]]))
    centre = synth.affine @ np.array([31 / 2, 39 / 2, 23 / 2, 1.0])
    assert np.allclose(centre[:3], 0.0)
    # The brain fits the box: nothing touches the border.
    assert not any(np.any(np.take(brain, [0, -1], axis=a)) for a in range(3))

    folder = Path(write_case(tmp_path, synth, config))
    for name in MODALITIES:
        img = nib.load(folder / file_name(synth.case_id, name, config))
        assert img.header.get_data_dtype() == np.int16
        assert np.allclose(img.affine, synth.affine)
        assert np.allclose(img.header.get_zooms(), spacing)
        assert np.array_equal(np.asarray(img.dataobj), synth.images[name])
    seg = nib.load(folder / file_name(synth.case_id, "seg", config))
    assert seg.header.get_data_dtype() == np.uint8


@pytest.mark.parametrize(
    ("convention", "et_on_disk", "absent", "names"),
    [
        ("brats2020", 4, 3, ("BraTS20_Training_001", "_flair.nii.gz", "_seg.nii.gz")),
        ("brats2023", 3, 4, ("BraTS-GLI-00001-000", "-t2f.nii.gz", "-seg.nii.gz")),
    ],
)
def test_labels_and_names_follow_convention(
    tmp_path: Path, convention: str, et_on_disk: int, absent: int, names: tuple[str, ...]
) -> None:
    config = SynthConfig(shape=(32, 32, 32), convention=convention, p_no_enhancing=0.0)
    ids = generate_cohort(tmp_path, 2, config)
    assert ids[0] == names[0]
    folder = tmp_path / ids[0]
    assert (folder / f"{ids[0]}{names[1]}").is_file()
    seg = _data(folder / f"{ids[0]}{names[2]}")
    assert seg.dtype == np.uint8
    assert et_on_disk in seg and absent not in seg
    assert np.array_equal(to_internal(seg, convention), generate_case(1, config).label)

    found = discover(resolve(str(tmp_path)))
    assert [c.case_id for c in found.cases] == ids and not found.rejected
    for c in found.cases:
        assert c.convention is LabelConvention(convention)
        assert set(c.images) == set(MODALITIES) and c.seg is not None


def test_tumor_classes_nest(case: SynthCase) -> None:
    label = case.label
    assert case.enhancing
    for cls in (NCR, ED, ET):
        assert np.count_nonzero(label == cls) > 0, f"class {cls} missing"
    whole, core = label > 0, np.isin(label, (NCR, ET))
    assert np.count_nonzero(whole) > np.count_nonzero(core)
    # Edema surrounds the core: the core's neighbours are (almost all) tumor.
    ring = ndimage.binary_dilation(core) & ~core & (case.images["t1"] > 0)
    assert np.mean(whole[ring]) > 0.9
    # The enhancing rim surrounds the necrosis.
    necrosis = label == NCR
    ring = ndimage.binary_dilation(necrosis) & ~necrosis
    assert np.mean(core[ring]) > 0.9
    # One connected tumor.
    assert ndimage.label(whole)[1] == 1


def test_no_enhancing_tumor() -> None:
    config = SynthConfig(shape=(32, 32, 32), p_no_enhancing=1.0)
    synth = generate_case(1, config)
    assert not synth.enhancing
    assert ET not in synth.label and NCR in synth.label and ED in synth.label


def test_tissue_contrast_looks_like_mri() -> None:
    config = SynthConfig(shape=(96, 96, 62), seed=2, p_no_enhancing=0.0, noise=0.01)
    synth = generate_case(1, config)
    img = {m: synth.images[m].astype(np.float64) for m in MODALITIES}
    label, brain = synth.label, synth.images["t1"] > 0
    normal = brain & (label == 0)
    t1 = img["t1"][normal]
    wm = normal & (img["t1"] > np.percentile(t1, 80))  # brightest T1: white matter
    csf = normal & (img["t1"] < np.percentile(t1, 5))  # darkest T1: CSF
    edema, enhancing, necrosis = label == ED, label == ET, label == NCR
    assert img["flair"][edema].mean() > 1.5 * img["flair"][wm].mean()
    assert img["t2"][edema].mean() > 1.5 * img["t2"][wm].mean()
    assert img["t1ce"][enhancing].mean() > 1.5 * img["t1ce"][necrosis].mean()
    assert img["t1ce"][enhancing].mean() > 1.5 * img["t1"][enhancing].mean()
    assert img["t2"][csf].mean() > 1.5 * img["t2"][wm].mean()
    assert img["flair"][csf].mean() < 0.7 * img["flair"][wm].mean()


def test_unlabeled_and_plain_nii(tmp_path: Path) -> None:
    config = SynthConfig(shape=(32, 32, 32), compress=False, convention="brats2023")
    ids = generate_cohort(tmp_path, 1, config, unlabeled=2)
    assert ids == [case_id_for(i, "brats2023") for i in (1, 2, 3)]
    for cid in ids:
        names = sorted(os.listdir(tmp_path / cid))
        assert all(n.endswith(".nii") for n in names)
        assert (f"{cid}-seg.nii" in names) == (cid == ids[0])
    found = discover(resolve(str(tmp_path)))
    assert [c.seg is None for c in found.cases] == [False, True, True]


@pytest.fixture(scope="module")
def faulty_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    config = SynthConfig(shape=(32, 32, 32))
    for fault in FAULTS:
        write_faulty_case(root, f"Faulty_{fault}", fault, config)
    return root


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_writes_the_condition_it_claims(faulty_root: Path, fault: str) -> None:
    config = SynthConfig(shape=(32, 32, 32))
    cid = f"Faulty_{fault}"
    folder = faulty_root / cid
    path = folder / fault_file_name(cid, fault, config)
    flair = folder / file_name(cid, "flair", config)
    assert _data(flair).shape == (32, 32, 32)  # the other files stay valid
    if fault == "truncated_gzip":
        with pytest.raises((EOFError, OSError, zlib.error)):
            gzip.decompress(path.read_bytes())
    elif fault == "not_nifti":
        raw = gzip.decompress(path.read_bytes())
        assert raw[344:348] != b"n+1\x00"
    elif fault == "empty_file":
        assert path.stat().st_size == 0
    elif fault == "missing_modality":
        assert not path.exists() and path.name.endswith("_t1ce.nii.gz")
        assert len(os.listdir(folder)) == 4
    elif fault == "shape_mismatch":
        assert _header(path).get_data_shape() != _header(flair).get_data_shape()
    elif fault == "affine_mismatch":
        diff = _header(path).get_best_affine() - _header(flair).get_best_affine()
        assert np.allclose(np.abs(diff).max(), 5.0)
    elif fault in ("nan", "inf"):
        data = _data(path)
        assert data.dtype == np.float32
        bad = np.isnan(data) if fault == "nan" else np.isinf(data)
        assert np.count_nonzero(bad) > 0 and np.all(np.isfinite(data[~bad]))
    elif fault == "all_zero":
        assert not np.any(_data(path))
    elif fault == "huge_header":
        assert path.stat().st_size < 1024
        header = _header(path)
        assert header.get_data_shape() == HUGE_SHAPE
        assert np.prod(HUGE_SHAPE) * header.get_data_dtype().itemsize > 2**30
    elif fault == "stray_label":
        seg = _data(path)
        assert 3 in seg
        with pytest.raises(LabelError):
            to_internal(seg, "brats2020")
    else:
        pytest.fail(f"fault {fault} has no check")


def test_faults_are_reproducible_and_discovered(faulty_root: Path, tmp_path: Path) -> None:
    config = SynthConfig(shape=(32, 32, 32))
    write_faulty_case(tmp_path, "Faulty_nan", "nan", config)
    assert _files(tmp_path / "Faulty_nan") == _files(faulty_root / "Faulty_nan")
    found = discover(resolve(str(faulty_root)))
    assert len(found.cases) == len(FAULTS)
    missing = next(c for c in found.cases if c.case_id == "Faulty_missing_modality")
    assert "t1ce" not in missing.images


def test_stray_label_in_2023_and_bad_fault(tmp_path: Path) -> None:
    config = SynthConfig(shape=(32, 32, 32), convention="brats2023", labeled=False)
    folder = Path(write_faulty_case(tmp_path, "BraTS-GLI-00009-000", "stray_label", config))
    seg = _data(folder / "BraTS-GLI-00009-000-seg.nii.gz")
    assert 5 in seg and 4 not in seg
    with pytest.raises(ValueError, match="unknown fault"):
        write_faulty_case(tmp_path, "x", "gremlins", config)
    with pytest.raises(ValueError, match="invalid case id"):
        write_faulty_case(tmp_path, "../x", "nan", config)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cohort"
    argv = [str(out), "--cases", "2", "--shape", "32", "32", "32", "--seed", "5"]
    assert main([*argv, "--convention", "brats2023", "--unlabeled", "1", "--nii"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "3 cases" in printed
    found = discover(resolve(str(out)))
    assert len(found.cases) == 3
    assert {c.convention for c in found.cases} == {LabelConvention.BRATS2023}
    assert all(p.endswith(".nii") for c in found.cases for p in c.images.values())
