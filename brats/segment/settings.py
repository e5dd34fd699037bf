"""How a :class:`~brats.segment.predictor.Predictor` runs its network and postprocesses its
labels: the settings every way of predicting (the segmentation job, the app, the benchmarks)
takes, and the part of them that decides a mask's bytes (:meth:`PredictSettings.output_settings`,
which a record keeps so that a rerun with other settings redoes the case).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from brats.network.precision import PRECISIONS
from brats.options import option
from brats.segment.backends import BACKENDS

POSTPROCESS_CHOICES: Final = ("model", "none")


@dataclass(frozen=True)
class PredictSettings:
    """How a predictor runs the model and postprocesses its labels."""

    overlap: float = option(
        0.5, help="fraction of a window shared with its neighbour along each axis, in [0, 1)"
    )
    flip_tta: bool = option(
        False,
        flag="--tta",
        help="average the network's outputs over the 8 axis flips (8x the cost) whatever the "
        "model says; without --tta or --no-tta, as its recipe says (model.json's tta: on for "
        "nnunet, as nnU-Net predicts; off for seed and for models that do not say)",
    )
    no_tta: bool = option(False, help="never average over flips, whatever the model says")
    postprocess: str = option(
        "model",
        choices=POSTPROCESS_CHOICES,
        help="component rules: the ones chosen on validation and stored in model.json "
        "(model), or none",
    )
    min_et_voxels: int = option(
        0, help="enhancing-tumor components smaller than this become necrosis (0: off)"
    )
    precision: str = option(
        "float32",
        choices=PRECISIONS,
        help="the network's compute precision; auto: float16 on CUDA GPUs of compute "
        "capability >= 7.0, bfloat16 on CPUs with AVX512_BF16 or AMX, else float32",
    )
    backend: str = option(
        "auto",
        choices=BACKENDS,
        help="the runtime of the network: keras (TensorFlow), onnxruntime (the onnx extra; "
        "float32; a Keras model is converted first) or auto: ONNX Runtime for an ONNX export, "
        "else Keras (faster on CPUs, measured)",
    )
    batch_size: int = option(2, help="windows per forward pass")
    max_folds: int | None = option(
        None, help="of an ensemble model, predict with its first N folds (default: all)"
    )

    def __post_init__(self) -> None:
        if self.max_folds is not None and self.max_folds < 1:
            raise ValueError(f"max_folds must be >= 1, got {self.max_folds}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1 or self.min_et_voxels < 0:
            raise ValueError("batch_size must be >= 1 and min_et_voxels >= 0")
        if self.flip_tta and self.no_tta:
            raise ValueError("flip_tta (--tta) and no_tta (--no-tta) ask for opposite things")
        if self.postprocess not in POSTPROCESS_CHOICES:
            raise ValueError(f"postprocess must be one of {POSTPROCESS_CHOICES}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @property
    def tta(self) -> str:
        """``on`` (``--tta``), ``off`` (``--no-tta``) or ``model``: as model.json says."""
        return "on" if self.flip_tta else "off" if self.no_tta else "model"

    @classmethod
    def with_tta(cls, tta: str, **values: Any) -> PredictSettings:
        """Settings with flip TTA ``on``, ``off`` or as the ``model`` says."""
        if tta not in ("model", "on", "off"):
            raise ValueError(f"tta must be model, on or off, got {tta!r}")
        return cls(flip_tta=tta == "on", no_tta=tta == "off", **values)

    def output_settings(self) -> dict[str, Any]:
        """The settings that decide a mask's bytes (``batch_size`` only decides speed).
        ``postprocess`` and ``precision`` appear only when they are not the default, so
        records written before they existed still match. ``tta`` is kept as asked: with the
        model's version it decides whether flips ran. Another precision redoes a case:
        its mask's bytes may differ (in well under 0.1 % of voxels for bfloat16), and a
        record must describe the mask next to it. ``auto`` is kept as asked (it may resolve
        differently on another node); the record's ``precision`` says what ran. ``backend``,
        likewise, appears when it is not ``auto`` (ONNX Runtime's masks may differ from
        Keras's in a few voxels); the record's ``backend`` says what ran."""
        settings: dict[str, Any] = {
            "min_et_voxels": self.min_et_voxels,
            "overlap": self.overlap,
            "tta": self.tta,
        }
        if self.postprocess != "model":
            settings["postprocess"] = self.postprocess
        if self.precision != "float32":
            settings["precision"] = self.precision
        if self.max_folds is not None:
            settings["max_folds"] = self.max_folds
        if self.backend != "auto":
            settings["backend"] = self.backend
        return settings
