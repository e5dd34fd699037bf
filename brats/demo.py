"""The demo: the whole pipeline on a generated cohort with a local Ray (``make demo``).

Stages, each writing under ``--out`` (default ``demo-out/``):

1. ``cohort/``: a seeded BraTS-2020-style training cohort built on the MNI152 template, plus
   two broken cases (a truncated gzip, a missing modality): bad input is reported and the
   others go on;
2. ``normalized/``: the Ray Data ingest job's Parquet shards and ``manifest.json``;
3. ``runs/demo/``: Ray Train with 2 workers on the CPU, checkpoints, the exported model;
4. ``incoming/``: held-out cases the model never saw (and one broken one), segmented by the
   nightly job into ``nightly/``: a mask per case, records, ``report.html``.

It ends by printing where everything went and the held-out mean Dice per region.
``--small`` runs a reduced size (CI runs it so the demo's path stays green).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from brats.runtime import init_ray, setup_logging

log = logging.getLogger("brats.demo")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and training settings of the demo (the defaults are the README's figures)."""

    out: str = "demo-out"
    cases: int = 24
    held_out: int = 8
    shape: tuple[int, int, int] = (64, 64, 48)
    patch: int = 32
    base_filters: int = 8
    depth: int = 3
    epochs: int = 48
    patches_per_case: int = 4
    learning_rate: float = 3e-3
    num_workers: int = 2
    seed: int = 0
    num_cpus: int | None = None

    @classmethod
    def small(cls, out: str) -> DemoConfig:
        """A few cases at 32^3 and a tiny network: the pipeline's path, in about a minute."""
        return cls(
            out=out,
            cases=6,
            held_out=2,
            shape=(32, 32, 32),
            patch=16,
            base_filters=4,
            depth=2,
            epochs=2,
            patches_per_case=2,
        )


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run every stage; return a summary (paths and figures) that is also printed."""
    from brats.data import IngestConfig, ingest
    from brats.segment import SegmentConfig, segment
    from brats.synth import SynthConfig, generate_cohort, write_faulty_case
    from brats.training import TrainConfig, train

    out = os.path.abspath(config.out)
    paths = {
        name: os.path.join(out, name)
        for name in ("cohort", "normalized", "runs", "incoming", "nightly")
    }
    timings: dict[str, float] = {}

    began = time.perf_counter()
    synth = SynthConfig(shape=config.shape, seed=config.seed)
    ids = generate_cohort(paths["cohort"], config.cases, synth)
    write_faulty_case(paths["cohort"], "Broken_truncated", "truncated_gzip", synth)
    write_faulty_case(paths["cohort"], "Broken_missing", "missing_modality", synth)
    # Held-out cases: later indices of the same generator, never seen in training.
    generate_cohort(paths["incoming"], config.held_out, synth, start=1001)
    write_faulty_case(paths["incoming"], "Broken_nan", "nan", synth)
    timings["generate_s"] = time.perf_counter() - began
    log.info("generated %d + %d cases at %s", len(ids), config.held_out, config.shape)

    init_ray(num_cpus=config.num_cpus)
    began = time.perf_counter()
    ingested = ingest(IngestConfig(cohort=paths["cohort"], out=paths["normalized"]))
    timings["ingest_s"] = time.perf_counter() - began

    began = time.perf_counter()
    trained = train(
        TrainConfig(
            data=paths["normalized"],
            storage=paths["runs"],
            name="demo",
            num_workers=config.num_workers,
            epochs=config.epochs,
            batch_size=2,
            patch_size=(config.patch,) * 3,
            patches_per_case=config.patches_per_case,
            learning_rate=config.learning_rate,
            base_filters=config.base_filters,
            depth=config.depth,
            val_fraction=0.15,
            seed=config.seed,
        )
    )
    timings["train_s"] = time.perf_counter() - began

    began = time.perf_counter()
    assert trained.model is not None
    segmented = segment(
        SegmentConfig(cohort=paths["incoming"], model=trained.model, out=paths["nightly"])
    )
    timings["segment_s"] = time.perf_counter() - began

    with open(os.path.join(paths["nightly"], "summary.json")) as fh:
        summary = json.load(fh)
    dice = {
        region: round(stats["dice"]["mean"], 3)
        for region, stats in summary["regions"].items()
        if stats and stats.get("dice")
    }
    return {
        "out": out,
        "ingest": {
            "manifest": ingested.manifest_uri,
            "ok": ingested.n_ok,
            "failed": [f["reason"] for f in ingested.manifest["failures"]],
        },
        "train": {
            "model": trained.model,
            "epochs": len(trained.history),
            "best_val": {k: round(v, 3) for k, v in trained.best.items() if k.startswith("val_")},
        },
        "segment": {
            "masks": os.path.join(paths["nightly"], "masks"),
            "report": os.path.join(paths["nightly"], "report.html"),
            "done": segmented.done,
            "failed": [f["error"] for f in segmented.failed],
        },
        "held_out_mean_dice": dice,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brats.demo", description=__doc__)
    parser.add_argument("--out", default="demo-out")
    parser.add_argument("--small", action="store_true", help="reduced size (for CI)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    config = DemoConfig.small(args.out) if args.small else DemoConfig(out=args.out)
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    if args.num_cpus:
        config = replace(config, num_cpus=args.num_cpus)
    log.info("demo settings: %s", json.dumps(asdict(config)))
    summary = run_demo(config)
    print(json.dumps(summary, indent=2))
    print(
        f"\nmasks: {summary['segment']['masks']}\nreport: {summary['segment']['report']}\n"
        f"held-out mean Dice: {summary['held_out_mean_dice']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
