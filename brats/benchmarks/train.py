"""Training benchmark: the Ray Train loop vs the same loop without Ray, and 2-worker scaling.

All four run in one invocation on the same normalized cohort, model and patch size:

* ``plain``: :func:`brats.train.worker.build_step` under TensorFlow's default strategy (one
  replica, no Ray), fed by :func:`brats.train.batches.patch_batches` from rows held in memory,
  on as many TensorFlow intra-op threads as the local Ray has CPUs;
* ``ray_1``: :func:`brats.train.job.train` with one worker reserving every CPU of the local
  Ray, so it computes on as many TensorFlow threads as the plain loop (a worker sizes its
  pool to the CPUs it holds);
* ``ray_1_nice15``: the same at niceness 15, where Ray starts its worker processes
  (``--worker-niceness 15``; the workers compute at 0 by default);
* ``ray_2``: the same as ``ray_1`` with two workers (``MultiWorkerMirroredStrategy``), each
  holding half.

The plain loop and the two 1-worker runs alternate for ``rounds`` rounds (the two Ray runs in
turn first), and the plain loop runs once more at the end, so drift in this machine's speed
lands on every side of the ratios; ``ray_2`` runs last. Figures are training samples
(patches) per second, the median over every run's epochs after its first (which traces the
step), and the share of each epoch spent inside the step (the rest is waiting for data:
reading, cutting patches).

Targets: ``ray_1 / plain >= 0.90``; ``ray_1_nice15 / plain`` is what the workers' niceness
is worth; ``ray_2 / ray_1`` is the scaling on this machine (two workers share its cores, so
~1 means no loss, not a speed-up).
"""

from __future__ import annotations

import functools
import statistics
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from brats.options import option
from brats.resources import Replicas
from brats.runtime import init_ray


@dataclass(frozen=True)
class TrainBenchmark:
    """``jobs/benchmark.py train``."""

    cases: int = option(6, help="cases to generate")
    shape: tuple[int, int, int] = option((64, 64, 64), metavar=("D", "H", "W"), help="grid")
    patch: int = option(32, help="cube side of the training patch")
    base_filters: int = option(16, help="filters of the U-Net's top level")
    depth: int = option(4, help="the U-Net's poolings")
    batch: int = option(2, help="patches per step")
    epochs: int = option(4, help="epochs of each run (the first traces the step)")
    # Epochs long enough that their rate is the step's, not Ray Train's per-epoch report.
    steps: int = option(40, help="steps per epoch per worker")
    rounds: int = option(2, help="rounds of plain loop, Ray Train at niceness 0 and at 15")
    num_cpus: int | None = option(None, help="CPUs for the local Ray (default: all cores)")


def _plain(
    config: Any, cohort: Any, epochs: int, steps: int, threads: int
) -> list[dict[str, float]]:
    import tensorflow as tf

    from brats.ingest.shards import read_prepared
    from brats.train.batches import patch_batches
    from brats.train.schedule import step_progress
    from brats.train.worker import build_step, train_epoch

    ds, _ = read_prepared(cohort)
    rows = ds.take_all()  # in memory before the clock starts: only the loop is timed
    if tf.config.threading.get_intra_op_parallelism_threads() != threads:  # as ray_1's worker
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    _, _, train_step = build_step(config, tf.distribute.get_strategy())
    rates = []
    for epoch in range(epochs):
        batches = patch_batches(iter(rows), config, steps, (config.seed, epoch, 0))
        at = functools.partial(step_progress, epoch, steps=steps, epochs=epochs)
        trained = train_epoch(train_step, batches, at)
        seconds = trained["train_seconds"]
        rates.append(
            {
                "samples_per_s": steps * config.batch_size / seconds,
                "step_share": trained["step_seconds"] / seconds,
            }
        )
    return rates


def _ray(config: Any) -> list[dict[str, float]]:
    from brats.train.job import train

    result = train(config)
    return [
        {
            "samples_per_s": float(row["samples_per_s"]),
            "step_share": float(row["step_seconds"]) / float(row["train_seconds"]),
        }
        for row in result.history
    ]


