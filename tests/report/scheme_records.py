"""Report records of any label scheme, for the report's scheme tests."""

from __future__ import annotations

from brats.report.records import CaseRecord
from brats.volume.labels import LabelScheme
from brats.volume.metrics import metric_keys


def scheme_metrics(scheme: LabelScheme, dice: float) -> dict[str, float]:
    """Every metric key of ``scheme`` 0.5, Dice ``dice`` in every region, one TP lesion each."""
    values = dict.fromkeys(metric_keys(scheme), 0.5)
    for region in scheme.regions:
        values[f"dice_{region}"] = dice
        values.update({f"lesion_tp_{region}": 1.0, f"lesion_fp_{region}": 0.0})
        values[f"lesion_fn_{region}"] = 0.0
    return values


def scheme_record(case_id: str, scheme: LabelScheme, dice: float | None) -> CaseRecord:
    """A ``done`` record scored in ``scheme`` (no metrics when ``dice`` is None)."""
    return CaseRecord.from_dict(
        {
            "case_id": case_id,
            "status": "done",
            "model_version": "c" * 64,
            "mask": f"masks/{case_id}.nii.gz",
            "label_scheme": scheme.name,
            "shape": [16, 16, 8],
            "spacing": [1.0, 1.0, 1.0],
            "timings": {"read_s": 0.5, "predict_s": 2.0, "write_s": 0.25},
            "region_volumes_ml": {r: float(i + 1) for i, r in enumerate(scheme.regions)},
            "metrics": None if dice is None else scheme_metrics(scheme, dice),
            "created": "2026-11-25T12:00:00+00:00",
            "settings": {},
        }
    )
