"""Recipe benchmark: the seed preset vs nnunet, trained alike, scored on held-out cases.

One invocation generates one cohort at the demo's sizes (training site ``a``), held-out cases
at the training site and at the other sites (``--other-sites``, by default ``b``: other
contrasts, gamma, a stronger bias field, more noise, thicker slices; and ``c``: other
contrasts again, a strong gamma, little noise), and ingests the training cohort once.
Then, for every training seed (``--seeds``), it trains both presets on that cohort with the
same epochs, patch size and network widths (:meth:`brats.devtools.demo.DemoConfig.
training`), and segments every held-out set with each exported model through the
:class:`~brats.segment.predictor.Predictor` (the model's own postprocessing on), once
without and once with flip TTA (``--tta``; a run scored with flips is named preset+tta).

With ``--precisions float32,bfloat16`` each preset is trained in each precision (the A/B
for training in bfloat16 on CPUs); with ``--augmentations nnunet sites`` in each
augmentation (the A/B for the site transforms). Figures: held-out mean Dice per region
(WT, TC, ET) per preset (and precision, augmentation), site and seed, their mean and range
over seeds, and the worst case per region. No target: it is the A/B the README quotes.

With ``--folds K`` every run is a K-fold cross-validation (:mod:`brats.train.crossval`: the
folds trained as concurrent Ray Train runs, postprocessing chosen on their out-of-fold
predictions) and is scored as the ensemble and as each fold alone (:func:`fold_figures`):
held-out Dice per region of the ensemble against the mean single fold, the Spearman
correlation between a case's uncertainty score and its error (1 - Dice of the first
region), the tumours without enhancement that keep predicted enhancement, and the wall
time of the K folds trained together against one fold trained alone (the first seed's).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from brats.options import option
from brats.runtime import init_ray

if TYPE_CHECKING:
    from brats.devtools.demo import DemoConfig
    from brats.devtools.synth import SynthConfig
    from brats.train.config import TrainConfig


SITE_STRIDE = 1000
"""Held-out case numbers of site ``i`` start ``SITE_STRIDE * i`` after the training site's."""


@dataclass(frozen=True)
class RecipeBenchmark:
    """``jobs/benchmark.py recipe``."""

    presets: tuple[str, ...] = option(("seed", "nnunet"), help="presets to compare")
    seeds: tuple[int, ...] = option(
        (0, 1, 2), help="training seeds, each preset trained once per seed"
    )
    precisions: tuple[str, ...] = option(
        ("float32",),
        help="training precisions, each preset trained once per precision and seed (a run "
        "not in float32 is named preset@precision)",
    )
    augmentations: tuple[str, ...] = option(
        (),
        help="augmentations each preset is trained with, once per augmentation and seed "
        "(default: the preset's own; a run with another is named preset/augmentation)",
    )
    tta: tuple[str, ...] = option(
        ("off", "on"), help="how each model is scored: without flip TTA (off), with it (on)"
    )
    epochs: int | None = option(None, help="epochs per run (default: the demo's)")
    base_filters: int | None = option(
        None, help="filters of the network's top level (default: the demo's for the scheme)"
    )
    other_sites: tuple[str, ...] = option(("b", "c"), help="held-out sites the model never saw")
    held_out: int | None = option(None, help="held-out cases per site (default: the demo's)")
    held_out_start: int = option(
        1001,
        help="the first held-out case's number at the training site (site i's: this plus "
        "1000 i); the generator draws each case's anatomy from its number, so another start "
        "gives cases no earlier run has scored",
    )
    num_cpus: int | None = option(None, help="CPUs for the local Ray (default: all cores)")
    label_scheme: str | None = option(
        None,
        metavar="SCHEME",
        help="generate every cohort in this built-in label scheme (gli2024: resection "
        "cavities; ped2024: cysts; default: the demo's, brats2020) and score its regions",
    )
    folds: int = option(
        1,
        help="train each run as K-fold cross-validation and score the ensemble against each "
        "fold alone, with the uncertainty's correlation to the error (1: one model per run)",
    )
    spacing: tuple[float, float, float] | None = option(
        None,
        metavar=("X", "Y", "Z"),
        help="acquire the training cohort and every held-out site on this voxel size in mm "
        "over the same field of view (a site with thicker slices keeps its own; default: "
        "the demo's grid): how far a model trained on such a grid gets",
    )

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise ValueError(f"folds must be >= 1, got {self.folds}")


