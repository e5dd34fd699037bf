"""brats.runtime: TensorFlow's log level per node kind, and replica counts."""

from __future__ import annotations

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


@pytest.mark.parametrize(
    ("text", "expected"), [("3", Replicas(3, 3)), ("1:8", Replicas(1, 8)), (2, Replicas(2, 2))]
)
def test_replicas_parse(text, expected):
    assert Replicas.parse(text) == expected


@pytest.mark.parametrize("text", ["0", "3:1", "a:b", "", True, "1:2:3"])
def test_replicas_refuse(text):
    with pytest.raises(ValueError):
        Replicas.parse(text)
