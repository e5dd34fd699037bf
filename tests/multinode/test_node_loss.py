"""Jobs on a cluster whose nodes come and go while they run.

Segmentation: one job, on a head (no CPU) and worker node A, with ``--num-actors 1:2`` and
2 CPUs per model actor. A has 3 CPUs: one actor and the writer tasks, no room for a second
actor, so the pool can only grow onto B. B has 5: room for two actors, so that A's actor,
restarted after A is gone, has a place to go.

1. A's model actor holds the first case it gets (:class:`~brats.devtools.faults.NodeLog`);
2. node B joins: the actor pool grows onto it, and B segments cases;
3. node A is removed with the case still in flight: its actor, its tasks and the blocks in
   its object store are gone at once;
4. the job finishes on B. Every case has exactly one mask and one done record, no mask is
   without its record, and the masks are byte for byte those of an undisturbed run.

Ingest: the node whose reader holds a case is removed; the manifest lists every case
exactly once, each with its shard.

Driver: a segmentation driver on the cluster (what ``ray job submit`` starts on the head) is
killed with cases done and one in flight; ``jobs/segment.py`` run again does only the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from brats.devtools.faults import NodeLog
from brats.devtools.synth import SynthConfig, generate_cohort
from brats.io.cases import discover
from brats.segment.job import SegmentConfig, SegmentResult, segment
from brats.storage import resolve
from tests.helpers import ray_holdings, train_tiny_model
from tests.multinode.conftest import in_background, wait_for

N_CASES = 8


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mn-cohort")
    generate_cohort(root, N_CASES, SynthConfig(shape=(32, 32, 24), seed=5))
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, cohort: Path) -> str:
    return train_tiny_model(cohort, str(tmp_path_factory.mktemp("mn-model")), seed=0)


def config(cohort: Path, model: str, out: Path, actors: str) -> SegmentConfig:
    return SegmentConfig(
        cohort=str(cohort), model=model, out=str(out), num_actors=actors, cpus_per_actor=2
    )


def nodes_of(markers: Path) -> dict[str, set[str]]:
    """``{node_id: case ids started there}`` from NodeLog's markers."""
    out: dict[str, set[str]] = {}
    for path in markers.iterdir():
        case_id, _, node = path.name.rpartition(".")
        if case_id:
            out.setdefault(node, set()).add(case_id)
    return out


def test_a_node_lost_mid_case_and_a_node_joining_lose_nothing(workers, cohort, model, tmp_path):
    ids = sorted(c.case_id for c in discover(resolve(str(cohort))).cases)
    a_id = workers.add(num_cpus=3)
    clean = tmp_path / "clean"
    assert segment(config(cohort, model, clean, "1")).done == N_CASES

    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "out"
    # The first case A's actor gets is held: the other 7 are still to do when B joins.
    hook = NodeLog(str(markers), hold=NodeLog.FIRST, timeout_s=240)
    with in_background(
        lambda: segment(config(cohort, model, out, "1:2"), predict_hook=hook), markers / "release"
    ) as job:
        hold = wait_for(lambda: NodeLog.held(str(markers)), 180, "a case in flight on A", job)
        assert (markers / f"{hold}.{a_id}").exists()
        b_id = workers.add(num_cpus=5)
        wait_for(lambda: nodes_of(markers).get(b_id), 180, "the actor pool to grow onto B", job)
        workers.remove(a_id)  # the held case dies with A's actor
        (markers / "release").write_text("go\n")
        result = job.result(timeout_s=300)

    assert isinstance(result, SegmentResult), result
    assert (result.done, result.failed) == (N_CASES, [])
    started = nodes_of(markers)
    assert hold in started[a_id] and hold in started[b_id]  # retried on B after A was lost
    masks = sorted(p.name for p in (out / "masks").iterdir())
    records = sorted(p.name for p in (out / "records").iterdir())
    assert masks == [f"{i}.nii.gz" for i in ids]
    assert records == [f"{i}.json" for i in ids]
    for case_id in ids:
        assert json.loads((out / "records" / f"{case_id}.json").read_text())["status"] == "done"
        mask = (out / "masks" / f"{case_id}.nii.gz").read_bytes()
        assert mask == (clean / "masks" / f"{case_id}.nii.gz").read_bytes(), case_id
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.is_file()]
    assert (out / "_SUCCESS").is_file()


