"""Tests for brats.synth: the generated cohort, its variety and sites, and the corrupt-input
fixtures."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import MappingProxyType

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import brats.devtools.synth_config as synth_config
from brats.devtools.sites import CONTRAST, SITES, slice_blur_sigma
from brats.devtools.synth import (
    SynthCase,
    SynthConfig,
    case_files,
    case_id_for,
    file_name,
    generate_case,
    generate_cohort,
    write_case,
)
from brats.devtools.tumor import (
    Focus,
    Tumor,
    has_kind,
    keep_connected_to_core,
    keep_one_core_per_focus,
    kind_phases,
)
from brats.io.cases import MODALITIES, discover
from brats.storage import resolve
from brats.volume.labels import ED, ET, NCR, to_internal
from tests.helpers import folder_files, nifti_data

# One typical, enhancing, unifocal tumor per case: the nesting test below is about that lesion.
SMALL = SynthConfig(shape=(48, 48, 48), seed=7, p_no_enhancing=0.0, p_multifocal=0.0, p_small=0.0)


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


# --------------------------------------------------------------------------------------------
# Variety: enhancement, multifocal and small tumors


def test_no_enhancing_is_absent_et_and_has_its_exact_share() -> None:
    config = SynthConfig(shape=(32, 32, 32), p_no_enhancing=1.0, p_multifocal=0.5)
    for index in range(1, 7):
        synth = generate_case(index, config)
        assert not synth.enhancing and ET not in synth.label and NCR in synth.label

    # The default: a quarter of tumors do not enhance, in every run of 8 consecutive cases
    # (a held-out set), not only on average.
    default = SynthConfig(shape=(32, 32, 32))
    cases = [generate_case(index, default) for index in range(1001, 1101)]
    for synth in cases:  # an enhancing tumor keeps its rim even on this coarse grid
        assert (ET in synth.label) == synth.enhancing, synth.case_id
        assert NCR in synth.label and ED in synth.label, synth.case_id
    without = [ET not in synth.label for synth in cases]
    assert default.p_no_enhancing == 0.25
    assert all(sum(without[i : i + 8]) == 2 for i in range(len(without) - 7))


@pytest.mark.parametrize("share", [0.0, 0.15, 0.25, 1 / 3, 0.5, 1.0])
def test_kinds_have_exact_shares_over_any_run_of_cases(share: float) -> None:
    for seed in range(4):
        for phase in kind_phases(seed):
            assert 0.0 <= phase < 1.0
            kind = np.array([has_kind(index, share, phase) for index in range(300)])
            for n in (1, 7, 8, 24, 100):
                counts = np.convolve(kind, np.ones(n, dtype=int), mode="valid")
                assert counts.min() >= np.floor(n * share - 1e-9), (share, n)
                assert counts.max() <= np.ceil(n * share + 1e-9), (share, n)


def test_kinds_are_placed_by_the_seed_and_do_not_line_up() -> None:
    phases = [kind_phases(seed) for seed in range(8)]
    assert phases[0] == kind_phases(0)  # seeded
    assert len({round(p[0], 6) for p in phases}) == 8  # the cohort seed moves the pattern
    assert all(len(set(p)) == 3 for p in phases)  # three kinds, three independent patterns
    # Multifocal and small have the same share but fall on different cases.
    a, b = phases[0][1], phases[0][2]
    multifocal = [has_kind(i, 0.15, a) for i in range(100)]
    small = [has_kind(i, 0.15, b) for i in range(100)]
    assert sum(multifocal) == sum(small) == 15 and multifocal != small


def test_multifocal_cases_have_two_separate_cores_and_no_orphan_edema() -> None:
    config = SynthConfig(shape=(48, 48, 48), seed=3, p_multifocal=1.0, p_no_enhancing=0.0)
    for index in range(1, 5):
        synth = generate_case(index, config)
        label = synth.label
        assert synth.foci == 2
        core = np.isin(label, (NCR, ET))
        lesions, n_cores = ndimage.label(core)
        assert n_cores == 2, synth.case_id
        for lesion in (1, 2):  # both follow the label rules: necrosis inside an enhancing rim
            inside = label[lesions == lesion]
            assert NCR in inside and ET in inside, synth.case_id
            ring = ndimage.binary_dilation(lesions == lesion) & ~core & (synth.images["t1"] > 0)
            assert np.mean(label[ring] == ED) > 0.5, synth.case_id  # edema around each core
        # Every tumor voxel is connected to a core (the edema of both foci is kept).
        parts, n_parts = ndimage.label(label > 0)
        assert 1 <= n_parts <= 2
        assert set(np.unique(parts[core])) == set(range(1, n_parts + 1)), synth.case_id


def test_keep_connected_to_core_keeps_the_edema_of_every_core() -> None:
    shape = (12, 12, 24)
    points = np.nonzero(np.ones(shape, dtype=bool))
    grid = np.zeros(shape, dtype=np.uint8)
    grid[2:10, 2:10, 1:9] = ED  # first focus: edema around a core
    grid[4:8, 4:8, 3:7] = ET
    grid[2:10, 2:10, 11:19] = ED  # second focus, separate from the first
    grid[5:7, 5:7, 14:16] = NCR
    grid[4:8, 4:8, 21:23] = ED  # edema with no core: dropped
    grid[1, 1, 1] = 0
    grid[4:8, 4:8, 9] = 0
    flat = grid[points].copy()
    ones = np.ones(flat.size, dtype=np.float32)
    tumor = Tumor(flat, ones.copy(), ones.copy(), ones.copy(), ones.copy())
    keep_connected_to_core(tumor, points, shape)
    kept = np.zeros(shape, dtype=np.uint8)
    kept[points] = tumor.label
    assert np.array_equal(kept[..., :20], grid[..., :20])  # both foci whole
    assert not kept[..., 20:].any()
    assert not tumor.edema[(grid[points] > 0) & (tumor.label == 0)].any()  # dropped: not bright
    assert tumor.edema[tumor.label > 0].all()


def test_core_islands_become_edema() -> None:
    shape = (12, 12, 12)
    points = np.nonzero(np.ones(shape, dtype=bool))
    grid = np.zeros(shape, dtype=np.uint8)
    grid[1:11, 1:11, 1:11] = ED
    grid[3:6, 3:6, 3:6] = ET  # the focus's core, around its centre
    grid[4, 4, 4] = NCR
    grid[8:10, 8:10, 8:10] = ET  # pinched off: an island
    flat = grid[points].copy()
    ones = np.ones(flat.size, dtype=np.float32)
    centre = int(np.ravel_multi_index((4, 4, 4), shape))
    focus = Focus(np.zeros(3), centre, 5.0, 3.0)
    tumor = Tumor(flat, ones.copy(), ones.copy(), ones.copy(), ones.copy(), (focus,))
    keep_one_core_per_focus(tumor, points, shape)
    after = np.zeros(shape, dtype=np.uint8)
    after[points] = tumor.label
    expected = grid.copy()
    expected[8:10, 8:10, 8:10] = ED
    assert np.array_equal(after, expected)
    island = np.zeros(shape, dtype=bool)
    island[8:10, 8:10, 8:10] = True
    # The island and its fringe no longer render as core; the kept core still does.
    assert not tumor.core[ndimage.binary_dilation(island)[points]].any()
    assert tumor.core[np.isin(tumor.label, (NCR, ET))].all()


def test_small_tumors_are_smaller_and_keep_their_core() -> None:
    volumes: dict[float, list[int]] = {}
    for p_small in (0.0, 1.0):
        config = SynthConfig(shape=(64, 64, 48), seed=4, p_small=p_small, p_multifocal=0.0)
        volumes[p_small] = []
        for index in range(1, 6):
            synth = generate_case(index, config)
            assert synth.small == (p_small == 1.0)
            assert np.count_nonzero(np.isin(synth.label, (NCR, ET))) > 0
            assert NCR in synth.label and ED in synth.label
            assert (ET in synth.label) == synth.enhancing
            volumes[p_small].append(np.count_nonzero(synth.label))
    assert np.mean(volumes[1.0]) < 0.6 * np.mean(volumes[0.0])


def test_probabilities_are_checked() -> None:
    for name in ("p_no_enhancing", "p_multifocal", "p_small"):
        with pytest.raises(ValueError, match=name):
            SynthConfig(**{name: 1.5})
    with pytest.raises(ValueError, match="noise"):
        SynthConfig(noise=-0.1)


# --------------------------------------------------------------------------------------------
# Sites


def test_unknown_site_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown site 'z'; the sites are a, b, c"):
        SynthConfig(site="z")


def test_a_site_changes_the_images_but_not_the_anatomy() -> None:
    cases = {
        site: generate_case(3, SynthConfig(shape=(40, 40, 40), seed=5, site=site)) for site in SITES
    }
    reference = cases["a"]
    brain = reference.images["t1"] > 0
    assert reference.label.any() and not reference.label[~brain].any()
    for site, synth in cases.items():
        assert synth.site == site
        assert np.array_equal(synth.label, reference.label), site
        assert (synth.foci, synth.small, synth.enhancing) == (
            reference.foci,
            reference.small,
            reference.enhancing,
        )
        for modality, image in synth.images.items():
            assert np.array_equal(image > 0, brain), (site, modality)  # zero outside the brain
            assert image.min() >= 0
            if site != "a":
                assert not np.array_equal(image, reference.images[modality]), (site, modality)


def _relative_noise(site: str, modality: str) -> float:
    """Noise sigma over white-matter intensity: the image minus the same case without noise
    (every site draws the same noise, so the difference is the noise alone)."""
    config = SynthConfig(shape=(48, 48, 48), seed=5, site=site)
    noisy = generate_case(2, config)
    clean = generate_case(2, dataclasses.replace(config, noise=0.0))
    brain_t1 = clean.images["t1"][clean.label == 0].astype(np.float64)
    wm = (clean.label == 0) & (clean.images["t1"] > np.percentile(brain_t1[brain_t1 > 0], 80))
    diff = noisy.images[modality][wm].astype(np.float64) - clean.images[modality][wm]
    return float(diff.std() / clean.images[modality][wm].mean())


@pytest.mark.parametrize("modality", ["flair", "t1"])
def test_site_b_is_noisier(modality: str) -> None:
    a, b = _relative_noise("a", modality), _relative_noise("b", modality)
    assert SITES["a"].noise == 0.03 and SITES["b"].noise == 0.06
    # Bias field and intensity scale move the white-matter level by a few tens of percent.
    assert 0.02 < a < 0.045 and 0.04 < b < 0.09
    assert 1.5 < b / a < 2.7


def test_sites_have_their_own_contrast() -> None:
    """Relative to T1, the modalities' brain means move, and so does each modality's
    tumor-to-brain contrast: a site is a look, not just a scale."""
    relative, lesion = {}, {}
    for site in SITES:
        synth = generate_case(3, SynthConfig(shape=(40, 40, 40), seed=5, site=site))
        brain, tumor = synth.images["t1"] > 0, synth.label > 0
        images = {m: synth.images[m].astype(np.float64) for m in MODALITIES}
        relative[site] = np.array([images[m][brain].mean() for m in MODALITIES])
        relative[site] /= images["t1"][brain].mean()
        lesion[site] = np.array(
            [images[m][tumor].mean() / images[m][brain & ~tumor].mean() for m in MODALITIES]
        )
    for site in ("b", "c"):
        assert np.max(np.abs(np.log(relative[site] / relative["a"]))) > 0.1, site
        assert np.max(np.abs(np.log(lesion[site] / lesion["a"]))) > 0.05, site


@pytest.mark.parametrize("site", sorted(SITES))
def test_every_site_keeps_the_tissue_order_of_each_modality(site: str) -> None:
    profile = SITES[site]
    look = {
        m: dict(
            zip(
                ("csf", "gm", "wm", "ed", "et", "nec", "net"),
                np.multiply(CONTRAST[m], profile.contrast.get(m, 1.0)),
                strict=True,
            )
        )
        for m in MODALITIES
    }
    # The gamma is monotone, so the order of these values is the order in the images.
    t1, t2, flair, t1ce = look["t1"], look["t2"], look["flair"], look["t1ce"]
    assert t1["wm"] > t1["gm"] > t1["csf"] and t2["csf"] > t2["gm"] > t2["wm"]
    assert flair["gm"] > flair["wm"] > 2 * flair["csf"] and flair["ed"] > 1.5 * flair["wm"]
    assert t2["ed"] > 1.5 * t2["wm"] and t1ce["et"] > 1.5 * max(t1ce["nec"], t1ce["wm"])
    assert t1ce["et"] > 1.5 * t1["et"] and t1ce["wm"] > t1ce["gm"] > t1ce["csf"]
    assert all(0.8 <= g <= 1.25 for g in profile.gamma.values())


def test_slice_thickness_blurs_along_axis_2_only() -> None:
    assert slice_blur_sigma(None, 1.0) == 0.0 and slice_blur_sigma(5.0, 6.0) == 0.0
    assert slice_blur_sigma(5.0, 1.0) == pytest.approx(np.sqrt(2.0))
    thin = dataclasses.replace(SITES["b"], slice_thickness_mm=None)
    sites = MappingProxyType({**SITES, "thin": thin})
    patched = pytest.MonkeyPatch.context()
    with patched as mp:
        mp.setattr(synth_config, "SITES", sites)
        shape = (32, 32, 96)  # 1.6 mm slices: the 5 mm ones are much thicker
        thick_case = generate_case(1, SynthConfig(shape=shape, seed=2, site="b", noise=0.0))
        thin_case = generate_case(1, SynthConfig(shape=shape, seed=2, site="thin", noise=0.0))
    assert np.array_equal(thick_case.label, thin_case.label)
    inner = ndimage.binary_erosion(thin_case.images["t2"] > 0, iterations=2)
    for modality in MODALITIES:
        thick = thick_case.images[modality].astype(np.float64)
        thin_image = thin_case.images[modality].astype(np.float64)
        assert np.array_equal(thick > 0, thin_image > 0)  # re-masked: the same brain

        def roughness(image: np.ndarray, axis: int) -> float:
            """Mean second difference along ``axis`` inside the brain: fine detail."""
            second = np.abs(np.diff(image, 2, axis=axis))
            return float(second[np.delete(inner, [-1, -2], axis)].mean())

        assert roughness(thick, 2) < 0.8 * roughness(thin_image, 2), modality
        assert roughness(thick, 0) > 0.9 * roughness(thin_image, 0), modality


def test_site_b_is_deterministic_and_a_case_alone_equals_it_in_a_cohort(tmp_path: Path) -> None:
    config = SynthConfig(shape=(32, 32, 32), seed=9, site="b", p_multifocal=0.5, p_small=0.5)
    for index in (1, 2):
        first = case_files(generate_case(index, config), config, seg=True)
        again = case_files(generate_case(index, config), config, seg=True)
        assert first == again
    ids = generate_cohort(tmp_path / "all", 3, config)
    (alone,) = generate_cohort(tmp_path / "one", 1, config, start=3)
    assert folder_files(tmp_path / "all" / ids[2]) == folder_files(tmp_path / "one" / alone)


@pytest.mark.parametrize(
    ("spacing", "shape"), [((4.0, 4.0, 12.0), (60, 60, 13)), ((2.0, 2.0, 4.0), (120, 120, 39))]
)
def test_a_case_acquired_at_another_spacing_is_the_same_anatomy_over_the_same_field_of_view(
    tmp_path: Path, spacing: tuple[float, float, float], shape: tuple[int, int, int]
) -> None:
    """``--spacing``: case i drawn on --shape's grid, written on the grid of the spacing
    (thick slices, or finer voxels): its files say that spacing, the field of view and its
    centre stay, the tumour keeps its volume and its classes, the brain stays zero outside."""
    base = SynthConfig(shape=(60, 60, 40), field_of_view_mm=(240.0, 240.0, 156.0), seed=2)
    acquired = dataclasses.replace(base, spacing_mm=spacing)
    assert acquired.acquired_shape == shape and base.acquired_shape == base.shape
    drawn, taken = generate_case(3, base), generate_case(3, acquired)
    assert taken.label.shape == shape and taken.images["flair"].shape == shape
    assert taken.images["t1"].dtype == np.int16 and taken.images["t1"].min() == 0
    np.testing.assert_allclose(np.abs(np.diag(taken.affine)[:3]), spacing)
    centre = lambda c, s: c.affine @ np.array([*((np.asarray(s) - 1) / 2), 1.0])  # noqa: E731
    np.testing.assert_allclose(centre(taken, shape), centre(drawn, base.shape), atol=1e-9)
    mm3 = np.prod(spacing), np.prod(base.spacing)
    for region in ((1, 2, 3), (1, 3)):
        volume = np.isin(taken.label, region).sum() * mm3[0]
        before = np.isin(drawn.label, region).sum() * mm3[1]
        assert volume == pytest.approx(before, rel=0.2), region
    assert set(np.unique(taken.label)) == set(np.unique(drawn.label))
    brain = taken.images["flair"] > 0  # one brain mask for every image, zero outside it
    assert all(np.array_equal(v > 0, brain) for v in taken.images.values())
    assert brain[taken.label > 0].all()
    generate_cohort(tmp_path, 1, acquired, start=3)
    written = nib.load(next(tmp_path.rglob("*flair*")))
    assert written.shape == shape
    np.testing.assert_allclose(written.header.get_zooms(), spacing)
