"""What several test modules share: fake credentials, ports, an S3 client, a flaky S3 proxy,
and a tiny model trained on a cohort. Test modules import from here, never from each other."""

from __future__ import annotations

import contextlib
import gzip
import io
import socket
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from brats.report.records import CaseRecord
from brats.volume.labels import BRATS2020
from brats.volume.metrics import METRIC_KEYS

FAKE_SECRETS = ("AKIAFAKEBRATSTESTKEY", "fake/brats+test+secret+do+not+log")
"""The AWS key id and secret every test runs with (see conftest.py): nothing may print them."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3fs_client(endpoint: str):
    import s3fs

    return s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True, use_listings_cache=False
    )


class FlakyS3Proxy:
    """A real HTTP proxy in front of the moto server that answers some requests with S3's
    ``503 SlowDown``: the first ``failures`` requests whose number is a multiple of
    ``every`` are refused, every other request is forwarded unchanged."""

    def __init__(self, upstream: str, *, every: int = 3, failures: int = 30) -> None:
        import http.client
        import http.server
        import threading
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        self.lock = threading.Lock()
        self.requests = 0
        self.refused = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep the test log quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.requests += 1
                    refuse = proxy.requests % every == 0 and proxy.refused < failures
                    if refuse:
                        proxy.refused += 1
                if refuse:
                    payload = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                        b"<Message>Please reduce your request rate.</Message></Error>"
                    )
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = target.netloc
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                # A HEAD answer has no body but tells the object's length: pass that on.
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


TINY_TRAINING = {
    "patch_size": (16, 16, 16),
    "base_filters": 4,
    "depth": 2,
    "batch_size": 2,
    "patches_per_case": 2,
    "learning_rate": 3e-3,
    "val_fraction": 0.25,
    "num_workers": 2,
}
"""TrainConfig settings small enough for a run of a few epochs in well under a minute."""


def train_controllers() -> list[object]:
    """Every Ray Train controller actor this Ray has started (alive or not): one per run
    started, so a test counts the runs a call started."""
    import ray
    from ray.util.state import list_actors

    return list_actors(
        address=ray.get_runtime_context().gcs_address,
        filters=[("class_name", "=", "TrainController")],
        limit=1000,
    )


def train_tiny_model(cohort_root: Path, where: str, *, seed: int, steps: int = 25) -> str:
    """A 4-filter, depth-2 U-Net trained for a few steps on the cohort's patches, exported as
    an artifact under ``where`` (16^3 windows, 4 modalities, z-score); returns ``where``."""
    import keras
    import tensorflow as tf

    from brats.ingest.prepare import PreprocessConfig, prepare_case
    from brats.io.artifact import save_artifact
    from brats.io.cases import discover
    from brats.io.nifti import read_case
    from brats.storage import resolve
    from brats.train.batches import patch_batches
    from brats.train.config import TrainConfig
    from brats.train.schedule import step_progress
    from brats.train.worker import build_step

    keras.utils.set_random_seed(seed)
    config = TrainConfig(
        data="-", storage="-", patch_size=(16, 16, 16), base_filters=4, depth=2,
        learning_rate=3e-3, seed=seed,
    )  # fmt: skip
    loc = resolve(str(cohort_root))
    rows = []
    for case in discover(loc).cases:
        prepared = prepare_case(
            read_case(case, loc, modalities=config.modalities), PreprocessConfig()
        )
        rows.append({"image": prepared.image, "label": prepared.label, "labeled": True})
    model, _, step = build_step(config, tf.distribute.get_strategy())
    batches = patch_batches(iter(rows * 10), config, steps, (seed, 0, 0))
    for i, (x, y) in enumerate(batches):
        step(tf.constant(x), tf.constant(y), tf.constant(step_progress(0, i, steps, 1)))
    save_artifact(model, config.model_info("zscore", label_scheme=BRATS2020), where)
    return where


def folder_files(folder: Path) -> dict[str, bytes]:
    """``{name: bytes}`` of the files in ``folder``."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def nifti_header(path: Path) -> nib.Nifti1Header:
    """Parse only the 348-byte header: never the data the header declares."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        block = fh.read(348)
    return nib.Nifti1Header.from_fileobj(io.BytesIO(block), check=False)


def nifti_data(path: Path) -> np.ndarray:
    """A NIfTI file's voxels as stored (nibabel, no scaling applied)."""
    return np.asarray(nib.load(path).dataobj)


