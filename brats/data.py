"""Ray Data pipelines: read and normalize a cohort in parallel, write it as Parquet shards.

Shape of the ingest pipeline (DESIGN.md):

    discover cases (driver, one listing) -> one row per case
      -> map: read the case's files in one task, validate, normalize, crop   (parallel)
      -> map: write each good case as its own Parquet shard at a fixed key (same task)
      -> driver: collect the small per-case results, write manifest.json last

A case that fails becomes a failure row (case, file, reason) and never stops the others.
Shard keys are derived from the case id, so a rerun overwrites, never duplicates.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from brats.cases import Case, Discovery, discover
from brats.errors import CaseError
from brats.labels import LabelConvention
from brats.nifti import read_case
from brats.preprocess import PreparedCase, PreprocessConfig, prepare_case
from brats.storage import Location, read_bytes, redact, resolve, write_bytes_atomic

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SHARDS = "shards"
MANIFEST_FORMAT = "brats-cohort/1"
MAX_MANIFEST_BYTES = 256 << 20


def case_to_row(case: Case) -> dict[str, Any]:
    """A discovered case as a plain row (what travels into the Ray Data read tasks)."""
    return {
        "case_id": case.case_id,
        "case": json.dumps(
            {
                "images": case.images,
                "seg": case.seg,
                "convention": case.convention.value,
                "extra": list(case.extra),
            }
        ),
    }


def row_to_case(row: dict[str, Any]) -> Case:
    spec = json.loads(row["case"])
    return Case(
        case_id=str(row["case_id"]),
        images=dict(spec["images"]),
        seg=spec["seg"],
        convention=LabelConvention(spec["convention"]),
        extra=tuple(spec["extra"]),
    )


def prepared_to_row(prepared: PreparedCase) -> dict[str, Any]:
    """A prepared case as a Ray Data row: tensors plus geometry to paste predictions back."""
    labeled = prepared.label is not None
    return {
        "case_id": prepared.case_id,
        "status": "ok",
        "error": "",
        "error_file": "",
        "image": prepared.image,
        "label": prepared.label if labeled else np.zeros((0, 0, 0), np.uint8),
        "labeled": labeled,
        "crop_start": np.asarray(prepared.crop.start, np.int32),
        "crop_stop": np.asarray(prepared.crop.stop, np.int32),
        "source_shape": np.asarray(prepared.crop.shape, np.int32),
        "affine": np.asarray(prepared.affine, np.float64),
        "spacing": np.asarray(prepared.spacing, np.float64),
        "convention": prepared.convention.value,
        "checksums": json.dumps(prepared.checksums, sort_keys=True),
        "header": prepared.header,
    }


def failure_row(case_id: str, err: CaseError, n_channels: int, dtype: str) -> dict[str, Any]:
    """A failed case as a row of the same schema as :func:`prepared_to_row` (empty tensors)."""
    return {
        "case_id": case_id,
        "status": "failed",
        "error": str(err),
        "error_file": err.file or "",
        "image": np.zeros((n_channels, 0, 0, 0), dtype),
        "label": np.zeros((0, 0, 0), np.uint8),
        "labeled": False,
        "crop_start": np.zeros(3, np.int32),
        "crop_stop": np.zeros(3, np.int32),
        "source_shape": np.zeros(3, np.int32),
        "affine": np.eye(4),
        "spacing": np.ones(3),
        "convention": "",
        "checksums": "{}",
        "header": b"",
    }


def load_and_prepare(
    row: dict[str, Any], *, cohort: Location, config: PreprocessConfig
) -> dict[str, Any]:
    """Ray Data ``map`` function: read + validate + normalize one case; errors become rows.

    Every row also says how long that took (``read_s``), for the segmentation records.
    """
    case = row_to_case(row)
    began = time.perf_counter()
    try:
        volumes = read_case(
            case,
            cohort,
            modalities=config.modalities,
            convention=config.convention,
            limits=config.limits,
        )
        out = prepared_to_row(prepare_case(volumes, config))
    except CaseError as err:
        log.warning("%s", err)
        out = failure_row(case.case_id, err, len(config.modalities), config.dtype)
    except Exception as err:  # a bug or an IO failure must still name its case
        wrapped = CaseError(case.case_id, None, f"{type(err).__name__}: {err}")
        log.exception("%s", wrapped)
        out = failure_row(case.case_id, wrapped, len(config.modalities), config.dtype)
    out["read_s"] = time.perf_counter() - began
    return out


def read_one(
    row: dict[str, Any],
    *,
    cohort: Location,
    config: PreprocessConfig,
    then: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Read and prepare one case, then (in the same worker) apply ``then`` to the row."""
    prepared = load_and_prepare(row, cohort=cohort, config=config)
    return then(prepared) if then is not None else prepared


