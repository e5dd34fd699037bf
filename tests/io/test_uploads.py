"""Uploads the app accepts (brats.io.uploads): hostile files refused before any allocation,
good ones read as the volume they hold."""

from __future__ import annotations

import io
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from brats.devtools.faults import huge_header_nifti
from brats.devtools.synth import SynthConfig, generate_cohort
from brats.io.cases import MODALITIES, SEED_MODALITIES, discover
from brats.io.nifti import read_case
from brats.io.uploads import (
    UploadError,
    UploadLimits,
    check_nifti_upload,
    load_npy_upload,
    read_npy_header,
    select_channels,
    upload_kind,
)
from brats.storage import resolve
from tests.helpers import PickledPayload, brain_volume, peak_bytes

SHAPE = (32, 32, 24)


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    """modality (and "seg") -> path of a generated case's files."""
    root = tmp_path_factory.mktemp("upload-cohort")
    generate_cohort(root, 1, SynthConfig(shape=SHAPE, seed=7))
    case = discover(resolve(str(root))).cases[0]
    return {**{m: Path(p) for m, p in case.images.items()}, "seg": Path(case.seg)}


def npy_header_only(path, shape, descr="<f4", fortran=False, data=b""):
    """A .npy file whose header says ``shape``/``descr`` followed by ``data`` (no array)."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": descr, "fortran_order": fortran, "shape": tuple(shape)}
        )
        fh.write(data)
    return path


def npy_v1(header: bytes) -> bytes:
    """Version 1.0 magic, the header's exact length, the header."""
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def refused(path, match, limits=None):
    with pytest.raises(UploadError, match=match) as info:
        load_npy_upload(path, limits or UploadLimits())
    assert os.path.basename(path) in str(info.value)  # the message names the file
    return str(info.value)


def test_pickled_object_array_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "executed"
    array = np.empty((4, 4, 4, 3), dtype=object)
    array[...] = PickledPayload(marker)
    path = tmp_path / "evil.npy"
    np.save(path, array, allow_pickle=True)
    message = refused(path, "Python objects")
    assert "float32" in message  # says what is accepted
    assert not marker.exists()


@pytest.mark.parametrize(
    ("shape", "descr", "match"),
    [
        ((512, 512, 512, 4), "<f4", "over the limit"),  # 2 GiB declared
        ((10**9, 10**9, 10**9, 3), "<f4", "each axis must be"),
        ((3, 2**40, 2**40, 2**40), "|u1", "each axis must be"),
    ],
)
def test_tiny_file_declaring_a_huge_array_is_refused_before_allocation(
    tmp_path, shape, descr, match
):
    path = npy_header_only(tmp_path / "huge.npy", shape, descr, data=b"\0" * 64)
    assert path.stat().st_size <= 256
    assert peak_bytes(lambda: refused(path, match)) < 2 << 20


def test_huge_header_length_is_refused_before_numpy_reads_it(tmp_path):
    path = tmp_path / "long-header.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{'descr':")
    assert peak_bytes(lambda: refused(path, "header of 2147483648 bytes")) < 2 << 20


