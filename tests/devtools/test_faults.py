"""Corrupt inputs on purpose (brats.devtools.faults): each writes the fault it claims."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from brats.devtools.faults import FAULTS, HUGE_SHAPE, fault_file_name, write_faulty_case
from brats.devtools.synth import SynthConfig, file_name
from brats.io.cases import discover
from brats.storage import resolve
from brats.volume.labels import LabelError, to_internal
from tests.helpers import folder_files, nifti_data, nifti_header


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
    assert nifti_data(flair).shape == (32, 32, 32)  # the other files stay valid
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
        assert nifti_header(path).get_data_shape() != nifti_header(flair).get_data_shape()
    elif fault == "affine_mismatch":
        diff = nifti_header(path).get_best_affine() - nifti_header(flair).get_best_affine()
        assert np.allclose(np.abs(diff).max(), 5.0)
    elif fault in ("nan", "inf"):
        data = nifti_data(path)
        assert data.dtype == np.float32
        bad = np.isnan(data) if fault == "nan" else np.isinf(data)
        assert np.count_nonzero(bad) > 0 and np.all(np.isfinite(data[~bad]))
    elif fault == "all_zero":
        assert not np.any(nifti_data(path))
    elif fault == "huge_header":
        assert path.stat().st_size < 1024
        header = nifti_header(path)
        assert header.get_data_shape() == HUGE_SHAPE
        assert np.prod(HUGE_SHAPE) * header.get_data_dtype().itemsize > 2**30
    elif fault == "stray_label":
        seg = nifti_data(path)
        assert 3 in seg
        with pytest.raises(LabelError):
            to_internal(seg, "brats2020")
    else:
        pytest.fail(f"fault {fault} has no check")


def test_faults_are_reproducible_and_discovered(faulty_root: Path, tmp_path: Path) -> None:
    config = SynthConfig(shape=(32, 32, 32))
    write_faulty_case(tmp_path, "Faulty_nan", "nan", config)
    assert folder_files(tmp_path / "Faulty_nan") == folder_files(faulty_root / "Faulty_nan")
    found = discover(resolve(str(faulty_root)))
    assert len(found.cases) == len(FAULTS)
    missing = next(c for c in found.cases if c.case_id == "Faulty_missing_modality")
    assert "t1ce" not in missing.images


def test_stray_label_in_2023_and_bad_fault(tmp_path: Path) -> None:
    config = SynthConfig(shape=(32, 32, 32), convention="brats2023", labeled=False)
    folder = Path(write_faulty_case(tmp_path, "BraTS-GLI-00009-000", "stray_label", config))
    seg = nifti_data(folder / "BraTS-GLI-00009-000-seg.nii.gz")
    assert 5 in seg and 4 not in seg
    with pytest.raises(ValueError, match="unknown fault"):
        write_faulty_case(tmp_path, "x", "gremlins", config)
    with pytest.raises(ValueError, match="invalid case id"):
        write_faulty_case(tmp_path, "../x", "nan", config)
