"""brats.runtime: TensorFlow's environment (set by entry points, not by importing brats),
its start-up noise, workers' runtime environment, and unreachable clusters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from brats.runtime import (
    TENSORFLOW_ENV,
    TENSORFLOW_NOISE,
    ClusterUnreachable,
    check_reachable,
    quiet_tensorflow,
)
from tests.helpers import free_port


def test_tensorflow_logs_errors_on_gpu_nodes_and_only_fatal_on_cpu_nodes(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert quiet_tensorflow(str(tmp_path)) == "3"  # no NVIDIA device: cuInit errors are noise
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    (tmp_path / "nvidia0").touch()
    assert quiet_tensorflow(str(tmp_path)) == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # a level someone set wins
    assert quiet_tensorflow(str(tmp_path)) == "0"


@pytest.mark.parametrize(("setting", "on"), [(None, True), ("0", False)])
def test_prepare_tensorflow_turns_on_onednn_unless_the_environment_says_otherwise(setting, on):
    """On a CPU without AVX512_VNNI, AVX512_BF16 or AMX oneDNN is off unless asked for. Real
    processes: the variable is read when TensorFlow loads. And TensorFlow starts without its
    start-up noise: Abseil's pre-``InitializeLog`` lines (oneDNN notice, CUDA probes) ignore
    every variable, and the import filter drops them (and only them: the next test)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    code = (
        "import os, brats.runtime as r; r.prepare_tensorflow(); import tensorflow; "
        "from tensorflow.python.util import _pywrap_util_port as port; "
        "print(os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())"
    )
    done = _python(code, env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [setting or "1", str(on)]
    assert not [line for line in done.stderr.splitlines() if TENSORFLOW_NOISE.search(line)]
    if not _has_nvidia():
        assert done.stderr == ""


def test_importing_brats_changes_no_environment_and_loads_no_tensorflow():
    code = (
        "import json, os, sys; before = dict(os.environ); "
        "import brats, brats.runtime, brats.cli, brats.segment.nightly; "
        "print(json.dumps([dict(os.environ) == before, "
        "[m for m in ('tensorflow', 'keras', 'ray') if m in sys.modules]]))"
    )
    done = _python(code, _env_without(*TENSORFLOW_ENV))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [True, []]


def test_noise_filter_keeps_other_lines_and_drops_tensorflow_noise(capfd):
    from brats.runtime import _stderr_without

    with _stderr_without(TENSORFLOW_NOISE):
        os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. x\n")
        os.write(2, b"something else\n")
    assert capfd.readouterr().err == "something else\n"


def test_workers_get_the_tensorflow_settings_given_except_what_a_submitted_job_sets(monkeypatch):
    import brats.runtime
    from brats.runtime import SETUP_HOOK, _worker_runtime_env

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    given = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"}
    monkeypatch.setattr(brats.runtime, "_given_tensorflow_env", given)
    assert _worker_runtime_env() == {"env_vars": given, "worker_process_setup_hook": SETUP_HOOK}
    job = {"runtime_env": {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "0"}, "working_dir": "."}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert _worker_runtime_env() == {
        "env_vars": {"TF_ENABLE_ONEDNN_OPTS": "1"},  # Ray refuses to merge the same keys
        "worker_process_setup_hook": SETUP_HOOK,
    }


def test_each_node_picks_its_own_tensorflow_level_and_gpu_nodes_keep_every_import_line(tmp_path):
    """The driver's defaults (picked for its node) do not travel to workers, whose setup hook
    picks their own; on a node with an NVIDIA device nothing of TensorFlow's import is
    filtered."""
    gpu = tmp_path / "gpu"
    gpu.mkdir()
    (gpu / "nvidia0").touch()
    code = (
        "import json, sys, brats.runtime as r; r.prepare_tensorflow(sys.argv[1]); "
        "print(json.dumps([r._worker_runtime_env()['env_vars'], "
        "any(type(f).__name__ == '_QuietImport' for f in sys.meta_path), "
        "r.os.environ['TF_CPP_MIN_LOG_LEVEL']]))"
    )
    env = _env_without(*TENSORFLOW_ENV, "RAY_JOB_CONFIG_JSON_ENV_VAR")
    for dev, filtered, level in ((tmp_path, True, "3"), (gpu, False, "2")):
        done = subprocess.run(
            [sys.executable, "-c", code, str(dev)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout) == [{}, filtered, level]


def test_an_address_without_a_port_takes_its_schemes():
    from brats.runtime import _host_port

    assert _host_port("https://ray.example.com") == ("ray.example.com", 443)
    assert _host_port("http://ray.example.com/") == ("ray.example.com", 80)
    assert _host_port("http://127.0.0.1:8265") == ("127.0.0.1", 8265)


def test_a_closed_port_is_unreachable_at_once_with_a_message_saying_what_to_do():
    port = free_port()
    with pytest.raises(ClusterUnreachable) as err:
        check_reachable(f"http://127.0.0.1:{port}", timeout=5)
    assert f"127.0.0.1:{port}" in str(err.value)
    assert "ray stop" in str(err.value) and "RAY_ADDRESS" in str(err.value)
    with pytest.raises(ClusterUnreachable, match="is up"):
        check_reachable(f"127.0.0.1:{port}", timeout=5, advice="Check that the cluster is up.")


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
    )


def _env_without(*names: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in names}


def _has_nvidia() -> bool:
    return any(name.startswith("nvidia") for name in os.listdir("/dev"))
