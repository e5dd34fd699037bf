"""The training job's driver: a run's data, its Ray Train trainer, and the export.

A run lives under ``STORAGE/NAME/``: Ray Train's checkpoints and snapshot, and ours:

    cohort/        the ingested cohort, when training started from raw NIfTI
    split.json     train/validation case ids (seeded; reused on resume)
    history.csv    one row per finished epoch
    tensorboard/   event files
    model/         model.keras + model.json of the best checkpoint (written last)

The loop each worker runs is :func:`brats.train.worker.train_loop_per_worker`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from brats.storage import Location, read_bytes, redact, resolve, write_bytes_atomic
from brats.train.batches import (
    assign_cases,
    load_or_write_split,
    shard_bytes,
    steps_per_epoch,
)
from brats.train.checkpoints import (
    MAX_STATE_BYTES,
    STATE_FILE,
    WEIGHTS_FILE,
    checkpoint_candidates,
    read_checkpoint_state,
)
from brats.train.config import (
    RUNTIME_ONLY,
    EpochHook,
    TrainConfig,
    TrainingError,
    TrainResult,
    wait_for_workers,
)
from brats.train.worker import SCORE, train_loop_per_worker
from brats.volume.labels import scheme_from_dict

log = logging.getLogger(__name__)

HISTORY_FILE = "history.csv"


def prepare_cohort(config: TrainConfig) -> Location:
    """The normalized cohort to train on: ``data`` itself, or ``run/cohort`` ingested from it.

    A raw cohort is ingested once per run with the same Ray Data pipeline as
    ``jobs/ingest.py``; a resumed run reuses what it ingested.
    """
    from brats.ingest.job import IngestConfig, ingest
    from brats.ingest.prepare import PreprocessConfig
    from brats.ingest.shards import MANIFEST

    source = resolve(config.data, s3_endpoint=config.s3_endpoint)
    if source.filesystem().exists(source.join(MANIFEST)):
        return _at_spacing(source, config)
    cohort = config.run.child("cohort")
    if cohort.filesystem().exists(cohort.join(MANIFEST)):
        log.info("using the cohort this run ingested before: %s", redact(cohort.uri))
        return _at_spacing(cohort, config)
    log.info("ingesting raw cohort %s into %s", redact(source.uri), redact(cohort.uri))
    ingest(
        IngestConfig(
            cohort=config.data,
            out=cohort.uri,
            s3_endpoint=config.s3_endpoint,
            wait_for_actors=config.wait_for_actors,
            preprocess=PreprocessConfig(
                modalities=config.modalities,
                label_scheme=config.label_scheme,
                target_spacing=config.target_spacing,
            ),
        )
    )
    return cohort


def _at_spacing(cohort: Location, config: TrainConfig) -> Location:
    """``cohort``, unless ``--target-spacing`` asks for another spacing than its cases are
    stored at: then :class:`TrainingError` (a cohort is resampled when it is ingested)."""
    from brats.ingest.shards import load_manifest, manifest_target_spacing
    from brats.volume.resample import same_spacing

    if config.target_spacing is None:
        return cohort
    stored = manifest_target_spacing(load_manifest(cohort))
    if stored is None or not same_spacing(stored, config.target_spacing):
        raise TrainingError(
            f"cohort {redact(cohort.uri)} is stored at spacing "
            f"{'several' if stored is None else list(stored)} mm, not the "
            f"--target-spacing {list(config.target_spacing)} asked for: ingest the raw "
            "cohort again with that --target-spacing (jobs/ingest.py), or train a new run from "
            "the raw cohort"
        )
    return cohort


def build_trainer(
    config: TrainConfig, *, epoch_hook: EpochHook | None = None
) -> tuple[Any, dict[str, Any]]:
    """The run's ``DataParallelTrainer`` (TensorFlow workers: :mod:`brats.train.backend`),
    and a summary of its data (for logs and json).

    Ingests a raw cohort first (:func:`prepare_cohort`) and writes the run's split on its
    first start, then waits until the cluster has room for the group's smallest size
    (:func:`~brats.train.config.wait_for_workers`).

    Raises:
        TrainingError: the cohort's modalities are not the config's, or the split has fewer
            training cases than the group's largest size.
        brats.resources.ActorsNotStarted: no room for the workers in time.
    """
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from brats.ingest.shards import load_manifest
    from brats.train.backend import TensorflowWorkers

    cohort = prepare_cohort(config)
    manifest = load_manifest(cohort)
    check_modalities(config, cohort, manifest)
    split = load_or_write_split(config.run, manifest, config)
    resources = wait_for_workers(config)
    trainer = DataParallelTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config(config, cohort, manifest, split, epoch_hook),
        backend_config=TensorflowWorkers(),
        scaling_config=scaling_config(config, resources),
        # No Ray Train datasets: each worker reads its own assign_cases share from its
        # shards, in order (Ray's default split hands blocks to whichever worker asks
        # first, so which cases a worker saw would change from run to run), from the
        # group's size at the time (an elastic run's shares change when it is resized),
        # and rank 0 reads the validation cases. A Ray Data read in a worker would start
        # an execution (and a DatasetManager) per group start and wait on the CPUs the
        # workers hold.
        run_config=run_config(config, validates=bool(split["val"])),
    )
    return trainer, data_summary(config, cohort, manifest, split)


def check_modalities(config: TrainConfig, cohort: Location, manifest: dict[str, Any]) -> None:
    """Raise :class:`TrainingError` unless the cohort was ingested with the config's
    modalities, in its order."""
    cohort_modalities = tuple(manifest["preprocess"]["modalities"])
    if cohort_modalities != config.modalities:
        raise TrainingError(
            f"cohort {redact(cohort.uri)} was ingested with modalities {list(cohort_modalities)}"
            f", training asks for {list(config.modalities)}: pass --modalities "
            f"{','.join(cohort_modalities)}"
        )


def loop_config(
    config: TrainConfig,
    cohort: Location,
    manifest: dict[str, Any],
    split: dict[str, list[str]],
    epoch_hook: EpochHook | None,
) -> dict[str, Any]:
    """What every worker's :func:`~brats.train.worker.train_loop_per_worker` is given.

    Every size the group may take needs a case per worker (else :class:`TrainingError`);
    the largest share (at the smallest size) decides whether shares are kept in memory.
    """
    from brats.ingest.shards import manifest_scheme

    workers = config.num_workers
    largest = assign_cases(split["train"], workers.min, config.seed)
    assign_cases(split["train"], workers.max, config.seed)
    budget = config.cache_mib << 20
    return {
        "config": config.to_dict(),
        "train_ids": split["train"],
        "normalization": manifest["preprocess"]["normalization"],
        "epoch_hook": epoch_hook,
        "val_ids": split["val"],
        "cache_rows": shard_bytes(manifest, largest) <= budget,
        "cache_val": shard_bytes(manifest, [split["val"]]) <= budget,
        "cohort": cohort.uri,
        "label_scheme": manifest_scheme(manifest).to_dict(),
    }


def scaling_config(config: TrainConfig, resources: dict[str, float]) -> Any:
    """Ray Train's ``ScalingConfig``: the group's size (a range when elastic) and each
    worker's ``resources`` (:func:`~brats.train.config.worker_bundle`)."""
    from ray.train import ScalingConfig

    workers = config.num_workers
    size = workers.min if workers.fixed else (workers.min, workers.max)  # elastic: a range
    # Ray Train V2's ScalingConfig (the default in Ray 2.60); mypy sees V1's.
    return ScalingConfig(  # type: ignore[call-arg]
        num_workers=size,  # type: ignore[arg-type]
        use_gpu=config.use_gpu,
        resources_per_worker=resources,
        elastic_resize_monitor_interval_s=config.resize_interval_s,
    )


