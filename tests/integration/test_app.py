"""The Gradio app: hostile uploads refused before any allocation (RELIABILITY row 12), NIfTI
uploads, prediction with real (tiny) model artifacts, rendering, volumes, and the running server
driven through gradio_client."""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import struct
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from brats.app import (
    LABEL_COLOURS,
    UploadError,
    UploadLimits,
    build_app,
    display_volume,
    legend_html,
    load_nifti_upload,
    load_npy_upload,
    load_upload,
    predict_volume,
    read_npy_header,
    region_volumes_ml,
    render_slice,
    segment_upload,
    select_channels,
    serve,
)
from brats.artifact import ModelInfo, load_artifact, save_artifact
from brats.cases import MODALITIES, SEED_MODALITIES, discover
from brats.labels import ED, ET, NCR
from brats.model import UNetConfig, build_unet
from brats.nifti import read_case
from brats.preprocess import PreprocessConfig, paste_back, prepare_case
from brats.storage import resolve
from brats.synth import SynthConfig, generate_cohort, huge_header_nifti
from tests.conftest import _free_port
from tests.test_segment import train_tiny_model

SHAPE = (32, 32, 24)
WAIT_S = 60


# --- fixtures: a tiny cohort, a trained 4-channel model, a 3-channel (seed-mode) model ---------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("app-cohort")
    generate_cohort(root, 2, SynthConfig(shape=SHAPE, seed=7))
    return root


@pytest.fixture(scope="module")
def case_files(cohort):
    """modality -> path of the first case's files."""
    case = discover(resolve(str(cohort))).cases[0]
    return {m: Path(p) for m, p in case.images.items()}


@pytest.fixture(scope="module")
def model4(tmp_path_factory, cohort):
    """FLAIR, T1, T1ce, T2; z-score; trained a few steps."""
    return train_tiny_model(cohort, str(tmp_path_factory.mktemp("model4")), seed=0, steps=4)


@pytest.fixture(scope="module")
def model3(tmp_path_factory):
    """The seed's mode: FLAIR, T1ce, T2 with min-max scaling (untrained weights)."""
    where = str(tmp_path_factory.mktemp("model3"))
    unet = UNetConfig(base_filters=4, depth=2, in_channels=3)
    info = ModelInfo(
        unet=unet, modalities=SEED_MODALITIES, normalization="minmax", patch_size=(16, 16, 16)
    )
    save_artifact(build_unet(unet), info, where)
    return where


def brain_volume(shape=(20, 24, 18), channels=3, seed=0):
    """``(D, H, W, C) float32``: a bright box (the "brain") in a zero background."""
    rng = np.random.default_rng(seed)
    vol = np.zeros((*shape, channels), np.float32)
    vol[4:16, 4:20, 3:15] = rng.random((12, 16, 12, channels), dtype=np.float32) + 0.5
    return vol


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


def peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# --- hostile .npy uploads (RELIABILITY row 12) -------------------------------------------------


