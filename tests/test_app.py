"""The app's viewer (brats.report.slices, through brats.app): grey levels, slices in each
view, the overlay and legend."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from brats.app import AppConfig, check_label_scheme, segment_upload
from brats.io.model_card import ArtifactError
from brats.report.slices import display_volume, legend_html, render_slice
from brats.volume.labels import (
    CLASS_COLOURS,
    DEFAULT,
    ED,
    ET,
    GLI2024,
    MENRT2024,
    NCR,
    PED2024,
    SchemeError,
)


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
        expected = 0.55 * grey + 0.45 * np.asarray(CLASS_COLOURS[cls])
        np.testing.assert_allclose(masked[row, col], expected, atol=0.51)
    untouched = np.ones(plain.shape[:2], bool)
    untouched[[9, 8, 7], 3] = False
    np.testing.assert_array_equal(masked[untouched], plain[untouched])
    # A float image gets its own window; an index past the end shows the last slice.
    np.testing.assert_array_equal(render_slice(image, None, 1, "axial", 99, True),
                                  render_slice(display, labels, 1, "axial", 13, True))  # fmt: skip
    with pytest.raises(ValueError, match="axis must be"):
        render_slice(display, labels, 0, "oblique", 0)
    assert all(f"rgb({r},{g},{b})" in legend_html() for r, g, b in CLASS_COLOURS.values())
    assert "enhancing tumor" in legend_html()


def test_the_legend_and_overlay_follow_the_models_scheme():
    legend = legend_html(MENRT2024)
    assert "GTV: gross tumor volume" in legend and "rgb(255,127,14)" in legend
    assert "enhancing" not in legend
    assert legend_html() == legend_html(DEFAULT) and "NETC: necrotic" in legend_html()
    ped = legend_html(PED2024)
    assert all(f"{c.name}: {c.text}" in ped for c in PED2024.classes)
    display = np.full((1, 4, 4, 4), 100, np.uint8)
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1, 1, :] = 3  # cystic component in ped2024, enhancing tumour in glioma
    ped_slice = render_slice(display, labels, 0, "axial", 0, scheme=PED2024)
    glioma = render_slice(display, labels, 0, "axial", 0)
    cc = 0.55 * 100 + 0.45 * np.asarray(PED2024.colours()[3])
    hit = np.rot90(labels[:, :, 0] == 3)
    np.testing.assert_allclose(ped_slice[hit][0], cc, atol=0.51)
    assert not np.array_equal(ped_slice[hit], glioma[hit])


def test_upload_volumes_are_the_models_regions(tmp_path):
    class FakePredictor:
        info = SimpleNamespace(modalities=("t1ce",), scheme=MENRT2024)

        @staticmethod
        def segment_volume(image):
            assert image.shape == (1, 6, 6, 6)
            labels = np.zeros(image.shape[1:], np.uint8)
            labels[1:3, 1:3, 1:3] = 1
            return labels

    path = tmp_path / "case.npy"
    np.save(path, np.ones((6, 6, 6, 3), np.float32))
    result = segment_upload(FakePredictor(), [str(path)])  # type: ignore[arg-type]
    assert result.volumes_ml == {"GTV": 8 / 1000} and result.scheme is MENRT2024


def test_a_label_scheme_the_model_does_not_read_like_is_refused():
    assert check_label_scheme(None, GLI2024) is GLI2024
    assert check_label_scheme("brats2020", DEFAULT) is DEFAULT  # the same labels
    refused = r"--label-scheme gli2024: the model predicts label scheme brats2023"
    with pytest.raises(ArtifactError, match=refused):
        check_label_scheme("gli2024", DEFAULT)
    with pytest.raises(SchemeError, match="unknown label scheme 'brats2099'"):
        AppConfig(model="m", label_scheme="brats2099")
    assert AppConfig(model="m", label_scheme="met2024").label_scheme == "met2024"
