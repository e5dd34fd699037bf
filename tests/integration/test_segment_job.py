"""The segmentation job against a real local Ray, a real (tiny, freshly trained) model, real
NIfTI files and a moto S3 server: outputs, exactly-once, reruns and bad input."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brats.devtools.faults import FAULTS, CrashOnCases, RaiseOnCases, chosen, write_faulty_case
from brats.devtools.synth import SynthConfig, generate_cohort
from brats.io.cases import discover
from brats.segment.attempts import ATTEMPTS, MAX_ATTEMPTS
from brats.segment.job import SegmentConfig, SegmentError, segment
from brats.storage import json_bytes, resolve
from brats.volume.labels import to_internal
from brats.volume.metrics import evaluate_case
from tests.helpers import (
    FAKE_SECRETS,
    every_cpu_held,
    nifti_data,
    s3fs_client,
    train_tiny_model,
)

N_CASES = 6
SHAPE = (32, 32, 24)
V1_RECORDS = Path(__file__).resolve().parents[1] / "data" / "records_v1"


# --- fixtures: a cohort and a model trained here -----------------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg-cohort")
    generate_cohort(root, N_CASES, SynthConfig(shape=SHAPE, seed=21))
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory, cohort):
    return train_tiny_model(cohort, str(tmp_path_factory.mktemp("model")), seed=0)


@pytest.fixture(scope="module")
def done_once(cohort, model, tmp_path_factory, ray_session):
    """One undisturbed run of the job on the cohort, shared by the module: ``(out, result)``.
    Read it as it is; copy it (:func:`copy_of`) before running anything on it."""
    out = tmp_path_factory.mktemp("done-once") / "nightly"
    return out, run(cohort, model, out)


def copy_of(done_once, tmp_path: Path) -> Path:
    """A copy of the shared run's outputs (mtimes kept) to rerun the job on."""
    out = tmp_path / "nightly"
    shutil.copytree(done_once[0], out)
    return out


def run(cohort, model, out, *, predict_hook=None, write_hook=None, **kwargs):
    config = SegmentConfig(cohort=str(cohort), model=str(model), out=str(out), **kwargs)
    return segment(config, predict_hook=predict_hook, write_hook=write_hook)


def files_and_mtimes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()
    }