@dataclass(frozen=True)
class CaseScore:
    """One held-out case as a model segmented it: Dice per region of the scheme, the
    uncertainty score and its two terms, the folds' ``agreement`` and the ``entropy``
    inside the predicted tumour (:class:`~brats.segment.predictor.Assessment`), whether its
    truth has enhancing tumour, and the enhancing voxels predicted."""

    case_id: str
    dice: dict[str, float]
    uncertainty: float
    truth_enhances: bool
    predicted_et_voxels: int
    agreement: float
    entropy: float


def held_out_cases(model: str, cohort: str, tta: str = "model") -> list[CaseScore]:
    """Every case of a labeled raw cohort, segmented by ``model`` (one model or an
    ensemble) with flip TTA as ``tta`` says, scored in the model's label scheme. A region
    neither side has scores 1, as BraTS scores it."""
    from brats.io.cases import discover
    from brats.segment.predictor import Predictor, PredictSettings
    from brats.storage import resolve
    from brats.volume.labels import region_mask
    from brats.volume.metrics import dice

    predictor = Predictor.from_artifact(model, PredictSettings.with_tta(tta))
    scheme = predictor.info.scheme
    root = resolve(cohort)
    enhancing = "ET" in scheme.regions
    out = []
    for case in discover(root).cases:
        done = predictor.segment_files(case, root)
        truth = done.volumes.label
        assert truth is not None, f"{case.case_id} has no seg"
        scores = {
            region: dice(
                region_mask(done.labels, region, scheme), region_mask(truth, region, scheme)
            )
            for region in scheme.regions
        }
        out.append(
            CaseScore(
                case.case_id,
                scores,
                done.assessment.uncertainty,
                truth_enhances=bool(enhancing and region_mask(truth, "ET", scheme).any()),
                predicted_et_voxels=int(region_mask(done.labels, "ET", scheme).sum())
                if enhancing
                else 0,
                agreement=done.assessment.agreement,
                entropy=done.assessment.entropy,
            )
        )
    return out


def held_out_dice(model: str, cohort: str, tta: str = "model") -> dict[str, list[float]]:
    """Dice per region of the model's label scheme for every case of a labeled raw cohort
    (:func:`held_out_cases`), and under ``"TC_no_ET"`` the TC Dice of the cases whose truth
    has no enhancing tumor (the cores a model finds hardest; the key is absent when every
    case enhances)."""
    cases = held_out_cases(model, cohort, tta)
    regions = list(cases[0].dice) if cases else []
    scores = {r: [c.dice[r] for c in cases] for r in regions}
    no_et = [
        c.dice["TC"] for c in cases if "TC" in c.dice and "ET" in c.dice and not c.truth_enhances
    ]
    return scores | ({"TC_no_ET": no_et} if no_et else {})


def cohort_configs(
    args: RecipeBenchmark, demo: DemoConfig
) -> tuple[SynthConfig, dict[str, tuple[SynthConfig, int]]]:
    """How the benchmark generates its cases: the training cohort's config, and for each
    held-out site (the training site first) its config and first case number (``start``).

    Held-out case numbers differ per site (1001.., 2001.., ...: other anatomy too). With
    ``args.spacing`` the training cohort and every site are acquired on that grid; a site
    with thicker slices (:meth:`DemoConfig.acquired`) keeps its own.
    """
    from brats.devtools.synth import SynthConfig

    synth = SynthConfig(shape=demo.shape, seed=demo.seed, site=demo.site)
    if args.label_scheme:
        synth = replace(synth, convention=args.label_scheme)
    if args.spacing:
        synth = replace(synth, spacing_mm=args.spacing)
    sites = {
        site: (demo.acquired(synth, site), args.held_out_start + SITE_STRIDE * i)
        for i, site in enumerate(dict.fromkeys((demo.site, *args.other_sites)))
    }
    return synth, sites