def _steady(epochs: list[dict[str, float]], key: str) -> float:
    """Median over epochs (callers drop each run's first, which traces the step)."""
    return statistics.median(e[key] for e in epochs)


def run(args: TrainBenchmark) -> dict[str, Any]:
    from dataclasses import replace

    import ray

    from brats.devtools.synth import SynthConfig, generate_cohort
    from brats.ingest.job import IngestConfig, ingest
    from brats.storage import resolve
    from brats.train.config import TrainConfig
    from brats.train.worker import compute_threads

    init_ray(num_cpus=args.num_cpus)
    cores = float(ray.cluster_resources()["CPU"])
    with tempfile.TemporaryDirectory(prefix="brats-bench-train-") as tmp:
        generate_cohort(f"{tmp}/raw", args.cases, SynthConfig(shape=args.shape, seed=0))
        ingest(IngestConfig(cohort=f"{tmp}/raw", out=f"{tmp}/cohort"))
        base = TrainConfig(
            data=f"{tmp}/cohort",
            storage=f"{tmp}/runs",
            name="ray-1",
            num_workers=Replicas(1, 1),
            cpus_per_worker=cores,
            epochs=args.epochs,
            batch_size=args.batch,
            patch_size=(args.patch,) * 3,
            steps_per_epoch=args.steps,
            base_filters=args.base_filters,
            depth=args.depth,
            val_fraction=0.0,
        )
        cohort = resolve(f"{tmp}/cohort")
        threads = compute_threads(cores)
        runs = {"ray_1": base, "ray_1_nice15": replace(base, worker_niceness=15)}
        rates: dict[str, list[dict[str, float]]] = {"plain": [], **{key: [] for key in runs}}
        for round_ in range(args.rounds):
            rates["plain"] += _plain(base, cohort, args.epochs, args.steps, threads)[1:]
            for key in sorted(runs, reverse=bool(round_ % 2)):
                rates[key] += _ray(replace(runs[key], name=f"{key}-{round_}"))[1:]
        rates["plain"] += _plain(base, cohort, args.epochs, args.steps, threads)[1:]
        rates["ray_2"] = _ray(
            replace(base, name="ray-2", num_workers=Replicas(2, 2), cpus_per_worker=cores / 2)
        )[1:]
    steady = {k: _steady(v, "samples_per_s") for k, v in rates.items()}
    step_share = {k: _steady(v, "step_share") for k, v in rates.items()}
    overhead = steady["ray_1"] / steady["plain"]
    nice15 = steady["ray_1_nice15"] / steady["plain"]
    scaling = steady["ray_2"] / steady["ray_1"]
    print(
        f"train {args.patch}^3 patches, batch {args.batch}, base filters {args.base_filters}, "
        f"{args.rounds} rounds: plain {steady['plain']:.2f}, Ray Train 1 worker "
        f"{steady['ray_1']:.2f} (at niceness 15: {steady['ray_1_nice15']:.2f}), 2 workers "
        f"{steady['ray_2']:.2f} samples/s -> Ray/plain {overhead:.2f} (target 0.90; at "
        f"niceness 15 {nice15:.2f}), 2 workers/1 worker {scaling:.2f}; share of the epoch "
        "spent in the step: " + ", ".join(f"{k} {v:.2f}" for k, v in step_share.items())
    )
    return {
        "samples_per_s": {k: round(v, 3) for k, v in steady.items()},
        "step_share": {k: round(v, 3) for k, v in step_share.items()},
        "per_epoch": {
            k: [{m: round(x, 3) for m, x in e.items()} for e in v] for k, v in rates.items()
        },
        "ray_over_plain": round(overhead, 3),
        "ray_at_nice15_over_plain": round(nice15, 3),
        "two_over_one_worker": round(scaling, 3),
        "targets": {"ray_over_plain": 0.9},
        "setup": asdict(args),
    }
