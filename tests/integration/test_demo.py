"""The README's main command, at the reduced size CI runs: the whole pipeline end to end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from ray.util.annotations import RayDeprecationWarning

from brats.devtools.demo import main


@pytest.mark.integration
def test_small_demo_runs_the_whole_pipeline_and_says_where_it_went(tmp_path, ray_session, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["--small", "--out", str(tmp_path / "demo")]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    # Nothing deprecated in Ray is used: no warning in the driver, none in any worker's log.
    assert not [w for w in caught if issubclass(w.category, RayDeprecationWarning)]
    assert "will be removed in Ray" not in printed + captured.err
    start = printed.index('{\n  "out"')
    summary = json.loads(printed[start : printed.index("\n}\n", start) + 2])
    assert summary["ingest"]["ok"] == 6 and len(summary["ingest"]["failed"]) == 2
    assert summary["train"]["epochs"] == 2
    assert summary["segment"]["done"] == 2
    assert [e.split(":")[0] for e in summary["segment"]["failed"]] == ["case Broken_nan"]
    sites = summary["held_out_mean_dice"]
    assert list(sites) == ["site a (training)", "site b"]
    for dice in sites.values():
        assert set(dice) == {"WT", "TC", "ET"} and all(0.0 <= v <= 1.0 for v in dice.values())
    other = Path(summary["out"]) / "segmented-site-b"
    assert len(list((other / "masks").iterdir())) == 2 and (other / "_SUCCESS").is_file()
    masks = Path(summary["segment"]["masks"])
    assert len(list(masks.iterdir())) == 2
    assert (masks.parent / "report.html").is_file() and (masks.parent / "_SUCCESS").is_file()
    assert (Path(summary["train"]["model"]) / "model.json").is_file()
    assert f"report: {masks.parent / 'report.html'}" in printed
    assert "held-out mean Dice, site a (training): WT " in printed
    assert "held-out mean Dice, site b: WT " in printed
