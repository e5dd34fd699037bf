"""The training run's Ray Train backend: what the controller unpickles imports no TensorFlow,
and each worker's TF_CONFIG names the group in rank order. (The 2-worker runs of
tests/integration/test_train_job.py check that TensorFlow sees the whole group: the worker
refuses to train when its strategy's replicas are not the group's size.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ray import cloudpickle

from brats.train.backend import TensorflowWorkers, set_tf_config, worker_address
from brats.train.worker import train_loop_per_worker

REPO = Path(__file__).resolve().parents[2]
UNPICKLE = (
    "import sys\n"
    "from ray import cloudpickle\n"
    "cloudpickle.loads(sys.stdin.buffer.read())\n"
    "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
)


def _loads_heavy(payload: bytes) -> str:
    done = subprocess.run(
        [sys.executable, "-c", UNPICKLE],
        input=payload,
        capture_output=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    return done.stdout.decode().strip()


def test_what_ray_trains_controller_unpickles_imports_no_tensorflow():
    config = TensorflowWorkers()
    assert config.backend_cls.__module__ == "brats.train.backend"
    assert config.framework.name == "TENSORFLOW"
    ours = cloudpickle.dumps((config, config.backend_cls, train_loop_per_worker))
    assert _loads_heavy(ours) == "False False"


def test_each_worker_is_given_the_group_in_rank_order(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    addresses = ["10.0.0.1:4001", "10.0.0.2:4002"]
    set_tf_config(addresses, 1)
    assert json.loads(os.environ["TF_CONFIG"]) == {
        "cluster": {"worker": addresses},
        "task": {"type": "worker", "index": 1},
    }
    host, port = worker_address().rsplit(":", 1)
    assert host and 0 < int(port) < 65536