class Payload:
    """Unpickling this would create a marker file: proof that something ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_pickled_object_array_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "executed"
    array = np.empty((4, 4, 4, 3), dtype=object)
    array[...] = Payload(marker)
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


# --- good .npy uploads --------------------------------------------------------------------------


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
        load_upload([tmp_path / "four.npy", tmp_path / "three.npy"], MODALITIES)
    with pytest.raises(UploadError, match="no file uploaded"):
        load_upload([], MODALITIES)


# --- NIfTI uploads ------------------------------------------------------------------------------


def test_nifti_upload_reads_the_case_in_model_order(case_files):
    # Listed in a shuffled order, as a browser might send them.
    paths = [case_files[m] for m in ("t2", "flair", "t1ce", "t1")]
    upload = load_nifti_upload(paths, MODALITIES)
    assert upload.image.shape == (4, *SHAPE) and upload.modalities == MODALITIES
    assert upload.spacing == pytest.approx((240 / 32, 240 / 32, 155 / 24))
    three = load_nifti_upload(paths, SEED_MODALITIES)
    np.testing.assert_array_equal(three.image, upload.image[[0, 2, 3]])


def test_nifti_upload_takes_2023_names(tmp_path, case_files):
    tokens = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
    paths = []
    for modality, token in tokens.items():
        # Each upload lands in its own folder on the server.
        folder = tmp_path / token
        folder.mkdir()
        name = f"BraTS-GLI-00001-000-{token}.nii.gz"
        paths.append(shutil.copy(case_files[modality], folder / name))
    upload = load_nifti_upload(paths, MODALITIES)
    assert upload.source == "BraTS-GLI-00001-000"
    same = load_nifti_upload(list(case_files.values()), MODALITIES)
    np.testing.assert_array_equal(upload.image, same.image)


def test_bad_nifti_uploads_say_what_is_wrong(tmp_path, case_files):
    flair, t1ce, t2 = case_files["flair"], case_files["t1ce"], case_files["t2"]
    with pytest.raises(UploadError, match=r"missing modality t1"):
        load_nifti_upload([flair, t1ce, t2], MODALITIES)
    other = tmp_path / "Other_001_t1.nii.gz"
    shutil.copy(case_files["t1"], other)
    with pytest.raises(UploadError, match="belong to 2 cases"):
        load_nifti_upload([flair, t1ce, t2, other], MODALITIES)
    stray = tmp_path / "brain.nii.gz"
    shutil.copy(flair, stray)
    with pytest.raises(UploadError, match=r"brain\.nii\.gz: file name names no modality"):
        load_nifti_upload([stray], MODALITIES)
    with pytest.raises(UploadError, match="not a NIfTI file name"):
        load_nifti_upload([tmp_path / "notes.txt"], MODALITIES)
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
            load_nifti_upload(files, SEED_MODALITIES)
        message = str(info.value)

    assert peak_bytes(load) < 4 << 20
    assert "X_flair.nii.gz" in message


# --- prediction, volumes, rendering ---------------------------------------------------------------


def test_app_predicts_what_the_batch_job_predicts(model4, cohort, case_files):
    from brats.segment import CasePredictor

    loaded = load_artifact(model4)
    upload = load_nifti_upload(list(case_files.values()), loaded.card.info.modalities)
    labels = predict_volume(loaded, upload.image)
    assert labels.shape == SHAPE and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3}

    case = discover(resolve(str(cohort))).cases[0]
    unlabeled = replace(case, seg=None)
    prepared = prepare_case(
        read_case(unlabeled, resolve(str(cohort)), modalities=MODALITIES), PreprocessConfig()
    )
    image = np.empty(1, dtype=object)
    image[0] = prepared.image
    batch = {"status": np.array(["ok"]), "case_id": np.array([case.case_id]), "image": image}
    job = paste_back(CasePredictor(model4, None, 2, 0.5, False)(batch)["pred"][0], prepared.crop)
    assert labels.any()  # the comparison covers tumor voxels, not only background
    np.testing.assert_array_equal(labels, job)
    outside = np.ones(SHAPE, bool)
    outside[prepared.crop.slices] = False
    assert not labels[outside].any()  # pasted back: nothing outside the brain's box


def test_segment_upload_with_a_seed_mode_model(tmp_path, model3):
    loaded = load_artifact(model3)
    np.save(tmp_path / "case.npy", brain_volume(channels=4))  # FLAIR, T1, T1ce, T2
    result = segment_upload(loaded, [tmp_path / "case.npy"])
    assert result.labels.shape == (20, 24, 18) and result.used == SEED_MODALITIES
    assert result.display.shape == (4, 20, 24, 18) and result.display.dtype == np.uint8
    assert result.volumes_ml == region_volumes_ml(result.labels, (1.0, 1.0, 1.0))
    assert not result.labels[:4].any() and not result.labels[16:].any()
    np.save(tmp_path / "zeros.npy", np.zeros((8, 8, 8, 3), np.float32))
    with pytest.raises(UploadError, match="every voxel is zero"):
        segment_upload(loaded, [tmp_path / "zeros.npy"])


def test_region_volumes_in_ml():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels.flat[:10] = NCR
    labels.flat[10:30] = ED
    labels.flat[30:35] = ET
    volumes = region_volumes_ml(labels, (1.0, 2.0, 0.5))  # 1 mm^3 voxels
    assert volumes == pytest.approx({"WT": 0.035, "TC": 0.015, "ET": 0.005})
    assert region_volumes_ml(labels, (2.0, 2.0, 2.0))["WT"] == pytest.approx(0.28)
    assert region_volumes_ml(np.zeros((3, 3, 3), np.uint8), (1, 1, 1)) == {
        "WT": 0.0,
        "TC": 0.0,
        "ET": 0.0,
    }


def test_render_slice_shapes_orientation_and_colours():
    image = np.zeros((3, 10, 12, 14), np.float32)
    image[1] = np.arange(14, dtype=np.float32)  # brighter along z
    display = display_volume(image)
    assert display.dtype == np.uint8 and display[0].max() == 0  # an empty channel stays black
    labels = np.zeros((10, 12, 14), np.uint8)
    labels[2, 3, 4] = NCR
    labels[2, 3, 5] = ED
    labels[2, 3, 6] = ET
    shapes = {"axial": (12, 10, 3), "coronal": (14, 10, 3), "sagittal": (14, 12, 3)}
    for axis, shape in shapes.items():
        picture = render_slice(display, labels, 1, axis, 5, True)
        assert picture.shape == shape and picture.dtype == np.uint8, axis
    # Sagittal slice x=2: rows run down z (superior at the top), columns along y.
    plain = render_slice(display, labels, 1, "sagittal", 2, False)
    masked = render_slice(display, labels, 1, "sagittal", 2, True)
    assert (plain[..., 0] == plain[..., 1]).all() and (plain[..., 1] == plain[..., 2]).all()
    assert plain[0, 0, 0] > plain[-1, 0, 0]  # z = 13 on top is brighter than z = 0
    for z, cls in ((4, NCR), (5, ED), (6, ET)):
        row, col = 13 - z, 3
        grey = float(plain[row, col, 0])
        expected = 0.55 * grey + 0.45 * np.asarray(LABEL_COLOURS[cls])
        np.testing.assert_allclose(masked[row, col], expected, atol=0.51)
    untouched = np.ones(plain.shape[:2], bool)
    untouched[[9, 8, 7], 3] = False
    np.testing.assert_array_equal(masked[untouched], plain[untouched])
    # A float image gets its own window; an index past the end shows the last slice.
    np.testing.assert_array_equal(render_slice(image, None, 1, "axial", 99, True),
                                  render_slice(display, labels, 1, "axial", 13, True))  # fmt: skip
    with pytest.raises(ValueError, match="axis must be"):
        render_slice(display, labels, 0, "oblique", 0)
    assert all(f"rgb({r},{g},{b})" in legend_html() for r, g, b in LABEL_COLOURS.values())
    assert "enhancing tumor" in legend_html()


# --- the running app ------------------------------------------------------------------------------


def test_running_app_segments_refuses_bad_uploads_and_keeps_serving(tmp_path, model3):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    good = tmp_path / "case.npy"
    np.save(good, brain_volume(channels=3))
    evil = tmp_path / "evil.npy"
    marker = tmp_path / "executed"
    array = np.empty((4, 4, 4, 3), dtype=object)
    array[...] = Payload(marker)
    np.save(evil, array, allow_pickle=True)

    app = build_app(model3)
    port = _free_port()
    serve(app, port=port, prevent_thread_lock=True, quiet=True)
    client = None
    try:
        client = Client(
            f"http://127.0.0.1:{port}/",
            verbose=False,
            download_files=str(tmp_path / "downloads"),
            analytics_enabled=False,
            httpx_kwargs={"timeout": WAIT_S},
        )

        def segment(path):
            job = client.submit([handle_file(str(path))], "axial", api_name="/segment")
            return job.result(timeout=WAIT_S)

        picture, volumes, status, slider, channels = segment(good)
        assert set(volumes) == {"WT", "TC", "ET"}
        assert "case.npy: 3 channels (flair, t1ce, t2)" in status
        assert slider["maximum"] == 17 and slider["value"] == 9
        assert [c[0] for c in channels["choices"]] == list(SEED_MODALITIES)
        assert _png_size(picture) == (20, 24)  # axial of (20, 24, 18): 24 rows, 20 columns

        job = client.submit("t2", "sagittal", 10, True, api_name="/render")
        assert _png_size(job.result(timeout=WAIT_S)) == (24, 18)

        with pytest.raises(AppError, match=r"evil\.npy: dtype object holds Python objects"):
            segment(evil)
        assert not marker.exists()

        _, again, status, _, _ = segment(good)
        assert again == volumes and "case.npy" in status
    finally:
        if client is not None:
            client.close()
        app.close(verbose=False)


def _png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    data = Path(path).read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height
