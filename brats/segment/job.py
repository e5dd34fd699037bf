"""The segmentation job: a trained model mapped over a cohort with Ray Data.

Shape (Ray Data's batch-inference pattern):

    discover cases (driver) -> drop those already done for this model and these settings
      -> map: read + validate + normalize one case                    (Ray Data tasks)
      -> map_batches(CaseSegmenter): the case's labels in its source grid and its
         uncertainty (actor pool, brats.segment.actor; each actor loads the model once,
         hash-checked; one GPU per actor with --use-gpu)
      -> map: write the maps asked for, masks/<case>.nii.gz, then records/<case>.json
                                                                       (Ray Data tasks)
      -> driver: report.* from every record in OUT, then _SUCCESS

Exactly once: each case writes fixed keys, whole objects only; the mask is written before
its record, so a record that says ``done`` always has its mask, and a case whose write broke
has no record and is redone by the next run. Masks are deterministic bytes, so a retried
task (an actor that died, say) rewrites exactly what was there.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from brats.errors import CaseError
from brats.ingest.prepare import PreprocessConfig
from brats.io.cases import Case, Discovery, discover
from brats.io.model_card import ArtifactError, ModelCard
from brats.io.schemes import load_scheme, names_scheme, resolve_cohort_scheme
from brats.options import build_parser, option
from brats.progress import Progress
from brats.report.batch import (
    CaseFiles,
    JobConfig,
    JobError,
    JobResult,
    VolumeFile,
    write_job_report,
)
from brats.report.records import (
    MAPS,
    MASKS,
    PROBABILITIES,
    RECORDS,
    UNCERTAINTY,
    CaseRecord,
    clear_success,
    list_outputs,
    mask_key,
    read_records,
    success_matches,
    write_success,
)
from brats.report.status import DONE, FAILED
from brats.resources import (
    ACTOR_WAIT_HELP,
    ACTOR_WAIT_S,
    ActorsNotStarted,
    Replicas,
    cpus_per_replica,
    replica_bundle,
    wait_for_room,
)
from brats.runtime import LocalRay
from brats.segment.actor import CaseSegmenter
from brats.segment.attempts import Attempts
from brats.segment.backends import BackendError, resolve_backend
from brats.segment.predictor import PredictSettings
from brats.segment.writer import (
    CaseHook,
    record_rejected,
    remove_unasked_maps,
    write_case_outputs,
)
from brats.storage import Location, StorageError, redact, remove_partial_writes, resolve
from brats.volume.labels import BEFORE_2024, LabelScheme, SchemeError, interchangeable

log = logging.getLogger(__name__)


class SegmentError(JobError):
    """The job cannot run at all (a refused model, an unreachable cohort)."""


@dataclass(frozen=True)
class SegmentConfig(JobConfig):
    """Everything ``jobs/segment.py`` takes: the shared output settings
    (:class:`~brats.report.batch.JobConfig`) and these."""

    cohort: str = option(help="NIfTI cohort: local folder or s3://")
    model: str = option(help="model folder (model.keras + model.json, or an ensemble of folds)")
    use_gpu: bool = option(False, help="one GPU per model actor")
    num_actors: Replicas = option(
        Replicas(1, 1),
        help="model replicas (one per GPU with --use-gpu): N, or MIN:MAX to grow the actor "
        "pool onto nodes that join while the job runs",
    )
    cpus_per_actor: float | None = option(
        None, help="CPUs per model actor (default: 1 with GPUs; else at most 1, leaving one "
        "for reading)",
    )  # fmt: skip
    wait_for_actors: float = option(ACTOR_WAIT_S, metavar="SECONDS", help=ACTOR_WAIT_HELP)
    predict: PredictSettings = field(default_factory=PredictSettings)
    save_probabilities: bool = option(
        False,
        help="also write each case's probabilities in its own geometry: "
        "probabilities/<case>.nii.gz, one map per region output (class, for a softmax model) "
        "along the 4th axis, as 16-bit fractions",
    )
    save_uncertainty: bool = option(
        False,
        help="also write each case's per-voxel uncertainty (the normalized entropy of the "
        "averaged probabilities, in [0, 1]): uncertainty/<case>.nii.gz",
    )
    label_scheme: str | None = option(
        None,
        metavar="SCHEME",
        help="the cohort's label scheme (a built-in name or a JSON file): its truth is read "
        "and masks are written in it; it must read like the model's (default: from the "
        "cohort's names and labels, else the model's)",
    )

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "num_actors", Replicas.parse(self.num_actors))
        except ValueError as exc:
            raise ValueError(f"num_actors: {exc}") from None

    def output_settings(self, scheme: LabelScheme) -> dict[str, Any]:
        """What, besides the model, decides a mask's bytes (the scheme it is written in and
        the prediction settings): a change redoes every case. A BraTS 2020 or 2023 cohort
        nobody named a scheme for is written in its own values, as before schemes, and says
        so in the words of then (``label_convention: null``), so that work stays done; so is
        a ``met2023`` or ``men2023`` one, which read as ``brats2023`` then (the same values)."""
        if self.label_scheme is None and scheme in BEFORE_2024:
            return {"label_convention": None, **self.predict.output_settings()}
        return {"label_scheme": scheme.name, **self.predict.output_settings()}

    def maps(self) -> tuple[str, ...]:
        """The per-voxel maps asked for (:data:`~brats.report.records.MAPS`), in order. They
        do not change a mask: a case done without a map this run asks for is redone (its
        mask is rewritten with the same bytes), and a run that asks for fewer maps than a
        case has keeps it as done."""
        asked = {PROBABILITIES: self.save_probabilities, UNCERTAINTY: self.save_uncertainty}
        return tuple(folder for folder in MAPS if asked[folder])


def segment_parser(prog: str) -> argparse.ArgumentParser:
    """The segment job's arguments, built from :class:`SegmentConfig` (and the local Ray's
    size): ``brats segment``, ``jobs/segment.py`` and the nightly submitter's check use it."""
    return build_parser(
        prog,
        "Segment a cohort with a trained model on Ray Data: one mask per case in the case's "
        "geometry, records, a Dice report; cases already done are skipped.",
        SegmentConfig,
        LocalRay,
    )


