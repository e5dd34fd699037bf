"""Training on Ray Train: multi-worker TensorFlow, patches from Ray Data, checkpoints, resume.

Shape (Ray's examples): :func:`train` builds the datasets and a ``TensorflowTrainer``;
:func:`train_loop_per_worker` is config in, a loop, ``ray.train.report(metrics, checkpoint)``
out. Keras 3's ``model.fit`` fails under a multi-worker ``MultiWorkerMirroredStrategy``, so
the step is written out: model and optimizer built in ``strategy.scope()``, the step a
``tf.function`` around ``strategy.run``, the loss summed over replicas.

Every worker runs the same number of steps per epoch (collectives hang otherwise), fixed
from the global number of training patches, not from the length of its shard. Each epoch a
worker reads its whole shard once, cuts ``patches_per_case`` patches from each case, and
recycles the last cases it saw if its shard ran short.

A run lives under ``STORAGE/NAME/``: Ray Train's checkpoints and snapshot, and ours:

    cohort/        the ingested cohort, when training started from raw NIfTI
    split.json     train/validation case ids (seeded; reused on resume)
    history.csv    one row per finished epoch
    tensorboard/   event files
    model/         model.keras + model.json of the best checkpoint (written last)

A checkpoint holds the weights, the optimizer's variables and ``state.json`` (epochs done,
history, sha256 of both files). A worker resumes from the newest checkpoint in the run's
storage whose files match their hashes (see :func:`checkpoint_candidates`), so a checkpoint
whose upload broke is never used and a finished epoch is not redone. Patch sampling and
dropout are seeded from ``(seed, epoch, rank)``; which cases land on which worker is Ray
Data's choice, so runs are comparable, not bit-identical.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import posixpath
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from brats.cases import MODALITIES
from brats.inference import compiled_predict
from brats.labels import N_CLASSES, REGIONS, one_hot, region_mask
from brats.metrics import dice
from brats.patches import Shape3, sample_patches, to_channels_last
from brats.runtime import cpus_per_replica
from brats.storage import Location, StorageError, read_bytes, redact, resolve, write_bytes_atomic

log = logging.getLogger(__name__)

WEIGHTS_FILE: Final = "model.weights.h5"
OPTIMIZER_FILE: Final = "optimizer.npz"
STATE_FILE: Final = "state.json"
SPLIT_FILE: Final = "split.json"
HISTORY_FILE: Final = "history.csv"
SCORE: Final = "val_dice_mean"
MAX_STATE_BYTES: Final = 64 << 20

EpochHook = Callable[[int, int], None]
"""Called on every worker at the start of every epoch with ``(epoch, world_rank)``."""


class TrainingError(RuntimeError):
    """Training could not finish (too many failures, bad data, a broken checkpoint)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``jobs/train.py`` takes. Stored in ``model.json`` (credentials never are)."""

    data: str
    """A raw NIfTI cohort, or a normalized cohort (a folder with ``manifest.json``)."""
    storage: str
    """Where runs live (local folder or ``s3://``); the run is ``storage/name``."""
    name: str = "brats-unet"
    s3_endpoint: str | None = None
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float | None = None
    """Default: 1 with GPUs; on a CPU-only cluster at most 1, leaving one CPU for Ray Data's
    read tasks (with none left they never run and training waits forever)."""
    epochs: int = 20
    batch_size: int = 2
    """Patches per step on each worker."""
    patch_size: Shape3 = (128, 128, 128)
    patches_per_case: int = 4
    """Patches cut from each training case per epoch."""
    steps_per_epoch: int | None = None
    """Default: ``ceil(train cases * patches_per_case / (batch_size * num_workers))``."""
    tumor_fraction: float = 1.0 / 3.0
    loss: str = "dice_ce"
    learning_rate: float = 1e-3
    lr_schedule: str = "poly"
    """``"poly"`` (nnU-Net's ``(1 - t)**0.9``), ``"cosine"`` or ``"constant"``."""
    warmup_fraction: float = 0.05
    """Share of all steps over which the learning rate ramps up linearly from ~0."""
    mixed_precision: bool = False
    """float16 compute with a float32 softmax and loss scaling; GPU only."""
    val_fraction: float = 0.2
    val_overlap: float = 0.5
    cache_mib: int = 2048
    """Keep a worker's training cases in memory after the first epoch when its share is at
    most this many MiB (0: stream every epoch)."""
    seed: int = 0
    max_failures: int = 1
    num_to_keep: int = 2
    base_filters: int = 16
    depth: int = 4
    normalization: str | None = None
    modalities: tuple[str, ...] = MODALITIES
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form notes kept in model.json (e.g. what the run was for)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(s) for s in self.patch_size))
        object.__setattr__(self, "modalities", tuple(self.modalities))
        if min(self.num_workers, self.batch_size, self.epochs, self.patches_per_case) < 1:
            raise ValueError("num_workers, batch_size, epochs and patches_per_case must be >= 1")
        if not 0.0 <= self.tumor_fraction <= 1.0:
            raise ValueError("tumor_fraction must be in [0, 1]")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError("warmup_fraction must be in [0, 1)")
        if self.lr_schedule not in ("poly", "cosine", "constant"):
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        divisor = 2**self.depth
        if len(self.patch_size) != 3 or any(s % divisor for s in self.patch_size):
            raise ValueError(
                f"patch_size {self.patch_size} must have 3 sides divisible by 2**depth = {divisor}"
            )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["patch_size"] = list(self.patch_size)
        out["modalities"] = list(self.modalities)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def unet(self) -> Any:
        from brats.model import UNetConfig

        return UNetConfig(
            base_filters=self.base_filters,
            depth=self.depth,
            in_channels=len(self.modalities),
            n_classes=N_CLASSES,
            normalization=self.normalization,
            mixed_precision=self.mixed_precision and self.use_gpu,
        )

    @property
    def run(self) -> Location:
        return resolve(self.storage, s3_endpoint=self.s3_endpoint).child(self.name)


