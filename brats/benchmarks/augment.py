"""Augmentation benchmark: augmented 128^3 four-channel patches per second per CPU core.

One invocation, on prepared full-size generated cases (240 x 240 x 155, cropped to the brain
and z-scored as the ingest job prepares them):

* ``in_process``: :func:`brats.train.batches.patch_batches` (the ``nnunet`` preset: class-
  balanced centres, nnU-Net's augmentation and the site transforms, batches one-hot and
  channels last, as a worker with ``--patch-stage worker`` trains on them) in this process,
  one core: the per-core rate;
* ``nnunet_only``: the same with nnU-Net's augmentation alone (``--augmentation nnunet``),
  for the site transforms' cost;
* ``flips``: the same with mirroring only (the ``seed`` preset), for the cost of the rest;
* ``ray_data``: the same patches from :func:`brats.train.stream.patch_dataset` (Ray Data
  ``flat_map`` tasks, one per case, on every core of the local Ray) through
  :func:`brats.train.stream.stream_batches`, as a worker with ``--patch-stage ray-data`` gets
  them; divided by the cores it had, against ``in_process``: what the stage keeps of a core.

The four alternate round by round; figures are medians over rounds. From the per-core rate,
the cores one GPU needs to train at a published step rate: NVIDIA's nnU-Net on an A100 with
AMP trains 6.74 volumes/s at 128^3, batch 2 (``--gpu-rate``).
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from brats.options import option
from brats.runtime import init_ray

A100_NNUNET_VOLUMES_PER_S = 6.74
"""NVIDIA's Deep Learning Examples, nnU-Net for PyTorch: 3D, A100 80 GB, AMP, batch 2."""


@dataclass(frozen=True)
class AugmentBenchmark:
    """``jobs/benchmark.py augment``."""

    cases: int = option(3, help="full-size cases to generate")
    shape: tuple[int, int, int] = option(
        (240, 240, 155), metavar=("D", "H", "W"), help="grid of the generated cases"
    )
    patch: int = option(128, help="cube side of the patch")
    patches: int = option(8, help="patches per case and round")
    rounds: int = option(3, help="rounds; each times all four variants")
    gpu_rate: float = option(A100_NNUNET_VOLUMES_PER_S, help="patches per second one GPU trains on")
    num_cpus: int | None = option(None, help="CPUs for the local Ray (default: all cores)")


def run(args: AugmentBenchmark) -> dict[str, Any]:
    import ray

    from brats.devtools.synth import SynthConfig, generate_cohort
    from brats.ingest.job import IngestConfig, ingest
    from brats.ingest.shards import read_prepared
    from brats.storage import resolve
    from brats.train.batches import patch_batches
    from brats.train.config import TrainConfig
    from brats.train.stream import patch_dataset, stream_batches

    init_ray(num_cpus=args.num_cpus)
    cores = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    with tempfile.TemporaryDirectory(prefix="brats-bench-augment-") as tmp:
        generate_cohort(f"{tmp}/raw", args.cases, SynthConfig(shape=args.shape, seed=0))
        ingest(IngestConfig(cohort=f"{tmp}/raw", out=f"{tmp}/cohort"))
        cohort = resolve(f"{tmp}/cohort")
        ds, manifest = read_prepared(cohort)
        rows = ds.take_all()
        share = sorted(c["case_id"] for c in manifest["cases"])
        shapes = [list(np.asarray(r["image"]).shape) for r in rows]

        def config(preset: str) -> TrainConfig:
            return TrainConfig(
                data="-",
                storage="-",
                preset=preset,
                patch_size=(args.patch,) * 3,
                patches_per_case=args.patches,
                batch_size=2,
            )

        nnunet, flips = config("nnunet"), config("seed")
        nnunet_only = replace(nnunet, augmentation="nnunet")
        n = args.patches * len(rows)
        steps = n // nnunet.batch_size

        def in_process(recipe: TrainConfig, epoch: int) -> float:
            began = time.perf_counter()
            for _ in patch_batches(iter(rows), recipe, steps, (0, epoch, 0)):
                pass
            return steps * recipe.batch_size / (time.perf_counter() - began)

        def streamed(epoch: int) -> float:
            key = (0, epoch, 0)
            began = time.perf_counter()
            epoch_patches = patch_dataset(cohort, share, nnunet, steps, key)
            for _ in stream_batches(epoch_patches, nnunet, steps, key):
                pass
            return steps * nnunet.batch_size / (time.perf_counter() - began)

        rounds: dict[str, list[float]] = {
            "in_process": [],
            "nnunet_only": [],
            "flips": [],
            "ray_data": [],
        }
        for epoch in range(args.rounds):
            rounds["in_process"].append(in_process(nnunet, epoch))
            rounds["nnunet_only"].append(in_process(nnunet_only, epoch))
            rounds["flips"].append(in_process(flips, epoch))
            rounds["ray_data"].append(streamed(epoch))
    rate = {k: statistics.median(v) for k, v in rounds.items()}
    per_core = rate["in_process"]
    stream_per_core = rate["ray_data"] / cores
    cores_per_gpu = args.gpu_rate / per_core
    print(
        f"augment {args.patch}^3 x 4 patches: {per_core:.2f} patches/s on one core with "
        f"the nnunet preset's augmentation ({rate['nnunet_only']:.2f} with nnU-Net's alone, "
        f"{rate['flips']:.2f} with flips only); Ray Data stage "
        f"{rate['ray_data']:.2f} patches/s on {cores} cores = {stream_per_core:.2f} per core "
        f"({stream_per_core / per_core:.2f} of in-process); one GPU at {args.gpu_rate} "
        f"patches/s needs {cores_per_gpu:.1f} cores ({math.ceil(cores_per_gpu)})"
    )
    return {
        "patches_per_s": {k: round(v, 3) for k, v in rate.items()},
        "per_round": {k: [round(x, 3) for x in v] for k, v in rounds.items()},
        "per_core": round(per_core, 3),
        "ray_data_per_core": round(stream_per_core, 3),
        "ray_data_over_in_process": round(stream_per_core / per_core, 3),
        "cores": cores,
        "cores_per_gpu": round(cores_per_gpu, 3),
        "prepared_shapes": shapes,
        "setup": asdict(args),
    }
