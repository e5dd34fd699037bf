"""Spot first, on-demand when spot is short: the node-type choice of ``cluster.yaml``'s
autoscaler.

``cluster.yaml`` offers the same GPU node twice: as a spot instance (``gpu_spot``, about a
third of the price) and on demand (``gpu_on_demand``). Ray's default scorer ranks node types
by how well a request fits, then by name, and never looks at launch failures, so it would
ask for spot forever when a zone has none. :func:`spot_first_scorer` (set on the head with
``RAY_AUTOSCALER_UTILIZATION_SCORER=brats.autoscaler.spot_first_scorer``) ranks first by
availability: a node type whose last launch failed (AWS ``InsufficientInstanceCapacity``,
``SpotMaxPriceTooLow``...) and whose failure is fresher than the autoscaler's staleness
window (``AUTOSCALER_NODE_AVAILABILITY_MAX_STALENESS_S``, 30 minutes) loses to one that can
launch; then by the default score; then spot before on-demand. After the window, spot is
tried again.

A preempted spot node takes its actors, tasks and training worker with it: training resumes
from its last checkpoint, and segmentation retries the lost cases on the nodes left (and
skips the ones done).
"""

from __future__ import annotations

from typing import Any

SPOT_SUFFIX = "_spot"
"""Node types whose name ends so are the spot ones."""


def spot_first_scorer(
    node_resources: dict[str, Any],
    resources: list[dict[str, Any]],
    node_type: str,
    *,
    node_availability_summary: Any,
) -> tuple[Any, ...] | None:
    """The autoscaler's score of launching one ``node_type`` node for ``resources`` (higher
    wins; ``None``: it fits none of them), as Ray's ``UtilizationScorer`` takes it."""
    from ray.autoscaler._private.resource_demand_scheduler import (
        _resource_based_utilization_scorer,
    )

    score = _resource_based_utilization_scorer(
        node_resources, resources, node_availability_summary=node_availability_summary
    )
    if score is None:
        return None
    record = node_availability_summary.node_availabilities.get(node_type)
    available = record is None or bool(record.is_available)
    return (available, *score, node_type.endswith(SPOT_SUFFIX))
