"""An ingested cohort in storage: one Parquet shard per case, and the manifest that lists them.

    OUT/shards/<case>.parquet   one case's prepared row (:data:`SHARD_COLUMNS`)
    OUT/manifest.json           cases, failures, the preprocessing, a content hash (last)

Shard keys follow from the case id alone, so a rerun overwrites, never duplicates. The
manifest's ``counts`` say ``done`` for the cases written (:mod:`brats.report.status`);
manifests written before said ``ok``, and :func:`load_manifest` reads them as ``done``.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from brats.ingest.prepare import PreprocessConfig
from brats.ingest.rows import PREPARED_COLUMNS, Row, resampled_from
from brats.io.cases import Discovery
from brats.report.status import DONE, OLD_DONE, is_done, read_status
from brats.storage import Location, json_bytes, read_bytes, redact, write_bytes_atomic
from brats.volume.labels import DEFAULT, LabelScheme, scheme_from_dict, scheme_named
from brats.volume.resample import as_spacing, same_spacing

if TYPE_CHECKING:
    import ray.data

MANIFEST: Final = "manifest.json"
SHARDS: Final = "shards"
MANIFEST_FORMAT: Final = "brats-cohort/1"
MAX_MANIFEST_BYTES: Final = 256 << 20
SHARD_COLUMNS: Final = tuple(
    c for c in PREPARED_COLUMNS if c not in ("status", "error", "error_file", "header")
)
"""The prepared-row columns a shard keeps (status is always done; the header is not needed
to train)."""


def shard_key(case_id: str) -> str:
    """``shards/<case>.parquet``: one case per shard, so every read and write is its own task."""
    return posixpath.join(SHARDS, f"{case_id}.parquet")


def _tensor_column(arrays: list[npt.NDArray[Any]]) -> Any:
    """A Ray Data tensor column (variable shape) that Parquet stores and Ray reads back."""
    from ray.data.extensions import ArrowVariableShapedTensorArray

    return ArrowVariableShapedTensorArray.from_numpy([np.ascontiguousarray(a) for a in arrays])


def encode_shard(rows: list[Row]) -> bytes:
    """Parquet bytes (zstd) of prepared rows, :data:`SHARD_COLUMNS` only; tensors as Ray
    tensor columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {}
    for name in SHARD_COLUMNS:
        values = [r[name] for r in rows]
        columns[name] = (
            _tensor_column(values) if isinstance(values[0], np.ndarray) else pa.array(values)
        )
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink, compression="zstd")
    return sink.getvalue()


def read_shards(out: Location, case_ids: Sequence[str]) -> Iterator[dict[str, Any]]:
    """The shard rows of ``case_ids`` (each case is one shard), in that order, read one case
    at a time in this process: no Ray task, so no Ray Data execution to start or wait for
    resources inside a training worker. Rows are as Ray Data gives them (numpy tensors).

    Raises:
        KeyError: a case id the manifest does not list.
    """
    shards = shard_keys(out, case_ids)
    for case_id in case_ids:
        yield from read_shard(out, shards[case_id])


def shard_keys(out: Location, case_ids: Sequence[str]) -> dict[str, str]:
    """``{case_id: shard key under out}`` of ``case_ids``, in that order, from the manifest.

    Raises:
        KeyError: a case id the manifest does not list.
    """
    return _shards_of(out, load_manifest(out), case_ids)


def read_shard(out: Location, shard: str) -> list[dict[str, Any]]:
    """The rows of one shard (a key from :func:`shard_keys`), as Ray Data gives them."""
    import pyarrow.parquet as pq
    import ray.data.extensions  # noqa: F401  (registers the tensor column type)

    table = pq.read_table(out.join(shard), filesystem=out.pyarrow_filesystem())
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _shards_of(
    out: Location, manifest: Mapping[str, Any], case_ids: Sequence[str] | None
) -> dict[str, str]:
    """``{case_id: shard key}`` of ``case_ids`` (every case when None), in that order.

    Raises:
        KeyError: a case id the manifest does not list.
    """
    by_id = {c["case_id"]: c["shard"] for c in manifest["cases"]}
    if case_ids is None:
        return by_id
    missing = sorted(set(case_ids) - set(by_id))
    if missing:
        raise KeyError(f"{redact(out.uri)}: cases not in the manifest: {missing}")
    return {i: by_id[i] for i in case_ids}


