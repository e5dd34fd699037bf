"""Faults on purpose: corrupt inputs, and hooks that kill or break workers.

The reliability tests use them, and so can a person checking a real cluster's recovery
(no job installs a hook by itself):

* :func:`write_faulty_case` writes a generated case with one damaged file (each kind of bad
  input the jobs must turn into a failure that names the case, the file and the reason);
* :class:`CrashAtEpoch` and :class:`EpochLog` are training epoch hooks
  (:data:`brats.train.config.EpochHook`), small picklable objects that Ray ships to every
  worker; :class:`CrashOnCases` and :class:`RaiseOnCases` are the segmentation job's
  per-case hooks (:data:`brats.segment.writer.CaseHook`); :class:`NodeLog` (a case hook)
  and :class:`GroupLog` (an epoch hook) are what the multi-node tests use to see where work
  runs and to hold it while they remove or add a node.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, replace
from typing import ClassVar, Final

import nibabel as nib
import numpy as np
import numpy.typing as npt

from brats.devtools.synth import (
    F64,
    SynthConfig,
    case_files,
    encode_nifti,
    file_name,
    generate_case,
    write_files,
)
from brats.io.cases import validate_case_id
from brats.volume.labels import to_disk

FAULTS: Final = (
    "truncated_gzip",
    "not_nifti",
    "empty_file",
    "missing_modality",
    "shape_mismatch",
    "affine_mismatch",
    "nan",
    "inf",
    "all_zero",
    "huge_header",
    "stray_label",
)
"""Faults :func:`write_faulty_case` can write: bad files, a missing file, a stray label."""

HUGE_SHAPE: Final = (4096, 4096, 4096)
"""What the ``huge_header`` file declares: 4096^3 float32 = 256 GiB, in a file under 1 KiB."""

_FAULT_TARGET: Final = {fault: "t1" for fault in FAULTS} | {
    "missing_modality": "t1ce",
    "stray_label": "seg",
}


def _target(fault: str, config: SynthConfig) -> str:
    """The image (or ``"seg"``) ``fault`` damages: T1, or the scheme's first image when it
    has no T1 (``menrt2024``: T1ce)."""
    target = _FAULT_TARGET[fault]
    images = config.scheme.images
    return target if target == "seg" or target in images else images[0]


def fault_file_name(case_id: str, fault: str, config: SynthConfig) -> str:
    """The file that :func:`write_faulty_case` damages (or leaves out) for ``fault``."""
    _check_fault(fault)
    return file_name(case_id, _target(fault, config), config)


def stray_value(config: SynthConfig) -> int:
    """The label ``stray_label`` writes: one its scheme lacks (3 for BraTS 2020, which lacks
    it, else the first of 5, 6, ... that the scheme lacks)."""
    values = config.scheme.disk_values
    return next(v for v in (3, *range(5, 256)) if v not in values)


def _check_fault(fault: str) -> None:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; expected one of {list(FAULTS)}")


def huge_header_nifti(affine: F64, *, compress: bool) -> bytes:
    """A valid NIfTI-1 header declaring ``HUGE_SHAPE`` float32 (256 GiB) plus 16 data bytes."""
    header = nib.Nifti1Header()
    header.set_data_shape(HUGE_SHAPE)
    header.set_data_dtype(np.float32)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    header["vox_offset"] = 352
    # 348-byte header, 4-byte empty extension flag, then far fewer bytes than declared.
    raw = header.binaryblock + b"\x00" * 4 + np.zeros(4, dtype=np.float32).tobytes()
    return gzip.compress(raw, mtime=0) if compress else raw


def write_faulty_case(
    root: str | os.PathLike[str], case_id: str, fault: str, config: SynthConfig = SynthConfig()
) -> str:
    """Write a case whose file :func:`fault_file_name` names carries ``fault``; return its folder.

    Faults (every other file of the case is valid; where the scheme has no T1, as
    ``menrt2024``, the damaged image is its first, T1ce):

    * ``truncated_gzip``: the T1 file cut in half (a cut gzip stream, or a cut ``.nii``);
    * ``not_nifti``: the T1 file is 4 KiB of random bytes (gzipped when ``compress``);
    * ``empty_file``: the T1 file has 0 bytes;
    * ``missing_modality``: no T1ce file;
    * ``shape_mismatch``: T1 has two extra slices along axis 2;
    * ``affine_mismatch``: T1's affine is shifted by 5 mm along x;
    * ``nan`` / ``inf``: T1 is float32 with some brain voxels NaN / +-Inf;
    * ``all_zero``: T1 is all zeros;
    * ``huge_header``: T1 is a tiny file whose header declares 4096^3 float32 (256 GiB);
    * ``stray_label``: the segmentation holds a label its scheme lacks (:func:`stray_value`:
      3 in BraTS 2020, 5 in BraTS 2023 and the 2024 schemes but MEN-RT, 3 there); written
      even when ``config.labeled`` is False.

    The content derives from ``(config.seed, case_id)``, so the same call writes the same bytes.
    """
    _check_fault(fault)
    case_id = validate_case_id(case_id)
    index = int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:4], "big")
    case = replace(generate_case(index, config), case_id=case_id)
    rng = np.random.default_rng([config.seed, index, 1])
    files = case_files(case, config, seg=config.labeled or fault == "stray_label")
    target = fault_file_name(case_id, fault, config)
    t1 = case.images[_target("truncated_gzip", config)]
    brain = np.argwhere(t1 > 0)
    some = tuple(brain[rng.choice(len(brain), size=min(20, len(brain)), replace=False)].T)

    def encode(data: npt.NDArray[np.generic], affine: F64 = case.affine) -> bytes:
        return encode_nifti(data, affine, compress=config.compress)

    if fault == "truncated_gzip":
        files[target] = files[target][: len(files[target]) // 2]
    elif fault == "not_nifti":
        garbage = rng.bytes(4096)
        files[target] = gzip.compress(garbage, mtime=0) if config.compress else garbage
    elif fault == "empty_file":
        files[target] = b""
    elif fault == "missing_modality":
        del files[target]
    elif fault == "shape_mismatch":
        files[target] = encode(np.pad(t1, ((0, 0), (0, 0), (0, 2))))
    elif fault == "affine_mismatch":
        shifted = case.affine.copy()
        shifted[0, 3] += 5.0
        files[target] = encode(t1, shifted)
    elif fault in ("nan", "inf"):
        bad = t1.astype(np.float32)
        bad[some] = np.nan if fault == "nan" else np.inf
        if fault == "inf":
            bad[tuple(ix[::2] for ix in some)] = -np.inf
        files[target] = encode(bad)
    elif fault == "all_zero":
        files[target] = encode(np.zeros_like(t1))
    elif fault == "huge_header":
        files[target] = huge_header_nifti(case.affine, compress=config.compress)
    elif fault == "stray_label":
        seg = to_disk(case.label, config.scheme)
        seg[some] = stray_value(config)
        files[target] = encode(seg)
    return write_files(root, case_id, files)


@dataclass(frozen=True)
class EpochLog:
    """Append ``"<epoch> <rank>"`` to a local file at every epoch start (what ran, in order)."""

    path: str

    def __call__(self, epoch: int, rank: int) -> None:
        with open(self.path, "a") as fh:
            fh.write(f"{epoch} {rank}\n")


def _wait_for_release(marker_dir: str, timeout_s: float) -> None:
    """Wait until ``<marker_dir>/release`` exists (checking every 0.05 s), at most
    ``timeout_s``: how the multi-node hooks hold work while a test changes the cluster."""
    import time

    release = os.path.join(marker_dir, "release")
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass(frozen=True)
class GroupLog:
    """Training epoch hook for multi-node fault tests: records where each epoch starts, and
    holds some epoch starts until told to go on.

    Each call writes ``<marker_dir>/<epoch>.<rank>.<world size>.<node id>``. When ``(epoch,
    rank, world size)`` is one of ``holds``, the worker then waits (checking every 0.05 s, at
    most ``timeout_s``) until ``<marker_dir>/release`` exists: the test removes or
    adds a node while the group is in that epoch. A worker that is killed meanwhile (its node
    removed, its group resized) simply dies waiting.
    """

    marker_dir: str
    holds: tuple[tuple[int, int, int], ...] = ()
    timeout_s: float = 120.0

    def __call__(self, epoch: int, rank: int) -> None:
        import ray.train

        world = ray.train.get_context().get_world_size()
        node = ray.get_runtime_context().get_node_id()
        with open(os.path.join(self.marker_dir, f"{epoch}.{rank}.{world}.{node}"), "w") as fh:
            fh.write("started\n")
        if (epoch, rank, world) not in self.holds:
            return
        _wait_for_release(self.marker_dir, self.timeout_s)


@dataclass(frozen=True)
class CrashAtEpoch:
    """Kill the worker process (``os._exit``, no cleanup) when ``rank`` starts ``epoch``.

    Attributes:
        epoch: 0-based epoch at whose start the worker dies.
        rank: the world rank that dies.
        marker: a file counting crashes so far; after ``times`` crashes the hook is harmless,
            so a restarted worker goes on. ``times=-1`` crashes every time.
        log: also record every epoch start here (an :class:`EpochLog` path), if given.
    """

    epoch: int
    rank: int
    marker: str
    times: int = 1
    log: str | None = None

    def __call__(self, epoch: int, rank: int) -> None:
        if self.log:
            EpochLog(self.log)(epoch, rank)
        if epoch != self.epoch or rank != self.rank:
            return
        done = os.path.getsize(self.marker) if os.path.exists(self.marker) else 0
        if self.times < 0 or done < self.times:
            with open(self.marker, "a") as fh:
                fh.write("x")
            os._exit(17)


def chosen(case_id: str, rate: float, seed: int) -> bool:
    """A seeded, stable choice of about ``rate`` of all case ids (same ids every run)."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


