"""The segmentation job's settings and exit rules (brats.segment.job), without Ray."""

from __future__ import annotations

import pytest

from brats.segment.job import SegmentConfig, SegmentResult
from brats.segment.predictor import PredictSettings
from brats.volume.labels import BRATS2020, BRATS2023, GLI2024, MEN2023, MET2023


def test_exit_code_rules():
    def result(done, skipped, failed):
        return SegmentResult("o", "v", done + skipped + len(failed), skipped, done, failed, {}, 0)

    assert result(3, 0, [{"case_id": "x"}]).exit_code() == 0
    assert result(3, 0, [{"case_id": "x"}]).exit_code(fail_on_error=True) == 1
    assert result(0, 0, [{"case_id": "x"}]).exit_code() == 1  # nothing succeeded
    assert result(0, 4, []).exit_code() == 0  # all done before: a success


def test_output_settings_are_what_decides_a_masks_bytes():
    config = SegmentConfig(cohort="c", model="m", out="o")
    assert config.output_settings(BRATS2023) == {
        "label_convention": None,  # a cohort's own glioma values, in the words of before
        "min_et_voxels": 0,
        "overlap": 0.5,
        "tta": "model",
    }
    for scheme in (BRATS2020, MET2023, MEN2023):  # read as a 2020 or 2023 cohort before
        assert config.output_settings(scheme) == config.output_settings(BRATS2023)
    faster = SegmentConfig(cohort="c", model="m", out="o", predict=PredictSettings(batch_size=8))
    assert faster.output_settings(BRATS2023) == config.output_settings(
        BRATS2023
    )  # speed is not an output
    other = SegmentConfig(
        cohort="c",
        model="m",
        out="o",
        label_scheme="gli2024",
        predict=PredictSettings(flip_tta=True, min_et_voxels=5, overlap=0.25),
    )
    assert other.label_scheme == "gli2024"
    assert other.output_settings(GLI2024) == {
        "label_scheme": "gli2024",
        "min_et_voxels": 5,
        "overlap": 0.25,
        "tta": "on",
    }


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PredictSettings(overlap=1.0), "overlap must be in"),
        (lambda: PredictSettings(batch_size=0), "batch_size must be"),
        (lambda: PredictSettings(min_et_voxels=-1), "min_et_voxels"),
        (lambda: PredictSettings(flip_tta=True, no_tta=True), "opposite"),
        (lambda: PredictSettings.with_tta("always"), "model, on or off"),
        (lambda: SegmentConfig(cohort="c", model="m", out="o", num_actors=0), "num_actors"),
        (lambda: SegmentConfig(cohort="c", model="m", out="o", num_actors="4:2"), "MIN <= MAX"),
        (lambda: SegmentConfig(cohort="c", model="m", out="o", num_actors="two"), "MIN:MAX"),
    ],
)
def test_settings_refuse_what_cannot_run(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_num_actors_is_a_count_or_a_range_from_the_command_line():
    from brats.cli import segment_parser
    from brats.options import parse_config
    from brats.resources import Replicas

    def parsed(*flags: str) -> SegmentConfig:
        args = segment_parser().parse_args(["--cohort", "c", "--model", "m", "--out", "o", *flags])
        return parse_config(SegmentConfig, args)

    assert parsed().num_actors == Replicas(1, 1)
    assert parsed("--num-actors", "4").num_actors == Replicas(4, 4)
    elastic = parsed("--num-actors", "1:8").num_actors
    assert (elastic.min, elastic.max, elastic.fixed, str(elastic)) == (1, 8, False, "1:8")
    assert SegmentConfig(cohort="c", model="m", out="o", num_actors=3).num_actors == Replicas(3, 3)
    with pytest.raises(SystemExit):
        parsed("--num-actors", "0:2")


@pytest.mark.parametrize(
    ("where", "uri", "reason"),
    [
        ("cohort", "gs://b/incoming", "unsupported storage scheme 'gs'"),
        ("model", "s3://AKIAEXAMPLE:wJalrSECRET@b/model", "credentials in a storage URI"),
        ("out", "s3://user:pw@b/out", "credentials in a storage URI"),
        ("out", "s3:///out", "no bucket"),
    ],
)
def test_a_uri_that_cannot_be_used_is_a_segment_error_naming_the_argument(
    tmp_path, where, uri, reason
):
    from brats.report.batch import JobError
    from brats.segment.job import SegmentError, segment

    given = {"cohort": str(tmp_path), "model": str(tmp_path / "model"), "out": str(tmp_path)}
    given[where] = uri
    with pytest.raises(SegmentError, match=reason) as info:
        segment(SegmentConfig(**given))  # refused before Ray or any storage is touched
    assert isinstance(info.value, JobError)  # the CLI's failed result, not a traceback
    message = str(info.value)
    assert message.startswith(f"--{where} ")
    assert not any(secret in message for secret in ("wJalrSECRET", "AKIAEXAMPLE", ":pw@"))