@dataclass(frozen=True)
class TrainResult:
    run: str
    model: str | None
    history: list[dict[str, Any]]
    best: dict[str, Any]
    seconds: float


# --- data --------------------------------------------------------------------------------------


def prepare_cohort(config: TrainConfig) -> Location:
    """The normalized cohort to train on: ``data`` itself, or ``run/cohort`` ingested from it.

    A raw cohort is ingested once per run with the same Ray Data pipeline as
    ``jobs/preprocess.py``; a resumed run reuses what it ingested.
    """
    from brats.data import MANIFEST, IngestConfig, ingest
    from brats.preprocess import PreprocessConfig

    source = resolve(config.data, s3_endpoint=config.s3_endpoint)
    if source.filesystem().exists(source.join(MANIFEST)):
        return source
    cohort = config.run.child("cohort")
    if cohort.filesystem().exists(cohort.join(MANIFEST)):
        log.info("using the cohort this run ingested before: %s", redact(cohort.uri))
        return cohort
    log.info("ingesting raw cohort %s into %s", redact(source.uri), redact(cohort.uri))
    ingest(
        IngestConfig(
            cohort=config.data,
            out=cohort.uri,
            s3_endpoint=config.s3_endpoint,
            preprocess=PreprocessConfig(modalities=config.modalities),
        )
    )
    return cohort