def run_config(config: TrainConfig, *, validates: bool) -> Any:
    """Ray Train's ``RunConfig``: the run's storage, its failure budget, the checkpoints it
    keeps (the best by :data:`~brats.train.worker.SCORE` when it ``validates``, else the
    newest) and the workers' niceness."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    storage = resolve(config.storage, s3_endpoint=config.s3_endpoint)
    return RunConfig(  # type: ignore[call-arg]  # V2 has worker_runtime_env
        name=config.name,
        # Merged with the job's runtime environment (its working_dir and env_vars stay).
        # At Ray's 15, every process at 0 on the node (the raylet, the GCS, a driver)
        # preempts a worker's compute threads mid-step while its other intra-op threads
        # wait; Ray's job supervisor starts job drivers at 0 the same way.
        worker_runtime_env={"env_vars": {"RAY_worker_niceness": str(config.worker_niceness)}},
        storage_path=storage.path,
        storage_filesystem=storage.pyarrow_filesystem(),
        failure_config=FailureConfig(max_failures=config.max_failures),
        checkpoint_config=CheckpointConfig(
            num_to_keep=config.num_to_keep,
            checkpoint_score_attribute=SCORE if validates else None,
            checkpoint_score_order="max",
        ),
    )


def data_summary(
    config: TrainConfig, cohort: Location, manifest: dict[str, Any], split: dict[str, list[str]]
) -> dict[str, Any]:
    """The run's data, for the logs, the job's JSON and the exported model's card."""
    from brats.ingest.shards import manifest_scheme, manifest_target_spacing

    return {
        "cohort": redact(cohort.uri),
        "manifest_hash": manifest["hash"],
        "train_cases": len(split["train"]),
        "val_cases": len(split["val"]),
        # At the largest group size.
        "steps_per_epoch": steps_per_epoch(config, len(split["train"]), config.num_workers.max),
        "normalization": manifest["preprocess"]["normalization"],
        "label_scheme": manifest_scheme(manifest).to_dict(),
        "target_spacing": _listed(manifest_target_spacing(manifest)),
    }


