"""Ray Data ingest against a real local Ray, real NIfTI files and a moto S3 server."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from brats.cli import run_ingest
from brats.devtools.faults import write_faulty_case
from brats.devtools.synth import SynthConfig, generate_cohort
from brats.ingest.job import IngestConfig, ingest
from brats.ingest.prepare import PreprocessConfig, prepare_case
from brats.ingest.shards import load_manifest, read_prepared
from brats.io.nifti import read_case
from brats.storage import resolve
from tests.helpers import every_cpu_held, s3fs_client

pytestmark = pytest.mark.integration

N_GOOD = 6
FAULTS = {
    "Bad_truncated": ("truncated_gzip", "truncated"),
    "Bad_missing": ("missing_modality", "missing modality t1ce"),
    "Bad_nan": ("nan", "non-finite"),
    "Bad_huge": ("huge_header", "over the limit"),
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    config = SynthConfig(shape=(48, 48, 48), seed=7)
    ids = generate_cohort(root, N_GOOD, config)
    for case_id, (fault, _) in FAULTS.items():
        write_faulty_case(root, case_id, fault, config)
    return root, ids


def check_manifest(manifest, ids):
    assert manifest["counts"] == {
        "found": N_GOOD + len(FAULTS),
        "done": N_GOOD,
        "failed": len(FAULTS),
        "rejected": 0,
    }
    assert [c["case_id"] for c in manifest["cases"]] == sorted(ids)
    failures = {f["case_id"]: f for f in manifest["failures"]}
    assert set(failures) == set(FAULTS)
    for case_id, (_, reason) in FAULTS.items():
        failure = failures[case_id]
        assert reason in failure["reason"], failure
        assert failure["reason"].startswith(f"case {case_id}: ")
        assert failure["file"] and failure["file"].startswith(case_id)
    assert manifest["label_scheme"]["name"] == "brats2020"  # from the 2020 file names
    assert manifest["preprocess"]["label_scheme"] == "brats2020"
    for case in manifest["cases"]:
        assert case["labeled"] and case["label_scheme"] == "brats2020"
        assert len(case["checksums"]) == 5
        assert case["shape"][0] == 4 and case["crop"]["shape"] == [48, 48, 48]
        # One spacing over the cohort: the target, and nothing was resampled.
        assert case["file_spacing"] == case["spacing"] and case["file_shape"] == [48, 48, 48]
    spacing = manifest["spacing"]
    assert spacing["target"] == spacing["median"] == manifest["cases"][0]["spacing"]
    assert spacing["rule"] == "median" and spacing["cases_resampled"] == 0
    # Every flair header reads (the faults are in other files, or past the header).
    assert spacing["cases_read"] == N_GOOD + len(FAULTS)
    assert manifest["preprocess"]["target_spacing"] == spacing["target"]


def test_ingest_local_folder(cohort, tmp_path, ray_session):
    root, ids = cohort
    out = tmp_path / "out"
    result = ingest(IngestConfig(str(root), str(out)))
    check_manifest(result.manifest, ids)
    assert result.manifest_uri == str(out / "manifest.json")

    loc = resolve(str(out))
    assert load_manifest(loc) == result.manifest
    ds, manifest = read_prepared(loc)
    rows = {r["case_id"]: r for r in ds.take_all()}
    assert sorted(rows) == sorted(ids)

    # The parallel pipeline gives exactly what one process computes for the same case.
    config = PreprocessConfig()
    cohort_loc = resolve(str(root))
    from brats.io.cases import discover

    case = next(c for c in discover(cohort_loc).cases if c.case_id == ids[0])
    expected = prepare_case(read_case(case, cohort_loc, modalities=config.modalities), config)
    row = rows[case.case_id]
    assert row["image"].dtype == np.float16 and row["image"].shape == expected.image.shape
    np.testing.assert_array_equal(row["image"], expected.image)
    np.testing.assert_array_equal(row["label"], expected.label)
    assert tuple(row["crop_start"]) == expected.crop.start
    np.testing.assert_allclose(row["affine"], expected.affine)
    entry = next(c for c in manifest["cases"] if c["case_id"] == case.case_id)
    assert entry["shape"] == list(expected.image.shape)
    # What cross-validation stratifies by: the voxels of each class of the case's label.
    counts = np.bincount(expected.label.ravel(), minlength=4)[1:]
    assert entry["class_voxels"] == dict(zip(("NCR", "ED", "ET"), counts.tolist(), strict=True))

    # A training worker reads its cases without Ray tasks: the same rows, in the asked order.
    from brats.ingest.shards import read_shards

    asked = sorted(ids, reverse=True)
    direct = list(read_shards(loc, asked))
    assert [r["case_id"] for r in direct] == asked
    for got in direct:
        want = rows[got["case_id"]]
        assert set(got) == set(want)
        for key in ("image", "label", "affine", "crop_start"):
            np.testing.assert_array_equal(got[key], want[key])
            assert got[key].dtype == want[key].dtype
    with pytest.raises(KeyError, match="not in the manifest"):
        list(read_shards(loc, ["BraTS20_Training_999"]))

    # Rerunning into the same folder overwrites the same shard keys: nothing piles up.
    shards = sorted(os.listdir(out / "shards"))
    assert shards == sorted(f"{i}.parquet" for i in ids)
    again = ingest(IngestConfig(str(root), str(out)))
    assert sorted(os.listdir(out / "shards")) == shards
    assert again.manifest["hash"] == result.manifest["hash"]


def test_ingest_s3_matches_local(cohort, tmp_path, s3_bucket, s3_endpoint, ray_session):
    root, ids = cohort
    fs = s3fs_client(s3_endpoint)
    fs.put(str(root), f"{s3_bucket[5:]}/incoming", recursive=True)
    out = f"{s3_bucket}/cohorts/v1"
    result = ingest(IngestConfig(f"{s3_bucket}/incoming", out, s3_endpoint=s3_endpoint))
    check_manifest(result.manifest, ids)
    assert result.manifest["source"] == f"{s3_bucket}/incoming"
    local = ingest(IngestConfig(str(root), str(tmp_path / "local")))
    # Same bytes in, same preprocessing: the cohort hash does not depend on where it lives.
    assert result.manifest["hash"] == local.manifest["hash"]
    ds, _ = read_prepared(resolve(out, s3_endpoint=s3_endpoint))
    assert ds.count() == N_GOOD
    keys = fs.find(f"{s3_bucket[5:]}/cohorts/v1")
    assert any(k.endswith("manifest.json") for k in keys)
    assert all(k.endswith((".parquet", "manifest.json")) for k in keys)


def test_ingest_cli_three_channel_mode(cohort, tmp_path, ray_session, capsys):
    root, _ = cohort
    out = tmp_path / "cli"
    code = run_ingest(
        [
            "--cohort",
            str(root),
            "--out",
            str(out),
            "--modalities",
            "flair,t1ce,t2",
            "--normalization",
            "minmax",
            "--dtype",
            "float32",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    # Only the modalities asked for are read: the faults planted in T1 do not matter here.
    assert summary["ok"] == N_GOOD + 3 and summary["failed"] == 1
    assert summary["failures"][0]["case_id"] == "Bad_missing"
    ds, manifest = read_prepared(resolve(str(out)))
    row = ds.take(1)[0]
    assert row["image"].shape[0] == 3 and row["image"].dtype == np.float32
    assert row["image"].min() >= 0.0 and row["image"].max() <= 1.0
    assert manifest["preprocess"]["modalities"] == ["flair", "t1ce", "t2"]


def test_a_cluster_with_no_free_cpu_stops_ingest_saying_why(cohort, tmp_path, ray_session, caplog):
    root, _ = cohort
    out = tmp_path / "busy"
    with every_cpu_held():
        code = run_ingest(["--cohort", str(root), "--out", str(out), "--wait-for-actors", "2"])
    assert code == 1
    assert (
        "the first reader actor (1 CPU) found no room within 2 s: the cluster has 0 of 2 CPUs "
        "free" in caplog.text
    )
    assert not (out / "manifest.json").exists()


def test_ingest_through_s3_slowdowns_retries_and_completes(
    cohort, s3_bucket, s3_endpoint, flaky_s3, ray_session
):
    root, ids = cohort
    fs = s3fs_client(s3_endpoint)
    fs.put(str(root), f"{s3_bucket[5:]}/incoming", recursive=True)
    out = f"{s3_bucket}/cohorts/flaky"
    result = ingest(IngestConfig(f"{s3_bucket}/incoming", out, s3_endpoint=flaky_s3.endpoint))
    check_manifest(result.manifest, ids)
    assert flaky_s3.refused == 12  # the store did answer 503 SlowDown, and it made no difference
    ds, _ = read_prepared(resolve(out, s3_endpoint=s3_endpoint))
    assert ds.count() == N_GOOD


def _fingerprint(row):
    return (row["status"], row["image"].shape, float(np.asarray(row["image"], np.float64).sum()))


def test_reader_pool_and_tasks_read_alike(cohort, ray_session):
    """The reader-actor pool (ingest) and a task per case (segmentation) give the same rows;
    ``then`` runs in the worker, so only its small result comes back."""
    from brats.ingest.rows import read_cohort

    root, ids = cohort
    loc = resolve(str(root))
    config = PreprocessConfig()
    by_mode = {}
    for readers in (None, 2):
        ds, _ = read_cohort(loc, config, readers=readers, finish=_fingerprint_row)
        rows = ds.take_all()
        assert sorted(r["case_id"] for r in rows) == sorted([*ids, *FAULTS])
        assert set(rows[0]) == {"case_id", "status", "shape", "total", "pid"}
        by_mode[readers] = rows
    tasks = {r["case_id"]: (r["status"], list(r["shape"]), r["total"]) for r in by_mode[None]}
    pool = {r["case_id"]: (r["status"], list(r["shape"]), r["total"]) for r in by_mode[2]}
    assert tasks == pool
    assert sum(status == "done" for status, _, _ in pool.values()) == N_GOOD
    # Two readers at most: every case went through one of at most two actor processes.
    assert 1 <= len({r["pid"] for r in by_mode[2]}) <= 2


def _fingerprint_row(row):
    status, shape, total = _fingerprint(row)
    return {
        "case_id": row["case_id"],
        "status": status,
        "shape": list(shape),
        "total": total,
        "pid": os.getpid(),
    }


# --- label schemes ---------------------------------------------------------------------------


def test_a_post_treatment_cohort_is_ingested_in_gli2024_and_says_so(tmp_path, ray_session):
    root = tmp_path / "gli"
    generate_cohort(root, 4, SynthConfig(shape=(48, 48, 48), seed=3, convention="gli2024"))
    out = tmp_path / "out"
    result = ingest(IngestConfig(cohort=str(root), out=str(out)))
    manifest = result.manifest
    assert manifest["label_scheme"]["name"] == "gli2024"  # a 4 under BraTS-GLI names
    assert {c["label_scheme"] for c in manifest["cases"]} == {"gli2024"}
    assert manifest["counts"]["done"] == 4
    ds, _ = read_prepared(resolve(str(out)))
    labels = set()
    for row in ds.iter_rows():
        labels |= set(np.unique(row["label"]).tolist())
    assert 4 in labels  # the cavity, internal class 4 (RC), never 3 (ET)
    assert {c["class_voxels"]["RC"] > 0 for c in manifest["cases"]} == {True, False}


def test_a_4_under_2023_names_without_a_scheme_is_refused_before_reading(tmp_path, caplog):
    """RELIABILITY row 17: nothing read, nothing written, the message names the way out."""
    root = tmp_path / "unknown"
    generate_cohort(root, 2, SynthConfig(shape=(32, 32, 32), seed=3, convention="gli2024"))
    for folder in sorted(root.iterdir()):  # the same files under a prefix no rule knows
        new_id = folder.name.replace("BraTS-GLI", "Site-XYZ")
        for f in folder.iterdir():
            f.rename(folder / f.name.replace("BraTS-GLI", "Site-XYZ"))
        folder.rename(root / new_id)
    out = tmp_path / "out"
    code = run_ingest(["--cohort", str(root), "--out", str(out), "--readers", "1"])
    assert code == 2
    message = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "--label-scheme" in message
    assert all(name in message for name in ("gli2024", "met2024", "ped2024"))
    assert not out.exists()
