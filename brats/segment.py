"""The nightly cohort segmentation job: a trained model mapped over a cohort with Ray Data.

Shape (DESIGN.md, and Ray Data's batch-inference pattern):

    discover cases (driver) -> drop those already done for this model version
      -> map: read + validate + normalize one case                       (Ray Data tasks)
      -> map_batches(CasePredictor): sliding window over the whole volume (actor pool; each
         actor loads the model once; one GPU per actor with --use-gpu)
      -> map: paste back into the case's grid, write masks/<case>.nii.gz, then
         records/<case>.json                                               (Ray Data tasks)
      -> driver: report.* from every record in OUT, then _SUCCESS

Exactly once: each case writes fixed keys, whole objects only (see
:func:`brats.storage.write_bytes_atomic`); the mask is written before its record, so a record
that says ``done`` always has its mask, and a case whose write broke has no record and is
redone by the next run. Masks are deterministic bytes, so a retried task (an actor that died,
say) rewrites exactly what was there.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from brats.cases import Case, discover, validate_case_id
from brats.errors import CaseError, InvalidCaseIdError
from brats.inference import compiled_predict
from brats.labels import ET, N_CLASSES, NCR, REGIONS, LabelConvention, to_disk
from brats.nifti import Limits, encode_mask, header_from_bytes, read_file
from brats.runtime import cpus_per_replica
from brats.storage import (
    Location,
    StorageError,
    read_bytes,
    redact,
    resolve,
    write_bytes_atomic,
)

log = logging.getLogger(__name__)

MASKS: Final = "masks"
RECORDS: Final = "records"
SUCCESS: Final = "_SUCCESS"
MAX_RECORD_BYTES: Final = 1 << 20
DONE: Final = "done"
FAILED: Final = "failed"

CaseHook = Callable[[str], None]
"""Called with a case id; fault injection for the reliability tests (:mod:`brats.faults`)."""


class SegmentError(RuntimeError):
    """The job cannot run at all (a refused model, an unreachable cohort)."""


@dataclass(frozen=True)
class SegmentConfig:
    """Everything ``jobs/segment.py`` takes."""

    cohort: str
    model: str
    out: str
    s3_endpoint: str | None = None
    use_gpu: bool = False
    num_actors: int = 1
    """Model replicas (one per GPU with ``use_gpu``)."""
    cpus_per_actor: float | None = None
    """Default: 1 with GPUs, else at most 1, leaving a CPU for the read tasks."""
    batch_size: int = 2
    """Windows per forward pass."""
    overlap: float = 0.5
    flip_tta: bool = False
    min_et_voxels: int = 0
    """Enhancing-tumor components smaller than this become necrosis (0: off)."""
    label_convention: str | None = None
    """Write masks in this convention; default: each case's own."""
    fail_on_error: bool = False
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1 or self.num_actors < 1 or self.min_et_voxels < 0:
            raise ValueError("batch_size and num_actors must be >= 1, min_et_voxels >= 0")
        if self.label_convention is not None:
            LabelConvention(self.label_convention)

    def output_settings(self) -> dict[str, Any]:
        """What, besides the model, decides a mask's bytes: a change redoes every case."""
        return {
            "label_convention": self.label_convention,
            "min_et_voxels": self.min_et_voxels,
            "overlap": self.overlap,
            "flip_tta": self.flip_tta,
        }


@dataclass(frozen=True)
class SegmentResult:
    out: str
    model_version: str
    total: int
    skipped: int
    done: int
    failed: list[dict[str, Any]]
    report: dict[str, str]
    seconds: float

    def exit_code(self, *, fail_on_error: bool = False) -> int:
        """1 when asked to fail on any error and one happened, or when nothing succeeded."""
        if fail_on_error and self.failed:
            return 1
        nothing_succeeded = self.done == 0 and self.skipped == 0
        return 1 if nothing_succeeded else 0


# --- per-case pieces (run inside Ray tasks and actors) -----------------------------------------


def mask_key(case_id: str) -> str:
    return posixpath.join(MASKS, f"{validate_case_id(case_id)}.nii.gz")


def record_key(case_id: str) -> str:
    return posixpath.join(RECORDS, f"{validate_case_id(case_id)}.json")