# --- report records -------------------------------------------------------------------------

VERSION_A = "a" * 64
VERSION_B = "b" * 64


def report_metrics(
    dice_wt: float, *, dice_tc: float = 0.7, dice_et: float = 0.6, hd: float = 4.0
) -> dict[str, float]:
    """Every metric key 0.5, but Dice and HD95 per region as given."""
    values = dict.fromkeys(METRIC_KEYS, 0.5)
    values.update({"dice_WT": dice_wt, "dice_TC": dice_tc, "dice_ET": dice_et})
    values.update({"hd95_WT": hd, "hd95_TC": hd + 1.0, "hd95_ET": hd + 2.0})
    return values


def done_record(case_id: str, case_metrics: dict | None, version: str = VERSION_A) -> CaseRecord:
    """A ``done`` record as the segmentation job writes it, with a key from a newer job."""
    return CaseRecord.from_dict(
        {
            "case_id": case_id,
            "status": "done",
            "model_version": version,
            "mask": f"masks/{case_id}.nii.gz",
            "label_scheme": "brats2020",
            "input_checksums": {f"{case_id}_flair.nii.gz": "0" * 64},
            "shape": [16, 16, 8],
            "spacing": [1.0, 1.0, 1.0],
            "timings": {"read_s": 0.5, "predict_s": 2.0, "write_s": 0.25},
            "region_volumes_ml": {"WT": 12.5, "TC": 4.0, "ET": 1.5},
            "metrics": case_metrics,
            "error": None,
            "created": "2026-11-25T12:00:00+00:00",
            "extra_key_from_a_newer_job": {"ignored": True},
            "settings": {},
        }
    )


def failed_record(case_id: str, file: str | None, reason: str) -> CaseRecord:
    """A ``failed`` record naming the file and the reason."""
    where = f"{file}: " if file else ""
    return CaseRecord.from_dict(
        {
            "case_id": case_id,
            "status": "failed",
            "model_version": VERSION_A,
            "mask": None,
            "label_scheme": None,
            "input_checksums": {},
            "shape": None,
            "spacing": None,
            "timings": {"read_s": 0.1, "predict_s": 0.0, "write_s": 0.0},
            "region_volumes_ml": None,
            "metrics": None,
            "error": {
                "file": file,
                "reason": reason,
                "message": f"case {case_id}: {where}{reason}",
            },
            "created": "2026-11-25T12:00:01+00:00",
            "settings": {},
        }
    )


def report_cohort() -> list[CaseRecord]:
    """Five cases with ground truth, one without, one failed; two model versions."""
    return [
        done_record("case_e", report_metrics(0.91, dice_tc=0.80, dice_et=0.70, hd=3.0)),
        done_record("case_a", report_metrics(0.42, dice_tc=0.10, dice_et=0.00, hd=40.0)),
        done_record(
            "case_c", report_metrics(0.77, dice_tc=0.66, dice_et=1.00, hd=7.5), version=VERSION_B
        ),
        done_record("case_b", report_metrics(0.63, dice_tc=0.55, dice_et=0.35, hd=12.0)),
        done_record("case_d", report_metrics(0.85, dice_tc=0.71, dice_et=0.52, hd=5.0)),
        done_record("case_nogt", None),
        failed_record("case_bad", "case_bad_t1.nii.gz", "truncated gzip"),
    ]