def _listed(spacing: Sequence[float] | None) -> list[float] | None:
    return None if spacing is None else list(spacing)


def train(config: TrainConfig, *, epoch_hook: EpochHook | None = None) -> TrainResult:
    """Run (or resume) training; export the best checkpoint as the model artifact.

    Needs a running Ray. Raises :class:`TrainingError` when the run fails (more worker
    failures than ``max_failures``, say); then no model is exported. With ``config.folds``
    above 1, trains the folds and their ensemble (:func:`brats.train.crossval.train_folds`).
    """
    if config.folds > 1:
        from brats.train.crossval import train_folds

        return train_folds(config, prepare=prepare_cohort, train_run=train, epoch_hook=epoch_hook)
    began = time.perf_counter()
    run = config.run
    done = _finished(config)
    if done is not None:
        log.info(
            "run %s already trained all %d epochs; nothing to do", redact(run.uri), config.epochs
        )
        return TrainResult(
            run=redact(run.uri),
            model=run.child("model").uri,
            history=done[0],
            best=done[1],
            seconds=time.perf_counter() - began,
        )
    trainer, summary = build_trainer(config, epoch_hook=epoch_hook)
    log.info(
        "training %s: %d train / %d val cases, %s workers, %d steps per epoch, %d epochs",
        redact(run.uri),
        summary["train_cases"],
        summary["val_cases"],
        config.num_workers,
        summary["steps_per_epoch"],
        config.epochs,
    )
    try:
        result = trainer.fit()
    except Exception as err:
        raise TrainingError(f"training run {redact(run.uri)} failed: {_root_cause(err)}") from err
    if result.error is not None:
        raise TrainingError(f"training run {redact(run.uri)} failed: {result.error}")
    best_checkpoint, best_metrics = _best(result)
    latest = _latest_history(result)
    write_history(run, latest)
    source = posixpath.basename(best_checkpoint.path.rstrip("/"))
    model_uri = run.child("model").uri
    if _exported_from(run) == source:
        log.info("model already exported from %s; keeping it (same version)", source)
        _restamp(run, config, source)
    else:
        with best_checkpoint.as_directory() as folder:
            read_checkpoint_state(folder)
            model_uri = export_model(folder, config, summary, best_metrics, source)
    return TrainResult(
        run=redact(run.uri),
        model=model_uri,
        history=latest,
        best=best_metrics,
        seconds=time.perf_counter() - began,
    )


def _best(result: Any) -> tuple[Any, dict[str, Any]]:
    candidates = [(c, m) for c, m in (result.best_checkpoints or []) if c is not None]
    if not candidates:
        if result.checkpoint is None:
            raise TrainingError("the run reported no checkpoint")
        return result.checkpoint, dict(result.metrics or {})
    if any(SCORE in m for _, m in candidates):
        return max(candidates, key=lambda cm: cm[1].get(SCORE, -1.0))
    return candidates[-1]


