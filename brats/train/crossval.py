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
trains one.

Once every fold has its model, each predicts its own validation cases with the one
predictor (a Ray task per fold, TTA as the model says): out-of-fold predictions of every
labelled case, none by a model that trained on it (:func:`out_of_fold`). The ensemble's
postprocessing is chosen on all of them pooled, by lesion-wise Dice, among the component
rules and the whole-region volume thresholds (:data:`brats.volume.postprocess.VOLUME_RULES`:
an ET smaller than the chosen size becomes core); the few validation cases of one fold are
too few to learn that rule from. The card records the out-of-fold Dice and lesion-wise Dice
per region after those rules, and the folds' mean validation figures.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from brats.io.model_card import META_FILE
from brats.storage import Location, json_bytes, read_bytes, redact, write_bytes_atomic
from brats.train.batches import MAX_SPLIT_BYTES, SPLIT_FILE
from brats.train.config import (
    EpochHook,
    TrainConfig,
    TrainingError,
    TrainResult,
    wait_for_workers,
)
from brats.train.folds import FOLDS_FILE, fold_split, manifest_folds
from brats.volume.labels import LabelScheme, region_mask
from brats.volume.metrics import dice
from brats.volume.postprocess import (
    CANDIDATE_RULES,
    VOLUME_RULES,
    Postprocessing,
    choose_postprocessing,
)

log = logging.getLogger(__name__)


def fold_config(config: TrainConfig, cohort: Location, i: int) -> TrainConfig:
    """Fold ``i``'s run: the same settings, under ``NAME/fold_<i>``, on the ingested cohort;
    ``extra["fold"]`` names it (its epoch lines start ``fold i:``, its model.json says it)."""
    return replace(
        config,
        storage=config.run.uri,
        name=f"fold_{i}",
        data=cohort.uri,
        folds=1,
        fold=None,
        extra={**config.extra, "fold": i},
        wait_for_actors=0.0,  # train_folds waited for one fold's room; the rest queue
    )


