import gzip
import io

import nibabel as nib
import numpy as np
import pytest

from brats.errors import CaseError
from brats.io.cases import Case, Naming
from brats.io.nifti import (
    FRACTION_STEPS,
    Limits,
    encode_fractions,
    encode_mask,
    parse_header,
    read_case,
    read_volume,
)
from brats.storage import resolve

AFFINE = np.array([[-1.0, 0, 0, 90], [0, -1, 0, 126], [0, 0, 1, -72], [0, 0, 0, 1]])


def nifti_bytes(data, affine=AFFINE, gz=True, **header):
    img = nib.Nifti1Image(data, affine)
    for key, value in header.items():
        img.header[key] = value
    raw = img.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def test_reads_int16_and_float_with_geometry():
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    for gz in (True, False):
        vol = read_volume(nifti_bytes(data, gz=gz), case_id="c", file="c_t1.nii.gz")
        np.testing.assert_array_equal(vol.data, data)
        assert vol.data.dtype == np.int16
        np.testing.assert_allclose(vol.affine, AFFINE)
        assert vol.spacing == (1.0, 1.0, 1.0)


def test_scaling_is_applied_in_float32():
    data = np.arange(8, dtype=np.int16).reshape(2, 2, 2)
    img = nib.Nifti1Image(data, AFFINE)
    img.header.set_slope_inter(2.0, 1.0)
    raw = img.to_bytes()
    vol = read_volume(raw, case_id="c", file="f.nii")
    assert vol.data.dtype == np.float32
    np.testing.assert_allclose(vol.data, data * 2.0 + 1.0)


def test_big_endian_and_trailing_singleton_axis():
    data = np.arange(8, dtype=">f4").reshape(2, 2, 2, 1)
    vol = read_volume(nifti_bytes(data), case_id="c", file="f")
    assert vol.data.shape == (2, 2, 2)
    np.testing.assert_array_equal(vol.data, data[..., 0])


def test_nifti2_is_read():
    data = np.ones((3, 3, 3), np.float32)
    raw = nib.Nifti2Image(data, AFFINE).to_bytes()
    np.testing.assert_array_equal(read_volume(raw, case_id="c", file="f").data, data)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am not a nifti" * 3, "not a NIfTI file"),
        (gzip.compress(b"\x00" * 400), "not a NIfTI file"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt or truncated gzip"),
    ],
)
def test_garbage_is_named(raw, reason):
    with pytest.raises(CaseError, match=reason) as info:
        read_volume(raw, case_id="BraTS_1", file="BraTS_1_t1.nii.gz")
    assert str(info.value).startswith("case BraTS_1: BraTS_1_t1.nii.gz: ")