def split_cases(case_ids: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Seeded split by case: ``{"train": [...], "val": [...]}``, each sorted."""
    ids = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = round(len(ids) * val_fraction) if len(ids) > 1 else 0
    if val_fraction > 0 and len(ids) > 1:
        n_val = max(n_val, 1)
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return {"train": train, "val": val}


def load_or_write_split(
    run: Location, manifest: dict[str, Any], config: TrainConfig
) -> dict[str, Any]:
    """The run's split: read from ``split.json`` if this run has one, else made and written."""
    fs = run.filesystem()
    path = run.join(SPLIT_FILE)
    if fs.exists(path):
        split: dict[str, Any] = json.loads(read_bytes(fs, path, max_bytes=MAX_STATE_BYTES))
        if split.get("manifest_hash") != manifest["hash"]:
            raise TrainingError(
                f"{redact(run.uri)}: this run was started on another cohort "
                f"(manifest hash {split.get('manifest_hash')}, now {manifest['hash']}); "
                "use a new --name"
            )
        return split
    labeled = [c["case_id"] for c in manifest["cases"] if c["labeled"]]
    split = {
        **split_cases(labeled, config.val_fraction, config.seed),
        "seed": config.seed,
        "manifest_hash": manifest["hash"],
    }
    write_bytes_atomic(fs, path, json.dumps(split, indent=2).encode())
    return split


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    if config.steps_per_epoch:
        return config.steps_per_epoch
    patches = n_train * config.patches_per_case
    return max(1, math.ceil(patches / (config.batch_size * config.num_workers)))


def patch_batches(
    rows: Iterator[dict[str, Any]],
    config: TrainConfig,
    steps: int,
    rng: np.random.Generator,
) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """Exactly ``steps`` batches ``(x (B, d, h, w, C), y (B, d, h, w, K) one-hot)``.

    Reads every row of ``rows`` (a worker's shard must be consumed whole each epoch), cuts
    ``patches_per_case`` patches per case into a small shuffle pool, and, if the shard runs
    out first, cuts more from the last cases it kept.
    """
    pool: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]] = []
    recent: deque[tuple[npt.NDArray[np.floating], npt.NDArray[np.uint8] | None]] = deque(maxlen=2)
    emitted = 0

    def cut(image: npt.NDArray[np.floating], label: npt.NDArray[np.uint8] | None) -> None:
        pool.extend(
            sample_patches(
                image,
                label,
                config.patch_size,
                config.patches_per_case,
                rng,
                tumor_fraction=config.tumor_fraction,
            )
        )

    def drain(min_pool: int) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
        nonlocal emitted
        while emitted < steps and len(pool) >= min_pool:
            picks = sorted(rng.choice(len(pool), size=config.batch_size, replace=False))
            batch = [pool[i] for i in picks]
            for i in reversed(picks):
                pool.pop(i)
            x = to_channels_last(np.stack([b[0] for b in batch]))
            y = one_hot(np.stack([b[1] for b in batch]), N_CLASSES)
            emitted += 1
            yield x, y

    for row in rows:
        image = np.asarray(row["image"])
        label = np.asarray(row["label"]) if row["labeled"] else None
        recent.append((image, label))
        if emitted < steps:
            cut(image, label)
            yield from drain(config.batch_size + config.patches_per_case)
    while emitted < steps:
        if not recent:
            raise TrainingError("this worker's data shard is empty: fewer cases than workers")
        for image, label in recent:
            cut(image, label)
        yield from drain(config.batch_size)