def write_case_shard(row: Row, *, out: Location, hook: Callable[[str], None] | None = None) -> Row:
    """Write a good prepared row as its shard (a failed one writes nothing); return the small
    manifest entry of the case (no tensors). ``hook(case_id)`` runs first (fault tests)."""
    if hook is not None:
        hook(str(row["case_id"]))
    done = is_done(row["status"])
    shard = shard_key(str(row["case_id"])) if done else ""
    if done:
        write_bytes_atomic(out.filesystem(), out.join(shard), encode_shard([row]))
    crop = {
        "start": row["crop_start"].tolist(),
        "stop": row["crop_stop"].tolist(),
        "shape": row["source_shape"].tolist(),
    }
    return {
        "case_id": str(row["case_id"]),
        "status": read_status(row["status"]),
        "error": str(row["error"]),
        "error_file": str(row["error_file"]),
        "shard": shard,
        "shape": json.dumps(list(row["image"].shape)),
        "crop": json.dumps(crop),
        "spacing": json.dumps(row["spacing"].tolist()),
        "labeled": bool(row["labeled"]),
        "label_scheme": str(row["label_scheme"]),
        "checksums": str(row["checksums"]),
        "class_voxels": json.dumps(_class_voxels(row) if done else []),
        "resampled_from": str(row.get("resampled_from") or ""),
    }


def _class_voxels(row: Row) -> list[int]:
    """Voxels of each internal class of a labelled row's label, background first; ``[]``
    unlabelled."""
    if not bool(row["labeled"]):
        return []
    return np.bincount(np.asarray(row["label"]).ravel()).tolist()


