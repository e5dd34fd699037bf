"""Scale benchmark: segment then evaluate N tiny cases for two N, and the report at 10,000.

One invocation, on a local Ray, in this (the driver) process:

* a cohort of N cases of 16 x 16 x 16 voxels (``--cases 100 1000``: the small N first), made
  of a few :mod:`brats.devtools.synth` cases written again under new case ids, and an
  untrained 4-filter U-Net on 16^3 windows (:func:`brats.io.artifact.save_artifact`). The
  cases are tiny so that what grows with N (listing, records, the report, Ray Data's plans
  and bookkeeping) shows, not the model;
* per N: :func:`brats.segment.job.segment` then :func:`brats.evaluate.job.evaluate` of its
  masks against the cohort's segmentations, each timed whole (its report included), then
  :func:`brats.report.records.read_records` and :func:`brats.report.write.write_report` on
  the evaluation's N records, timed on their own (no thumbnails: their cost is fixed);
* :func:`~brats.report.write.write_report` on ``--report-records`` (10,000) records built in
  memory, no job run, so the report's cost there is measured, not extrapolated.

A warm-up job pair on 4 cases (``--warmup-cases``) runs first, so imports and the first
start of Ray's workers are in no figure.

Figures per N: seconds per case (segment, evaluate, together), the driver's CPU seconds
(``time.process_time``: its every thread, Ray Data's scheduling included; unlike wall time,
barely moved by other load on the machine), the size of ``report.html``, the driver's memory
and its storage listing calls. Memory is read from ``/proc/self/status``: ``VmRSS`` (resident
now) after each job, and sampled every 20 ms while the N's jobs run (``sampled_peak``), and
``VmHWM`` (the peak so far, which only rises, like ``ru_maxrss``; the kernel batches its
counters per thread, so it is reported as at least the sampled peak) after each N. The growth
printed is ``sampled_peak`` at the large N less at the small N: ``VmHWM`` would hide growth
that stays under an earlier peak (the warm-up's, say). Only the driver is measured: Ray's
workers are other processes.

Listing calls are counted in the driver by wrapping the local filesystem's ``ls``, ``find``,
``glob`` and ``exists`` while a job runs (:class:`~brats.benchmarks.probes.ListingCounter`).
A call made inside another (``find`` walks with ``ls``) counts as a folder read, not a call;
``s3_list_pages`` is what the same calls would cost on S3 (``ceil(entries / 1000)`` pages
each, at least one).

Printed ratios: seconds per case at the large N over the small N (target <= 1.1; fixed costs
per job make it fall below 1, so the marginal seconds per case, ``(t2 - t1) / (N2 - N1)``, are
given too) and the driver's peak growth in MB (target <= 100).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np

from brats.benchmarks.probes import ListingCounter, RssSampler, memory_mb
from brats.options import option
from brats.runtime import init_ray

SHAPE: Final = (16, 16, 16)
TARGET_TIME_RATIO: Final = 1.1
"""Seconds per case at the large N over the small N must not exceed this."""
TARGET_RSS_GROWTH_MB: Final = 100.0
"""The driver's peak may grow by at most this much from the small N to the large N."""
DISTINCT_CASES: Final = 4
"""Synthetic cases generated; the cohort repeats their files under new ids."""
WARMUP_CASES: Final = 4


@dataclass(frozen=True)
class ScaleBenchmark:
    """``jobs/benchmark.py scale``."""

    cases: tuple[int, int] = option(
        (100, 1000), metavar=("N1", "N2"), help="the two cohort sizes, smaller first"
    )
    report_records: int = option(10000, help="records built in memory to time the report on")
    warmup_cases: int = option(WARMUP_CASES, help="cases of the untimed first job pair (0: none)")
    num_cpus: int | None = option(None, help="CPUs for the local Ray (default: all cores)")
    seed: int = option(0, help="seed of the synthetic cases, the model and the records")

    def __post_init__(self) -> None:
        small, large = self.cases
        if not 1 <= small < large:
            raise ValueError(f"cases must be two sizes, smaller first, got {self.cases}")
        if self.report_records < 1 or self.warmup_cases < 0:
            raise ValueError("report_records must be at least 1, warmup_cases at least 0")


