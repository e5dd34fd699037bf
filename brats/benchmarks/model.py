"""Model benchmark: U-Net forward and train-step time, achieved GFLOP/s vs the machine's matmul.

One invocation measures, on whatever TensorFlow runs on (CPU here):

* ``forward``: ``model(x, training=False)`` on a ``(batch, size, size, size, channels)``
  float32 batch, compiled with ``tf.function`` (no XLA), as sliding-window inference runs it;
* ``train_step``: forward, loss (``--loss``), gradients and an Adam update in one
  ``tf.function``, the shape of the training loop's custom step;
* ``matmul``: a square float32 matmul in numpy and in TensorFlow (best of 10 each), the
  machine's practical peak for dense float32 math; ratios are taken against the faster.

FLOPs per step come from :func:`brats.train.model.forward_flops` (convolutions only, a multiply-add
counted as 2); a train step counts as 3x a forward pass (the backward pass computes
gradients for both the activations and the weights). Times are medians over ``--repeats``
after a first call that traces the function (reported apart). Achieved GFLOP/s divided by
the matmul GFLOP/s says how close the convolutions come to the machine's dense-math peak.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from brats.options import option
from brats.train.config import LOSS_NAMES

TRAIN_FLOPS_PER_FORWARD = 3
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclass(frozen=True)
class ModelBenchmark:
    """``jobs/benchmark.py model``."""

    size: int = option(128, help="cube side of the input patch")
    batch: int = option(1, help="patches per call")
    channels: int = option(4, help="4 modalities, or 3 (FLAIR, T1ce, T2)")
    base_filters: int = option(16, help="filters of the U-Net's top level")
    depth: int = option(4, help="the U-Net's poolings")
    precision: str = option("float32", choices=PRECISIONS, help="compute precision")
    loss: str = option("dice_ce", choices=LOSS_NAMES, help="the train step's loss")
    repeats: int = option(3, help="timed calls after the first")
    matmul_n: int = option(2048, help="side of the square matmul")


def _timed(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """Seconds of the first call (tracing included), and of each of ``repeats`` more."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, times


def matmul_gflops(n: int, repeats: int = 10) -> dict[str, float]:
    """Best-of-``repeats`` GFLOP/s of an ``n x n`` float32 matmul in numpy and in TensorFlow."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = tf.constant(a), tf.constant(b)
    flops = 2.0 * n**3
    runs: dict[str, Callable[[], object]] = {
        "numpy": lambda: a @ b,
        # .numpy() waits for the result (and would copy it back from a GPU).
        "tensorflow": lambda: tf.linalg.matmul(ta, tb).numpy(),
    }
    out = {}
    for name, fn in runs.items():
        _, times = _timed(fn, repeats)
        out[name] = flops / min(times) / 1e9
    return out


def run(args: ModelBenchmark) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from brats.train.losses import get_loss
    from brats.train.model import UNetConfig, build_unet, check_spatial_shape, forward_flops

    keras.utils.set_random_seed(0)
    config = UNetConfig(
        base_filters=args.base_filters,
        depth=args.depth,
        in_channels=args.channels,
        mixed_precision=args.precision,
    )
    spatial = check_spatial_shape((args.size,) * 3, config.depth)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((args.batch, *spatial, args.channels), dtype=np.float32))
    labels = rng.integers(0, config.n_classes, size=(args.batch, *spatial))
    y = tf.one_hot(tf.constant(labels), config.n_classes, dtype=tf.float32)
    model = build_unet(config)
    loss_fn = get_loss(args.loss)
    optimizer = keras.optimizers.Adam(learning_rate=1e-4)

    @tf.function(jit_compile=False)
    def forward(batch: tf.Tensor) -> tf.Tensor:
        return model(batch, training=False)

    @tf.function(jit_compile=False)
    def train_step(batch: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(target, model(batch, training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        optimizer.apply(grads, model.trainable_weights)
        return loss

    forward_first, forward_times = _timed(lambda: forward(x).numpy(), args.repeats)
    print(f"forward: first call {forward_first:.2f} s, then {_fmt(forward_times)}", flush=True)
    train_first, train_times = _timed(lambda: float(train_step(x, y)), args.repeats)
    print(f"train step: first call {train_first:.2f} s, then {_fmt(train_times)}", flush=True)
    matmul = matmul_gflops(args.matmul_n)

    flops = forward_flops(config, spatial)["total"] * args.batch
    forward_s = statistics.median(forward_times)
    train_s = statistics.median(train_times)
    forward_gflops = flops / forward_s / 1e9
    train_gflops = TRAIN_FLOPS_PER_FORWARD * flops / train_s / 1e9
    best = max(matmul, key=lambda k: matmul[k])
    peak = matmul[best]
    voxels = args.batch * int(np.prod(spatial))
    figures = {
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "cores": os.cpu_count(),
        "unet": config.to_dict(),
        "params": model.count_params(),
        "input_shape": [args.batch, *spatial, args.channels],
        "loss": args.loss,
        "repeats": args.repeats,
        "forward_gflop_per_step": round(flops / 1e9, 2),
        "train_gflop_per_step": round(TRAIN_FLOPS_PER_FORWARD * flops / 1e9, 2),
        "forward_s": round(forward_s, 3),
        "forward_first_call_s": round(forward_first, 3),
        "train_step_s": round(train_s, 3),
        "train_step_first_call_s": round(train_first, 3),
        "forward_gflops": round(forward_gflops, 1),
        "train_gflops": round(train_gflops, 1),
        "train_voxels_per_s": round(voxels / train_s),
        "matmul_n": args.matmul_n,
        "matmul_gflops": {k: round(v, 1) for k, v in matmul.items()},
        "matmul_reference": best,
        "forward_vs_matmul": round(forward_gflops / peak, 3),
        "train_vs_matmul": round(train_gflops / peak, 3),
        # ru_maxrss is in KiB on Linux: the process's peak resident memory so far.
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    print(
        f"model {figures['input_shape']} {args.precision} on {figures['device']} "
        f"({figures['cores']} cores): forward {forward_s:.2f} s = {forward_gflops:.1f} GFLOP/s, "
        f"train step {train_s:.2f} s = {train_gflops:.1f} GFLOP/s "
        f"({flops / 1e9:.1f} GFLOP forward, x{TRAIN_FLOPS_PER_FORWARD} for a train step); "
        f"matmul {args.matmul_n}^2 float32: numpy {matmul['numpy']:.1f}, TensorFlow "
        f"{matmul['tensorflow']:.1f} GFLOP/s -> forward at {figures['forward_vs_matmul']:.2f}, "
        f"train at {figures['train_vs_matmul']:.2f} of the best ({best}) matmul; "
        f"peak RSS {figures['peak_rss_gib']:.1f} GiB"
    )
    return figures


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times) + " s"
