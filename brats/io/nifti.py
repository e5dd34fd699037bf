"""Safe NIfTI reading and writing.

Reading never trusts a header: shape, dimensionality, data type, data offset and the number
of bytes the data would take are checked against limits *before* any voxel buffer exists, and
only that many bytes are ever decompressed (a 60-byte ``.nii.gz`` can declare 8 GiB). nibabel
parses the header; the voxel bytes are read here, so nothing else allocates on the header's word.

Every error is a :class:`~brats.errors.CaseError` naming the case, the file and the reason.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import posixpath
import zlib
from dataclasses import dataclass, field
from typing import Any, Final, cast

import nibabel as nib
import numpy as np
import numpy.typing as npt
from zlib_ng import gzip_ng, zlib_ng

from brats.errors import CaseError
from brats.io.cases import Case, Naming
from brats.options import option
from brats.storage import Location, StorageError, read_bytes
from brats.volume.labels import BRATS2020, DEFAULT, LabelError, LabelScheme, to_internal
from brats.volume.resample import as_spacing

GZIP_MAGIC = b"\x1f\x8b"
_GZIP_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    zlib.error,
    cast(type[BaseException], zlib_ng.error),  # its stub says an instance; it is the class
)
"""What a cut-off or corrupt gzip stream raises (a bad CRC is a ``BadGzipFile``, an OSError)."""
ALLOWED_DTYPES = frozenset(
    np.dtype(t).str[1:] for t in ("u1", "i1", "u2", "i2", "u4", "i4", "i8", "u8", "f2", "f4", "f8")
)
"""Voxel types accepted, endianness aside (no complex, RGB or structured types)."""
GEOMETRY_FIELDS = (
    "pixdim",
    "dim_info",
    "xyzt_units",
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
)
"""Header fields that place voxels in the world; a mask copies them from its source."""


@dataclass(frozen=True)
class Limits:
    """What a single NIfTI file may declare before any of its data is read."""

    max_bytes: int = option(512 << 20, help="largest voxel data one file may declare")
    """Voxel data, as declared: ``prod(shape) * itemsize`` (512 MiB)."""
    max_voxels: int = 64 << 20
    """Voxels per volume (64 Mi; BraTS has 240 x 240 x 155 = 8.9 M). Bounds the memory of
    the float32 copies a case goes through, which a compressed file's size does not: 1 GiB of
    one byte repeated gzips to about 1 MiB."""
    max_dim: int = 1024
    """Largest size of any axis."""
    max_offset: int = 1 << 20
    """Largest header + extensions size (``vox_offset``)."""
    affine_atol: float = 1e-3
    """Largest difference between the affines of one case's files (mm)."""


@dataclass(frozen=True)
class Volume:
    """One 3-D volume as read: ``data (D, H, W)``, its affine and header."""

    data: npt.NDArray[np.generic]
    affine: npt.NDArray[np.float64]
    header: nib.Nifti1Header

    @property
    def spacing(self) -> tuple[float, float, float]:
        zooms = self.header.get_zooms()[:3]
        return (float(zooms[0]), float(zooms[1]), float(zooms[2]))


@dataclass(frozen=True)
class CaseVolumes:
    """A case's validated volumes: modalities in the requested order, float32, one geometry."""

    case_id: str
    images: dict[str, npt.NDArray[np.float32]]
    label: npt.NDArray[np.uint8] | None
    """Internal classes of ``scheme``, or None for an unlabeled case."""
    affine: npt.NDArray[np.float64]
    spacing: tuple[float, float, float]
    scheme: LabelScheme
    header: nib.Nifti1Header
    checksums: dict[str, str] = field(default_factory=dict)
    """File name -> sha256 of the bytes as stored."""


def _fail(case_id: str, file: str, reason: str) -> CaseError:
    return CaseError(case_id, file, reason)


def parse_header(
    raw: bytes, *, case_id: str, file: str, limits: Limits
) -> tuple[nib.Nifti1Header, tuple[int, ...], np.dtype[np.generic], int]:
    """Parse and check a NIfTI header (a 3-D shape, voxel sizes positive and finite, a voxel
    type and a size within ``limits``). Returns (header, 3-D shape, dtype, data offset).

    Raises:
        brats.errors.CaseError: naming the case, the file and what is wrong.
    """
    if not raw:
        raise _fail(case_id, file, "empty file")
    head = _open(raw, case_id, file)
    try:
        block = head.read(540)
    except _GZIP_ERRORS as err:
        raise _fail(case_id, file, f"corrupt or truncated gzip stream ({err})") from None
    header = _header_from_block(block, case_id, file)
    shape, dtype, offset = _check_header(header, case_id, file, limits)
    return header, shape, dtype, offset


