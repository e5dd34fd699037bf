"""The demo: the whole pipeline on a generated cohort with a local Ray (``make demo``).

Stages, each writing under ``--out`` (default ``demo-out/``):

1. ``cohort/``: a seeded BraTS-2020-style cohort built on the MNI152 template, plus two broken
   cases (a truncated gzip, a missing modality) to show that bad input is reported and the
   others go on;
2. ``normalized/``: the Ray Data ingest job's Parquet shards and ``manifest.json``.

``--small`` runs a reduced size (CI runs it so the demo's path stays green).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass

from brats.runtime import init_ray, setup_logging

log = logging.getLogger("brats.demo")


@dataclass(frozen=True)
class DemoConfig:
    out: str = "demo-out"
    cases: int = 24
    shape: tuple[int, int, int] = (96, 96, 64)
    seed: int = 0
    num_cpus: int | None = None

    @classmethod
    def small(cls, out: str) -> DemoConfig:
        return cls(out=out, cases=6, shape=(48, 48, 32))


def run_demo(config: DemoConfig) -> dict[str, object]:
    """Run every stage; return a summary (paths and figures) that is also printed."""
    from brats.data import IngestConfig, ingest
    from brats.synth import SynthConfig, generate_cohort, write_faulty_case

    out = os.path.abspath(config.out)
    cohort = os.path.join(out, "cohort")
    summary: dict[str, object] = {"out": out}

    began = time.perf_counter()
    synth = SynthConfig(shape=config.shape, seed=config.seed)
    ids = generate_cohort(cohort, config.cases, synth)
    write_faulty_case(cohort, "Broken_truncated", "truncated_gzip", synth)
    write_faulty_case(cohort, "Broken_missing", "missing_modality", synth)
    log.info(
        "generated %d cases (+2 broken) at %s in %.1f s",
        len(ids),
        "x".join(map(str, config.shape)),
        time.perf_counter() - began,
    )
    summary["cohort"] = cohort

    init_ray(num_cpus=config.num_cpus)
    result = ingest(IngestConfig(cohort=cohort, out=os.path.join(out, "normalized")))
    summary["ingest"] = {
        "manifest": result.manifest_uri,
        "ok": result.n_ok,
        "failed": [f["reason"] for f in result.manifest["failures"]],
        "seconds": round(result.seconds, 1),
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brats.demo", description=__doc__)
    parser.add_argument("--out", default="demo-out")
    parser.add_argument("--small", action="store_true", help="reduced size (for CI)")
    parser.add_argument("--num-cpus", type=int, default=None)
    args = parser.parse_args(argv)
    setup_logging()
    config = DemoConfig.small(args.out) if args.small else DemoConfig(out=args.out)
    if args.num_cpus:
        config = DemoConfig(**{**config.__dict__, "num_cpus": args.num_cpus})
    summary = run_demo(config)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
