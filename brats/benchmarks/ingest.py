"""Ingest benchmark: Ray Data read+validate+normalize vs one process, and vs the seed way.

All of it runs on the same cases in one invocation, interleaved round by round, so machine
noise hits every variant alike. Figures (cases/s) are medians over rounds.

* ``one_process``: :func:`brats.io.nifti.read_case` +
  :func:`brats.ingest.prepare.prepare_case`, case after case, in this process.
* ``readers``: the ingest job's read stage (:func:`brats.ingest.rows.read_cohort` through its
  pool of reader actors, one per core); each case's result is reduced to a few numbers inside
  the worker, as the job reduces it to a shard, so only the work counts.
* ``tasks``: the same stage with one Ray task per case (what segmentation uses, where the
  model sets the pace), to show what the reader pool buys.
* ``processes``: ``one_process``'s loop split over one plain process per core (a
  ``ProcessPoolExecutor`` started before the clock): what this machine's cores give without
  Ray, the ceiling for the reader pool's efficiency. Timed over N and 4N cases like Ray.
* ``seed``: the ``seed`` preset's original preprocessing: ``nibabel.load(...).get_fdata()``
  (float64) and a min-max scaler fitted per slice (``reshape(-1, depth)``), on the same
  modalities plus the seg.

The parallel variants run over N and 4N cases (the cohort read four times over): the rate
between the two, ``3N / (t(4N) - t(N))``, is the steady rate with the fixed start-up of a
Dataset execution (starting actors, planning) taken out; that start-up is reported apart.

Targets: ``readers / (cores * one_process) >= 0.85`` and ``one_process / seed >= 2``.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from brats.benchmarks.rates import marginal_rate
from brats.ingest.prepare import PreprocessConfig, prepare_case
from brats.ingest.rows import read_cohort
from brats.io.cases import Case, Discovery, discover
from brats.io.nifti import read_case
from brats.options import option
from brats.report.status import is_done
from brats.runtime import init_ray
from brats.storage import Location, resolve


@dataclass(frozen=True)
class IngestBenchmark:
    """``jobs/benchmark.py ingest``."""

    cohort: str | None = option(None, help="an existing cohort (default: generate one)")
    cases: int = option(16, help="cases to generate (N)")
    shape: tuple[int, int, int] = option((240, 240, 155), metavar=("D", "H", "W"), help="grid")
    rounds: int = option(3, help="rounds; figures are medians over them")
    num_cpus: int | None = option(None, help="CPUs for the local Ray (default: all cores)")


def _prepare_one(case: Case, loc: Location, config: PreprocessConfig) -> int:
    return int(prepare_case(read_case(case, loc, modalities=config.modalities), config).image.size)


def _one_process(cases: list[Case], loc: Location, config: PreprocessConfig) -> float:
    start = time.perf_counter()
    for case in cases:
        _prepare_one(case, loc, config)
    return time.perf_counter() - start


def _processes(pool: Any, cases: list[Case], loc: Location, config: PreprocessConfig) -> float:
    start = time.perf_counter()
    list(pool.map(functools.partial(_prepare_one, loc=loc, config=config), cases))
    return time.perf_counter() - start


def _minmax_per_slice(vol: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The ``seed`` preset's original scaling:
    ``MinMaxScaler().fit_transform(vol.reshape(-1, vol.shape[-1]))``."""
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


def _wait_for_idle_cpus(timeout_s: float = 60.0) -> None:
    """Let the previous run's actors go (Ray Data kills them after the Dataset is done) so a
    run never waits for CPUs the one before still holds."""
    import ray

    deadline = time.monotonic() + timeout_s
    total = ray.cluster_resources().get("CPU", 0.0)
    while ray.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
        time.sleep(0.05)


def _ray_data(
    loc: Location, config: PreprocessConfig, cases: list[Case], readers: int | None
) -> float:
    """Seconds to read ``cases`` through the read stage (``readers=None``: a task per case)."""
    _wait_for_idle_cpus()
    start = time.perf_counter()
    ds, _ = read_cohort(
        loc, config, discovery=Discovery(cases=cases), readers=readers, finish=_summarize
    )
    rows = ds.take_all()
    elapsed = time.perf_counter() - start
    done = sum(is_done(r["status"]) for r in rows)
    if done != len(cases):
        raise RuntimeError(f"the read stage prepared {done} of {len(cases)} cases")
    return elapsed