def small_et_to_necrosis(labels: npt.NDArray[np.uint8], min_voxels: int) -> npt.NDArray[np.uint8]:
    """Relabel enhancing-tumor components smaller than ``min_voxels`` as necrotic core.

    Tiny ET specks are the commonest false positive on cases without enhancement, and ET Dice
    punishes them hardest (an empty truth scores 0 against any ET). ``(D, H, W) uint8``.
    """
    if min_voxels <= 0 or not np.any(labels == ET):
        return labels
    components, n = ndimage.label(labels == ET)
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    small = np.flatnonzero(sizes < min_voxels)
    small = small[small > 0]
    out = labels.copy()
    out[np.isin(components, small)] = NCR
    return out


class CasePredictor:
    """Ray Data actor: loads the model once, predicts whole cases with a sliding window.

    ``__call__`` takes a batch of prepared rows (numpy format) and returns them with
    ``pred`` (``(D, H, W) uint8`` internal classes in the crop) and ``predict_s``; failed rows
    pass through untouched.
    """

    def __init__(
        self,
        model_uri: str,
        s3_endpoint: str | None,
        batch_size: int,
        overlap: float,
        flip_tta: bool,
        fault_hook: CaseHook | None = None,
    ) -> None:
        from brats.artifact import load_artifact

        loaded = load_artifact(resolve(model_uri, s3_endpoint=s3_endpoint))
        self.version = loaded.version
        self.window = loaded.card.info.patch_size
        self.batch_size = batch_size
        self.overlap = overlap
        self.flip_tta = flip_tta
        self.fault_hook = fault_hook
        self._predict = compiled_predict(loaded.model)

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        from brats.inference import predict_labels, sliding_window_predict

        preds: list[npt.NDArray[np.uint8]] = []
        seconds: list[float] = []
        out = dict(batch)
        out["status"] = np.array(batch["status"], dtype=object)
        out["error"] = np.array(batch.get("error", [""] * len(batch["status"])), dtype=object)
        for i, status in enumerate(batch["status"]):
            preds.append(np.zeros((0, 0, 0), np.uint8))
            seconds.append(0.0)
            if status != "ok":
                continue
            case_id = str(batch["case_id"][i])
            began = time.perf_counter()
            try:
                if self.fault_hook is not None:
                    self.fault_hook(case_id)
                probs = sliding_window_predict(
                    np.asarray(batch["image"][i], dtype=np.float32),
                    self._predict,
                    self.window,
                    n_classes=N_CLASSES,
                    overlap=self.overlap,
                    batch_size=self.batch_size,
                    flip_tta=self.flip_tta,
                )
            except Exception as err:  # this case fails; the actor and the others go on
                log.exception("case %s: prediction failed", case_id)
                out["status"][i] = "failed"
                out["error"][i] = f"case {case_id}: prediction failed: {type(err).__name__}: {err}"
                continue
            preds[i] = predict_labels(probs)
            seconds[i] = time.perf_counter() - began
        out.pop("image")  # the writer needs the prediction, not the input again
        out["pred"] = _object_array(preds)
        out["predict_s"] = np.asarray(seconds)
        out["model_version"] = np.asarray([self.version] * len(preds))
        return out


