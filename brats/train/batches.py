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
from brats.volume.augment import augment_patch, seeded_rng
from brats.volume.labels import N_CLASSES, one_hot
from brats.volume.patches import sample_centers, to_channels_last

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


def assign_cases(train_ids: list[str], num_workers: int, seed: int) -> list[list[str]]:
    """Which training cases each worker reads, in order: the sorted ids shuffled by ``seed``
    and dealt out in turn, so shares differ by at most one case and the same seed gives every
    worker the same cases in the same order.

    Raises:
        TrainingError: fewer cases than workers (a worker would have nothing to train on).
    """
    if len(train_ids) < num_workers:
        raise TrainingError(
            f"{len(train_ids)} training cases for {num_workers} workers: every worker needs "
            "at least one case"
        )
    ids = sorted(train_ids)
    order = np.random.default_rng([seed, len(ids)]).permutation(len(ids))
    dealt = [ids[i] for i in order]
    return [dealt[rank::num_workers] for rank in range(num_workers)]


def steps_per_epoch(config: TrainConfig, n_train: int, workers: int) -> int:
    """Steps per epoch on each of ``workers`` workers: ``config.steps_per_epoch``, else
    ``ceil(n_train * patches_per_case / (batch_size * workers))``, so that an epoch is the same
    number of patches whatever the size of the worker group."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    patches = n_train * config.patches_per_case
    return max(1, math.ceil(patches / (config.batch_size * workers)))


def sample_patches(
    image: npt.NDArray[np.floating],
    label: npt.NDArray[np.uint8] | None,
    config: TrainConfig,
    rng: np.random.Generator,
    key: tuple[int, int, int],
    first: int,
    n: int | None = None,
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]]:
    """``n`` (default ``config.patches_per_case``) augmented patches of one case: (image
    ``(C, *patch) float32``, label ``patch uint8``) pairs.

    Centres come from ``rng`` (:func:`brats.volume.patches.sample_centers`, class-balanced
    for the ``nnunet`` preset); patch ``i`` is augmented with
    ``seeded_rng(*key, first + i)``, ``key`` being ``(seed, epoch, rank)``.
    """
    spatial = (int(image.shape[1]), int(image.shape[2]), int(image.shape[3]))
    centers = sample_centers(
        label,
        spatial,
        config.patch_size,
        config.patches_per_case if n is None else n,
        rng,
        tumor_fraction=config.tumor_fraction,
        balance_classes=config.balance_classes,
    )
    augmentation = config.augment()
    return [
        augment_patch(
            image, label, center, config.patch_size, augmentation, seeded_rng(*key, first + i)
        )
        for i, center in enumerate(centers)
    ]


def patch_batches(
    rows: Iterator[dict[str, Any]],
    config: TrainConfig,
    steps: int,
    key: tuple[int, int, int],
    n_classes: int = N_CLASSES,
) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """Exactly ``steps`` batches ``(x (B, d, h, w, C) float32, y (B, d, h, w, K) one-hot)``,
    ``K`` being ``n_classes``, the label scheme's internal classes.

    Reads every row of ``rows`` (a worker's shard must be consumed whole each epoch), cuts
    ``patches_per_case`` patches per case (:func:`sample_patches`) into a small shuffle pool,
    and, if the shard runs out first, cuts more from the last cases it kept. ``key`` is
    ``(seed, epoch, rank)``: with the same rows in the same order, the same batches.
    """
    rng = np.random.default_rng(list(key))
    pool: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]] = []
    recent: deque[tuple[npt.NDArray[np.floating], npt.NDArray[np.uint8] | None]] = deque(maxlen=2)
    emitted = 0
    cut_so_far = 0

    def cut(image: npt.NDArray[np.floating], label: npt.NDArray[np.uint8] | None) -> None:
        nonlocal cut_so_far
        pool.extend(sample_patches(image, label, config, rng, key, cut_so_far))
        cut_so_far += config.patches_per_case

    def drain(min_pool: int) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
        nonlocal emitted
        while emitted < steps and len(pool) >= min_pool:
            picks = sorted(rng.choice(len(pool), size=config.batch_size, replace=False))
            batch = [pool[i] for i in picks]
            for i in reversed(picks):
                pool.pop(i)
            x = to_channels_last(np.stack([b[0] for b in batch]))
            y = one_hot(np.stack([b[1] for b in batch]), n_classes)
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


def shard_bytes(manifest: dict[str, Any], assigned: list[list[str]]) -> int:
    """Memory the largest worker share of ``assigned`` cases takes (stored image + uint8
    label)."""
    itemsize = np.dtype(manifest["preprocess"]["dtype"]).itemsize
    sizes = {
        case["case_id"]: math.prod(case["shape"][1:]) * (case["shape"][0] * itemsize + 1)
        for case in manifest["cases"]
    }
    return max(sum(sizes[i] for i in share) for share in assigned)