def read_volume(raw: bytes, *, case_id: str, file: str, limits: Limits = Limits()) -> Volume:
    """Read one NIfTI file (plain or gzipped bytes) into a Volume, in the file's own dtype.

    Scaling (``scl_slope``/``scl_inter``) is applied when present, which yields float32.
    """
    header, shape, dtype, offset = parse_header(raw, case_id=case_id, file=file, limits=limits)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    stream = _open(raw, case_id, file)
    try:
        buf = stream.read(offset + nbytes)
        if len(buf) < offset + nbytes:
            raise _fail(case_id, file, f"truncated: {len(buf)} of {offset + nbytes} bytes present")
        if isinstance(stream, gzip_ng.GzipNGFile):
            stream.read(1)  # reach the end-of-stream marker: a cut-off gzip fails here
    except _GZIP_ERRORS as err:
        raise _fail(case_id, file, f"corrupt or truncated gzip stream ({err})") from None
    data: npt.NDArray[np.generic] = np.frombuffer(
        buf, dtype=dtype, count=int(np.prod(shape)), offset=offset
    ).reshape(shape, order="F")
    slope, inter = header.get_slope_inter()
    if slope is not None and (slope != 1.0 or (inter or 0.0) != 0.0):
        data = data.astype(np.float32) * np.float32(slope) + np.float32(inter or 0.0)
    else:
        data = data.astype(dtype.newbyteorder("="), copy=True)
    return Volume(data, np.asarray(header.get_best_affine(), dtype=np.float64), header)


def read_file(fs: Any, path: str, *, case_id: str, limits: Limits = Limits()) -> tuple[Volume, str]:
    """Read one NIfTI file from storage: its Volume and the sha256 of its bytes as stored."""
    name = posixpath.basename(path)
    try:
        raw = read_bytes(fs, path, max_bytes=limits.max_bytes + limits.max_offset)
    except (OSError, StorageError) as err:
        raise _fail(case_id, name, f"cannot read: {err}") from None
    digest = hashlib.sha256(raw).hexdigest()
    return read_volume(raw, case_id=case_id, file=name, limits=limits), digest


def read_case(
    case: Case,
    location: Location,
    *,
    modalities: tuple[str, ...],
    scheme: LabelScheme | None = None,
    limits: Limits = Limits(),
    require_label: bool = False,
) -> CaseVolumes:
    """Read and validate a case's modalities (and segmentation, if any) from storage.

    Checks: every requested modality is present; each file is a sane NIfTI (its voxel sizes,
    the header's ``pixdim``, among them: positive and finite, :func:`parse_header`); all files
    share one shape and (within ``limits.affine_atol``) one affine; image
    values are finite and no modality is all zero; labels belong to the cohort's ``scheme``
    (the jobs resolve it once per cohort, :mod:`brats.io.schemes`; ``None``, for a lone case:
    BraTS 2020 for BraTS 2020 file names, else BraTS 2023).

    Raises:
        brats.errors.CaseError: a check fails (naming the case, the file and the reason).
    """
    if scheme is None:
        scheme = BRATS2020 if case.naming is Naming.BRATS2020 else DEFAULT
    fs = location.filesystem()
    cid = case.case_id
    for modality in modalities:
        if modality not in case.images:
            raise _fail(cid, case.expected_name(modality), f"missing modality {modality}")
    if require_label and case.seg is None:
        raise _fail(cid, case.expected_name("seg"), "missing segmentation")

    checksums: dict[str, str] = {}

    def load(path: str) -> Volume:
        volume, digest = read_file(fs, path, case_id=cid, limits=limits)
        checksums[posixpath.basename(path)] = digest
        return volume

    images: dict[str, npt.NDArray[np.float32]] = {}
    ref: Volume | None = None
    ref_name = ""
    for modality in modalities:
        path = case.images[modality]
        name = posixpath.basename(path)
        vol = load(path)
        if ref is None:
            ref, ref_name = vol, name
        else:
            check_same_geometry(vol, ref, cid, name, ref_name, limits)
        data = vol.data.astype(np.float32, copy=False)
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise _fail(cid, name, f"{bad} non-finite (NaN/Inf) voxels")
        if not np.any(data):
            raise _fail(cid, name, "all voxels are zero")
        images[modality] = data
    assert ref is not None  # modalities is never empty

    label = None
    if case.seg is not None:
        name = posixpath.basename(case.seg)
        seg = load(case.seg)
        check_same_geometry(seg, ref, cid, name, ref_name, limits)
        try:
            label = to_internal(seg.data, scheme)
        except LabelError as err:
            raise _fail(cid, name, str(err)) from None

    return CaseVolumes(
        case_id=cid,
        images=images,
        label=label,
        affine=ref.affine,
        spacing=ref.spacing,
        scheme=scheme,
        header=ref.header,
        checksums=checksums,
    )


