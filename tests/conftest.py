"""Shared fixtures: one local Ray and one moto S3 server per test session.

Fake AWS credentials are set before anything starts, so Ray workers inherit them and nothing
can reach a real account.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest

from brats.runtime import prepare_tensorflow
from tests.helpers import FAKE_SECRETS, FlakyS3Proxy, free_port, ray_holdings

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": FAKE_SECRETS[0],
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRETS[1],
        "AWS_DEFAULT_REGION": "us-east-1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "RAY_DEDUP_LOGS": "0",
        # Ray Train's controller polls its workers every 2 s by default, so every run's
        # start, end and failures wait up to that long to be seen; the tests' runs are
        # seconds long. Its preemption watcher (one more actor a run) watches for nodes
        # being drained, as a cloud reclaims a spot node; no test drains a node (the
        # node-loss tests kill them). Set before Ray starts: its processes inherit them.
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    }
)
for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "RAY_ADDRESS"):
    os.environ.pop(var, None)
# What every entry point does before TensorFlow loads (importing brats sets nothing); the
# session's Ray workers inherit it.
prepare_tensorflow()


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with 2 CPUs, started once for the whole session."""
    import ray
    from ray.data import DataContext

    ray.init(
        num_cpus=2,
        object_store_memory=768 << 20,
        include_dashboard=True,  # Ray Train's cleaner polls the state API it serves
        logging_level=logging.WARNING,
    )
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


RELEASE_TIMEOUT_S = 60.0
"""How long a test's Ray work may take to give its CPUs back once the test is over."""


@pytest.fixture(autouse=True)
def _gives_back_its_cpus(request):
    """After each test on the session's Ray: every CPU is free again within
    :data:`RELEASE_TIMEOUT_S`. A test that leaves an actor or a task holding CPUs fails here,
    by name, rather than a later test waiting for CPUs that never come."""
    yield
    import sys
    import time

    ray = sys.modules.get("ray")
    if request.node.get_closest_marker("multinode") or ray is None or not ray.is_initialized():
        return
    deadline = time.monotonic() + RELEASE_TIMEOUT_S
    while (free := ray.available_resources().get("CPU", 0.0)) < (
        total := ray.cluster_resources().get("CPU", 0.0)
    ) - 1e-6:
        if time.monotonic() > deadline:
            held = ray_holdings()
            pytest.fail(f"{free} of {total} CPUs free {RELEASE_TIMEOUT_S:.0f} s on; {held}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint: moto's server on 127.0.0.1, as s3fs tests itself."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint):
    """A fresh bucket per test; yields ``s3://<bucket>``."""
    import s3fs

    name = f"brats-test-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}, skip_instance_cache=True)
    fs.mkdir(name)
    yield f"s3://{name}"


@pytest.fixture
def flaky_s3(s3_endpoint):
    """An S3 endpoint that answers 503 SlowDown to every third request, 12 times."""
    proxy = FlakyS3Proxy(s3_endpoint, failures=12)
    yield proxy
    proxy.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration/ is an integration test (real Ray, moto or
    TensorFlow), every one under tests/multinode/ a multinode test; they run in CI like the
    others. Multi-node tests run last: each module starts its own cluster, after the
    session's Ray is shut down."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)
        if "multinode" in item.path.parts:
            item.add_marker(pytest.mark.multinode)
    items.sort(key=lambda item: "multinode" in item.path.parts)  # stable: order kept
