"""A Ray cluster of several nodes on this machine, one per module of multi-node tests.

``ray.cluster_utils.Cluster`` starts a head and worker nodes as separate raylets, each with
its own object store and resources, as Ray's own fault-tolerance tests do; removing a node
kills its raylet and every worker, actor and object on it at once. The head offers no CPU,
so the job's work runs on the worker nodes only and a node loss always costs work in flight.
These modules run after every other test (conftest.py orders them last): the session's
single-node Ray is shut down first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

NODE = {"num_cpus": 2, "object_store_memory": 200 << 20}
"""Each worker node: 2 CPUs (a model actor and a writer task), a small object store."""


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``condition`` every 0.1 s until it is truthy; fail naming ``what`` after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    import ray
    from ray.cluster_utils import Cluster
    from ray.data import DataContext

    if ray.is_initialized():
        ray.shutdown()
    nodes = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": 200 << 20},
    )
    ray.init(address=nodes.address, logging_level=logging.WARNING)
    DataContext.get_current().enable_progress_bars = False
    yield nodes
    ray.shutdown()
    nodes.shutdown()
