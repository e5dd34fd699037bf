"""The ingest job: read, validate and normalize a cohort with Ray Data into shards + manifest.

Before any case is read, one header per case gives the cohort's fingerprint and the spacing
it is stored at (:mod:`brats.ingest.fingerprint`); a case at another spacing is resampled
to it while it is prepared.

Every case is read by a pool of reader actors (:func:`brats.ingest.rows.read_cohort`), which
write its shard in the same worker; the driver collects the small per-case entries and
writes ``manifest.json`` last. A bad case is a failure entry (case, file, reason) in the
manifest and never stops the others.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from brats.ingest.fingerprint import cohort_fingerprint
from brats.ingest.prepare import PreprocessConfig, scheme_config
from brats.ingest.rows import read_cohort
from brats.ingest.shards import build_manifest, write_case_shard, write_manifest
from brats.io.cases import discover
from brats.options import option
from brats.progress import Progress
from brats.report.status import is_done
from brats.resources import ACTOR_WAIT_HELP, ACTOR_WAIT_S, wait_for_room
from brats.storage import S3_ENDPOINT_HELP, redact, resolve

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestConfig:
    """Everything ``jobs/ingest.py`` takes."""

    cohort: str = option(help="cohort root: local folder or s3://")
    out: str = option(help="output folder: local or s3://")
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    readers: int | None = option(
        None,
        help="reader actors (one CPU each); default: one per CPU of the cluster at start",
    )
    wait_for_actors: float = option(ACTOR_WAIT_S, metavar="SECONDS", help=ACTOR_WAIT_HELP)
    s3_endpoint: str | None = option(None, help=S3_ENDPOINT_HELP)


@dataclass(frozen=True)
class IngestResult:
    manifest_uri: str
    manifest: dict[str, Any]
    seconds: float

    @property
    def n_ok(self) -> int:
        return len(self.manifest["cases"])


def default_readers() -> int:
    """One reader per CPU the cluster has now."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def ingest(
    config: IngestConfig, *, shard_hook: Callable[[str], None] | None = None
) -> IngestResult:
    """Read, validate and normalize a cohort with Ray Data; write shards and a manifest.

    Needs a running Ray (``ray.init()`` or a cluster). Bad cases are recorded in the manifest
    with the case, the file and the reason; every other case is written. ``shard_hook`` is
    called with each case id in the reader before its shard is written (fault tests).

    Raises:
        FileNotFoundError: the cohort root is missing or holds no case.
        brats.volume.labels.SchemeError: the cohort's label scheme is left open by its names
            and labels (:class:`brats.io.schemes.SchemeUnresolved`: nothing is read or
            written), or ``--label-scheme`` names none.
        brats.resources.ActorsNotStarted: no reader actor found a free CPU within
            ``config.wait_for_actors`` seconds (no manifest is written).
    """
    started = time.perf_counter()
    cohort = resolve(config.cohort, s3_endpoint=config.s3_endpoint)
    out = resolve(config.out, s3_endpoint=config.s3_endpoint)
    found = discover(cohort)
    preprocess = scheme_config(config.preprocess, found, cohort, s3_endpoint=config.s3_endpoint)
    fingerprint = cohort_fingerprint(
        found.cases,
        preprocess.modalities[0],
        cohort,
        preprocess.limits,
        given=preprocess.target_spacing,
    )
    if fingerprint.target is not None:
        preprocess = replace(preprocess, target_spacing=fingerprint.target)
    log.info(
        "spacing: median %s mm, cases stored at %s mm (%s); %d of %d resampled",
        _mm(fingerprint.median),
        _mm(fingerprint.target),
        fingerprint.rule,
        len(fingerprint.resampled()),
        len(found.cases),
    )
    readers = config.readers or default_readers()
    wait_for_room({"CPU": 1.0}, 1, config.wait_for_actors, "the first reader actor (1 CPU)")
    results, found = read_cohort(
        cohort,
        preprocess,
        discovery=found,
        readers=readers,
        finish=functools.partial(write_case_shard, out=out, hook=shard_hook),
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
    progress = Progress("ingest", total, log)
    for row in _iter_rows(results):
        entries.append(row)
        progress.update(row["case_id"], None if is_done(row["status"]) else row["error"])
    manifest = build_manifest(entries, found, cohort, preprocess, fingerprint.to_dict())
    uri = write_manifest(out, manifest)
    return IngestResult(uri, manifest, time.perf_counter() - started)


def _mm(spacing: Sequence[float] | None) -> str:
    return "unknown" if spacing is None else " x ".join(f"{s:g}" for s in spacing)


def _iter_rows(ds: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    """Rows of ``ds`` as plain Python values (numpy scalars unwrapped)."""
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        keys = list(batch)
        for i in range(len(batch["case_id"])):
            yield {k: _plain(batch[k][i]) for k in keys}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