# --- measuring -------------------------------------------------------------------------


@contextmanager
def timed(
    into: dict[str, float], key: str, clock: Callable[[], float] = time.perf_counter
) -> Iterator[None]:
    """Adds the seconds the block took on ``clock`` (wall time; ``time.process_time``: this
    process's CPU time, every thread's) to ``into[key]``."""
    began = clock()
    try:
        yield
    finally:
        into[key] = into.get(key, 0.0) + clock() - began


# --- inputs ----------------------------------------------------------------------------


def write_cohort(root: str, n: int, seed: int) -> list[str]:
    """``n`` cases ``scale00000...`` under ``root``, BraTS 2020 names, 16^3 voxels, with
    segmentations: the files of :data:`DISTINCT_CASES` synthetic cases, in turn."""
    from brats.devtools.synth import SynthConfig, case_files, generate_case

    config = SynthConfig(shape=SHAPE, seed=seed)
    templates = []
    for index in range(1, DISTINCT_CASES + 1):
        case = generate_case(index, config)
        files = case_files(case, config, seg=True)
        templates.append({name[len(case.case_id) :]: data for name, data in files.items()})
    ids = [f"scale{i:05d}" for i in range(n)]
    for i, case_id in enumerate(ids):
        folder = os.path.join(root, case_id)
        os.makedirs(folder)
        for suffix, data in templates[i % DISTINCT_CASES].items():
            with open(os.path.join(folder, case_id + suffix), "wb") as fh:
                fh.write(data)
    return ids


def write_model(where: str, seed: int) -> None:
    """An untrained 4-filter, depth-2 U-Net on 16^3 windows, saved as an artifact (run in a
    Ray task, so that the driver, like a job's, never loads TensorFlow)."""
    import keras

    from brats.io.artifact import save_artifact
    from brats.io.model_card import ModelInfo
    from brats.network.unet import UNetConfig, build_unet

    keras.utils.set_random_seed(seed)
    unet = UNetConfig(base_filters=4, depth=2)
    save_artifact(build_unet(unet), ModelInfo(unet=unet, patch_size=SHAPE), where)


def synthetic_records(n: int, seed: int) -> list[Any]:
    """``n`` evaluation-like records with every metric, seeded; every 100th one failed."""
    from brats.report.records import CaseFailure, CaseRecord
    from brats.report.status import DONE
    from brats.volume.metrics import METRIC_KEYS

    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(n, len(METRIC_KEYS)))
    records = []
    for i in range(n):
        case_id = f"synth{i:06d}"
        if i % 100 == 99:
            failure = CaseFailure(f"{case_id}_seg.nii.gz", "truncated gzip", f"case {case_id}")
            records.append(CaseRecord.failed(case_id, failure, model_version="bench", settings={}))
            continue
        metrics = {
            k: float(v) * (100.0 if "hd95" in k else 1.0)
            for k, v in zip(METRIC_KEYS, values[i], strict=True)
        }
        records.append(
            CaseRecord(
                case_id=case_id,
                status=DONE,
                model_version="bench",
                settings={},
                created="2026-01-01T00:00:00+00:00",
                metrics=metrics,
                region_volumes_ml={"WT": 10.0, "TC": 4.0, "ET": 1.0},
            )
        )
    return records


# --- the runs --------------------------------------------------------------------------


