"""Evaluation benchmark: our per-case metrics against MONAI's whole-volume Dice and HD95.

One invocation, on the same seeded 240 x 240 x 155 label pairs for both sides. Each truth has
several lesions (``--lesions`` foci, each edema around a core around an enhancing rim), and
its prediction is the truth moved by a voxel or two per lesion, with a lesion missed and a few
false-positive blobs, so that every region has true-positive, false-negative and
false-positive lesions.

* ``ours``: :func:`brats.volume.metrics.evaluate_case`, everything the records carry:
  whole-volume Dice and HD95, per-class figures, and per region the BraTS 2023 lesion-wise
  Dice and HD95, lesion counts, NSD, sensitivity and specificity;
* ``monai``: ``monai.metrics.compute_dice`` plus
  ``compute_hausdorff_distance(percentile=95)`` on the one-hot WT/TC/ET masks: the
  whole-volume figures only.

One thread each (``torch.set_num_threads(1)``; numpy and scipy run on one core here), so the
figures are per core. Each side is warmed up once; then ``--repeats`` rounds alternate ours and
MONAI over every case. The figures are median seconds per case and the ratio ``ours / monai``
(target <= 0.5). The Dice of both sides must agree exactly; HD95 is printed side by side (MONAI
takes the larger of the two directed 95th percentiles, we take the 95th percentile of both
sets together).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from brats.options import option

TARGET = 0.5
"""``ours / monai`` seconds per case must not exceed this."""
TARGET_SECONDS = 1.0
"""Our seconds per case on one core must not exceed this."""


@dataclass(frozen=True)
class EvaluateBenchmark:
    """``jobs/benchmark.py evaluate``."""

    cases: int = option(4, help="label pairs to score")
    shape: tuple[int, int, int] = option(
        (240, 240, 155), metavar=("D", "H", "W"), help="the volumes' grid"
    )
    lesions: int = option(4, help="tumour foci per truth")
    repeats: int = option(3, help="timed rounds over every case, alternating ours and MONAI")
    seed: int = option(0, help="seed of the label pairs")


def label_pair(
    rng: np.random.Generator, shape: tuple[int, int, int], lesions: int
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """``(pred, truth)`` internal labels: ``lesions`` nested foci, the prediction each moved,
    the last one missed, plus three false-positive blobs (edema, necrosis, enhancing)."""
    truth = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for k in range(lesions):
        radius = float(rng.uniform(6, 18))
        centre = np.array([rng.uniform(radius + 4, s - radius - 4) for s in shape])
        shift = rng.integers(-2, 3, size=3)
        for target, offset in ((truth, 0), (pred, shift)):
            if target is pred and k == lesions - 1:
                continue  # a missed lesion
            _focus(target, centre + offset, radius)
    for label in (2, 1, 3):  # an edema, a core and an enhancing false positive
        z, y, x = (int(rng.integers(5, s - 5)) for s in shape)
        pred[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2] = label
    return pred, truth


def _focus(labels: npt.NDArray[np.uint8], centre: npt.NDArray[np.float64], radius: float) -> None:
    lo = np.maximum(np.floor(centre - radius).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, labels.shape)
    grid = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))) / radius
    box = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    for edge, label in ((1.0, 2), (0.55, 3), (0.35, 1)):  # edema, enhancing rim, necrosis
        box[r < edge] = label


def run(args: EvaluateBenchmark) -> dict[str, Any]:
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    from brats.volume.labels import REGIONS
    from brats.volume.metrics import evaluate_case

    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    pairs = [label_pair(rng, args.shape, args.lesions) for _ in range(args.cases)]

    def ours(pred: npt.NDArray[np.uint8], truth: npt.NDArray[np.uint8]) -> dict[str, float]:
        return evaluate_case(pred, truth, (1.0, 1.0, 1.0))

    def monai(pred: npt.NDArray[np.uint8], truth: npt.NDArray[np.uint8]) -> dict[str, float]:
        def one_hot(labels: npt.NDArray[np.uint8]) -> Any:
            masks = [np.isin(labels, classes) for classes in REGIONS.values()]
            return torch.from_numpy(np.stack(masks)[None].astype(np.float32))

        p, t = one_hot(pred), one_hot(truth)
        dice = compute_dice(p, t, include_background=True, ignore_empty=False)[0]
        hd = compute_hausdorff_distance(p, t, include_background=True, percentile=95)[0]
        out = {f"dice_{r}": float(dice[i]) for i, r in enumerate(REGIONS)}
        out.update({f"hd95_{r}": float(hd[i]) for i, r in enumerate(REGIONS)})
        return out

    sides = {"ours": ours, "monai": monai}
    results: dict[str, list[dict[str, float]]] = {}
    for name, fn in sides.items():  # warm-up, and the figures compared below
        results[name] = [fn(p, t) for p, t in pairs]
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, fn in sides.items():
            for pred, truth in pairs:
                began = time.perf_counter()
                fn(pred, truth)
                seconds[name].append(time.perf_counter() - began)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    ratio = median["ours"] / median["monai"]
    dice_gap = max(
        abs(a[f"dice_{r}"] - b[f"dice_{r}"])
        for a, b in zip(results["ours"], results["monai"], strict=True)
        for r in REGIONS
    )
    hd95 = {
        name: {r: round(statistics.mean(x[f"hd95_{r}"] for x in rows), 3) for r in REGIONS}
        for name, rows in results.items()
    }
    lesions = {
        f"lesion_{k}_{r}": int(sum(x[f"lesion_{k}_{r}"] for x in results["ours"]))
        for r in REGIONS
        for k in ("tp", "fp", "fn")
    }
    print(
        f"evaluate {args.shape}: ours {median['ours']:.3f} s/case (every record metric), "
        f"MONAI {median['monai']:.3f} s/case (whole-volume Dice + HD95), one core each: "
        f"ours/monai = {ratio:.3f} (target <= {TARGET}); {1 / median['ours']:.2f} cases/s; "
        f"largest Dice difference {dice_gap:.2e}; mean HD95 ours {hd95['ours']} "
        f"vs MONAI {hd95['monai']}"
    )
    return {
        "seconds_per_case": {k: round(v, 4) for k, v in median.items()},
        "cases_per_s": {k: round(1 / v, 3) for k, v in median.items()},
        "ours_over_monai": round(ratio, 3),
        "target": TARGET,
        "meets_target": ratio <= TARGET and median["ours"] <= TARGET_SECONDS,
        "largest_dice_difference": dice_gap,
        "mean_hd95": hd95,
        "lesion_counts": lesions,
        "setup": asdict(args),
    }
