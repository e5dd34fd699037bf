"""Cross-validation folds: deterministic, by case, every kind of case in every fold."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from brats.train.config import TrainConfig
from brats.train.folds import fold_split, make_folds, manifest_folds, stratum


def _cohort(n: int) -> dict[str, str]:
    """Case ids -> strata: a third without enhancement, a sixth with a cavity, the rest
    ordinary, in an order unrelated to the ids."""
    kinds = ("NETC+SNFH+ET", "NETC+SNFH", "NETC+SNFH+ET", "SNFH+RC", "NETC+SNFH+ET", "NETC+SNFH")
    return {f"BraTS-{(i * 11) % n:05d}": kinds[i % len(kinds)] for i in range(n)}


def test_a_stratum_is_the_classes_a_case_holds() -> None:
    assert stratum({"NETC": 5, "SNFH": 20, "ET": 0, "RC": 3}) == "NETC+SNFH+RC"
    assert stratum({"NETC": 0}) == "" and stratum(None) == ""


@pytest.mark.parametrize(("n", "k"), [(30, 5), (31, 5), (7, 3), (5, 5)])
def test_every_case_validates_in_exactly_one_fold_and_sizes_differ_by_at_most_one(n, k) -> None:
    strata = _cohort(n)
    folds = make_folds(strata, k, seed=0)
    assert sorted(c for f in folds for c in f) == sorted(strata)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for i in range(k):
        split = fold_split(folds, i)
        assert split["val"] == folds[i]
        assert sorted(split["train"] + split["val"]) == sorted(strata)


def test_every_fold_gets_its_share_of_every_kind_of_case() -> None:
    strata = _cohort(30)
    folds = make_folds(strata, 5, seed=3)
    totals = Counter(strata.values())
    for fold in folds:
        kinds = Counter(strata[c] for c in fold)
        for kind, total in totals.items():
            assert abs(kinds[kind] - total / 5) < 1, (kind, kinds)


def _spreads(strata: dict[str, str], folds: list[list[str]]) -> dict[str, int]:
    """Per class and per class absent: most minus fewest such cases in a fold."""
    classes = {c for s in strata.values() for c in s.split("+") if c}
    spreads = {}
    for c in classes:
        for present in (True, False):
            n = [sum((c in strata[i].split("+")) == present for i in f) for f in folds]
            spreads[c if present else f"no {c}"] = max(n) - min(n)
    return spreads


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tumours_without_enhancement_in_different_strata_still_spread(seed) -> None:
    # Two strata without ET, one case each: dealing stratum after stratum put both in fold 0.
    strata = {"a": "SNFH", "b": "NETC+SNFH"}
    strata |= {f"c{i}": "NETC+SNFH+ET" for i in range(4)} | {f"d{i}": "SNFH+ET" for i in range(4)}
    folds = make_folds(strata, 5, seed=seed)
    assert max(map(len, folds)) == 2 and min(map(len, folds)) == 2
    assert max(_spreads(strata, folds).values()) <= 1


def test_every_class_and_its_absence_within_two_of_its_share_on_brats_2024_like_cohorts() -> None:
    rng = np.random.default_rng(0)
    kinds = ("NETC+SNFH+ET", "SNFH+ET", "NETC+SNFH", "SNFH", "NETC+SNFH+ET+RC", "SNFH+RC")
    weights = (0.55, 0.12, 0.1, 0.05, 0.12, 0.06)
    within_one = 0
    for trial in range(60):
        n, k = (12, 24, 37, 61)[trial % 4], (3, 5)[trial % 2]
        strata = {f"c{i:03d}": kinds[rng.choice(len(kinds), p=weights)] for i in range(n)}
        folds = make_folds(strata, k, seed=trial)
        assert sorted(c for f in folds for c in f) == sorted(strata)
        assert max(map(len, folds)) - min(map(len, folds)) <= 1
        worst = max(_spreads(strata, folds).values())
        assert worst <= 2, (trial, _spreads(strata, folds))
        within_one += worst <= 1
    assert within_one >= 50  # dealing stratum after stratum: 16 of these 60, 5 beyond two


def test_the_same_ids_and_seed_give_the_same_folds_and_another_seed_others() -> None:
    strata = _cohort(30)
    shuffled = dict(reversed(list(strata.items())))
    assert make_folds(strata, 5, seed=1) == make_folds(shuffled, 5, seed=1)
    assert make_folds(strata, 5, seed=1) != make_folds(strata, 5, seed=2)


def test_too_few_cases_or_folds_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 folds"):
        make_folds(_cohort(6), 1, seed=0)
    with pytest.raises(ValueError, match="4 labelled cases for 5 folds"):
        make_folds(_cohort(4), 5, seed=0)
    with pytest.raises(ValueError, match="fold 3 is not one of the 3"):
        fold_split([["a"], ["b"], ["c"]], 3)


def test_manifest_folds_use_labelled_cases_and_say_whether_they_are_stratified() -> None:
    cases = [
        {"case_id": f"c{i}", "labeled": True, "class_voxels": {"ET": i % 2, "SNFH": 9}}
        for i in range(8)
    ] + [{"case_id": "unlabelled", "labeled": False}]
    folds = manifest_folds({"hash": "h", "cases": cases}, 2, seed=0)
    assert folds["stratified"] and folds["k"] == 2 and folds["manifest_hash"] == "h"
    assert "unlabelled" not in {c for f in folds["folds"] for c in f}
    assert all(sum(int(c[1:]) % 2 for c in f) == 2 for f in folds["folds"])  # 2 with ET each
    old = [{k: v for k, v in c.items() if k != "class_voxels"} for c in cases]
    assert not manifest_folds({"hash": "h", "cases": old}, 2, seed=0)["stratified"]


def test_a_fold_needs_folds_and_must_be_one_of_them() -> None:
    assert TrainConfig(data="d", storage="s", folds=5, fold=4).fold == 4
    with pytest.raises(ValueError, match="fold 5 is not one of the 5 folds"):
        TrainConfig(data="d", storage="s", folds=5, fold=5)
    with pytest.raises(ValueError, match="> 1 to pick a fold"):
        TrainConfig(data="d", storage="s", fold=0)


def test_a_run_s_folds_are_kept_and_another_cohort_k_or_seed_is_refused(tmp_path) -> None:
    from brats.storage import resolve
    from brats.train.config import TrainingError
    from brats.train.crossval import load_or_write_folds

    cases = [{"case_id": f"c{i}", "labeled": True, "class_voxels": {"ET": i % 2}} for i in range(6)]
    manifest = {"hash": "h", "cases": cases}
    config = TrainConfig(data="d", storage=str(tmp_path), name="cv", folds=3, seed=1)
    run = resolve(str(tmp_path / "cv"))
    written = load_or_write_folds(run, manifest, config)
    assert load_or_write_folds(run, manifest, config) == written  # read back, not made again
    for change in ({"seed": 2}, {"folds": 2}):
        with pytest.raises(TrainingError, match=r"3 folds of cohort h \(seed 1\), not"):
            load_or_write_folds(run, manifest, replace(config, **change))
    with pytest.raises(TrainingError, match="use a new --name"):
        load_or_write_folds(run, {**manifest, "hash": "other"}, config)
