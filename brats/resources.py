"""What a job asks of the cluster: how many long-lived replicas (model actors, training
workers), how many CPUs each, and room for the first of them before they start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from brats.errors import BratsError


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


ACTOR_WAIT_S = 1800.0
"""How long a job waits, by default, for room on the cluster for its first actors (reader
and model actors, training workers)."""

ACTOR_WAIT_HELP = (
    "seconds to wait for room on the cluster for the first reader actors, model actors or "
    "training workers (for the CPUs or GPUs they ask to be free, or for an autoscaler's node "
    "to join), then stop with an error saying what is missing; 0 waits forever"
)


class ActorsNotStarted(BratsError, RuntimeError):
    """An actor pool's first actors found no room in time: the cluster lacks what they ask."""


def replica_bundle(cpus: float, *, use_gpu: bool) -> tuple[dict[str, float], str]:
    """What one replica asks of the cluster, ``{"CPU": cpus}`` (plus ``"GPU": 1``), and the
    same in words for :func:`wait_for_room`'s message (``"1 CPUs and a GPU"``)."""
    bundle = {"CPU": cpus, "GPU": 1.0} if use_gpu else {"CPU": cpus}
    return bundle, f"{cpus:g} CPUs" + (" and a GPU" if use_gpu else "")


def wait_for_room(bundle: dict[str, float], count: int, seconds: float, what: str) -> None:
    """Return once the cluster has room for ``count`` actors of ``bundle`` (e.g.
    ``{"CPU": 1, "GPU": 1}``), or raise after ``seconds``; ``seconds <= 0`` returns at once.

    An actor pool's first actors otherwise wait forever (Ray Data's default) when the
    cluster's CPUs or GPUs are held by something else or never come (a GPU asked of a CPU
    cluster): a nightly job would hang without a word. The room is asked for as a placement
    group, so an autoscaler sees the demand and adds nodes while this waits; the group is
    removed as soon as it is placed (or the wait ends), before the job starts its actors.

    Connects to Ray first if nothing has (as Ray Data's first dataset would).

    Raises:
        ActorsNotStarted: no room within ``seconds``; the message names ``what``, the limit
            and the cluster's free and total resources.
    """
    if seconds <= 0:
        return
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    if not ray.is_initialized():  # as Ray's own first call would: RAY_ADDRESS, else local
        ray.init()
    group = placement_group([bundle] * count, strategy="PACK")
    try:
        placed = group.wait(timeout_seconds=seconds)
    finally:
        remove_placement_group(group)
    if placed:
        return
    free, total = ray.available_resources(), ray.cluster_resources()
    kinds = [k for k in ("CPU", "GPU") if k == "CPU" or k in bundle or total.get(k)]
    have = " and ".join(f"{free.get(k, 0.0):g} of {total.get(k, 0.0):g} {k}s" for k in kinds)
    raise ActorsNotStarted(
        f"{what} found no room within {seconds:g} s: the cluster has {have} free. "
        "Free them, add a node, or wait longer (--wait-for-actors)."
    )
