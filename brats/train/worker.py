"""The Ray Train worker: config in, a loop, ``ray.train.report(metrics, checkpoint)`` out.

Keras 3's ``model.fit`` fails under a multi-worker ``MultiWorkerMirroredStrategy``, so the
step is written out (:func:`build_step`): model and optimizer built in ``strategy.scope()``,
the step a ``tf.function`` around ``strategy.run``, the loss summed over replicas. Each epoch
a worker reads its whole shard once and cuts patches from it
(:func:`brats.train.batches.patch_batches`); rank 0 validates on whole held-out cases through
the :class:`~brats.segment.predictor.Predictor`, writes the checkpoint and the logs, and every
rank reports. Worker ``i`` reads its seeded share of the training cases
(:func:`brats.train.batches.assign_cases` at the group's size) from their shards itself, in
case-id order (:func:`brats.ingest.shards.read_shards`), and rank 0 its validation cases.
No worker starts a Ray Data execution, except for ``patch_stage="ray-data"`` (its patches,
:mod:`brats.train.stream`). Patch sampling and augmentation
are seeded from ``(seed, epoch, rank)`` and the sample's index, so the same seed trains on
the same batches.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from brats.ingest.shards import read_shards
from brats.network.precision import resolve_precision
from brats.segment.predictor import Predictor, PredictSettings
from brats.storage import resolve
from brats.train.batches import assign_cases, patch_batches, steps_per_epoch
from brats.train.checkpoints import restore_latest, write_checkpoint
from brats.train.config import EpochHook, TrainConfig
from brats.train.schedule import learning_rate_at, step_progress
from brats.train.stream import patch_dataset, stream_batches
from brats.train.tensorboard import TensorBoardLog
from brats.volume.labels import REGIONS, region_mask
from brats.volume.metrics import dice
from brats.volume.postprocess import choose_postprocessing

SCORE = "val_dice_mean"
"""The metric the best checkpoint is chosen by."""


def build_step(
    config: TrainConfig, strategy: Any, precision: str = "float32"
) -> tuple[Any, Any, Any]:
    """``(model, optimizer, train_step)`` under ``strategy``, computing in ``precision``
    (resolved: not ``auto``).

    ``train_step(x, y, progress)`` runs one optimizer step on every replica at the learning
    rate of ``progress`` (:func:`brats.train.schedule.step_progress`: where the step is in the
    run) and returns the global mean loss. ``model`` has the deep-supervision heads the config
    asks for (the loss weighs every output); predictions use its full-resolution output. With
    ``tf.distribute.get_strategy()`` (one replica, no Ray) it is the same step, which is what
    the training benchmark compares against. The initial weights are
    seeded from ``config.seed`` (``MultiWorkerMirroredStrategy`` broadcasts worker 0's), once:
    the dropout layers draw from their own seed generators.
    """
    import keras
    import tensorflow as tf

    from brats.network.unet import build_unet
    from brats.train.losses import deep_supervision_loss, get_loss

    replicas = strategy.num_replicas_in_sync
    keras.utils.set_random_seed(config.seed)
    # Outside the strategy's scope: a plain variable each worker sets alike, step by step.
    progress = tf.Variable(0.0, trainable=False, dtype="float32", name="run_progress")
    with strategy.scope():
        model = build_unet(config.unet(precision), deep_supervision=True)
        optimizer: Any = keras.optimizers.Adam(lambda: learning_rate_at(config, progress))
        if precision == "float16":  # bfloat16 has float32's range: no loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    loss_fn = get_loss(str(config.loss))

    @tf.function
    def train_step(x: Any, y: Any, at: Any) -> Any:
        def replica_step(x: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                outputs = model(x, training=True)
                # Gradients are summed over replicas: scale so the sum is the global mean.
                loss = deep_supervision_loss(loss_fn, y, outputs) / replicas
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        progress.assign(at)
        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return model, optimizer, train_step


def validate(predictor: Predictor, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Scores of the predictor's labels on whole prepared cases; empty when there is none.

    ``val_dice_WT`` ... are the mean Dice per region before postprocessing, :data:`SCORE` the
    mean of the three. ``postprocessing`` is the JSON of the component rules that raise them
    (:func:`brats.volume.postprocess.choose_postprocessing`), and ``val_post_dice_WT`` ...
    the mean Dice with those rules applied.
    """
    cases = [(predictor.labels(row["image"]), np.asarray(row["label"])) for row in rows]
    if not cases:
        return {}
    out: dict[str, Any] = {
        f"val_dice_{r}": float(
            np.mean([dice(region_mask(p, r), region_mask(t, r)) for p, t in cases])
        )
        for r in REGIONS
    }
    out[SCORE] = float(np.mean(list(out.values())))
    rules, post = choose_postprocessing(cases)
    out |= {f"val_post_dice_{r}": v for r, v in post.items()}
    out["postprocessing"] = json.dumps(rules.to_dict(), sort_keys=True)
    return out


class EpochRows:
    """A worker's training (or rank 0's validation) rows, epoch after epoch: read again from
    ``read()`` each epoch, or, when ``keep`` (they fit the memory budget; decided on the
    driver so every worker decides alike), kept from the first epoch and reused."""

    def __init__(self, read: Callable[[], Iterable[dict[str, Any]]], *, keep: bool) -> None:
        self._read = read
        self._keep = keep
        self._kept: list[dict[str, Any]] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._kept is not None:
            yield from self._kept
            return
        kept: list[dict[str, Any]] = []
        for row in self._read():
            if self._keep:
                kept.append(row)
            yield row
        if self._keep:
            self._kept = kept


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: config in, a loop, ``ray.train.report(metrics, checkpoint)`` out.

    ``loop_config``: ``config`` (:meth:`TrainConfig.to_dict`), ``train_ids`` (the split's
    training cases), ``val_ids`` (its validation cases, read by rank 0), ``normalization``
    (the cohort's), ``cache_rows`` and ``cache_val`` (whether a share of the training cases
    at the smallest group size, and the validation cases, fit in memory), ``epoch_hook`` and
    ``cohort`` (its URI).

    The worker's share of the cases (:func:`brats.train.batches.assign_cases`) and the steps
    per epoch (:func:`brats.train.batches.steps_per_epoch`) come from the group's size, which
    an elastic run changes between restarts; the learning rate from the fraction of the run
    done (:mod:`brats.train.schedule`). So each epoch is the same patches' worth at any size.
    """
    import ray.train
    import tensorflow as tf

    threads = use_reserved_cpus()
    niceness = os.nice(0)  # RAY_worker_niceness, from the run's worker_runtime_env
    config = TrainConfig.from_dict(loop_config["config"])
    hook: EpochHook | None = loop_config.get("epoch_hook")
    context = ray.train.get_context()
    rank, workers = context.get_world_rank(), context.get_world_size()
    train_ids: list[str] = loop_config["train_ids"]
    share = assign_cases(train_ids, workers, config.seed)[rank]
    steps = steps_per_epoch(config, len(train_ids), workers)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    precision = resolve_precision(config.precision)
    model, optimizer, train_step = build_step(config, strategy, precision)
    # Validation runs the training network as it is, in its precision, without flips (8x
    # the cost every epoch): it ranks epochs and chooses the postprocessing.
    info = replace(config.model_info(loop_config["normalization"]), unet=config.unet(precision))
    settings = PredictSettings(
        overlap=config.val_overlap, batch_size=config.batch_size, precision=precision, no_tta=True
    )
    predictor = Predictor(model, info, settings)
    state = restore_latest(config.run, model, optimizer)
    start = 0 if state is None else int(state["epochs_done"])
    history: list[dict[str, Any]] = [] if state is None else list(state["history"])[:start]
    if rank == 0:
        write_line(
            f"[brats] {workers} worker{'s' if workers > 1 else ''}, {steps} steps per epoch, "
            f"training step in {precision}"
        )
        if state is not None:
            write_line(f"[brats] resuming after epoch {start}")
    cohort = resolve(loop_config["cohort"], s3_endpoint=config.s3_endpoint)
    rows = None
    if not config.streams_patches:  # this worker's cases, in case-id order, read right here
        rows = EpochRows(
            functools.partial(read_shards, cohort, sorted(share)), keep=loop_config["cache_rows"]
        )
    val_rows = None
    if loop_config["val_ids"] and rank == 0:  # read right here too, kept when they fit
        val_rows = EpochRows(
            functools.partial(read_shards, cohort, sorted(loop_config["val_ids"])),
            keep=loop_config["cache_val"],
        )
    tensorboard = TensorBoardLog(config.run.child("tensorboard")) if rank == 0 else None

    for epoch in range(start, config.epochs):
        if hook is not None:
            hook(epoch, rank)
        key = (config.seed, epoch, rank)
        if rows is None:
            epoch_patches = patch_dataset(cohort, share, config, steps, key)
            batches = stream_batches(epoch_patches, config, steps, key)
        else:
            batches = patch_batches(iter(rows), config, steps, key)
        at = functools.partial(step_progress, epoch, steps=steps, epochs=config.epochs)
        trained = train_epoch(train_step, batches, at)
        samples = steps * config.batch_size * workers
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": trained["loss"],
            # The rate at the end of the epoch: the same at any group size.
            "lr": float(learning_rate_at(config, (epoch + 1) / config.epochs)),
            "workers": workers,
            "steps": steps,
            "samples_per_s": samples / trained["train_seconds"],
            "train_seconds": trained["train_seconds"],
            "step_seconds": trained["step_seconds"],
            "precision": precision,
            "threads": threads,
            "niceness": niceness,
        }
        if rank == 0 and val_rows is not None:
            began = time.perf_counter()
            metrics |= validate(predictor, val_rows)
            metrics["val_seconds"] = time.perf_counter() - began
        history.append(metrics)
        with tempfile.TemporaryDirectory(prefix="brats-ckpt-") as folder:
            checkpoint = None
            if rank == 0:
                state = {"epochs_done": epoch + 1, "history": history, "config": config.to_dict()}
                write_checkpoint(folder, model, optimizer, state)
                checkpoint = ray.train.Checkpoint.from_directory(folder)
                write_line(epoch_line(metrics, config.epochs))
                if tensorboard is not None:
                    tensorboard.write(metrics, step=epoch + 1)
            ray.train.report(metrics, checkpoint=checkpoint)


def use_reserved_cpus() -> int:
    """Size TensorFlow's intra-op thread pool to the CPUs Ray reserved for this worker
    (rounded up, at least 1) and return that count.

    TensorFlow otherwise starts a pool as wide as the machine in every worker, so workers
    sharing a node would each compute on all its cores and slow one another down (Ray sets
    ``OMP_NUM_THREADS`` the same way, which TensorFlow's own pool ignores). Must run before
    the worker's first TensorFlow op.
    """
    import ray
    import tensorflow as tf

    cpus = float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))
    threads = compute_threads(cpus)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    return threads


def compute_threads(cpus: float) -> int:
    """TensorFlow intra-op threads for a process holding ``cpus`` CPUs: rounded up, at least 1."""
    return max(1, math.ceil(cpus))


def train_epoch(
    train_step: Any, batches: Iterable[tuple[Any, Any]], progress: Callable[[int], float]
) -> dict[str, float]:
    """Run ``train_step`` on every batch, step ``i`` at ``progress(i)``: the mean ``loss``,
    ``train_seconds`` (the whole epoch) and ``step_seconds`` (inside the step; the rest is
    waiting for data)."""
    import tensorflow as tf

    began = time.perf_counter()
    losses = []
    step_seconds = 0.0
    for i, (x, y) in enumerate(batches):
        stepped = time.perf_counter()
        at = tf.constant(progress(i), tf.float32)
        losses.append(float(train_step(tf.constant(x), tf.constant(y), at)))
        step_seconds += time.perf_counter() - stepped
    return {
        "loss": float(np.mean(losses)),
        "train_seconds": time.perf_counter() - began,
        "step_seconds": step_seconds,
    }


def epoch_line(metrics: dict[str, Any], epochs: int) -> str:
    """``[brats] epoch 3/20 loss 0.4120 lr 9.10e-04 21.30 samples/s | val Dice WT=...``."""
    val = " ".join(
        f"{r}={metrics[f'val_dice_{r}']:.3f}" for r in REGIONS if f"val_dice_{r}" in metrics
    )
    return (
        f"[brats] epoch {metrics['epoch']}/{epochs} loss {metrics['loss']:.4f} "
        f"lr {metrics['lr']:.2e} {metrics['samples_per_s']:.2f} samples/s"
        + (f" | val Dice {val}" if val else "")
    )


def write_line(line: str) -> None:
    """One line to the worker's stdout, which Ray streams to the driver and the job log.

    Not ``print``: Ray Train patches ``print`` in its workers to log the text as well, and
    every line would reach the driver twice.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
