"""Uploads the app accepts, checked before any voxel is read.

An upload is hostile until checked. A ``.npy`` file is judged by its header alone (version,
header length, dtype allowlist, 4 axes with a channel axis of 3 or 4, axis sizes, bytes, and
a file size that matches) before any array exists, and its data is then read as exactly that
many numbers: never unpickled, never memory-mapped beyond the checked size. NIfTI files are
grouped into one case by their BraTS names and each header is checked from the first bytes of
the file; their voxels are then read by :func:`brats.io.nifti.read_case`. Every refusal is an
:class:`UploadError` whose message names the file and the reason.

Arrays are ``(C, D, H, W)`` inside: a ``.npy`` may come as ``(D, H, W, C)`` channels last
(the ``seed`` preset's arrays) or ``(C, D, H, W)``; ``C = 3`` is FLAIR, T1ce, T2 and
``C = 4`` is FLAIR, T1, T1ce, T2.
"""

from __future__ import annotations

import math
import os
import posixpath
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Final

import numpy as np
import numpy.typing as npt

from brats.errors import BratsError, CaseError
from brats.io.cases import MODALITIES, SEED_MODALITIES, Case, group_cases, nifti_stem
from brats.io.nifti import Limits, parse_header
from brats.storage import Location, resolve

NPY_DTYPES: Final = frozenset(("f2", "f4", "f8", "i1", "i2", "i4", "u1", "u2"))
"""``.npy`` element types accepted (``dtype.str`` without the byte order)."""
NPY_MAX_HEADER: Final = 10_000
"""Largest ``.npy`` header accepted, in bytes (NumPy's own default limit)."""
CHANNEL_MODALITIES: Final[dict[int, tuple[str, ...]]] = {3: SEED_MODALITIES, 4: MODALITIES}
"""What the channels of an uploaded array are, by their count."""


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
    """A checked array upload.

    Attributes:
        image: ``(C, D, H, W) float32``, finite, one channel per modality.
        modalities: the channels' names, in order (:data:`CHANNEL_MODALITIES`).
        spacing: voxel size in mm (an array carries none: 1 mm).
        source: the file name.
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


@dataclass(frozen=True)
class NiftiUpload:
    """One case's uploaded NIfTI files, checked by name and header, not yet read.

    Attributes:
        case: the case, its images the modalities asked for (uploaded paths).
        location: the folder :func:`brats.io.nifti.read_case` reads ``case`` from.
        limits: the per-file limits its files were checked against.
    """

    case: Case
    location: Location
    limits: Limits


def check_nifti_upload(
    paths: Sequence[str | os.PathLike[str]],
    modalities: Sequence[str],
    limits: UploadLimits = UploadLimits(),
) -> NiftiUpload:
    """Group uploaded NIfTI files into one case by their BraTS names and check each header.

    Names are 2020 ``_flair``/``_t1``/``_t1ce``/``_t2`` or 2023 ``-t2f``/``-t1n``/``-t1c``/
    ``-t2w`` (:func:`brats.io.cases.group_cases`); a segmentation, or a modality not in
    ``modalities``, is ignored. Headers are parsed from the first bytes of each file, so a
    tiny file declaring a huge volume costs nothing.

    Args:
        paths: the uploaded files (any folders; only their names are parsed).
        modalities: the channels the model takes, in order.
        limits: ``max_bytes`` is shared by the files; ``max_dim`` holds per axis.

    Raises:
        UploadError: names that are not NIfTI or name no modality, files of several cases,
            a missing modality (the message gives the expected name), or a header that
            :func:`brats.io.nifti.parse_header` refuses.
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
    for modality in wanted:
        if modality not in case.images:
            expected = case.expected_name(modality)
            raise UploadError(f"case {case.case_id}: {expected}: missing modality {modality}")
    images = {m: real[p] for m, p in case.images.items() if m in wanted}
    file_limits = Limits(max_bytes=limits.max_bytes // max(len(wanted), 1), max_dim=limits.max_dim)
    try:
        for path in images.values():
            with open(path, "rb") as fh:
                head = fh.read(_NIFTI_HEAD_BYTES)
            parse_header(
                head, case_id=case.case_id, file=os.path.basename(path), limits=file_limits
            )
    except CaseError as exc:
        raise UploadError(str(exc)) from None
    local = replace(case, images=images, seg=None, extra=())
    folder = os.path.dirname(next(iter(real.values())))
    return NiftiUpload(local, resolve(folder), file_limits)


def upload_kind(paths: Sequence[str | os.PathLike[str]]) -> str:
    """``"npy"`` for one ``.npy`` file, ``"nifti"`` for NIfTI files.

    Raises:
        UploadError: nothing uploaded, or a ``.npy`` file among others.
    """
    names = [os.path.basename(os.fspath(p)) for p in paths]
    if not names:
        raise UploadError("no file uploaded: choose a .npy volume or a case's NIfTI files")
    if any(n.lower().endswith(".npy") for n in names):
        if len(names) != 1:
            raise UploadError(f"upload one .npy file alone, not {len(names)} files: {names}")
        return "npy"
    return "nifti"


def select_channels(upload: Upload, modalities: Sequence[str]) -> npt.NDArray[np.float32]:
    """The channels ``modalities`` (a model's inputs), in that order, from an upload.

    Raises:
        UploadError: a modality the upload does not have; the message says which.
    """
    wanted = tuple(modalities)
    missing = [m for m in wanted if m not in upload.modalities]
    if missing:
        raise UploadError(
            f"{upload.source}: the model takes {len(wanted)} channels "
            f"({_comma_separated(wanted)}), the upload has {len(upload.modalities)} "
            f"({_comma_separated(upload.modalities)}); missing {_comma_separated(missing)}"
        )
    if wanted == upload.modalities:
        return upload.image
    return np.ascontiguousarray(upload.image[[upload.modalities.index(m) for m in wanted]])


def _channel_axis(shape: Sequence[int]) -> int | None:
    """3 (channels last, as the ``seed`` preset's arrays are; preferred when both ends could
    be), 0, or None."""
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


def _comma_separated(modalities: Sequence[str]) -> str:
    return ", ".join(modalities)
