"""The evaluation job: any set of predictions scored against ground truth with Ray Data.

    find label volumes under --pred and --truth (driver) -> pair them by case id
      -> map: read both, check geometry and labels, score (brats.volume.metrics), write
         records/<case>.json                                           (Ray Data tasks)
      -> driver: report.* over this run's records, then _SUCCESS

The outputs are the segmentation job's (:mod:`brats.report.records`,
:mod:`brats.report.write`) without the masks: ``records/<case>.json``, ``report.parquet``,
``report.csv``, ``summary.json``, ``report.html`` and ``_SUCCESS`` last. A record's
``model_version`` is the name given to the predictions (``--name``).

A truth case without a prediction is scored as an empty mask and says so in its record's
``notes``. A prediction without a truth case, a case either side refuses (two files for it,
both named; never scored as a missing prediction), or a file that cannot be used (unreadable,
a header spacing not positive and finite, other geometry than its truth, labels outside the
scheme) becomes a failed record naming the case, the file and the reason; the others go on.

Both sides are scored in one label scheme, decided once before any case is scored
(:mod:`brats.io.schemes`): ``--label-scheme``, else the truth's names and labels. Predictions
written by ``brats segment`` name their scheme in their ``summary.json``; one that does not
read like the truth's stops the run, naming both, and one that does but writes other values
(``brats2023``'s ET 3 against ``brats2020``'s 4) has its files read in its own values.
"""

from __future__ import annotations

import functools
import logging
import posixpath
import time
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from brats.errors import CaseError, InvalidCaseIdError
from brats.evaluate.pairing import (
    LabelFiles,
    Pair,
    find_label_files,
    pair_files,
    predictions_scheme,
    truth_case,
)
from brats.io.cases import discover, validate_case_id
from brats.io.nifti import Volume, check_same_geometry
from brats.io.schemes import load_scheme, resolve_cohort_scheme
from brats.options import internal, option
from brats.progress import Progress
from brats.report.batch import (
    CaseFiles,
    JobConfig,
    JobError,
    JobResult,
    VolumeFile,
    read_labels,
    write_job_report,
)
from brats.report.records import (
    CaseFailure,
    CaseRecord,
    clear_success,
    now,
    read_records,
    write_record,
    write_success,
)
from brats.report.status import DONE
from brats.storage import Location, StorageError, redact, resolve
from brats.volume.labels import (
    LabelScheme,
    SchemeError,
    interchangeable,
    scheme_named,
)
from brats.volume.lesions import LESION_METRICS, LesionSettings
from brats.volume.metrics import evaluate_case
from brats.volume.postprocess import region_volumes_ml

log = logging.getLogger(__name__)

MISSING_PREDICTION: Final = "no prediction: scored as an empty mask"


class EvaluateError(JobError):
    """The job cannot run at all (a folder that cannot be listed, no truth)."""


