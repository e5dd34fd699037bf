"""The Gradio app with real (tiny) model artifacts: uploads segmented through the predictor,
and the running server driven through gradio_client, hostile uploads included."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from brats.app import AppConfig, build_app, segment_upload, serve
from brats.devtools.synth import SynthConfig, generate_cohort
from brats.io.artifact import save_artifact
from brats.io.cases import MODALITIES, SEED_MODALITIES, discover
from brats.io.model_card import ModelInfo
from brats.io.uploads import UploadError
from brats.network.unet import UNetConfig, build_unet
from brats.segment.predictor import Predictor
from brats.storage import resolve
from brats.volume.labels import to_internal
from brats.volume.postprocess import region_volumes_ml
from tests.helpers import PickledPayload, brain_volume, free_port, nifti_data

SHAPE = (32, 32, 24)
WAIT_S = 60


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    """modality -> path of a generated case's files."""
    root = tmp_path_factory.mktemp("app-cohort")
    generate_cohort(root, 1, SynthConfig(shape=SHAPE, seed=7))
    case = discover(resolve(str(root))).cases[0]
    return {m: Path(p) for m, p in case.images.items()}


@pytest.fixture(scope="module")
def model3(tmp_path_factory):
    """FLAIR, T1ce, T2 with min-max scaling, untrained (seeded) weights."""
    import keras

    where = str(tmp_path_factory.mktemp("model3"))
    keras.utils.set_random_seed(3)
    unet = UNetConfig(base_filters=4, depth=2, in_channels=3)
    info = ModelInfo(
        unet=unet, modalities=SEED_MODALITIES, normalization="minmax", patch_size=(16, 16, 16)
    )
    save_artifact(build_unet(unet), info, where)
    return where


def test_an_array_upload_is_segmented_in_its_own_grid(tmp_path, model3):
    predictor = Predictor.from_artifact(model3)
    np.save(tmp_path / "case.npy", brain_volume(channels=4))  # FLAIR, T1, T1ce, T2
    result = segment_upload(predictor, [tmp_path / "case.npy"])
    assert result.labels.shape == (20, 24, 18) and result.used == SEED_MODALITIES
    assert result.display.shape == (4, 20, 24, 18) and result.display.dtype == np.uint8
    assert result.volumes_ml == region_volumes_ml(result.labels, (1.0, 1.0, 1.0))
    assert result.labels.any() and result.mask is None  # an array has no geometry to write
    assert not result.labels[:4].any() and not result.labels[16:].any()  # the brain's box
    np.save(tmp_path / "zeros.npy", np.zeros((8, 8, 8, 3), np.float32))
    with pytest.raises(UploadError, match="every voxel is zero"):
        segment_upload(predictor, [tmp_path / "zeros.npy"])


def test_a_nifti_upload_gives_its_mask_in_the_case_geometry(tmp_path, model3, case_files):
    predictor = Predictor.from_artifact(model3)
    result = segment_upload(predictor, list(case_files.values()))
    assert result.source == "BraTS20_Training_001" and result.modalities == SEED_MODALITIES
    assert result.display.shape == (3, *SHAPE)
    assert result.mask is not None
    (tmp_path / "mask.nii.gz").write_bytes(result.mask)
    disk = nifti_data(tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(to_internal(disk, "brats2020"), result.labels)
    bad = dict(case_files)
    bad["t2"] = tmp_path / "BraTS20_Training_001_t2.nii.gz"
    bad["t2"].write_bytes(case_files["t2"].read_bytes()[:500])
    with pytest.raises(UploadError, match=r"BraTS20_Training_001_t2\.nii\.gz: corrupt or trunc"):
        segment_upload(predictor, list(bad.values()))
    with pytest.raises(UploadError, match="missing modality t1ce"):
        segment_upload(predictor, [case_files[m] for m in ("flair", "t2")])
    assert set(MODALITIES) == set(case_files)


def test_running_app_segments_refuses_bad_uploads_and_keeps_serving(tmp_path, model3, case_files):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    good = tmp_path / "case.npy"
    np.save(good, brain_volume(channels=3))
    evil = tmp_path / "evil.npy"
    marker = tmp_path / "executed"
    array = np.empty((4, 4, 4, 3), dtype=object)
    array[...] = PickledPayload(marker)
    np.save(evil, array, allow_pickle=True)

    app = build_app(AppConfig(model=model3, predict=Predictor.from_artifact(model3).settings))
    port = free_port()
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

        def segment(*paths):
            files = [handle_file(str(p)) for p in paths]
            return client.submit(files, "axial", api_name="/segment").result(timeout=WAIT_S)

        picture, volumes, status, slider, channels, mask = segment(good)
        assert set(volumes) == {"WT", "TC", "ET"}
        assert "case.npy: 3 channels (flair, t1ce, t2)" in status
        assert slider["maximum"] == 17 and slider["value"] == 9
        assert [c[0] for c in channels["choices"]] == list(SEED_MODALITIES)
        assert _png_size(picture) == (20, 24)  # axial of (20, 24, 18): 24 rows, 20 columns
        assert mask is None

        job = client.submit("t2", "sagittal", 10, True, api_name="/render")
        assert _png_size(job.result(timeout=WAIT_S)) == (24, 18)

        with pytest.raises(AppError, match=r"evil\.npy: dtype object holds Python objects"):
            segment(evil)
        assert not marker.exists()

        _, again, status, _, _, _ = segment(good)
        assert again == volumes and "case.npy" in status

        *_, mask = segment(*case_files.values())
        expected = segment_upload(Predictor.from_artifact(model3), list(case_files.values()))
        assert Path(mask).name.endswith("BraTS20_Training_001_seg.nii.gz")
        assert Path(mask).read_bytes() == expected.mask
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


def test_the_app_serves_an_onnx_export_like_its_keras_model(tmp_path, model3, case_files):
    from brats.app import _introduction
    from brats.io.export import ExportConfig, export_model

    export_model(ExportConfig(model=model3, out=str(tmp_path / "onnx")))
    served = Predictor.from_artifact(str(tmp_path / "onnx"))  # --backend auto: ONNX Runtime
    assert "(onnxruntime, float32)" in _introduction(served)
    keras_result = segment_upload(Predictor.from_artifact(model3), list(case_files.values()))
    onnx_result = segment_upload(served, list(case_files.values()))
    differing = np.count_nonzero(onnx_result.labels != keras_result.labels)
    assert keras_result.labels.any() and differing <= 0.001 * keras_result.labels.size
