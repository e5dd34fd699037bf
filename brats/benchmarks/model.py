"""Model benchmark: U-Net forward and train-step time, achieved GFLOP/s vs the machine's matmul.

One invocation measures, on whatever TensorFlow runs on (CPU here), the ``--preset``'s
network (``nnunet`` by default, without its deep-supervision heads) at ``--precision`` and at
each of ``--against`` (Keras dtype policies), each also with XLA when ``--xla``; the variants
alternate round by round, and each is reported as a speed-up over ``--precision`` without XLA:

* ``forward``: ``model(x, training=False)`` on a ``(batch, size, size, size, channels)``
  float32 batch, compiled with ``tf.function``, as sliding-window inference runs it;
* ``train_step``: forward, loss (``--loss``), gradients and an Adam update in one
  ``tf.function``, the shape of the training loop's custom step;
* with ``--backends keras,onnxruntime``, the float32 network exported to ONNX, its forward
  pass in ONNX Runtime (variant ``onnxruntime``; it does not train);
* ``matmul``: a square float32 matmul in numpy and in TensorFlow (best of 10 each), the
  machine's practical peak for dense float32 math; ratios are taken against the faster.

FLOPs per step come from :func:`brats.network.unet.forward_flops` (convolutions only, a
multiply-add counted as 2); a train step counts as 3x a forward pass (the backward pass computes
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
from typing import TYPE_CHECKING, Any

import numpy as np

from brats.options import option
from brats.train.config import LOSS_NAMES

if TYPE_CHECKING:
    from brats.network.unet import UNetConfig

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
    preset: str = option("nnunet", choices=("nnunet", "seed"), help="the network's recipe")
    precision: str = option("float32", choices=PRECISIONS, help="compute precision")
    against: tuple[str, ...] = option(
        ("mixed_bfloat16",), help="other precisions measured side by side (comma list)"
    )
    xla: bool = option(False, help="also measure each precision with XLA (jit_compile=True)")
    loss: str | None = option(
        None, choices=LOSS_NAMES, help="the train step's loss (default: the preset's)"
    )
    backends: tuple[str, ...] = option(
        ("keras",),
        help="runtimes measured side by side (comma list): keras (each precision) and "
        "onnxruntime (the float32 network exported to ONNX, forward pass only; the onnx extra)",
    )
    repeats: int = option(3, help="timed calls after the first")

    def __post_init__(self) -> None:
        from brats.segment.backends import RUNTIMES

        if (
            not self.backends
            or self.backends[0] != "keras"
            or not set(self.backends) <= set(RUNTIMES)
        ):
            raise ValueError(f"backends: keras first, then any of {RUNTIMES}; got {self.backends}")

    matmul_n: int = option(2048, help="side of the square matmul")


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
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
        _, times = timed(fn, repeats)
        out[name] = flops / min(times) / 1e9
    return out


def _variant_name(precision: str, xla: bool) -> str:
    return precision + ("+xla" if xla else "")


Calls = dict[str, Callable[[], object]]
"""A variant's timed calls by kind (``forward``, ``train_step``)."""


def run(args: ModelBenchmark) -> dict[str, Any]:
    """Build every variant, alternate their timed calls round by round, and print and return
    the figures (see the module's docstring)."""
    import keras

    keras.utils.set_random_seed(0)
    config = _network(args, args.precision)
    loss_name = args.loss or ("dice_bce" if config.output == "regions" else "dice_ce")
    x, y = _batch(args, config)
    variants, params = _variants(args, loss_name, x, y)
    first = {name: {k: timed(fn, 0)[0] for k, fn in c.items()} for name, c in variants.items()}
    times = _alternate(variants, args.repeats)
    figures = _figures(args, config, loss_name, first, times, params)
    _print_summary(figures)
    return figures


def _network(args: ModelBenchmark, precision: str) -> UNetConfig:
    """The ``--preset``'s network at ``precision`` (the ``nnunet`` one without its
    deep-supervision heads)."""
    from brats.network.unet import UNetConfig, nnunet_config

    values: dict[str, Any] = {
        "base_filters": args.base_filters,
        "depth": args.depth,
        "in_channels": args.channels,
        "mixed_precision": precision,
    }
    if args.preset == "nnunet":
        return nnunet_config(**values, deep_supervision=0)
    return UNetConfig(**values)


