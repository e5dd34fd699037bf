"""Starting or joining Ray, and logging, the same way for every job."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from brats.options import option

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class LocalRay:
    """How a job starts Ray when it is not joining a cluster."""

    num_cpus: int | None = option(
        None, help="CPUs for a local Ray (ignored when joining a cluster)"
    )


@dataclass(frozen=True)
class Replicas:
    """How many long-lived replicas a job runs (model actors, training workers): a fixed
    ``N``, or ``MIN:MAX`` to start with ``MIN`` and grow to ``MAX`` as the cluster has room
    (an autoscaling cluster's new nodes are used while the job runs).

    On the command line: ``--num-actors 4`` or ``--num-actors 1:8``.
    """

    min: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.max:
            raise ValueError(f"replicas need 1 <= MIN <= MAX, got {self.min}:{self.max}")

    @classmethod
    def parse(cls, value: Replicas | int | str) -> Replicas:
        """``Replicas`` from an int, ``"N"`` or ``"MIN:MAX"``.

        Raises:
            ValueError: not a count, or not ``1 <= MIN <= MAX``.
        """
        if isinstance(value, Replicas):
            return value
        if isinstance(value, bool):
            raise ValueError(f"not a replica count: {value!r}")
        if isinstance(value, int):
            return cls(value, value)
        low, sep, high = str(value).strip().partition(":")
        try:
            return cls(int(low), int(high) if sep else int(low))
        except ValueError as exc:
            raise ValueError(f"expected N or MIN:MAX (1 <= MIN <= MAX), got {value!r}") from exc

    @property
    def fixed(self) -> bool:
        """Whether ``MIN == MAX``."""
        return self.min == self.max

    def __str__(self) -> str:
        return str(self.min) if self.fixed else f"{self.min}:{self.max}"


def quiet_tensorflow(dev: str = "/dev") -> str:
    """Set TensorFlow's C++ log level, unless already set; call before TensorFlow is imported.

    2 (errors only) on a node with an NVIDIA device, 3 (fatal only) on one without, where the
    only errors TensorFlow logs are its failed CUDA probes (``failed call to cuInit``), one
    per process. The few lines TensorFlow writes before its logging starts (``oneDNN custom
    operations are on``, ``Could not find cuda drivers``) ignore any level. Returns the level.
    """
    gpu = os.path.exists(os.path.join(dev, "nvidiactl")) or any(
        name.startswith("nvidia") and name[6:].isdigit() for name in _listdir(dev)
    )
    return os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if gpu else "3")


def use_onednn() -> str:
    """Turn on TensorFlow's oneDNN kernels on x86 CPUs, unless already set; call before
    TensorFlow is imported. Returns the setting.

    TensorFlow enables them by default only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX; on
    an AVX2-only CPU (AMD Zen 3, older Intel) it falls back to its own kernels, which train
    and predict this project's 3D U-Nets about 2 to 4 times slower. ``TF_ENABLE_ONEDNN_OPTS=0``
    in the environment keeps TensorFlow's kernels. oneDNN sums in another order, so figures can
    differ from those kernels' in the last float32 digits (not from run to run).
    """
    return os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    quiet_tensorflow()


def cpus_per_replica(
    requested: float | None,
    replicas: int,
    *,
    use_gpu: bool,
    what: str,
    reads_data: bool = True,
) -> float:
    """CPUs each long-lived replica (training worker, model actor) reserves.

    ``requested`` wins when given. Otherwise 1 with GPUs; on a CPU-only cluster at most 1,
    leaving one CPU for Ray Data's read tasks, which never run (and the job waits forever)
    when the replicas hold every CPU. A warning says so when that is about to happen and
    ``reads_data`` (the job runs Ray Data tasks beside its replicas).
    """
    import ray

    total = float(ray.cluster_resources().get("CPU", 0.0))
    if requested is not None:
        cpus = float(requested)
    elif use_gpu:
        cpus = 1.0
    else:
        cpus = min(1.0, max(0.25, (total - 1.0) / replicas))
    free = total - cpus * replicas
    if free < 0.5 and not use_gpu and reads_data:
        logging.getLogger("brats").warning(
            "%d %s x %.2f CPUs leave %.2f CPUs for reading data; unless the cluster grows, "
            "the job will wait for data. Ask for fewer CPUs per replica.",
            replicas,
            what,
            cpus,
            free,
        )
    return cpus


def progress_bars() -> bool:
    """Whether Ray Data draws its progress bars: only when stdout is a terminal."""
    try:
        return os.isatty(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # replaced or closed stdout
        return False


def init_ray(num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Join the cluster a job was submitted to, or start a local Ray.

    Under ``ray job submit`` (or with ``RAY_ADDRESS`` set) this connects to that cluster and
    ``num_cpus``/``object_store_memory`` are ignored; otherwise they size the local Ray.
    """
    import ray
    from ray.data import DataContext

    # Jobs log their own progress (brats.progress, and a line per epoch). Ray Data's progress
    # bars show in a terminal; in a job log, which is not one, their redraws would bury it
    # (they follow each dataset into the training workers too).
    DataContext.get_current().enable_progress_bars = progress_bars()
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(logging_level=logging.WARNING)
    else:
        ray.init(
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            # Ray Train's placement-group cleaner asks the state API (served by the
            # dashboard) about its controller every few seconds and logs a warning each
            # time it cannot; Ray moves to the next free port when 8265 is taken.
            include_dashboard=True,
            logging_level=logging.WARNING,
        )
