"""Starting Ray for a job (``brats.runtime.init_ray``) in real processes: a stale local cluster
is never joined, a dead address fails fast with a message, and TensorFlow stays quiet in
Ray workers.

Each test runs its job in a subprocess with its own ``RAY_TMPDIR`` (where ``ray start``
records the cluster it started, and where ``ray.init`` looks for it), so neither the suite's
Ray nor Ray's default temp directory is touched; every process of a test's Ray mentions that
directory on its command line, and only those are killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from brats.runtime import TENSORFLOW_NOISE
from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

JOB = """
import sys
from brats.runtime import init_ray, setup_logging

setup_logging()
init_ray(num_cpus=1)
import ray
import ray._private.worker as worker

@ray.remote
def add():
    import tensorflow as tf

    print("task done", file=sys.stderr, flush=True)
    return int(tf.add(1, 1))

print("sum", ray.get(add.remote()))
print("session", worker._global_node.get_session_dir_path())
ray.shutdown()
"""
"""A tiny job: start Ray as every job does, run one task that imports TensorFlow."""


@pytest.fixture
def ray_tmpdir() -> Iterator[str]:
    # Short: Ray's unix sockets live under it and have a length limit.
    path = tempfile.mkdtemp(prefix="brt", dir="/tmp")
    try:
        yield path
    finally:
        _kill_processes_mentioning(path)
        shutil.rmtree(path, ignore_errors=True)


def _env(ray_tmpdir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_TMPDIR=ray_tmpdir, PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    return env


def _kill_processes_mentioning(text: str) -> list[int]:
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if text in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed


def test_a_job_starts_its_own_ray_beside_a_killed_cluster_that_ray_still_remembers(ray_tmpdir):
    env = _env(ray_tmpdir)
    gcs = free_port()
    ports = {
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    started = subprocess.run(
        [str(BIN / "ray"), "start", "--head", "--num-cpus=1", f"--port={gcs}"]
        + [f"{flag}={port}" for flag, port in ports.items()]
        + ["--include-dashboard=false", "--disable-usage-stats"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    # The cluster dies without `ray stop`: Ray's record of it stays behind.
    assert _kill_processes_mentioning(ray_tmpdir)
    recorded = Path(ray_tmpdir, "ray", "ray_current_cluster").read_text().strip()
    assert recorded.endswith(f":{gcs}")

    done = subprocess.run(
        [sys.executable, "-c", JOB], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sum 2" in done.stdout
    assert f":{gcs}" not in done.stderr  # never tried the dead cluster
    # Its workers imported TensorFlow without start-up noise. What a worker writes reaches
    # the driver's terminal; its log file is checked too, once the task's own line is in it.
    session = Path(done.stdout.split("session", 1)[1].split()[0])
    logs = [p.read_text(errors="replace") for p in (session / "logs").glob("worker-*.err")]
    task_logs = [text for text in logs if "task done" in text]
    assert task_logs, "the task's worker log was not found"
    for text in [*task_logs, done.stderr]:
        assert not [line for line in text.splitlines() if TENSORFLOW_NOISE.search(line)]


def test_a_job_given_a_dead_address_fails_within_seconds_naming_it(ray_tmpdir, tmp_path):
    port = free_port()  # nothing listens there
    env = _env(ray_tmpdir, RAY_ADDRESS=f"127.0.0.1:{port}")
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "jobs/ingest.py", "--cohort", str(tmp_path), "--out", str(tmp_path / "o")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert time.monotonic() - began < 45
    assert f"127.0.0.1:{port}" in done.stderr, done.stderr[-3000:]
    assert "ray stop" in done.stderr and "RAY_ADDRESS" in done.stderr
    assert "Traceback" not in done.stderr
