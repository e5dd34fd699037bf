"""The interactive app: upload one case, segment it with a trained model, look through it.

``brats app --model PATH_OR_S3`` (or ``python -m brats.app --model ...``) serves a Gradio page:

* **Upload** a ``.npy`` volume -- ``(D, H, W, C)`` channels last like the seed's arrays, or
  ``(C, D, H, W)``; ``C = 3`` is FLAIR, T1ce, T2 (the seed's order) and ``C = 4`` is FLAIR, T1,
  T1ce, T2 -- or a case's NIfTI files named like BraTS (``*_flair.nii.gz`` ... or the 2023
  ``*-t2f.nii.gz`` ...). The model's ``modalities`` pick the channels it is fed; a missing one
  is an error that says which.
* **Segment**: the model's own normalization, the brain crop, a sliding window of the model's
  patch size and the paste back, exactly as the nightly job (:mod:`brats.segment`) does.
* **Inspect**: slice slider, channel, axial/coronal/sagittal view, mask overlay with a
  legend, and the region volumes (WT, TC, ET) in ml.

Uploads are hostile until checked (RELIABILITY row 12). A ``.npy`` file is judged by its
header alone -- version, header length, dtype allowlist, 4 axes with a channel axis of 3 or 4,
axis sizes, bytes, and a file size that matches -- before any array exists, and its data is
then read as exactly that many numbers: never unpickled, never memory-mapped beyond the
checked size. NIfTI files go through :mod:`brats.nifti`'s header-first reader. Every refusal
is an :class:`UploadError` whose message names the file and the reason; the app shows it and
goes on serving. The model is the artifact named at startup, loaded once through
:func:`brats.artifact.load_artifact` (hash-checked, weights only); nothing uploaded is ever
loaded as a model or executed.

Volumes are ``(C, D, H, W)`` inside, spatial axes in the NIfTI voxel order (x, y, z as BraTS
stores them): an axial view fixes z, coronal fixes y, sagittal fixes x.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import posixpath
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt

from brats.cases import MODALITIES, SEED_MODALITIES, group_cases, nifti_stem
from brats.errors import BratsError, CaseError
from brats.labels import ED, ET, N_CLASSES, NCR, REGIONS
from brats.nifti import Limits, parse_header, read_case
from brats.preprocess import (
    PreprocessConfig,
    bounding_box,
    brain_mask,
    crop,
    normalize,
    paste_back,
    stack_channels,
)
from brats.storage import resolve

if TYPE_CHECKING:
    import gradio as gr

    from brats.artifact import LoadedModel

log = logging.getLogger(__name__)

NPY_DTYPES: Final = frozenset(("f2", "f4", "f8", "i1", "i2", "i4", "u1", "u2"))
"""``.npy`` element types accepted (``dtype.str`` without the byte order)."""
NPY_MAX_HEADER: Final = 10_000
"""Largest ``.npy`` header accepted, in bytes (NumPy's own default limit)."""
CHANNEL_MODALITIES: Final[dict[int, tuple[str, ...]]] = {3: SEED_MODALITIES, 4: MODALITIES}
"""What the channels of an uploaded array are, by their count."""
VIEWS: Final[dict[str, int]] = {"axial": 2, "coronal": 1, "sagittal": 0}
"""View name -> the spatial axis (of ``D, H, W``) it holds fixed."""
LABEL_COLOURS: Final[dict[int, tuple[int, int, int]]] = {
    NCR: (230, 40, 40),
    ED: (40, 200, 60),
    ET: (250, 215, 0),
}
"""Overlay colour (RGB) of each internal tumor class."""
LABEL_TEXT: Final[dict[int, str]] = {
    NCR: "1 necrotic / non-enhancing core",
    ED: "2 edema",
    ET: "3 enhancing tumor",
}
MAX_SESSIONS: Final = 8
"""Sessions whose uploaded case the server keeps (each holds a few volumes)."""
SESSION_TTL_S: Final = 3600


class UploadError(BratsError, ValueError):
    """An upload the app will not use; the message names the file and says why."""


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may declare before any of its voxels are read."""

    max_bytes: int = 1 << 30
    """The volume's voxels as float32 (the working copy), and as stored (1 GiB)."""
    max_dim: int = 512
    """Largest size of a spatial axis."""
    max_header: int = NPY_MAX_HEADER


@dataclass(frozen=True)
class Upload:
    """A checked upload.

    Attributes:
        image: ``(C, D, H, W) float32``, finite, one channel per modality.
        modalities: the channels' names, in order.
        spacing: voxel size in mm (from the NIfTI header; 1 mm for ``.npy``).
        source: the file name, or the case id of NIfTI files.
    """

    image: npt.NDArray[np.float32]
    modalities: tuple[str, ...]
    spacing: tuple[float, float, float]
    source: str


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    offset: int
    """Where the data starts."""


@dataclass(frozen=True)
class Segmentation:
    """A segmented upload, ready to inspect (what one app session holds).

    Attributes:
        display: ``(C, D, H, W) uint8`` grey levels of every uploaded channel.
        labels: ``(D, H, W) uint8`` internal classes 0..3.
        modalities: names of the ``display`` channels.
        spacing: voxel size in mm.
        volumes_ml: :func:`region_volumes_ml` of ``labels``.
        source: what was uploaded.
        used: the channels the model was fed.
        seconds: time to read, predict and paste back.
    """

    display: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.uint8]
    modalities: tuple[str, ...]
    spacing: tuple[float, float, float]
    volumes_ml: dict[str, float]
    source: str
    used: tuple[str, ...]
    seconds: float