def encode_mask(labels: npt.NDArray[np.integer], header: nib.Nifti1Header) -> bytes:
    """Encode an on-disk label volume as gzipped NIfTI-1 bytes in the source's geometry.

    The source header's geometry is copied field by field (qform and sform with their codes,
    voxel sizes, units, slice axes), so the mask overlays its input in any viewer; the data
    type becomes uint8 with no scaling. Output is deterministic (gzip mtime 0), so writing the
    same mask twice gives identical bytes.
    """
    data = np.asarray(labels, dtype=np.uint8)
    hdr = _geometry_header(header, data.shape, np.uint8)
    hdr.set_slope_inter(1.0, 0.0)
    return _encode(data, hdr, None)


FRACTION_STEPS: Final = 32767
"""A fraction in [0, 1] is stored as ``round(x * 32767)`` in int16 with ``scl_slope =
1 / 32767``: NIfTI-1 has no float16, and this takes the same 2 bytes a voxel, with steps
(3e-5) finer than float16's near 1 (5e-4); every NIfTI reader applies the slope."""


def encode_fractions(
    values: npt.NDArray[np.floating], header: nib.Nifti1Header, *, description: str = ""
) -> bytes:
    """Encode values in [0, 1] (probabilities, a normalized uncertainty) of shape
    ``(D, H, W)`` or ``(D, H, W, K)`` (K maps along the 4th axis) as gzipped NIfTI-1 bytes in
    the source's geometry, as 16-bit fractions (:data:`FRACTION_STEPS`); ``description``
    (at most 79 characters) goes into the header's ``descrip``. Deterministic, as
    :func:`encode_mask`.

    Raises:
        ValueError: not 3 or 4 dimensions, or a description too long for the header.
    """
    data = np.asarray(values, dtype=np.float32)
    if data.ndim not in (3, 4):
        raise ValueError(f"fractions of shape {data.shape}: expected (D, H, W) or (D, H, W, K)")
    if len(description.encode()) > 79:
        raise ValueError(f"description {description!r} is longer than 79 bytes")
    steps = np.rint(np.clip(data, 0.0, 1.0) * FRACTION_STEPS).astype(np.int16)
    hdr = _geometry_header(header, steps.shape, np.int16)
    if steps.ndim == 4:
        hdr["pixdim"][4] = 1.0  # the 4th axis is maps, not time
    hdr["descrip"] = description.encode()
    return _encode(steps, hdr, 1.0 / FRACTION_STEPS)


def _geometry_header(
    header: nib.Nifti1Header, shape: tuple[int, ...], dtype: type[np.generic]
) -> nib.Nifti1Header:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    for key in GEOMETRY_FIELDS:
        hdr[key] = header[key]
    hdr.set_data_dtype(dtype)
    return hdr


def _encode(data: npt.NDArray[Any], hdr: nib.Nifti1Header, slope: float | None) -> bytes:
    img = nib.Nifti1Image(data, None, header=hdr)
    if slope is not None:  # after: a new image resets the header's scaling
        img.header.set_slope_inter(slope, 0.0)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def header_from_bytes(block: bytes) -> nib.Nifti1Header:
    """A NIfTI-1 or NIfTI-2 header from its ``binaryblock`` (as carried in prepared rows)."""
    if len(block) == 540:
        return nib.Nifti2Header(binaryblock=block)
    if len(block) == 348:
        return nib.Nifti1Header(binaryblock=block)
    raise ValueError(f"a NIfTI header block has 348 or 540 bytes, not {len(block)}")


