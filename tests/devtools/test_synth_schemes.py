"""The generated cohort in every label scheme (brats.devtools.synth): names, labels on disk,
the post-treatment cavity, the paediatric cyst, the meningioma on T1ce alone."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from brats.cli import run_synth, synth_parser
from brats.devtools.demo import DemoCommand, DemoConfig, demo_parser
from brats.devtools.faults import fault_file_name, stray_value, write_faulty_case
from brats.devtools.sites import CONTRAST, FLUID, SITES
from brats.devtools.synth import (
    SynthCase,
    SynthConfig,
    case_id_for,
    file_name,
    generate_case,
    generate_cohort,
)
from brats.devtools.tumor import CAVITY, CYST, has_kind, kind_ordinal, kind_phases
from brats.io.cases import discover
from brats.options import parse_config
from brats.storage import resolve
from brats.volume.labels import SCHEMES, LabelError, SchemeError, to_disk, to_internal
from tests.helpers import nifti_data

TINY = (32, 32, 32)

# Scheme -> (the id of case 1, its files, without the id).
_FILES_2023 = ["-seg.nii.gz", "-t1c.nii.gz", "-t1n.nii.gz", "-t2f.nii.gz", "-t2w.nii.gz"]
NAMES = {
    "brats2020": (
        "BraTS20_Training_001",
        ["_flair.nii.gz", "_seg.nii.gz", "_t1.nii.gz", "_t1ce.nii.gz", "_t2.nii.gz"],
    ),
    "brats2023": ("BraTS-GLI-00001-000", _FILES_2023),
    "met2023": ("BraTS-MET-00001-000", _FILES_2023),
    "men2023": ("BraTS-MEN-00001-000", _FILES_2023),
    "gli2024": ("BraTS-GLI-00001-100", _FILES_2023),
    "met2024": ("BraTS-MET-00001-000", _FILES_2023),
    "ped2024": ("BraTS-PED-00001-000", _FILES_2023),
    "menrt2024": ("BraTS-MEN-RT-0001-1", ["_gtv.nii.gz", "_t1c.nii.gz"]),
}


def test_every_built_in_scheme_has_its_names() -> None:
    assert set(NAMES) == set(SCHEMES)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_a_tiny_case_has_the_schemes_files_and_labels(tmp_path: Path, scheme: str) -> None:
    config = SynthConfig(shape=TINY, seed=3, convention=scheme)
    assert config.scheme is SCHEMES[scheme]
    ids = generate_cohort(tmp_path, 2, config)
    first, suffixes = NAMES[scheme]
    assert ids[0] == first == case_id_for(1, scheme)
    assert sorted(p.name for p in (tmp_path / first).iterdir()) == [first + s for s in suffixes]
    values = set(SCHEMES[scheme].disk_values)
    for index, cid in enumerate(ids, start=1):
        case = generate_case(index, config)
        assert set(case.images) == set(SCHEMES[scheme].images) and case.scheme == scheme
        seg = nifti_data(tmp_path / cid / file_name(cid, "seg", config))
        assert seg.dtype == np.uint8 and set(np.unique(seg).tolist()) <= values
        assert len(np.unique(seg)) > 1  # a lesion
        internal = to_internal(seg, scheme)
        assert np.array_equal(internal, case.label)
        assert np.array_equal(to_disk(internal, scheme), seg)
        image = nifti_data(tmp_path / cid / file_name(cid, "t1ce", config))
        assert np.array_equal(image, case.images["t1ce"])
    found = discover(resolve(str(tmp_path)))
    assert [c.case_id for c in found.cases] == ids and not found.rejected
    for c in found.cases:
        assert set(c.images) == set(SCHEMES[scheme].images) and c.seg is not None


def test_file_names_refuse_an_image_the_scheme_lacks() -> None:
    config = SynthConfig(shape=TINY, convention="menrt2024")
    cid = case_id_for(7, "menrt2024")
    assert file_name(cid, "gtv", config) == file_name(cid, "seg", config)
    assert file_name(cid, "seg", config) == "BraTS-MEN-RT-0007-1_gtv.nii.gz"
    with pytest.raises(ValueError, match="menrt2024"):
        file_name(cid, "flair", config)


def test_the_scheme_is_any_built_in_name_or_scheme() -> None:
    assert SynthConfig(convention=SCHEMES["ped2024"]).convention == "ped2024"
    with pytest.raises(SchemeError, match=r"'brats2019'.*built-in schemes only \(brats2020, "):
        SynthConfig(convention="brats2019")
    custom = dataclasses.replace(SCHEMES["brats2023"], name="mine")
    with pytest.raises(SchemeError, match="built-in schemes only"):
        SynthConfig(convention=custom)
    with pytest.raises(SchemeError, match="built-in schemes only"):
        case_id_for(1, "mine")
    for name in ("p_cavity", "p_cavity_only", "p_cyst"):
        with pytest.raises(ValueError, match=name):
            SynthConfig(**{name: -0.5})


def test_earlier_kinds_keep_their_cases_in_every_scheme() -> None:
    """A case that was neither resected nor given a cyst is the BraTS 2023 case (the same
    draws): only its names differ, and the paediatric scheme's labels."""
    same = {}
    for scheme in ("brats2020", "brats2023", "gli2024", "met2024", "ped2024"):
        config = SynthConfig(shape=TINY, seed=4, convention=scheme, p_cavity=0.0, p_cyst=0.0)
        same[scheme] = generate_case(2, config)
    glioma = same["brats2023"]
    for scheme in ("brats2020", "gli2024"):
        assert np.array_equal(same[scheme].label, glioma.label), scheme
        for m, image in glioma.images.items():
            assert np.array_equal(same[scheme].images[m], image), (scheme, m)
    # ped2024 relabels the glioma: its internal class 1 is ET, 2 NETC, 4 ED.
    ped = same["ped2024"]
    assert all(np.array_equal(ped.images[m], glioma.images[m]) for m in glioma.images)
    for glioma_class, ped_class in ((1, 2), (2, 4), (3, 1)):
        assert np.array_equal(ped.label == ped_class, glioma.label == glioma_class)


