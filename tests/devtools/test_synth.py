"""Tests for brats.synth: the generated cohort and the corrupt-input fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from brats.devtools.synth import (
    SynthCase,
    SynthConfig,
    case_id_for,
    file_name,
    generate_case,
    generate_cohort,
    write_case,
)
from brats.io.cases import MODALITIES, discover
from brats.storage import resolve
from brats.volume.labels import ED, ET, NCR, LabelConvention, to_internal
from tests.helpers import folder_files, nifti_data

SMALL = SynthConfig(shape=(48, 48, 48), seed=7, p_no_enhancing=0.0)


@pytest.fixture(scope="module")
def case() -> SynthCase:
    return generate_case(2, SMALL)


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    ids = generate_cohort(tmp_path / "a", 2, SMALL)
    assert generate_cohort(tmp_path / "b", 2, SMALL) == ids
    for cid in ids:
        assert folder_files(tmp_path / "a" / cid) == folder_files(tmp_path / "b" / cid)


def test_case_alone_equals_case_in_cohort(tmp_path: Path) -> None:
    ids = generate_cohort(tmp_path / "all", 3, SMALL, start=4)
    (alone,) = generate_cohort(tmp_path / "one", 1, SMALL, start=6)
    assert alone == ids[2] == case_id_for(6, "brats2020") == "BraTS20_Training_006"
    assert folder_files(tmp_path / "all" / alone) == folder_files(tmp_path / "one" / alone)


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
    seg = nifti_data(folder / f"{ids[0]}{names[2]}")
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