def _open(raw: bytes, case_id: str, file: str) -> io.BufferedIOBase:
    if raw[:2] == GZIP_MAGIC:
        # zlib-ng inflates BraTS volumes about 5x faster than CPython's zlib, and inflating
        # is most of the time it takes to read a case.
        return gzip_ng.GzipNGFile(fileobj=io.BytesIO(raw), mode="rb")
    return io.BytesIO(raw)


def _header_from_block(block: bytes, case_id: str, file: str) -> nib.Nifti1Header:
    if len(block) < 348:
        raise _fail(case_id, file, f"not a NIfTI file: {len(block)} bytes, a header needs 348")
    sizes = {int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")}
    try:
        if 348 in sizes:
            header = nib.Nifti1Header.from_fileobj(io.BytesIO(block[:348]), check=False)
            magic = bytes(header["magic"])
            if magic == b"ni1\x00":
                raise _fail(case_id, file, "NIfTI pair (.hdr/.img) is not supported")
            if magic != b"n+1\x00":
                raise _fail(case_id, file, "not a NIfTI file: bad magic")
        elif 540 in sizes and len(block) >= 540:
            header = nib.Nifti2Header.from_fileobj(io.BytesIO(block[:540]), check=False)
            if bytes(header["magic"])[:3] != b"n+2":
                raise _fail(case_id, file, "not a NIfTI file: bad magic")
        else:
            raise _fail(case_id, file, "not a NIfTI file: bad header size")
    except (nib.spatialimages.HeaderDataError, ValueError) as err:
        if isinstance(err, CaseError):
            raise
        raise _fail(case_id, file, f"unreadable NIfTI header ({err})") from None
    return header


def _check_header(
    header: nib.Nifti1Header, case_id: str, file: str, limits: Limits
) -> tuple[tuple[int, ...], np.dtype[np.generic], int]:
    shape = tuple(int(s) for s in header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise _fail(case_id, file, f"expected a 3-D volume, header declares shape {shape}")
    if any(s < 1 for s in shape):
        raise _fail(case_id, file, f"header declares shape {shape}; an axis is empty")
    zooms = tuple(float(z) for z in header.get_zooms()[:3])
    try:  # a converter that left pixdim empty: every millilitre, distance and resampling
        as_spacing(zooms)  # would be wrong
    except ValueError:
        reason = f"voxel size (pixdim) {zooms} is not positive and finite"
        raise _fail(case_id, file, reason) from None
    try:
        dtype = np.dtype(header.get_data_dtype())
    except (TypeError, KeyError, ValueError) as err:
        raise _fail(case_id, file, f"unsupported voxel type ({err})") from None
    if dtype.str[1:] not in ALLOWED_DTYPES:
        raise _fail(case_id, file, f"unsupported voxel type {dtype}")
    voxels = math.prod(shape)  # Python ints: NIfTI-2 sizes overflow int64
    if voxels > limits.max_voxels:
        raise _fail(
            case_id,
            file,
            f"header declares {shape} = {voxels} voxels, over the limit of "
            f"{limits.max_voxels} voxels",
        )
    nbytes = voxels * dtype.itemsize
    if nbytes > limits.max_bytes:
        raise _fail(
            case_id,
            file,
            f"header declares {shape} {dtype} = {nbytes} bytes, over the limit of "
            f"{limits.max_bytes} bytes",
        )
    if any(s > limits.max_dim for s in shape):
        raise _fail(
            case_id, file, f"header declares shape {shape}; each axis must be 1..{limits.max_dim}"
        )
    offset = int(header.get_data_offset())
    if offset < 348 or offset > limits.max_offset:
        raise _fail(case_id, file, f"data offset {offset} out of range")
    return shape, dtype, offset


def check_same_geometry(
    vol: Volume, ref: Volume, case_id: str, name: str, ref_name: str, limits: Limits
) -> None:
    """Raise a :class:`CaseError` naming ``name`` when ``vol``'s shape or affine (beyond
    ``limits.affine_atol``) is not ``ref``'s."""
    if vol.data.shape != ref.data.shape:
        raise _fail(
            case_id, name, f"shape {vol.data.shape} differs from {ref_name} {ref.data.shape}"
        )
    diff = float(np.max(np.abs(vol.affine - ref.affine)))
    if diff > limits.affine_atol:
        raise _fail(
            case_id, name, f"affine differs from {ref_name} by {diff:.4g} (> {limits.affine_atol})"
        )
