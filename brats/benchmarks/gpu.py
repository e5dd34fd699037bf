"""GPU benchmark: what one GPU does with the default network, in one JSON, in minutes.

On the first GPU TensorFlow sees (``CUDA_VISIBLE_DEVICES`` picks it), with the ``nnunet``
network at its training size:

* ``tensorflow``: its version, whether it was built with CUDA, and each GPU it sees (name,
  compute capability);
* ``train_step``: samples/s of :func:`brats.train.worker.build_step` (deep supervision, Adam,
  loss scaling under float16) at ``--size``³ batch ``--batch``, per ``--precisions``
  (float32 is the reference the others are divided by), the median over ``--steps`` after
  two warm-up steps (the first traces), and each precision's peak GPU memory;
* ``case``: a whole ``--case-shape`` 4-channel case through the
  :class:`~brats.segment.predictor.Predictor` (``--size`` windows, overlap 0.5, 2 windows
  a call), ms per case with and without flip TTA, per precision, with its peak GPU memory;
* ``case_onnxruntime`` (with ``--backends keras,onnxruntime``): the same whole case through
  the predictor in ONNX Runtime, float32, and the execution providers it ran on (CUDA with
  ``onnxruntime-gpu`` installed, else the CPU);
* ``xla``: the forward pass of one ``--size``³ batch with and without ``jit_compile``, per
  precision (XLA is kept only where it is faster).

Without a GPU it says so, measures nothing and returns (``jobs/benchmark.py gpu`` exits 0);
``--cpu`` runs the same code on the CPU, at small ``--size`` and ``--case-shape``, which is
how the test suite checks the benchmark itself. Sections run in order and are skipped once
``--budget-s`` is spent, so a run fits a short lease on a GPU machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np

from brats.benchmarks.model import timed
from brats.network.precision import PRECISIONS, PrecisionError, resolve_precision
from brats.options import option


@dataclass(frozen=True)
class GpuBenchmark:
    """``jobs/benchmark.py gpu``."""

    precisions: tuple[str, ...] = option(
        ("float32", "float16", "bfloat16"),
        help="precisions measured (float32 first: the reference)",
    )
    size: int = option(128, help="cube side of the training patch and of the window")
    batch: int = option(2, help="patches per train step")
    steps: int = option(10, help="timed train steps per precision")
    case_shape: tuple[int, int, int] = option(
        (240, 240, 155), metavar=("D", "H", "W"), help="the whole case's grid"
    )
    cases: int = option(3, help="timed whole cases per precision and TTA setting")
    base_filters: int = option(32, help="filters of the U-Net's top level (nnU-Net's 32)")
    depth: int = option(4, help="the U-Net's poolings")
    budget_s: float = option(420.0, help="skip the sections left once this much time is spent")
    cpu: bool = option(False, help="run on the CPU even without a GPU (small sizes: a self-test)")
    backends: tuple[str, ...] = option(
        ("keras",),
        help="runtimes of the whole-case section (comma list): keras (each precision) and "
        "onnxruntime (float32; on the GPU with onnxruntime-gpu installed, else the CPU)",
    )


def gpu_devices() -> list[dict[str, Any]]:
    """Each GPU TensorFlow sees: ``name`` and ``compute_capability`` (``[major, minor]``)."""
    import tensorflow as tf

    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        out.append(
            {
                "device": gpu.name,
                "name": details.get("device_name", ""),
                "compute_capability": list(capability) if capability else None,
            }
        )
    return out


class _Memory:
    """Peak memory of the first GPU between :meth:`reset` and :meth:`peak_gib` (``None`` on
    the CPU, where TensorFlow keeps no such statistics)."""

    def __init__(self, on_gpu: bool) -> None:
        self.device = "GPU:0" if on_gpu else None

    def reset(self) -> None:
        import tensorflow as tf

        if self.device:
            tf.config.experimental.reset_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        import tensorflow as tf

        if not self.device:
            return None
        return round(tf.config.experimental.get_memory_info(self.device)["peak"] / 2**30, 2)


def _median_s(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``repeats`` calls after ``warmup`` untimed ones (the first traces)."""
    for _ in range(warmup - 1):
        fn()
    return statistics.median(timed(fn, repeats)[1])


def _train_config(args: GpuBenchmark, precision: str) -> Any:
    from brats.train.config import TrainConfig

    return TrainConfig(
        data="-",
        storage="-",
        patch_size=(args.size,) * 3,
        batch_size=args.batch,
        base_filters=args.base_filters,
        depth=args.depth,
        precision=precision,
    )


def _train_step(args: GpuBenchmark, precision: str, memory: _Memory) -> dict[str, Any]:
    import tensorflow as tf

    from brats.train.worker import build_step

    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, args.size)
    x = tf.constant(rng.standard_normal((*shape, 4), dtype=np.float32))
    y = tf.one_hot(tf.constant(rng.integers(0, 4, size=shape)), 4, dtype=tf.float32)
    memory.reset()
    config = _train_config(args, precision)
    _, _, step = build_step(config, tf.distribute.get_strategy(), precision)
    at = tf.constant(0.5)  # mid-run: the learning rate does not change the step's cost
    seconds = _median_s(lambda: float(step(x, y, at)), args.steps, warmup=2)
    return {
        "samples_per_s": round(args.batch / seconds, 2),
        "step_ms": round(1000 * seconds, 1),
        "peak_gib": memory.peak_gib(),
    }


