"""The parameters of lesion-wise scoring (:class:`LesionSettings`) and whose they are: each
BraTS challenge's settings, per task and region (:func:`region_settings`), as its evaluation
code sets them. The scoring itself, and what every setting does, is :mod:`brats.volume.lesions`'.

BraTS 2023 (``rachitsaluja/BraTS-2023-Metrics``, ``eval.py``, ``get_LesionWiseResults``) sets
``dilation_factor`` and ``lesion_volume_thresh`` by ``challenge_name``: ``BraTS-GLI``,
``BraTS-SSA`` and ``BraTS-PED`` 3 and 50, ``BraTS-MET`` 1 and 2, ``BraTS-MEN`` (pre-operative
meningioma) 1 and 50; the penalty is 374 mm for every challenge. BraTS 2024's settings are
read from ``rachitsaluja/BraTS-2024-Metrics`` (:mod:`brats.volume.lesions`, steps 6-10), which
has no code for pre-operative meningioma: :func:`region_settings` gives that task its 2023
settings under ``brats2024`` too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

import numpy as np

from brats.options import option
from brats.volume.scheme import LESION_TASKS

LESION_METRICS: Final = ("brats2023", "brats2024")
"""Whose lesion-wise rules :func:`region_settings` gives: the BraTS 2023 or 2024 code's."""


@dataclass(frozen=True)
class LesionSettings:
    """Parameters of lesion-wise scoring (see :mod:`brats.volume.lesions`' docstring).

    The first four are command-line options of ``brats evaluate``; the rest are BraTS 2024
    rules that :func:`region_settings` sets, whose defaults are the 2023 behaviour.

    Attributes:
        dilation: iterations of the 18-connected dilation that merges nearby truth lesions
            and decides what a prediction must touch to match (BraTS 2023 glioma: 3).
        min_volume_mm3: truth lesions of this volume or less are not scored (glioma: 50).
        penalty_mm: HD95 of a missed lesion or a false-positive component (374, about the
            diagonal of a 240 x 240 x 155 volume at 1 mm); ``None``: the image diagonal,
            which :func:`lesion_scores` then takes as ``diagonal_mm``.
        nsd_tolerance_mm: the tolerance of the normalized surface Dice.
        merge_predictions: group predicted components by the same dilation as the truth
            (step 6).
        min_prediction_voxels: predicted lesions of this many voxels or fewer are removed
            before matching (step 7; 0 removes none).
        min_prediction_mm3: the same, as a volume (0 removes none).
        false_positives: whether false-positive lesions cost Dice 0 and the penalty each
            (step 9).
    """

    dilation: int = option(
        3, help="lesion-wise scoring: iterations of the 18-connected dilation of the truth"
    )
    min_volume_mm3: float = option(
        50.0,
        flag="--min-lesion-mm3",
        help="lesion-wise scoring: truth lesions of this volume or less are not scored",
    )
    penalty_mm: float | None = option(
        374.0, help="lesion-wise HD95 of a missed lesion or a false-positive component"
    )
    nsd_tolerance_mm: float = option(1.0, help="tolerance of the normalized surface Dice")
    merge_predictions: bool = False
    min_prediction_voxels: int = 0
    min_prediction_mm3: float = 0.0
    false_positives: bool = True

    def __post_init__(self) -> None:
        for name in ("dilation", "min_prediction_voxels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name in ("min_volume_mm3", "penalty_mm", "nsd_tolerance_mm", "min_prediction_mm3"):
            raw = getattr(self, name)
            if raw is None and name == "penalty_mm":
                continue
            value = float(raw)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("merge_predictions", "false_positives"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, float | int | bool | None]:
        """The settings, JSON-ready: the four 2023 keys always, a 2024 rule only where it
        differs from its default (so the settings of a 2023 record read as they always did)."""
        out: dict[str, float | int | bool | None] = {
            "dilation": self.dilation,
            "min_volume_mm3": self.min_volume_mm3,
            "penalty_mm": self.penalty_mm,
            "nsd_tolerance_mm": self.nsd_tolerance_mm,
        }
        for f in dataclasses.fields(self):
            if f.name not in out and getattr(self, f.name) != f.default:
                out[f.name] = getattr(self, f.name)
        return out


GLIOMA: Final = LesionSettings()
"""BraTS 2023 adult glioma (and SSA, paediatric): dilation 3, lesions over 50 mm^3."""
METASTASIS: Final = LesionSettings(dilation=1, min_volume_mm3=2.0)
"""BraTS 2023 metastasis: dilation 1, lesions over 2 mm^3."""
MENINGIOMA: Final = LesionSettings(dilation=1, min_volume_mm3=50.0)
"""BraTS 2023 pre-operative meningioma: dilation 1, lesions over 50 mm^3, penalty 374 mm.
BraTS 2024 has no code of its own for it, so it is its ``brats2024`` settings too."""

_TASKS_2023: Final[dict[str, LesionSettings]] = {
    "metastasis": METASTASIS,
    "meningioma": MENINGIOMA,
}
"""BraTS 2023 settings by task, every region; a task not listed gets :data:`GLIOMA`."""

GLIOMA_2024: Final = LesionSettings(
    dilation=3,
    min_volume_mm3=20.0,
    penalty_mm=337.0,
    merge_predictions=True,
    min_prediction_voxels=20,
)
"""BraTS 2024 adult glioma, WT, TC and SNFH (NETC, RC and ET differ: :func:`region_settings`)."""
METASTASIS_2024: Final = LesionSettings(
    dilation=1, min_volume_mm3=2.0, merge_predictions=True, min_prediction_voxels=2
)
"""BraTS 2024 metastasis, every region."""
PAEDIATRIC_2024: Final = LesionSettings(
    dilation=5, min_volume_mm3=10.0, merge_predictions=True, min_prediction_voxels=10
)
"""BraTS 2024 paediatric tumours, every region."""
MENINGIOMA_RT_2024: Final = LesionSettings(
    dilation=1,
    min_volume_mm3=50.0,
    penalty_mm=None,
    merge_predictions=True,
    min_prediction_mm3=50.0,
    false_positives=False,
)
"""BraTS 2024 meningioma radiotherapy (GTV): the image diagonal as penalty, no FP term."""

_TASKS_2024: Final[dict[str, LesionSettings]] = {
    "glioma": GLIOMA_2024,
    "metastasis": METASTASIS_2024,
    "paediatric": PAEDIATRIC_2024,
    "meningioma_rt": MENINGIOMA_RT_2024,
    "meningioma": MENINGIOMA,  # no 2024 pre-operative meningioma code: the 2023 settings
}
_REGIONS_2024: Final[dict[str, dict[str, LesionSettings]]] = {
    "glioma": {
        "NETC": dataclasses.replace(GLIOMA_2024, dilation=5),
        "RC": dataclasses.replace(GLIOMA_2024, dilation=5),
        "ET": dataclasses.replace(GLIOMA_2024, min_volume_mm3=10.0, min_prediction_voxels=10),
    },
}

CROSS_TISSUE: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "glioma": {
        "NETC": ("ET", "RC"),
        "ET": ("NETC", "RC"),
        "RC": ("ET", "NETC"),
        "SNFH": ("ET", "RC", "NETC"),
    },
    "metastasis": {"ET": ("NETC",)},
}
"""BraTS 2024 step 10: task -> region scored by
:func:`~brats.volume.lesions.tissue_lesion_scores` -> the partner
tissues its lesions are regrouped through, in order. Each name is one class of the task's
labels (glioma: NETC, SNFH, ET, RC; metastasis: NETC, ET)."""