@dataclass(frozen=True)
class CrashOnCases:
    """Kill the process (``os._exit``) the first time it handles a chosen case.

    Used as the segmentation job's predict hook, it kills the model actor mid-batch (Ray
    Data restarts it and retries the batch). A case is chosen when :func:`chosen` says so;
    ``marker_dir`` remembers which cases already crashed once, across processes.
    """

    rate: float
    seed: int
    marker_dir: str
    always: tuple[str, ...] = ()
    """Cases that kill the process every time (each crash still leaves its marker)."""

    def __call__(self, case_id: str) -> None:
        if case_id in self.always:
            with open(os.path.join(self.marker_dir, f"{case_id}.crashed"), "a") as fh:
                fh.write("crashed\n")
            os._exit(19)
        if not chosen(case_id, self.rate, self.seed):
            return
        marker = os.path.join(self.marker_dir, f"{case_id}.crashed")
        if os.path.exists(marker):
            return
        with open(marker, "w") as fh:
            fh.write("crashed\n")
        os._exit(19)


@dataclass(frozen=True)
class RaiseOnCases:
    """Raise ``OSError`` for the listed cases: a write that breaks halfway, say."""

    cases: tuple[str, ...]

    def __call__(self, case_id: str) -> None:
        if case_id in self.cases:
            raise OSError(f"injected failure while writing case {case_id}")