def run(args: RecipeBenchmark) -> dict[str, Any]:
    from brats.devtools.demo import DemoConfig
    from brats.devtools.synth import generate_cohort
    from brats.ingest.job import IngestConfig, ingest
    from brats.train.job import train

    demo = DemoConfig(label_scheme=args.label_scheme or DemoConfig.label_scheme)
    if args.base_filters:
        demo = replace(demo, base_filters=args.base_filters)
    if args.epochs:
        demo = replace(demo, epochs=args.epochs)
    held_out = args.held_out or demo.held_out
    if args.held_out_start <= demo.cases:  # cases 1..N train: the same anatomy
        raise ValueError(
            f"held_out_start must be above the {demo.cases} training cases' numbers, got "
            f"{args.held_out_start}"
        )
    if held_out > SITE_STRIDE:  # site i's cases start SITE_STRIDE * i later
        raise ValueError(
            f"held_out must be at most {SITE_STRIDE} a site (the next site's case numbers "
            f"start {SITE_STRIDE} later, and a number is an anatomy), got {held_out}"
        )
    init_ray(num_cpus=args.num_cpus)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="brats-bench-recipe-") as tmp:
        synth, held_out_sites = cohort_configs(args, demo)
        generate_cohort(f"{tmp}/raw", demo.cases, synth)
        sites: dict[str, str] = {}
        for site, (acquired, start) in held_out_sites.items():
            sites[site] = f"{tmp}/held-out-{site}"
            generate_cohort(sites[site], held_out, acquired, start=start)
        ingest(IngestConfig(cohort=f"{tmp}/raw", out=f"{tmp}/cohort"))
        for seed in args.seeds:
            for label, overrides in variants(args):
                name = "-".join(overrides.values()) + f"-{seed}"
                if args.folds > 1:
                    training = demo.training(
                        f"{tmp}/cohort", f"{tmp}/runs", name, seed=seed, folds=args.folds,
                        **overrides,
                    )  # fmt: skip
                    alone = seed == args.seeds[0]
                    runs.append(_cross_validated(args, training, label, sites, alone=alone))
                    continue
                began = time.perf_counter()
                trained = train(
                    demo.training(f"{tmp}/cohort", f"{tmp}/runs", name, seed=seed, **overrides)
                )
                seconds = time.perf_counter() - began
                assert trained.model is not None
                for tta in args.tta:
                    scores = {
                        site: held_out_dice(trained.model, root, tta)
                        for site, root in sites.items()
                    }
                    scored = label if tta == "off" else f"{label}+tta"
                    runs.append(
                        {"preset": scored, "seed": seed, "train_s": round(seconds, 1),
                         "dice": scores}
                    )  # fmt: skip
                    line = " | ".join(
                        f"site {site}: "
                        + " ".join(f"{r} {np.mean(v):.3f}" for r, v in per_region.items())
                        for site, per_region in scores.items()
                    )
                    print(f"recipe {scored} seed {seed} ({seconds:.0f} s): {line}", flush=True)
    setup = asdict(args) | {"demo": demo.settings(), "held_out": held_out}
    if args.folds > 1:
        return {"runs": runs, "setup": setup}
    summary = _summarize(runs, list(sites))
    for preset, per_site in summary.items():
        for site, per_region in per_site.items():
            print(
                f"recipe {preset}, site {site}, mean over seeds (min..max): "
                + ", ".join(
                    f"{r} {s['mean']:.3f} ({s['min']:.3f}..{s['max']:.3f})"
                    for r, s in per_region.items()
                )
            )
    return {
        "summary": summary,
        "runs": [
            run | {"dice": {s: {r: [round(x, 4) for x in v] for r, v in d.items()}
                            for s, d in run["dice"].items()}}
            for run in runs
        ],
        "setup": setup,
    }  # fmt: skip


