"""brats.runtime: TensorFlow's log level per node kind, its oneDNN kernels, and replica
counts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from brats.runtime import Replicas, quiet_tensorflow


def test_tensorflow_logs_errors_on_gpu_nodes_and_only_fatal_on_cpu_nodes(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert quiet_tensorflow(str(tmp_path)) == "3"  # no NVIDIA device: cuInit errors are noise
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    (tmp_path / "nvidia0").touch()
    assert quiet_tensorflow(str(tmp_path)) == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # a level someone set wins
    assert quiet_tensorflow(str(tmp_path)) == "0"


@pytest.mark.parametrize(("setting", "on"), [(None, True), ("0", False)])
def test_importing_brats_turns_on_onednn_unless_the_environment_says_otherwise(setting, on):
    """TensorFlow says so on its first op when oneDNN is on; on a CPU without AVX512_VNNI,
    AVX512_BF16 or AMX it is off unless asked for. Real processes: the variable is read when
    TensorFlow loads."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # the notice is an INFO line
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    code = (
        "import brats, os, tensorflow as tf; tf.add(1, 1); "
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == (setting or "1")
    assert ("oneDNN custom operations are on" in done.stderr) is on


@pytest.mark.parametrize(
    ("text", "expected"), [("3", Replicas(3, 3)), ("1:8", Replicas(1, 8)), (2, Replicas(2, 2))]
)
def test_replicas_parse(text, expected):
    assert Replicas.parse(text) == expected


@pytest.mark.parametrize("text", ["0", "3:1", "a:b", "", True, "1:2:3"])
def test_replicas_refuse(text):
    with pytest.raises(ValueError):
        Replicas.parse(text)


@pytest.mark.integration
def test_replicas_holding_every_cpu_are_warned_about_only_when_the_job_reads_with_ray_data(
    ray_session, caplog
):
    from brats.runtime import cpus_per_replica

    with caplog.at_level("WARNING", logger="brats"):
        assert cpus_per_replica(2.0, 1, use_gpu=False, what="workers", reads_data=False) == 2.0
    assert not caplog.records
    with caplog.at_level("WARNING", logger="brats"):
        assert cpus_per_replica(2.0, 1, use_gpu=False, what="workers") == 2.0
    assert "leave 0.00 CPUs for reading data" in caplog.text
