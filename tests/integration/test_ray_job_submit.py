"""``ray start --head`` + ``ray job submit``: the segmentation job the way a user submits it.

The test starts its own Ray (its own temp dir and ports, beside the suite's in-process Ray),
submits ``jobs/segment.py`` with ``--working-dir``, waits for SUCCEEDED, checks the outputs,
and stops only the processes of the Ray it started (``ray stop`` would stop every Ray here).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import train_tiny_model

N_CASES = 6

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if text in cmdline and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


def _stop_cluster(temp_dir: str) -> None:
    """SIGTERM, then SIGKILL, every process of the Ray whose temp dir is ``temp_dir``."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        for pid in _pids_mentioning(temp_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _pids_mentioning(temp_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _pids_mentioning(temp_dir):
            return


@pytest.fixture(scope="module")
def ray_head():
    """A ``ray start --head`` cluster with token auth on (Ray 2.60's default for the CLI)."""
    gcs, dashboard, agent, agent_grpc, metrics, runtime_env, client = _free_ports(7)
    # Short path: Ray's unix sockets live under it and have a length limit.
    temp_dir = tempfile.mkdtemp(prefix="brj", dir="/tmp")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
    }
    env.pop("RAY_ADDRESS", None)
    started = subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={gcs}",
            f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1",
            "--include-dashboard=true",
            f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--ray-client-server-port={client}",
            "--num-cpus=2",
            "--object-store-memory=400000000",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        _stop_cluster(temp_dir)


def _submit(address: str, env: dict[str, str], submission_id: str, args: list[str]) -> str:
    """``ray job submit``, retried while the new cluster's job agent is still starting."""
    command = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        address,
        "--submission-id",
        submission_id,
        "--working-dir",
        str(REPO),
        "--",
        *args,
    ]
    deadline = time.monotonic() + 120
    while True:
        done = subprocess.run(
            command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600
        )
        output = done.stdout + done.stderr
        if "No available agent" not in output or time.monotonic() > deadline:
            return output
        time.sleep(2)


def _status(address: str, env: dict[str, str], submission_id: str) -> str:
    """The job's status as Ray's SDK names it (``SUCCEEDED``, ``FAILED``, ...)."""
    probe = (
        "import sys; from ray.job_submission import JobSubmissionClient; "
        "print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]).value)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, address, submission_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr


@pytest.mark.integration
def test_segmentation_job_submitted_with_ray_job_submit(ray_head, tmp_path_factory):
    from brats.devtools.synth import SynthConfig, generate_cohort

    address, env = ray_head
    cohort = tmp_path_factory.mktemp("job-cohort")
    generate_cohort(cohort, N_CASES, SynthConfig(shape=(32, 32, 24), seed=21))
    model = train_tiny_model(cohort, str(tmp_path_factory.mktemp("job-model")), seed=0)
    out = tmp_path_factory.mktemp("job") / "nightly"

    output = _submit(
        address,
        env,
        "brats-test-segment",
        ["python", "jobs/segment.py", "--cohort", str(cohort), "--model", model, "--out", str(out)],
    )
    assert _status(address, env, "brats-test-segment") == "SUCCEEDED", output
    printed = json.loads(output[output.index("{\n") : output.rindex("\n}") + 2])
    assert printed["status"] == "ok" and printed["done"] == N_CASES
    assert len(list((out / "masks").glob("*.nii.gz"))) == N_CASES
    assert (out / "_SUCCESS").is_file() and (out / "report.html").is_file()
