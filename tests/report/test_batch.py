"""The skeleton the segment and evaluate jobs share (brats.report.batch): their output
settings on the command line, their errors, exit codes and summaries, and the report with
thumbnails read from the files a job names."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from brats.cli import evaluate_parser, segment_parser
from brats.errors import BratsError, CaseError
from brats.evaluate.job import EvaluateConfig, EvaluateError, EvaluateResult
from brats.io.nifti import Limits
from brats.options import parse_config
from brats.report.batch import (
    CaseFiles,
    JobConfig,
    JobError,
    JobResult,
    VolumeFile,
    load_case,
    write_job_report,
)
from brats.report.write import REPORT_FILES
from brats.segment.job import SegmentConfig, SegmentError, SegmentResult
from brats.storage import resolve
from brats.volume.labels import BRATS2020, BRATS2023
from tests.helpers import done_record, report_metrics, tiny_volumes


@dataclass(frozen=True)
class CountingResult(JobResult):
    out: str
    done: int
    failed: list[dict[str, Any]]
    report: dict[str, str]
    seconds: float

    def counts(self) -> dict[str, Any]:
        return {"done": self.done}


FAILURE = [{"case_id": "x", "error": "case x: broken"}]


def test_exit_code_is_1_for_any_failure_when_asked_or_when_nothing_succeeded():
    assert CountingResult("o", 2, [], {}, 0.0).exit_code() == 0
    assert CountingResult("o", 2, FAILURE, {}, 0.0).exit_code() == 0
    assert CountingResult("o", 2, FAILURE, {}, 0.0).exit_code(fail_on_error=True) == 1
    assert CountingResult("o", 2, [], {}, 0.0).exit_code(fail_on_error=True) == 0
    assert CountingResult("o", 0, [], {}, 0.0).exit_code() == 1


def test_segment_counts_skipped_cases_as_success_and_evaluate_does_not():
    segmented = SegmentResult("o", "v", 4, 4, 0, [], {}, 0.0)
    assert segmented.exit_code() == 0
    assert SegmentResult("o", "v", 4, 0, 0, FAILURE, {}, 0.0).exit_code() == 1
    assert EvaluateResult("o", 4, 0, [], [], {}, 0.0).exit_code() == 1
    assert EvaluateResult("o", 4, 1, [], FAILURE, {}, 0.0).exit_code() == 0


def test_summaries_print_each_jobs_keys_in_order():
    segmented = SegmentResult("o", "v", 5, 1, 3, FAILURE, {"report.csv": "o/report.csv"}, 2.26)
    assert segmented.summary() == {
        "status": "ok",
        "out": "o",
        "model_version": "v",
        "cases": 5,
        "skipped": 1,
        "done": 3,
        "failed": FAILURE,
        "report": {"report.csv": "o/report.csv"},
        "seconds": 2.3,
    }
    assert list(segmented.summary())[:6] == [
        "status", "out", "model_version", "cases", "skipped", "done",
    ]  # fmt: skip
    scored = EvaluateResult("o", 3, 2, ["c"], [], {}, 1.04)
    assert list(scored.summary()) == [
        "status", "out", "cases", "done", "missing_predictions", "failed", "report", "seconds",
    ]  # fmt: skip
    assert scored.summary()["missing_predictions"] == ["c"] and scored.summary()["seconds"] == 1.0


def test_jobs_cannot_run_errors_share_one_base():
    for error in (SegmentError, EvaluateError):
        assert issubclass(error, JobError) and issubclass(error, RuntimeError)
        assert issubclass(error, BratsError)
    assert not issubclass(SegmentError, EvaluateError)


@pytest.mark.parametrize(
    ("parser", "cls", "required"),
    [
        (segment_parser, SegmentConfig, ["--cohort", "c", "--model", "m"]),
        (evaluate_parser, EvaluateConfig, ["--pred", "p", "--truth", "t"]),
    ],
)
def test_both_jobs_take_the_shared_output_flags(parser, cls, required):
    assert issubclass(cls, JobConfig)
    plain = parse_config(cls, parser().parse_args([*required, "--out", "o"]))
    assert (plain.out, plain.s3_endpoint, plain.fail_on_error) == ("o", None, False)
    assert plain.limits == Limits()
    argv = [*required, "--out", "s3://b/o", "--s3-endpoint", "http://e:9000", "--fail-on-error"]
    given = parse_config(cls, parser().parse_args([*argv, "--max-bytes", "99"]))
    assert (given.out, given.s3_endpoint) == ("s3://b/o", "http://e:9000")
    assert given.fail_on_error is True
    assert given.limits == Limits(max_bytes=99)
    with pytest.raises(SystemExit):
        parser().parse_args(required)  # --out is required


def test_the_shared_flags_keep_their_help():
    for parser in (segment_parser(), evaluate_parser()):
        helps = {a.option_strings[0]: a.help for a in parser._actions if a.option_strings}
        assert helps["--out"] == "output folder: local or s3://"
        assert helps["--fail-on-error"] == "exit 1 when any case failed"
        assert helps["--s3-endpoint"].startswith("S3-compatible endpoint URL")
        assert helps["--max-bytes"].startswith("largest voxel data one file may declare")


def save(path, data) -> str:
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), str(path))
    return str(path)


def on_disk_2020(internal: np.ndarray) -> np.ndarray:
    """Internal classes as brats2020 writes them (ET as 4)."""
    return np.where(internal == 3, 4, internal).astype(np.uint8)


@pytest.fixture
def case_files(tmp_path):
    """``case_a``'s FLAIR, brats2020 prediction and truth on disk, as CaseFiles."""
    image, pred, truth = tiny_volumes(5)
    root = resolve(str(tmp_path))
    return CaseFiles(
        flair=VolumeFile(root, save(tmp_path / "flair.nii.gz", image)),
        pred=VolumeFile(root, save(tmp_path / "pred.nii.gz", on_disk_2020(pred)), BRATS2020),
        truth=VolumeFile(root, save(tmp_path / "truth.nii.gz", truth), BRATS2020),
    )