def test_a_node_lost_mid_ingest_leaves_every_case_in_the_manifest_once(workers, cohort, tmp_path):
    from brats.ingest.job import IngestConfig, ingest
    from brats.ingest.shards import load_manifest

    ids = sorted(c.case_id for c in discover(resolve(str(cohort))).cases)
    nodes = [workers.add(), workers.add()]
    markers = tmp_path / "markers"
    markers.mkdir()
    hold = ids[3]
    hook = NodeLog(str(markers), hold=hold, timeout_s=240)
    out = tmp_path / "cohort"
    config = IngestConfig(cohort=str(cohort), out=str(out), readers=2)
    with in_background(lambda: ingest(config, shard_hook=hook), markers / "release") as job:
        held = wait_for(
            lambda: [n for n in nodes if (markers / f"{hold}.{n}").exists()],
            180,
            f"{hold} held",
            job,
        )
        workers.remove(held[0])
        (markers / "release").write_text("go\n")
        job.result(timeout_s=300)

    manifest = load_manifest(resolve(str(out)))
    listed = [entry["case_id"] for entry in manifest["cases"]]
    assert listed == ids and manifest["failures"] == []  # each case exactly once
    assert manifest["counts"]["done"] == N_CASES
    for entry in manifest["cases"]:
        assert (out / entry["shard"]).is_file()
    assert hold in nodes_of(markers)[held[0]]


REPO = Path(__file__).resolve().parents[2]

DRIVER = """
import sys
from brats.devtools.faults import NodeLog
from brats.segment.job import SegmentConfig, segment
cohort, model, out, markers = sys.argv[1:]
config = SegmentConfig(cohort=cohort, model=model, out=out, num_actors="2", cpus_per_actor=1)
segment(config, predict_hook=NodeLog(markers, hold=NodeLog.FIRST, timeout_s=240))
"""


def test_a_killed_driver_is_resumed_by_the_next_run_which_redoes_nothing(
    cluster, workers, cohort, model, tmp_path
):
    ids = sorted(c.case_id for c in discover(resolve(str(cohort))).cases)
    workers.add(), workers.add()
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": cluster.address, "PYTHONPATH": str(REPO)}
    args = [str(cohort), model, str(out), str(markers)]
    output = tmp_path / "driver.log"  # what the killed driver said, for a failure's message
    with output.open("wb") as sink:
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, *args], cwd=REPO, env=env,
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def held_and_done() -> object:
        said = output.read_text(errors="replace")[-4000:]
        assert driver.poll() is None, f"the driver exited early:\n{said}"
        return NodeLog.held(str(markers)) and list((out / "records").glob("*.json"))

    try:
        # One case held in flight on an actor; the other actor finishes cases meanwhile.
        try:
            wait_for(held_and_done, 240, "a case held and a case done")
        except AssertionError as err:
            said = output.read_text(errors="replace")[-4000:]
            raise AssertionError(f"{err}\n{said}\n{ray_holdings()}") from None
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    held = NodeLog.held(str(markers))
    done = {p.stem: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    masks = {p.name: p.stat().st_mtime_ns for p in (out / "masks").glob("*.nii.gz")}
    assert held not in done and 0 < len(done) < N_CASES
    assert sorted(masks) == sorted(f"{i}.nii.gz" for i in done)  # no mask without its record

    rerun = subprocess.run(
        [sys.executable, "jobs/segment.py", "--cohort", str(cohort), "--model", model,
         "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    printed = json.loads(rerun.stdout[rerun.stdout.index("{\n") : rerun.stdout.rindex("\n}") + 2])
    assert (printed["skipped"], printed["done"]) == (len(done), N_CASES - len(done))
    assert printed["failed"] == []
    # What was done before the kill is left alone, byte for byte and file for file.
    for case_id, mtime in done.items():
        assert (out / "records" / f"{case_id}.json").stat().st_mtime_ns == mtime, case_id
        assert (out / "masks" / f"{case_id}.nii.gz").stat().st_mtime_ns == masks[
            f"{case_id}.nii.gz"
        ]
    assert sorted(p.stem for p in (out / "records").glob("*.json")) == ids
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i}.nii.gz" for i in ids]
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.is_file()]
    assert (out / "_SUCCESS").is_file()