def load_or_write_folds(run: Location, manifest: dict[str, Any], config: TrainConfig) -> Any:
    """The run's folds: ``folds.json`` if it has one, else made (stratified, seeded) and
    written.

    Raises:
        TrainingError: the run's folds were made on another cohort, for another ``K`` or
            with another ``--seed`` (its finished folds would resume under the new seed).
    """
    fs = run.filesystem()
    path = run.join(FOLDS_FILE)
    if fs.exists(path):
        folds = json.loads(read_bytes(fs, path, max_bytes=MAX_SPLIT_BYTES))
        made = (folds.get("manifest_hash"), folds.get("k"), folds.get("seed"))
        if made != (manifest["hash"], config.folds, config.seed):
            raise TrainingError(
                f"{redact(run.uri)}: this run's folds are {made[1]} folds of cohort "
                f"{made[0]} (seed {made[2]}), not {config.folds} of {manifest['hash']} "
                f"(seed {config.seed}); use a new --name"
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


def write_fold_split(fold_run: Location, folds: dict[str, Any], i: int) -> None:
    """Fold ``i``'s ``split.json``, which its run then reads as any run reads its split."""
    fs = fold_run.filesystem()
    path = fold_run.join(SPLIT_FILE)
    split = {
        **fold_split(folds["folds"], i),
        "seed": folds["seed"],
        "manifest_hash": folds["manifest_hash"],
    }
    if fs.exists(path):
        if json.loads(read_bytes(fs, path, max_bytes=MAX_SPLIT_BYTES)) != split:
            raise TrainingError(f"{redact(fold_run.uri)}: its split is not fold {i} of folds.json")
        return
    write_bytes_atomic(fs, path, json_bytes(split))


def train_folds(
    config: TrainConfig,
    *,
    prepare: Callable[[TrainConfig], Location],
    train_run: Callable[..., TrainResult],
    epoch_hook: EpochHook | None = None,
) -> TrainResult:
    """Train (or resume) every fold of ``config.folds`` concurrently, or ``config.fold``
    alone; once every fold has its model, write the ensemble under ``NAME/model``.

    ``prepare`` is the driver's cohort preparation and ``train_run`` the training of one run
    (:func:`brats.train.job.prepare_cohort` and :func:`brats.train.job.train`, which calls
    this: passed in, so that this module does not import the job).

    Returns the run, the ensemble's URI (``None`` until every fold is done), each fold's
    history under ``fold``, and the folds' mean best figures.

    Raises:
        TrainingError: naming every fold that failed (after the others finished).
        brats.resources.ActorsNotStarted: a fold has yet to train and the cluster had no
            room for one fold's workers within ``config.wait_for_actors`` seconds.
    """
    from brats.ingest.shards import load_manifest

    began = time.perf_counter()
    run = config.run
    cohort = prepare(config)
    manifest = load_manifest(cohort)
    folds = load_or_write_folds(run, manifest, config)
    chosen = range(config.folds) if config.fold is None else [config.fold]
    configs = {i: fold_config(config, cohort, i) for i in chosen}
    for i, fold in configs.items():
        write_fold_split(fold.run, folds, i)
    log.info(
        "cross-validation %s: %d folds of %d cases, training fold(s) %s",
        redact(run.uri),
        config.folds,
        sum(len(f) for f in folds["folds"]),
        ", ".join(str(i) for i in chosen),
    )
    if not all(_has_model(c) for c in configs.values()):  # a fold will train: room for one
        wait_for_workers(config, whose="a fold's ")
    results: dict[int, TrainResult] = {}
    failed: dict[int, str] = {}
    with (
        queued_folds_wait_quietly(),
        ThreadPoolExecutor(max_workers=len(configs), thread_name_prefix="fold") as pool,
    ):
        futures = {i: pool.submit(train_run, c, epoch_hook=epoch_hook) for i, c in configs.items()}
        for i, future in futures.items():
            try:
                results[i] = future.result()
            except TrainingError as exc:
                failed[i] = str(exc)
            except Exception as exc:  # storage, export: still wait for and name every fold
                failed[i] = f"{type(exc).__name__}: {exc}"
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


def _has_model(fold: TrainConfig) -> bool:
    model = fold.run.child("model")
    return model.filesystem().exists(model.join(META_FILE))


FOLD_START_TIMEOUT_S: Final = 7 * 24 * 3600.0
"""How long a queued fold's worker group waits for room before Ray Train gives up that try
(and tries again): its room comes when another fold finishes, however long that takes."""


@contextmanager
def queued_folds_wait_quietly() -> Iterator[None]:
    """While the folds start: Ray Train's worker-group start timeout
    (``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``, which Ray Train hands from the driver to each
    run's controller) at :data:`FOLD_START_TIMEOUT_S`, unless the environment sets it.

    At Ray Train's 60 s a fold waiting for another's workers logged a controller failure with
    its traceback every minute, for as long as it waited. Its placement group still starts
    the moment the cluster has room (or an autoscaler's node joins)."""
    name = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
    if name in os.environ:
        yield
        return
    os.environ[name] = f"{FOLD_START_TIMEOUT_S:g}"
    try:
        yield
    finally:
        os.environ.pop(name, None)


def write_ensemble(config: TrainConfig, cohort: Location) -> str | None:
    """``NAME/model``: the ensemble of every fold's model, or ``None`` (nothing written) while
    a fold has none yet. Its card is fold 0's description with the postprocessing chosen on
    the out-of-fold predictions, their figures and the folds' mean validation figures."""
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
    cases = out_of_fold(config, cohort, models)
    rules, oof = choose_oof_postprocessing(cases, first.scheme)
    log.info("out-of-fold, %d cases: %s", len(cases), oof_summary(rules, oof, first.scheme))
    metrics = _mean_figures([dict(c.info.metrics) for c in cards]) | oof
    # The ensemble's own description: not fold 0's (its fold number, its checkpoint).
    fold_only = {"checkpoint", "extra"}
    training = {
        **{k: v for k, v in first.training.items() if k not in fold_only},
        "extra": {k: v for k, v in dict(first.training.get("extra") or {}).items() if k != "fold"},
        "name": config.name,
        "storage": config.storage,
        "folds": config.folds,
    }
    info = replace(first, metrics=metrics, postprocessing=rules.to_dict(), training=training)
    card = save_ensemble(models, info, target)
    log.info("ensemble of %d folds: %s (version %s)", len(cards), redact(target.uri), card.version)
    return target.uri


OutOfFold = tuple[str, npt.NDArray[np.uint8], npt.NDArray[np.uint8], tuple[float, ...]]
"""``(case id, predicted, true, spacing)``: internal labels on the case's prepared grid,
cropped to where either has tumour (with a margin)."""


def out_of_fold(config: TrainConfig, cohort: Location, models: list[Location]) -> list[OutOfFold]:
    """Every fold's model's labels of its own validation cases (one Ray task per fold, one
    GPU each with ``--use-gpu``), in fold order."""
    import ray

    predict = ray.remote(_predict_own_cases).options(
        num_cpus=1, num_gpus=1 if config.use_gpu else 0, max_retries=2
    )
    refs = []
    for i, model in enumerate(models):
        split = json.loads(
            read_bytes(
                model.filesystem(),
                fold_config(config, cohort, i).run.join(SPLIT_FILE),
                max_bytes=MAX_SPLIT_BYTES,
            )
        )
        refs.append(predict.remote(model.uri, cohort.uri, split["val"], config.s3_endpoint))
    return [case for cases in ray.get(refs) for case in cases]


def _predict_own_cases(
    model: str, cohort: str, case_ids: list[str], s3_endpoint: str | None
) -> list[OutOfFold]:
    from brats.ingest.shards import read_shards
    from brats.segment.predictor import Predictor
    from brats.storage import resolve
    from brats.volume.geometry import bounding_box

    predictor = Predictor.from_artifact(model, s3_endpoint=s3_endpoint)
    out = []
    for row in read_shards(resolve(cohort, s3_endpoint=s3_endpoint), case_ids):
        labels = predictor.labels(np.asarray(row["image"]))
        truth = np.asarray(row["label"], dtype=np.uint8)
        box = bounding_box((labels > 0) | (truth > 0), margin=OOF_MARGIN).slices
        spacing = tuple(float(x) for x in row["spacing"])
        out.append((str(row["case_id"]), labels[box].copy(), truth[box].copy(), spacing))
    return out


OOF_MARGIN: Final = 8
"""Voxels kept around the tumour of an out-of-fold case: more than lesion-wise scoring's
dilation, so the crop scores as the whole volume would."""


def choose_oof_postprocessing(
    cases: list[OutOfFold], scheme: LabelScheme
) -> tuple[Postprocessing, dict[str, float]]:
    """The component and volume rules that raise the out-of-fold lesion-wise Dice, and
    ``oof_dice_<R>``, ``oof_lesion_dice_<R>`` (after them) and ``oof_cases``."""
    pairs = [(pred, truth) for _, pred, truth, _ in cases]
    spacings = [spacing for *_, spacing in cases]
    rules, lesion = choose_postprocessing(
        pairs, (*CANDIDATE_RULES, *VOLUME_RULES), scheme, spacings=spacings
    )
    figures: dict[str, float] = {"oof_cases": float(len(cases))}
    for region in scheme.regions:
        scores = [
            dice(region_mask(rules.apply(p), region, scheme), region_mask(t, region, scheme))
            for p, t in pairs
        ]
        figures[f"oof_dice_{region}"] = float(np.mean(scores))
    figures |= {f"oof_lesion_dice_{r}": v for r, v in lesion.items()}
    return rules, figures


def oof_summary(rules: Postprocessing, figures: dict[str, float], scheme: LabelScheme) -> str:
    """The chosen rules and the out-of-fold figures in one line: Dice for every region of
    the scheme, lesion-wise Dice for those the scheme scores lesion-wise (not every region
    is: gli2024's NETC and SNFH are not)."""
    chosen = json.dumps(rules.to_dict(), sort_keys=True) if rules.to_dict() else "none"
    volume = " ".join(f"{r} {figures[f'oof_dice_{r}']:.3f}" for r in scheme.regions)
    lesion = " ".join(
        f"{r} {figures[f'oof_lesion_dice_{r}']:.3f}"
        for r in scheme.regions
        if f"oof_lesion_dice_{r}" in figures
    )
    return f"postprocessing {chosen}; Dice {volume}; lesion-wise Dice {lesion or 'none'}"


def _mean_figures(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The mean of each number every row has."""
    keys = set.intersection(*(set(r) for r in rows)) if rows else set()
    numbers = [k for k in sorted(keys) if all(isinstance(r[k], int | float) for r in rows)]
    return {k: float(sum(r[k] for r in rows) / len(rows)) for k in numbers}