# --- the job -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_masks_records_and_report_on_local_storage(cohort, done_once):
    out, result = done_once
    assert (result.done, result.skipped, result.failed) == (N_CASES, 0, [])
    assert result.exit_code() == 0
    masks = sorted(p.name for p in (out / "masks").iterdir())
    records = sorted(p.name for p in (out / "records").iterdir())
    ids = [c.case_id for c in discover(resolve(str(cohort))).cases]
    assert masks == [f"{i}.nii.gz" for i in ids] and records == [f"{i}.json" for i in ids]

    for case in discover(resolve(str(cohort))).cases:
        mask = nib.load(out / "masks" / f"{case.case_id}.nii.gz")
        source = nib.load(case.images["flair"])
        assert mask.shape == source.shape == SHAPE
        np.testing.assert_allclose(mask.affine, source.affine)
        assert mask.header.get_zooms() == source.header.get_zooms()
        assert mask.get_data_dtype() == np.uint8
        disk = np.asarray(mask.dataobj)
        assert set(np.unique(disk)) <= {0, 1, 2, 4}  # the cohort's 2020 convention
        record = json.loads((out / "records" / f"{case.case_id}.json").read_text())
        assert record["status"] == "done" and record["mask"] == f"masks/{case.case_id}.nii.gz"
        assert len(record["model_version"]) == 64
        assert set(record["input_checksums"]) == {
            os.path.basename(p) for p in [*case.images.values(), case.seg]
        }
        # The record's metrics are brats.metrics on the files themselves.
        truth = to_internal(np.asarray(nib.load(case.seg).dataobj), "brats2020")
        pred = to_internal(disk, "brats2020")
        expected = evaluate_case(pred, truth, source.header.get_zooms())
        assert record["metrics"] == pytest.approx(expected)
        # One model: its folds agree by definition; the score is the entropy in the tumour.
        sure = record["uncertainty"]
        assert sure["models"] == 1 and sure["agreement"] == 1.0 and 0 < sure["entropy"] < 1
        assert sure["score"] == pytest.approx(sure["entropy"]) and "maps" not in record

    for name in ("report.parquet", "report.csv", "summary.json", "report.html", "_SUCCESS"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["done"] == N_CASES and summary["counts"]["failed"] == 0
    review = [row["uncertainty"] for row in summary["review_first"]]
    assert len(review) == N_CASES and review == sorted(review, reverse=True)
    page = (out / "report.html").read_text()
    assert "Review first: the 6 most uncertain cases" in page
    success = json.loads((out / "_SUCCESS").read_text())
    assert success["model_version"] == result.model_version


@pytest.mark.integration
def test_rerun_does_nothing_then_redoes_only_a_deleted_record(cohort, model, tmp_path, done_once):
    out = copy_of(done_once, tmp_path)
    before = files_and_mtimes(out)
    again = run(cohort, model, out)
    assert (again.done, again.skipped) == (0, N_CASES)
    assert files_and_mtimes(out) == before  # nothing written at all

    victim = next(k for k in sorted(before) if k.startswith("records/")).split("/")[1][:-5]
    mask_before = (out / "masks" / f"{victim}.nii.gz").read_bytes()
    (out / "records" / f"{victim}.json").unlink()
    third = run(cohort, model, out)
    assert (third.done, third.skipped) == (1, N_CASES - 1)
    assert (out / "records" / f"{victim}.json").is_file()
    assert (out / "masks" / f"{victim}.nii.gz").read_bytes() == mask_before
    others = {k: v for k, v in before.items() if k.startswith("masks/") and victim not in k}
    assert {k: v for k, v in files_and_mtimes(out).items() if k in others} == others


@pytest.mark.integration
def test_probabilities_and_uncertainty_maps_in_each_cases_geometry(
    cohort, model, tmp_path, done_once
):
    from brats.io.artifact import read_model_card
    from brats.volume.labels import regions_to_labels
    from brats.volume.postprocess import Postprocessing
    from brats.volume.uncertainty import entropy_map

    info = read_model_card(str(model)).info
    rules = Postprocessing.from_dict(info.postprocessing, info.scheme)
    out = copy_of(done_once, tmp_path)
    masks_before = {p.name: p.read_bytes() for p in (out / "masks").iterdir()}
    maps = {"save_probabilities": True, "save_uncertainty": True}
    first = run(cohort, model, out, **maps)
    assert (first.done, first.skipped) == (N_CASES, 0)  # done, but without the maps asked for
    assert {p.name: p.read_bytes() for p in (out / "masks").iterdir()} == masks_before
    for case in discover(resolve(str(cohort))).cases:
        source = nib.load(case.images["flair"])
        record = json.loads((out / "records" / f"{case.case_id}.json").read_text())
        assert record["maps"] == {
            "probabilities": f"probabilities/{case.case_id}.nii.gz",
            "uncertainty": f"uncertainty/{case.case_id}.nii.gz",
        }
        probs = nib.load(out / record["maps"]["probabilities"])
        sure = nib.load(out / record["maps"]["uncertainty"])
        assert probs.shape == (*SHAPE, 3) and sure.shape == SHAPE
        for image in (probs, sure):
            np.testing.assert_allclose(image.affine, source.affine)
            assert image.header.get_zooms()[:3] == source.header.get_zooms()
        assert probs.header["descrip"].tobytes().rstrip(b"\0").endswith(b"WT TC ET")
        p = probs.get_fdata()
        assert p.min() >= 0 and p.max() <= 1 and p.max() > 0.5
        # The mask is these probabilities decoded, then the model's component rules (up to
        # a voxel within a quantization step of 0.5).
        disk = nib.load(out / "masks" / f"{case.case_id}.nii.gz").dataobj
        mask = to_internal(np.asarray(disk), "brats2020")
        decoded = rules.apply(regions_to_labels(np.moveaxis(p, -1, 0), scheme=info.scheme))
        assert np.mean(decoded == mask) > 0.999
        np.testing.assert_allclose(sure.get_fdata(), entropy_map(np.moveaxis(p, -1, 0)), atol=2e-3)
    again = run(cohort, model, out, **maps)
    assert (again.done, again.skipped) == (0, N_CASES)
    assert run(cohort, model, out).skipped == N_CASES  # fewer maps asked: still done
    victim = next((out / "probabilities").iterdir())
    victim.unlink()
    redo = run(cohort, model, out, save_probabilities=True)
    assert (redo.done, redo.skipped) == (1, N_CASES - 1) and victim.is_file()
    # Redone without the uncertainty map: its old one is gone, and its record says so.
    case_id = victim.name[: -len(".nii.gz")]
    assert not (out / "uncertainty" / victim.name).exists()
    assert len(list((out / "uncertainty").iterdir())) == N_CASES - 1
    record = json.loads((out / "records" / f"{case_id}.json").read_text())
    assert record["maps"] == {"probabilities": f"probabilities/{case_id}.nii.gz"}


@pytest.mark.integration
def test_records_written_before_the_schema_version_are_still_skipped(
    cohort, model, tmp_path, done_once
):
    """Outputs of brats 0.1.0 (records without a schema key) are done work for this code."""
    out = copy_of(done_once, tmp_path)
    template = json.loads((V1_RECORDS / "done.json").read_text())
    for path in (out / "records").iterdir():
        current = json.loads(path.read_text())
        added = {"schema", "precision", "label_scheme", "uncertainty", "backend"}
        assert set(current) - set(template) == added
        assert set(template) - set(current) == {"convention"}  # what label_scheme was
        current["convention"] = current.pop("label_scheme")
        path.write_bytes(json_bytes({key: current[key] for key in template}))
    old = {p.name: p.read_bytes() for p in (out / "records").iterdir()}
    masks = files_and_mtimes(out / "masks")
    again = run(cohort, model, out)
    assert (again.done, again.skipped, again.failed) == (0, N_CASES, [])
    assert {p.name: p.read_bytes() for p in (out / "records").iterdir()} == old
    assert files_and_mtimes(out / "masks") == masks
    before = files_and_mtimes(out)
    third = run(cohort, model, out)
    assert (third.done, third.skipped) == (0, N_CASES)
    assert files_and_mtimes(out) == before  # and now not even the report is rewritten


@pytest.mark.integration
def test_a_new_model_version_redoes_every_case(cohort, tmp_path, done_once):
    out, first = copy_of(done_once, tmp_path), done_once[1]
    other = train_tiny_model(cohort, str(tmp_path / "model-v2"), seed=1)
    second = run(cohort, other, out)
    assert second.model_version != first.model_version
    assert (second.done, second.skipped) == (N_CASES, 0)
    for path in (out / "records").iterdir():
        assert json.loads(path.read_text())["model_version"] == second.model_version


@pytest.mark.integration
def test_actor_crashes_lose_nothing_change_no_byte_and_a_poison_case_is_failed(
    cohort, model, tmp_path, done_once
):
    clean = done_once[0]
    ids = [c.case_id for c in discover(resolve(str(cohort))).cases]
    seed = next(s for s in range(100) if 0 < sum(chosen(i, 0.1, s) for i in ids) < N_CASES - 1)
    poison = next(i for i in ids if not chosen(i, 0.1, seed))  # kills every actor it meets
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "faulty"
    hook = CrashOnCases(rate=0.1, seed=seed, marker_dir=str(markers), always=(poison,))
    result = run(cohort, model, out, predict_hook=hook)
    crashed_once = {f"{i}.crashed" for i in ids if chosen(i, 0.1, seed)}
    assert {p.name for p in markers.iterdir()} == crashed_once | {f"{poison}.crashed"}
    assert (markers / f"{poison}.crashed").read_text().count("crashed") == MAX_ATTEMPTS
    assert result.done == N_CASES - 1
    assert [f["case_id"] for f in result.failed] == [poison]
    assert f"died each of the {MAX_ATTEMPTS} times" in result.failed[0]["error"]
    record = json.loads((out / "records" / f"{poison}.json").read_text())
    assert record["status"] == "failed" and not (out / "masks" / f"{poison}.nii.gz").exists()
    assert sorted(os.listdir(out / "masks")) == sorted(
        n for n in os.listdir(clean / "masks") if not n.startswith(poison)
    )
    for name in os.listdir(out / "masks"):
        assert (out / "masks" / name).read_bytes() == (clean / "masks" / name).read_bytes()
    assert not (out / ATTEMPTS).exists() or not list((out / ATTEMPTS).iterdir())
    rows = json.loads((out / "summary.json").read_text())["counts"]
    assert rows["cases"] == N_CASES


@pytest.mark.integration
def test_a_write_that_breaks_leaves_nothing_and_is_redone(cohort, model, tmp_path, ray_session):
    out = tmp_path / "nightly"
    victim = discover(resolve(str(cohort))).cases[1].case_id
    result = run(cohort, model, out, write_hook=RaiseOnCases((victim,)))
    assert [f["case_id"] for f in result.failed] == [victim]
    assert "injected failure" in result.failed[0]["error"]
    assert not (out / "masks" / f"{victim}.nii.gz").exists()
    assert not (out / "records" / f"{victim}.json").exists()
    assert not [p for p in (out / "masks").iterdir() if p.name.startswith(".")]  # no temp
    again = run(cohort, model, out)
    assert (again.done, again.skipped) == (1, N_CASES - 1)
    assert (out / "records" / f"{victim}.json").is_file()


@pytest.mark.integration
def test_corrupt_inputs_become_failed_records_and_the_rest_finish(model, tmp_path, ray_session):
    root = tmp_path / "cohort"
    config = SynthConfig(shape=SHAPE, seed=5)
    good = generate_cohort(root, 2, config)
    faults = [f for f in FAULTS if f != "missing_modality"] + ["missing_modality"]
    for fault in faults:
        write_faulty_case(root, f"Bad_{fault}", fault, config)
    out = tmp_path / "nightly"
    result = run(root, model, out)
    assert result.done == len(good)
    failed = {f["case_id"]: f["error"] for f in result.failed}
    assert set(failed) == {f"Bad_{f}" for f in faults}
    for fault in faults:
        record = json.loads((out / "records" / f"Bad_{fault}.json").read_text())
        assert record["status"] == "failed" and record["mask"] is None
        assert record["error"]["file"].startswith(f"Bad_{fault}")
        assert record["error"]["message"].startswith(f"case Bad_{fault}: ")
        assert record["error"]["reason"]
    assert not list((out / "masks").glob("Bad_*"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] == len(faults)


@pytest.mark.integration
def test_a_tampered_model_is_refused_before_any_work(cohort, model, tmp_path, ray_session):
    tampered = tmp_path / "model"
    shutil.copytree(model, tampered)
    data = bytearray((tampered / "model.keras").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / "model.keras").write_bytes(bytes(data))
    with pytest.raises(SegmentError, match=r"model\.keras: sha256 .* differs"):
        run(cohort, tampered, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_hostile_case_folders_are_rejected_and_nothing_lands_outside_out(
    cohort, model, tmp_path, ray_session
):
    root = tmp_path / "cohort"
    shutil.copytree(cohort, root)
    source = next(root.iterdir())
    for name in ("with space", "caf\u00e9", "%2e%2e", ".hidden"):
        target = root / name
        target.mkdir()
        for f in source.iterdir():
            shutil.copy(f, target / f.name.replace(source.name, name))
    out = tmp_path / "area" / "nightly"
    result = run(root, model, out)
    assert result.total == N_CASES and result.done == N_CASES
    assert sorted(os.listdir(tmp_path / "area")) == ["nightly"]
    written = {p.name for p in (out / "records").iterdir()}
    assert written == {f"{c.case_id}.json" for c in discover(resolve(str(cohort))).cases}


@pytest.mark.integration
def test_s3_cohort_model_and_outputs_with_no_credentials_anywhere(
    cohort, model, tmp_path, ray_session, s3_bucket, s3_endpoint, capfd
):
    fs = s3fs_client(s3_endpoint)
    bucket = s3_bucket[5:]
    fs.put(str(cohort), f"{bucket}/incoming", recursive=True)
    fs.put(str(model), f"{bucket}/model", recursive=True)
    config = SegmentConfig(
        cohort=f"{s3_bucket}/incoming",
        model=f"{s3_bucket}/model",
        out=f"{s3_bucket}/nightly",
        s3_endpoint=s3_endpoint,
    )
    result = segment(config)
    assert (result.done, result.failed) == (N_CASES, [])
    keys = fs.find(f"{bucket}/nightly")
    assert sum(k.endswith(".nii.gz") for k in keys) == N_CASES
    assert sum("/records/" in k for k in keys) == N_CASES
    assert any(k.endswith("_SUCCESS") for k in keys)
    # Same model, same inputs: the S3 masks are the local run's masks, byte for byte.
    local = run(cohort, model, tmp_path / "local")
    assert local.model_version == result.model_version
    for case in discover(resolve(str(cohort))).cases:
        key = f"{bucket}/nightly/masks/{case.case_id}.nii.gz"
        assert fs.cat(key) == (tmp_path / "local" / "masks" / f"{case.case_id}.nii.gz").read_bytes()
    texts = [fs.cat(k).decode(errors="replace") for k in keys if not k.endswith(".nii.gz")]
    logs = capfd.readouterr()
    for secret in FAKE_SECRETS:
        assert not any(secret in t for t in texts)
        assert secret not in logs.out and secret not in logs.err


@pytest.mark.integration
def test_truth_in_another_scheme_than_the_models_stops_the_run_naming_both(cohort, model, tmp_path):
    out = tmp_path / "other-scheme"
    with pytest.raises(SegmentError) as caught:
        run(cohort, model, out, label_scheme="gli2024")
    message = str(caught.value)
    assert "gli2024" in message and "brats2020" in message and "--label-scheme" in message
    assert not (out / "masks").exists()  # nothing written, nothing scored wrongly


@pytest.mark.integration
def test_rejected_folders_failed_predictions_and_stray_files_are_reported(
    cohort, model, tmp_path, ray_session
):
    root = tmp_path / "cohort"
    shutil.copytree(cohort, root)
    doubled = sorted(root.iterdir())[0]
    flair = next(doubled.glob("*_flair.nii.gz"))
    shutil.copy(flair, doubled / flair.name.replace(".nii.gz", ".nii"))  # two FLAIR files
    out = tmp_path / "nightly"
    (out / "records").mkdir(parents=True)
    (out / "records" / "notes copy.json").write_text("{}")
    victim = sorted(root.iterdir())[1].name
    result = run(root, model, out, predict_hook=RaiseOnCases((victim,)))
    failed = {f["case_id"]: f["error"] for f in result.failed}
    assert set(failed) == {doubled.name, victim}
    assert "two files for flair" in failed[doubled.name]
    assert "prediction failed" in failed[victim] and "injected failure" in failed[victim]
    assert result.done == N_CASES - 2
    for name in (doubled.name, victim):
        record = json.loads((out / "records" / f"{name}.json").read_text())
        assert record["status"] == "failed" and record["mask"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {**summary["counts"], "failed": 2, "done": N_CASES - 2}


@pytest.mark.integration
def test_a_cluster_with_no_room_for_the_model_actors_stops_the_run_saying_why(
    cohort, model, tmp_path, ray_session
):
    out = tmp_path / "nightly"
    with every_cpu_held(), pytest.raises(SegmentError) as refused:
        run(cohort, model, out, wait_for_actors=2)
    assert str(refused.value).startswith(
        "1 model actor(s) of 1 CPUs each found no room within 2 s: the cluster has 0 of 2 "
        "CPUs free."
    )
    assert "--wait-for-actors" in str(refused.value)
    assert not (out / "masks").exists() or not any((out / "masks").iterdir())
    assert not (out / "_SUCCESS").exists()
    # Nothing was lost: once the CPUs are free, the same run does every case.
    assert run(cohort, model, out, wait_for_actors=60).done == N_CASES


def test_an_empty_cohort_is_a_failure(model, tmp_path, ray_session):
    (tmp_path / "empty").mkdir()
    result = run(tmp_path / "empty", model, tmp_path / "out")
    assert result.total == 0 and result.exit_code() == 1


def agreeing_records(cohort, plain: Path, other: Path) -> list[tuple[dict, dict]]:
    """Each case's records in ``plain`` and ``other``, once ``other``'s masks are found to
    differ from ``plain``'s in at most 0.1 % of voxels, with Dice within 0.005 per region."""
    pairs = []
    differing = voxels = 0
    for case in discover(resolve(str(cohort))).cases:
        a = nifti_data(plain / "masks" / f"{case.case_id}.nii.gz")
        b = nifti_data(other / "masks" / f"{case.case_id}.nii.gz")
        differing, voxels = differing + int(np.count_nonzero(a != b)), voxels + a.size
        old = json.loads((plain / "records" / f"{case.case_id}.json").read_text())
        new = json.loads((other / "records" / f"{case.case_id}.json").read_text())
        for region in ("WT", "TC", "ET"):
            assert new["metrics"][f"dice_{region}"] == pytest.approx(
                old["metrics"][f"dice_{region}"], abs=0.005
            )
        pairs.append((old, new))
    assert differing <= 0.001 * voxels
    return pairs


@pytest.mark.integration
def test_a_bfloat16_run_agrees_with_float32_and_says_which_precision_ran(
    cohort, model, tmp_path, done_once
):
    from brats.segment.predictor import PredictSettings

    plain, fast = done_once[0], tmp_path / "bfloat16"
    result = run(cohort, model, fast, predict=PredictSettings(precision="bfloat16"))
    assert (result.done, result.failed) == (N_CASES, [])
    for old, new in agreeing_records(cohort, plain, fast):
        assert old["precision"] == "float32" and "precision" not in old["settings"]
        assert new["precision"] == "bfloat16" and new["settings"]["precision"] == "bfloat16"
    summary = json.loads((fast / "summary.json").read_text())
    assert summary["precisions"] == ["bfloat16"]
    assert "Network precision: bfloat16" in (fast / "report.html").read_text()
    # Another precision is another output setting, so it redoes done cases (as tested for
    # settings above); float32 keeps the settings of records written before precision.
    assert PredictSettings(precision="bfloat16").output_settings() != (
        PredictSettings().output_settings()
    )
    assert "precision" not in PredictSettings().output_settings()


@pytest.mark.integration
def test_an_onnx_export_segments_like_keras_and_says_which_runtime_ran(
    cohort, model, tmp_path, done_once
):
    """The same model exported to ONNX runs through the one predictor in ONNX Runtime
    (``--backend auto`` picks it for an export): its masks differ from Keras float32 in at
    most 0.1 % of voxels with Dice within 0.005 per region, and the records, summary and
    report say which runtime ran and name the export's version."""
    from brats.io.export import ExportConfig, export_model
    from brats.segment.predictor import PredictSettings

    exported = export_model(ExportConfig(model=model, out=str(tmp_path / "onnx")))
    plain, served = done_once[0], tmp_path / "served"
    result = run(cohort, tmp_path / "onnx", served)
    assert (result.done, result.failed, result.model_version) == (N_CASES, [], exported.version)
    for old, new in agreeing_records(cohort, plain, served):
        assert (old["backend"], new["backend"]) == ("keras", "onnxruntime")
        assert new["precision"] == "float32" and new["model_version"] == exported.version
    assert json.loads((served / "summary.json").read_text())["backends"] == ["onnxruntime"]
    assert "runtime: onnxruntime" in (served / "report.html").read_text()
    # The export runs only in ONNX Runtime: asked for Keras, the job stops before any case.
    with pytest.raises(SegmentError, match="ONNX export runs in ONNX Runtime"):
        run(
            cohort,
            tmp_path / "onnx",
            tmp_path / "refused",
            predict=PredictSettings(backend="keras"),
        )
    assert not (tmp_path / "refused").exists()
    with pytest.raises(SegmentError, match="bfloat16 needs --backend keras"):
        run(
            cohort,
            tmp_path / "onnx",
            tmp_path / "refused",
            predict=PredictSettings(precision="bfloat16"),
        )
    assert not (tmp_path / "refused").exists()
    # Another backend asked for by name is another output setting; auto keeps old records'.
    assert PredictSettings(backend="onnxruntime").output_settings()["backend"] == "onnxruntime"
    assert "backend" not in PredictSettings().output_settings()
