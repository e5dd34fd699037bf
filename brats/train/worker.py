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
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from brats.ingest.shards import read_shards
from brats.network.precision import resolve_precision
from brats.segment.predictor import Predictor, PredictSettings
from brats.storage import Location, resolve
from brats.train.batches import assign_cases, patch_batches, steps_per_epoch
from brats.train.checkpoints import restore_latest, write_checkpoint
from brats.train.config import EpochHook, TrainConfig
from brats.train.logs import EpochLines, log, quiet_worker_logs
from brats.train.schedule import learning_rate_at, step_progress
from brats.train.stream import patch_dataset, stream_batches
from brats.train.tensorboard import TensorBoardLog
from brats.volume.labels import DEFAULT, LabelScheme, region_mask, scheme_from_dict
from brats.volume.metrics import dice
from brats.volume.postprocess import choose_postprocessing

SCORE = "val_dice_mean"
"""The metric the best checkpoint is chosen by."""


def build_step(
    config: TrainConfig, strategy: Any, precision: str = "float32", scheme: LabelScheme = DEFAULT
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

    from brats.network.unet import build_unet, logits
    from brats.train.losses import deep_supervision_loss, get_loss

    replicas = strategy.num_replicas_in_sync
    keras.utils.set_random_seed(config.seed)
    # Outside the strategy's scope: a plain variable each worker sets alike, step by step.
    progress = tf.Variable(0.0, trainable=False, dtype="float32", name="run_progress")
    with strategy.scope():
        model = build_unet(config.unet(precision, scheme), deep_supervision=True)
        optimizer: Any = keras.optimizers.Adam(lambda: learning_rate_at(config, progress))
        if precision == "float16":  # bfloat16 has float32's range: no loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    options = loss_options(str(config.loss), scheme)
    loss_fn = get_loss(str(config.loss), **options)
    trained = logits(model) if options.get("from_logits") else model

    @tf.function
    def train_step(x: Any, y: Any, at: Any) -> Any:
        def replica_step(x: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                outputs = trained(x, training=True)
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


def loss_options(name: str, scheme: LabelScheme) -> dict[str, Any]:
    """What the loss needs of the label scheme: the classes of each region output
    (``dice_bce``, which trains on the outputs' logits), or an equal weight per class (the
    ``seed`` preset's ``dice_focal``: 0.25 each for the four glioma classes)."""
    if name == "dice_bce":
        return {"regions": scheme.output_classes(), "from_logits": True}
    if name == "dice_focal":
        return {"class_weights": (1.0 / scheme.n_classes,) * scheme.n_classes}
    return {}


def validate(predictor: Predictor, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Scores of the predictor's labels on whole prepared cases; empty when there is none.

    ``val_dice_WT`` ... are the mean Dice per region of the model's label scheme before
    postprocessing, :data:`SCORE` their mean. ``postprocessing`` is the JSON of the
    component rules that raise them (:func:`brats.volume.postprocess.choose_postprocessing`),
    and ``val_post_dice_WT`` ... the mean Dice with those rules applied.
    """
    scheme = predictor.info.scheme
    cases = [(predictor.labels(row["image"]), np.asarray(row["label"])) for row in rows]
    if not cases:
        return {}
    out: dict[str, Any] = {
        f"val_dice_{r}": float(
            np.mean([dice(region_mask(p, r, scheme), region_mask(t, r, scheme)) for p, t in cases])
        )
        for r in scheme.regions
    }
    out[SCORE] = float(np.mean(list(out.values())))
    rules, post = choose_postprocessing(cases, scheme=scheme)
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
    Rank 0 logs one line per epoch (:class:`brats.train.logs.EpochLines`).
    """
    import ray.train
    import tensorflow as tf

    quiet_worker_logs()
    worker = Worker.here(loop_config)
    config = worker.config
    hook: EpochHook | None = loop_config.get("epoch_hook")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if strategy.num_replicas_in_sync != worker.workers:  # TF_CONFIG: brats.train.backend
        raise RuntimeError(
            f"TensorFlow sees {strategy.num_replicas_in_sync} replicas in a group of "
            f"{worker.workers} workers: TF_CONFIG was not set for this group"
        )
    model, optimizer, train_step = build_step(config, strategy, worker.precision, worker.scheme)
    predictor = validation_predictor(model, worker, loop_config["normalization"])
    start, history = resume(config, model, optimizer)
    worker.announce(start)
    data = WorkerData.open(loop_config, worker)
    lead = Lead(config, start) if worker.rank == 0 else None

    for epoch in range(start, config.epochs):
        if hook is not None:
            hook(epoch, worker.rank)
        trained = train_epoch(train_step, data.batches(epoch), worker.progress(epoch))
        metrics = worker.metrics(epoch, trained)
        if data.val_rows is not None:
            metrics |= timed_validation(predictor, data.val_rows)
        history.append(metrics)
        with tempfile.TemporaryDirectory(prefix="brats-ckpt-") as folder:
            checkpoint = None
            if lead is not None:
                checkpoint = lead.checkpoint(folder, model, optimizer, history)
            ray.train.report(metrics, checkpoint=checkpoint)


@dataclass(frozen=True)
class Worker:
    """This worker's part in the run: its rank in a group of ``workers``, its ``share`` of
    the training cases, the ``steps`` per epoch, the training step's ``precision``, and the
    ``threads`` and ``niceness`` it computes with (both go into every epoch's metrics), and the
    cohort's label ``scheme``."""

    config: TrainConfig
    rank: int
    workers: int
    share: list[str]
    steps: int
    precision: str
    threads: int
    niceness: int
    scheme: LabelScheme = DEFAULT

    @classmethod
    def here(cls, loop_config: dict[str, Any]) -> Worker:
        """This worker's, from the loop config and the Ray Train context. Sizes TensorFlow's
        thread pool (:func:`use_reserved_cpus`): call before the worker's first TensorFlow op."""
        import ray.train

        threads = use_reserved_cpus()
        niceness = os.nice(0)  # RAY_worker_niceness, from the run's worker_runtime_env
        config = TrainConfig.from_dict(loop_config["config"])
        context = ray.train.get_context()
        rank, workers = context.get_world_rank(), context.get_world_size()
        train_ids: list[str] = loop_config["train_ids"]
        return cls(
            config=config,
            rank=rank,
            workers=workers,
            share=assign_cases(train_ids, workers, config.seed)[rank],
            steps=steps_per_epoch(config, len(train_ids), workers),
            precision=resolve_precision(config.precision),
            threads=threads,
            niceness=niceness,
            scheme=scheme_from_dict(loop_config["label_scheme"])
            if loop_config.get("label_scheme")
            else DEFAULT,
        )

    def announce(self, start: int) -> None:
        """Rank 0 logs the group's size, steps and precision, and where a resumed run starts."""
        if self.rank != 0:
            return
        plural = "s" if self.workers > 1 else ""
        log.info(
            "%d worker%s, %d steps per epoch, training step in %s",
            self.workers,
            plural,
            self.steps,
            self.precision,
        )
        if start:
            log.info("resuming after epoch %d", start)

    def progress(self, epoch: int) -> Callable[[int], float]:
        """Step ``i`` of ``epoch`` -> where it is in the run (:func:`step_progress`)."""
        return functools.partial(step_progress, epoch, steps=self.steps, epochs=self.config.epochs)

    def metrics(self, epoch: int, trained: dict[str, float]) -> dict[str, Any]:
        """The epoch's reported metrics (``history.csv``'s columns, in this order) from
        :func:`train_epoch`'s figures; rank 0 adds the validation scores after them."""
        config = self.config
        samples = self.steps * config.batch_size * self.workers
        return {
            "epoch": epoch + 1,
            "loss": trained["loss"],
            # The rate at the end of the epoch: the same at any group size.
            "lr": float(learning_rate_at(config, (epoch + 1) / config.epochs)),
            "workers": self.workers,
            "steps": self.steps,
            "samples_per_s": samples / trained["train_seconds"],
            "train_seconds": trained["train_seconds"],
            "step_seconds": trained["step_seconds"],
            "precision": self.precision,
            "threads": self.threads,
            "niceness": self.niceness,
        }


@dataclass(frozen=True)
class WorkerData:
    """Where a worker's batches come from: its training ``rows`` (``None`` when patches
    stream from Ray Data tasks, :mod:`brats.train.stream`) and, on rank 0, the validation
    rows (else ``None``), each read in case-id order from the shards of ``cohort``."""

    worker: Worker
    cohort: Location
    rows: EpochRows | None
    val_rows: EpochRows | None

    @classmethod
    def open(cls, loop_config: dict[str, Any], worker: Worker) -> WorkerData:
        """The worker's data; nothing is read until the first epoch asks."""
        config = worker.config
        cohort = resolve(loop_config["cohort"], s3_endpoint=config.s3_endpoint)
        rows = None
        if not config.streams_patches:  # this worker's cases, read right here
            read = functools.partial(read_shards, cohort, sorted(worker.share))
            rows = EpochRows(read, keep=loop_config["cache_rows"])
        val_rows = None
        if loop_config["val_ids"] and worker.rank == 0:  # read right here too, kept when they fit
            read = functools.partial(read_shards, cohort, sorted(loop_config["val_ids"]))
            val_rows = EpochRows(read, keep=loop_config["cache_val"])
        return cls(worker, cohort, rows, val_rows)

    def batches(self, epoch: int) -> Iterable[tuple[Any, Any]]:
        """The epoch's ``steps`` batches, seeded from ``(seed, epoch, rank)``."""
        config, steps = self.worker.config, self.worker.steps
        key = (config.seed, epoch, self.worker.rank)
        if self.rows is None:
            patches = patch_dataset(self.cohort, self.worker.share, config, steps, key)
            return stream_batches(patches, config, steps, key, self.worker.scheme.n_classes)
        return patch_batches(iter(self.rows), config, steps, key, self.worker.scheme.n_classes)


class Lead:
    """Rank 0's part after each epoch: the checkpoint, the epoch line and TensorBoard."""

    def __init__(self, config: TrainConfig, start: int) -> None:
        self._config = config
        fold = config.extra.get("fold")
        self._lines = EpochLines(start, config.epochs, "" if fold is None else f"fold {fold}: ")
        self._tensorboard = TensorBoardLog(config.run.child("tensorboard"))

    def checkpoint(
        self, folder: str, model: Any, optimizer: Any, history: list[dict[str, Any]]
    ) -> Any:
        """Write the checkpoint of the epoch ending ``history`` into ``folder``, log its line
        and its TensorBoard scalars; return the ``ray.train.Checkpoint`` to report."""
        import ray.train

        metrics = history[-1]
        state = {
            "epochs_done": metrics["epoch"],
            "history": history,
            "config": self._config.to_dict(),
        }
        write_checkpoint(folder, model, optimizer, state)
        checkpoint = ray.train.Checkpoint.from_directory(folder)
        self._lines.epoch_done(metrics)
        self._tensorboard.write(metrics, step=metrics["epoch"])
        return checkpoint


def validation_predictor(model: Any, worker: Worker, normalization: str) -> Predictor:
    """The predictor rank 0 validates with: the training network as it is, in its precision,
    without flips (8x the cost every epoch): it ranks epochs and chooses the postprocessing."""
    config = worker.config
    info = replace(
        config.model_info(normalization, label_scheme=worker.scheme),
        unet=config.unet(worker.precision, worker.scheme),
    )
    settings = PredictSettings(
        overlap=config.val_overlap,
        batch_size=config.batch_size,
        precision=worker.precision,
        no_tta=True,
    )
    return Predictor(model, info, settings)


def resume(config: TrainConfig, model: Any, optimizer: Any) -> tuple[int, list[dict[str, Any]]]:
    """Restore the run's newest complete checkpoint into ``model`` and ``optimizer``, if it
    has one: ``(epochs done, their history)``, ``(0, [])`` for a fresh run."""
    state = restore_latest(config.run, model, optimizer)
    if state is None:
        return 0, []
    start = int(state["epochs_done"])
    return start, list(state["history"])[:start]


def timed_validation(predictor: Predictor, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """:func:`validate`'s scores and ``val_seconds``, the time they took."""
    began = time.perf_counter()
    scores = validate(predictor, rows)
    return scores | {"val_seconds": time.perf_counter() - began}


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
