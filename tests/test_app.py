"""The app's viewer (brats.app): grey levels, slices in each view, the overlay and legend."""

from __future__ import annotations

import numpy as np
import pytest

from brats.app import display_volume, legend_html, render_slice
from brats.volume.labels import CLASS_COLOURS, ED, ET, NCR


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
