"""Which floating-point precision a network computes in (prediction and the training step),
and how a trained network is rebuilt for another.

``--precision`` takes one of :data:`PRECISIONS`:

* ``float32``: everything in float32 (the default: masks are byte for byte what earlier
  versions wrote, and records written before precision existed still skip);
* ``bfloat16``: Keras ``mixed_bfloat16`` (bfloat16 compute, float32 variables); fast on CPUs
  with AVX512_BF16 or AMX and on recent GPUs;
* ``float16``: Keras ``mixed_float16``, for CUDA GPUs with tensor cores;
* ``auto``: float16 where TensorFlow sees a CUDA GPU of compute capability 7.0 or more,
  else bfloat16 on a CPU that has AVX512_BF16 or AMX-BF16, else float32. Resolved where the
  network runs (a model actor on a GPU node picks float16 even if the driver has no GPU).

Only the network's layers change precision: its outputs are float32 probabilities (the
last activation is float32 in every policy), and blending, decoding and postprocessing stay
float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import keras

    from brats.network.unet import UNetConfig

PRECISIONS: Final = ("float32", "bfloat16", "float16", "auto")
POLICIES: Final = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
"""The Keras dtype policy of each precision."""
_CPU_BF16_FLAGS: Final = ("avx512_bf16", "amx_bf16")


class PrecisionError(ValueError):
    """A precision this machine cannot run."""


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[-1].split())
    return frozenset()


def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU reports AVX512_BF16 or AMX-BF16 (Linux ``/proc/cpuinfo`` flags)."""
    flags = cpu_flags(cpuinfo)
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def gpu_compute_capability() -> tuple[int, int] | None:
    """The compute capability of the first GPU TensorFlow sees, or ``None`` without one."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    return (int(capability[0]), int(capability[1])) if capability else (0, 0)


def resolve_precision(
    requested: str,
    *,
    gpu: tuple[int, int] | str | None = "detect",
    cpu_bf16: bool | None = None,
) -> str:
    """The precision ``requested`` runs in here: itself, or for ``auto`` what this machine
    does fastest (see the module docstring). ``gpu`` and ``cpu_bf16`` override detection.

    Raises:
        PrecisionError: ``float16`` without a CUDA GPU.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested in ("float32", "bfloat16"):
        return requested
    capability = gpu_compute_capability() if gpu == "detect" else gpu
    if requested == "float16":
        if capability is None or isinstance(capability, str):
            raise PrecisionError(
                "precision float16 needs a CUDA GPU: TensorFlow has no float16 kernels for "
                "3D pooling on CPUs (use bfloat16 or float32 here)"
            )
        return requested
    if capability is not None and not isinstance(capability, str):
        return "float16" if capability >= (7, 0) else "float32"
    has_bf16 = cpu_has_bf16() if cpu_bf16 is None else cpu_bf16
    return "bfloat16" if has_bf16 else "float32"


def at_precision(model: keras.Model, unet: UNetConfig, precision: str) -> keras.Model:
    """``model`` (built from ``unet``) as a network computing in ``precision``: itself when it
    already does, else the same U-Net rebuilt under that precision's policy with ``model``'s
    weights."""
    from dataclasses import replace

    from brats.network.unet import build_unet, copy_weights, main_output

    network = main_output(model)
    if unet.dtype_policy == POLICIES[precision]:
        return network
    rebuilt = build_unet(replace(unet, mixed_precision=POLICIES[precision]))
    copy_weights(network, rebuilt)
    return rebuilt
