"""The scale benchmark on a few cases: it runs both jobs for both sizes on the session's Ray
and reports figures that fit together (its speed is measured by running it, never here)."""

from __future__ import annotations

import pytest

from brats.benchmarks.command import benchmark_parser
from brats.benchmarks.probes import ListingCounter
from brats.benchmarks.scale import ScaleBenchmark, run, synthetic_records
from brats.options import parse_config


def test_listing_counter_counts_outer_calls_and_restores_the_filesystem(tmp_path):
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.txt").write_text("x")
    fs = fsspec.filesystem("file")
    before = LocalFileSystem.find
    with ListingCounter() as counter:
        assert len(fs.find(str(tmp_path))) == 2
        fs.ls(str(tmp_path))
    assert counter.calls == {"find": 1, "ls": 1}
    assert counter.folder_reads == 4  # find read the root and both folders
    assert counter.entries == 4 and counter.s3_list_pages == 2
    assert LocalFileSystem.find is before


def test_synthetic_records_fail_every_hundredth():
    records = synthetic_records(250, seed=0)
    assert [r.case_id for r in records if not r.done] == ["synth000099", "synth000199"]
    assert synthetic_records(250, seed=0)[3].metrics == records[3].metrics


@pytest.mark.integration
def test_the_benchmark_reports_consistent_figures(ray_session):
    argv = ["scale", "--cases", "2", "4", "--warmup-cases", "0", "--report-records", "150"]
    settings = parse_config(ScaleBenchmark, benchmark_parser().parse_args(argv))
    assert settings.cases == (2, 4)
    figures = run(settings)
    steps = figures["steps"]
    assert sorted(steps) == ["2", "4"]
    for n, step in ((2, steps["2"]), (4, steps["4"])):
        assert step["cases"] == n and step["report"]["records"] == n
        assert step["report"]["html_bytes"] > 0 and step["report"]["write_report_s"] > 0
        rss = step["rss_mb"]
        assert step["peak_rss_mb"] >= rss["sampled_peak"] >= rss["after_evaluate"] > 0
        assert step["driver_cpu_s"]["segment"] > 0
        for job in ("segment", "evaluate"):
            assert step["listing"][job]["calls"].get("find", 0) >= 1
    small, large = steps["2"]["seconds"], steps["4"]["seconds"]
    together = (large["segment"] + large["evaluate"]) / 4
    assert figures["seconds_per_case"]["together"]["4"] == pytest.approx(together, abs=1e-4)
    ratio = (large["segment"] / 4) / (small["segment"] / 2)
    assert figures["per_case_ratio"]["segment"] == pytest.approx(ratio, rel=1e-2)
    assert figures["rss_growth_mb"] == pytest.approx(
        steps["4"]["rss_mb"]["sampled_peak"] - steps["2"]["rss_mb"]["sampled_peak"], abs=0.1
    )
    assert figures["report_in_memory"]["records"] == 150
    assert figures["meets_targets"] in (True, False)
