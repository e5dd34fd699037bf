"""The augmentation and recipe benchmarks at tiny sizes: their figures add up."""

from __future__ import annotations

import numpy as np
import pytest

from brats.benchmarks import augment, recipe
from tests.helpers import nifti_data


@pytest.mark.integration
def test_augment_benchmark_reports_a_per_core_rate_and_cores_per_gpu(ray_session):
    settings = augment.AugmentBenchmark(
        cases=2, shape=(40, 40, 32), patch=16, patches=3, rounds=1, gpu_rate=1000.0
    )
    figures = augment.run(settings)
    rates = figures["patches_per_s"]
    assert set(rates) == {"in_process", "nnunet_only", "flips", "ray_data"}
    assert min(rates.values()) > 0
    assert figures["per_core"] == rates["in_process"]
    assert figures["cores_per_gpu"] == pytest.approx(1000.0 / figures["per_core"], rel=1e-2)
    assert figures["ray_data_per_core"] == pytest.approx(
        rates["ray_data"] / figures["cores"], rel=1e-2
    )
    assert len(figures["prepared_shapes"]) == 2 and figures["prepared_shapes"][0][0] == 4


def test_recipe_summary_is_the_mean_range_and_worst_case_over_seeds():
    runs = [
        {"preset": "seed", "seed": s, "dice": {"a": {"WT": [0.8 + s / 10, 0.6]}}} for s in (0, 1)
    ]
    summary = recipe._summarize(runs, ["a"])
    wt = summary["seed"]["a"]["WT"]
    # Per-seed means 0.7 and 0.75; the worst single case 0.6.
    assert wt == {"mean": pytest.approx(0.725), "min": 0.7, "max": 0.75, "worst_case": 0.6}


def test_recipe_variants_cross_presets_precisions_and_augmentations():
    plain = recipe.variants(recipe.RecipeBenchmark())
    assert [label for label, _ in plain] == ["seed", "nnunet"]
    assert plain[1][1] == {"preset": "nnunet", "precision": "float32", "augmentation": "sites"}
    ab = recipe.variants(
        recipe.RecipeBenchmark(
            presets=("nnunet",),
            precisions=("float32", "bfloat16"),
            augmentations=("sites", "nnunet"),
        )
    )
    assert [label for label, _ in ab] == [
        "nnunet",
        "nnunet/nnunet",
        "nnunet@bfloat16",
        "nnunet@bfloat16/nnunet",
    ]
    assert ab[3][1] == {"preset": "nnunet", "precision": "bfloat16", "augmentation": "nnunet"}


def test_held_out_cases_must_not_share_the_training_cases_numbers():
    # The generator draws a case's anatomy from its number: cases 1..24 are the training set.
    with pytest.raises(ValueError, match="above the 24 training cases' numbers, got 24"):
        recipe.run(recipe.RecipeBenchmark(held_out_start=24))
    # Nor another site's: site b's numbers start 1000 after site a's.
    with pytest.raises(ValueError, match="held_out must be at most 1000 a site"):
        recipe.run(recipe.RecipeBenchmark(held_out=1001))


def test_a_spacing_acquires_the_training_cohort_and_every_site_on_that_grid():
    from brats.devtools.demo import DemoConfig

    demo = DemoConfig()
    plain, sites = recipe.cohort_configs(recipe.RecipeBenchmark(other_sites=("b", "c")), demo)
    assert plain.spacing_mm is None and sites["a"][0].spacing_mm is None
    assert sites["b"][0].spacing_mm == (3.75, 3.75, 5.0)  # the demo's coarse-slice site
    assert [start for _, start in sites.values()] == [1001, 2001, 3001]

    args = recipe.RecipeBenchmark(other_sites=("b", "c"), spacing=(3.0, 3.0, 4.0))
    synth, sites = recipe.cohort_configs(args, demo)
    assert synth.spacing_mm == (3.0, 3.0, 4.0) and synth.acquired_shape == (80, 80, 39)
    assert sites["a"][0].spacing_mm == (3.0, 3.0, 4.0) and sites["a"][0].site == "a"
    assert sites["b"][0].spacing_mm == (3.0, 3.0, 5.0)  # site b's thicker slices stay
    assert sites["c"][0].spacing_mm == (3.0, 3.0, 4.0) and sites["c"][0].site == "c"


