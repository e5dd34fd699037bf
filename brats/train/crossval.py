"""Cross-validated training: ``K`` folds as concurrent Ray Train runs, then their ensemble.

A run with ``--folds K`` lives under ``STORAGE/NAME/``::

    cohort/        the ingested cohort, when training started from raw NIfTI (once, for all)
    folds.json     the folds (:mod:`brats.train.folds`), written once, reused on every rerun
    fold_<i>/      fold i: a complete run of its own (split.json = the other folds / fold i,
                   checkpoints, history, model/), resumable on its own
    model/         the ensemble (written last, once every fold has its model): model.json
                   (kind ``ensemble``) and each fold's model under fold_<i>/

Each fold's run is an ordinary :func:`brats.train.job.train` with its split fixed, driven
from a thread of this driver, so all ``K`` ask Ray for their workers at once: as many start
as the cluster fits and the others wait for their workers (Ray Train retries a worker group
it cannot place). A rerun skips the folds that finished and resumes the others; ``--fold i``
trains one. The ensemble's card describes the folds' common network; its figures are the
folds' validation figures averaged (each fold validates on its own held-out cases).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from brats.storage import Location, json_bytes, read_bytes, redact, write_bytes_atomic
from brats.train.batches import MAX_SPLIT_BYTES, SPLIT_FILE
from brats.train.config import EpochHook, TrainConfig, TrainingError, TrainResult
from brats.train.folds import FOLDS_FILE, fold_split, manifest_folds

log = logging.getLogger(__name__)


def fold_config(config: TrainConfig, cohort: Location, i: int) -> TrainConfig:
    """Fold ``i``'s run: the same settings, under ``NAME/fold_<i>``, on the ingested cohort."""
    return replace(
        config, storage=config.run.uri, name=f"fold_{i}", data=cohort.uri, folds=1, fold=None
    )


def load_or_write_folds(run: Location, manifest: dict[str, Any], config: TrainConfig) -> Any:
    """The run's folds: ``folds.json`` if it has one, else made (stratified, seeded) and
    written.

    Raises:
        TrainingError: the run's folds were made on another cohort, or for another ``K``.
    """
    fs = run.filesystem()
    path = run.join(FOLDS_FILE)
    if fs.exists(path):
        folds = json.loads(read_bytes(fs, path, max_bytes=MAX_SPLIT_BYTES))
        if (folds.get("manifest_hash"), folds.get("k")) != (manifest["hash"], config.folds):
            raise TrainingError(
                f"{redact(run.uri)}: this run's folds are {folds.get('k')} folds of cohort "
                f"{folds.get('manifest_hash')}, not {config.folds} of {manifest['hash']}; "
                "use a new --name"
            )
        return folds
    try:
        folds = manifest_folds(manifest, config.folds, config.seed)
    except ValueError as exc:
        raise TrainingError(f"{redact(run.uri)}: {exc}") from None
    if not folds["stratified"]:
        log.warning(
            "%s: the cohort's manifest does not count each case's classes (ingested before "
            "they were): folds are not stratified; ingest it again to stratify them",
            redact(run.uri),
        )
    write_bytes_atomic(fs, path, json_bytes(folds))
    return folds


def write_fold_split(fold_run: Location, folds: dict[str, Any], i: int, seed: int) -> None:
    """Fold ``i``'s ``split.json``, which its run then reads as any run reads its split."""
    fs = fold_run.filesystem()
    path = fold_run.join(SPLIT_FILE)
    split = {**fold_split(folds["folds"], i), "seed": seed, "manifest_hash": folds["manifest_hash"]}
    if fs.exists(path):
        if json.loads(read_bytes(fs, path, max_bytes=MAX_SPLIT_BYTES)) != split:
            raise TrainingError(f"{redact(fold_run.uri)}: its split is not fold {i} of folds.json")
        return
    write_bytes_atomic(fs, path, json_bytes(split))


def train_folds(config: TrainConfig, *, epoch_hook: EpochHook | None = None) -> TrainResult:
    """Train (or resume) every fold of ``config.folds`` concurrently, or ``config.fold``
    alone; once every fold has its model, write the ensemble under ``NAME/model``.

    Returns the run, the ensemble's URI (``None`` until every fold is done), each fold's
    history under ``fold``, and the folds' mean best figures.

    Raises:
        TrainingError: naming every fold that failed (after the others finished).
    """
    from brats.ingest.shards import load_manifest
    from brats.train.job import prepare_cohort, train

    began = time.perf_counter()
    run = config.run
    cohort = prepare_cohort(config)
    manifest = load_manifest(cohort)
    folds = load_or_write_folds(run, manifest, config)
    chosen = range(config.folds) if config.fold is None else [config.fold]
    configs = {i: fold_config(config, cohort, i) for i in chosen}
    for i, fold in configs.items():
        write_fold_split(fold.run, folds, i, config.seed)
    log.info(
        "cross-validation %s: %d folds of %d cases, training fold(s) %s",
        redact(run.uri),
        config.folds,
        sum(len(f) for f in folds["folds"]),
        ", ".join(str(i) for i in chosen),
    )
    results: dict[int, TrainResult] = {}
    failed: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=len(configs), thread_name_prefix="fold") as pool:
        futures = {i: pool.submit(train, c, epoch_hook=epoch_hook) for i, c in configs.items()}
        for i, future in futures.items():
            try:
                results[i] = future.result()
            except TrainingError as exc:
                failed[i] = str(exc)
    if failed:
        raise TrainingError(
            "; ".join(f"fold {i} failed: {message}" for i, message in sorted(failed.items()))
        )
    model = write_ensemble(config, cohort)
    best = _mean_figures([r.best for r in results.values()])
    return TrainResult(
        run=redact(run.uri),
        model=model,
        history=[{"fold": i, **row} for i, r in sorted(results.items()) for row in r.history],
        best=best,
        seconds=time.perf_counter() - began,
    )


def write_ensemble(config: TrainConfig, cohort: Location) -> str | None:
    """``NAME/model``: the ensemble of every fold's model, or ``None`` (nothing written) while
    a fold has none yet. Its card is fold 0's description with the folds' mean figures and
    no postprocessing (each fold's rules were chosen on its own few cases)."""
    from brats.io.artifact import read_model_card, save_ensemble
    from brats.io.model_card import ArtifactError

    models = [fold_config(config, cohort, i).run.child("model") for i in range(config.folds)]
    cards = []
    for model in models:
        try:
            cards.append(read_model_card(model))
        except (ArtifactError, OSError):
            log.info("%s has no model yet: no ensemble", redact(model.uri))
            return None
    target = config.run.child("model")
    try:
        existing = read_model_card(target)
    except (ArtifactError, OSError):
        existing = None
    if existing is not None and [f.version for f in existing.folds] == [c.version for c in cards]:
        log.info("ensemble of these folds already written: %s", redact(target.uri))
        return target.uri
    first = cards[0].info
    metrics = _mean_figures([dict(c.info.metrics) for c in cards])
    training = {
        **first.training,
        "name": config.name,
        "storage": config.storage,
        "folds": config.folds,
    }
    info = replace(first, metrics=metrics, postprocessing={}, training=training)
    card = save_ensemble(models, info, target)
    log.info("ensemble of %d folds: %s (version %s)", len(cards), redact(target.uri), card.version)
    return target.uri


def _mean_figures(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The mean of each number every row has."""
    keys = set.intersection(*(set(r) for r in rows)) if rows else set()
    numbers = [k for k in sorted(keys) if all(isinstance(r[k], int | float) for r in rows)]
    return {k: float(sum(r[k] for r in rows) / len(rows)) for k in numbers}