def tiny_volumes(tumour_slice: int, with_truth: bool = True):
    """A (16, 16, 8) image with a three-class tumour that is largest on ``tumour_slice``."""
    image = np.zeros((16, 16, 8), dtype=np.float32)
    image[2:14, 2:14, :] = 1.0 + np.linspace(0, 1, 12)[:, None, None]
    pred = np.zeros(image.shape, dtype=np.uint8)
    pred[4:12, 4:12, :] = 2
    pred[6:10, 6:10, :] = 1
    pred[7:9, 7:9, :] = 3
    pred[:, :, [s for s in range(8) if s != tumour_slice]] = 0
    pred[5:7, 5:7, 0] = 2  # a smaller tumour elsewhere
    truth = None
    if with_truth:
        truth = np.zeros(image.shape, dtype=np.uint8)
        truth[3:11, 5:13, :] = 2
    return image, pred, truth


# --- uploads --------------------------------------------------------------------------------


def brain_volume(shape=(20, 24, 18), channels=3, seed=0) -> np.ndarray:
    """``(D, H, W, C) float32``: a bright box (the "brain") in a zero background."""
    rng = np.random.default_rng(seed)
    vol = np.zeros((*shape, channels), np.float32)
    vol[4:16, 4:20, 3:15] = rng.random((12, 16, 12, channels), dtype=np.float32) + 0.5
    return vol


class PickledPayload:
    """Unpickling this would create a marker file: proof that something ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def peak_bytes(fn) -> int:
    """The most memory Python allocated while ``fn()`` ran (tracemalloc)."""
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def cube(mask: np.ndarray, corner: tuple[int, int, int], side: int) -> np.ndarray:
    """``mask`` with a ``side``-voxel cube set from ``corner`` (lesion-wise tests)."""
    z, y, x = corner
    mask[z : z + side, y : y + side, x : x + side] = True
    return mask


def empty_mask(shape: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    """An all-false boolean volume."""
    return np.zeros(shape, dtype=bool)


FINE_MM = (6.0, 6.0, 6.0)
THICK_MM = (6.0, 6.0, 12.0)
"""FINE_MM's field of view in slices twice as thick."""


def mixed_spacing_cohort(root: Any) -> list[str]:
    """Three cases drawn on 40 x 40 x 26 voxels of FINE_MM (240 x 240 x 156 mm) and a fourth
    (case 4) acquired at THICK_MM (40 x 40 x 13): a cohort of two spacings. Returns the ids."""
    from dataclasses import replace

    from brats.devtools.synth import generate_cohort

    grid = spacing_grid()
    ids = generate_cohort(root, 3, grid)
    return ids + generate_cohort(root, 1, replace(grid, spacing_mm=THICK_MM), start=4)


def spacing_grid() -> Any:
    """The SynthConfig of :func:`mixed_spacing_cohort`'s fine cases."""
    from brats.devtools.synth import SynthConfig

    return SynthConfig(shape=(40, 40, 26), field_of_view_mm=(240.0, 240.0, 156.0), seed=4)


def ray_holdings() -> str:
    """What the connected Ray holds now, for a failure's message: its free resources and its
    live actors (a run that never starts is usually waiting for CPUs something else holds)."""
    import ray
    from ray.util.state import list_actors

    alive = list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    names = sorted(f"{a.class_name} (pid {a.pid})" for a in alive)
    return f"free: {ray.available_resources()}; live actors: {names}"


@contextlib.contextmanager
def every_cpu_held() -> Iterator[None]:
    """An actor holds every CPU of the connected Ray inside this block (a cluster whose
    CPUs another job has taken); they are free again when it ends."""
    import ray

    @ray.remote
    class Holder:
        def ready(self) -> bool:
            return True

    total = ray.cluster_resources()["CPU"]
    holder = Holder.options(num_cpus=total).remote()  # type: ignore[attr-defined]
    ray.get(holder.ready.remote(), timeout=60)
    try:
        yield
    finally:
        ray.kill(holder)