def test_header_that_promises_more_data_than_the_file_holds(tmp_path):
    path = npy_header_only(tmp_path / "short.npy", (64, 64, 64, 3), data=b"\0" * 16)
    assert peak_bytes(lambda: refused(path, "truncated or not what it says")) < 2 << 20
    longer = tmp_path / "longer.npy"
    np.save(longer, brain_volume())
    with open(longer, "ab") as fh:
        fh.write(b"trailing")
    refused(longer, "not what it says")


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((4, 4, 4, 3), np.complex64),
        np.zeros((4, 4, 4, 3), np.int64),
        np.zeros((4, 4, 4, 3), np.bool_),
        np.zeros((4, 4, 4, 3), [("a", "<f4"), ("b", "<i2")]),
        np.zeros((4, 4, 4, 3), "U4"),
    ],
    ids=["complex64", "int64", "bool", "structured", "unicode"],
)
def test_wrong_dtype_is_refused(tmp_path, array):
    path = tmp_path / "typed.npy"
    np.save(path, array)
    assert "use one of float16, float32" in refused(path, "is not supported")


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((32, 32, 32), "has 3 axes"),
        ((2, 32, 32, 32, 3), "has 5 axes"),
        ((32, 32, 32, 5), "no channel axis of 3 or 4"),
    ],
)
def test_wrong_ndim_or_channels_is_refused(tmp_path, shape, match):
    path = tmp_path / "shape.npy"
    np.save(path, np.zeros(shape, np.float32))
    refused(path, match)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (b"hello, this is not an array", "not a .npy file"),
        (b"\x1f\x8b\x08\x00" + b"\0" * 100, "not a .npy file"),  # gzip bytes
        (b"\x93NUMPY\x03\x00" + b"\0" * 20, "version"),
        (b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}", "unreadable .npy header"),
        (npy_v1(b"__import__('os').system('touch executed')"), "unreadable .npy header"),
        (npy_v1(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2, 3), 'x': 1}"),
         "unreadable .npy header"),
    ],
    ids=["empty", "text", "gzip", "v3", "bad-dict", "code", "extra-key"],
)  # fmt: skip
def test_non_npy_bytes_are_refused(tmp_path, content, match):
    path = tmp_path / "upload.npy"
    path.write_bytes(content)
    refused(path, match)