def _latest_history(result: Any) -> list[dict[str, Any]]:
    if result.checkpoint is None:
        raise TrainingError("the run reported no checkpoint")
    with result.checkpoint.as_directory() as folder:
        return list(read_checkpoint_state(folder)["history"])


def _finished(config: TrainConfig) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """``(history, best metrics)`` of a run that has nothing left to do, else ``None``.

    Finished means: the run's exported model was trained with this very config (a setting
    added since that run reads as its default, as on resuming) and the newest complete
    checkpoint in storage has all ``config.epochs``. Ray Train would start a worker group
    only to train nothing (half a minute on a small machine, GPUs held), so the rerun
    returns what is already there. Any other state (a different config, fewer epochs
    done, no export yet) goes through Ray Train, which resumes.
    """
    from brats.io.artifact import read_model_card
    from brats.io.model_card import ArtifactError

    run = config.run
    try:
        card = read_model_card(run.child("model"))
    except (ArtifactError, OSError):
        return None
    try:  # read as a resumed run reads it: settings added since at their defaults
        trained_with = TrainConfig.from_dict(dict(card.info.training))
    except (TypeError, ValueError):
        return None
    if replace(trained_with, **{k: getattr(config, k) for k in RUNTIME_ONLY}) != config:
        return None
    candidates = checkpoint_candidates(run)
    if not candidates or candidates[0][0] < config.epochs:
        return None
    fs = run.filesystem()
    state = json.loads(
        read_bytes(fs, posixpath.join(candidates[0][1], STATE_FILE), max_bytes=MAX_STATE_BYTES)
    )
    best: dict[str, Any] = dict(card.info.metrics)
    best["postprocessing"] = json.dumps(dict(card.info.postprocessing), sort_keys=True)
    return list(state["history"]), best


def _exported_from(run: Location) -> str | None:
    """The checkpoint the run's exported model came from, if it has one."""
    from brats.io.artifact import read_model_card
    from brats.io.model_card import ArtifactError

    try:
        card = read_model_card(run.child("model"))
    except (ArtifactError, OSError):
        return None
    source = card.info.training.get("checkpoint")
    return str(source) if source else None


def _restamp(run: Location, config: TrainConfig, source: str) -> None:
    """Keep the run's exported model (same checkpoint, same ``model.keras``, same version)
    but let its card's ``training`` say the config this run now has (more epochs, say), so
    that the next rerun finds the run finished (:func:`_finished`) instead of starting a
    worker group to train nothing."""
    from brats.io.artifact import read_model_card
    from brats.io.model_card import META_FILE

    model = run.child("model")
    card = read_model_card(model)
    now = replace(card, info=replace(card.info, training=config.training_notes(source)))
    if now.to_json() != card.to_json():
        write_bytes_atomic(run.filesystem(), model.join(META_FILE), now.to_json())


def _root_cause(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {err}"


def write_history(run: Location, history: list[dict[str, Any]]) -> None:
    """``history.csv``: one row per finished epoch, columns in first-seen order."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    sink = io.StringIO()
    writer = csv.DictWriter(sink, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    write_bytes_atomic(run.filesystem(), run.join(HISTORY_FILE), sink.getvalue().encode())


def export_model(
    checkpoint_dir: str,
    config: TrainConfig,
    summary: dict[str, Any],
    metrics: dict[str, Any],
    source: str,
) -> str:
    """Build the network in code, load the checkpoint's weights, save the model artifact
    under ``run/model`` (without the deep-supervision heads) with the component rules chosen
    on validation in that checkpoint's epoch; return its URI."""
    from brats.io.artifact import save_artifact
    from brats.network.unet import build_unet

    scheme = scheme_from_dict(summary["label_scheme"])
    model = build_unet(config.unet(scheme=scheme), deep_supervision=True)
    model.load_weights(os.path.join(checkpoint_dir, WEIGHTS_FILE))
    info = config.model_info(
        summary["normalization"],
        label_scheme=scheme,
        manifest_hash=summary["manifest_hash"],
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        checkpoint=source,
        postprocessing=json.loads(metrics.get("postprocessing") or "{}"),
        target_spacing=summary.get("target_spacing"),
    )
    target = config.run.child("model")
    save_artifact(model, info, target)
    return target.uri
