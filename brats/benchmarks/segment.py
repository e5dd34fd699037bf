"""Segmentation benchmark: the whole job vs the model alone, and memory at N and 4N cases.

In one invocation, on generated cases and one model:

* ``model_only``: :meth:`brats.segment.predictor.Predictor.probabilities` in this process on
  cases already read and normalized (only the model runs while the clock does). The model is an
  untrained U-Net biased to predict background (:func:`_background_model`): its forward
  pass costs what a trained one's does, and its masks are clean, as a trained one's are;
* ``end_to_end``: :func:`brats.segment.job.segment` (Ray Data: read, validate, normalize, predict
  on the actor pool, paste back, write masks and records, report) on N cases, then on 4N.
  Its rate is the *marginal* one, ``3N / (t(4N) - t(N))``: starting actors and loading the
  model happen once per job, whatever the cohort's size, so they are left out of the ratio
  (and printed);
* peak memory: the largest total RSS of this process and every process under it (the local
  Ray: raylet, workers, actors) while each job runs, sampled every 0.2 s.

* ``resampling``: one case of ``--resample-shape`` (BraTS's 240 x 240 x 155 at 1 mm)
  segmented by the same network saying it was trained at ``--model-spacing`` (1.5 mm: the
  network sees a third of the voxels, so resampling weighs more than for a model at the
  case's own scale): the share of :meth:`Predictor.segment_assessed
  <brats.segment.predictor.Predictor.segment_assessed>`'s time spent bringing the brain box
  to the model's spacing and the probabilities back (each step timed alone, on the same
  arrays).

Targets: ``end_to_end / model_only >= 0.90`` (reading, normalizing and writing hide behind
the model), ``peak(4N) / peak(N) <= 1.2`` (memory does not grow with the cohort) and
resampling's share ``<= 0.10``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from brats.benchmarks.rates import marginal_rate
from brats.network.precision import PRECISIONS
from brats.options import option
from brats.runtime import init_ray
from brats.segment.backends import BACKENDS


@dataclass(frozen=True)
class SegmentBenchmark:
    """``jobs/benchmark.py segment``."""

    cases: int = option(4, help="N (the second job has 4N)")
    # Large enough that 4N cases take measurably longer than N (smaller runs are refused).
    shape: tuple[int, int, int] = option((160, 160, 128), metavar=("D", "H", "W"), help="grid")
    patch: int = option(96, help="cube side of the window (the model's patch)")
    base_filters: int = option(16, help="filters of the U-Net's top level")
    depth: int = option(4, help="the U-Net's poolings")
    num_cpus: int | None = option(None, help="CPUs for the local Ray (default: all cores)")
    precision: str = option("float32", choices=PRECISIONS, help="the network's precision")
    backend: str = option("auto", choices=BACKENDS, help="the network's runtime (--backend)")
    resample_shape: tuple[int, int, int] = option(
        (240, 240, 155), metavar=("D", "H", "W"), help="grid of the resampling case (1 mm)"
    )
    model_spacing: tuple[float, float, float] = option(
        (1.5, 1.5, 1.5), metavar=("X", "Y", "Z"), help="spacing the model says it has (mm)"
    )


def _tree_rss(root: int) -> int:
    """Total resident memory of ``root`` and all its descendants, in bytes (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry.name)] = int(line.split()[1]) * 1024
    keep = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in keep and pid not in keep:
                keep.add(pid)
                changed = True
    return sum(rss.get(pid, 0) for pid in keep)