def _batch(args: ModelBenchmark, config: UNetConfig) -> tuple[Any, Any]:
    """A seeded ``(batch, size, size, size, channels)`` input and one-hot target."""
    import tensorflow as tf

    from brats.network.unet import check_spatial_shape

    spatial = check_spatial_shape((args.size,) * 3, config.depth)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((args.batch, *spatial, args.channels), dtype=np.float32))
    labels = rng.integers(0, 4, size=(args.batch, *spatial))
    return x, tf.one_hot(tf.constant(labels), 4, dtype=tf.float32)


def _variants(args: ModelBenchmark, loss_name: str, x: Any, y: Any) -> tuple[dict[str, Calls], int]:
    """The timed calls of each precision (``--precision`` first, then ``--against``), with and
    without XLA when ``--xla``; and the network's parameter count."""
    from brats.network.unet import build_unet

    variants: dict[str, Calls] = {}
    params = 0
    precisions = [args.precision, *(p for p in args.against if p != args.precision)]
    for precision in precisions:
        for xla in (False, True) if args.xla else (False,):
            model = build_unet(_network(args, precision))
            params = params or model.count_params()
            variants[_variant_name(precision, xla)] = _step_calls(model, loss_name, x, y, xla)
    if "onnxruntime" in args.backends:
        variants[ONNX_VARIANT] = _onnx_calls(args, x)
    return variants, params


ONNX_VARIANT = "onnxruntime"
"""The variant name of the float32 network in ONNX Runtime."""


def _onnx_calls(args: ModelBenchmark, x: Any) -> Calls:
    """The float32 network exported to ONNX (Keras 3's export, checked against Keras
    within 1e-3 as every export is) and its forward pass in ONNX Runtime, with all of the
    machine's cores as TensorFlow has."""
    from brats.io.cases import MODALITIES, SEED_MODALITIES
    from brats.io.model_card import ModelInfo
    from brats.network.unet import build_unet
    from brats.segment.backends import onnx_networks, onnx_predict

    config = _network(args, "float32")
    modalities = MODALITIES if args.channels == len(MODALITIES) else SEED_MODALITIES
    info = ModelInfo(
        unet=config, modalities=modalities[: args.channels], patch_size=(args.size,) * 3
    )
    forward = onnx_predict(onnx_networks([build_unet(config)], info)[0])
    batch = np.asarray(x)
    return {"forward": lambda: forward(batch)}