def test_oversize_volume_is_refused(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.zeros((32, 32, 32, 4), np.int8))  # 128 KiB stored, 512 KiB as float32
    refused(path, "over the limit of 262144 bytes", UploadLimits(max_bytes=256 << 10))
    refused(path, r"each axis must be 1\.\.16", UploadLimits(max_dim=16))
    assert load_npy_upload(path, UploadLimits(max_bytes=512 << 10)).image.shape == (4, 32, 32, 32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_refused(tmp_path, bad):
    vol = brain_volume()
    vol[5, 5, 5, 1] = bad
    vol[6, 6, 6, 2] = bad
    path = tmp_path / "nan.npy"
    np.save(path, vol)
    refused(path, "2 voxels are NaN or infinite")


def test_header_reader_reads_only_the_header():
    buf = io.BytesIO()
    np.save(buf, np.zeros((5, 6, 7, 3), ">f2"))
    buf.seek(0)
    header = read_npy_header(buf, "x.npy")
    assert header.shape == (5, 6, 7, 3) and header.dtype == np.dtype(">f2")
    assert buf.tell() == header.offset and header.offset % 64 == 0


def test_npy_layouts_and_dtypes_give_the_same_volume(tmp_path):
    vol = np.rint(brain_volume() * 100)  # whole numbers: exact in every allowed dtype
    expected = np.moveaxis(vol, -1, 0)
    variants = {
        "last.npy": vol,
        "first.npy": np.moveaxis(vol, -1, 0).copy(),
        "fortran.npy": np.asfortranarray(vol),
        "big-endian.npy": vol.astype(">f8"),
        "int16.npy": vol.astype(np.int16),
        "uint16.npy": vol.astype(np.uint16),
        "float16.npy": vol.astype(np.float16),
    }
    for name, array in variants.items():
        np.save(tmp_path / name, array)
        upload = load_npy_upload(tmp_path / name)
        assert upload.image.dtype == np.float32 and upload.image.flags.c_contiguous, name
        np.testing.assert_array_equal(upload.image, expected, err_msg=name)
        assert upload.modalities == SEED_MODALITIES and upload.spacing == (1.0, 1.0, 1.0)
    np.save(tmp_path / "four.npy", brain_volume(channels=4))
    assert load_npy_upload(tmp_path / "four.npy").modalities == MODALITIES


def test_channels_must_fit_the_model(tmp_path):
    np.save(tmp_path / "four.npy", brain_volume(channels=4))
    np.save(tmp_path / "three.npy", brain_volume(channels=3))
    four = load_npy_upload(tmp_path / "four.npy")
    picked = select_channels(four, SEED_MODALITIES)  # a 3-channel model takes FLAIR/T1ce/T2
    np.testing.assert_array_equal(picked, four.image[[0, 2, 3]])
    three = load_npy_upload(tmp_path / "three.npy")
    with pytest.raises(UploadError, match=r"model takes 4 channels .* has 3 .* missing t1$"):
        select_channels(three, MODALITIES)
    with pytest.raises(UploadError, match=r"one \.npy file alone"):
        upload_kind([tmp_path / "four.npy", tmp_path / "three.npy"])
    with pytest.raises(UploadError, match="no file uploaded"):
        upload_kind([])
    assert upload_kind([tmp_path / "four.npy"]) == "npy"
    assert upload_kind([tmp_path / "a_t1.nii.gz", tmp_path / "a_t2.nii"]) == "nifti"


def read(checked, modalities):
    return read_case(checked.case, checked.location, modalities=modalities, limits=checked.limits)


def test_nifti_upload_is_one_case_of_the_model_channels(case_files):
    # Listed in a shuffled order, as a browser might send them; a segmentation is ignored.
    paths = [case_files[m] for m in ("t2", "flair", "seg", "t1ce", "t1")]
    checked = check_nifti_upload(paths, MODALITIES)
    assert set(checked.case.images) == set(MODALITIES) and checked.case.seg is None
    volumes = read(checked, MODALITIES)
    assert volumes.spacing == pytest.approx((240 / 32, 240 / 32, 155 / 24))
    three = check_nifti_upload(paths, SEED_MODALITIES)
    assert set(three.case.images) == set(SEED_MODALITIES)
    assert three.limits.max_bytes == UploadLimits().max_bytes // 3


def test_nifti_upload_takes_2023_names(tmp_path, case_files):
    tokens = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
    paths = []
    for modality, token in tokens.items():
        # Each upload lands in its own folder on the server.
        folder = tmp_path / token
        folder.mkdir()
        name = f"BraTS-GLI-00001-000-{token}.nii.gz"
        paths.append(shutil.copy(case_files[modality], folder / name))
    checked = check_nifti_upload(paths, MODALITIES)
    assert checked.case.case_id == "BraTS-GLI-00001-000"
    same = check_nifti_upload([case_files[m] for m in MODALITIES], MODALITIES)
    for m in MODALITIES:
        np.testing.assert_array_equal(
            read(checked, MODALITIES).images[m], read(same, MODALITIES).images[m]
        )


def test_bad_nifti_uploads_say_what_is_wrong(tmp_path, case_files):
    flair, t1ce, t2 = case_files["flair"], case_files["t1ce"], case_files["t2"]
    with pytest.raises(UploadError, match=r"_t1\.nii\.gz: missing modality t1$"):
        check_nifti_upload([flair, t1ce, t2], MODALITIES)
    other = tmp_path / "Other_001_t1.nii.gz"
    shutil.copy(case_files["t1"], other)
    with pytest.raises(UploadError, match="belong to 2 cases"):
        check_nifti_upload([flair, t1ce, t2, other], MODALITIES)
    stray = tmp_path / "brain.nii.gz"
    shutil.copy(flair, stray)
    with pytest.raises(UploadError, match=r"brain\.nii\.gz: file name names no modality"):
        check_nifti_upload([stray], MODALITIES)
    with pytest.raises(UploadError, match="not a NIfTI file name"):
        check_nifti_upload([tmp_path / "notes.txt"], MODALITIES)
    huge = tmp_path / "huge" / "X_flair.nii.gz"
    huge.parent.mkdir()
    huge.write_bytes(huge_header_nifti(np.eye(4), compress=True))
    for m in ("t1ce", "t2"):
        shutil.copy(case_files[m], huge.parent / f"X_{m}.nii.gz")
    files = sorted(huge.parent.iterdir())
    message = ""

    def load():
        nonlocal message
        with pytest.raises(UploadError, match="over the limit") as info:
            check_nifti_upload(files, SEED_MODALITIES)
        message = str(info.value)

    assert peak_bytes(load) < 4 << 20
    assert "X_flair.nii.gz" in message