def run_jobs(tmp: str, name: str, n: int, model: str, seed: int) -> dict[str, Any]:
    """Segment then evaluate a fresh ``n``-case cohort under ``tmp/name``; the figures."""
    from brats.evaluate.job import EvaluateConfig, evaluate
    from brats.segment.job import SegmentConfig, segment
    from brats.segment.predictor import PredictSettings

    root = os.path.join(tmp, name)
    cohort, seg_out, eval_out = (os.path.join(root, p) for p in ("cohort", "seg", "eval"))
    write_cohort(cohort, n, seed)
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    listing = {"segment": ListingCounter(), "evaluate": ListingCounter()}
    rss: dict[str, float] = {}

    @contextmanager
    def measured(job: str) -> Iterator[None]:
        with listing[job], timed(wall, job), timed(cpu, job, time.process_time):
            yield

    with RssSampler() as sampler:
        with measured("segment"):
            predict = PredictSettings(no_tta=True)
            seg = segment(SegmentConfig(cohort=cohort, model=model, out=seg_out, predict=predict))
        rss["after_segment"] = sampler.read()
        with measured("evaluate"):
            masks = os.path.join(seg_out, "masks")
            scored = evaluate(EvaluateConfig(pred=masks, truth=cohort, out=eval_out))
        rss["after_evaluate"] = sampler.read()
    if seg.failed or seg.done != n or scored.failed or scored.done != n:
        raise RuntimeError(f"{n} cases: segment {seg.done} done, evaluate {scored.done} done")
    return {
        "cases": n,
        "seconds": _rounded(wall),
        "driver_cpu_s": _rounded(cpu),
        "rss_mb": {**rss, "sampled_peak": sampler.peak},
        "listing": {k: v.figures() for k, v in listing.items()},
        "report": {
            "segment_html_bytes": os.path.getsize(seg.report["report.html"]),
            "evaluate_html_bytes": os.path.getsize(scored.report["report.html"]),
            **time_report_of(eval_out, os.path.join(root, "report")),
        },
    }


def time_report_of(out: str, scratch: str) -> dict[str, Any]:
    """Seconds to read the records under ``out``, then to write their report (no
    thumbnails) under ``scratch``, and the page's size."""
    from brats.report.records import read_records
    from brats.storage import resolve

    seconds: dict[str, float] = {}
    with timed(seconds, "read_records_s"):
        records = list(read_records(resolve(out)).values())
    return {"records": len(records), **time_report(records, scratch), **_rounded(seconds)}


def time_report(records: list[Any], scratch: str) -> dict[str, Any]:
    """Seconds :func:`~brats.report.write.write_report` takes on ``records`` (no thumbnails),
    and the size of its ``report.html`` and ``report.csv``."""
    from brats.report.write import write_report
    from brats.storage import resolve

    seconds: dict[str, float] = {}
    with timed(seconds, "write_report_s"):
        written = write_report(records, resolve(scratch))
    return {
        **_rounded(seconds),
        "html_bytes": os.path.getsize(written["report.html"]),
        "csv_bytes": os.path.getsize(written["report.csv"]),
    }


def report_in_memory(n: int, seed: int, scratch: str) -> dict[str, Any]:
    """:func:`time_report` on ``n`` records built in memory, with the driver's memory: what
    the records hold (``VmRSS`` after building them less before) and the most the report
    adds on top while it is written (sampled ``VmRSS``)."""
    before = memory_mb()["rss"]
    records = synthetic_records(n, seed)
    built = memory_mb()["rss"]
    with RssSampler() as sampler:
        figures = time_report(records, scratch)
    return {
        "records": len(records),
        **figures,
        "records_mb": round(built - before, 1),
        "report_peak_over_records_mb": round(sampler.peak - built, 1),
    }


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in seconds.items()}


def scaling(small: dict[str, Any], large: dict[str, Any]) -> dict[str, Any]:
    """Seconds per case at each N, their ratio, and the marginal seconds per case."""
    n1, n2 = small["cases"], large["cases"]
    per_case: dict[str, dict[str, float]] = {}
    ratio: dict[str, float] = {}
    marginal: dict[str, float] = {}
    for stage in ("segment", "evaluate", "together"):
        t1, t2 = (_stage_seconds(step, stage) for step in (small, large))
        per_case[stage] = {str(n1): round(t1 / n1, 4), str(n2): round(t2 / n2, 4)}
        ratio[stage] = round((t2 / n2) / (t1 / n1), 3)
        marginal[stage] = round((t2 - t1) / (n2 - n1), 4)
    cpu = {n: sum(step["driver_cpu_s"].values()) / n for n, step in ((n1, small), (n2, large))}
    return {
        "seconds_per_case": per_case,
        "per_case_ratio": ratio,
        "marginal_seconds_per_case": marginal,
        "driver_cpu_s_per_case": {str(n): round(v, 4) for n, v in cpu.items()},
        "driver_cpu_ratio": round(cpu[n2] / cpu[n1], 3),
    }


