"""Ray Train's TensorFlow set-up, each worker's ``TF_CONFIG``, without TensorFlow in the
controller.

``ray.train.tensorflow`` imports TensorFlow when it is imported, so a ``TensorflowTrainer``
makes every process that unpickles its backend config import TensorFlow: Ray Train's
controller actor too, which never runs a TensorFlow op (about 4.7 s of CPU per run on a
2-core node, and TensorFlow's memory held by the controller for the whole run).
:class:`TensorflowWorkers` does what Ray's ``TensorflowConfig`` does on a group's start, from
a module that imports no TensorFlow: every worker gets ``TF_CONFIG`` naming the group's
addresses in rank order and its own index, which ``tf.distribute.MultiWorkerMirroredStrategy``
reads (:mod:`brats.train.worker`). Ray's config also sets ``TF_USE_LEGACY_KERAS=1`` for its
``tf.keras`` callbacks; this project uses Keras 3 and none of them, so it does not.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from ray.train.backend import Backend, BackendConfig


def worker_address() -> str:
    """``host:port`` of this node with a port free now, for a worker of the group."""
    import ray

    host = ray.util.get_node_ip_address()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        port = int(probe.getsockname()[1])
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


def set_tf_config(addresses: list[str], index: int) -> None:
    """This worker's ``TF_CONFIG``: the group's ``addresses`` in rank order, its ``index``."""
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    )


class _TensorflowWorkersBackend(Backend):
    def on_start(self, worker_group: Any, backend_config: BackendConfig) -> None:
        import ray

        addresses = worker_group.execute(worker_address)
        ray.get(
            [
                worker_group.execute_single_async(
                    index, set_tf_config, addresses=addresses, index=index
                )
                for index in range(len(worker_group))
            ]
        )


@dataclass
class TensorflowWorkers(BackendConfig):
    """The backend config of a training run's ``DataParallelTrainer``: Ray's
    ``TensorflowConfig`` set-up, importing no TensorFlow (see the module docstring)."""

    @property
    def backend_cls(self) -> type[Backend]:
        return _TensorflowWorkersBackend

    @property
    def framework(self) -> Any:
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TENSORFLOW