@dataclass(frozen=True)
class NodeLog:
    """Segmentation predict hook for multi-node fault tests: records where each case runs
    and holds one case until told to go on.

    Each call writes ``<marker_dir>/<case_id>.<node_id>`` (the Ray node whose actor is
    segmenting the case). The held case is ``hold``, or with ``hold=NodeLog.FIRST`` whichever
    case reaches the hook first (its id is written to ``<marker_dir>/held``, see
    :meth:`held`), so that every other case is still to do while it is held, whatever order
    the cases arrive in. The held case waits, checking every 0.05 s for at most
    ``timeout_s``, until ``<marker_dir>/release`` exists: the test removes or adds nodes while
    it is in flight. Another attempt at it after the release (on another node) passes
    straight through.
    """

    FIRST: ClassVar[str] = "*"

    marker_dir: str
    hold: str = ""
    timeout_s: float = 120.0

    @staticmethod
    def held(marker_dir: str) -> str:
        """The id of the case held under ``hold=FIRST``, or "" while none has arrived."""
        try:
            with open(os.path.join(marker_dir, "held")) as fh:
                return fh.read().strip()
        except FileNotFoundError:
            return ""

    def _holds(self, case_id: str) -> bool:
        if self.hold != self.FIRST:
            return case_id == self.hold
        path = os.path.join(self.marker_dir, "held")
        try:  # the first caller creates the file; every later one finds it
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return self.held(self.marker_dir) == case_id
        with os.fdopen(fd, "w") as fh:
            fh.write(case_id + "\n")
        return True

    def __call__(self, case_id: str) -> None:
        import ray

        node = ray.get_runtime_context().get_node_id()
        with open(os.path.join(self.marker_dir, f"{case_id}.{node}"), "w") as fh:
            fh.write("started\n")
        if not self._holds(case_id):
            return
        _wait_for_release(self.marker_dir, self.timeout_s)