@dataclass(frozen=True)
class SegmentResult(JobResult):
    """What a segmentation run did: ``total`` cases found, ``skipped`` (already done with
    this model and these settings) and the :class:`~brats.report.batch.JobResult` fields."""

    out: str
    model_version: str
    total: int
    skipped: int
    done: int
    failed: list[dict[str, Any]]
    report: dict[str, str]
    seconds: float

    def succeeded(self) -> bool:
        """Some case is done: by this run, or by an earlier one (skipped)."""
        return self.done > 0 or self.skipped > 0

    def counts(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "cases": self.total,
            "skipped": self.skipped,
            "done": self.done,
        }


def verified_card(
    model: Location, backend: str = "auto", precision: str = "float32"
) -> tuple[ModelCard, str]:
    """The model's card and the runtime ``backend`` resolves to for it
    (:func:`~brats.segment.backends.resolve_backend`), after checking its weights
    (``model.keras``, an export's ``model.onnx``) against it and that the runtime can run it
    at ``precision`` (no TensorFlow here).

    The actors check again when they load it; checking first makes a tampered model, or one
    the backend cannot run, a clear error before any case is touched.
    """
    from brats.io.artifact import verify_artifact

    try:
        card = verify_artifact(model)
        runtime = resolve_backend(backend, card, precision)
    except (ArtifactError, BackendError, OSError) as err:
        raise SegmentError(f"model {redact(model.uri)}: {err}") from err
    return card, runtime


