"""What each worker trains on: the seeded case split, the step count, and patch batches.

Every worker must run the same number of steps per epoch (the collectives hang otherwise),
so the count comes from the global number of training patches, not from a shard's length.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from brats.storage import Location, json_bytes, read_bytes, redact, write_bytes_atomic
from brats.train.config import TrainConfig, TrainingError
from brats.volume.labels import N_CLASSES, one_hot
from brats.volume.patches import sample_patches, to_channels_last

SPLIT_FILE: Final = "split.json"
MAX_SPLIT_BYTES: Final = 64 << 20


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
    """The run's split: read from ``split.json`` if this run has one, else made and written.

    Raises:
        TrainingError: the run's split was made on another cohort (another manifest hash).
    """
    fs = run.filesystem()
    path = run.join(SPLIT_FILE)
    if fs.exists(path):
        split: dict[str, Any] = json.loads(read_bytes(fs, path, max_bytes=MAX_SPLIT_BYTES))
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
    write_bytes_atomic(fs, path, json_bytes(split))
    return split


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    """Steps per epoch on every worker: ``config.steps_per_epoch``, else
    ``ceil(n_train * patches_per_case / (batch_size * num_workers))``."""
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
    """Exactly ``steps`` batches ``(x (B, d, h, w, C) float32, y (B, d, h, w, K) one-hot)``.

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


def shard_bytes(manifest: dict[str, Any], train_ids: list[str], config: TrainConfig) -> int:
    """Memory one worker's share of the training cases takes (stored image + uint8 label)."""
    itemsize = np.dtype(manifest["preprocess"]["dtype"]).itemsize
    ids = set(train_ids)
    total = 0
    for case in manifest["cases"]:
        if case["case_id"] in ids:
            voxels = math.prod(case["shape"][1:])
            total += voxels * (case["shape"][0] * itemsize + 1)
    return math.ceil(total / config.num_workers)
