"""What each worker trains on (brats.train.batches): the split, the step count, patches."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brats.storage import resolve
from brats.train.batches import (
    assign_cases,
    load_or_write_split,
    patch_batches,
    shard_bytes,
    split_cases,
    steps_per_epoch,
)
from brats.train.config import TrainConfig, TrainingError
from brats.volume.labels import N_CLASSES
from tests.helpers import TINY_TRAINING as TINY


def test_split_is_seeded_disjoint_and_complete():
    ids = [f"c{i:02d}" for i in range(10)]
    a = split_cases(ids, 0.2, seed=3)
    assert a == split_cases(list(reversed(ids)), 0.2, seed=3)
    assert len(a["val"]) == 2 and sorted(a["train"] + a["val"]) == ids
    assert a != split_cases(ids, 0.2, seed=4)
    assert split_cases(["only"], 0.2, seed=0) == {"train": ["only"], "val": []}
    assert len(split_cases(ids[:3], 0.1, seed=0)["val"]) == 1  # at least one when asked


def test_steps_per_epoch_comes_from_the_global_count_at_the_groups_size():
    config = TrainConfig(data="d", storage="s", **TINY)
    # 7 cases x 2 patches over 2 workers x 2 per batch -> 3.5 -> 4 steps on every worker.
    assert steps_per_epoch(config, 7, 2) == 4
    # An elastic run that lost a worker: the same 14 patches an epoch, in 7 steps.
    assert steps_per_epoch(config, 7, 1) == 7
    fixed = TrainConfig(data="d", storage="s", steps_per_epoch=9, **TINY)
    assert steps_per_epoch(fixed, 7, 2) == steps_per_epoch(fixed, 7, 1) == 9


def _rows(n: int, consumed: list[int]):
    rng = np.random.default_rng(0)
    for i in range(n):
        consumed.append(i)
        label = np.zeros((20, 20, 20), np.uint8)
        label[8:12, 8:12, 8:12] = 1 + i % 3
        yield {
            "image": rng.normal(size=(4, 20, 20, 20)).astype(np.float16),
            "label": label,
            "labeled": True,
        }


@pytest.mark.parametrize(("cases", "steps"), [(5, 2), (2, 7)])
def test_patch_batches_gives_exactly_steps_and_reads_the_whole_shard(cases, steps):
    config = TrainConfig(data="d", storage="s", **TINY)
    consumed: list[int] = []
    batches = list(patch_batches(_rows(cases, consumed), config, steps, (0, 0, 1)))
    assert len(batches) == steps
    assert consumed == list(range(cases))  # every row read, even when steps ran out first
    x, y = batches[0]
    assert x.shape == (2, 16, 16, 16, 4) and x.dtype == np.float32
    assert y.shape == (2, 16, 16, 16, N_CLASSES)
    np.testing.assert_array_equal(y.sum(axis=-1), 1.0)


@pytest.mark.parametrize("preset", ["nnunet", "seed"])
def test_the_same_seed_epoch_and_rank_give_the_same_batches(preset):
    config = TrainConfig(data="d", storage="s", preset=preset, **TINY)

    def run(key: tuple[int, int, int]) -> list[np.ndarray]:
        return [x for x, _ in patch_batches(_rows(4, []), config, 3, key)]

    first, again, other_epoch = run((0, 2, 1)), run((0, 2, 1)), run((0, 3, 1))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other_epoch, strict=True))


def test_patch_batches_on_an_empty_shard_is_an_error_not_a_hang():
    config = TrainConfig(data="d", storage="s", **TINY)
    with pytest.raises(TrainingError, match="fewer cases than workers"):
        list(patch_batches(iter([]), config, 3, (0, 0, 0)))


def test_a_run_keeps_its_split_and_refuses_another_cohort(tmp_path):
    run = resolve(str(tmp_path / "run"))
    cases = [{"case_id": f"c{i}", "labeled": i != 3} for i in range(6)]
    manifest = {"hash": "a" * 64, "cases": cases}
    config = TrainConfig(data="d", storage="s", val_fraction=0.2, seed=1)
    split = load_or_write_split(run, manifest, config)
    assert sorted(split["train"] + split["val"]) == ["c0", "c1", "c2", "c4", "c5"]
    assert json.loads((tmp_path / "run" / "split.json").read_text()) == split
    again = TrainConfig(data="d", storage="s", val_fraction=0.5, seed=7)
    assert load_or_write_split(run, manifest, again) == split  # resumed runs keep theirs
    with pytest.raises(TrainingError, match="started on another cohort"):
        load_or_write_split(run, {**manifest, "hash": "b" * 64}, config)


def test_cases_are_dealt_to_workers_by_the_seed():
    ids = [f"c{i}" for i in range(7)]
    dealt = assign_cases(ids, 2, seed=0)
    assert dealt == assign_cases(list(reversed(ids)), 2, seed=0)  # same seed, same shares
    assert sorted(dealt[0] + dealt[1]) == ids and sorted(map(len, dealt)) == [3, 4]
    assert dealt != assign_cases(ids, 2, seed=1)
    with pytest.raises(TrainingError, match="every worker needs at least one case"):
        assign_cases(ids[:1], 2, seed=0)


def test_the_cache_budget_is_checked_against_the_largest_share():
    manifest = {
        "preprocess": {"dtype": "float16"},
        "cases": [{"case_id": f"c{i}", "shape": [4, 10, 10, 10]} for i in range(3)],
    }
    per_case = 1000 * (4 * 2 + 1)
    assert shard_bytes(manifest, [["c0", "c1"], ["c2"]]) == 2 * per_case