def segment(
    config: SegmentConfig,
    *,
    predict_hook: CaseHook | None = None,
    write_hook: CaseHook | None = None,
) -> SegmentResult:
    """Segment every case of the cohort not already done for this model; report; mark done.

    Needs a running Ray. A bad case never raises: it becomes a failed record.

    Raises:
        SegmentError: the job cannot start (a cohort, model or output URI that cannot be used,
            such as an unsupported scheme or one with credentials in it; a refused model; a
            cohort that cannot be listed).
    """
    began = time.perf_counter()
    at: dict[str, Location] = {}
    for name in ("cohort", "out", "model"):
        try:
            at[name] = resolve(getattr(config, name), s3_endpoint=config.s3_endpoint)
        except StorageError as err:  # named, and shown redacted: a failed result, no traceback
            raise SegmentError(f"--{name} {redact(getattr(config, name))}: {err}") from err
    cohort, out = at["cohort"], at["out"]
    card, runtime = verified_card(at["model"], config.predict.backend, config.predict.precision)
    version = card.version
    try:
        found = discover(cohort)
        scheme = run_scheme(found.cases, cohort, card.info.scheme, config)
    except (OSError, StorageError) as err:
        raise SegmentError(f"cohort {redact(cohort.uri)}: {err}") from err
    settings = config.output_settings(scheme)
    rejected = record_rejected(found.rejected, out, model_version=version, settings=settings)
    existing = read_records(out)
    written = {folder: list_outputs(out, folder, ".nii.gz") for folder in (MASKS, *config.maps())}
    todo = [
        c
        for c in found.cases
        if not _is_done(existing.get(c.case_id), c, written, version, settings)
    ]
    skipped = len(found.cases) - len(todo)
    log.info(
        "segment: %d cases under %s, %d already done with model %s (in %s), %d to do",
        len(found.cases),
        redact(cohort.uri),
        skipped,
        version[:12],
        runtime,
        len(todo),
    )
    if not todo and success_matches(out, existing.values()):
        log.info("nothing to do: every case is done and the report is current")
        return SegmentResult(
            redact(out.uri), version, len(found.cases), skipped, 0, rejected, {}, 0.0
        )
    clear_success(out)
    Attempts(out).clear()
    for folder in (*MAPS, MASKS, RECORDS):  # a killed run's half-written files, never read
        remove_partial_writes(out.filesystem(), out.join(folder))
    remove_unasked_maps(out, [c.case_id for c in todo], config.maps())
    rows_out: list[dict[str, Any]] = []
    if todo:
        preprocess = PreprocessConfig.for_model(card.info, limits=config.limits).with_scheme(scheme)
        try:
            rows_out = list(
                _run_pipeline(todo, cohort, out, config, preprocess, predict_hook, write_hook)
            )
        except ActorsNotStarted as err:
            raise SegmentError(str(err)) from None
    records = read_records(out)
    report = _write_report(list(records.values()), out, cohort, found.cases, config, scheme)
    failed = [
        {"case_id": r["case_id"], "error": r["error"]} for r in rows_out if r["status"] == FAILED
    ]
    result = SegmentResult(
        out=redact(out.uri),
        model_version=version,
        total=len(found.cases),
        skipped=skipped,
        done=sum(r["status"] == DONE for r in rows_out),
        failed=rejected + failed,
        report=report,
        seconds=time.perf_counter() - began,
    )
    write_success(out, model_version=version, cases=len(found.cases), records=records.values())
    return result


def _is_done(
    record: CaseRecord | None,
    case: Case,
    written: dict[str, dict[str, int]],
    version: str,
    settings: dict[str, Any],
) -> bool:
    """Done with this model and settings, its mask there, and every map asked for
    (``written``: the listing of masks/ and of each map folder asked for) recorded and there."""
    if record is None or not record.is_done_for(version, settings):
        return False
    return all(
        case.case_id in files and (folder == MASKS or folder in record.maps)
        for folder, files in written.items()
    )