# --- uploads ------------------------------------------------------------------------------------


def read_npy_header(fh: BinaryIO, name: str, limits: UploadLimits = UploadLimits()) -> NpyHeader:
    """Parse and check a ``.npy`` header from ``fh`` (at offset 0), reading nothing else.

    NumPy parses the header dictionary with ``ast.literal_eval`` (no code runs); its length
    field is checked first, since NumPy would otherwise allocate whatever length it declares.

    Raises:
        UploadError: not a ``.npy`` file, an unsupported version, a header over
            ``limits.max_header``, a dtype outside :data:`NPY_DTYPES`, not 4 axes with a
            channel axis (3 or 4) first or last, an axis over ``limits.max_dim``, or more than
            ``limits.max_bytes``.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
    except ValueError:
        raise UploadError(
            f"{name}: not a .npy file (it does not start with NumPy's magic bytes)"
        ) from None
    if version not in ((1, 0), (2, 0)):
        raise UploadError(f"{name}: .npy format version {version} is not supported (1.0, 2.0 are)")
    start = fh.tell()
    size_format = "<H" if version == (1, 0) else "<I"
    raw_length = fh.read(struct.calcsize(size_format))
    if len(raw_length) != struct.calcsize(size_format):
        raise UploadError(f"{name}: truncated .npy header")
    (length,) = struct.unpack(size_format, raw_length)
    if length > limits.max_header:
        raise UploadError(
            f"{name}: .npy header of {length} bytes, over the limit of {limits.max_header}"
        )
    fh.seek(start)
    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
    try:
        shape, fortran_order, dtype = read(fh, max_header_size=limits.max_header)
    except ValueError as exc:
        reason = str(exc).splitlines()[0]
        raise UploadError(f"{name}: unreadable .npy header ({reason})") from None
    if dtype.hasobject:
        raise UploadError(
            f"{name}: dtype {dtype} holds Python objects (a pickle); only numbers are read: "
            f"{_dtype_list()}"
        )
    if dtype.str[1:] not in NPY_DTYPES or dtype.fields is not None:
        raise UploadError(f"{name}: dtype {dtype} is not supported; use one of {_dtype_list()}")
    if len(shape) != 4:
        raise UploadError(
            f"{name}: shape {shape} has {len(shape)} axes; expected 4: (D, H, W, C) or "
            "(C, D, H, W) with C = 3 (FLAIR, T1ce, T2) or 4 (FLAIR, T1, T1ce, T2)"
        )
    if _channel_axis(shape) is None:
        raise UploadError(
            f"{name}: shape {shape} has no channel axis of 3 or 4 first or last; expected "
            "(D, H, W, C) or (C, D, H, W)"
        )
    spatial = _spatial_shape(shape)
    if any(s < 1 or s > limits.max_dim for s in spatial):
        raise UploadError(f"{name}: spatial shape {spatial}; each axis must be 1..{limits.max_dim}")
    nbytes = math.prod(shape) * max(dtype.itemsize, 4)
    if nbytes > limits.max_bytes:
        raise UploadError(
            f"{name}: shape {shape} {dtype} is {nbytes} bytes as float32, over the limit of "
            f"{limits.max_bytes} bytes"
        )
    return NpyHeader(tuple(shape), dtype, bool(fortran_order), fh.tell())


def load_npy_upload(path: str | os.PathLike[str], limits: UploadLimits = UploadLimits()) -> Upload:
    """Read an uploaded ``.npy`` volume after checking its header and size.

    Args:
        path: the uploaded file.
        limits: what the header may declare.

    Returns:
        The volume as ``(C, D, H, W) float32`` with 1 mm spacing; channels named by
        :data:`CHANNEL_MODALITIES`.

    Raises:
        UploadError: see :func:`read_npy_header`; also a file whose size differs from what its
            header declares, and NaN or infinite values.
    """
    name = os.path.basename(os.fspath(path))
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise UploadError(f"{name}: empty file")
        header = read_npy_header(fh, name, limits)
        count = math.prod(header.shape)
        expected = header.offset + count * header.dtype.itemsize
        if size != expected:
            raise UploadError(
                f"{name}: the header declares {header.shape} {header.dtype} "
                f"({expected - header.offset} data bytes) but the file holds "
                f"{size - header.offset}; truncated or not what it says"
            )
        data = np.fromfile(fh, dtype=header.dtype, count=count)
    if data.size != count:
        raise UploadError(f"{name}: read {data.size} of {count} values")
    if header.fortran_order:
        array = data.reshape(header.shape[::-1]).transpose()
    else:
        array = data.reshape(header.shape)
    if _channel_axis(header.shape) == 3:
        array = np.moveaxis(array, -1, 0)
    image = np.ascontiguousarray(array, dtype=np.float32)
    _check_finite(image, name)
    return Upload(image, CHANNEL_MODALITIES[image.shape[0]], (1.0, 1.0, 1.0), name)


_UPLOAD_ROOT: Final = "/upload"
_NIFTI_HEAD_BYTES: Final = 1 << 16
"""Enough of a (gzipped) NIfTI file to hold its header."""


def load_nifti_upload(
    paths: Sequence[str | os.PathLike[str]],
    modalities: Sequence[str],
    limits: UploadLimits = UploadLimits(),
) -> Upload:
    """Read one case's uploaded NIfTI files, one per modality, named like BraTS.

    The files are grouped by :func:`brats.cases.group_cases` (2020 ``_flair``/``_t1``/
    ``_t1ce``/``_t2`` and 2023 ``-t2f``/``-t1n``/``-t1c``/``-t2w`` names) and read with
    :func:`brats.nifti.read_case`: headers checked before any voxel is read, one geometry,
    finite values. A segmentation or a modality the model does not take is ignored.

    Args:
        paths: the uploaded files (any folders; only their names are parsed).
        modalities: the channels to read, in order (the model's).
        limits: ``max_bytes`` is shared by the files; ``max_dim`` holds per axis.

    Returns:
        ``(C, D, H, W) float32`` in ``modalities`` order, with the files' voxel spacing.

    Raises:
        UploadError: names that are not NIfTI or name no modality, files of several cases,
            a missing modality (the message gives the expected name), or a file that
            :func:`brats.nifti.read_case` refuses.
    """
    real: dict[str, str] = {}
    for path in paths:
        name = os.path.basename(os.fspath(path))
        if nifti_stem(name) is None:
            raise UploadError(f"{name}: not a NIfTI file name (.nii or .nii.gz)")
        key = posixpath.join(_UPLOAD_ROOT, name)
        if key in real:
            raise UploadError(f"{name}: uploaded twice")
        real[key] = os.fspath(path)
    if not real:
        raise UploadError("no files uploaded")
    # Group by name alone: every upload sits in its own temporary folder.
    found = group_cases(sorted(real), _UPLOAD_ROOT)
    if found.rejected:
        problems = "; ".join(f"{r.name}: {r.reason}" for r in found.rejected)
        raise UploadError(
            f"{problems} (name files like <case>_flair.nii.gz, _t1, _t1ce, _t2, or the 2023 "
            "<case>-t2f.nii.gz, -t1n, -t1c, -t2w)"
        )
    if len(found.cases) != 1:
        ids = [c.case_id for c in found.cases]
        raise UploadError(f"the files belong to {len(ids)} cases {ids}; upload one case")
    case = found.cases[0]
    wanted = tuple(modalities)
    images = {m: real[p] for m, p in case.images.items() if m in wanted}
    local = replace(case, images=images, seg=None, extra=())
    file_limits = Limits(max_bytes=limits.max_bytes // max(len(wanted), 1), max_dim=limits.max_dim)
    try:
        for path in images.values():
            _check_nifti_header(path, case.case_id, file_limits)
        volumes = read_case(local, resolve(os.path.dirname(next(iter(real.values())))),
                            modalities=wanted, limits=file_limits)  # fmt: skip
    except CaseError as exc:
        raise UploadError(str(exc)) from None
    image = stack_channels(volumes.images, wanted)
    return Upload(image, wanted, volumes.spacing, case.case_id)


def _check_nifti_header(path: str, case_id: str, limits: Limits) -> None:
    """Refuse a file on its header alone, reading only the start of the file.

    :func:`brats.nifti.read_case` checks the header too, but only after reading the file
    whole through a buffer sized by the limit; a tiny file declaring a huge volume is
    refused here without that.
    """
    with open(path, "rb") as fh:
        head = fh.read(_NIFTI_HEAD_BYTES)
    parse_header(head, case_id=case_id, file=os.path.basename(path), limits=limits)


def load_upload(
    paths: Sequence[str | os.PathLike[str]],
    modalities: Sequence[str],
    limits: UploadLimits = UploadLimits(),
) -> Upload:
    """One ``.npy`` file, or one case's NIfTI files (read in ``modalities`` order)."""
    names = [os.path.basename(os.fspath(p)) for p in paths]
    if not names:
        raise UploadError("no file uploaded: choose a .npy volume or a case's NIfTI files")
    if any(n.lower().endswith(".npy") for n in names):
        if len(names) != 1:
            raise UploadError(f"upload one .npy file alone, not {len(names)} files: {names}")
        return load_npy_upload(paths[0], limits)
    return load_nifti_upload(paths, modalities, limits)


def select_channels(upload: Upload, modalities: Sequence[str]) -> npt.NDArray[np.float32]:
    """The channels ``modalities`` (a model's inputs), in that order, from an upload.

    Raises:
        UploadError: a modality the upload does not have; the message says which.
    """
    wanted = tuple(modalities)
    missing = [m for m in wanted if m not in upload.modalities]
    if missing:
        raise UploadError(
            f"{upload.source}: the model takes {len(wanted)} channels ({_names(wanted)}), the "
            f"upload has {len(upload.modalities)} ({_names(upload.modalities)}); missing "
            f"{_names(missing)}"
        )
    if wanted == upload.modalities:
        return upload.image
    return np.ascontiguousarray(upload.image[[upload.modalities.index(m) for m in wanted]])


# --- prediction ---------------------------------------------------------------------------------


def predict_volume(
    model: LoadedModel,
    image: npt.NDArray[np.floating],
    *,
    overlap: float = 0.5,
    batch_size: int = 2,
) -> npt.NDArray[np.uint8]:
    """Segment a whole volume the way the batch job does.

    The brain (nonzero voxels) is cropped, normalized as the model was trained
    (``card.info.normalization``) and stored at the cohort dtype (float16, as the job's
    input), predicted with a Gaussian-blended sliding window of the model's patch size, and
    pasted back into the full grid (background outside the crop).

    Args:
        model: a loaded artifact.
        image: ``(C, D, H, W)`` raw intensities in the model's modality order.

    Returns:
        ``(D, H, W) uint8`` internal classes 0..3.
    """
    from brats.inference import predict_labels, sliding_window_predict

    info = model.card.info
    if image.ndim != 4 or image.shape[0] != len(info.modalities):
        raise ValueError(
            f"image of shape {image.shape} for a model of {len(info.modalities)} channels "
            f"({_names(info.modalities)}); expected (C, D, H, W)"
        )
    box = bounding_box(brain_mask(image))
    cropped = normalize(crop(image, box), info.normalization)
    cropped = cropped.astype(PreprocessConfig().dtype).astype(np.float32)
    probs = sliding_window_predict(
        cropped,
        lambda x: np.asarray(model.model.predict_on_batch(x)),
        info.patch_size,
        n_classes=N_CLASSES,
        overlap=overlap,
        batch_size=batch_size,
    )
    return paste_back(predict_labels(probs), box)


def region_volumes_ml(
    labels: npt.NDArray[np.integer], spacing: Sequence[float]
) -> dict[str, float]:
    """``{"WT": ml, "TC": ml, "ET": ml}`` of internal classes with voxels of ``spacing`` mm."""
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    return {
        region: float(np.isin(labels, classes).sum()) * voxel_ml
        for region, classes in REGIONS.items()
    }


def segment_upload(
    model: LoadedModel,
    paths: Sequence[str | os.PathLike[str]],
    limits: UploadLimits = UploadLimits(),
) -> Segmentation:
    """Check and read an upload, segment it with ``model``, prepare it for viewing.

    Raises:
        UploadError: a refused upload, or channels that do not fit the model.
    """
    began = time.perf_counter()
    used = model.card.info.modalities
    upload = load_upload(paths, used, limits)
    if not np.any(upload.image):
        raise UploadError(f"{upload.source}: every voxel is zero; nothing to segment")
    labels = predict_volume(model, select_channels(upload, used))
    return Segmentation(
        display=display_volume(upload.image),
        labels=labels,
        modalities=upload.modalities,
        spacing=upload.spacing,
        volumes_ml=region_volumes_ml(labels, upload.spacing),
        source=upload.source,
        used=used,
        seconds=time.perf_counter() - began,
    )


# --- viewing ------------------------------------------------------------------------------------


def display_volume(
    image: npt.NDArray[np.floating], percentiles: tuple[float, float] = (0.5, 99.5)
) -> npt.NDArray[np.uint8]:
    """``(C, D, H, W) -> (C, D, H, W) uint8`` grey levels, one window per channel.

    Each channel's window spans the given percentiles of its nonzero voxels over the whole
    volume (never per slice, so brightness compares across slices); background stays black.
    """
    out = np.zeros(image.shape, dtype=np.uint8)
    for c in range(image.shape[0]):
        channel = image[c]
        values = channel[channel != 0]
        if values.size == 0:
            continue
        lo, hi = (float(v) for v in np.percentile(values, percentiles))
        span = hi - lo if hi > lo else 1.0
        scaled = np.clip((channel.astype(np.float32) - lo) / span, 0.0, 1.0) * 255.0
        out[c] = np.rint(scaled).astype(np.uint8)
    return out


def render_slice(
    image: npt.NDArray[Any],
    labels: npt.NDArray[np.integer] | None,
    channel: int,
    axis: str,
    index: int,
    show_mask: bool = True,
    *,
    alpha: float = 0.45,
) -> npt.NDArray[np.uint8]:
    """One slice as an RGB picture, with the tumor classes over it.

    Args:
        image: ``(C, D, H, W)``; ``uint8`` is taken as grey levels
            (:func:`display_volume`), anything else gets its channel's whole-volume window.
        labels: ``(D, H, W)`` internal classes, or ``None``.
        channel: which channel to show.
        axis: a :data:`VIEWS` name.
        index: the slice along that view's axis (clipped to the volume).
        show_mask: blend :data:`LABEL_COLOURS` over classes 1..3.
        alpha: the overlay's opacity.

    Returns:
        ``(rows, cols, 3) uint8``, the plane turned a quarter so that the second in-plane axis
        runs up the picture.
    """
    if axis not in VIEWS:
        raise ValueError(f"axis must be one of {list(VIEWS)}, got {axis!r}")
    if not 0 <= channel < image.shape[0]:
        raise ValueError(f"channel {channel} of an image with {image.shape[0]} channels")
    fixed = VIEWS[axis]
    volume = image[channel]
    grey_volume = volume if volume.dtype == np.uint8 else display_volume(volume[None])[0]
    index = int(np.clip(index, 0, volume.shape[fixed] - 1))
    grey = np.rot90(np.take(grey_volume, index, axis=fixed)).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if show_mask and labels is not None:
        plane = np.rot90(np.take(labels, index, axis=fixed))
        for cls, colour in LABEL_COLOURS.items():
            hit = plane == cls
            rgb[hit] = (1.0 - alpha) * rgb[hit] + alpha * np.asarray(colour, np.float32)
    return np.ascontiguousarray(np.rint(rgb).astype(np.uint8))


def legend_html() -> str:
    """The overlay legend: a colour swatch and the name of each tumor class."""
    items = []
    for cls, (r, g, b) in LABEL_COLOURS.items():
        swatch = (
            f"<span style='display:inline-block;width:1em;height:1em;"
            f"background:rgb({r},{g},{b});margin-right:0.4em;vertical-align:middle'></span>"
        )
        items.append(f"<span style='margin-right:1.5em'>{swatch}{LABEL_TEXT[cls]}</span>")
    return "<div>" + "".join(items) + "</div>"


def slice_count(segmentation: Segmentation, axis: str) -> int:
    return int(segmentation.labels.shape[VIEWS[axis]])


# --- the app ------------------------------------------------------------------------------------


def build_app(
    model_uri: str,
    s3_endpoint: str | None = None,
    *,
    limits: UploadLimits = UploadLimits(),
) -> gr.Blocks:
    """Load the model once (hash-checked) and lay out the page around it.

    Args:
        model_uri: the artifact folder: a path or ``s3://bucket/prefix``.
        s3_endpoint: S3-compatible endpoint for ``model_uri``.
        limits: what an upload may declare.

    Raises:
        brats.artifact.ArtifactError: the model is missing or not what its json says.
    """
    import gradio as gr

    from brats.artifact import load_artifact

    model = load_artifact(resolve(model_uri, s3_endpoint=s3_endpoint))
    info = model.card.info
    used = _names(info.modalities)

    def segment(
        files: list[str] | None, axis: str
    ) -> tuple[Segmentation, npt.NDArray[np.uint8], dict[str, float], str, Any, Any]:
        try:
            result = segment_upload(model, list(files or []), limits)
        except UploadError as exc:
            log.info("refused upload: %s", exc)
            raise gr.Error(str(exc), title="Upload refused", print_exception=False) from None
        middle = slice_count(result, axis) // 2
        picture = render_slice(result.display, result.labels, 0, axis, middle, True)
        volumes = {k: round(v, 3) for k, v in result.volumes_ml.items()}
        d, h, w = result.labels.shape
        status = (
            f"{result.source}: {len(result.modalities)} channels ({_names(result.modalities)}), "
            f"grid {d}x{h}x{w}, spacing {_spacing(result.spacing)} mm; model "
            f"{model.version[:12]} fed {_names(result.used)}; {result.seconds:.1f} s"
        )
        return (
            result,
            picture,
            volumes,
            status,
            gr.Slider(minimum=0, maximum=slice_count(result, axis) - 1, value=middle, step=1),
            gr.Dropdown(choices=list(result.modalities), value=result.modalities[0]),
        )

    def render(
        state: Segmentation | None, channel: str | None, axis: str, index: float, show: bool
    ) -> npt.NDArray[np.uint8] | None:
        if state is None:
            return None
        c = state.modalities.index(channel) if channel in state.modalities else 0
        return render_slice(state.display, state.labels, c, axis, int(index), bool(show))

    def change_axis(state: Segmentation | None, axis: str) -> Any:
        if state is None:
            return gr.Slider()
        n = slice_count(state, axis)
        return gr.Slider(minimum=0, maximum=n - 1, value=n // 2, step=1)

    with gr.Blocks(
        title="brats: tumor segmentation",
        analytics_enabled=False,
        delete_cache=(1800, SESSION_TTL_S),
    ) as app:
        gr.Markdown(
            "## Brain tumor segmentation\n"
            f"Model `{model.version[:12]}` takes {len(info.modalities)} channels: **{used}** "
            f"({info.normalization} normalization, {info.patch_size} windows). Upload a `.npy` "
            "volume -- `(D, H, W, C)` or `(C, D, H, W)`, C = 3 (FLAIR, T1ce, T2) or 4 (FLAIR, "
            "T1, T1ce, T2) -- or one case's NIfTI files named like BraTS "
            "(`<case>_flair.nii.gz`, `_t1`, `_t1ce`, `_t2`, or `<case>-t2f.nii.gz`, `-t1n`, "
            "`-t1c`, `-t2w`)."
        )
        state = gr.State(None, time_to_live=SESSION_TTL_S)
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(
                    label="Volume (.npy) or NIfTI files",
                    file_count="multiple",
                    file_types=[".npy", ".nii", ".nii.gz"],
                )
                run = gr.Button("Segment", variant="primary")
                status = gr.Textbox(label="Status", interactive=False, lines=2)
                volumes = gr.JSON(label="Region volumes (ml): WT, TC, ET")
            with gr.Column(scale=2):
                picture = gr.Image(label="Slice", type="numpy", format="png", interactive=False)
                gr.HTML(legend_html())
                index = gr.Slider(0, 1, value=0, step=1, label="Slice")
                with gr.Row():
                    channel = gr.Dropdown(choices=[], label="Channel", interactive=True)
                    axis = gr.Radio(list(VIEWS), value="axial", label="View")
                    show = gr.Checkbox(value=True, label="Show mask")
        view_inputs = [state, channel, axis, index, show]
        run.click(
            segment,
            [files, axis],
            [state, picture, volumes, status, index, channel],
            api_name="segment",
        )
        index.change(render, view_inputs, picture, api_name="render", trigger_mode="always_last")
        channel.change(render, view_inputs, picture, api_visibility="private")
        show.change(render, view_inputs, picture, api_visibility="private")
        axis.change(change_axis, [state, axis], index, api_visibility="private").then(
            render, view_inputs, picture, api_visibility="private"
        )
    return app


def serve(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    limits: UploadLimits = UploadLimits(),
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> None:
    """Launch ``app``; uploads over the byte limit (plus a header's room) are refused by the
    server before they are stored."""
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=limits.max_bytes + (1 << 20),
        state_session_capacity=MAX_SESSIONS,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        share=False,
        ssr_mode=False,
    )


def app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brats app",
        description="Serve the interactive segmentation app (Gradio) for one trained model.",
    )
    parser.add_argument("--model", required=True, help="model folder (model.keras + json)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=UploadLimits().max_bytes >> 20,
        help="largest volume accepted, as float32 (MiB)",
    )
    parser.add_argument(
        "--s3-endpoint",
        default=None,
        help="S3-compatible endpoint URL (MinIO, moto); default $AWS_ENDPOINT_URL or AWS",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from brats.runtime import setup_logging

    args = app_parser().parse_args(argv)
    setup_logging()
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("brats app needs Gradio: pip install 'brats[app]'", file=sys.stderr)
        return 2
    from brats.artifact import ArtifactError
    from brats.storage import StorageError

    limits = UploadLimits(max_bytes=args.max_upload_mb << 20)
    try:
        app = build_app(args.model, args.s3_endpoint, limits=limits)
    except (ArtifactError, StorageError) as exc:
        log.error("cannot serve the model: %s", exc)
        return 1
    serve(app, host=args.host, port=args.port, limits=limits)
    return 0


def _channel_axis(shape: Sequence[int]) -> int | None:
    """3 (channels last, the seed's layout, preferred when both ends could be), 0, or None."""
    if shape[-1] in CHANNEL_MODALITIES:
        return 3
    if shape[0] in CHANNEL_MODALITIES:
        return 0
    return None


def _spatial_shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(shape[:3]) if _channel_axis(shape) == 3 else tuple(shape[1:])


def _check_finite(image: npt.NDArray[np.float32], name: str) -> None:
    bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    if bad:
        raise UploadError(f"{name}: {bad} voxels are NaN or infinite; values must be finite")


def _dtype_list() -> str:
    return ", ".join(str(np.dtype(t)) for t in sorted(NPY_DTYPES))


def _names(modalities: Sequence[str]) -> str:
    return ", ".join(modalities)


def _spacing(spacing: Sequence[float]) -> str:
    return " x ".join(f"{s:g}" for s in spacing)


if __name__ == "__main__":
    sys.exit(main())
