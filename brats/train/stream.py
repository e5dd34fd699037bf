"""The sample-and-augment stage as Ray Data CPU tasks, streaming batches into a worker.

Cutting and augmenting a 128^3 four-channel patch costs a CPU core a fair share of a second
(rotation and scaling resample every channel), and a GPU node such as g5.xlarge has 4 vCPUs
for a GPU that trains several volumes a second. With ``patch_stage="ray-data"`` a worker does
not cut its own patches: each epoch it reads its share of the training cases
(:func:`brats.train.batches.assign_cases`) as a Ray Dataset whose ``flat_map`` tasks cut and
augment them on any node with a free CPU (CPU-only nodes included), and it trains on the
batches that stream back.

Determinism: case ``i`` of a worker's share (in order) gives patches ``i * per_case ...``,
each augmented with ``seeded_rng(seed, epoch, rank, sample)``, its centres drawn from
``(seed, epoch, rank, i)``; the dataset keeps its order, and the batch shuffle is seeded from
``(seed, epoch, rank)``. Where a task runs does not change a patch.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from brats.storage import Location
from brats.train.batches import sample_patches
from brats.train.config import TrainConfig, TrainingError
from brats.volume.labels import N_CLASSES, one_hot
from brats.volume.patches import to_channels_last

if TYPE_CHECKING:
    import ray.data

SHUFFLE_BATCHES: Final = 4
"""The local shuffle buffer holds this many batches of patches."""


def patches_per_case(config: TrainConfig, steps: int, n_cases: int) -> int:
    """Patches each of a worker's ``n_cases`` cases gives per epoch: enough for ``steps``
    batches, and at least ``config.patches_per_case``."""
    return max(config.patches_per_case, math.ceil(steps * config.batch_size / n_cases))


def patch_dataset(
    cohort: Location,
    share: list[str],
    config: TrainConfig,
    steps: int,
    key: tuple[int, int, int],
) -> ray.data.Dataset:
    """One epoch of a worker's augmented patches as a lazy Ray Dataset of rows ``{"image":
    (C, *patch) float32, "label": patch uint8}``, case after case in ``share``'s order, each
    case's patches in order.

    The dataset starts from the case ids and their shards (one block each), and each
    ``flat_map`` task reads its case's shard itself (:func:`brats.ingest.shards.read_shard`)
    before cutting: Ray Data's Parquet reader would list the files and start footer-reading
    actors every epoch, seconds of work for shards that hold one case each.

    Args:
        cohort: the ingested cohort.
        share: the worker's case ids, in the order it reads them.
        config: the run (patch size, sampling, augmentation).
        steps: batches the worker trains on this epoch.
        key: ``(seed, epoch, rank)``.

    Raises:
        KeyError: a case id the cohort's manifest does not list.
    """
    import ray.data

    from brats.ingest.shards import shard_keys

    shards = shard_keys(cohort, share)
    ds = ray.data.from_items(
        [{"shard": shards[case_id], "index": i} for i, case_id in enumerate(share)],
        override_num_blocks=max(1, len(share)),
    )
    options = copy.copy(ds.context.execution_options)
    options.preserve_order = True
    ds.context.execution_options = options
    task = functools.partial(
        _case_patches,
        cohort=cohort,
        config=config.to_dict(),
        key=list(key),
        per_case=patches_per_case(config, steps, len(share)),
    )
    return ds.flat_map(task)


def _case_patches(
    item: dict[str, Any],
    *,
    cohort: Location,
    config: dict[str, Any],
    key: list[int],
    per_case: int,
) -> list[dict[str, npt.NDArray[Any]]]:
    """The ``flat_map`` task: a case's shard and its index in the share in, the case's
    ``per_case`` augmented patches out."""
    from brats.ingest.shards import read_shard

    run = TrainConfig.from_dict(config)
    (row,) = read_shard(cohort, str(item["shard"]))
    index = int(item["index"])
    image = np.asarray(row["image"])
    label = np.asarray(row["label"]) if row["labeled"] else None
    seed, epoch, rank = key
    rng = np.random.default_rng([seed, epoch, rank, index])
    patches = sample_patches(
        image, label, run, rng, (seed, epoch, rank), index * per_case, n=per_case
    )
    return [{"image": x, "label": y} for x, y in patches]


def stream_batches(
    ds: ray.data.Dataset,
    config: TrainConfig,
    steps: int,
    key: tuple[int, int, int],
    n_classes: int = N_CLASSES,
) -> Iterator[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """Exactly ``steps`` batches ``(x (B, d, h, w, C) float32, y (B, d, h, w, K) one-hot,
    K = n_classes)``
    from :func:`patch_dataset`, shuffled in a seeded local buffer; the rest of the epoch's
    patches are left unread (the dataset stops when the iterator is dropped).

    Raises:
        TrainingError: the dataset ran out first (it is sized to never do so).
    """
    seed = int(np.random.default_rng(list(key)).integers(2**31))
    batches = ds.iter_batches(
        batch_size=config.batch_size,
        batch_format="numpy",
        drop_last=True,
        local_shuffle_buffer_size=SHUFFLE_BATCHES * config.batch_size,
        local_shuffle_seed=seed,
    )
    emitted = 0
    # zip takes from range first: the batch after the last step is never requested.
    for step, batch in zip(range(1, steps + 1), batches, strict=False):
        yield to_channels_last(np.asarray(batch["image"])), one_hot(batch["label"], n_classes)
        emitted = step
    if emitted < steps:  # the other workers would wait for this one's next step forever
        raise TrainingError(f"the patch stream ended after {emitted} of {steps} batches")
