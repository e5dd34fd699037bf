"""Starting or joining Ray, and logging, the same way for every job."""

from __future__ import annotations

import logging
import os

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    # TensorFlow's C++ logs drown the job log on CPU-only machines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def init_ray(num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Join the cluster a job was submitted to, or start a local Ray.

    Under ``ray job submit`` (or with ``RAY_ADDRESS`` set) this connects to that cluster and
    ``num_cpus``/``object_store_memory`` are ignored; otherwise they size the local Ray.
    """
    import ray
    from ray.data import DataContext

    # Jobs log their own progress per case and per epoch; Ray Data's progress bars, redrawn
    # in a job log that is not a terminal, would bury it (they follow each dataset into the
    # training workers too).
    DataContext.get_current().enable_progress_bars = False
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        ray.init(
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