def _step_calls(model: Any, loss_name: str, x: Any, y: Any, xla: bool) -> Calls:
    """``model``'s compiled forward pass and train step (loss, gradients, an Adam update)."""
    import keras
    import tensorflow as tf

    from brats.train.losses import get_loss

    loss_fn = get_loss(loss_name)
    optimizer = keras.optimizers.Adam(learning_rate=1e-4)

    @tf.function(jit_compile=xla)
    def forward(batch: tf.Tensor) -> tf.Tensor:
        return model(batch, training=False)

    @tf.function(jit_compile=xla)
    def train_step(batch: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(target, model(batch, training=True))
        grads = tape.gradient(loss, model.trainable_weights)
        optimizer.apply(grads, model.trainable_weights)
        return loss

    return {"forward": lambda: forward(x).numpy(), "train_step": lambda: float(train_step(x, y))}


def _alternate(variants: dict[str, Calls], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Seconds of each call of each variant over ``repeats`` rounds, the variants taking turns
    within a round (so drift hits them alike)."""
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in c} for n, c in variants.items()}
    for _ in range(repeats):
        for name, calls in variants.items():
            for kind, fn in calls.items():
                times[name][kind].append(timed(fn, 0)[0])
    return times


def _figures(
    args: ModelBenchmark,
    config: UNetConfig,
    loss_name: str,
    first: dict[str, dict[str, float]],
    times: dict[str, dict[str, list[float]]],
    params: int,
) -> dict[str, Any]:
    """The benchmark's figures: ``--precision``'s times and GFLOP/s against the matmul peak,
    and each variant's speed-up over it."""
    import tensorflow as tf

    from brats.network.unet import forward_flops

    spatial = (args.size,) * 3
    matmul = matmul_gflops(args.matmul_n)
    flops = forward_flops(config, spatial)["total"] * args.batch
    base = _variant_name(args.precision, False)
    forward_s = statistics.median(times[base]["forward"])
    train_s = statistics.median(times[base]["train_step"])
    forward_gflops = flops / forward_s / 1e9
    train_gflops = TRAIN_FLOPS_PER_FORWARD * flops / train_s / 1e9
    best = max(matmul, key=lambda k: matmul[k])
    per_variant = {
        name: {
            "forward_s": round(statistics.median(t["forward"]), 4),
            "train_step_s": _median(t.get("train_step")),
            "forward_first_call_s": round(first[name]["forward"], 3),
            "train_step_first_call_s": _round(first[name].get("train_step"), 3),
            "forward_speedup": round(forward_s / statistics.median(t["forward"]), 3),
            "train_step_speedup": (
                round(train_s / statistics.median(t["train_step"]), 3)
                if "train_step" in t
                else None
            ),
        }
        for name, t in times.items()
    }
    return {
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "cores": os.cpu_count(),
        # The entry points turn oneDNN on (brats.runtime.prepare_tensorflow);
        # TF_ENABLE_ONEDNN_OPTS=0 measures TensorFlow's own kernels in another run.
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "cpu_flags": _cpu_flags(),
        "preset": args.preset,
        "unet": config.to_dict(),
        "params": params,
        "input_shape": [args.batch, *spatial, args.channels],
        "loss": loss_name,
        "repeats": args.repeats,
        "forward_gflop_per_step": round(flops / 1e9, 2),
        "train_gflop_per_step": round(TRAIN_FLOPS_PER_FORWARD * flops / 1e9, 2),
        "forward_s": round(forward_s, 3),
        "forward_first_call_s": round(first[base]["forward"], 3),
        "train_step_s": round(train_s, 3),
        "train_step_first_call_s": round(first[base]["train_step"], 3),
        "forward_gflops": round(forward_gflops, 1),
        "train_gflops": round(train_gflops, 1),
        "train_voxels_per_s": round(args.batch * int(np.prod(spatial)) / train_s),
        "baseline": base,
        "variants": per_variant,
        "matmul_n": args.matmul_n,
        "matmul_gflops": {k: round(v, 1) for k, v in matmul.items()},
        "matmul_reference": best,
        "forward_vs_matmul": round(forward_gflops / matmul[best], 3),
        "train_vs_matmul": round(train_gflops / matmul[best], 3),
        # ru_maxrss is in KiB on Linux: the process's peak resident memory so far.
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def _print_summary(f: dict[str, Any]) -> None:
    """One line for ``--precision`` against the matmul peak, then one per variant."""
    matmul = f["matmul_gflops"]
    print(
        f"model {f['input_shape']} {f['preset']} on {f['device']} "
        f"({f['cores']} cores, {'+'.join(f['cpu_flags']) or 'no AVX flags read'}, "
        f"oneDNN {'off' if f['onednn'] == '0' else 'on'}), {f['baseline']}: "
        f"forward {f['forward_s']:.2f} s = {f['forward_gflops']:.1f} GFLOP/s, train step "
        f"{f['train_step_s']:.2f} s = {f['train_gflops']:.1f} GFLOP/s; matmul "
        f"{f['matmul_n']}^2 float32: numpy {matmul['numpy']:.1f}, TensorFlow "
        f"{matmul['tensorflow']:.1f} GFLOP/s -> forward at {f['forward_vs_matmul']:.2f}, "
        f"train at {f['train_vs_matmul']:.2f} of the best ({f['matmul_reference']}) matmul"
    )
    for name, v in f["variants"].items():
        if v["train_step_s"] is None:  # a runtime that only predicts
            print(
                f"  {name}: forward {v['forward_s']:.3f} s ({v['forward_speedup']:.2f}x of "
                f"{f['baseline']}); first call {v['forward_first_call_s']:.1f} s"
            )
            continue
        print(
            f"  {name}: forward {v['forward_s']:.3f} s ({v['forward_speedup']:.2f}x of "
            f"{f['baseline']}), train step {v['train_step_s']:.3f} s "
            f"({v['train_step_speedup']:.2f}x); first calls {v['forward_first_call_s']:.1f} / "
            f"{v['train_step_first_call_s']:.1f} s"
        )


def _median(times: list[float] | None) -> float | None:
    return None if times is None else round(statistics.median(times), 4)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _cpu_flags() -> list[str]:
    """The vector-math flags of the CPU that decide TensorFlow's CPU kernels."""
    from brats.network.precision import cpu_flags

    have = cpu_flags()
    return [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in have]


def _fmt(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times) + " s"