def test_truncated_gzip_is_detected():
    raw = nifti_bytes(np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
    with pytest.raises(CaseError, match="truncated"):
        read_volume(raw[: len(raw) // 2], case_id="c", file="f")
    with pytest.raises(CaseError, match="truncated"):
        read_volume(raw[:-4], case_id="c", file="f")  # only the gzip trailer is cut


def test_corrupt_voxel_stream_and_bad_checksum_are_named():
    data = np.random.default_rng(1).normal(size=(24, 24, 24)).astype(np.float32)
    raw = nifti_bytes(data)
    # Deflate data ruined past the header: the header parses, the voxels do not inflate.
    middle = len(raw) // 2
    ruined = raw[:middle] + bytes(b ^ 0x5A for b in raw[middle : middle + 64]) + raw[middle + 64 :]
    with pytest.raises(CaseError, match="corrupt or truncated gzip") as info:
        read_volume(ruined, case_id="c", file="c_t2.nii.gz")
    assert str(info.value).startswith("case c: c_t2.nii.gz: ")
    # Every byte inflates, but the gzip trailer's CRC does not match them.
    bad_crc = raw[:-8] + bytes(4) + raw[-4:]
    with pytest.raises(CaseError, match="CRC"):
        read_volume(bad_crc, case_id="c", file="c_t2.nii.gz")


def huge_header_bytes(shape=(4096, 4096, 4096), dtype=np.float32):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    raw = hdr.binaryblock + b"\x00" * 4 + b"\x00" * 16
    return gzip.compress(raw, mtime=0)


def test_huge_header_is_rejected_before_reading_data():
    import tracemalloc

    raw = huge_header_bytes()
    assert len(raw) < 200
    tracemalloc.start()
    with pytest.raises(CaseError, match="over the limit"):
        read_volume(raw, case_id="c", file="f.nii.gz")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5 << 20  # nothing near the 256 GiB the header declares


def test_shape_limits_and_dtypes():
    with pytest.raises(CaseError, match="each axis"):
        parse_header(
            huge_header_bytes((2000, 2, 2), np.uint8), case_id="c", file="f", limits=Limits()
        )
    with pytest.raises(CaseError, match="3-D"):
        read_volume(nifti_bytes(np.zeros((2, 2, 2, 2), np.int16)), case_id="c", file="f")
    with pytest.raises(CaseError, match="3-D"):
        read_volume(nifti_bytes(np.zeros((4, 4), np.int16)), case_id="c", file="f")
    with pytest.raises(CaseError, match="unsupported voxel type"):
        read_volume(nifti_bytes(np.zeros((2, 2, 2), np.complex64)), case_id="c", file="f")


def write_case(root, cid, arrays, affines=None):
    folder = root / cid
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    seg = None
    for name, data in arrays.items():
        aff = (affines or {}).get(name, AFFINE)
        path = folder / f"{cid}_{name}.nii.gz"
        path.write_bytes(nifti_bytes(data, aff))
        if name == "seg":
            seg = str(path)
        else:
            images[name] = str(path)
    return Case(cid, images, seg, Naming.BRATS2020)


def good_arrays(shape=(8, 8, 8)):
    rng = np.random.default_rng(1)
    arrays = {
        m: (rng.random(shape) * 100 + 1).astype(np.int16) for m in ("flair", "t1", "t1ce", "t2")
    }
    seg = np.zeros(shape, np.uint8)
    seg[2:4, 2:4, 2:4] = 4
    seg[4, 4, 4] = 1
    arrays["seg"] = seg
    return arrays


MODS = ("flair", "t1", "t1ce", "t2")


def test_read_case_validates_and_converts(tmp_path):
    case = write_case(tmp_path, "c1", good_arrays())
    vols = read_case(case, resolve(str(tmp_path)), modalities=MODS)
    assert list(vols.images) == list(MODS)
    assert all(v.dtype == np.float32 for v in vols.images.values())
    assert set(np.unique(vols.label)) == {0, 1, 3}
    assert set(vols.checksums) == {f"c1_{m}.nii.gz" for m in (*MODS, "seg")}


@pytest.mark.parametrize(
    ("mutate", "file", "reason"),
    [
        (lambda a: a.pop("t1ce"), "c1_t1ce.nii.gz", "missing modality t1ce"),
        (lambda a: a.__setitem__("t2", np.zeros((8, 8, 9), np.int16)), "c1_t2.nii.gz", "shape"),
        (
            lambda a: a.__setitem__("t1", np.zeros((8, 8, 8), np.int16)),
            "c1_t1.nii.gz",
            "all voxels",
        ),
        (
            lambda a: a.__setitem__("flair", np.full((8, 8, 8), np.nan, np.float32)),
            "c1_flair.nii.gz",
            "non-finite",
        ),
        (
            lambda a: a.__setitem__("t2", np.full((8, 8, 8), np.inf, np.float32)),
            "c1_t2.nii.gz",
            "non-finite",
        ),
        (lambda a: a["seg"].__setitem__((0, 0, 0), 3), "c1_seg.nii.gz", "not in the brats2020"),
    ],
)
def test_read_case_errors_name_case_file_and_reason(tmp_path, mutate, file, reason):
    arrays = good_arrays()
    mutate(arrays)
    case = write_case(tmp_path, "c1", arrays)
    with pytest.raises(CaseError, match=reason) as info:
        read_case(case, resolve(str(tmp_path)), modalities=MODS)
    assert info.value.case_id == "c1" and info.value.file == file


@pytest.mark.parametrize(
    ("zooms", "shown"),
    [
        ((0.0, 1.0, 1.0), "(0.0, 1.0, 1.0)"),  # a converter that left pixdim[1] empty
        ((1.0, -1.0, 1.0), "(1.0, -1.0, 1.0)"),
        ((1.0, 1.0, np.nan), "(1.0, 1.0, nan)"),
    ],
)
def test_read_case_refuses_voxel_sizes_not_positive_and_finite(tmp_path, zooms, shown):
    case = write_case(tmp_path, "c1", good_arrays())
    pixdim = np.array([1.0, *zooms, 1.0, 1.0, 1.0, 1.0], np.float32)
    flair = case.images["flair"]  # the first modality: the case's spacing is its
    with open(flair, "wb") as fh:
        fh.write(nifti_bytes(good_arrays()["flair"], pixdim=pixdim))
    with pytest.raises(CaseError, match="is not positive and finite") as info:
        read_case(case, resolve(str(tmp_path)), modalities=MODS)
    assert info.value.case_id == "c1" and info.value.file == "c1_flair.nii.gz"
    assert info.value.reason == f"voxel size (pixdim) {shown} is not positive and finite"


def test_affine_mismatch_is_an_error(tmp_path):
    shifted = AFFINE.copy()
    shifted[0, 3] += 5
    case = write_case(tmp_path, "c1", good_arrays(), affines={"t1": shifted})
    with pytest.raises(CaseError, match="affine differs") as info:
        read_case(case, resolve(str(tmp_path)), modalities=MODS)
    assert info.value.file == "c1_t1.nii.gz"
    tiny = AFFINE.copy()
    tiny[0, 3] += 1e-5  # float noise between files is tolerated
    case = write_case(tmp_path, "c2", good_arrays(), affines={"t1": tiny})
    read_case(case, resolve(str(tmp_path)), modalities=MODS)


def test_three_channel_mode_does_not_need_t1(tmp_path):
    arrays = good_arrays()
    arrays.pop("t1")
    case = write_case(tmp_path, "c1", arrays)
    vols = read_case(case, resolve(str(tmp_path)), modalities=("flair", "t1ce", "t2"))
    assert list(vols.images) == ["flair", "t1ce", "t2"]


def test_encode_mask_keeps_geometry_and_is_deterministic():
    src = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), AFFINE)
    src.header.set_zooms((1.0, 1.0, 1.5))
    affine = src.header.get_best_affine()
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1, 2, 3] = 4
    raw = encode_mask(labels, src.header)
    assert raw == encode_mask(labels, src.header)
    back = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels)
    np.testing.assert_allclose(back.affine, affine)
    assert back.header.get_zooms() == (1.0, 1.0, 1.5)
    assert io.BytesIO(raw).read(2) == b"\x1f\x8b"


