"""Nightly submission: the pure parts (no Ray cluster is started here).

The submission itself against a real ``ray start --head`` is covered end to end elsewhere.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from brats.cli import parse_nightly as parse_args
from brats.segment import nightly
from brats.segment.nightly import (
    build_entrypoint,
    build_runtime_env,
    force_suffix,
    is_already_submitted,
    output_prefix,
    submission_id,
    unfinished,
    validate_date,
)
from tests.helpers import FAKE_SECRETS, free_port

ROOT = Path(__file__).resolve().parents[2]
BASE = [
    "--address",
    "http://127.0.0.1:8265",
    "--cohort",
    "s3://b/incoming",
    "--model",
    "s3://b/runs/unet-v1/model",
    "--out-root",
    "s3://b/nightly",
]


def test_entrypoint_and_prefix_for_s3():
    out = output_prefix("s3://b/nightly", "2026-11-25")
    assert out == "s3://b/nightly/2026-11-25"
    assert output_prefix("s3://b/nightly/", "2026-11-25") == out
    assert output_prefix("s3://b", "2026-11-25") == "s3://b/2026-11-25"
    entry = build_entrypoint("s3://b/incoming", "s3://b/runs/unet-v1/model", out, ["--use-gpu"])
    assert entry == (
        "python jobs/segment.py --cohort s3://b/incoming --model s3://b/runs/unet-v1/model "
        "--out s3://b/nightly/2026-11-25 --use-gpu"
    )


def test_entrypoint_and_prefix_for_a_local_root(tmp_path):
    root = tmp_path / "night outs"
    out = output_prefix(f"{root}/", "2026-11-25")
    assert out == f"{root}/2026-11-25"
    assert output_prefix("./nightly", "2026-01-02") == "./nightly/2026-01-02"
    entry = build_entrypoint(str(tmp_path / "cohort"), str(tmp_path / "model"), out)
    assert shlex.split(entry) == [
        "python",
        "jobs/segment.py",
        "--cohort",
        str(tmp_path / "cohort"),
        "--model",
        str(tmp_path / "model"),
        "--out",
        out,
    ]


@pytest.mark.parametrize(
    "cohort",
    ["s3://b/in; rm -rf ~", "s3://b/$(touch pwned)", "s3://b/`id`", "s3://b/a'b\"c", "x\ny &"],
)
def test_hostile_values_stay_single_arguments(cohort):
    entry = build_entrypoint(cohort, "m", "s3://b/nightly/2026-11-25", ["--num-actors", "2"])
    argv = shlex.split(entry)
    assert argv[argv.index("--cohort") + 1] == cohort
    assert len(argv) == 10


@pytest.mark.parametrize("bad_root", ["", "/", "s3://", "s3:///"])
def test_output_prefix_needs_a_root(bad_root):
    with pytest.raises(ValueError):
        output_prefix(bad_root, "2026-11-25")


@pytest.mark.parametrize("good", ["2026-11-25", "2024-02-29", "1999-12-31"])
def test_valid_dates(good):
    assert validate_date(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "2026-02-30",
        "2025-02-29",
        "2026-13-01",
        "20261125",
        "2026-W48-3",
        "2026-1-5",
        "26-11-25",
        "2026-11-25 ",
        "2026-11-25\n",
        "2026-11-25; rm -rf /",
        "../2026-11-25",
        "2026/11/25",
        "２０２６-11-25",
    ],
)
def test_bad_dates_refused(bad):
    with pytest.raises(ValueError):
        validate_date(bad)
    with pytest.raises(ValueError):
        output_prefix("s3://b/nightly", bad)
    with pytest.raises(ValueError):
        submission_id(bad)


def test_submission_id_from_the_date():
    assert submission_id("2026-11-25") == "brats-segment-2026-11-25"
    assert submission_id("2026-11-25", "r2") == "brats-segment-2026-11-25-r2"
    moment = datetime(2026, 11, 25, 3, 15, 7, tzinfo=timezone(timedelta(hours=1)))
    assert force_suffix(moment) == "r20261125T021507Z"
    assert force_suffix(datetime.now(UTC)).startswith("r")
    for bad in ("", "-x", "a b", "a/b", "a;b"):
        with pytest.raises(ValueError):
            submission_id("2026-11-25", bad)


def test_already_submitted_is_recognised_from_rays_refusal():
    refusal = RuntimeError(
        "Request failed with status code 400: Job with submission_id "
        "brats-segment-2026-11-25 already exists. Please use a different submission_id.."
    )
    assert is_already_submitted(refusal)
    assert not is_already_submitted(RuntimeError("Request failed with status code 500: boom"))


def test_runtime_env_carries_no_credentials(monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", "fake-session-token-for-the-test")
    assert os.environ["AWS_ACCESS_KEY_ID"] == FAKE_SECRETS[0]  # set by conftest
    env = build_runtime_env(ROOT)
    assert set(env) == {"working_dir", "excludes"}
    assert Path(env["working_dir"]) == ROOT
    assert {".venv", ".git", "demo-out", "bench-out", "runs"} <= set(env["excludes"])
    dumped = json.dumps(env)
    assert "AWS" not in dumped.upper()
    assert not any(s in dumped for s in [*FAKE_SECRETS, "fake-session-token-for-the-test"])


def test_runtime_env_needs_the_repository(tmp_path):
    with pytest.raises(ValueError, match=r"jobs/segment\.py"):
        build_runtime_env(tmp_path)


def test_parse_args_defaults_and_extra_segment_args():
    config = parse_args([*BASE, "--", "--use-gpu", "--num-actors", "8"])
    assert config.date == date.today().isoformat()
    assert not config.wait and not config.force
    assert config.timeout > 0 and config.poll > 0
    assert config.working_dir == ROOT
    assert config.segment_args == ("--use-gpu", "--num-actors", "8")
    assert config.submission_id == f"brats-segment-{config.date}"
    assert config.out == f"s3://b/nightly/{config.date}"
    assert shlex.split(config.entrypoint)[-3:] == ["--use-gpu", "--num-actors", "8"]

    config = parse_args([*BASE, "--date", "2026-11-25", "--wait", "--timeout", "60", "--force"])
    assert (config.date, config.wait, config.timeout, config.force) == (
        "2026-11-25",
        True,
        60.0,
        True,
    )
    assert config.segment_args == ()
    assert "--out s3://b/nightly/2026-11-25" in config.entrypoint


@pytest.mark.parametrize(
    "argv",
    [
        [*BASE, "--date", "2026-02-30"],
        [*BASE, "--date", "25/11/2026"],
        [*BASE, "--timeout", "0"],
        [*BASE, "--", "--out", "s3://elsewhere"],
        [*BASE, "--", "--ou", "s3://elsewhere"],  # an abbreviation of --out
        [*BASE, "--", "--cohort", "s3://other"],
        [*BASE, "--", "--num-actors", "many"],
        [*BASE, "--", "--no-such-option"],
        [*BASE, "--use-gpu"],  # segment options go after --
        BASE[:-2],  # no --out-root
        [*BASE, "--working-dir", "/"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (
            [*BASE[:3], "s3://AKIAEXAMPLE:wJalrSECRET@b/incoming", *BASE[4:]],
            "--cohort s3://b/incoming: credentials",
        ),
        (
            [*BASE[:5], "s3://AKIAEXAMPLE:wJalrSECRET@b/model", *BASE[6:]],
            "--model s3://b/model: credentials",
        ),
        (
            [*BASE[:7], "s3://AKIAEXAMPLE:wJalrSECRET@b/nightly"],
            "--out-root s3://b/nightly: credentials",
        ),
        (
            [*BASE, "--", "--s3-endpoint", "http://minio:wJalrSECRET@minio.local:9000"],
            "--s3-endpoint http://minio.local:9000: credentials",
        ),
        ([*BASE[:3], "gs://b/incoming", *BASE[4:]], "--cohort gs://b/incoming: unsupported"),
        ([*BASE[:7], "s3://b/nightly?versionId=1"], "--out-root may not contain '?' or '#'"),
        ([*BASE[:7], "/data/nightly#latest"], "--out-root may not contain '?' or '#'"),
    ],
)
def test_credentials_and_query_roots_are_refused_by_name(argv, named, capsys, caplog):
    """Arguments are logged and sent as the job's entrypoint: none may carry a secret, and
    an output root whose query or fragment would swallow the date is no root."""
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert named in err
    assert "wJalrSECRET" not in err + caplog.text
    assert "AKIAEXAMPLE" not in err + caplog.text


def test_entrypoint_refuses_credentials_in_any_argument():
    out = "s3://b/nightly/2026-11-25"
    with pytest.raises(ValueError, match=r"^--out s3://b/o: credentials"):
        build_entrypoint("s3://b/in", "s3://b/m", "s3://key:secret@b/o")
    with pytest.raises(ValueError, match=r"^--s3-endpoint http://minio:9000: credentials"):
        build_entrypoint("s3://b/in", "s3://b/m", out, ["--s3-endpoint=http://k:s@minio:9000"])
    for root in ("s3://b/nightly?x=1", "s3://b/nightly#x"):
        with pytest.raises(ValueError, match=r"--out-root may not contain"):
            output_prefix(root, "2026-11-25")
    # An endpoint without credentials is an ordinary segment option.
    entry = build_entrypoint("s3://b/in", "s3://b/m", out, ["--s3-endpoint", "http://minio:9000"])
    assert shlex.split(entry)[-2:] == ["--s3-endpoint", "http://minio:9000"]


def test_cron_line_in_the_docstring_parses():
    assert nightly.__doc__
    cron = [
        line.strip() for line in nightly.__doc__.splitlines() if line.strip().startswith("15 2 ")
    ]
    assert len(cron) == 1, "one single-line cron entry"
    words = shlex.split(cron[0])
    assert "RAY_AUTH_MODE=token" in words
    args = words[words.index("jobs/nightly.py") + 1 : words.index(">>")]
    config = parse_args(args)
    assert config.wait
    assert "%" not in cron[0], "cron turns % into newlines"


def test_job_script_reports_an_unreachable_cluster():
    """The thin script end to end, against a closed port (no Ray is started)."""
    address = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [
            sys.executable,
            "jobs/nightly.py",
            *BASE[2:],
            "--address",
            address,
            "--date",
            "2026-11-25",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == nightly.EXIT_CLUSTER, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["submission_id"] == "brats-segment-2026-11-25"
    assert summary["status"] == "error"
    assert summary["out"] == "s3://b/nightly/2026-11-25"


def test_force_sees_every_unfinished_job_of_the_date_not_only_the_first():
    """Two --force runs: the second must see the first forced job (suffixed id) running."""
    from ray.job_submission import JobDetails, JobStatus, JobType

    def job(sid: str, status: JobStatus) -> JobDetails:
        return JobDetails(type=JobType.SUBMISSION, submission_id=sid, entrypoint="e", status=status)

    first = submission_id("2026-11-25")
    jobs = [
        job(first, JobStatus.SUCCEEDED),
        job(submission_id("2026-11-25", "r20261125T090000Z"), JobStatus.RUNNING),
        job(submission_id("2026-11-25", "r20261125T080000Z"), JobStatus.FAILED),
        job(submission_id("2026-11-26"), JobStatus.RUNNING),  # another date
        job("brats-segment-2026-11-250", JobStatus.PENDING),  # not this date's
    ]
    assert unfinished(jobs, "2026-11-25") == [(f"{first}-r20261125T090000Z", "RUNNING")]
    assert unfinished(jobs[:1], "2026-11-25") == []
