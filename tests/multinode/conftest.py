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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

NODE = {"num_cpus": 2, "object_store_memory": 200 << 20}
"""Each worker node: 2 CPUs (a model actor and a writer task), a small object store."""


class Background:
    """A job run in a daemon thread, so that the test can change the cluster under it."""

    def __init__(self, job: Callable[[], Any]) -> None:
        self.outcome: list[Any] = []  # the job's result or exception, once it has ended
        self._thread = threading.Thread(target=self._run, args=(job,), daemon=True)
        self._thread.start()

    def _run(self, job: Callable[[], Any]) -> None:
        try:
            self.outcome.append(job())
        except BaseException as exc:  # reported by result()
            self.outcome.append(exc)

    def result(self, timeout_s: float) -> Any:
        """The job's result; fails if it raised or did not end within ``timeout_s``."""
        self._thread.join(timeout=timeout_s)
        assert not self._thread.is_alive(), f"the job did not end within {timeout_s:.0f} s"
        value = self.outcome[0]
        assert not isinstance(value, BaseException), f"the job raised {value!r}"
        return value


@contextmanager
def in_background(job: Callable[[], Any], release: Path) -> Iterator[Background]:
    """Run ``job`` in the background; on the way out, whether the test passed or not, write
    ``release`` (the NodeLog hold's signal) and give the job 300 s to end, so that no job is
    left running into the next test or into Ray's shutdown."""
    running = Background(job)
    try:
        yield running
    finally:
        release.write_text("go\n")
        running._thread.join(timeout=300)


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, job: Background | None = None
) -> Any:
    """Poll ``condition`` every 0.1 s until it is truthy; fail naming ``what`` after
    ``timeout_s``, or at once if ``job`` has ended first (with its result or exception)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if job is not None and job.outcome:
            raise AssertionError(f"the job ended before {what}: {job.outcome[0]!r}")
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


class Workers:
    """Adds worker nodes to the module's cluster and removes them, each at most once."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self.live: dict[str, Any] = {}

    def add(self, **resources: Any) -> str:
        """Start a worker node of :data:`NODE` resources, ``resources`` overriding them; its
        node id."""
        node = self._cluster.add_node(**{**NODE, **resources})
        self._cluster.wait_for_nodes()
        self.live[node.node_id] = node
        return str(node.node_id)

    def remove(self, node_id: str) -> None:
        """Kill the node's raylet and everything on it at once."""
        self._cluster.remove_node(self.live.pop(node_id))


@pytest.fixture
def workers(cluster: Any) -> Iterator[Workers]:
    """The test's worker nodes, all removed when it ends, so the next test starts with the
    head alone."""
    added = Workers(cluster)
    yield added
    for node_id in list(added.live):
        added.remove(node_id)