def _object_array(items: list[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def write_case_outputs(
    row: dict[str, Any],
    *,
    out: Location,
    config: SegmentConfig,
    write_hook: CaseHook | None = None,
) -> dict[str, Any]:
    """Ray Data ``map``: paste back, write the mask then the record; return a small row.

    A case that failed upstream gets a ``failed`` record. An exception while writing leaves
    no record (and, writes being whole-object, no mask at the key either): the case is
    reported failed now and redone next run.
    """
    from brats.metrics import evaluate_case
    from brats.preprocess import CropBox, paste_back

    case_id = str(row["case_id"])
    began = time.perf_counter()
    base = {
        "case_id": case_id,
        "settings": config.output_settings(),
        "model_version": str(row.get("model_version", "")),
        "input_checksums": json.loads(str(row["checksums"])),
        "convention": str(row["convention"]) or None,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    fs = out.filesystem()
    try:
        if row["status"] != "ok":
            record = {
                **base,
                "status": FAILED,
                "mask": None,
                "shape": None,
                "spacing": None,
                "timings": {"read_s": float(row.get("read_s", 0.0))},
                "region_volumes_ml": None,
                "metrics": None,
                "error": {
                    "file": str(row["error_file"]) or None,
                    "reason": _reason(str(row["error"]), case_id, str(row["error_file"])),
                    "message": str(row["error"]),
                },
            }
            write_bytes_atomic(fs, out.join(record_key(case_id)), _json_bytes(record))
            return _summary_row(record, written=True)
        box = CropBox(
            tuple(int(v) for v in row["crop_start"]),  # type: ignore[arg-type]
            tuple(int(v) for v in row["crop_stop"]),  # type: ignore[arg-type]
            tuple(int(v) for v in row["source_shape"]),  # type: ignore[arg-type]
        )
        pred = paste_back(np.asarray(row["pred"], dtype=np.uint8), box)
        pred = small_et_to_necrosis(pred, config.min_et_voxels)
        convention = LabelConvention(config.label_convention or row["convention"])
        header = header_from_bytes(bytes(row["header"]))
        mask_bytes = encode_mask(to_disk(pred, convention), header)
        spacing = [float(s) for s in row["spacing"]]
        metrics = None
        if bool(row["labeled"]):
            truth = paste_back(np.asarray(row["label"], dtype=np.uint8), box)
            metrics = evaluate_case(pred, truth, spacing)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        volumes = {
            region: float(np.isin(pred, classes).sum()) * voxel_ml
            for region, classes in REGIONS.items()
        }
        if write_hook is not None:
            write_hook(case_id)
        write_bytes_atomic(fs, out.join(mask_key(case_id)), mask_bytes)
        record = {
            **base,
            "status": DONE,
            "convention": convention.value,
            "mask": mask_key(case_id),
            "shape": list(box.shape),
            "spacing": spacing,
            "timings": {
                "read_s": float(row.get("read_s", 0.0)),
                "predict_s": float(row["predict_s"]),
                "write_s": time.perf_counter() - began,
            },
            "region_volumes_ml": volumes,
            "metrics": metrics,
            "error": None,
        }
        write_bytes_atomic(fs, out.join(record_key(case_id)), _json_bytes(record))
        return _summary_row(record, written=True)
    except Exception as err:  # storage or bug: no record, the case is redone next run
        log.exception("case %s: writing outputs failed", case_id)
        message = f"case {case_id}: {type(err).__name__}: {err}"
        return {
            "case_id": case_id,
            "status": FAILED,
            "written": False,
            "error": message,
        }


def _reason(message: str, case_id: str, file: str) -> str:
    prefix = f"case {case_id}: " + (f"{file}: " if file else "")
    return message[len(prefix) :] if message.startswith(prefix) else message


def _summary_row(record: dict[str, Any], *, written: bool) -> dict[str, Any]:
    error = record.get("error") or {}
    return {
        "case_id": record["case_id"],
        "status": record["status"],
        "written": written,
        "error": error.get("message", "") if error else "",
    }


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


# --- the driver --------------------------------------------------------------------------------


def verified_card(model: Location) -> Any:
    """The model's card, after checking ``model.keras`` against it (no TensorFlow here).

    The actors check again when they load it; checking first makes a tampered model a clear
    error before any case is touched.
    """
    from brats.artifact import ArtifactError, verify_artifact

    try:
        return verify_artifact(model)
    except (ArtifactError, OSError) as err:
        raise SegmentError(f"model {redact(model.uri)}: {err}") from err


def read_record(out: Location, case_id: str) -> dict[str, Any] | None:
    fs = out.filesystem()
    path = out.join(record_key(case_id))
    try:
        raw = read_bytes(fs, path, max_bytes=MAX_RECORD_BYTES)
        record: dict[str, Any] = json.loads(raw)
    except FileNotFoundError:
        return None
    except (OSError, StorageError, ValueError) as err:
        log.warning("case %s: unreadable record %s (%s); redoing it", case_id, path, err)
        return None
    return record


def is_done(
    record: dict[str, Any] | None, has_mask: bool, version: str, settings: dict[str, Any]
) -> bool:
    """Done: a ``done`` record of this model version and these output settings, whose mask
    exists."""
    return (
        record is not None
        and record.get("status") == DONE
        and record.get("model_version") == version
        and record.get("settings") == settings
        and has_mask
    )


def _names(out: Location, folder: str, suffix: str) -> dict[str, int]:
    """``{case id: size}`` of the files in ``OUT/folder`` named ``<case id><suffix>`` (one
    listing). Other names are skipped and logged."""
    fs = out.filesystem()
    path = out.join(folder)
    if not fs.exists(path):
        return {}
    found = {}
    for entry in fs.ls(path, detail=True):
        name = posixpath.basename(str(entry["name"]).rstrip("/"))
        if entry.get("type") != "file" or not name.endswith(suffix):
            continue
        try:
            found[validate_case_id(name[: -len(suffix)])] = int(entry.get("size") or 0)
        except InvalidCaseIdError:
            log.warning("ignoring %s in %s: not a case's output", name, redact(path))
    return found


def all_records(out: Location) -> dict[str, dict[str, Any]]:
    """Every record under ``OUT/records`` (the whole cohort, this run's and earlier ones),
    by case id: one listing, then one batched read (S3 fetches them concurrently).

    A file there whose name is not a case id (``notes copy.json``) is skipped and logged, and
    so is an unreadable or oversized one (its case is redone).
    """
    fs = out.filesystem()
    sizes = _names(out, RECORDS, ".json")
    wanted = []
    for case_id, size in sizes.items():
        if size > MAX_RECORD_BYTES:
            log.warning("case %s: record of %d bytes is over the limit; redoing it", case_id, size)
            continue
        wanted.append(out.join(record_key(case_id)))
    records: dict[str, dict[str, Any]] = {}
    if not wanted:
        return records
    for path, raw in fs.cat(sorted(wanted), on_error="omit").items():
        case_id = posixpath.basename(str(path))[: -len(".json")]
        try:
            record = json.loads(raw)
        except ValueError as err:
            log.warning("case %s: unreadable record (%s); redoing it", case_id, err)
            continue
        if case_id in sizes and isinstance(record, dict):
            records[case_id] = record
    return records


def records_digest(records: list[dict[str, Any]]) -> str:
    blob = json.dumps(sorted(records, key=lambda r: r["case_id"]), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def segment(
    config: SegmentConfig,
    *,
    predict_hook: CaseHook | None = None,
    write_hook: CaseHook | None = None,
) -> SegmentResult:
    """Segment every case of the cohort not already done for this model; report; mark done.

    Needs a running Ray. Raises :class:`SegmentError` when the job cannot start (a refused
    model, a cohort that cannot be listed); a bad case never raises.
    """
    import ray.data

    from brats.preprocess import PreprocessConfig

    began = time.perf_counter()
    cohort = resolve(config.cohort, s3_endpoint=config.s3_endpoint)
    out = resolve(config.out, s3_endpoint=config.s3_endpoint)
    model = resolve(config.model, s3_endpoint=config.s3_endpoint)
    card = verified_card(model)
    version: str = card.version
    settings = config.output_settings()
    try:
        found = discover(cohort, convention=None)
    except (OSError, StorageError) as err:
        raise SegmentError(f"cohort {redact(cohort.uri)}: {err}") from err
    rejected = _record_rejected(found.rejected, out, version, config)
    existing = all_records(out)
    masks = _names(out, MASKS, ".nii.gz")
    todo = [
        c
        for c in found.cases
        if not is_done(existing.get(c.case_id), c.case_id in masks, version, settings)
    ]
    skipped = len(found.cases) - len(todo)
    log.info(
        "segment: %d cases under %s, %d already done with model %s, %d to do",
        len(found.cases),
        redact(cohort.uri),
        skipped,
        version[:12],
        len(todo),
    )
    fs = out.filesystem()
    if not todo and _success_matches(out, list(existing.values())):
        log.info("nothing to do: every case is done and the report is current")
        return SegmentResult(
            redact(out.uri), version, len(found.cases), skipped, 0, rejected, {}, 0.0
        )
    if fs.exists(out.join(SUCCESS)):
        fs.rm(out.join(SUCCESS))

    rows_out: list[dict[str, Any]] = []
    if todo:
        preprocess = PreprocessConfig(
            modalities=card.info.modalities,
            normalization=card.info.normalization,
            limits=config.limits,
        )
        rows_out = list(
            _run_pipeline(todo, cohort, out, config, preprocess, predict_hook, write_hook, ray.data)
        )
    records = list(all_records(out).values())
    report = _write_report(records, out, cohort, found.cases, config)
    failed = [r for r in rows_out if r["status"] == FAILED]
    done = sum(r["status"] == DONE for r in rows_out)
    result = SegmentResult(
        out=redact(out.uri),
        model_version=version,
        total=len(found.cases),
        skipped=skipped,
        done=done,
        failed=rejected + [{"case_id": r["case_id"], "error": r["error"]} for r in failed],
        report=report,
        seconds=time.perf_counter() - began,
    )
    success = {
        "model_version": version,
        "cases": len(found.cases),
        "records_digest": records_digest(records),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_bytes_atomic(fs, out.join(SUCCESS), _json_bytes(success))
    return result


def _record_rejected(
    rejected: list[Any], out: Location, version: str, config: SegmentConfig
) -> list[dict[str, Any]]:
    """Folders discovery could not make a case of: logged, reported as failed, and given a
    failed record when their name is a valid case id (so the report lists them too)."""
    failed = []
    for item in rejected:
        message = f"case {item.name}: {item.reason}"
        log.warning("rejected %s", message)
        failed.append({"case_id": item.name, "error": message})
        try:
            case_id = validate_case_id(item.name)
        except InvalidCaseIdError:
            continue
        error = {"file": None, "reason": item.reason, "message": message}
        previous = read_record(out, case_id)
        if previous is not None and previous.get("error") == error:
            continue  # recorded by an earlier run: rewriting it would only change "created"
        record = {
            "case_id": case_id,
            "settings": config.output_settings(),
            "model_version": version,
            "input_checksums": {},
            "convention": None,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "status": FAILED,
            "mask": None,
            "shape": None,
            "spacing": None,
            "timings": {},
            "region_volumes_ml": None,
            "metrics": None,
            "error": error,
        }
        write_bytes_atomic(out.filesystem(), out.join(record_key(case_id)), _json_bytes(record))
    return failed


def _success_matches(out: Location, records: list[dict[str, Any]]) -> bool:
    fs = out.filesystem()
    try:
        success = json.loads(read_bytes(fs, out.join(SUCCESS), max_bytes=MAX_RECORD_BYTES))
    except (OSError, StorageError, ValueError):
        return False
    return bool(success.get("records_digest") == records_digest(records))


def _run_pipeline(
    todo: list[Case],
    cohort: Location,
    out: Location,
    config: SegmentConfig,
    preprocess: Any,
    predict_hook: CaseHook | None,
    write_hook: CaseHook | None,
    rd: Any,
) -> Iterator[dict[str, Any]]:
    from brats.cases import Discovery
    from brats.data import read_cohort

    ds, _ = read_cohort(cohort, preprocess, discovery=Discovery(cases=todo))
    ds = ds.map_batches(
        CasePredictor,
        fn_constructor_kwargs={
            "model_uri": config.model,
            "s3_endpoint": config.s3_endpoint,
            "batch_size": config.batch_size,
            "overlap": config.overlap,
            "flip_tta": config.flip_tta,
            "fault_hook": predict_hook,
        },
        batch_size=1,
        batch_format="numpy",
        compute=rd.ActorPoolStrategy(size=config.num_actors),
        num_cpus=cpus_per_replica(
            config.cpus_per_actor, config.num_actors, use_gpu=config.use_gpu, what="model actors"
        ),
        num_gpus=1 if config.use_gpu else 0,
        # A dead actor's batch is retried on a new one, but a case that kills every actor
        # it meets must not stop the cohort forever.
        max_task_retries=3,
    )
    ds = ds.map(
        functools.partial(write_case_outputs, out=out, config=config, write_hook=write_hook),
        num_cpus=0.5,
    )
    total = len(todo)
    for n, row in enumerate(ds.iter_rows(), start=1):
        state = row["status"] if row["status"] == DONE else f"FAILED: {row['error']}"
        log.info("segment [%d/%d] %s %s", n, total, row["case_id"], state)
        yield dict(row)


def _write_report(
    records: list[dict[str, Any]],
    out: Location,
    cohort: Location,
    cases: list[Case],
    config: SegmentConfig,
) -> dict[str, str]:
    from brats.report import write_report

    by_id = {c.case_id: c for c in cases}
    loader = functools.partial(_overlay, out=out, cohort=cohort, cases=by_id, config=config)
    return write_report(records, out, overlay=loader)


def _overlay(
    case_id: str,
    *,
    out: Location,
    cohort: Location,
    cases: dict[str, Case],
    config: SegmentConfig,
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None]:
    """FLAIR, prediction and truth of a case, for the report's thumbnails."""
    from brats.labels import to_internal

    case = cases.get(case_id)
    if case is None or "flair" not in case.images:
        raise CaseError(case_id, None, "no FLAIR in the cohort to draw")
    fs_in, fs_out = cohort.filesystem(), out.filesystem()

    def volume(fs: Any, path: str) -> Any:
        return read_file(fs, path, case_id=case_id, limits=config.limits)[0]

    flair = volume(fs_in, case.images["flair"]).data.astype(np.float32)
    record = read_record(out, case_id) or {}
    convention = LabelConvention(record.get("convention") or case.convention)
    pred = to_internal(volume(fs_out, out.join(mask_key(case_id))).data, convention)
    truth = None
    if case.seg is not None:
        truth = to_internal(volume(fs_in, case.seg).data, case.convention)
    return flair, pred, truth