def _run_pipeline(
    todo: list[Case],
    cohort: Location,
    out: Location,
    config: SegmentConfig,
    preprocess: PreprocessConfig,
    predict_hook: CaseHook | None,
    write_hook: CaseHook | None,
) -> Iterator[dict[str, Any]]:
    import ray.data

    from brats.ingest.rows import read_cohort

    scheme = preprocess.scheme
    assert scheme is not None  # segment() resolved it
    ds, _ = read_cohort(cohort, preprocess, discovery=Discovery(cases=todo))  # joins Ray
    cpus = cpus_per_replica(
        config.cpus_per_actor,
        config.num_actors.min,
        use_gpu=config.use_gpu,
        what="model actors",
    )
    bundle, ask = replica_bundle(cpus, use_gpu=config.use_gpu)
    wait_for_room(
        bundle,
        config.num_actors.min,
        config.wait_for_actors,
        f"{config.num_actors.min} model actor(s) of {ask} each",
    )
    ds = ds.map_batches(
        CaseSegmenter,
        fn_constructor_kwargs={
            "model_uri": config.model,
            "s3_endpoint": config.s3_endpoint,
            "settings": config.predict,
            "fault_hook": predict_hook,
            "attempts": out,
            "maps": config.maps(),
        },
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            min_size=config.num_actors.min, max_size=config.num_actors.max
        ),
        num_cpus=cpus,
        num_gpus=1 if config.use_gpu else 0,
        # A dead actor is restarted and its batch retried, without limit (Ray Data's
        # default); a case that kills every actor it meets is failed by its Attempts count.
    )
    ds = ds.map(
        functools.partial(
            write_case_outputs,
            out=out,
            settings=config.output_settings(scheme),
            scheme=scheme,
            maps=config.maps(),
            write_hook=write_hook,
        ),
        num_cpus=0.5,
    )
    progress = Progress("segment", len(todo), log)
    for row in ds.iter_rows():
        progress.update(row["case_id"], None if row["status"] == DONE else row["error"])
        yield dict(row)


def _write_report(
    records: list[CaseRecord],
    out: Location,
    cohort: Location,
    cases: list[Case],
    config: SegmentConfig,
    scheme: LabelScheme,
) -> dict[str, str]:
    by_id = {c.case_id: c for c in cases}
    find = functools.partial(_case_files, out=out, cohort=cohort, cases=by_id, scheme=scheme)
    return write_job_report(records, out, find=find, limits=config.limits, scheme=scheme)


def _case_files(
    case_id: str,
    *,
    out: Location,
    cohort: Location,
    cases: dict[str, Case],
    scheme: LabelScheme,
) -> CaseFiles:
    """The case's FLAIR (else its first image) and truth in the cohort, and its mask in OUT,
    read in the run's ``scheme``.

    Raises:
        CaseError: the cohort has no FLAIR of the case.
    """
    case = cases.get(case_id)
    if case is None or not case.images:
        raise CaseError(case_id, None, "no image in the cohort to draw")
    background = case.images.get("flair") or next(iter(sorted(case.images.values())))
    truth = None if case.seg is None else VolumeFile(cohort, case.seg, scheme)
    return CaseFiles(
        flair=VolumeFile(cohort, background),
        pred=VolumeFile(out, out.join(mask_key(case_id)), scheme),
        truth=truth,
    )


def run_scheme(
    cases: list[Case], cohort: Location, model: LabelScheme, config: SegmentConfig
) -> LabelScheme:
    """The scheme a run reads truth and writes masks in: ``--label-scheme``, else the
    cohort's (resolved once from its names and labels), else, for a cohort without truth,
    the model's (BraTS 2020 values for BraTS 2020 names, when the model reads like it).

    Raises:
        SegmentError: the cohort's scheme does not read like the model's (naming both), or
            the cohort's names and labels leave it open.
    """
    try:
        given = load_scheme(config.label_scheme, s3_endpoint=config.s3_endpoint)
        if given is None and not any(c.seg for c in cases):
            return names_scheme(cases, model)
        cohort_scheme = resolve_cohort_scheme(cases, cohort, given, config.limits).scheme
    except SchemeError as err:
        raise SegmentError(f"cohort {redact(cohort.uri)}: {err}") from None
    if not interchangeable(cohort_scheme, model):
        raise SegmentError(
            f"the cohort's truth is in label scheme {cohort_scheme.name} and the model predicts "
            f"{model.name}: their labels mean different things, so masks cannot be written "
            f"or scored in the cohort's scheme (pass --label-scheme {model.name} if the truth "
            f"is in fact in the model's scheme)"
        )
    return cohort_scheme
