"""Ingest benchmark: Ray Data read+validate+normalize vs one process, and vs the seed's way.

All three run on the same cases in one invocation, interleaved round by round, so machine
noise hits them alike. Figures (cases/s) are medians over rounds.

* ``one_process``: :func:`brats.nifti.read_case` + :func:`brats.preprocess.prepare_case`, case
  after case, in this process.
* ``ray_data``: the ingest pipeline's read stage (:func:`brats.data.read_cohort`) on every core;
  each case's result is reduced to a few numbers inside the workers, so only the work counts.
* ``seed``: the seed repo's way: ``nibabel.load(...).get_fdata()`` (float64) and a min-max
  scaler fitted per slice (``reshape(-1, depth)``), on the same modalities plus the seg.

Targets: ``ray_data / (cores * one_process) >= 0.85`` and ``one_process / seed >= 2``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from brats.cases import Case, discover
from brats.data import read_cohort
from brats.nifti import read_case
from brats.preprocess import PreprocessConfig, prepare_case
from brats.runtime import init_ray
from brats.storage import Location, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cohort", default=None, help="existing cohort (default: generate one)")
    parser.add_argument("--cases", type=int, default=8, help="cases to generate")
    parser.add_argument("--shape", type=int, nargs=3, default=[240, 240, 155])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=None, help="default: all cores")


def _one_process(cases: list[Case], loc: Location, config: PreprocessConfig) -> float:
    start = time.perf_counter()
    for case in cases:
        prepare_case(read_case(case, loc, modalities=config.modalities), config)
    return time.perf_counter() - start


def _minmax_per_slice(vol: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The seed's ``MinMaxScaler().fit_transform(vol.reshape(-1, vol.shape[-1]))``."""
    flat = vol.reshape(-1, vol.shape[-1])
    lo = flat.min(axis=0)
    span = flat.max(axis=0) - lo
    span[span == 0] = 1.0  # sklearn leaves constant columns unscaled the same way
    return ((flat - lo) / span).reshape(vol.shape)


def _seed_way(cases: list[Case], config: PreprocessConfig) -> float:
    import nibabel as nib

    start = time.perf_counter()
    for case in cases:
        channels = [
            _minmax_per_slice(
                np.asarray(nib.Nifti1Image.from_filename(case.images[m]).get_fdata(), np.float64)
            )
            for m in config.modalities
        ]
        np.stack(channels, axis=3)
        if case.seg is not None:
            mask = nib.Nifti1Image.from_filename(case.seg).get_fdata().astype(np.uint8)
            mask[mask == 4] = 3
    return time.perf_counter() - start


def _summarize(row: dict[str, Any]) -> dict[str, Any]:
    image = row["image"]
    return {"case_id": row["case_id"], "status": row["status"], "voxels": int(image.size)}


def _ray_data(loc: Location, config: PreprocessConfig) -> tuple[float, int]:
    start = time.perf_counter()
    ds, _ = read_cohort(loc, config)
    rows = ds.map(_summarize).take_all()
    elapsed = time.perf_counter() - start
    return elapsed, sum(r["status"] == "ok" for r in rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    config = PreprocessConfig()
    with tempfile.TemporaryDirectory(prefix="brats-bench-ingest-") as tmp:
        if args.cohort:
            root = args.cohort
        else:
            from brats.synth import SynthConfig, generate_cohort

            root = tmp
            t0 = time.perf_counter()
            generate_cohort(root, args.cases, SynthConfig(shape=tuple(args.shape), seed=0))
            print(
                f"generated {args.cases} cases {tuple(args.shape)} in "
                f"{time.perf_counter() - t0:.1f} s"
            )
        loc = resolve(root)
        cases = discover(loc).cases
        init_ray(num_cpus=args.num_cpus or os.cpu_count())
        cores = int(ray.cluster_resources().get("CPU", 1))
        _ray_data(loc, config)  # warm up workers and imports; not timed
        _one_process(cases[:1], loc, config)
        times: dict[str, list[float]] = {"one_process": [], "ray_data": [], "seed": []}
        for r in range(args.rounds):
            times["one_process"].append(_one_process(cases, loc, config))
            elapsed, ok = _ray_data(loc, config)
            if ok != len(cases):
                raise RuntimeError(f"ray_data prepared {ok} of {len(cases)} cases")
            times["ray_data"].append(elapsed)
            times["seed"].append(_seed_way(cases, config))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
    n = len(cases)
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    efficiency = rate["ray_data"] / (cores * rate["one_process"])
    vs_seed = rate["one_process"] / rate["seed"]
    figures = {
        "cases": n,
        "shape": list(args.shape) if not args.cohort else None,
        "cores": cores,
        "modalities": list(config.modalities),
        "cases_per_s": {k: round(v, 3) for k, v in rate.items()},
        "parallel_efficiency": round(efficiency, 3),
        "speedup_per_core_vs_seed": round(vs_seed, 2),
        "targets": {"parallel_efficiency": 0.85, "speedup_per_core_vs_seed": 2.0},
    }
    print(
        f"ingest: one process {rate['one_process']:.2f} cases/s, Ray Data on {cores} cores "
        f"{rate['ray_data']:.2f} cases/s -> parallel efficiency {efficiency:.2f} (target 0.85); "
        f"seed's way {rate['seed']:.2f} cases/s -> {vs_seed:.1f}x per core (target 2x)"
    )
    return figures