def test_fractions_are_16_bit_in_the_sources_geometry_and_read_back_as_floats():
    src = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), AFFINE)
    src.header.set_zooms((1.0, 1.0, 1.5))
    values = np.random.default_rng(0).uniform(size=(4, 5, 6, 3)).astype(np.float32)
    values[0, 0, 0] = (0.0, 1.0, 0.5)
    raw = encode_fractions(values, src.header, description="brats probabilities: WT TC ET")
    assert raw == encode_fractions(values, src.header, description="brats probabilities: WT TC ET")
    back = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
    assert back.shape == (4, 5, 6, 3) and back.get_data_dtype() == np.int16
    np.testing.assert_allclose(back.get_fdata(), values, atol=0.5 / FRACTION_STEPS + 1e-7)
    assert tuple(back.get_fdata()[0, 0, 0]) == pytest.approx((0.0, 1.0, 0.5), abs=2e-5)
    np.testing.assert_allclose(back.affine, src.header.get_best_affine())
    assert back.header.get_zooms()[:3] == (1.0, 1.0, 1.5)
    assert back.header["descrip"].tobytes().rstrip(b"\0") == b"brats probabilities: WT TC ET"
    one = nib.Nifti1Image.from_bytes(gzip.decompress(encode_fractions(values[..., 1], src.header)))
    assert one.shape == (4, 5, 6)
    np.testing.assert_allclose(one.get_fdata(), values[..., 1], atol=0.5 / FRACTION_STEPS + 1e-7)
    with pytest.raises(ValueError, match="expected"):
        encode_fractions(values[None], src.header)
    with pytest.raises(ValueError, match="longer than 79"):
        encode_fractions(values, src.header, description="x" * 80)