class CaseReader:
    """A Ray Data actor that reads cases one after another (see :func:`read_cohort`)."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        return read_one(row, **self._kwargs)


def read_cohort(
    cohort: Location,
    config: PreprocessConfig,
    *,
    discovery: Discovery | None = None,
    readers: int | None = None,
    then: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[ray.data.Dataset, Discovery]:
    """The lazy Ray Dataset of prepared cases (one row per case, failures included).

    Listing happens here, once, on the driver; each case's files are then read together by
    one worker, and cases load in parallel. ``then`` runs on each prepared row in the same
    worker (the ingest job writes the case's shard there, so no tensor crosses the object
    store).

    Args:
        readers: ``None`` reads each case in its own Ray task, which suits a pipeline whose
            pace is set downstream (segmentation's model actors). A number reads through a
            pool of up to that many reader actors instead, for jobs whose pace *is* the
            read: Ray Data polls for finished tasks every 0.1 s, and with a case taking
            about 0.3 s a task per case left a third of the cores idle between cases. An
            actor always has its next case queued (``python jobs/benchmark.py ingest``
            measures both).
        then: applied to each prepared row, in the worker that prepared it.
    """
    import ray.data

    found = discovery if discovery is not None else discover(cohort, convention=config.convention)
    rows = [case_to_row(c) for c in found.cases]
    if not rows:
        raise FileNotFoundError(f"no cases found under {redact(cohort.uri)}")
    items = ray.data.from_items(rows, override_num_blocks=len(rows))
    kwargs: dict[str, Any] = {"cohort": cohort, "config": config, "then": then}
    if readers is None:
        ds = items.map(functools.partial(read_one, **kwargs), num_cpus=1)
    else:
        ds = items.map(
            CaseReader,  # type: ignore[arg-type]  # a class runs as an actor pool
            fn_constructor_kwargs=kwargs,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, readers)),
            num_cpus=1,
        )
    return ds, found


def default_readers() -> int:
    """One reader per CPU the cluster has now."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# --- writing shards --------------------------------------------------------------------------


def shard_key(case_id: str) -> str:
    """A case's shard key follows from its id alone: a rerun overwrites, never duplicates.

    One case per shard: a case is tens of MB, so a shard per case keeps every read and write
    in its own task (full parallelism, no batching hop through the object store).
    """
    return posixpath.join(SHARDS, f"{case_id}.parquet")


def _tensor_column(arrays: list[npt.NDArray[Any]]) -> Any:
    """A Ray Data tensor column (variable shape) that Parquet stores and Ray reads back."""
    from ray.data.extensions import ArrowVariableShapedTensorArray

    return ArrowVariableShapedTensorArray.from_numpy([np.ascontiguousarray(a) for a in arrays])


SHARD_COLUMNS = (
    "case_id",
    "image",
    "label",
    "labeled",
    "crop_start",
    "crop_stop",
    "source_shape",
    "affine",
    "spacing",
    "convention",
    "checksums",
)


def encode_shard(rows: list[dict[str, Any]]) -> bytes:
    """Parquet bytes of prepared rows; tensors as Ray tensor columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {}
    for name in SHARD_COLUMNS:
        values = [r[name] for r in rows]
        if isinstance(values[0], np.ndarray):
            columns[name] = _tensor_column(values)
        else:
            columns[name] = pa.array(values)
    table = pa.table(columns)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_case_shard(row: dict[str, Any], *, out: Location) -> dict[str, Any]:
    """Ray Data ``map`` function: write a prepared case as its shard; failures write nothing.

    Returns a small row (no tensors) for the manifest.
    """
    ok = row["status"] == "ok"
    shard = shard_key(str(row["case_id"])) if ok else ""
    if ok:
        write_bytes_atomic(out.filesystem(), out.join(shard), encode_shard([row]))
    return {
        "case_id": str(row["case_id"]),
        "status": str(row["status"]),
        "error": str(row["error"]),
        "error_file": str(row["error_file"]),
        "shard": shard,
        "shape": json.dumps(list(row["image"].shape)),
        "crop": _crop_json(row),
        "spacing": json.dumps(row["spacing"].tolist()),
        "labeled": bool(row["labeled"]),
        "convention": str(row["convention"]),
        "checksums": str(row["checksums"]),
    }


def _crop_json(row: dict[str, Any]) -> str:
    return json.dumps(
        {
            "start": row["crop_start"].tolist(),
            "stop": row["crop_stop"].tolist(),
            "shape": row["source_shape"].tolist(),
        }
    )


# --- the ingest job --------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestConfig:
    """Everything ``jobs/preprocess.py`` takes."""

    cohort: str
    out: str
    s3_endpoint: str | None = None
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    readers: int | None = None  # reader actors; default one per CPU of the cluster


@dataclass(frozen=True)
class IngestResult:
    manifest_uri: str
    manifest: dict[str, Any]
    seconds: float

    @property
    def n_ok(self) -> int:
        return len(self.manifest["cases"])

    @property
    def n_failed(self) -> int:
        return len(self.manifest["failures"]) + len(self.manifest["rejected"])


def ingest(config: IngestConfig) -> IngestResult:
    """Read, validate and normalize a cohort with Ray Data; write shards and a manifest.

    Needs a running Ray (``ray.init()`` or a cluster). Bad cases are recorded in the manifest
    with the case, the file and the reason; every other case is written.
    """
    started = time.perf_counter()
    cohort = resolve(config.cohort, s3_endpoint=config.s3_endpoint)
    out = resolve(config.out, s3_endpoint=config.s3_endpoint)
    readers = config.readers or default_readers()
    results, found = read_cohort(
        cohort,
        config.preprocess,
        readers=readers,
        then=functools.partial(write_case_shard, out=out),
    )
    total = len(found.cases)
    log.info(
        "ingest: %d cases found under %s (%d rejected), up to %d readers",
        total,
        redact(cohort.uri),
        len(found.rejected),
        readers,
    )
    for rejected in found.rejected:
        log.warning("rejected %s: %s", rejected.name, rejected.reason)
    entries: list[dict[str, Any]] = []
    for done, row in enumerate(_iter_results(results), start=1):
        entries.append(row)
        state = "ok" if row["status"] == "ok" else f"FAILED: {row['error']}"
        log.info("ingest [%d/%d] %s %s", done, total, row["case_id"], state)
    manifest = build_manifest(entries, found, cohort, config.preprocess)
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    manifest_path = out.join(MANIFEST)
    write_bytes_atomic(out.filesystem(), manifest_path, data)
    return IngestResult(out.uri_of(manifest_path), manifest, time.perf_counter() - started)


def _iter_results(ds: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        keys = list(batch)
        for i in range(len(batch["case_id"])):
            yield {k: _plain(batch[k][i]) for k in keys}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def build_manifest(
    entries: list[dict[str, Any]],
    found: Discovery,
    cohort: Location,
    preprocess: PreprocessConfig,
) -> dict[str, Any]:
    """The cohort manifest: cases with their shard and geometry, failures, and a content hash.

    The hash covers the preprocessing and every case's input checksums, so a model trained on
    this cohort can name exactly what it saw.
    """
    cases = []
    failures = []
    for e in sorted(entries, key=lambda e: e["case_id"]):
        if e["status"] == "ok":
            cases.append(
                {
                    "case_id": e["case_id"],
                    "shard": e["shard"],
                    "shape": json.loads(e["shape"]),
                    "crop": json.loads(e["crop"]),
                    "spacing": json.loads(e["spacing"]),
                    "labeled": bool(e["labeled"]),
                    "convention": e["convention"],
                    "checksums": json.loads(e["checksums"]),
                }
            )
        else:
            failures.append(
                {"case_id": e["case_id"], "file": e["error_file"] or None, "reason": e["error"]}
            )
    content = {
        "preprocess": preprocess.to_dict(),
        "cases": [[c["case_id"], c["checksums"]] for c in cases],
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return {
        "format": MANIFEST_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": redact(cohort.uri),
        "preprocess": preprocess.to_dict(),
        "hash": digest,
        "counts": {
            "found": len(found.cases) + len(found.rejected),
            "ok": len(cases),
            "failed": len(failures),
            "rejected": len(found.rejected),
        },
        "cases": cases,
        "failures": failures,
        "rejected": [{"name": r.name, "reason": r.reason} for r in found.rejected],
    }


def load_manifest(out: Location) -> dict[str, Any]:
    """Read a normalized cohort's manifest."""
    raw = read_bytes(out.filesystem(), out.join(MANIFEST), max_bytes=MAX_MANIFEST_BYTES)
    manifest: dict[str, Any] = json.loads(raw)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{redact(out.uri)}/{MANIFEST}: not a brats cohort manifest")
    return manifest


def read_prepared(
    out: Location, case_ids: list[str] | None = None
) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """The normalized cohort written by :func:`ingest`, as a Ray Dataset of prepared rows.

    Args:
        out: the folder holding ``manifest.json`` and ``shards/``.
        case_ids: read only these cases (each has its own shard, so nothing else is read).
    """
    import ray.data

    manifest = load_manifest(out)
    by_id = {c["case_id"]: c["shard"] for c in manifest["cases"]}
    if case_ids is not None:
        missing = sorted(set(case_ids) - set(by_id))
        if missing:
            raise KeyError(f"{redact(out.uri)}: cases not in the manifest: {missing}")
        by_id = {i: by_id[i] for i in case_ids}
    shards = sorted(set(by_id.values()))
    if not shards:
        raise FileNotFoundError(f"{redact(out.uri)}: the manifest lists no cases")
    paths = [out.join(s) for s in shards]
    ds = ray.data.read_parquet(paths, filesystem=out.pyarrow_filesystem())
    return ds, manifest