# --------------------------------------------------------------------------------------------
# Post-treatment glioma: the resection cavity


def _cases(scheme: str, n: int, **overrides: object) -> list[SynthCase]:
    config = SynthConfig(shape=(48, 48, 48), seed=5, convention=scheme, **overrides)
    return [generate_case(index, config) for index in range(1, n + 1)]


@pytest.mark.parametrize("share", [0.25, 0.5, 0.8])
def test_kind_ordinals_number_the_cases_of_a_kind_one_after_another(share: float) -> None:
    phase = kind_phases(3, 6)[3]
    assert kind_phases(3, 6)[:3] == kind_phases(3)
    ordinals = [kind_ordinal(i, share, phase) for i in range(200) if has_kind(i, share, phase)]
    assert ordinals == list(range(ordinals[0], ordinals[0] + len(ordinals)))
    # A kind within the kind has its exact share of any run of the kind's cases.
    inner = [has_kind(k, 0.25, 0.6) for k in ordinals]
    assert all(sum(inner[i : i + 4]) == 1 for i in range(len(inner) - 3))


def test_gli2024_resects_its_share_and_some_keep_no_tumor_core() -> None:
    scheme = SCHEMES["gli2024"]
    netc, snfh, et, rc = (scheme.class_index(n) for n in ("NETC", "SNFH", "ET", "RC"))
    cases = _cases("gli2024", 8)
    resected = [c for c in cases if c.cavity]
    # Half the cases are resected, and a quarter of those keep no tumor core: exact shares.
    assert len(resected) == 4 and sum(not c.residual for c in resected) == 1
    for case in cases:
        label = case.label
        assert (rc in label) == case.cavity, case.case_id
        assert (et in label) == case.enhancing, case.case_id
        if not case.cavity:
            continue
        cavity = label == rc
        ring = ndimage.binary_dilation(cavity) & ~cavity
        if case.residual:  # a rim of residual tumor around the cavity
            assert np.isin(label, (netc, et)).any()
            assert np.mean(np.isin(label[ring], (netc, et))) > 0.5, case.case_id
        else:  # cavity and edema only: {0, 2, 4} on disk
            assert not case.enhancing
            assert set(np.unique(to_disk(label, scheme)).tolist()) == {0, 2, 4}
            assert np.mean(label[ring] == snfh) > 0.5, case.case_id