def region_settings(task: str, metric: str, region: str) -> LesionSettings:
    """The lesion-wise settings of one region of one challenge.

    ``brats2023``: :data:`METASTASIS` for metastasis, :data:`MENINGIOMA` for (pre-operative)
    meningioma and :data:`GLIOMA` for the other tasks, in every region. ``brats2024``, from
    the 2024 reference code (:mod:`brats.volume.lesions`' docstring):

    ==============  =======================  ========  =========  ==========  =======  ===
    task            regions                  dilation  truth >    prediction  penalty  FP
    ==============  =======================  ========  =========  ==========  =======  ===
    glioma          WT, TC, SNFH             3         20 mm^3    > 20 vox    337      yes
    glioma          NETC, RC                 5         20 mm^3    > 20 vox    337      yes
    glioma          ET                       3         10 mm^3    > 10 vox    337      yes
    metastasis      all (WT, TC, ET)         1         2 mm^3     > 2 vox     374      yes
    paediatric      all (WT, TC, ET, NETC,   5         10 mm^3    > 10 vox    374      yes
                    CC, ED)
    meningioma_rt   all (GTV)                1         50 mm^3    > 50 mm^3   diag.    no
    meningioma      all (WT, TC, ET)         1         50 mm^3    (all)       374      yes
    ==============  =======================  ========  =========  ==========  =======  ===

    The 2024 metrics code has nothing for pre-operative meningioma, so ``meningioma`` keeps
    its 2023 settings (:data:`MENINGIOMA`) there, predictions unmerged. Predictions are merged
    by the dilation in every other 2024 row. A region the reference does not
    score (metastasis RC, say) gets its task's first row. The lesions of glioma NETC, SNFH, ET
    and RC and of metastasis ET are also regrouped across tissues, which only
    :func:`~brats.volume.lesions.tissue_lesion_scores` does;
    :func:`~brats.volume.lesions.lesion_scores` with these settings scores the region without
    that step.

    Raises:
        ValueError: ``task`` is not one of :data:`LESION_TASKS` or ``metric`` not one of
            :data:`LESION_METRICS`.
    """
    if metric not in LESION_METRICS:
        raise ValueError(
            f"unknown lesion-wise metric {metric!r}; choose one of {', '.join(LESION_METRICS)}"
        )
    if task not in LESION_TASKS:
        raise ValueError(
            f"unknown lesion-wise task {task!r}; choose one of {', '.join(LESION_TASKS)}"
        )
    if metric == "brats2023":
        return _TASKS_2023.get(task, GLIOMA)
    return _REGIONS_2024.get(task, {}).get(region, _TASKS_2024[task])
