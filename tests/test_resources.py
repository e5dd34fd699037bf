"""brats.resources: replica counts, CPUs per replica, and room on the cluster for the first
actors."""

from __future__ import annotations

import pytest

from brats.resources import ActorsNotStarted, Replicas, cpus_per_replica, wait_for_room


@pytest.mark.parametrize(
    ("text", "expected"), [("3", Replicas(3, 3)), ("1:8", Replicas(1, 8)), (2, Replicas(2, 2))]
)
def test_replicas_parse(text, expected):
    assert Replicas.parse(text) == expected


@pytest.mark.parametrize("text", ["0", "3:1", "a:b", "", True, "1:2:3"])
def test_replicas_refuse(text):
    with pytest.raises(ValueError):
        Replicas.parse(text)


@pytest.mark.integration
def test_replicas_holding_every_cpu_are_warned_about_only_when_the_job_reads_with_ray_data(
    ray_session, caplog
):
    with caplog.at_level("WARNING", logger="brats"):
        assert cpus_per_replica(2.0, 1, use_gpu=False, what="workers", reads_data=False) == 2.0
    assert not caplog.records
    with caplog.at_level("WARNING", logger="brats"):
        assert cpus_per_replica(2.0, 1, use_gpu=False, what="workers") == 2.0
    assert "leave 0.00 CPUs for reading data" in caplog.text


@pytest.mark.integration
def test_room_the_cluster_never_has_is_refused_in_time_and_leaves_nothing_held(ray_session):
    wait_for_room({"CPU": 1.0}, 2, 30, "two actors")  # room now: returns
    with pytest.raises(ActorsNotStarted) as refused:  # a GPU job on a CPU-only cluster
        wait_for_room({"CPU": 1.0, "GPU": 1.0}, 1, 1, "1 model actor(s) of 1 CPUs and a GPU each")
    assert str(refused.value).startswith(
        "1 model actor(s) of 1 CPUs and a GPU each found no room within 1 s: the cluster has "
        "2 of 2 CPUs and 0 of 0 GPUs free."
    )
    with pytest.raises(ActorsNotStarted, match="3 actors found no room"):  # more than there is
        wait_for_room({"CPU": 1.0}, 3, 1, "3 actors")
    wait_for_room({"CPU": 1.0, "GPU": 1.0}, 1, 0, "0 waits forever: nothing is asked")
    # The placement groups asked for are gone, placed or not (and the session's check after
    # each test finds every CPU free again).
    from ray.util import placement_group_table

    assert all(g["state"] == "REMOVED" for g in placement_group_table().values())