@dataclass(frozen=True)
class EvaluateConfig(JobConfig):
    """Everything ``brats evaluate`` and ``jobs/evaluate.py`` take: the shared output
    settings (:class:`~brats.report.batch.JobConfig`) and these."""

    pred: str = option(help="predicted label volumes: local folder or s3://")
    truth: str = option(help="ground-truth label volumes (or a BraTS cohort): local or s3://")
    name: str = option(
        "predictions", help="what the report calls the predictions (the records' model_version)"
    )
    label_scheme: str | None = option(
        None,
        metavar="SCHEME",
        help="label scheme of both sides: a built-in name or a JSON file (default: from the "
        "truth's names and labels, decided once for the whole set)",
    )
    lesion_metric: str = option(
        "brats2023",
        choices=LESION_METRICS,
        help="whose lesion-wise rules score the regions: the BraTS 2023 or 2024 evaluation "
        "code's (settings per task and region; the --dilation, --min-lesion-mm3 and "
        "--penalty-mm flags, when changed, apply to every region instead)",
    )
    lesions: LesionSettings = field(default_factory=LesionSettings)
    scheme: LabelScheme | None = internal()
    """The scheme the truth is read and both sides scored in, set by :func:`evaluate` once it
    is resolved."""
    pred_scheme: LabelScheme | None = internal()
    """The scheme the predictions are read in where their ``summary.json`` names another one
    that reads like :attr:`scheme` (``brats2023`` masks, ET 3, against ``brats2020`` truth,
    ET 4); ``None``: :attr:`scheme`."""

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 200:
            raise ValueError("name must be 1..200 characters")
        if self.lesion_metric not in LESION_METRICS:
            raise ValueError(f"lesion_metric must be one of {LESION_METRICS}")

    @property
    def read_in(self) -> LabelScheme:
        """The scheme the truth is read in and both sides are scored in (BraTS glioma until
        resolved)."""
        return self.scheme or scheme_named(None)

    @property
    def pred_read_in(self) -> LabelScheme:
        """The scheme the predictions' values are read in (:attr:`pred_scheme`, else
        :attr:`read_in`): the same internal classes either way."""
        return self.pred_scheme or self.read_in

    @property
    def lesion_settings(self) -> LesionSettings | None:
        """The lesion-wise settings for every region when ``--dilation``, ``--min-lesion-mm3``
        or ``--penalty-mm`` changed them, else ``None`` (each region's own, by the scheme's
        task and :attr:`lesion_metric`). The NSD tolerance alone changes no region's rules:
        it reaches scoring on its own (``evaluate_case(nsd_tolerance_mm=...)``)."""
        default = LesionSettings()
        same = replace(self.lesions, nsd_tolerance_mm=default.nsd_tolerance_mm) == default
        return None if same else self.lesions

    def settings(self) -> dict[str, Any]:
        """What decides a record's figures besides the two files: the scheme, whose rules
        (its ``lesion_task``'s per region, or the flags' for every region when changed) and
        the NSD tolerance."""
        rules: dict[str, Any] = {"lesion_task": self.read_in.lesion_task}  # each region its own
        if self.lesion_settings:  # the flags', every region
            rules = self.lesions.to_dict()
        return {
            "evaluate": True,
            "label_scheme": self.scheme.name if self.scheme else self.label_scheme,
            "lesion_metric": self.lesion_metric,
            "nsd_tolerance_mm": self.lesions.nsd_tolerance_mm,
            **rules,
        }


@dataclass(frozen=True)
class EvaluateResult(JobResult):
    """What an evaluation run did: ``cases`` (truth cases), ``missing_predictions`` (truth
    cases scored as empty masks) and the :class:`~brats.report.batch.JobResult` fields; it
    succeeded when some case was scored."""

    out: str
    cases: int
    done: int
    missing_predictions: list[str]
    failed: list[dict[str, Any]]
    report: dict[str, str]
    seconds: float

    def counts(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "done": self.done,
            "missing_predictions": self.missing_predictions,
        }


def evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Score every truth case against its prediction; write records, the report, _SUCCESS.

    Needs a running Ray. A bad case never raises: it becomes a failed record.

    Raises:
        EvaluateError: a folder cannot be listed, or it holds no truth at all.
    """
    began = time.perf_counter()
    pred_root = resolve(config.pred, s3_endpoint=config.s3_endpoint)
    truth_root = resolve(config.truth, s3_endpoint=config.s3_endpoint)
    out = resolve(config.out, s3_endpoint=config.s3_endpoint)
    preds, truths = _find(pred_root, "predictions"), _find(truth_root, "truth")
    if not truths.files:
        raise EvaluateError(f"truth {redact(truth_root.uri)}: no label volumes found")
    pairs, orphans = pair_files(preds, truths)
    scheme, predicted = evaluation_scheme(config, truth_root, truths, pred_root)
    config = replace(config, scheme=scheme, pred_scheme=predicted)
    log.info(
        "evaluate: %d truth cases, %d predictions (%d without truth)",
        len(pairs),
        len(preds.files),
        len(orphans),
    )
    clear_success(out)
    ids: set[str] = set()  # the case ids that have a failed record already
    unnamed: list[dict[str, Any]] = []
    for side, found in (("predictions", preds), ("truth", truths)):
        for r in found.rejected:
            if not _valid(r.name):  # not a case id: it cannot have a record
                unnamed.append({"case_id": r.name, "error": f"{side}: {r.reason}"})
            elif r.name not in ids:
                ids.add(r.name)
                _write_failed(out, config, r.name, None, f"{side}: {r.reason}")
    for case_id in orphans:
        if case_id in ids:
            continue
        ids.add(case_id)
        path = posixpath.basename(preds.files[case_id])
        _write_failed(out, config, case_id, path, "no ground truth has this case id")
    scored = [p for p in pairs if p.case_id not in ids]  # not refused by either side
    rows = _score_all(scored, out, config)
    ids.update(p.case_id for p in pairs)
    records = [r for case_id, r in read_records(out).items() if case_id in ids]
    report = _write_report(records, out, truth_root, pairs, config)
    write_success(out, model_version=config.name, cases=len(ids), records=records)
    failed = [
        {"case_id": r.case_id, "error": r.error.message} for r in records if r.error is not None
    ]
    return EvaluateResult(
        out=redact(out.uri),
        cases=len(pairs),
        done=sum(row["status"] == DONE for row in rows),
        missing_predictions=sorted(p.case_id for p in scored if p.pred is None),
        failed=sorted(failed + unnamed, key=lambda f: str(f["case_id"])),
        report=report,
        seconds=time.perf_counter() - began,
    )


def _find(root: Location, what: str) -> LabelFiles:
    try:
        found = find_label_files(root)
    except (OSError, StorageError) as err:
        raise EvaluateError(f"{what} {redact(root.uri)}: {err}") from err
    for rejected in found.rejected:
        log.warning("%s: %s: %s", what, rejected.name, rejected.reason)
    return found


def _score_all(pairs: list[Pair], out: Location, config: EvaluateConfig) -> list[dict[str, Any]]:
    import ray.data

    if not pairs:
        return []
    items = [{"case_id": p.case_id, "truth": p.truth, "pred": p.pred or ""} for p in pairs]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map(
        functools.partial(score_pair, out=out, config=config), num_cpus=1
    )
    rows = []
    progress = Progress("evaluate", len(items), log)
    for row in ds.iter_rows():
        progress.update(row["case_id"], None if row["status"] == DONE else row["error"])
        rows.append(dict(row))
    return rows


def score_pair(row: dict[str, Any], *, out: Location, config: EvaluateConfig) -> dict[str, Any]:
    """Ray Data ``map``: read, check and score one pair; write its record; return
    ``{case_id, status, error}``. A case that cannot be scored gets a failed record."""
    case_id = str(row["case_id"])
    pred_path = str(row["pred"]) or None
    began = time.perf_counter()
    try:
        truth_volume, truth, truth_sum = _read_labels(
            config.truth, row["truth"], case_id, config, config.read_in
        )
        checksums = {f"truth/{posixpath.basename(row['truth'])}": truth_sum}
        notes: list[str] = []
        if pred_path is None:
            pred = np.zeros_like(truth)
            notes.append(MISSING_PREDICTION)
        else:
            pred_volume, pred, pred_sum = _read_labels(
                config.pred, pred_path, case_id, config, config.pred_read_in
            )
            checksums[f"prediction/{posixpath.basename(pred_path)}"] = pred_sum
            check_same_geometry(
                pred_volume, truth_volume, case_id, posixpath.basename(pred_path), "the truth",
                config.limits,
            )  # fmt: skip
        read_s = time.perf_counter() - began
        spacing = truth_volume.spacing
        scheme = config.read_in
        metrics = evaluate_case(
            pred,
            truth,
            spacing,
            config.lesion_settings,
            scheme=scheme,
            lesion_metric=config.lesion_metric,
            nsd_tolerance_mm=config.lesions.nsd_tolerance_mm,
        )
        record = CaseRecord(
            case_id=case_id,
            status=DONE,
            model_version=config.name,
            settings=config.settings(),
            input_checksums=checksums,
            label_scheme=scheme.name,
            created=now(),
            shape=list(truth.shape),
            spacing=list(spacing),
            timings={"read_s": read_s, "evaluate_s": time.perf_counter() - began - read_s},
            region_volumes_ml=region_volumes_ml(pred, spacing, scheme),
            metrics=metrics,
            notes=notes,
        )
        write_record(out, record)
    except CaseError as err:
        record = _write_failed(out, config, case_id, err.file, err.reason)
    return {
        "case_id": case_id,
        "status": record.status,
        "error": record.error.message if record.error is not None else "",
    }


def _write_failed(
    out: Location, config: EvaluateConfig, case_id: str, file: str | None, reason: str
) -> CaseRecord:
    failure = CaseFailure(file, reason, str(CaseError(case_id, file, reason)))
    record = CaseRecord.failed(
        case_id, failure, model_version=config.name, settings=config.settings()
    )
    write_record(out, record)
    return record


def _valid(name: str) -> bool:
    try:
        validate_case_id(name)
    except InvalidCaseIdError:
        return False
    return True


def _read_labels(
    root_uri: str, path: str, case_id: str, config: EvaluateConfig, scheme: LabelScheme
) -> tuple[Volume, npt.NDArray[np.uint8], str]:
    """A label file's volume, internal classes (its values read in ``scheme``) and sha256. Raises
    CaseError naming the case and the file when it cannot be read, its header spacing is not
    three positive finite numbers, or it holds labels outside the scheme."""
    file = VolumeFile(resolve(root_uri, s3_endpoint=config.s3_endpoint), path, scheme)
    return read_labels(file, case_id, config.limits)


def evaluation_scheme(
    config: EvaluateConfig, truth_root: Location, truths: LabelFiles, pred_root: Location
) -> tuple[LabelScheme, LabelScheme | None]:
    """The scheme the truth is read and both sides scored in (see the module docstring), and
    the one the predictions are read in when their ``summary.json`` names another that reads
    like it (else ``None``).

    Raises:
        EvaluateError: the truth's names and labels leave it open, or the predictions say
            they are in a scheme that does not read like it (naming both).
    """
    try:
        given = load_scheme(config.label_scheme, s3_endpoint=config.s3_endpoint)
        cases = [truth_case(case_id, path) for case_id, path in sorted(truths.files.items())]
        scheme = resolve_cohort_scheme(cases, truth_root, given, config.limits).scheme
    except SchemeError as err:
        raise EvaluateError(f"truth {redact(truth_root.uri)}: {err}") from None
    predicted = predictions_scheme(pred_root)
    if predicted is not None and not interchangeable(predicted, scheme):
        raise EvaluateError(
            f"the predictions are in label scheme {predicted.name} (their summary.json) and "
            f"the truth in {scheme.name}: their labels mean different things, so nothing "
            f"would be scored right (pass --label-scheme {predicted.name} if the truth is "
            f"in fact in the predictions' scheme)"
        )
    if predicted is not None and predicted.disk_values != scheme.disk_values:
        log.info("label scheme %s (predictions read in %s)", scheme.name, predicted.name)
        return scheme, predicted
    log.info("label scheme %s", scheme.name)
    return scheme, None


def _write_report(
    records: list[CaseRecord],
    out: Location,
    truth_root: Location,
    pairs: list[Pair],
    config: EvaluateConfig,
) -> dict[str, str]:
    """The report, with thumbnails when the truth folder is a cohort with FLAIR images."""
    try:
        cohort = {c.case_id: c for c in discover(truth_root).cases if "flair" in c.images}
    except (OSError, StorageError):
        cohort = {}
    find = None
    if cohort:
        pred_root = resolve(config.pred, s3_endpoint=config.s3_endpoint)
        find = functools.partial(
            _case_files,
            truth_root=truth_root,
            pred_root=pred_root,
            cohort=cohort,
            pairs={p.case_id: p for p in pairs},
            scheme=config.read_in,
            pred_scheme=config.pred_read_in,
        )
    return write_job_report(records, out, find=find, limits=config.limits, scheme=config.read_in)


def _case_files(
    case_id: str,
    *,
    truth_root: Location,
    pred_root: Location,
    cohort: dict[str, Any],
    pairs: dict[str, Pair],
    scheme: LabelScheme,
    pred_scheme: LabelScheme,
) -> CaseFiles:
    """The case's FLAIR in the truth cohort, its truth (read in ``scheme``) and its
    prediction (in ``pred_scheme``; ``None`` when there is none).

    Raises:
        CaseError: the truth cohort has no FLAIR of the case, or the case no truth.
    """
    case, pair = cohort.get(case_id), pairs.get(case_id)
    if case is None or pair is None:
        raise CaseError(case_id, None, "no FLAIR in the truth folder to draw")
    pred = None if pair.pred is None else VolumeFile(pred_root, pair.pred, pred_scheme)
    return CaseFiles(
        flair=VolumeFile(truth_root, case.images["flair"]),
        pred=pred,
        truth=VolumeFile(truth_root, pair.truth, scheme),
    )