def _cross_validated(
    args: RecipeBenchmark,
    config: TrainConfig,
    label: str,
    sites: dict[str, str],
    *,
    alone: bool,
) -> dict[str, Any]:
    """One K-fold run (``config.folds``): fold 0 trained alone first when ``alone`` (its wall
    time), then every fold together, then :func:`fold_figures` per site and TTA setting."""
    from brats.train.job import train

    run: dict[str, Any] = {"preset": label, "seed": config.seed, "folds": config.folds}
    if alone:
        began = time.perf_counter()
        train(replace(config, name=f"{config.name}-alone", fold=0))
        run["one_fold_alone_s"] = round(time.perf_counter() - began, 1)
    began = time.perf_counter()
    trained = train(config)
    run["all_folds_s"] = round(time.perf_counter() - began, 1)
    assert trained.model is not None
    from brats.io.artifact import read_model_card

    info = read_model_card(trained.model).info
    run["postprocessing"] = info.postprocessing
    run["out_of_fold"] = {k: v for k, v in info.metrics.items() if k.startswith("oof_")}
    folds = [f"{config.storage}/{config.name}/fold_{i}/model" for i in range(config.folds)]
    timing = f"{config.folds} folds together {run['all_folds_s']:.0f} s" + (
        f", one fold alone {run['one_fold_alone_s']:.0f} s" if alone else ""
    )
    print(f"recipe {label} seed {config.seed}: {timing}", flush=True)
    for tta in args.tta:
        key = "figures" if tta == "off" else "figures+tta"
        run[key] = {
            site: fold_figures(trained.model, folds, root, tta) for site, root in sites.items()
        }
        run[key]["pooled"] = {"spearman_uncertainty_error": _pooled_spearman(run[key])}
        for site, f in run[key].items():
            if site == "pooled":
                continue
            regions = " ".join(
                f"{r} {f['ensemble'][r]:.3f}/{f['mean_single_fold'][r]:.3f}" for r in f["ensemble"]
            )
            print(
                f"recipe {label} seed {config.seed} tta {tta} site {site}: ensemble/mean fold "
                f"{regions}; Spearman(uncertainty, 1 - Dice) {f['spearman_uncertainty_error']} "
                f"(disagreement alone {f['spearman_disagreement_error']}, entropy alone "
                f"{f['spearman_entropy_error']}); "
                f"no-ET cases with ET specks {len(f['no_et_with_et'])} of {f['no_et_cases']}",
                flush=True,
            )
        print(
            f"recipe {label} seed {config.seed} tta {tta} both sites: Spearman(uncertainty, "
            f"1 - Dice) {run[key]['pooled']['spearman_uncertainty_error']}",
            flush=True,
        )
    return run


def _pooled_spearman(per_site: dict[str, Any]) -> float | None:
    """:func:`fold_figures`' Spearman correlation over the cases of every site together."""
    cases = [c for figures in per_site.values() for c in figures["cases"]]
    if not cases:
        return None
    first = next(iter(cases[0]["dice"]))
    return _spearman([c["uncertainty"] for c in cases], [1.0 - c["dice"][first] for c in cases])


def _spearman(scores: list[float], errors: list[float]) -> float | None:
    """Spearman's correlation of uncertainty scores and errors, to 4 digits; ``None`` when
    either is constant (it is undefined)."""
    from scipy.stats import spearmanr

    if len(set(errors)) < 2 or len(set(scores)) < 2:
        return None
    return round(float(spearmanr(scores, errors).statistic), 4)