def test_held_out_dice_scores_every_case_of_a_cohort(tmp_path):
    import keras

    from brats.devtools.synth import SynthConfig, generate_cohort
    from brats.io.artifact import save_artifact
    from brats.io.model_card import ModelInfo
    from brats.network.unet import build_unet, nnunet_config

    keras.utils.set_random_seed(0)
    unet = nnunet_config(base_filters=4, depth=2)
    info = ModelInfo(unet=unet, patch_size=(16, 16, 16))
    save_artifact(build_unet(unet), info, str(tmp_path / "m"))
    config = SynthConfig(shape=(32, 32, 24), site="b")
    generate_cohort(tmp_path / "cases", 2, config)
    scores = recipe.held_out_dice(str(tmp_path / "m"), str(tmp_path / "cases"))
    # The cases in order, from their written truth; a quarter of tumors do not enhance.
    segs = sorted((tmp_path / "cases").glob("*/*_seg.nii.gz"))
    without = [i for i, seg in enumerate(segs) if not (nifti_data(seg) == 4).any()]
    assert set(scores) == {"WT", "TC", "ET"} | ({"TC_no_ET"} if without else set())
    regions = {r: scores[r] for r in ("WT", "TC", "ET")}
    assert all(len(v) == 2 and all(0.0 <= d <= 1.0 for d in v) for v in regions.values())
    assert scores.get("TC_no_ET", []) == [scores["TC"][i] for i in without]


def test_fold_figures_compare_the_ensemble_with_each_fold_on_the_same_cases(tmp_path):
    import keras

    from brats.devtools.synth import SynthConfig, generate_cohort
    from brats.io.artifact import save_artifact, save_ensemble
    from brats.io.model_card import ModelInfo
    from brats.network.unet import build_unet, nnunet_config

    unet = nnunet_config(base_filters=4, depth=2)
    info = ModelInfo(unet=unet, patch_size=(16, 16, 16))
    folds = []
    for i in range(2):
        keras.utils.set_random_seed(i)
        folds.append(str(tmp_path / f"fold_{i}"))
        save_artifact(build_unet(unet), info, folds[-1])
    save_ensemble(folds, info, str(tmp_path / "model"))
    generate_cohort(tmp_path / "cases", 3, SynthConfig(shape=(32, 32, 24), site="b"))
    figures = recipe.fold_figures(str(tmp_path / "model"), folds, str(tmp_path / "cases"))
    alone = [recipe.held_out_cases(f, str(tmp_path / "cases"), "off") for f in folds]
    ensemble = recipe.held_out_cases(str(tmp_path / "model"), str(tmp_path / "cases"), "off")
    for region in ("WT", "TC", "ET"):
        per_fold = [float(np.mean([c.dice[region] for c in one])) for one in alone]
        assert figures["single_folds"][region] == pytest.approx(per_fold, abs=1e-4)
        assert figures["mean_single_fold"][region] == pytest.approx(np.mean(per_fold), abs=1e-4)
        mean = float(np.mean([c.dice[region] for c in ensemble]))
        assert figures["ensemble"][region] == pytest.approx(mean, abs=1e-4)
        assert figures["ensemble_beats_mean_fold"][region] == (
            figures["ensemble"][region] > figures["mean_single_fold"][region]
        )
    assert [c["uncertainty"] for c in figures["cases"]] == pytest.approx(
        [c.uncertainty for c in ensemble], abs=1e-4
    )
    assert all(c.uncertainty > 0 for c in ensemble)  # two untrained folds disagree
    for row, case in zip(figures["cases"], ensemble, strict=True):  # the score's two terms
        assert row["uncertainty"] == pytest.approx(
            (1 - row["agreement"]) + row["entropy"], abs=2e-4
        )
        assert (row["agreement"], row["entropy"]) == pytest.approx(
            (case.agreement, case.entropy), abs=1e-4
        )
    assert figures["no_et_cases"] == sum(not c.truth_enhances for c in ensemble)
    assert figures["no_et_with_et"] == [
        c.case_id for c in ensemble if not c.truth_enhances and c.predicted_et_voxels
    ]
    from scipy.stats import spearmanr

    errors = [1 - c.dice["WT"] for c in ensemble]
    scores = [c.uncertainty for c in ensemble]
    expected = spearmanr(scores, errors).statistic if len(set(errors)) > 1 else None
    assert figures["spearman_uncertainty_error"] == pytest.approx(expected, abs=1e-4)
    for term, values in (
        ("disagreement", [1 - c.agreement for c in ensemble]),
        ("entropy", [c.entropy for c in ensemble]),
    ):
        defined = len(set(errors)) > 1 and len(set(values)) > 1
        alone = spearmanr(values, errors).statistic if defined else None
        assert figures[f"spearman_{term}_error"] == pytest.approx(alone, abs=1e-4)
    other = {
        **figures,
        "cases": [{**c, "uncertainty": -c["uncertainty"]} for c in figures["cases"]],
    }
    pooled = spearmanr(
        [c["uncertainty"] for c in figures["cases"] + other["cases"]],
        [1 - c["dice"]["WT"] for c in figures["cases"] + other["cases"]],
    ).statistic
    assert recipe._pooled_spearman({"a": figures, "b": other}) == pytest.approx(pooled, abs=1e-4)