# --- checkpoints -------------------------------------------------------------------------------


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checkpoint(folder: str, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Weights, optimizer variables and ``state.json`` (with both files' sha256) into folder."""
    weights = os.path.join(folder, WEIGHTS_FILE)
    model.save_weights(weights)
    arrays = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    opt_path = os.path.join(folder, OPTIMIZER_FILE)
    np.savez(opt_path, **arrays)  # type: ignore[arg-type]
    state = {
        **state,
        "sha256": {WEIGHTS_FILE: _sha256_file(weights), OPTIMIZER_FILE: _sha256_file(opt_path)},
    }
    with open(os.path.join(folder, STATE_FILE), "w") as fh:
        json.dump(state, fh, indent=2)


def read_checkpoint_state(folder: str) -> dict[str, Any]:
    """``state.json`` of a checkpoint folder, after checking both files against its hashes."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        raise TrainingError(f"checkpoint {folder} has no {STATE_FILE}: incomplete")
    with open(path) as fh:
        state: dict[str, Any] = json.load(fh)
    for name, expected in state.get("sha256", {}).items():
        file = os.path.join(folder, name)
        if not os.path.isfile(file) or _sha256_file(file) != expected:
            raise TrainingError(f"checkpoint {folder}: {name} is missing or corrupt")
    return state


def restore_checkpoint(folder: str, model: Any, optimizer: Any) -> dict[str, Any]:
    """Load weights and optimizer variables from a checked checkpoint; return its state."""
    state = read_checkpoint_state(folder)
    model.load_weights(os.path.join(folder, WEIGHTS_FILE))
    with np.load(os.path.join(folder, OPTIMIZER_FILE), allow_pickle=False) as saved:
        values = [saved[f"v{i:04d}"] for i in range(len(saved.files))]
    if len(values) != len(optimizer.variables):
        raise TrainingError(
            f"checkpoint {folder}: {len(values)} optimizer variables, model needs "
            f"{len(optimizer.variables)}"
        )
    for variable, value in zip(optimizer.variables, values, strict=True):
        variable.assign(value)
    return state


def checkpoint_candidates(run: Location) -> list[tuple[int, str]]:
    """``(epochs_done, path)`` of every checkpoint folder in the run with a readable
    ``state.json``, newest first.

    Ray Train restores the latest checkpoint its controller *registered*; a worker that dies
    right after ``report`` can leave the newest one uploaded but unregistered, and training
    would redo an epoch. Every checkpoint here is uploaded whole before ``report`` returns, and
    its files are checked against ``state.json`` before use, so the newest complete one in
    storage is the right place to resume.
    """
    fs = run.filesystem()
    if not fs.exists(run.path):
        return []
    found = []
    for entry in fs.ls(run.path, detail=True):
        name = posixpath.basename(str(entry["name"]).rstrip("/"))
        # Ray's checkpoint folders; its checkpoint_manager_snapshot.json is a file.
        if not name.startswith("checkpoint_") or entry.get("type") != "directory":
            continue
        path = run.join(name)
        try:
            raw = read_bytes(fs, posixpath.join(path, STATE_FILE), max_bytes=MAX_STATE_BYTES)
            found.append((int(json.loads(raw)["epochs_done"]), path))
        except FileNotFoundError:
            continue  # an upload that broke before state.json (written last): never used
        except (ValueError, KeyError, TypeError):
            continue  # unreadable state: every worker reads the same bytes and skips it too
    # Any other error (a storage hiccup) propagates: a worker that quietly fell back to an
    # older checkpoint than the others would train other weights and hang the collectives.
    return sorted(found, reverse=True)


def restore_latest(run: Location, model: Any, optimizer: Any) -> dict[str, Any] | None:
    """Restore the newest complete checkpoint of the run; ``None`` when it has none."""
    fs = run.filesystem()
    for _, path in checkpoint_candidates(run):
        try:
            if run.protocol == "file":
                return restore_checkpoint(path, model, optimizer)
            with tempfile.TemporaryDirectory(prefix="brats-restore-") as local:
                for name in (STATE_FILE, WEIGHTS_FILE, OPTIMIZER_FILE):
                    fs.get_file(posixpath.join(path, name), os.path.join(local, name))
                return restore_checkpoint(local, model, optimizer)
        except TrainingError as err:  # a hash mismatch: the same on every worker
            log.warning("skipping checkpoint %s: %s", redact(run.uri_of(path)), err)
    return None


# --- the loop ----------------------------------------------------------------------------------


def _schedule(config: TrainConfig, total_steps: int) -> Any:
    """The learning rate per step: a linear warm-up over ``warmup_fraction`` of the steps,
    then the configured decay over the rest. Without the warm-up, Adam's first full-size
    steps can push a freshly initialized U-Net into predicting background everywhere, from
    which it does not recover."""
    import keras
    from keras import ops

    warmup = int(total_steps * config.warmup_fraction)
    rest = max(total_steps - warmup, 1)
    decay: Any
    if config.lr_schedule == "constant":
        decay = None
    elif config.lr_schedule == "cosine":
        decay = keras.optimizers.schedules.CosineDecay(config.learning_rate, rest)
    else:
        decay = keras.optimizers.schedules.PolynomialDecay(
            config.learning_rate, rest, end_learning_rate=0.0, power=0.9
        )
    peak = config.learning_rate

    class WarmupThenDecay(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step: Any) -> Any:
            step = ops.cast(step, "float32")
            after = peak if decay is None else decay(ops.maximum(step - warmup, 0.0))
            ramp = peak * (step + 1.0) / float(max(warmup, 1))
            return ops.where(step < warmup, ramp, after)

    return WarmupThenDecay()


def validate(
    predict: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.floating]],
    rows: Iterator[dict[str, Any]],
    config: TrainConfig,
) -> dict[str, float]:
    """Mean Dice per region (and their mean) over whole validation cases, sliding window."""
    from brats.inference import predict_labels, sliding_window_predict

    scores: dict[str, list[float]] = {r: [] for r in REGIONS}
    for row in rows:
        probs = sliding_window_predict(
            np.asarray(row["image"], dtype=np.float32),
            predict,
            config.patch_size,
            n_classes=N_CLASSES,
            overlap=config.val_overlap,
            batch_size=config.batch_size,
        )
        pred = predict_labels(probs)
        truth = np.asarray(row["label"])
        for region in REGIONS:
            scores[region].append(dice(region_mask(pred, region), region_mask(truth, region)))
    out = {f"val_dice_{r}": float(np.mean(v)) for r, v in scores.items() if v}
    if out:
        out[SCORE] = float(np.mean(list(out.values())))
    return out


def build_step(config: TrainConfig, total_steps: int, strategy: Any) -> tuple[Any, ...]:
    """``(model, optimizer, train_step, infer)`` under ``strategy``.

    ``train_step(x, y)`` runs one optimizer step on every replica and returns the global
    mean loss; ``infer(x)`` is :func:`brats.inference.compiled_predict` of the model. With
    ``tf.distribute.get_strategy()`` (one replica, no Ray) it is the same step, which is what
    the training benchmark compares against.
    """
    import keras
    import tensorflow as tf

    from brats.losses import get_loss
    from brats.model import build_unet

    replicas = strategy.num_replicas_in_sync
    # The same initial weights every run (MultiWorkerMirroredStrategy broadcasts worker 0's).
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_unet(config.unet())
        optimizer: Any = keras.optimizers.Adam(_schedule(config, total_steps))
        if config.mixed_precision and config.use_gpu:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    loss_fn = get_loss(config.loss)

    @tf.function
    def train_step(x: Any, y: Any) -> Any:
        def replica_step(x: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                probs = model(x, training=True)
                # Gradients are summed over replicas: scale so the sum is the global mean.
                loss = loss_fn(y, probs) / replicas
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return model, optimizer, train_step, compiled_predict(model)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: config in, a loop, ``ray.train.report(metrics, checkpoint)`` out."""
    import keras
    import ray.train
    import tensorflow as tf

    config = TrainConfig.from_dict(loop_config["config"])
    steps: int = loop_config["steps_per_epoch"]
    hook: EpochHook | None = loop_config.get("epoch_hook")
    context = ray.train.get_context()
    rank = context.get_world_rank()

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    replicas = strategy.num_replicas_in_sync
    model, optimizer, train_step, infer = build_step(config, steps * config.epochs, strategy)

    history: list[dict[str, Any]] = []
    start_epoch = 0
    state = restore_latest(config.run, model, optimizer)
    if state is not None:
        start_epoch = int(state["epochs_done"])
        history = list(state["history"])[:start_epoch]
        if rank == 0:
            _say(f"[brats] resuming after epoch {start_epoch}")

    train_shard = ray.train.get_dataset_shard("train")
    val_data = ray.train.get_dataset_shard("val") if loop_config["has_val"] else None
    # Event files are written on rank 0's own node and copied into the run after each epoch:
    # on a cluster the driver's disk is another machine's.
    tensorboard_dir = tempfile.mkdtemp(prefix="brats-tb-") if rank == 0 else ""
    writer = tf.summary.create_file_writer(tensorboard_dir) if rank == 0 else None

    # When every worker's share of the cohort fits its memory budget (decided once, on the
    # driver, so every worker decides alike), the first epoch keeps the rows it streams and
    # later epochs reuse them: restarting the split read costs seconds per epoch.
    cached: list[dict[str, Any]] | None = None
    for epoch in range(start_epoch, config.epochs):
        if hook is not None:
            hook(epoch, rank)
        # Patches come from this generator alone. The global seeds are set once, in
        # build_step: reseeding TensorFlow every epoch cost 0.36 s at the next step (measured
        # on the 2-core machine), and the dropout layers draw from their own seed generators.
        rng = np.random.default_rng([config.seed, epoch, rank])
        began = time.perf_counter()
        losses = []
        if cached is not None:
            rows: Iterator[dict[str, Any]] = iter(cached)
        elif loop_config["cache_rows"]:
            cached = []
            rows = _remember(train_shard.iter_rows(), cached)
        else:
            rows = train_shard.iter_rows()
        step_seconds = 0.0
        for x, y in patch_batches(rows, config, steps, rng):
            stepped = time.perf_counter()
            losses.append(float(train_step(tf.constant(x), tf.constant(y))))
            step_seconds += time.perf_counter() - stepped
        train_seconds = time.perf_counter() - began
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "lr": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
            "samples_per_s": steps * config.batch_size * replicas / train_seconds,
            "train_seconds": train_seconds,
            # The rest of train_seconds is waiting for data (reading, cutting patches).
            "step_seconds": step_seconds,
        }
        if rank == 0 and val_data is not None:
            t0 = time.perf_counter()
            metrics.update(validate(infer, val_data.iter_rows(), config))
            metrics["val_seconds"] = time.perf_counter() - t0
        history.append(metrics)
        with tempfile.TemporaryDirectory(prefix="brats-ckpt-") as folder:
            report_checkpoint = None
            if rank == 0:
                write_checkpoint(
                    folder,
                    model,
                    optimizer,
                    {"epochs_done": epoch + 1, "history": history, "config": config.to_dict()},
                )
                report_checkpoint = ray.train.Checkpoint.from_directory(folder)
                _log_epoch(metrics, config.epochs)
                if writer is not None:
                    with writer.as_default(step=epoch + 1):
                        for key, value in metrics.items():
                            tf.summary.scalar(key, value)
                    writer.flush()
                    _upload_folder(tensorboard_dir, config.run.child("tensorboard"))
            ray.train.report(metrics, checkpoint=report_checkpoint)


def _remember(
    rows: Iterator[dict[str, Any]], keep: list[dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    for row in rows:
        keep.append(row)
        yield row


def _say(line: str) -> None:
    """One line to the worker's stdout, which Ray streams to the driver and the job log.

    Not ``print``: Ray Train patches it in its workers to also log the text, and every line
    came out twice in the driver.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _log_epoch(metrics: dict[str, Any], epochs: int) -> None:
    val = " ".join(
        f"{k[len('val_dice_') :]}={metrics[k]:.3f}"
        for k in ("val_dice_WT", "val_dice_TC", "val_dice_ET")
        if k in metrics
    )
    _say(
        f"[brats] epoch {metrics['epoch']}/{epochs} loss {metrics['loss']:.4f} "
        f"lr {metrics['lr']:.2e} {metrics['samples_per_s']:.2f} samples/s"
        + (f" | val Dice {val}" if val else "")
    )


# --- the driver --------------------------------------------------------------------------------


def _shard_bytes(manifest: dict[str, Any], train_ids: list[str], config: TrainConfig) -> int:
    """Memory one worker's share of the training cases takes (float16 image + uint8 label)."""
    itemsize = np.dtype(manifest["preprocess"]["dtype"]).itemsize
    ids = set(train_ids)
    total = 0
    for case in manifest["cases"]:
        if case["case_id"] in ids:
            voxels = math.prod(case["shape"][1:])
            total += voxels * (case["shape"][0] * itemsize + 1)
    return math.ceil(total / config.num_workers)


def build_trainer(
    config: TrainConfig, *, epoch_hook: EpochHook | None = None
) -> tuple[Any, dict[str, Any]]:
    """The ``TensorflowTrainer`` for a run, and a summary of its data (for logs and json)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    from brats.data import load_manifest, read_prepared

    cohort = prepare_cohort(config)
    manifest = load_manifest(cohort)
    run = config.run
    cohort_modalities = tuple(manifest["preprocess"]["modalities"])
    if cohort_modalities != config.modalities:
        raise TrainingError(
            f"cohort {redact(cohort.uri)} was ingested with modalities {list(cohort_modalities)}"
            f", training asks for {list(config.modalities)}: pass --modalities "
            f"{','.join(cohort_modalities)}"
        )
    split = load_or_write_split(run, manifest, config)
    if len(split["train"]) < config.num_workers:
        raise TrainingError(
            f"{len(split['train'])} training cases for {config.num_workers} workers: every "
            "worker needs at least one case"
        )
    train_ds, _ = read_prepared(cohort, split["train"])
    datasets: dict[str, Any] = {"train": train_ds}
    if split["val"]:
        datasets["val"], _ = read_prepared(cohort, split["val"])
    steps = steps_per_epoch(config, len(split["train"]))
    storage = resolve(config.storage, s3_endpoint=config.s3_endpoint)
    cpus = cpus_per_replica(
        config.cpus_per_worker, config.num_workers, use_gpu=config.use_gpu, what="workers"
    )
    resources = {"CPU": cpus} | ({"GPU": 1.0} if config.use_gpu else {})
    trainer = TensorflowTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config.to_dict(),
            "steps_per_epoch": steps,
            "epoch_hook": epoch_hook,
            "has_val": bool(split["val"]),
            "cache_rows": _shard_bytes(manifest, split["train"], config) <= config.cache_mib << 20,
        },
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker=resources,
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=config.name,
            storage_path=storage.path,
            storage_filesystem=storage.pyarrow_filesystem(),
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=config.num_to_keep,
                checkpoint_score_attribute=SCORE if split["val"] else None,
                checkpoint_score_order="max",
            ),
        ),
    )
    summary = {
        "cohort": redact(cohort.uri),
        "manifest_hash": manifest["hash"],
        "train_cases": len(split["train"]),
        "val_cases": len(split["val"]),
        "steps_per_epoch": steps,
        "normalization": manifest["preprocess"]["normalization"],
        "conventions": sorted({c["convention"] for c in manifest["cases"]}),
    }
    return trainer, summary


def train(config: TrainConfig, *, epoch_hook: EpochHook | None = None) -> TrainResult:
    """Run (or resume) training; export the best checkpoint as the model artifact.

    Needs a running Ray. Raises :class:`TrainingError` when the run fails (more worker
    failures than ``max_failures``, say); then no model is exported.
    """
    began = time.perf_counter()
    run = config.run
    trainer, summary = build_trainer(config, epoch_hook=epoch_hook)
    log.info(
        "training %s: %d train / %d val cases, %d workers, %d steps per epoch, %d epochs",
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


def _exported_from(run: Location) -> str | None:
    """The checkpoint the run's exported model came from, if it has one."""
    from brats.artifact import ArtifactError, read_model_card

    try:
        card = read_model_card(run.child("model"))
    except (ArtifactError, OSError):
        return None
    source = card.info.training.get("checkpoint")
    return str(source) if source else None


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


def _upload_folder(local: str, target: Location) -> None:
    fs = target.filesystem()
    for root, _, files in os.walk(local):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, local).replace(os.sep, "/")
            with open(path, "rb") as fh:
                write_bytes_atomic(fs, target.join(rel), fh.read())


def export_model(
    checkpoint_dir: str,
    config: TrainConfig,
    summary: dict[str, Any],
    metrics: dict[str, Any],
    source: str,
) -> str:
    """Build the network in code, load the checkpoint's weights, save the model artifact."""
    from brats.artifact import ModelInfo, save_artifact
    from brats.model import build_unet

    model = build_unet(config.unet())
    model.load_weights(os.path.join(checkpoint_dir, WEIGHTS_FILE))
    info = ModelInfo(
        unet=config.unet(),
        modalities=config.modalities,
        normalization=summary["normalization"],
        patch_size=config.patch_size,
        label_convention=conventions[0]
        if len(conventions := summary["conventions"]) == 1
        else None,
        manifest_hash=summary["manifest_hash"],
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        training={
            **{k: v for k, v in config.to_dict().items() if k != "s3_endpoint"},
            "checkpoint": source,
        },
    )
    target = config.run.child("model")
    save_artifact(model, info, target)
    return target.uri


def ensure_storage_reachable(config: TrainConfig) -> None:
    """Fail early with a clear message when the run's storage cannot be listed."""
    run = config.run
    try:
        run.filesystem().exists(run.path)
    except (OSError, StorageError) as err:
        raise TrainingError(f"storage {redact(run.uri)} is not reachable: {err}") from err