def _stage_seconds(step: dict[str, Any], stage: str) -> float:
    seconds = step["seconds"]
    return float(
        seconds["segment"] + seconds["evaluate"] if stage == "together" else seconds[stage]
    )


def run(args: ScaleBenchmark) -> dict[str, Any]:
    import ray

    init_ray(num_cpus=args.num_cpus)
    small_n, large_n = args.cases
    with tempfile.TemporaryDirectory(prefix="brats-bench-scale-") as tmp:
        model = os.path.join(tmp, "model")
        ray.get(ray.remote(num_cpus=1)(write_model).remote(model, args.seed))
        warmup: dict[str, float] = {}
        with timed(warmup, "s"):
            if args.warmup_cases:
                run_jobs(tmp, "warmup", args.warmup_cases, model, args.seed)
        steps, peaks = {}, {}
        for n in (small_n, large_n):
            steps[n] = run_jobs(tmp, f"n{n}", n, model, args.seed)
            peaks[n] = steps[n]["rss_mb"]["sampled_peak"]
            # The kernel's high-water mark; its counters are batched per thread, so it can lag
            # a sampled VmRSS by a little: the peak is at least what was sampled.
            steps[n]["peak_rss_mb"] = max(memory_mb()["peak"], peaks[n])
        at_scale = report_in_memory(args.report_records, args.seed, os.path.join(tmp, "big"))
    figures = {
        "shape": list(SHAPE),
        "warmup_s": round(warmup["s"], 1),
        "steps": {str(n): step for n, step in steps.items()},
        **scaling(steps[small_n], steps[large_n]),
        "rss_growth_mb": round(peaks[large_n] - peaks[small_n], 1),
        "report_in_memory": at_scale,
        "targets": {"per_case_ratio": TARGET_TIME_RATIO, "rss_growth_mb": TARGET_RSS_GROWTH_MB},
        "setup": asdict(args),
    }
    figures["meets_targets"] = (
        figures["per_case_ratio"]["together"] <= TARGET_TIME_RATIO
        and figures["rss_growth_mb"] <= TARGET_RSS_GROWTH_MB
    )
    _print(figures, small_n, large_n)
    return figures


def _print(figures: dict[str, Any], small_n: int, large_n: int) -> None:
    per_case, ratio = figures["seconds_per_case"], figures["per_case_ratio"]
    for stage in ("segment", "evaluate", "together"):
        print(
            f"scale {stage}: {per_case[stage][str(small_n)]:.4f} s/case at {small_n}, "
            f"{per_case[stage][str(large_n)]:.4f} at {large_n} -> {ratio[stage]:.3f} "
            f"(target <= {TARGET_TIME_RATIO}); marginal "
            f"{figures['marginal_seconds_per_case'][stage]:.4f} s/case"
        )
    for n in (small_n, large_n):
        step = figures["steps"][str(n)]
        report, listing = step["report"], step["listing"]
        print(
            f"scale {n} cases: driver peak {step['rss_mb']['sampled_peak']:.0f} MB; report.html "
            f"{report['evaluate_html_bytes'] / 1e3:.0f} kB, read records "
            f"{report['read_records_s']:.2f} s, write report {report['write_report_s']:.2f} s; "
            f"listing calls segment {listing['segment']['calls']}, "
            f"evaluate {listing['evaluate']['calls']}"
        )
    cpu, big = figures["driver_cpu_s_per_case"], figures["report_in_memory"]
    print(
        f"scale: driver CPU {cpu[str(small_n)]:.4f} s/case at {small_n}, "
        f"{cpu[str(large_n)]:.4f} at {large_n} -> {figures['driver_cpu_ratio']:.3f}; "
        f"driver peak grew {figures['rss_growth_mb']:.1f} MB from {small_n} to "
        f"{large_n} cases (target <= {TARGET_RSS_GROWTH_MB:.0f}); report on {big['records']} "
        f"records in memory: {big['write_report_s']:.2f} s, report.html "
        f"{big['html_bytes'] / 1e3:.0f} kB"
    )