def build_manifest(
    entries: Sequence[Mapping[str, Any]],
    found: Discovery,
    cohort: Location,
    preprocess: PreprocessConfig,
    spacing: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The cohort manifest from the entries :func:`write_case_shard` returned.

    Cases (with shard and geometry) and failures are sorted by case id. A case's ``spacing``
    and ``crop`` are those of the grid it is stored on, ``file_spacing`` and ``file_shape``
    those of its files (different where ingest resampled it). ``spacing`` at the top is the
    cohort's fingerprint (:meth:`brats.ingest.fingerprint.Fingerprint.to_dict`). ``hash``
    covers the preprocessing and every case's input checksums, so a model trained on this
    cohort can name exactly what it saw.
    """
    cases = []
    failures = []
    for e in sorted(entries, key=lambda e: e["case_id"]):
        if is_done(e["status"]):
            cases.append(
                {
                    "case_id": e["case_id"],
                    "shard": e["shard"],
                    "shape": json.loads(e["shape"]),
                    "crop": json.loads(e["crop"]),
                    "spacing": json.loads(e["spacing"]),
                    **_file_geometry(e),
                    "labeled": bool(e["labeled"]),
                    "label_scheme": e["label_scheme"],
                    "checksums": json.loads(e["checksums"]),
                    **_named_voxels(json.loads(e.get("class_voxels", "[]")), preprocess),
                }
            )
        else:
            failures.append(
                {"case_id": e["case_id"], "file": e["error_file"] or None, "reason": e["error"]}
            )
    scheme = (preprocess.scheme or DEFAULT).to_dict()
    content = {
        "preprocess": preprocess.to_dict(),
        "label_scheme": scheme,
        "cases": [[c["case_id"], c["checksums"]] for c in cases],
    }
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return {
        "format": MANIFEST_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": redact(cohort.uri),
        "preprocess": preprocess.to_dict(),
        "label_scheme": scheme,
        "spacing": dict(spacing or {}),
        "hash": digest,
        "counts": {
            "found": len(found.cases) + len(found.rejected),
            DONE: len(cases),
            "failed": len(failures),
            "rejected": len(found.rejected),
        },
        "cases": cases,
        "failures": failures,
        "rejected": [{"name": r.name, "reason": r.reason} for r in found.rejected],
    }


def _file_geometry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``file_spacing`` and ``file_shape`` of a manifest entry: its files' geometry."""
    files = resampled_from(str(entry.get("resampled_from") or ""))
    if files:
        return {key: list(value) for key, value in files.items()}
    return {
        "file_spacing": json.loads(entry["spacing"]),
        "file_shape": json.loads(entry["crop"])["shape"],
    }


def manifest_target_spacing(manifest: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """The spacing a cohort's cases are stored at: the manifest's target, or (a manifest
    written before spacing was planned) the one spacing all its cases share; ``None`` when
    they differ, as a model trained on them does not know its spacing."""
    target = (manifest.get("spacing") or {}).get("target")
    if target:
        return as_spacing(target)
    seen = [c.get("spacing") for c in manifest.get("cases", [])]
    if seen and all(s and same_spacing(s, seen[0]) for s in seen):
        return as_spacing(seen[0])
    return None


def _named_voxels(counts: Sequence[int], preprocess: PreprocessConfig) -> dict[str, Any]:
    """``{"class_voxels": {class name: voxels}}`` of a labelled case (every class of the
    scheme, 0 where absent: what cross-validation stratifies by); nothing for an unlabelled
    one."""
    if not counts:
        return {}
    names = [c.name for c in (preprocess.scheme or DEFAULT).classes]
    padded = [*counts[1:], *([0] * len(names))][: len(names)]
    return {"class_voxels": dict(zip(names, (int(n) for n in padded), strict=True))}


def write_manifest(out: Location, manifest: Mapping[str, Any]) -> str:
    """Write ``manifest.json`` under ``out`` (whole, last); return its URI."""
    path = out.join(MANIFEST)
    write_bytes_atomic(out.filesystem(), path, json_bytes(manifest))
    return out.uri_of(path)


def load_manifest(out: Location) -> dict[str, Any]:
    """The manifest of the ingested cohort in ``out``, its ``counts`` in the current words
    (an older manifest's ``ok`` count is returned as ``done``).

    Raises:
        ValueError: the file is not a brats cohort manifest.
    """
    raw = read_bytes(out.filesystem(), out.join(MANIFEST), max_bytes=MAX_MANIFEST_BYTES)
    manifest: dict[str, Any] = json.loads(raw)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{redact(out.uri)}/{MANIFEST}: not a brats cohort manifest")
    counts = manifest.get("counts")
    if isinstance(counts, dict) and OLD_DONE in counts and DONE not in counts:
        manifest["counts"] = {(DONE if k == OLD_DONE else k): v for k, v in counts.items()}
    return manifest


def manifest_scheme(manifest: Mapping[str, Any]) -> LabelScheme:
    """The label scheme a manifest's labels are in. A manifest written before schemes names a
    convention per case; it reads as that built-in scheme (BraTS 2023 when they differ: the
    two glioma schemes share their internal classes)."""
    data = manifest.get("label_scheme")
    if data:
        return scheme_from_dict(data)
    older = {c.get("convention") for c in manifest.get("cases", [])} - {None, ""}
    return scheme_named(older.pop()) if len(older) == 1 else DEFAULT


def read_prepared(
    out: Location, case_ids: list[str] | None = None
) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """The ingested cohort in ``out`` as a Ray Dataset of shard rows, and its manifest.

    Args:
        out: the folder holding ``manifest.json`` and ``shards/``.
        case_ids: read only these cases (each has its own shard, so nothing else is read).

    Raises:
        KeyError: a case id the manifest does not list.
        FileNotFoundError: no case to read.
    """
    import ray.data

    manifest = load_manifest(out)
    shards = sorted(set(_shards_of(out, manifest, case_ids).values()))
    if not shards:
        raise FileNotFoundError(f"{redact(out.uri)}: the manifest lists no cases")
    paths = [out.join(s) for s in shards]
    ds = ray.data.read_parquet(paths, filesystem=out.pyarrow_filesystem())
    return ds, manifest