def test_the_cavity_is_fluid_dark_on_t1_and_flair_bright_on_t2() -> None:
    config = SynthConfig(shape=(64, 64, 48), seed=2, convention="gli2024", p_cavity=1.0)
    case = generate_case(3, config)
    rc = SCHEMES["gli2024"].class_index("RC")
    img = {m: case.images[m].astype(np.float64) for m in case.images}
    brain = img["t1"] > 0
    normal = brain & (case.label == 0)
    wm = normal & (img["t1"] > np.percentile(img["t1"][normal], 80))  # brightest T1
    cavity = case.label == rc
    assert np.count_nonzero(cavity) >= 5
    assert img["t1"][cavity].mean() < 0.6 * img["t1"][wm].mean()
    assert img["flair"][cavity].mean() < 0.6 * img["flair"][wm].mean()
    assert img["t2"][cavity].mean() > 1.8 * img["t2"][wm].mean()
    assert img["t1ce"][cavity].mean() < 0.6 * img["t1ce"][wm].mean()  # no enhancement


@pytest.mark.parametrize("site", sorted(SITES))
def test_every_site_keeps_fluid_dark_on_t1_and_flair_and_bright_on_t2(site: str) -> None:
    factors = SITES[site].contrast
    for tissue, fluid in FLUID.items():
        look = {m: fluid[m] * factors.get(m, (1.0,))[0] for m in fluid}
        wm = {m: CONTRAST[m][2] * factors.get(m, (1.0,) * 3)[2] for m in fluid}
        assert look["t1"] < 0.6 * wm["t1"] and look["t1ce"] < 0.6 * wm["t1ce"]
        assert look["t2"] > 1.8 * wm["t2"]
        if tissue == CAVITY:  # a cyst's proteinaceous fluid need not be dark on FLAIR
            assert look["flair"] < 0.6 * wm["flair"]
    assert FLUID[CAVITY]["flair"] < FLUID[CYST]["flair"]  # the cavity is the more CSF-like


def test_met2024_has_cavities_and_smaller_lesions() -> None:
    scheme = SCHEMES["met2024"]
    met = _cases("met2024", 4, p_multifocal=0.0, p_cavity=0.0)
    glioma = _cases("brats2023", 4, p_multifocal=0.0)
    core = [
        np.mean([np.count_nonzero(np.isin(c.label, (1, 3))) for c in cases])
        for cases in (met, glioma)
    ]
    assert core[0] < core[1]
    resected = _cases("met2024", 4, p_cavity=1.0)
    assert all(scheme.class_index("RC") in c.label for c in resected)


# --------------------------------------------------------------------------------------------
# Paediatric tumor: the cyst


def test_ped2024_cyst_lies_inside_the_tumor_core_and_looks_like_fluid() -> None:
    scheme = SCHEMES["ped2024"]
    et, netc, cc = (scheme.class_index(n) for n in ("ET", "NETC", "CC"))
    cases = _cases("ped2024", 4)
    assert sum(c.cyst for c in cases) == 2  # p_cyst 0.5, exact
    for case in cases:
        label = case.label
        assert (cc in label) == case.cyst and (et in label) == case.enhancing
        if not case.cyst:
            continue
        cyst = label == cc
        # Walled in by tumor core: every neighbour of the cyst is TC (ET, NETC or CC).
        ring = ndimage.binary_dilation(cyst) & ~cyst
        assert np.all(np.isin(label[ring], (et, netc, cc))), case.case_id
        img = {m: case.images[m].astype(np.float64) for m in case.images}
        normal = (img["t1"] > 0) & (label == 0)
        wm = normal & (img["t1"] > np.percentile(img["t1"][normal], 80))
        assert img["t2"][cyst].mean() > 1.5 * img["t2"][wm].mean()
        assert img["t1"][cyst].mean() < 0.7 * img["t1"][wm].mean()
        assert img["t1ce"][cyst].mean() < 0.7 * img["t1ce"][wm].mean()