def _whole_case(
    args: GpuBenchmark, precision: str, memory: _Memory, backend: str = "keras"
) -> dict[str, Any]:
    from brats.network.unet import build_unet
    from brats.segment.predictor import Predictor, PredictSettings

    config = _train_config(args, "float32")
    info = config.model_info("zscore")
    model: Any = build_unet(config.unet())
    if backend == "onnxruntime":  # converted once, not once per TTA setting
        from brats.io.export import onnx_bytes

        model = onnx_bytes(model, info)
    image = np.random.default_rng(1).standard_normal((4, *args.case_shape), dtype=np.float32)
    out: dict[str, Any] = {}
    for tta in (False, True):
        memory.reset()
        settings = PredictSettings(
            precision=precision, flip_tta=tta, no_tta=not tta, batch_size=2, backend=backend
        )
        predictor = Predictor(model, info, settings)
        seconds = _median_s(partial(predictor.labels, image), args.cases)
        key = "tta" if tta else "plain"
        out[f"{key}_ms_per_case"] = round(1000 * seconds, 1)
        # TensorFlow's allocator says nothing of ONNX Runtime's memory.
        out[f"{key}_peak_gib"] = memory.peak_gib() if backend == "keras" else None
        if predictor.providers:
            out["providers"] = predictor.providers
    return out


def _xla_forward(args: GpuBenchmark, precision: str) -> dict[str, Any]:
    import tensorflow as tf

    from brats.network.precision import POLICIES
    from brats.network.unet import build_unet

    model = build_unet(_train_config(args, precision).unet(precision))
    x = tf.constant(
        np.random.default_rng(2).standard_normal(
            (args.batch, args.size, args.size, args.size, 4), dtype=np.float32
        )
    )
    out: dict[str, Any] = {"policy": POLICIES[precision]}
    for jit in (False, True):

        @tf.function(jit_compile=jit)
        def forward(batch: Any) -> Any:
            return model(batch, training=False)

        def call(forward: Any = forward) -> object:
            return forward(x).numpy()

        out["xla_ms" if jit else "plain_ms"] = round(1000 * _median_s(call, args.steps), 1)
    out["xla_speedup"] = round(out["plain_ms"] / out["xla_ms"], 3)
    return out


def _onnx_case(
    args: GpuBenchmark, memory: _Memory, began: float, skipped: list[str]
) -> dict[str, Any]:
    """The whole-case section in ONNX Runtime (float32), with the providers it ran on, unless
    the budget is spent."""
    if time.perf_counter() - began > args.budget_s:
        skipped.append("case/onnxruntime")
        return {}
    result = _whole_case(args, "float32", memory, "onnxruntime")
    print(f"gpu case onnxruntime float32: {result}", flush=True)
    return result


def run(args: GpuBenchmark) -> dict[str, Any]:
    import tensorflow as tf

    began = time.perf_counter()
    devices = gpu_devices()
    figures: dict[str, Any] = {
        "tensorflow": {
            "version": tf.__version__,
            "built_with_cuda": bool(tf.test.is_built_with_cuda()),
            "gpus": devices,
        },
        "gpu": bool(devices),
        "setup": asdict(args),
    }
    if not devices and not args.cpu:
        print("gpu: TensorFlow sees no GPU on this machine; nothing measured (--cpu runs anyway)")
        return figures
    for precision in args.precisions:
        if precision not in PRECISIONS or precision == "auto":
            raise ValueError(f"--precisions takes {PRECISIONS[:-1]}, got {precision!r}")
    memory = _Memory(on_gpu=bool(devices))
    sections: dict[str, Callable[[str], dict[str, Any]]] = {
        "train_step": lambda p: _train_step(args, p, memory),
        "case": lambda p: _whole_case(args, p, memory),
        "xla": lambda p: _xla_forward(args, p),
    }
    skipped: list[str] = []
    refused: dict[str, str] = {}
    for precision in args.precisions:
        try:
            resolve_precision(
                precision,
                gpu=tuple(devices[0]["compute_capability"] or (0, 0)) if devices else None,
            )
        except PrecisionError as exc:  # float16 on the CPU
            refused[precision] = str(exc)
    figures["refused"] = refused
    for section, measure in sections.items():
        results: dict[str, Any] = {}
        for precision in (p for p in args.precisions if p not in refused):
            if time.perf_counter() - began > args.budget_s:
                skipped.append(f"{section}/{precision}")
                continue
            results[precision] = measure(precision)
            print(f"gpu {section} {precision}: {results[precision]}", flush=True)
        figures[section] = results
    if "onnxruntime" in args.backends:
        figures["case_onnxruntime"] = _onnx_case(args, memory, began, skipped)
    reference = figures["train_step"].get("float32")
    if reference:
        for result in figures["train_step"].values():
            result["vs_float32"] = round(result["samples_per_s"] / reference["samples_per_s"], 3)
    figures["skipped"] = skipped
    figures["seconds"] = round(time.perf_counter() - began, 1)
    return figures