def test_a_case_loads_in_internal_classes(case_files):
    image, pred, truth = tiny_volumes(5)
    flair, got_pred, got_truth = load_case("case_a", find=lambda _: case_files, limits=Limits())
    assert flair.dtype == np.float32 and np.array_equal(flair, image)
    np.testing.assert_array_equal(got_pred, pred)  # 4 on disk read as brats2020: class 3
    np.testing.assert_array_equal(got_truth, truth)
    without = CaseFiles(case_files.flair, None, None)
    flair, empty, no_truth = load_case("case_a", find=lambda _: without, limits=Limits())
    assert empty.shape == image.shape and not empty.any() and no_truth is None


def test_a_label_file_outside_its_scheme_is_a_case_error_naming_it(case_files):
    stray = VolumeFile(case_files.pred.root, case_files.pred.path, BRATS2023)
    files = CaseFiles(case_files.flair, stray, None)
    with pytest.raises(CaseError, match=r"case case_a: pred\.nii\.gz: "):
        load_case("case_a", find=lambda _: files, limits=Limits())
    with pytest.raises(CaseError, match="over the limit"):
        load_case("case_a", find=lambda _: case_files, limits=Limits(max_bytes=16))


def test_a_label_file_is_read_in_the_scheme_it_is_given_never_guessed(case_files):
    """A 4 is not taken for a 2020 ET because it is there: the file is in BraTS 2023's
    scheme (the default) unless the dataset's scheme says otherwise."""
    unnamed = VolumeFile(case_files.pred.root, case_files.pred.path)
    with pytest.raises(CaseError, match=r"labels \[4\] are not in the brats2023 scheme"):
        load_case(
            "case_a", find=lambda _: CaseFiles(case_files.flair, unnamed, None), limits=Limits()
        )


def test_the_report_draws_thumbnails_from_the_files_a_job_names(tmp_path, case_files):
    records = [
        done_record("case_a", report_metrics(0.9)),
        done_record("case_b", report_metrics(0.4)),
    ]

    def find(case_id: str) -> CaseFiles:
        if case_id == "case_b":
            raise CaseError(case_id, None, "no FLAIR in the cohort to draw")
        return case_files

    out = resolve(str(tmp_path / "out"))
    written = write_job_report(records, out, find=find, limits=Limits())
    assert sorted(written) == sorted(REPORT_FILES)
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    pictures = re.findall(r'alt="case (case_\w+), axial slice', page)
    assert pictures == ["case_a"]  # the best of two; the worst, case_b, has a note
    assert "No thumbnail: CaseError: case case_b: no FLAIR in the cohort to draw" in page
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert all(base64.b64decode(p).startswith(b"\x89PNG") for p in pngs)

    bare = write_job_report(records, resolve(str(tmp_path / "bare")), find=None, limits=Limits())
    assert sorted(bare) == sorted(REPORT_FILES)
    bare_page = (tmp_path / "bare" / "report.html").read_text(encoding="utf-8")
    assert "No thumbnail" not in bare_page and 'alt="case ' not in bare_page