# --------------------------------------------------------------------------------------------
# Meningioma radiotherapy: one target on T1ce


def test_menrt2024_is_an_enhancing_mass_against_the_brain_surface() -> None:
    for case in _cases("menrt2024", 3):
        assert set(case.images) == {"t1ce"} and set(np.unique(case.label).tolist()) == {0, 1}
        gtv = case.label == 1
        t1ce = case.images["t1ce"].astype(np.float64)
        brain = t1ce > 0
        assert not gtv[~brain].any()
        assert ndimage.label(gtv)[1] == 1, case.case_id  # one lesion
        surface = brain & ~ndimage.binary_erosion(brain)
        assert (gtv & surface).any(), case.case_id  # extra-axial: it reaches the surface
        assert t1ce[gtv].mean() > 1.4 * t1ce[brain & ~gtv].mean(), case.case_id


# --------------------------------------------------------------------------------------------
# The command line, the faults and the demo


def test_brats_synth_takes_label_scheme_and_still_convention(tmp_path: Path) -> None:
    argv = ["--cases", "2", "--shape", "32", "32", "32"]
    assert run_synth([str(tmp_path / "gli"), "--label-scheme", "gli2024", *argv]) == 0
    assert sorted(p.name for p in (tmp_path / "gli").iterdir()) == [
        "BraTS-GLI-00001-100",
        "BraTS-GLI-00002-100",
    ]
    assert run_synth([str(tmp_path / "old"), "--convention", "brats2023", *argv]) == 0
    assert (tmp_path / "old" / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2f.nii.gz").is_file()
    parser = synth_parser()
    assert parser.parse_args(["out"]).__dict__["synth.convention"] == "brats2020"
    with pytest.raises(SystemExit):
        parser.parse_args(["out", "--convention", "gli2024"])  # as before: 2020 or 2023


@pytest.mark.parametrize(("scheme", "stray"), [("gli2024", 5), ("menrt2024", 3)])
def test_faults_follow_the_scheme(tmp_path: Path, scheme: str, stray: int) -> None:
    config = SynthConfig(shape=TINY, convention=scheme)
    assert stray_value(config) == stray
    folder = Path(write_faulty_case(tmp_path, "Case_stray", "stray_label", config))
    seg = nifti_data(folder / fault_file_name("Case_stray", "stray_label", config))
    assert stray in seg
    with pytest.raises(LabelError):
        to_internal(seg, scheme)
    folder = Path(write_faulty_case(tmp_path, "Case_zero", "all_zero", config))
    image = fault_file_name("Case_zero", "all_zero", config)
    assert image == file_name("Case_zero", "t1" if scheme == "gli2024" else "t1ce", config)
    assert not nifti_data(folder / image).any()


def test_the_demo_passes_its_label_scheme_to_the_cohort() -> None:
    command = parse_config(DemoCommand, demo_parser().parse_args(["--label-scheme", "ped2024"]))
    assert command.demo().label_scheme == "ped2024"
    small = parse_config(DemoCommand, demo_parser().parse_args(["--small"]))
    assert small.demo().label_scheme == "brats2020"


def test_the_demo_network_is_wider_for_schemes_with_more_region_outputs() -> None:
    def demo(*argv: str) -> DemoConfig:
        return parse_config(DemoCommand, demo_parser().parse_args(list(argv))).demo()

    assert [demo("--label-scheme", s).filters for s in ("brats2020", "menrt2024")] == [8, 8]
    wide = demo("--label-scheme", "gli2024")
    assert wide.filters == 16 and wide.settings()["base_filters"] == 16
    assert wide.training("c", "r", "n").base_filters == 16
    assert demo("--label-scheme", "gli2024", "--base-filters", "8").filters == 8
    assert demo("--small", "--label-scheme", "ped2024").filters == 4  # the small size's own