class PeakMemory:
    """Samples :func:`_tree_rss` of this process in a thread; ``peak`` is the largest seen."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _model_only(model_dir: str, cohort: str, args: SegmentBenchmark) -> tuple[float, int, str]:
    """Seconds to predict every case of ``cohort`` already prepared, the cases, and the
    runtime that ran the network."""
    from brats.ingest.prepare import prepare_case
    from brats.io.cases import discover
    from brats.io.nifti import read_case
    from brats.segment.predictor import Predictor
    from brats.storage import resolve

    predictor = Predictor.from_artifact(model_dir, _settings(args))
    loc = resolve(cohort)
    config = predictor.preprocess
    images = [
        prepare_case(read_case(c, loc, modalities=config.modalities), config).image
        for c in discover(loc).cases
    ]
    predictor.probabilities(images[0])  # traces the forward pass
    began = time.perf_counter()
    for image in images:
        predictor.probabilities(image)
    return time.perf_counter() - began, len(images), predictor.backend


def _settings(args: SegmentBenchmark) -> Any:
    """How every part of the benchmark predicts: ``--precision``, ``--backend``, no flips."""
    from brats.segment.predictor import PredictSettings

    return PredictSettings(precision=args.precision, backend=args.backend, no_tta=True)


def _resampling_share(model_dir: str, cohort: str, args: SegmentBenchmark) -> dict[str, Any]:
    """Segment the one case of ``cohort`` with the model of ``model_dir`` said to be at
    ``args.model_spacing``; time the whole :meth:`Predictor.segment_assessed` and, alone on
    the same arrays, the two resampling steps."""
    import json
    import shutil

    from brats.ingest.prepare import prepare_case
    from brats.io.cases import discover
    from brats.io.nifti import read_case
    from brats.segment.predictor import Predictor
    from brats.storage import resolve
    from brats.volume.resample import resample_image, resample_probabilities

    spaced = f"{model_dir}-spaced"
    shutil.copytree(model_dir, spaced)
    card = Path(spaced) / "model.json"
    card.write_text(
        json.dumps(json.loads(card.read_text()) | {"target_spacing": list(args.model_spacing)})
    )
    predictor = Predictor.from_artifact(spaced, _settings(args))
    loc = resolve(cohort)
    case = discover(loc).cases[0]
    modalities = predictor.preprocess.modalities
    prepared = prepare_case(read_case(case, loc, modalities=modalities), predictor.preprocess)
    resampling = predictor.resampling(prepared)
    assert resampling is not None
    predictor.probabilities(prepared.image[:, :32, :32, :32])  # traces the forward pass
    began = time.perf_counter()
    _, assessment = predictor.segment_assessed(prepared)
    total = time.perf_counter() - began
    began = time.perf_counter()
    on_model = resample_image(prepared.image, resampling.shape, resampling.axis)
    there = time.perf_counter() - began
    on_model_probabilities = np.zeros(
        (assessment.probabilities.shape[0], *resampling.shape), np.float32
    )
    began = time.perf_counter()
    resample_probabilities(on_model_probabilities, resampling.source, resampling.axis)
    back = time.perf_counter() - began
    assert on_model.shape[1:] == resampling.shape
    return {
        "case_shape": list(prepared.crop.shape),
        "case_spacing": list(prepared.spacing),
        "model_spacing": list(resampling.spacing),
        "brain_box": list(resampling.source),
        "at_model_spacing": list(resampling.shape),
        "case_s": round(total, 2),
        "resample_image_s": round(there, 2),
        "resample_probabilities_s": round(back, 2),
        "share": round((there + back) / total, 3),
    }


def _background_model(model: Any) -> Any:
    """The untrained U-Net with its logits biased to background.

    A forward pass costs the same whatever the weights, but an untrained network's masks are
    ragged noise, and writing them costs far more than a trained model's clean masks (scoring
    Dice + HD95 on a noisy 160x160x128 mask took 2.1 s and gzip 0.21 s, against 0.03 s and
    0.02 s on a clean one). Biased, it predicts background, and the writer costs a little less
    than it would for a real tumour.
    """
    layer = model.get_layer("logits")
    kernel, bias = layer.get_weights()
    bias[0] += 50.0
    layer.set_weights([kernel, bias])
    return model


def run(args: SegmentBenchmark) -> dict[str, Any]:
    import keras

    from brats.devtools.synth import SynthConfig, generate_cohort
    from brats.io.artifact import save_artifact
    from brats.io.model_card import ModelInfo
    from brats.network.unet import UNetConfig, build_unet
    from brats.segment.job import SegmentConfig, segment

    init_ray(num_cpus=args.num_cpus)
    n = args.cases
    with tempfile.TemporaryDirectory(prefix="brats-bench-seg-") as tmp:
        synth = SynthConfig(shape=args.shape, seed=0)
        generate_cohort(f"{tmp}/small", n, synth)
        generate_cohort(f"{tmp}/large", 4 * n, synth)
        keras.utils.set_random_seed(0)
        unet = UNetConfig(base_filters=args.base_filters, depth=args.depth)
        save_artifact(
            _background_model(build_unet(unet)),
            ModelInfo(unet=unet, patch_size=(args.patch,) * 3),
            f"{tmp}/model",
        )
        model_s, model_cases, backend = _model_only(f"{tmp}/model", f"{tmp}/small", args)
        big = replace(synth, shape=args.resample_shape, field_of_view_mm=args.resample_shape)
        generate_cohort(f"{tmp}/one", 1, big)
        resampling = _resampling_share(f"{tmp}/model", f"{tmp}/one", args)
        e2e: dict[str, float] = {}
        peak: dict[str, int] = {}
        for name in ("small", "large"):
            with PeakMemory() as memory:
                began = time.perf_counter()
                result = segment(
                    SegmentConfig(
                        cohort=f"{tmp}/{name}",
                        model=f"{tmp}/model",
                        out=f"{tmp}/o-{name}",
                        predict=_settings(args),
                    )
                )
                e2e[name] = time.perf_counter() - began
            peak[name] = memory.peak
            if result.failed or result.done != (n if name == "small" else 4 * n):
                raise RuntimeError(f"segmentation of {name} cohort: {result}")
    model_rate = model_cases / model_s
    marginal, fixed = marginal_rate(
        n, e2e["small"], e2e["large"], "segment; raise --cases or --shape"
    )
    figures = {
        "precision": args.precision,
        "backend": backend,
        "cases": {"N": n, "4N": 4 * n},
        "shape": list(args.shape),
        "patch": args.patch,
        "cases_per_s": {
            "model_only": round(model_rate, 3),
            "end_to_end_marginal": round(marginal, 3),
            "end_to_end_raw_4N": round(4 * n / e2e["large"], 3),
        },
        "job_fixed_cost_s": round(fixed, 1),
        "end_to_end_over_model_only": round(marginal / model_rate, 3),
        "peak_rss_gib": {k: round(v / 2**30, 2) for k, v in peak.items()},
        "peak_ratio_4N_over_N": round(peak["large"] / peak["small"], 3),
        "resampling": resampling,
        "targets": {
            "end_to_end_over_model_only": 0.9,
            "peak_ratio_4N_over_N": 1.2,
            "resampling_share": 0.1,
        },
    }
    print(
        f"segment {tuple(args.shape)}: model only {model_rate:.3f} cases/s, end to end "
        f"{marginal:.3f} cases/s (marginal; {fixed:.0f} s fixed per job) -> "
        f"{marginal / model_rate:.2f} (target 0.90); peak RSS {peak['small'] / 2**30:.2f} GiB "
        f"at {n} cases, {peak['large'] / 2**30:.2f} GiB at {4 * n} -> "
        f"{peak['large'] / peak['small']:.2f} (target <= 1.2); resampling a "
        f"{'x'.join(map(str, args.resample_shape))} case to {resampling['model_spacing']} mm "
        f"and back: {resampling['resample_image_s'] + resampling['resample_probabilities_s']:.1f}"
        f" s of {resampling['case_s']:.1f} s -> {resampling['share']:.3f} (target <= 0.10)"
    )
    return figures