def fold_figures(ensemble: str, folds: list[str], cohort: str, tta: str = "off") -> dict[str, Any]:
    """A held-out cohort segmented by the ensemble and by each of its folds alone: mean Dice
    per region of each, the mean over the folds, whether the ensemble beats it, the Spearman
    correlation between the ensemble's uncertainty score and its error (1 - Dice of the
    scheme's first region; ``None`` when either is constant) and that of each of the score's
    terms alone, each case's figures, and the cases without enhancing tumour that got some
    predicted."""
    cases = held_out_cases(ensemble, cohort, tta)
    singles = [held_out_cases(fold, cohort, tta) for fold in folds]
    regions = list(cases[0].dice)
    means = {r: float(np.mean([c.dice[r] for c in cases])) for r in regions}
    per_fold = {r: [float(np.mean([c.dice[r] for c in one])) for one in singles] for r in regions}
    mean_fold = {r: float(np.mean(v)) for r, v in per_fold.items()}
    errors = [1.0 - c.dice[regions[0]] for c in cases]
    rho = _spearman([c.uncertainty for c in cases], errors)
    return {
        "ensemble": {r: round(v, 4) for r, v in means.items()},
        "single_folds": {r: [round(x, 4) for x in v] for r, v in per_fold.items()},
        "mean_single_fold": {r: round(v, 4) for r, v in mean_fold.items()},
        "ensemble_beats_mean_fold": {r: means[r] > mean_fold[r] for r in regions},
        "spearman_uncertainty_error": rho,
        # Each term of the score alone, ranked against the same errors.
        "spearman_disagreement_error": _spearman([1.0 - c.agreement for c in cases], errors),
        "spearman_entropy_error": _spearman([c.entropy for c in cases], errors),
        "no_et_cases": sum(not c.truth_enhances for c in cases),
        "no_et_with_et": [
            c.case_id for c in cases if not c.truth_enhances and c.predicted_et_voxels > 0
        ],
        "cases": [
            {"case_id": c.case_id, "dice": {r: round(d, 4) for r, d in c.dice.items()},
             "uncertainty": round(c.uncertainty, 4), "agreement": round(c.agreement, 4),
             "entropy": round(c.entropy, 4)}
            for c in cases
        ],
    }  # fmt: skip


def variants(args: RecipeBenchmark) -> list[tuple[str, dict[str, str]]]:
    """The runs per seed, as ``(label, TrainConfig overrides)``: every preset in every
    precision and augmentation. The label is the preset, then ``@precision`` unless float32,
    then ``/augmentation`` unless it is the preset's own."""
    from brats.train.config import TrainConfig

    out = []
    for preset in args.presets:
        own = TrainConfig(data="-", storage="-", preset=preset).augmentation
        assert own is not None
        for precision in args.precisions:
            for augmentation in args.augmentations or (own,):
                label = preset if precision == "float32" else f"{preset}@{precision}"
                if augmentation != own:
                    label = f"{label}/{augmentation}"
                overrides = {"preset": preset, "precision": precision, "augmentation": augmentation}
                out.append((label, overrides))
    return out


def _summarize(runs: list[dict[str, Any]], sites: list[str]) -> dict[str, Any]:
    """Per preset and site: each region's mean held-out Dice over seeds, its range over
    seeds, and the worst single case."""
    out: dict[str, Any] = {}
    for preset in dict.fromkeys(r["preset"] for r in runs):
        mine = [r for r in runs if r["preset"] == preset]
        out[preset] = {}
        for site in sites:
            regions = mine[0]["dice"][site]
            out[preset][site] = {
                region: {
                    "mean": round(
                        statistics.mean(np.mean(r["dice"][site][region]) for r in mine), 4
                    ),
                    "min": round(min(np.mean(r["dice"][site][region]) for r in mine), 4),
                    "max": round(max(np.mean(r["dice"][site][region]) for r in mine), 4),
                    "worst_case": round(min(min(r["dice"][site][region]) for r in mine), 4),
                }
                for region in regions
            }
    return out
