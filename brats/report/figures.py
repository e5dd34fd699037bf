"""The report's pictures: box plots and label overlays, as PNG bytes.

Figures are drawn on an Agg canvas of their own, never through pyplot (which would switch the
backend of a running pyplot, e.g. the app's or a notebook's, from inside a library call).
Labels are internal classes of a label scheme (:mod:`brats.volume.labels`), drawn in its
colours.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from brats.volume.labels import SchemeLike, hex_colour, scheme_named


def label_colours(scheme: SchemeLike | None = None) -> dict[int, str]:
    """Overlay colour (``#rrggbb``) per internal class of ``scheme``
    (:meth:`~brats.volume.labels.LabelScheme.colours`)."""
    return {c: hex_colour(rgb) for c, rgb in scheme_named(scheme).colours().items()}


TRUTH_OUTLINE_COLOUR: Final = "#00e5ff"
OVERLAY_ALPHA: Final = 0.5


def axial_slice_with_most_tumor(
    pred: npt.NDArray[np.integer], truth: npt.NDArray[np.integer] | None = None
) -> int:
    """Index along the last axis of the ``(D, H, W)`` slice with the most predicted tumour.

    Ties go to the lowest index. With nothing predicted, the slice with the most ground-truth
    tumour; with neither, the middle slice.
    """
    for labels in (pred, truth):
        if labels is None:
            continue
        per_slice = np.count_nonzero(np.asarray(labels) != 0, axis=(0, 1))
        if per_slice.size and per_slice.max() > 0:
            return int(np.argmax(per_slice))
    return int(np.asarray(pred).shape[-1] // 2)


def _figure(width: float, height: float) -> Figure:
    """A Figure drawn on its own Agg canvas: headless, and no pyplot or global backend state.

    (``matplotlib.use("Agg")`` would switch the backend of a running pyplot, e.g. the app's or
    a notebook's, from inside a library call.)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def box_plot_png(
    values: Mapping[str, list[float]], ylabel: str, ylim: tuple[float, float] | None
) -> bytes:
    """One box per region, with every case drawn as a point over it."""
    fig = _figure(5.0, 3.2)
    ax = fig.add_subplot()
    names = list(values)
    ax.boxplot([values[n] for n in names], tick_labels=names, showfliers=False)
    jitter = np.random.default_rng(0)
    for position, name in enumerate(names, start=1):
        ys = np.asarray(values[name], dtype=np.float64)
        xs = position + jitter.uniform(-0.12, 0.12, size=ys.size)
        ax.scatter(xs, ys, s=12, alpha=0.6, color="#1f77b4", zorder=3)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("region")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def overlay_png(
    image: npt.ArrayLike,
    pred: npt.ArrayLike,
    truth: npt.ArrayLike | None,
    scheme: SchemeLike | None = None,
) -> tuple[bytes, int]:
    """PNG of the ``(D, H, W)`` image on its most-tumour axial slice, bare and with labels
    (internal classes of ``scheme``, in its colours).

    Returns the PNG and the slice index (last axis).
    """
    n_classes = scheme_named(scheme).n_classes
    img = np.nan_to_num(np.asarray(image, dtype=np.float64))
    labels = np.asarray(pred)
    reference = None if truth is None else np.asarray(truth)
    for name, arr in (("prediction", labels), ("ground truth", reference)):
        if arr is not None and (img.ndim != 3 or arr.shape != img.shape):
            raise ValueError(f"image {img.shape} and {name} {arr.shape} must be one (D, H, W)")
        if arr is not None and arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} holds labels outside 0..{n_classes - 1}")
    index = axial_slice_with_most_tumor(labels, reference)
    # (D, H, W)[:, :, k] is (D, H); transposed with origin "lower", D runs left to right.
    grey = img[:, :, index].T
    low, high = grey_window(grey)
    fig = _figure(5.2, 2.8)
    bare, labelled = fig.subplots(1, 2)
    for ax in (bare, labelled):
        ax.imshow(grey, cmap="gray", vmin=low, vmax=high, origin="lower", interpolation="nearest")
        ax.set_axis_off()
    labelled.imshow(
        label_rgba(labels[:, :, index].T, scheme), origin="lower", interpolation="nearest"
    )
    if reference is not None:
        outline = (reference[:, :, index] != 0).T
        if outline.any() and not outline.all():
            labelled.contour(
                outline.astype(np.float64),
                levels=[0.5],
                colors=[TRUTH_OUTLINE_COLOUR],
                linewidths=1.0,
                origin="lower",
            )
    bare.set_title(f"slice {index}", fontsize=9)
    labelled.set_title("prediction" + (" + truth" if reference is not None else ""), fontsize=9)
    return _png(fig), index


def grey_window(grey: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Display range: 1st..99th percentile of the non-zero (brain) voxels of the slice."""
    brain = grey[grey != 0]
    if brain.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(brain, [1.0, 99.0]))
    return (low, high) if high > low else (low, low + 1.0)


def label_rgba(
    labels: npt.NDArray[Any], scheme: SchemeLike | None = None
) -> npt.NDArray[np.float64]:
    """``(H, W)`` internal classes of ``scheme`` -> ``(H, W, 4)`` RGBA: class ``i`` in
    ``scheme.colours()[i]``, transparent where background."""
    from matplotlib.colors import to_rgba

    s = scheme_named(scheme)
    table = np.zeros((s.n_classes, 4), dtype=np.float64)
    for label, colour in label_colours(s).items():
        table[label] = to_rgba(colour, alpha=OVERLAY_ALPHA)
    return table[labels.astype(np.intp)]
