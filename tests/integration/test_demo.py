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
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
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
    # What a person reads: a table of the held-out Dice and where things went, no JSON dump.
    assert f"report:  {masks.parent / 'report.html'}" in printed
    assert '"held_out_mean_dice"' not in printed
    table = printed[printed.index("held-out mean Dice") :].splitlines()
    assert table[0].split() == ["held-out", "mean", "Dice", "WT", "TC", "ET"]
    for line, (site, dice) in zip(table[1:3], sites.items(), strict=True):
        assert line.startswith(site)
        assert [float(v) for v in line[len(site) :].split()] == [
            dice[r] for r in ("WT", "TC", "ET")
        ]
    assert "  segment  2 held-out cases, 1 refused: case Broken_nan" in printed