def run(args: IngestBenchmark) -> dict[str, Any]:
    import ray

    config = PreprocessConfig()
    with tempfile.TemporaryDirectory(prefix="brats-bench-ingest-") as tmp:
        if args.cohort:
            root = args.cohort
        else:
            from brats.devtools.synth import SynthConfig, generate_cohort

            root = tmp
            t0 = time.perf_counter()
            generate_cohort(root, args.cases, SynthConfig(shape=args.shape, seed=0))
            print(
                f"generated {args.cases} cases {tuple(args.shape)} in "
                f"{time.perf_counter() - t0:.1f} s"
            )
        loc = resolve(root)
        cases = discover(loc).cases
        init_ray(num_cpus=args.num_cpus or os.cpu_count())
        cores = int(ray.cluster_resources().get("CPU", 1))
        # Tasks run first in a round: after an actor pool is gone Ray needs a moment to start
        # idle workers again, which the one-process runs at the end of the round give it.
        variants = {"tasks": None, "readers": cores}
        for readers in variants.values():  # warm up workers and imports; not timed
            _ray_data(loc, config, cases, readers)
        _one_process(cases[:1], loc, config)
        pool = ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn"))
        _processes(pool, cases[:cores], loc, config)  # start the processes, import, warm up
        times: dict[str, list[float]] = {
            k: []
            for k in (
                *(f"{v}_{m}" for v in variants for m in ("n", "4n")),
                "one_process",
                "processes_n",
                "processes_4n",
                "seed",
            )
        }
        with pool:
            for r in range(args.rounds):
                for name, readers in variants.items():
                    times[f"{name}_n"].append(_ray_data(loc, config, cases, readers))
                    times[f"{name}_4n"].append(_ray_data(loc, config, cases * 4, readers))
                times["one_process"].append(_one_process(cases, loc, config))
                times["processes_n"].append(_processes(pool, cases, loc, config))
                times["processes_4n"].append(_processes(pool, cases * 4, loc, config))
                times["seed"].append(_seed_way(cases, config))
                print(
                    f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                )
    n = len(cases)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: n / med[k] for k in ("one_process", "seed")}
    startup: dict[str, float] = {}
    for name in (*variants, "processes"):
        rate[name], startup[name] = marginal_rate(
            n, med[f"{name}_n"], med[f"{name}_4n"], f"ingest ({name}); raise --cases or --shape"
        )
        rate[f"{name}_end_to_end"] = 4 * n / med[f"{name}_4n"]
    efficiency = {
        k: rate[k] / (cores * rate["one_process"])
        for k in ("readers", "tasks", "processes", "readers_end_to_end", "tasks_end_to_end")
    }
    vs_seed = rate["one_process"] / rate["seed"]
    figures = {
        "cases": n,
        "shape": list(args.shape) if not args.cohort else None,
        "cores": cores,
        "modalities": list(config.modalities),
        "seconds": {k: round(v, 3) for k, v in med.items()},
        "cases_per_s": {k: round(v, 3) for k, v in rate.items()},
        "startup_s": {k: round(v, 2) for k, v in startup.items()},
        "parallel_efficiency": round(efficiency["readers"], 3),
        "parallel_efficiency_by_variant": {k: round(v, 3) for k, v in efficiency.items()},
        # What Ray costs against the same work in plain processes on the same cores.
        "readers_over_processes": round(rate["readers"] / rate["processes"], 3),
        "speedup_per_core_vs_seed": round(vs_seed, 2),
        "targets": {"parallel_efficiency": 0.85, "speedup_per_core_vs_seed": 2.0},
    }
    print(
        f"ingest: one process {rate['one_process']:.2f} cases/s; on {cores} cores, reader pool "
        f"{rate['readers']:.2f} cases/s -> parallel efficiency {efficiency['readers']:.2f} "
        f"(target 0.85; {efficiency['readers_end_to_end']:.2f} over {4 * n} cases with its "
        f"{startup['readers']:.1f} s start-up), a task per case {rate['tasks']:.2f} cases/s -> "
        f"{efficiency['tasks']:.2f}; plain processes (no Ray) -> "
        f"{efficiency['processes']:.2f} (reader pool / processes "
        f"{rate['readers'] / rate['processes']:.2f}); the seed way {rate['seed']:.2f} cases/s -> "
        f"{vs_seed:.1f}x per core (target 2x)"
    )
    return figures
